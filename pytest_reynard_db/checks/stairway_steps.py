"""The stairway's steps one ``env.py`` run each: for an ``env.py`` that migrates on a
connection of its own (the walk in one run needs the one it is passed), and to bring a
fresh throw-away database to where the walk had reached after a failure. Each step's
heads are read back; a step that left the wrong ones is a ``StepFailed`` that says why.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection

from ..errors import EnvPyFailed, GuardRefused, MigrationFailed, ReynardDBError
from ..migration.manager import MigrationManager
from ..migration.tree import current_heads, same_heads
from .heads import down_target, expected_heads, heads_text, unchanged_or_wrong


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
