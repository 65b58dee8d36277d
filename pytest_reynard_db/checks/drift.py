"""``reynard-migrate drift DB``: a live database's schema against its tree, read-only.

A hand-applied hotfix (an index, a default, a column dropped by hand) leaves production
at the right ``alembic_version`` and the wrong schema; the next migration then fails in
production only. ``drift`` reads the live version table, migrates a throw-away database
to exactly those revisions, and compares the two (``models_match.schema_differences``).

The live database is only read: its session is read-only on the server's side
(``default_transaction_read_only``, checked back before anything else), each
transaction is rolled back, and nothing takes a lock stronger than the ``ACCESS SHARE``
catalog reads take, which blocks no writer; a lock it must wait for (a migration holding
``ACCESS EXCLUSIVE``) ends it after ``lock_timeout`` with one line, a read that does not
end after ``statement_timeout``. Its ``search_path`` is ``pg_catalog`` alone, so that no
code of the live database's answers a name drift's reads use (``models_match``); a
first, short session reads the live one's own search path (which schema its version
table is in, which schema's tables are named unqualified), calling one qualified
function. The throw-away database is migrated as the checks migrate theirs, given
production's set-up first (``prepare``, below): ``env.py`` may reach it and nothing else
(the live database's URL is redirected there).

What production had before its first migration: a tree's migrations create their
objects where the migrating session's ``search_path`` says, as the role it runs as, and
may grant to roles the server has; none of that is in the tree. Migrated as the
throw-away server's superuser, in ``public``, a tree whose production database keeps its
tables in a schema named after the application's role (PostgreSQL's secure schema
pattern, ``"$user", public``), or in a schema a DBA made and set on the database, would
be all drift. So the throw-away database is migrated in
up to three ways, each only when the ones before do not match the live database:

1. with the live session's ``search_path`` as set (``"$user"`` kept: a function made
   with ``SET search_path FROM CURRENT`` keeps it as written);
2. with the schema the live version table is in first: where Alembic wrote it is where
   the migrations ran, when the path was changed since (a role's path set afterwards);
3. as production may have been set up by hand before its first migration (a DBA's
   step, not the tree's): the schemas of the live session's path and of the live
   version table made empty first, the live server's roles made on the throw-away
   server (ours alone), each ``NOLOGIN SUPERUSER`` so that nothing a role may do in
   production is refused there, and the database's sessions run as the live role (its
   ``"$user"``, its ownership).

``drift`` reports the closest (fewest differences; the earlier on a tie). The first two
make nothing the tree may make itself (``CREATE SCHEMA``, ``CREATE ROLE`` without ``IF
NOT EXISTS`` stay as they are in production's history). The live session is read by
one qualified function call on a plain psycopg connection (no SQLAlchemy dialect
set-up, whose unqualified ``current_schema()`` a schema on the live path could answer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError
from psycopg import sql
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from ..foundation.errors import MigrationFailed, RevisionError, ReynardDBError, ServerError
from ..foundation.registry import Database, Registry
from ..foundation.urls import counted, first_line, mask_url, one_line
from ..migration.manager import MigrationManager
from ..migration.tree import current_heads, version_table_of, version_table_seen
from . import CheckResult
from .heads import all_heads, heads_text, moved_to
from .models_match import SESSION, Side, schema_differences
from .runner import USER_SCHEMA, CheckRunner

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

    from ..postgres import Server

CHECK = "drift"
T = TypeVar("T")
#: How long a catalog read may wait for a lock before drift gives up (seconds).
DEFAULT_DRIFT_LOCK_TIMEOUT = 10.0
#: How long one read may run before drift gives up (seconds): a catalog read takes
#: milliseconds, so this bounds what nothing else would (a server stuck on a lock-free wait).
DEFAULT_DRIFT_STATEMENT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Timeouts:
    """A drift session's limits on the server's side, in seconds."""

    lock: float = DEFAULT_DRIFT_LOCK_TIMEOUT
    statement: float = DEFAULT_DRIFT_STATEMENT_TIMEOUT

    def options(self) -> str:
        lock, statement = int(self.lock * 1000), int(self.statement * 1000)
        return f"-c lock_timeout={lock} -c statement_timeout={statement}"


def drift(
    registry: Registry,
    db: Database,
    live_url: URL,
    server: Server,
    *,
    timeouts: Timeouts = Timeouts(),
) -> CheckResult:
    """The live database at ``live_url`` against ``db``'s tree at the live revisions;
    anything that stops it is one ``ReynardDBError`` line (exit 2), a bug here too."""
    runner = CheckRunner(db, registry, server)
    runner.check = CHECK
    where = f"database {db.name!r} ({mask_url(live_url)})"
    try:
        return _drift(runner, live_url, where, timeouts)
    except ReynardDBError:
        raise
    except Exception as exc:
        raise ReynardDBError(f"{where}: {type(exc).__name__}: {one_line(exc)}") from exc


def _drift(runner: CheckRunner, live_url: URL, where: str, timeouts: Timeouts) -> CheckResult:
    """The tree migrated as production most plausibly was (``prepare``: up to three
    ways, each only while none matched); the closest is the verdict (fewest
    differences, the earlier on a tie)."""
    name = runner.db.name
    session = live_session(name, live_url, timeouts)
    server = runner.server
    assert server is not None
    found: list[str] | None = None
    with read_only(name, live_url, timeouts) as live:
        live_version, at = _live_state(runner, live, list(session.path), where)
        live.rollback()  # idle while the throw-away database migrates: no lock kept
        for version_first, as_production in ((False, False), (True, False), (False, True)):
            with runner.scratch_database(CHECK) as manager:
                database = manager.url.database
                assert database is not None
                prepare(
                    server,
                    database,
                    session,
                    live_version[1],
                    version_first=version_first,
                    as_production=as_production,
                )
                try:
                    _migrate(manager, runner, at, where)
                except ReynardDBError:
                    if as_production and found is None:
                        raise  # no way migrates: the production-like way's error
                    continue
                this = _compared(runner, manager, live, live_version, at, session, where)
            if found is None or len(this) < len(found):
                found = this
            if not found:
                break
    assert found is not None
    return _result(runner, where, at, found)


def _compared(
    runner: CheckRunner,
    manager: MigrationManager,
    live: Connection,
    live_version: tuple[str, str | None],
    at: set[str],
    session: LiveSession,
    where: str,
) -> list[str]:
    """The differences between the live database and the throw-away one, migrated to
    ``at``; the live one read again first (one that moved meanwhile is an error)."""
    with manager.connect() as tree:
        tree_path = search_path_of(tree)
        tree_version = version_table(tree, runner.script, tree_path, where)
        reached = set(current_heads(tree, runner.script, version_table=tree_version))
        why = moved_to(runner, f"upgrade {heads_text(at)}", reached, at)
        if why is not None:
            raise ReynardDBError(why)
        for setting, value in SESSION.items():
            tree.execute(
                text("SELECT pg_catalog.set_config(:setting, :value, false)"),
                {"setting": setting, "value": value},
            )
        tree.commit()
        moved = _live_revisions(runner, live, live_version, where)
        if moved != at:
            raise ReynardDBError(
                f"{where} moved from {heads_text(at)} to {heads_text(moved)} while "
                "drift ran (a migration); run it again"
            )
        return _read(
            where,
            lambda: schema_differences(
                Side(live, live_version),
                Side(tree, tree_version),
                unqualified=session.path[0] if session.path else None,
            ),
        )


def _live_state(
    runner: CheckRunner, live: Connection, path: list[str], where: str
) -> tuple[tuple[str, str | None], set[str]]:
    """The live version table (name, schema) and its revisions. Which table ``env.py``
    configures is known once it has run: when the table Alembic names by default says
    base, or names revisions of another tree (two trees in one database, mlflow's), and
    this tree's ``env.py`` has not run yet, it runs once at base on a throw-away
    database first, and the live database is read again."""
    version = _read(where, lambda: version_table(live, runner.script, path, where))
    try:
        at = _live_revisions(runner, live, version, where)
        if at or version_table_seen(runner.script):
            return version, at
    except RevisionError:
        if version_table_seen(runner.script):
            raise
    with runner.scratch_database(CHECK) as manager:
        _migrate(manager, runner, {"base"}, where)
    version = _read(where, lambda: version_table(live, runner.script, path, where))
    return version, _live_revisions(runner, live, version, where)


def search_path_of(connection: Connection) -> list[str]:
    """The schemas a session's unqualified names resolve in, first to last (those that
    exist); one qualified function call, safe on any search path."""
    schemas = connection.execute(text("SELECT pg_catalog.current_schemas(false)")).scalar()
    return list(schemas or [])


def version_table(
    connection: Connection, script: ScriptDirectory, path: list[str], where: str
) -> tuple[str, str | None]:
    """Where the version table Alembic reads is (name, schema): the schema ``env.py``
    configured, else the first on the session's own ``path`` that has one, else the only
    one in the database; schema None when there is none (the database is at base)."""
    name, configured = version_table_of(script)
    if configured is not None:
        return name, configured
    found = (
        connection.execute(
            text(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                f"WHERE c.relname = :name AND c.relkind IN ('r', 'p') AND {USER_SCHEMA} ORDER BY 1"
            ),
            {"name": name},
        )
        .scalars()
        .all()
    )
    on_path = [schema for schema in path if schema in found]
    if on_path or len(found) <= 1:
        return name, (on_path or found or [None])[0]
    raise RevisionError(
        f"{where} has no {name} table on its search_path ({', '.join(path) or 'empty'}) and "
        f"{len(found)} elsewhere ({', '.join(found)}): say which with "
        "version_table_schema in env.py"
    )


def _migrate(manager: MigrationManager, runner: CheckRunner, at: set[str], where: str) -> None:
    """The throw-away database to exactly ``at``: at heads (as production mostly is) in one
    ``env.py`` run, else one per version row (each with what it needs)."""
    targets = ["heads"] if at == all_heads(runner.script) else sorted(at)
    for target in targets:
        try:
            manager.upgrade(target)
        except MigrationFailed as exc:
            raise ReynardDBError(f"{where}: its tree does not migrate to {target}: {exc}") from exc


def _live_revisions(
    runner: CheckRunner, live: Connection, version: tuple[str, str | None], where: str
) -> set[str]:
    """The live version table's revisions, each one of the tree's (else one line)."""
    if version[1] is None:
        return set()
    at = set(_read(where, lambda: current_heads(live, runner.script, version_table=version)))
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


def session_options(url: URL, timeouts: Timeouts, *, compared: bool) -> dict[str, Any]:
    """The libpq keywords every drift session adds to ``url``'s: read-only on the server's
    side, within ``timeouts``, ``row_security`` off (a policy of the live database's, on
    its version table, would run its code in this session, or hide rows; off, a query it
    would affect is an error); ``compared``: ``models_match.SESSION``'s settings."""
    settings = f"-c default_transaction_read_only=on -c row_security=off {timeouts.options()}"
    if compared:
        settings += "".join(f" -c {setting}={value}" for setting, value in SESSION.items())
    given = url.query.get("options")
    return {
        "options": f"{given} {settings}" if isinstance(given, str) else settings,
        "connect_timeout": 10,
        "prepare_threshold": None,
    }


def live_session(name: str, url: URL, timeouts: Timeouts) -> LiveSession:
    """The live session's own search path and role (``LiveSession``), read on a plain
    psycopg connection with the session's own ``search_path``, read-only."""
    from ..postgres.server import connect_args

    where = f"database {name!r} ({mask_url(url)})"
    args = {
        **connect_args(url),
        **session_options(url, timeouts, compared=False),
        "application_name": f"reynard-db drift {name}",
    }
    try:
        return LiveSession.read(args)
    except psycopg.Error as exc:
        raise ServerError(f"{where}: {first_line(exc)}") from None


@contextmanager
def read_only(name: str, url: URL, timeouts: Timeouts = Timeouts()) -> Iterator[Connection]:
    """A connection to ``url`` whose every transaction is read-only on the server's side,
    within ``timeouts``, with ``models_match.SESSION``'s settings, and rolled back.
    psycopg prepares no statement: a prepared statement is closed with ``DEALLOCATE``,
    which is not a read (and what a transaction-mode pooler loses)."""
    ours = url.set(drivername="postgresql+psycopg")  # ours, libpq's options, whatever env.py's
    engine = create_engine(
        ours,
        poolclass=NullPool,
        connect_args={
            **session_options(url, timeouts, compared=True),
            "application_name": f"reynard-db drift {name}",
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


# -- what production had before its first migration ------------------------------------

if TYPE_CHECKING:
    from ..postgres import Server

#: The live session, in one row: its path (existing schemas), its ``search_path`` as
#: set, its role (``"$user"``), and the server's roles. Every name qualified, the one
#: operator too: the live ``search_path`` is in force on this session.
LIVE_SESSION = (
    "SELECT pg_catalog.current_schemas(false), pg_catalog.current_setting('search_path'), "
    "pg_catalog.current_user(), ARRAY(SELECT rolname FROM pg_catalog.pg_roles "
    "WHERE rolname OPERATOR(pg_catalog.!~) '^pg_' ORDER BY 1)"
)


@dataclass(frozen=True)
class LiveSession:
    """The live session's own view: the schemas its names resolve in (those that exist),
    its ``search_path`` as set, its role, and the server's roles."""

    path: tuple[str, ...]
    search_path: str
    user: str
    roles: tuple[str, ...]

    @classmethod
    def read(cls, connect_args: dict[str, Any]) -> LiveSession:
        with psycopg.connect(**connect_args) as connection:
            row = connection.execute(LIVE_SESSION).fetchone()
            connection.rollback()
        assert row is not None
        path, search_path, user, roles = row
        return cls(tuple(path or ()), str(search_path), str(user), tuple(roles or ()))


def prepare(
    server: Server,
    database: str,
    live: LiveSession,
    version_schema: str | None,
    *,
    version_first: bool = False,
    as_production: bool = False,
) -> None:
    """Give ``database`` (empty, on ``server``) the live set-up before it migrates: the
    live ``search_path`` (``version_first``: after ``version_schema``); ``as_production``:
    also the live path's schemas and ``version_schema`` (where the live version table
    is: an ``env.py`` that sets its own path or ``version_table_schema`` names it), the
    live server's roles, and the live role for its sessions."""
    from ..postgres import EphemeralServer

    target = sql.Identifier(database)
    path = live.search_path
    if version_first and version_schema is not None:
        first = sql.Identifier(version_schema).as_string(None)
        path = f"{first}, {path}" if path else first
    with server.admin() as admin:
        # set_config checks the value as a SET would; FROM CURRENT stores it as it stands
        admin.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (path,))
        admin.execute(sql.SQL("ALTER DATABASE {} SET search_path FROM CURRENT").format(target))
        admin.execute("RESET search_path")
        if not as_production:
            return
        if isinstance(server, EphemeralServer):  # ours alone: its roles are no one's
            have = {row[0] for row in admin.execute("SELECT rolname FROM pg_catalog.pg_roles")}
            for role in live.roles:
                if role not in have:
                    admin.execute(
                        sql.SQL("CREATE ROLE {} NOLOGIN SUPERUSER").format(sql.Identifier(role))
                    )
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET role = {}").format(target, sql.Literal(live.user))
            )
    with server.connect(database) as connection:
        wanted = (*live.path, *([version_schema] if version_schema else []))
        for schema in dict.fromkeys(wanted):
            if schema.startswith("pg_") or schema == "information_schema":
                continue  # PostgreSQL's own, named on a path (pg_catalog, pg_temp)
            connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
