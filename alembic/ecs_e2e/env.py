"""Alembic environment of the ECS E2E testing database (``reynard_ecs_e2e``).

Its ``versions`` tree is a copy of ``alembic/ecs/versions`` (``reynard-migrate copy``);
only the default URL variable differs from ``alembic/ecs/env.py``.

The connection is chosen by ``pytest_reynard_db.alembic_env.run_migrations``:
a connection the caller passes in ``config.attributes["connection"]``, else
``$ECS_E2E_DATABASE_URL`` (the ini's ``reynard_url_env``), else the ini's ``sqlalchemy.url``.
"""

from pytest_reynard_db.alembic_env import run_migrations
from reynard_models.ecs import EcsBase

run_migrations(EcsBase.metadata, default_url_env="ECS_E2E_DATABASE_URL")
