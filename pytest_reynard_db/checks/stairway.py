"""``stairway``: every revision, in order, upgrades, downgrades one step and upgrades again.

This catches the downgrade that forgets something (a column, an index, a
type): the second upgrade then fails on what is still there. Each step is
aimed at exactly one revision, even in a tree of several branches with
``depends_on`` or merges, and the database's heads are read back after each
step: a downgrade that moved a sibling branch fails too.

Cost is linear in the number of revisions: one scratch database, one
connection (holding the advisory lock) for the whole walk, and the tree loaded
once by the runner.
"""

from __future__ import annotations

from collections.abc import Iterable

from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import to_tuple
from sqlalchemy import Connection

from ..errors import EnvPyFailed, MigrationFailed, ReynardDBError
from ..manager import MigrationManager
from .result import CheckResult
from .runner import CheckRunner

CHECK = "stairway"


class StepFailed(Exception):
    """One step of the stairway went wrong; carries the revision and the step name."""

    def __init__(self, script: Script, step: str, error: str) -> None:
        super().__init__(error)
        self.script = script
        self.step = step
        self.error = error


def stairway(runner: CheckRunner) -> CheckResult:
    """Walk every revision bases first: up to it, one step down, up again."""
    script = runner.script
    order = walk_order(script)
    with runner.scratch_database(CHECK) as manager, manager.locked() as connection:
        try:
            walk(manager, connection, order)
        except StepFailed as failed:
            path = runner.relative(failed.script.path)
            return runner.result(
                CHECK,
                False,
                f"{path}: revision {failed.script.revision}, {failed.step} step: {failed.error}",
                revision=failed.script.revision,
                file=path,
            )
    return runner.result(CHECK, True, f"{len(order)} revisions: up, down, up")


def walk_order(script: ScriptDirectory) -> list[Script]:
    """Every revision, bases first (a revision after all it needs, ``depends_on`` too)."""
    return [s for s in reversed(list(script.walk_revisions())) if s is not None]


def walk(manager: MigrationManager, connection: Connection, order: Iterable[Script]) -> None:
    """Run the stairway on ``connection``; raise ``StepFailed`` at the first bad step."""
    applied: set[str] = set()
    for revision in order:
        with_it = applied | {revision.revision}
        up, down = revision.revision, down_target(revision)
        _step(manager, connection, revision, "up", "upgrade", up, applied, with_it)
        _step(manager, connection, revision, "down", "downgrade", down, with_it, applied)
        _step(manager, connection, revision, "re-up", "upgrade", up, applied, with_it)
        applied = with_it


def down_target(revision: Script) -> str:
    """A downgrade target that removes ``revision`` and nothing else.

    ``-1`` is ambiguous with several heads and ``<rev>-1`` may move sibling
    branches; a target scoped to the revision's own branch (``<rev>@<parent>``,
    ``<rev>@base`` for a base, ``<merge>@<one parent>`` for a merge) is exact.
    """
    parents = to_tuple(revision.down_revision, default=())
    return f"{revision.revision}@{sorted(parents)[0] if parents else 'base'}"


def expected_heads(script: ScriptDirectory, applied: set[str]) -> set[str]:
    """What ``alembic_version`` holds when exactly ``applied`` are applied.

    Alembic stores the applied revisions nothing applied builds on, where
    ``depends_on`` counts as building on.
    """
    below: set[str] = set()
    for rev in applied:
        found = script.get_revision(rev)
        if found is not None:
            below.update(found._all_down_revisions)
    return applied - below


def _step(
    manager: MigrationManager,
    connection: Connection,
    revision: Script,
    step: str,
    verb: str,
    target: str,
    before: set[str],
    after: set[str],
) -> None:
    """One step from ``before`` to ``after`` (applied revisions), the heads read back."""
    try:
        if verb == "upgrade":
            manager.upgrade(target, connection=connection)
        else:
            manager.downgrade(target, connection=connection)
    except EnvPyFailed:
        raise  # the environment is broken, not this revision: the check fails on env.py
    except MigrationFailed as exc:
        raise StepFailed(revision, step, _reason(exc)) from exc
    except ReynardDBError as exc:
        raise StepFailed(revision, step, f"{verb} {target}: {exc}") from exc
    expected = expected_heads(manager.script, after)
    actual = set(MigrationContext.configure(connection).get_current_heads())
    connection.rollback()  # end the read's transaction: the next step opens its own
    if actual != expected:
        was = expected_heads(manager.script, before)
        why = unchanged_or_wrong(None, f"{verb} {target}", actual, expected, was)
        raise StepFailed(revision, step, why)


def _reason(exc: MigrationFailed) -> str:
    """The database error of a failed migration, without the manager's prefix."""
    message = str(exc)
    marker = " failed: "
    return message.split(marker, 1)[1] if marker in message else message


def heads_text(heads: set[str]) -> str:
    return ", ".join(sorted(heads)) or "base"


def unchanged_or_wrong(
    runner: CheckRunner | None,
    what: str,
    actual: set[str],
    expected: set[str],
    before: set[str] | None = None,
) -> str:
    """Why the version table is not where a step should have left it.

    Unchanged means the migrations ran somewhere else: an ``env.py`` that builds its
    own connection from a variable or file instead of the one it is given.
    """
    before = set() if before is None else before
    prefix = f"database {runner.db.name!r}: " if runner is not None else ""
    if actual == before:
        return (
            f"{prefix}{what} did not change the throw-away database (still at "
            f"{heads_text(actual)}): env.py connected to another database; it must use "
            'config.attributes["connection"] or sqlalchemy.url'
        )
    return (
        f"{prefix}{what} left the database at {heads_text(actual)}, expected {heads_text(expected)}"
    )
