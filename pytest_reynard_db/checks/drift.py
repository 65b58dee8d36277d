"""``reynard-migrate drift DB``: a live database's schema against its tree, read-only.

A hand-applied hotfix (an index, a default, a column dropped by hand) leaves production
at the right ``alembic_version`` and the wrong schema; the next migration then fails in
production only. ``drift`` reads the live version table, migrates a throw-away database
to exactly those revisions, and compares the two (``schema_compare``).

The live database is only read: its session is read-only on the server's side
(``default_transaction_read_only``, checked back before anything else), each
transaction is rolled back, and nothing takes a lock stronger than the ``ACCESS SHARE``
catalog reads take, which blocks no writer; a lock it must wait for (a migration holding
``ACCESS EXCLUSIVE``) ends it after ``lock_timeout`` with one line. The throw-away
database is migrated as the checks migrate theirs: ``env.py`` may reach it and nothing
else (the live database's URL is redirected there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from ..errors import MigrationFailed, RevisionError, ReynardDBError, ServerError
from ..manager import MigrationManager
from ..registry import Database, Registry
from ..text import counted, first_line, one_line
from ..tree import current_heads
from ..urls import mask_url
from .heads import all_heads, heads_text, moved_to
from .result import CheckResult
from .runner import CheckRunner
from .schema_compare import differences

if TYPE_CHECKING:
    from ..postgres import Server

CHECK = "drift"
T = TypeVar("T")
#: How long a catalog read may wait for a lock before drift gives up (seconds).
DEFAULT_DRIFT_LOCK_TIMEOUT = 10.0


def drift(
    registry: Registry,
    db: Database,
    live_url: URL,
    server: Server,
    *,
    lock_timeout: float = DEFAULT_DRIFT_LOCK_TIMEOUT,
) -> CheckResult:
    """The live database at ``live_url`` against ``db``'s tree at the live revisions;
    anything that stops it is one ``ReynardDBError`` line (exit 2), a bug here too."""
    runner = CheckRunner(db, registry, server)
    runner.check = CHECK
    where = f"database {db.name!r} ({mask_url(live_url)})"
    try:
        return _drift(runner, live_url, where, lock_timeout)
    except ReynardDBError:
        raise
    except Exception as exc:
        raise ReynardDBError(f"{where}: {type(exc).__name__}: {one_line(exc)}") from exc


def _drift(runner: CheckRunner, live_url: URL, where: str, lock_timeout: float) -> CheckResult:
    with read_only(runner.db.name, live_url, lock_timeout) as live:
        at = _live_revisions(runner, live, where)
        live.rollback()  # idle while the throw-away database migrates: no lock kept
        with runner.scratch_database(CHECK) as manager:
            _migrate(manager, runner, at, where)
            with manager.connect() as tree:
                reached = set(current_heads(tree, runner.script))
                why = moved_to(runner, f"upgrade {heads_text(at)}", reached, at)
                if why is not None:
                    raise ReynardDBError(why)
                moved = _live_revisions(runner, live, where)
                if moved != at:
                    raise ReynardDBError(
                        f"{where} moved from {heads_text(at)} to {heads_text(moved)} while "
                        "drift ran (a migration); run it again"
                    )
                found = _read(where, lambda: differences(live, tree))
    return _result(runner, where, at, found)


def _migrate(manager: MigrationManager, runner: CheckRunner, at: set[str], where: str) -> None:
    """The throw-away database to exactly ``at``: at heads (as production mostly is) in one
    ``env.py`` run, else one per version row (each with what it needs)."""
    targets = ["heads"] if at == all_heads(runner.script) else sorted(at)
    for target in targets:
        try:
            manager.upgrade(target)
        except MigrationFailed as exc:
            raise ReynardDBError(f"{where}: its tree does not migrate to {target}: {exc}") from exc


def _live_revisions(runner: CheckRunner, live: Connection, where: str) -> set[str]:
    """The live version table's revisions, each one of the tree's (else one line)."""
    at = set(_read(where, lambda: current_heads(live, runner.script)))
    for revision in sorted(at):
        try:
            known = runner.script.get_revision(revision)
        except (AlembicRevisionError, CommandError):
            known = None
        if known is None:
            raise RevisionError(
                f"{where} is stamped at {revision}, which is not a revision of its tree "
                f"({runner.relative(runner.db.script_location)}): deployed from another "
                "branch, or its file was removed"
            )
    return at


def _result(runner: CheckRunner, where: str, at: set[str], found: list[str]) -> CheckResult:
    revision = next(iter(at)) if len(at) == 1 else None
    if not found:
        return runner.result(
            CHECK, True, f"{where} matches its tree at {heads_text(at)}", revision=revision
        )
    listed = "\n".join(f"  {line}" for line in found)
    message = (
        f"{where} drifted from its tree at {heads_text(at)} "
        f"({counted(len(found), 'difference')}); what would make it match the tree:\n{listed}"
    )
    return runner.result(CHECK, False, message, revision=revision)


@contextmanager
def read_only(name: str, url: URL, lock_timeout: float) -> Iterator[Connection]:
    """A connection to ``url`` whose every transaction is read-only on the server's side,
    waits ``lock_timeout`` at most for a lock, and is rolled back."""
    ours = url.set(drivername="postgresql+psycopg")  # ours, libpq's options, whatever env.py's
    settings = f"-c default_transaction_read_only=on -c lock_timeout={int(lock_timeout * 1000)}"
    given = url.query.get("options")
    options = f"{given} {settings}" if isinstance(given, str) else settings
    engine = create_engine(
        ours,
        poolclass=NullPool,
        connect_args={
            "options": options,
            "application_name": f"reynard-db drift {name}",
            "connect_timeout": 10,
        },
    )
    where = f"database {name!r} ({mask_url(url)})"
    try:
        try:
            connection = engine.connect()
        except DBAPIError as exc:
            raise ServerError(f"{where}: cannot connect: {first_line(exc.orig)}") from None
        with connection:
            state = connection.execute(text("SHOW default_transaction_read_only")).scalar()
            if state != "on":  # a pooler that drops startup options: refuse, read nothing
                raise ServerError(f"{where}: the session is not read-only ({state}); not reading")
            try:
                yield connection
            finally:
                connection.rollback()
    finally:
        engine.dispose()


def _read(where: str, read: Callable[[], T]) -> T:
    """``read()``, a database error (a lock timeout) as one line."""
    try:
        return read()
    except DBAPIError as exc:
        raise ServerError(f"{where}: {first_line(exc.orig)}") from None
