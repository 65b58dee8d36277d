"""The body of an ``env.py`` that works with the registry, the CLI and the plugin.

An ``env.py`` calls ``run_migrations(target_metadata, default_url_env=...)``.
The connection is chosen, first match wins, so that one tree serves
production, ``reynard-migrate`` and throw-away test databases:

1. a Connection in ``config.attributes["connection"]`` (the manager, the checks):
   used as is, never closed or committed here; when it is already inside a
   transaction, Alembic runs within it and commits nothing. An Engine there (as
   pytest-alembic passes it) is connected to;
2. the URL in the environment variable the ini names as ``reynard_url_env``
   (else ``default_url_env``), so no password lives in the ini;
3. the ini's ``sqlalchemy.url``.

It works offline (``--sql``) with the same precedence for the URL, keeps the
application's loggers (``disable_existing_loggers=False``), and runs one
transaction per migration, so a failure leaves the database at the last good
revision.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection, Engine, MetaData, create_engine, pool
from sqlalchemy.engine import URL

#: ``compare_type`` and ``compare_server_default`` keep autogenerate (and the
#: ``models_match`` check) strict.
DEFAULT_OPTIONS: dict[str, Any] = {
    "transaction_per_migration": True,
    "compare_type": True,
    "compare_server_default": True,
}


def run_migrations(
    target_metadata: MetaData | None, *, default_url_env: str, **options: Any
) -> None:
    """Run the migrations of the current Alembic command (call from ``env.py``)."""
    config = context.config
    # The logging sections are optional in an Alembic ini: without them, leave logging
    # as it is (fileConfig would raise a bare KeyError: 'formatters').
    if config.config_file_name is not None and config.file_config.has_section("loggers"):
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    configure = {**DEFAULT_OPTIONS, "target_metadata": target_metadata, **options}
    passed = _passed_connection()
    if context.is_offline_mode():
        _offline(passed, default_url_env, configure)
    elif isinstance(passed, Connection):
        _online(passed, configure)
    else:
        # NullPool: a migration run is one short-lived connection, nothing to pool.
        engine = passed or create_engine(_url(default_url_env), poolclass=pool.NullPool)
        try:
            with engine.connect() as connection:
                _online(connection, configure)
        finally:
            if passed is None:
                engine.dispose()


def _passed_connection() -> Connection | Engine | None:
    passed = context.config.attributes.get("connection")
    if passed is not None and not isinstance(passed, Connection | Engine):
        kind = type(passed).__name__
        raise TypeError(
            f'config.attributes["connection"] must be a Connection or Engine, not {kind}'
        )
    return passed


def _url(default_url_env: str) -> str:
    env_name = context.config.get_main_option("reynard_url_env") or default_url_env
    url = os.environ.get(env_name) or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(f"no database URL: set ${env_name} or sqlalchemy.url")
    return url


def _offline(
    passed: Connection | Engine | None, default_url_env: str, configure: dict[str, Any]
) -> None:
    if isinstance(passed, Connection):
        url: str | URL = passed.engine.url
    else:
        url = passed.url if passed is not None else _url(default_url_env)
    context.configure(
        url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **configure
    )
    with context.begin_transaction():
        context.run_migrations()


def _online(connection: Connection, configure: dict[str, Any]) -> None:
    context.configure(connection=connection, **configure)
    with context.begin_transaction():
        context.run_migrations()
