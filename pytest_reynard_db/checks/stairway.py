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

Each step's verdict is the one plain Alembic gives that step as a command of its
own (``alembic upgrade R``, ``alembic downgrade R@parent``, ``alembic upgrade R``),
on a fresh process and connection. The walk takes many steps in one ``env.py`` run,
so what one run of Alembic keeps is made new for each step: the DDL runner's memo
of types created (``tree.forget_created_types``), the revision's module when its
functions already ran (``tree.as_first_run``), and the session: a step that may have
left it changed (``migrating_connection``) ends the run, and the next one starts on
a fresh connection, with ``env.py``'s own set-up done again.

Cost is linear in the number of revisions when nothing is broken: one scratch
database, one connection (holding the advisory lock) and one ``env.py`` run per
``WALK_CHUNK`` revisions, and the tree loaded once by the runner. Each broken
revision adds one rebuild and one ``env.py`` run. The walk runs on whichever
connection ``env.py`` migrates on, the one it is passed or one of its own (the
stock ``alembic init`` env.py) once that is seen to be on the throw-away
database; an ``env.py`` that migrates elsewhere is walked one ``env.py`` run per
step, its heads read back on the check's connection (and the check fails).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from sqlalchemy import Connection

from ..foundation.errors import EnvPyFailed, GuardRefused, ReynardDBError
from ..foundation.urls import counted
from ..migration.manager import MigrationManager
from ..migration.tree import (
    WalkStep,
    commit_between_steps,
    forget_created_types,
    in_external_transaction,
    needs,
    same_heads,
    steps_committed_apart,
    version_table,
)
from . import CheckResult
from .heads import expected_heads, walk_order
from .process_state import connection_notes, process_notes
from .runner import CheckRunner
from .walk import (
    STEP_WIDTH,
    SessionWatch,
    StepFailed,
    backend_pid,
    beside,
    listeners,
    one_step,
    reach,
    read_heads,
    rows_of,
    same_connection,
    same_session,
    session_state,
    step_failure,
    with_session_state,
    wrong_heads,
)

CHECK = "stairway"
#: Revisions walked per ``env.py`` run: what stayed is checked on the check's own
#: connection after each run, so an env.py that never commits is caught early.
WALK_CHUNK = 100


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
        return [runner.result(CHECK, True, f"{counted(len(order), 'revision')}: up, down, up")]
    missed = sum(len(b.not_reached) for b in broken)
    tally = f"  stairway: {len(broken)} of {counted(len(order), 'revision')} broken" + (
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
            runner.result(
                CHECK,
                False,
                "\n".join(lines),
                revision=item.script.revision,
                file=path,
                # the code at fault: a down step ran downgrade(), an up or re-up step upgrade()
                function="downgrade" if item.step == "down" else "upgrade",
            )
        )
    return results


class Stairway:
    """One walk over ``order`` on a throw-away database, replaced after each failure.

    The walk is one ``env.py`` run per ``WALK_CHUNK`` revisions
    (``MigrationManager.walk``): Alembic takes its steps, up and down mixed, from
    ``_steps``, which reads the version table back between two steps on the
    connection Alembic migrates on. That needs a connection on the throw-away
    database (``migrating_connection.beside``); an ``env.py`` migrating elsewhere is
    walked one ``env.py`` run per step instead, its heads read back on ours.

    Where the walk is: revision ``order[at]``, whose step ``next_step`` (0 up, 1 down,
    2 re-up) comes next; a run may end between two steps of one revision (a step that
    changed the session), and the next run goes on from there.
    """

    def __init__(self, runner: CheckRunner, order: list[Script]) -> None:
        self.runner = runner
        self.order = order
        #: The revisions the current database holds (closed under "needs").
        self.applied: set[str] = set()
        #: What ``alembic_version`` holds with exactly ``applied`` applied.
        self.heads: set[str] = set()
        #: What ``alembic_version`` holds after the last step taken (mid-revision too).
        self.db_heads: set[str] = set()
        #: Revisions that cannot be applied, and the broken revisions that are why.
        self.blocked: dict[str, list[Broken]] = {}
        self.broken: list[Broken] = []
        self.at = 0
        self.next_step = 0
        #: The step being taken, as messages name it.
        self.step = "up"
        #: Whether env.py migrates on our connection (None: not known yet).
        self.shared: bool | None = None
        #: A step of the one-run walk that left the wrong heads (the walk stopped there).
        self.failure: StepFailed | None = None
        #: The heads before and after the step being taken.
        self._expected: tuple[set[str], set[str]] = (set(), set())
        #: The read-back's ``SELECT`` (versions and session state), for the walk's dialect.
        self._read_sql = ""
        #: The session state the last read-back saw (``migrating_connection.SESSION_STATE``).
        self._seen_state: tuple[Any, ...] = ()
        #: The connection env.py migrates on (read back after each step), and the
        #: server process of ours (what tells a connection of env.py's own is beside it).
        self._reader: Connection
        self._pid = 0
        #: Whether the current env.py run's walk has begun (a second run_migrations).
        self._took_steps = False
        #: Whether env.py was once seen migrating on the throw-away database.
        self.beside_seen = False
        #: Our connection: its session as opened, and what ran on it since.
        self._fresh_state: tuple[Any, ...] = ()
        self._watch = SessionWatch()
        #: Whether each step starts on a new session, whatever it seems to have left: a
        #: routine that may change the session was defined (``SessionWatch.routine``),
        #: and what calling it changes cannot all be read back; or env.py's set-up of the
        #: session does not outlive a commit.
        self.careful = False
        self._db_stack = ExitStack()
        self._connection_stack = ExitStack()
        self.manager: MigrationManager
        self.connection: Connection

    def run(self) -> list[Broken]:
        """Walk every revision; the broken ones, in walk order."""
        try:
            self._fresh_database()
            start = 0
            while start < len(self.order):
                try:
                    self._walk(start)
                    break
                except StepFailed as failed:
                    if not self._recover(failed.script, failed):
                        self.broken[-1].not_reached += self.order[self.at + 1 :]
                        break
                    start = self.at + 1
        finally:
            self._connection_stack.close()
            self._db_stack.close()
        return self.broken

    def _walk(self, start: int) -> None:
        """Walk ``order[start:]`` on the current database; StepFailed at the first broken step."""
        self.at, self.next_step, self.step = start, 0, "up"
        while self.shared is not False and self.at < len(self.order):
            where = (self.at, self.next_step)
            self._walk_in_one_run()
            if (self.at, self.next_step) == where:
                self.shared = False  # env.py took no step: one run per step says why
        while self.at < len(self.order):  # env.py migrates elsewhere, or commits
            self.runner.advance(self.at + 1, len(self.order))
            revision = self.order[self.at]
            if self.next_step == 0 and self._skip(revision):
                self.at += 1
                continue
            self._stair_per_step(revision)

    def _walk_in_one_run(self) -> None:
        """One ``env.py`` run taking the steps of up to ``WALK_CHUNK`` revisions from
        where the walk is (none when env.py migrates elsewhere)."""
        self.failure = None
        self._took_steps = False
        where, before = (self.at, self.next_step), set(self.db_heads)
        self._session_as_new()
        try:
            self.manager.walk(self._steps, connection=self.connection)
        except (EnvPyFailed, GuardRefused):
            raise  # the environment is broken, or reached beyond the throw-away database
        except ReynardDBError as exc:
            raise step_failure(self.order[self.at], self.step, exc) from exc
        if self.failure is not None:
            raise self.failure
        if (self.at, self.next_step) != where:
            self._check_what_stayed(before)

    def _check_what_stayed(self, before: set[str]) -> None:
        """After a run, the heads committed must be those the walk reached, read on our
        connection: the read-back inside the steps sees env.py's transaction, and an
        env.py that never commits it would otherwise pass."""
        actual = read_heads(self.connection, self.manager.script)
        if same_heads(self.manager.script, actual, self.db_heads):
            return
        last = self.order[self.at - 1] if self.next_step == 0 else self.order[self.at]
        why = wrong_heads(last, self.step, actual, self.db_heads, before, migrated_here=True)
        raise StepFailed(last, self.step, why.error, elsewhere=True)  # env.py's: walk no more

    def _steps(self, heads: tuple[str, ...], context: MigrationContext) -> Iterator[WalkStep]:
        """Alembic's migration function: up, down, up for each revision from where the walk
        is, ``WALK_CHUNK`` revisions at most.

        Alembic runs each step (in its own transaction, or in the one it holds for
        the run) before it asks for the next one. ``_read_back`` checks the heads
        inside that transaction, on the connection Alembic migrates on; a step that
        left the wrong heads ends the run (``failure``). Then the step is committed
        (``commit_between_steps``), so that each stays as a command of its own would,
        and a step that may have left the session other than ``env.py`` set it up (a
        statement ``SessionWatch`` saw, or ``SESSION_STATE`` read once the step's
        transaction ended) ends the run: the next step starts on a fresh session, with
        ``env.py``'s set-up done again (a ``SET LOCAL`` of env.py's own included).
        """
        if self._took_steps:
            return  # env.py's second run_migrations: Alembic would find nothing left to do
        self._took_steps = True
        theirs = context.connection
        on_ours = same_connection(theirs, self.connection) or beside(theirs, self._pid)
        self.beside_seen = self.beside_seen or on_ours
        # In a transaction of env.py's own, steps cannot be committed one by one: one
        # env.py run a step then (a deferred constraint, a second connection in a
        # revision, a failure at COMMIT all need the step committed before the next).
        self.shared = (
            on_ours and not in_external_transaction(context) and steps_committed_apart(context)
        )
        if not self.shared or theirs is None:
            return  # nothing run: the caller walks one env.py run per step
        self._reader = theirs
        # Alembic calls these in each step's transaction, after it wrote the version table.
        callbacks = context.on_version_apply_callbacks
        context.on_version_apply_callbacks = (*callbacks, self._read_back)
        select = str(version_table(context).select().compile(dialect=context.dialect))
        self._read_sql = with_session_state(select)
        watch = SessionWatch()
        watch.watch(theirs)
        try:  # the connection as env.py set it up for this run: where every step starts
            set_up = self._connection_state(theirs)
            yield from self._walk_steps(context, set_up, watch, process_notes(context))
        finally:
            watch.unwatch(theirs)

    def _walk_steps(
        self,
        context: MigrationContext,
        set_up: tuple[Any, ...],
        watch: SessionWatch,
        notes: tuple[Any, ...],
    ) -> Iterator[WalkStep]:
        """The steps of ``_steps`` (see there), until a step moved the session or left a
        note in the process; ``set_up``: the session state and connection's hooks as
        env.py left them for the run, ``notes``: ``process_notes`` then."""
        revision_map = self.manager.script.revision_map
        end = min(self.at + WALK_CHUNK, len(self.order))
        first = True
        while self.at < end:
            self.runner.advance(self.at + 1, len(self.order))
            revision = self.order[self.at]
            if self.next_step == 0 and self._skip(revision):
                self.at += 1
                continue
            stair = self._stair(revision)
            for index in range(self.next_step, len(stair)):
                self.step, upward, before, after = stair[index]
                self._expected = (before, after)
                forget_created_types(context)  # each step as a command of its own
                yield WalkStep(revision_map, revision, upward)
                if self.failure is not None:
                    return
                commit_between_steps(context)  # each step stays, as a separate command's
                self._took(revision, index)
                if process_notes(context) != notes:
                    return  # the next step in a new run: a new config and context
                if self._moved(watch, set_up, first=first):
                    return  # the next step starts on a fresh session, in a new run
                first = False

    def _moved(self, watch: SessionWatch, set_up: tuple[Any, ...], *, first: bool) -> bool:
        """Whether the step just taken may have left the connection other than env.py set
        it up for the run: a statement ``SessionWatch`` saw, a listener the step added, or
        a session state that differs once the step's transaction ended. That state is read
        back in the step's transaction (one round trip with the versions); only when it
        differs there (a ``SET LOCAL``, a temporary table ``ON COMMIT DROP``), and after a
        run's first step, is it read again after the commit. What env.py set for its
        transaction (``SET LOCAL`` inside ``begin_transaction``) is gone by then: every
        step then needs a run of its own to have it (``careful``)."""
        self.careful = self.careful or watch.routine
        state, hooks = set_up
        if self.careful or watch.touched or self._hooks(self._reader) != hooks:
            return True
        in_step = self._seen_state == state[:STEP_WIDTH]
        if in_step and not first:
            return False
        if same_session(session_state(self._reader), state):
            return False
        self.careful = self.careful or (first and in_step)
        return True

    def _read_back(self, *, ctx: MigrationContext, **_: object) -> None:
        """Alembic's ``on_version_apply`` callback: the version table, read where the step
        left it (in its transaction, after Alembic wrote it), must hold the expected heads;
        the session's state is read in the same round trip.
        """
        before, after = self._expected
        rows = rows_of(self._reader, self._read_sql)
        self._seen_state = tuple(rows[0][1:])
        actual = {row[0] for row in rows if row[0] is not None}
        if not same_heads(self.manager.script, actual, after):
            revision = self.order[self.at]
            self.failure = wrong_heads(revision, self.step, actual, after, before)

    def _took(self, revision: Script, index: int) -> None:
        """Step ``index`` of ``revision``'s stair is done: the walk moves past it."""
        self.db_heads = self._expected[1]
        self.next_step = index + 1
        if self.next_step == 3:
            self._applied(revision)
            self.at += 1
            self.next_step = 0

    def _heads_with(self, revision: Script) -> set[str]:
        """The heads once ``revision`` is applied on the current ones."""
        return (self.heads - set(needs(revision))) | {revision.revision}

    def _stair(self, revision: Script) -> list[tuple[str, bool, set[str], set[str]]]:
        """The three steps on ``revision``: (name, upward, heads before, heads after)."""
        without = self.heads
        with_it = self._heads_with(revision)
        return [
            ("up", True, without, with_it),
            ("down", False, with_it, without),
            ("re-up", True, without, with_it),
        ]

    def _stair_per_step(self, revision: Script) -> None:
        """The steps left of up, down, up on ``revision``, one ``env.py`` run each, the
        heads read back after each."""
        stair = self._stair(revision)
        for index in range(self.next_step, len(stair)):
            self.step, _, before, after = stair[index]
            self._expected = (before, after)
            self._session_as_new()
            one_step(
                self.manager,
                self.connection,
                revision,
                self.step,
                before,
                after,
                migrated_here=self.beside_seen,
            )
            self._took(revision, index)

    def _applied(self, revision: Script) -> None:
        self.heads = self._heads_with(revision)
        self.db_heads = self.heads
        self.applied.add(revision.revision)

    def _skip(self, revision: Script) -> bool:
        """Whether ``revision`` needs a revision whose upgrade failed (then it is not reached)."""
        causes = self._blocked_by(revision)
        if causes:
            self.blocked[revision.revision] = causes
            for cause in causes:
                if revision not in cause.not_reached:
                    cause.not_reached.append(revision)
        return bool(causes)

    def _blocked_by(self, revision: Script) -> list[Broken]:
        """The broken revisions behind any revision ``revision`` needs (parents, depends_on)."""
        causes: list[Broken] = []
        for needed in sorted(needs(revision)):
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
            self.applied.add(revision.revision)
        self.heads = expected_heads(self.manager.script, self.applied)
        self.db_heads = self.heads
        try:
            self._fresh_database()
            reach(self.manager, self._connection_for_run, self.order, self.applied)
        except (StepFailed, ReynardDBError) as exc:
            why = exc.error if isinstance(exc, StepFailed) else str(exc)
            broken.error += f"; the walk stopped: rebuilding a throw-away database failed: {why}"
            return False
        return True

    def _connection_for_run(self) -> Connection:
        """Our connection, its session as a new command's (see ``_session_as_new``)."""
        self._session_as_new()
        return self.connection

    def _session_as_new(self) -> None:
        """Before an ``env.py`` run: a connection on which something may have changed the
        session (a statement ``SessionWatch`` notes, or a state other than when it was
        opened: ``env.py``'s own set-up included) is replaced by a new one, so that every
        run starts on a session as fresh as a new ``alembic`` command's."""
        self.careful = self.careful or self._watch.routine
        if self.careful or self._watch.touched:
            self._fresh_connection()
            return
        state, hooks = self._connection_state(self.connection)
        fresh_state, fresh_hooks = self._fresh_state
        if hooks != fresh_hooks or not same_session(state, fresh_state):
            self._fresh_connection()

    def _connection_state(self, connection: Connection) -> tuple[Any, ...]:
        """What a step may leave on a connection for the next: the session's state, and
        what ``_hooks`` reads (listeners, notes in its ``info``)."""
        return (session_state(connection), self._hooks(connection))

    @staticmethod
    def _hooks(connection: Connection) -> tuple[Any, ...]:
        """What a step may leave on a connection beside its session: listeners SQLAlchemy
        calls for it, and notes in its ``info``."""
        return (listeners(connection), connection_notes(connection))

    def _fresh_database(self) -> None:
        """Drop the current throw-away database (if any) and open an empty one, locked."""
        self._connection_stack.close()
        self._db_stack.close()
        self._db_stack = ExitStack()
        self.manager = self._db_stack.enter_context(self.runner.scratch_database(CHECK))
        self._fresh_connection()

    def _fresh_connection(self) -> None:
        """Close our connection (if any) and open a new one on the database, locked."""
        self._connection_stack.close()
        self._connection_stack = ExitStack()
        self.connection = self._connection_stack.enter_context(self.manager.locked())
        self._pid = backend_pid(self.connection)
        self._watch = SessionWatch()
        self._watch.watch(self.connection)
        self._fresh_state = self._connection_state(self.connection)
