"""Alembic environment of the main application database (``reynard``).

The connection is chosen by ``pytest_reynard_db.alembic_env.run_migrations``:
a connection the caller passes in ``config.attributes["connection"]``, else
``$DATABASE_URL`` (the ini's ``reynard_url_env``), else the ini's ``sqlalchemy.url``.
"""

from pytest_reynard_db.alembic_env import run_migrations
from reynard_models.main import MainBase

run_migrations(MainBase.metadata, default_url_env="DATABASE_URL")
