"""How the migrating checks (``stairway``, ``downgrade_clean``, ``locks``) walk a tree:
on the connection ``env.py`` migrates on, in one run, or one step per ``env.py`` run.

A walk in one ``env.py`` run reads the version table back between steps on the
connection Alembic migrates on: the one the check passed, or one ``env.py``
opened itself (the stock ``alembic init`` env.py builds its own engine from
``sqlalchemy.url``, which the check aims at its throw-away database). Before the
first step the check makes sure such a connection is on that very database; one
on any other (an ``env.py`` that migrates elsewhere) is not walked this way.

The reads go through the DBAPI connection, not SQLAlchemy's execution: they run
at every step, and they must not begin a SQLAlchemy transaction of their own on a
connection whose transactions ``env.py`` and Alembic manage.

Plain Alembic runs each step of a stairway as a command of its own, on a new
connection. A walk that takes many steps on one connection must not let a step
leave the session different for the next (a ``SET search_path``, a temporary table,
a role): ``SessionWatch`` notes the statements that can, and ``SESSION_STATE`` is
what the walk reads after each step once its transaction ended, for what no
statement shows (a function that sets the ``search_path``). Either one ends the
walk's ``env.py`` run after that step; the next step starts on a fresh session.

The stairway's steps one ``env.py`` run each: for an ``env.py`` that migrates on a
connection of its own (the walk in one run needs the one it is passed), and to bring a
fresh throw-away database to where the walk had reached after a failure. Each step's
heads are read back; a step that left the wrong ones is a ``StepFailed`` that says why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, event

from ..foundation.errors import EnvPyFailed, GuardRefused, MigrationFailed, ReynardDBError
from ..migration.manager import MigrationManager
from ..migration.tree import current_heads, same_heads
from .heads import down_target, expected_heads, heads_text, unchanged_or_wrong


def same_connection(theirs: Connection | None, ours: Connection) -> bool:
    """Whether ``theirs`` is ``ours`` (the same DBAPI connection)."""
    if theirs is None:
        return False
    try:
        return theirs.connection.dbapi_connection is ours.connection.dbapi_connection
    except Exception:  # a connection of another kind (a mock, offline): not ours
        return False


def backend_pid(connection: Connection) -> int:
    """The server process behind ``connection`` (ends the read's transaction)."""
    pid = int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    connection.rollback()
    return pid


def beside(theirs: Connection | None, pid: int) -> bool:
    """Whether ``theirs`` is on the database where backend ``pid`` (the check's own
    connection, holding the lock) is: same server, same database.

    The throw-away database's name is random, so a backend with that pid on a
    database of that name is the check's. Any error says no: the walk then takes
    one ``env.py`` run per step, which reads back on the check's connection.
    """
    if theirs is None:
        return False
    try:
        rows = rows_of(
            theirs,
            "SELECT 1 FROM pg_stat_activity "
            f"WHERE pid = {int(pid)} AND datname = current_database()",
        )
    except Exception:
        return False
    return bool(rows)


def rows_of(connection: Connection, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (no parameters), run on ``connection``'s DBAPI connection."""
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


#: What a step may leave in the session for the rest of it (not only its transaction),
#: read back with the versions in each step's transaction, where it must cost next to
#: nothing (it is planned again after every step's DDL): settings that change what a
#: later revision's DDL does or where it goes, and the temporary schema (non-zero once
#: the session made a temporary object; it stays so after the object is gone). Custom
#: settings (``app.tenant``) are not listed: one is seen when a statement sets it, not
#: when a function does (``SessionWatch.routine``).
SESSION_STATE = (
    "current_setting('search_path'), current_user, session_user, "
    "current_setting('statement_timeout'), current_setting('lock_timeout'), "
    "current_setting('session_replication_role'), current_setting('default_tablespace'), "
    "current_setting('TimeZone'), current_setting('check_function_bodies'), "
    "current_setting('row_security'), current_setting('standard_conforming_strings'), "
    "current_setting('default_transaction_read_only'), "
    "current_setting('default_transaction_isolation'), pg_my_temp_schema()::int"
)
#: Read at a run's start and once a step's transaction ended (after a run's first step,
#: or when a step's ``SESSION_STATE`` differs): temporary relations, session advisory
#: locks, prepared statements, held cursors and ``LISTEN`` channels. Each costs a scan
#: (``pg_locks`` the most, more so in a transaction that just ran DDL).
SLOW_STATE = (
    "CASE WHEN pg_my_temp_schema() = 0 THEN false ELSE EXISTS "
    "(SELECT 1 FROM pg_class WHERE relnamespace = pg_my_temp_schema()) END, "
    "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), "
    "(SELECT count(*) FROM pg_prepared_statements WHERE from_sql), "
    "(SELECT count(*) FROM pg_cursors WHERE is_holdable), "
    "(SELECT count(*) FROM pg_listening_channels())"
)
#: Where ``session_state``'s values of ``SESSION_STATE`` end, and which of them is the
#: temporary schema (a trigger to look, not a difference: ``SLOW_STATE`` says whether a
#: temporary relation is left).
STEP_WIDTH = SESSION_STATE.count(", ") + 1
TEMP_SCHEMA = STEP_WIDTH - 1


def same_session(one: tuple[Any, ...], other: tuple[Any, ...]) -> bool:
    """Whether two ``session_state`` readings say the same session, the temporary
    schema's number aside (see ``TEMP_SCHEMA``)."""
    return len(one) == len(other) and all(
        a == b for index, (a, b) in enumerate(zip(one, other, strict=True)) if index != TEMP_SCHEMA
    )


#: A statement that can leave state in the session past its own transaction: ``SET``
#: (but ``SET LOCAL``, ``SET TRANSACTION`` and ``SET CONSTRAINTS``, which end with it),
#: ``RESET``, ``DISCARD``, ``PREPARE``, ``LISTEN``, ``DECLARE`` (a cursor ``WITH
#: HOLD``), ``LOAD``, ``set_config(...)`` but one whose last argument is ``true``
#: (transaction-local), an ``UPDATE`` of ``pg_settings``, and session-level advisory
#: locks. Read in a statement's code (``code_of``); a statement that only looks like one
#: costs a new session, never a verdict.
_SESSION_STATEMENT = re.compile(
    r"(?:^|;)\s*(?:SET(?!\s+(?:LOCAL|TRANSACTION|CONSTRAINTS)\b)|RESET|DISCARD|PREPARE"
    r"|LISTEN|DECLARE|LOAD)\b"
    r"|\bset_config\"?\s*\((?![^()]*,\s*true\s*\))"
    r"|\bUPDATE\s+(?:\"?pg_catalog\"?\s*\.\s*)?\"?pg_settings\b"
    r"|\bpg_(?:try_)?advisory_lock(?:_shared)?\"?\s*\(",
    re.IGNORECASE,
)
#: A ``DO`` block running dynamic SQL (``DO $$ BEGIN EXECUTE 'SET datestyle ...'; END $$``):
#: what its strings run no text search can read. Not a function's ``EXECUTE`` (a trigger
#: function's ``EXECUTE format(...)``, ``CREATE TRIGGER ... EXECUTE FUNCTION``, ``GRANT
#: EXECUTE``): those are common, and a function is judged by its body's own statements
#: (``SessionWatch.routine``).
_DYNAMIC_DO = re.compile(r"^\s*DO\b.*\bEXECUTE\b", re.IGNORECASE | re.DOTALL)
#: What is not code: comments and string literals (``E'...'`` with its backslash escapes,
#: ``'...'`` with ``''``), left out; a quoted identifier, whose apostrophes are not quotes
#: (``"it's"``); a dollar-quoted string, whose body is code again (a function's or a
#: ``DO`` block's statements) and whose apostrophes are not quotes either (``$$don't$$``).
_NOT_CODE = re.compile(
    r"(?P<skip>--[^\n]*|/\*.*?\*/|(?<![\w$])[eE]'(?:\\.|''|[^'\\])*'|'(?:[^']|'')*')"
    r'|(?P<ident>"(?:[^"]|"")*")'
    r"|\$\$(?P<plain>.*?)\$\$"
    r"|\$(?P<tag>[A-Za-z_]\w*)\$(?P<tagged>.*?)\$(?P=tag)\$",
    re.DOTALL,
)


def code_of(statement: str) -> str:
    """``statement`` without its comments and string literals, its quoted identifiers'
    apostrophes made plain, and each dollar-quoted body read the same way in its place."""

    def kept(found: re.Match[str]) -> str:
        if found["skip"] is not None:
            return " "
        if found["ident"] is not None:
            return found["ident"].replace("'", "_")
        body = found["plain"] if found["plain"] is not None else found["tagged"]
        return f" {code_of(body)} "

    return _NOT_CODE.sub(kept, statement)


def changes_session(statement: str) -> bool:
    """Whether ``statement`` may leave state in the session past its transaction."""
    code = code_of(statement)
    return bool(_SESSION_STATEMENT.search(code) or _DYNAMIC_DO.search(code))


class SessionWatch:
    """Notes (``touched``) a statement run on the connections it watches that may leave
    state in the session (``changes_session``): SQLAlchemy's ``before_cursor_execute``,
    which every statement of ``op`` and of ``op.get_bind()`` passes. ``routine``: one of
    them defined a function or procedure that may (its body sets something): a later
    statement calling it shows nothing, and a custom setting (``app.tenant``) it sets is
    in no catalogue (``pg_settings`` leaves placeholders out)."""

    def __init__(self) -> None:
        self.touched = False
        self.routine = False

    def watch(self, connection: Connection) -> None:
        """Watch ``connection`` (once; the listener goes with the connection)."""
        if not event.contains(connection, "before_cursor_execute", self._saw):
            event.listen(connection, "before_cursor_execute", self._saw)

    def unwatch(self, connection: Connection) -> None:
        """Stop watching ``connection`` (a connection that outlives the watch)."""
        if event.contains(connection, "before_cursor_execute", self._saw):
            event.remove(connection, "before_cursor_execute", self._saw)

    def _saw(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not (self.touched and self.routine) and changes_session(statement):
            self.touched = True
            self.routine = self.routine or bool(_ROUTINE.search(statement))


#: A statement that defines a function or procedure.
_ROUTINE = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\b", re.IGNORECASE)


def session_state(connection: Connection) -> tuple[Any, ...]:
    """``SESSION_STATE`` then ``SLOW_STATE`` on ``connection``, read on its DBAPI
    connection; outside a SQLAlchemy transaction, the one the read began at the driver is
    ended. Its first ``STEP_WIDTH`` values are what ``with_session_state`` reads."""
    state = rows_of(connection, f"SELECT {SESSION_STATE}, {SLOW_STATE}")[0]
    if not connection.in_transaction():
        dbapi = connection.connection.dbapi_connection
        assert dbapi is not None
        dbapi.rollback()
    return tuple(state)


#: SQLAlchemy's events of a ``Connection`` a revision could listen to on ``op.get_bind()``.
_CONNECTION_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
    "begin",
    "commit",
    "rollback",
    "savepoint",
    "rollback_savepoint",
    "release_savepoint",
    "set_connection_execution_options",
)


def listeners(connection: Connection) -> tuple[int, ...]:
    """How many listeners each event of ``connection`` has: a revision that adds one to
    ``op.get_bind()`` (a hook rewriting statements) changes what the next step on the
    same connection runs, where a new command's connection has none."""
    return tuple(len(getattr(connection.dispatch, name)) for name in _CONNECTION_EVENTS)


def with_session_state(read_sql: str) -> str:
    """``read_sql`` (the version table's ``SELECT``) as one row per version, at least one,
    each the version (None at base) followed by ``SESSION_STATE``: one round trip a step."""
    return (
        f"SELECT v.*, {SESSION_STATE} FROM (SELECT 1) AS reynard_one "
        f"LEFT JOIN ({read_sql}) AS v ON true"
    )


# -- one step per env.py run ----------------------------------------------------------


class StepFailed(Exception):
    """One step of the stairway went wrong; carries the revision and the step name.

    ``elsewhere``: the step left the throw-away database as it was, so ``env.py``
    migrated another database: every revision would fail the same way.
    """

    def __init__(self, script: Script, step: str, error: str, *, elsewhere: bool = False) -> None:
        super().__init__(error)
        self.script = script
        self.step = step
        self.error = error
        self.elsewhere = elsewhere


def verb_and_target(revision: Script, step: str) -> tuple[str, str]:
    """The Alembic command a step amounts to, as messages name it."""
    if step == "down":
        return "downgrade", down_target(revision)
    return "upgrade", revision.revision


def wrong_heads(
    revision: Script,
    step: str,
    actual: set[str],
    expected: set[str],
    before: set[str],
    *,
    migrated_here: bool = False,
) -> StepFailed:
    """The failure of a step that left ``actual`` heads where ``expected`` were due.

    Left unchanged, the migrations went to another database, unless env.py was seen
    migrating this one (``migrated_here``): then they were never committed.
    """
    verb, target = verb_and_target(revision, step)
    if migrated_here and actual == before:
        why = not_committed(before)
    else:
        why = unchanged_or_wrong(None, f"{verb} {target}", actual, expected, before)
    return StepFailed(revision, step, why, elsewhere=actual == before)


def read_heads(connection: Connection, script: ScriptDirectory) -> set[str]:
    """The heads committed on the throw-away database, read on the check's connection from
    ``script``'s version table (the read's transaction ended: the next step opens its own)."""
    actual = set(current_heads(connection, script))
    connection.rollback()
    return actual


def not_committed(before: set[str]) -> str:
    """Why a database env.py migrated on is still at ``before`` once its run is done."""
    return (
        f"env.py ran the migrations on the throw-away database but nothing stayed (still at "
        f"{heads_text(before)}): env.py must commit them: call context.run_migrations() "
        "inside context.begin_transaction(), and run nothing on the connection before "
        "context.configure() (SQLAlchemy then begins a transaction Alembic leaves to env.py)"
    )


def reach(
    manager: MigrationManager,
    connection: Callable[[], Connection],
    order: list[Script],
    applied: set[str],
) -> None:
    """Upgrade an empty database to exactly ``applied`` (closed under "needs"), heads read
    back; each upgrade a run of its own on ``connection()``."""
    heads = expected_heads(manager.script, applied)
    for script in order:
        if script.revision in heads:
            manager.upgrade(script.revision, connection=connection())
    actual = read_heads(connection(), manager.script)
    if not same_heads(manager.script, actual, heads):
        raise ReynardDBError(
            f"upgrading to {heads_text(heads)} left the database at {heads_text(actual)}"
        )


def step_failure(revision: Script, step: str, exc: ReynardDBError) -> StepFailed:
    """An error of ``step`` on ``revision`` as the stairway reports it, whichever way it
    was walked: a migration's own reason, else what was being done."""
    if isinstance(exc, MigrationFailed):
        return StepFailed(revision, step, exc.reason)
    verb, target = verb_and_target(revision, step)
    return StepFailed(revision, step, f"{verb} {target}: {exc}")


def one_step(
    manager: MigrationManager,
    connection: Connection,
    revision: Script,
    step: str,
    before: set[str],
    after: set[str],
    *,
    migrated_here: bool = False,
) -> None:
    """One step, one ``env.py`` run, from heads ``before`` to heads ``after``, read back
    (``migrated_here``: env.py was seen migrating this database, see ``wrong_heads``)."""
    verb, target = verb_and_target(revision, step)
    try:
        if verb == "upgrade":
            manager.upgrade(target, connection=connection)
        else:
            manager.downgrade(target, connection=connection)
    except (EnvPyFailed, GuardRefused):
        raise  # the environment is broken, not this revision: the check fails on env.py
    except ReynardDBError as exc:
        raise step_failure(revision, step, exc) from exc
    actual = read_heads(connection, manager.script)
    if not same_heads(manager.script, actual, after):
        raise wrong_heads(revision, step, actual, after, before, migrated_here=migrated_here)
