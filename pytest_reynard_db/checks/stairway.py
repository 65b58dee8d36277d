"""``stairway``: every revision, in order, upgrades, downgrades one step and upgrades again.

This catches the downgrade that forgets something (a column, an index, a
type): the second upgrade then fails on what is still there. Each step is
aimed at exactly one revision, even in a tree of several branches with
``depends_on`` or merges, and the database's heads are read back after each
step: a downgrade that moved a sibling branch fails too.

A broken revision does not end the walk: every broken revision of the tree is
reported in one run, one result each (its file, its step, the database
error). After a failure the throw-away database is replaced by a fresh one
upgraded to what the walk had reached (with the broken revision when its
first upgrade worked, so that what builds on it is still walked); revisions
that need a revision whose upgrade fails are listed as not reached.

Cost is linear in the number of revisions when nothing is broken: one scratch
database, one connection (holding the advisory lock) for the whole walk, and
the tree loaded once by the runner. Each broken revision adds one rebuild.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

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


@dataclass
class Broken:
    """A revision whose step failed, and the revisions the walk could not reach without it."""

    script: Script
    step: str
    error: str
    not_reached: list[Script] = field(default_factory=list)


def stairway(runner: CheckRunner) -> list[CheckResult]:
    """Walk every revision bases first: up to it, one step down, up again.

    One passing result, or one failed result per broken revision (``revision``
    and ``file`` name it; the message adds the revisions not reached because of it).
    """
    order = walk_order(runner.script)
    broken = Stairway(runner, order).run()
    if not broken:
        return [runner.result(CHECK, True, f"{len(order)} revisions: up, down, up")]
    missed = sum(len(b.not_reached) for b in broken)
    tally = f"  stairway: {len(broken)} of {len(order)} revisions broken" + (
        f", {missed} not reached" if missed else ""
    )
    results = []
    for item in broken:
        path = runner.relative(item.script.path)
        lines = [f"{path}: revision {item.script.revision}, {item.step} step: {item.error}"]
        if item.not_reached:
            names = ", ".join(s.revision for s in item.not_reached)
            lines.append(f"  not reached (they need it): {names}")
        lines.append(tally)
        results.append(
            runner.result(CHECK, False, "\n".join(lines), revision=item.script.revision, file=path)
        )
    return results


def walk_order(script: ScriptDirectory) -> list[Script]:
    """Every revision, bases first (a revision after all it needs, ``depends_on`` too)."""
    return [s for s in reversed(list(script.walk_revisions())) if s is not None]


class Stairway:
    """One walk over ``order`` on a throw-away database, replaced after each failure."""

    def __init__(self, runner: CheckRunner, order: list[Script]) -> None:
        self.runner = runner
        self.order = order
        #: The revisions the current database holds (closed under "needs").
        self.applied: set[str] = set()
        #: Revisions that cannot be applied, and the broken revisions that are why.
        self.blocked: dict[str, list[Broken]] = {}
        self.broken: list[Broken] = []
        self._stack = ExitStack()
        self.manager: MigrationManager
        self.connection: Connection

    def run(self) -> list[Broken]:
        """Walk every revision; the broken ones, in walk order."""
        try:
            self._fresh_database()
            for index, revision in enumerate(self.order):
                causes = self._blocked_by(revision)
                if causes:
                    self.blocked[revision.revision] = causes
                    for cause in causes:
                        cause.not_reached.append(revision)
                    continue
                try:
                    self._stair(revision)
                except StepFailed as failed:
                    if not self._recover(revision, failed):
                        self.broken[-1].not_reached += self.order[index + 1 :]
                        break
        finally:
            self._stack.close()
        return self.broken

    def _stair(self, revision: Script) -> None:
        """Up, down, up on ``revision``, whose parents are all applied."""
        applied = self.applied
        with_it = applied | {revision.revision}
        up, down = revision.revision, down_target(revision)
        self._step(revision, "up", "upgrade", up, applied, with_it)
        self._step(revision, "down", "downgrade", down, with_it, applied)
        self._step(revision, "re-up", "upgrade", up, applied, with_it)
        self.applied = with_it

    def _step(
        self, revision: Script, step: str, verb: str, target: str, before: set[str], after: set[str]
    ) -> None:
        _step(self.manager, self.connection, revision, step, verb, target, before, after)

    def _blocked_by(self, revision: Script) -> list[Broken]:
        """The broken revisions behind any revision ``revision`` needs (parents, depends_on)."""
        causes: list[Broken] = []
        for needed in sorted(revision._all_down_revisions):
            for cause in self.blocked.get(needed, []):
                if cause not in causes:
                    causes.append(cause)
        return causes

    def _recover(self, revision: Script, failed: StepFailed) -> bool:
        """Record ``failed`` and go on from a fresh database; False when the walk must stop.

        The failed step may have left the database anywhere (a half-done
        downgrade, statements an ``autocommit_block`` committed), so the next
        revision starts from a new one: with ``revision`` applied when its first
        upgrade worked (its descendants are still walked), without it otherwise.
        """
        broken = Broken(revision, failed.step, failed.error)
        self.broken.append(broken)
        if failed.elsewhere:
            return False  # env.py's fault: every revision would say the same
        if failed.step == "up":
            self.blocked[revision.revision] = [broken]
        else:
            self.applied = self.applied | {revision.revision}
        try:
            self._fresh_database()
            reach(self.manager, self.connection, self.order, self.applied)
        except (StepFailed, ReynardDBError) as exc:
            why = exc.error if isinstance(exc, StepFailed) else str(exc)
            broken.error += f"; the walk stopped: rebuilding a throw-away database failed: {why}"
            return False
        return True

    def _fresh_database(self) -> None:
        """Drop the current throw-away database (if any) and open an empty one, locked."""
        self._stack.close()
        self._stack = ExitStack()
        self.manager = self._stack.enter_context(self.runner.scratch_database(CHECK))
        self.connection = self._stack.enter_context(self.manager.locked())


def reach(
    manager: MigrationManager, connection: Connection, order: list[Script], applied: set[str]
) -> None:
    """Upgrade an empty database to exactly ``applied`` (closed under "needs"), heads read back."""
    heads = expected_heads(manager.script, applied)
    for script in order:
        if script.revision in heads:
            manager.upgrade(script.revision, connection=connection)
    actual = set(MigrationContext.configure(connection).get_current_heads())
    connection.rollback()
    if actual != heads:
        raise ReynardDBError(
            f"upgrading to {heads_text(heads)} left the database at {heads_text(actual)}"
        )


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
        raise StepFailed(revision, step, why, elsewhere=actual == was)


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
