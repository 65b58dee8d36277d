"""Alembic environment of the ECS E2E testing database (``reynard_ecs_e2e``).

Its ``versions`` tree is a copy of ``alembic/ecs/versions`` (``reynard-migrate copy``);
only the default URL variable differs from ``alembic/ecs/env.py``.

The connection is chosen, first match wins, so that the same tree serves
production, the ``reynard-migrate`` CLI and throw-away test databases:

1. a Connection passed in ``config.attributes["connection"]`` (tests, the
   migration manager): used as is, never closed or committed here;
2. the URL in the environment variable named by the ini's ``reynard_url_env``
   (default :data:`DEFAULT_URL_ENV`), so no password lives in the ini file;
3. the ini's ``sqlalchemy.url``.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection, Engine, MetaData, create_engine, pool
from sqlalchemy.engine import URL

from reynard_models.ecs import EcsBase

#: Environment variable holding this database's URL when the ini names none.
DEFAULT_URL_ENV = "ECS_E2E_DATABASE_URL"

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata: MetaData = EcsBase.metadata

#: Options shared by online and offline runs. One transaction per migration
#: means a failure leaves the database at the last good revision; comparing
#: types and server defaults keeps ``alembic check`` strict.
CONFIGURE_OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "transaction_per_migration": True,
    "compare_type": True,
    "compare_server_default": True,
}


def passed_connection() -> Connection | Engine | None:
    """Return the Connection (or, as pytest-alembic passes it, the Engine) a caller gave."""
    connection = config.attributes.get("connection")
    if connection is not None and not isinstance(connection, Connection | Engine):
        kind = type(connection).__name__
        raise TypeError(
            f'config.attributes["connection"] must be a Connection or Engine, not {kind}'
        )
    return connection


def database_url() -> str | URL:
    """Return the URL from the environment variable, else from the ini."""
    env_name = config.get_main_option("reynard_url_env") or DEFAULT_URL_ENV
    url = os.environ.get(env_name) or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(f"no database URL: set ${env_name} or sqlalchemy.url")
    return url


def run_migrations_offline() -> None:
    """Emit the migration SQL (``--sql``) without connecting to a database."""
    connection = passed_connection()
    if isinstance(connection, Connection):
        url: str | URL = connection.engine.url
    else:
        url = connection.url if connection is not None else database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **CONFIGURE_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(connection: Connection) -> None:
    """Run the migrations on ``connection``."""
    context.configure(connection=connection, **CONFIGURE_OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate the passed connection, else a connection to the passed engine or the URL."""
    passed = passed_connection()
    if isinstance(passed, Connection):
        run_migrations(passed)
        return
    # NullPool: a migration run is one short-lived connection, nothing to pool.
    engine = passed or create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        if passed is None:
            engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
