"""The migration lock: one PostgreSQL advisory lock per physical database.

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

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from ..errors import LockTimeout
from ..postgres.waits import SAY_AFTER, say_on_stderr

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
    released after it unless the connection is gone (then PostgreSQL released it)."""
    take_migration_lock(connection, where=where, timeout=timeout)
    try:
        yield
    finally:
        if not connection.closed and not connection.invalidated:
            release_migration_lock(connection)


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
