"""The database a manager migrates: reached with a clear error, created when missing.

A verb's connection is its own (``NullPool``: nothing is kept between verbs) and
says whose it is (``application_name``: what a migration waiting for the lock
shows of its holder). Nothing here runs a migration.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from ..errors import ConfigError, RevisionError, ServerError
from ..text import first_line
from ..urls import MAINTENANCE_DATABASE, mask_url

#: The server's FATAL for a missing database, as libpq passes it on.
_NO_SUCH_DATABASE = re.compile(r'database "[^"]*" does not exist')
#: The connect timeout's keyword, by driver (libpq's ``connect_timeout`` otherwise).
_TIMEOUT_KEYS = {"pg8000": "timeout"}


@contextmanager
def connect(name: str, url: URL, *, url_given: bool = False) -> Iterator[Connection]:
    """A connection to ``url`` (registry database ``name``), or one ``ServerError`` line;
    a database missing on its server says the verb that makes it (``url_given``: the
    user named ``url`` with ``--url``, to repeat).

    ``url``'s driver must be installed (``env.py`` migrates with it); ours is a sync one.
    """
    require_driver(name, url)
    ours = sync_url(url)
    # libpq's keyword for the timeout is not every driver's (pg8000 raised TypeError).
    timeout = _TIMEOUT_KEYS.get(ours.get_driver_name(), "connect_timeout")
    connect_args = {timeout: 10, "application_name": f"reynard-db {name}"}
    engine = create_engine(ours, poolclass=NullPool, connect_args=connect_args)
    try:
        try:
            connection = engine.connect()
        except DBAPIError as exc:  # pg8000's refused connection is an InterfaceError
            fix = ""
            if _no_such_database(exc.orig):
                fix = f"; create it and migrate it to heads: reynard-migrate setup {name}"
                fix += " --url URL" if url_given else ""
            raise ServerError(
                f"database {name!r}: cannot connect to {mask_url(url)}: {first_line(exc.orig)}{fix}"
            ) from None
        with connection:
            yield connection
    finally:
        engine.dispose()


def _no_such_database(error: BaseException | None) -> bool:
    """The server said the database does not exist (SQLSTATE 3D000): psycopg's and
    psycopg2's connection errors carry only the text, pg8000's the code in its text."""
    said = str(error)
    return "3D000" in said or _NO_SUCH_DATABASE.search(said) is not None


def require_driver(name: str, url: URL) -> None:
    """The URL's driver imports, or one ``ConfigError`` line saying what to install
    (SQLAlchemy's is a traceback at the first connection)."""
    try:
        url.get_dialect().import_dbapi()
    except ImportError as exc:
        module = getattr(exc, "name", None) or url.get_driver_name()
        raise ConfigError(
            f"database {name!r}: {mask_url(url)}: the driver {module} is not installed; "
            f"pip install {module}, or use postgresql+psycopg (psycopg 3, installed with "
            "pytest-reynard-db, is sync and async)"
        ) from None


def sync_url(url: URL) -> URL:
    """``url`` for the harness's own connection (the lock, the version table), which is
    a sync one: an async driver's (``+asyncpg``, ``+psycopg_async``) becomes psycopg 3's,
    to the same server, database and role. ``env.py`` still migrates with its own."""
    if not url.get_dialect().is_async:
        return url
    query = dict(url.query)
    if "ssl" in query:  # asyncpg's name for libpq's sslmode (same values)
        query["sslmode"] = query.pop("ssl")
    return url.set(drivername="postgresql+psycopg", query=query)


def create_if_missing(name: str, url: URL) -> bool:
    """Create the database ``url`` names on its server unless it exists; whether it did."""
    if not url.database:
        raise RevisionError(f"database {name!r}: the URL names no database")
    from ..postgres import Server  # the server code loads on use

    server = Server(sync_url(url).set(database=MAINTENANCE_DATABASE))  # libpq's keys
    try:
        if server.exists(url.database):
            return False
        try:
            server.create_database(url.database)
        except ServerError:
            # Another `setup` created it between our look and our CREATE
            # (PostgreSQL then says "duplicate key"): it is made, go on.
            if not server.exists(url.database):
                raise
            return False
        return True
    finally:
        server.close()
