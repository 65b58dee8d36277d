"""Alembic environment of the E2E testing database (``reynard_e2e``).

Its ``versions`` tree is a copy of ``alembic/main/versions`` (``reynard-migrate copy``);
only the default URL variable differs from ``alembic/main/env.py``.

The connection is chosen by ``pytest_reynard_db.alembic_env.run_migrations``:
a connection the caller passes in ``config.attributes["connection"]``, else
``$E2E_DATABASE_URL`` (the ini's ``reynard_url_env``), else the ini's ``sqlalchemy.url``.
"""

from pytest_reynard_db.alembic_env import run_migrations
from reynard_models.main import MainBase

run_migrations(MainBase.metadata, default_url_env="E2E_DATABASE_URL")
