"""Alembic environment of the ECS world simulation database (``reynard_ecs``).

The connection is chosen by ``pytest_reynard_db.alembic_env.run_migrations``:
a connection the caller passes in ``config.attributes["connection"]``, else
``$ECS_DATABASE_URL`` (the ini's ``reynard_url_env``), else the ini's ``sqlalchemy.url``.
"""

from pytest_reynard_db.alembic_env import run_migrations
from reynard_models.ecs import EcsBase

run_migrations(EcsBase.metadata, default_url_env="ECS_DATABASE_URL")
