"""The database a manager migrates: reached with a clear error, created when missing, and
locked while it migrates (the migration lock, below).

A verb's connection is its own (``NullPool``: nothing is kept between verbs) and
says whose it is (``application_name``: what a migration waiting for the lock
shows of its holder). Nothing here runs a migration.

The migration lock: one PostgreSQL advisory lock per physical database.

Two migrations of one database take turns on it, whichever registry name (and
so whichever tree) each runs. The key is one constant (``advisory_lock_key``):
PostgreSQL scopes an advisory lock to its server and to the database the
session is connected to (the lock tag carries the database's OID), so one key
already means one lock per (server, database). A key per registry name, as
before, let ``upgrade main`` and ``upgrade e2e`` on one database run at once.

A wait is never silent or endless: after ``SAY_AFTER`` seconds it is said on
stderr with the holder (pid, application_name, state, query start from
``pg_locks`` and ``pg_stat_activity``); after ``timeout`` it raises ``LockTimeout``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from ..foundation.errors import ConfigError, LockTimeout, RevisionError, ServerError
from ..foundation.filesystem import SAY_AFTER, say_on_stderr
from ..foundation.urls import MAINTENANCE_DATABASE, first_line, mask_url

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


# -- migration_lock ----------------------------------------------------------------------

LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired
#: Who holds the migration lock of the current database.
LOCK_HOLDER = text(
    """
    SELECT a.pid, a.application_name, a.state, a.query_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = :high AND l.objid = :low
    """
)


def advisory_lock_key() -> int:
    """The migration lock's advisory key: one constant, whatever the registry name."""
    return 0x5E7A_0000_0000 + zlib.crc32(b"reynard-db migrations")


def take_migration_lock(connection: Connection, *, where: str, timeout: float) -> None:
    """Hold the migration lock on ``connection`` (a session lock), waiting at most
    ``timeout`` seconds; ``where`` names the database in what is said."""
    key = advisory_lock_key()
    if _try_lock(connection, key, min(SAY_AFTER, timeout)):
        return
    say_on_stderr(
        f"reynard-db: waiting for the migration lock of {where}, "
        f"held by {lock_holder(connection, key)}"
    )
    if _try_lock(connection, key, max(timeout - SAY_AFTER, 0.0)):
        return
    raise LockTimeout(
        f"gave up waiting for the migration lock of {where} after "
        f"{timeout:g} s (--lock-timeout); held by {lock_holder(connection, key)}"
    )


@contextmanager
def migration_lock_held(connection: Connection, *, where: str, timeout: float) -> Iterator[None]:
    """The migration lock taken on ``connection`` for the block (see ``take_migration_lock``),
    released after it unless the session is gone (then PostgreSQL released it): known
    gone, or found gone by the release (the server stopped, the backend terminated)."""
    take_migration_lock(connection, where=where, timeout=timeout)
    try:
        yield
    finally:
        if not connection.closed and not connection.invalidated:
            try:
                release_migration_lock(connection)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise


def release_migration_lock(connection: Connection) -> None:
    """End any transaction left open, then release the lock."""
    connection.rollback()
    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": advisory_lock_key()})
    connection.commit()


def _try_lock(connection: Connection, key: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for the advisory lock (PostgreSQL's ``lock_timeout``)."""
    milliseconds = f"{max(int(seconds * 1000), 1)}ms"
    try:
        # is_local: the setting ends with this transaction, before any migration runs.
        connection.execute(
            text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": milliseconds}
        )
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        connection.rollback()
        return False
    # A session-level lock outlives this transaction; ending it leaves the
    # connection idle, so Alembic runs one transaction per migration on it.
    connection.commit()
    return True


def lock_holder(connection: Connection, key: int) -> str:
    """``pid N (application_name 'x', state 'y', query started T)`` of the lock's holder."""
    row = connection.execute(LOCK_HOLDER, {"high": key >> 32, "low": key & 0xFFFF_FFFF}).first()
    connection.rollback()
    if row is None:
        return "a session that just released it"
    pid, application, state, started = row
    since = started.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if started else "unknown"
    return (
        f"pid {pid} (application_name {application or ''!r}, state {state!r}, "
        f"query started {since})"
    )
