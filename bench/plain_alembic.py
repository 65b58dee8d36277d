"""What plain Alembic says about a tree: the verdicts ``upgrade``, ``downgrade_clean`` and
``stairway`` are judged by (SPEC section 8), each step a fresh ``alembic`` command.

- ``upgrade``: ``alembic upgrade heads`` on an empty database exits 0 and leaves every
  revision applied.
- ``downgrade_clean``: then ``alembic downgrade base`` exits 0, nothing stays applied, and
  the catalog holds nothing of the tree's but the version table (``LEFTOVERS``).
- ``stairway``: for each revision R, bases first (Alembic's ``walk_revisions`` reversed), on
  a database holding the revisions before it: ``alembic upgrade R``, ``alembic downgrade
  R@<parent>`` (``downgrade -1`` scoped to R's branch: exact with several heads), ``alembic
  upgrade R``; R is broken at the first of the three ("up", "down", "re-up") that exits non-zero
  or leaves the wrong revisions applied. The walk goes on, on a fresh database upgraded to the
  revisions it had reached (R with them when its first upgrade worked); what needs a revision
  whose upgrade failed is not reached.

"Applied" is read back after every command: the version table's rows and everything they
need (parents and ``depends_on``), so an ``env.py`` that migrated some other database is
caught. This module imports nothing of ``pytest_reynard_db``: it is the oracle the checks
are compared with (``tests/test_oracle.py``) and real trees are run through.

Usage::

    with ForkServer(env=shell_env) as run:
        tree = Tree(ini=project / "alembic.ini", env=shell_env, url_env=("DATABASE_URL",))
        verdicts = plain_checks(tree, fresh_database, run)
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass

from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import URL

from .alembic_commands import AlembicRunner, Command, ForkServer, Subprocesses
from .plain_database import FreshDatabase, Session, Tree, fresh_database_on

__all__ = [
    "AlembicRunner",
    "Command",
    "ForkServer",
    "FreshDatabase",
    "PlainVerdicts",
    "StairwayBreak",
    "StairwayVerdict",
    "Subprocesses",
    "Tree",
    "Verdict",
    "fresh_database_on",
    "plain_checks",
    "plain_checks_on",
    "plain_downgrade_clean",
    "plain_stairway",
    "plain_upgrade",
]


@dataclass(frozen=True)
class Verdict:
    """One check's verdict: ``ok``, and why not (``reason``: the command's last line, or
    what was applied instead). ``revision``: the revision a failed command was running,
    where its output names one (Alembic's ``Running upgrade A -> B`` log lines)."""

    ok: bool
    reason: str = ""
    revision: str | None = None


@dataclass(frozen=True)
class StairwayBreak:
    """A broken revision of the stairway: the first failing step ("up", "down", "re-up")."""

    revision: str
    step: str
    reason: str


@dataclass(frozen=True)
class StairwayVerdict:
    """Every broken revision in walk order, and those not reached because of one."""

    broken: tuple[StairwayBreak, ...]
    not_reached: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.broken


@dataclass(frozen=True)
class PlainVerdicts:
    upgrade: Verdict
    downgrade_clean: Verdict
    stairway: StairwayVerdict


_RUNNING = re.compile(r"Running (upgrade|downgrade) ([0-9a-zA-Z_, ()]*?) -> ([0-9a-zA-Z_, ()]*)")


# -- the graph ----------------------------------------------------------------------------
def walk_order(script: ScriptDirectory) -> list[Script]:
    """Every revision, bases first: Alembic's ``walk_revisions`` (heads first) reversed."""
    return [s for s in reversed(list(script.walk_revisions())) if s is not None]


def _needs(script: ScriptDirectory, revision: str) -> tuple[str, ...]:
    """Parents and ``depends_on``, resolved: what Alembic applies before ``revision``."""
    found = script.get_revision(revision)
    return () if found is None else tuple(found._all_down_revisions)


def applied_by(script: ScriptDirectory, rows: set[str]) -> set[str]:
    """Every revision the version table's ``rows`` stand for: they and all they need."""
    seen: set[str] = set()
    stack = list(rows)
    while stack:
        revision = stack.pop()
        if revision not in seen:
            seen.add(revision)
            stack.extend(_needs(script, revision))
    return seen


def _tips(script: ScriptDirectory, applied: set[str]) -> list[str]:
    """The applied revisions nothing applied needs: upgrading to each reaches ``applied``."""
    below = {need for rev in applied for need in _needs(script, rev)}
    return sorted(applied - below)


def _down_target(revision: Script) -> str:
    """``downgrade -1`` of ``revision`` alone: scoped to its branch, to its first parent."""
    parents = sorted(revision._versioned_down_revisions)
    return f"{revision.revision}@{parents[0] if parents else 'base'}"


def _running(output: str) -> str | None:
    """The revision the last ``Running upgrade A -> B`` / ``downgrade B -> A`` line names."""
    found = _RUNNING.findall(output)
    if not found:
        return None
    direction, before, after = found[-1]
    named = after if direction == "upgrade" else before
    return named.split(",")[0].strip(" ()") or None


def _step(session: Session, script: ScriptDirectory, expected: set[str], *argv: str) -> str:
    """Run one command; why it failed ("" when it exited 0 and ``expected`` is applied)."""
    done = session.command(*argv)
    return done.error if not done.ok else _misplaced(session, script, expected, argv)


def _misplaced(
    session: Session, script: ScriptDirectory, expected: set[str], argv: tuple[str, ...]
) -> str:
    """Why the database is not at ``expected`` after ``argv`` exited 0 ("" when it is)."""
    applied = applied_by(script, session.rows())
    if applied == expected:
        return ""
    shown = ", ".join(sorted(_tips(script, applied))) or "base"
    return f"{' '.join(argv)} left the database at {shown}"


# -- the verdicts -------------------------------------------------------------------------
def plain_upgrade(tree: Tree, url: URL, run: AlembicRunner) -> Verdict:
    """``alembic upgrade heads`` on the empty database ``url``."""
    script = tree.script()
    everything = {s.revision for s in walk_order(script)}
    with Session(tree, url, run) as session:
        done = session.command("upgrade", "heads")
        if not done.ok:
            return Verdict(False, done.error, _running(done.output))
        why = _misplaced(session, script, everything, done.argv[-2:])  # exited 0: where is it?
    return Verdict(not why, why)


def plain_downgrade_clean(tree: Tree, url: URL, run: AlembicRunner) -> Verdict:
    """``alembic upgrade heads`` then ``alembic downgrade base`` on the empty database
    ``url``; anything of the tree's left in the catalog fails it."""
    upgraded = plain_upgrade(tree, url, run)
    if not upgraded.ok:
        return Verdict(False, f"upgrade heads: {upgraded.reason}", upgraded.revision)
    return _downgrade_and_look(tree, url, run)


def _downgrade_and_look(tree: Tree, url: URL, run: AlembicRunner) -> Verdict:
    with Session(tree, url, run) as session:
        done = session.command("downgrade", "base")
        if not done.ok:
            return Verdict(False, done.error, _running(done.output))
        why = _misplaced(session, tree.script(), set(), done.argv[-2:])
        left = [] if why else session.leftovers()
    if why:
        return Verdict(False, why)
    return Verdict(not left, "left: " + ", ".join(left) if left else "")


def plain_checks(tree: Tree, fresh_database: FreshDatabase, run: AlembicRunner) -> PlainVerdicts:
    """All three verdicts; ``downgrade_clean`` goes on from ``upgrade``'s database."""
    with fresh_database() as url:
        upgraded = plain_upgrade(tree, url, run)
        if upgraded.ok:
            clean = _downgrade_and_look(tree, url, run)
        else:
            clean = Verdict(False, f"upgrade heads: {upgraded.reason}", upgraded.revision)
    return PlainVerdicts(upgraded, clean, plain_stairway(tree, fresh_database, run))


#: The fork servers of ``plain_checks_on``, one per environment, kept while this process lives
#: (a server ends when its stdin closes, with this process).
_SERVERS: dict[tuple[tuple[str, str], ...], ForkServer] = {}


def plain_checks_on(tree: Tree, admin_url: URL | str) -> PlainVerdicts:
    """``plain_checks`` on fresh databases of the server ``admin_url`` reaches, through a fork
    server this process keeps. Its arguments pickle: a worker process can judge trees while
    its caller does something else (``tests/test_oracle.py``)."""
    key = tuple(sorted(tree.env.items()))
    if key not in _SERVERS:
        _SERVERS[key] = ForkServer(env=tree.env)
    return plain_checks(tree, lambda: fresh_database_on(admin_url), _SERVERS[key])


def plain_stairway(
    tree: Tree, fresh_database: FreshDatabase, run: AlembicRunner
) -> StairwayVerdict:
    """Up, down, up on every revision, bases first; see the module's docstring."""
    return _Walk(tree, fresh_database, run).run()


class _Walk:
    """The plain stairway's state: what the current database holds, what is broken."""

    def __init__(self, tree: Tree, fresh_database: FreshDatabase, run: AlembicRunner) -> None:
        self.tree, self.fresh_database, self.run_command = tree, fresh_database, run
        self.script = tree.script()
        self.applied: set[str] = set()
        self.blocked: set[str] = set()
        self.broken: list[StairwayBreak] = []
        self.not_reached: list[str] = []

    def run(self) -> StairwayVerdict:
        order = walk_order(self.script)
        with ExitStack() as database:
            session = self._fresh(database)
            for index, revision in enumerate(order):
                if self.blocked.intersection(_needs(self.script, revision.revision)):
                    self.blocked.add(revision.revision)
                    self.not_reached.append(revision.revision)
                    continue
                if self._stair(session, revision):
                    continue
                database.close()  # the failed step may have left it anywhere
                session = self._fresh(database)
                if not self._rebuild(session):
                    self.not_reached += [s.revision for s in order[index + 1 :]]
                    break
        return StairwayVerdict(tuple(self.broken), tuple(self.not_reached))

    def _fresh(self, stack: ExitStack) -> Session:
        url = stack.enter_context(self.fresh_database())
        return stack.enter_context(Session(self.tree, url, self.run_command))

    def _stair(self, session: Session, revision: Script) -> bool:
        """Up, down, up on ``revision``; False (and recorded) at the first failing step."""
        rev = revision.revision
        without, with_it = set(self.applied), self.applied | {rev}
        steps = [
            ("up", with_it, ("upgrade", rev)),
            ("down", without, ("downgrade", _down_target(revision))),
            ("re-up", with_it, ("upgrade", rev)),
        ]
        for step, expected, argv in steps:
            why = _step(session, self.script, expected, *argv)
            if why:
                self.broken.append(StairwayBreak(rev, step, why))
                if step == "up":
                    self.blocked.add(rev)
                else:
                    self.applied = with_it  # its upgrade works: what builds on it is walked
                return False
        self.applied = with_it
        return True

    def _rebuild(self, session: Session) -> bool:
        """Bring a fresh database to ``applied``, one ``alembic upgrade`` per tip."""
        for tip in _tips(self.script, self.applied):
            expected = applied_by(self.script, {tip}) | applied_by(self.script, session.rows())
            why = _step(session, self.script, expected, "upgrade", tip)
            if why:
                last = self.broken[-1]
                reason = f"{last.reason}; the walk stopped: rebuilding failed: {why}"
                self.broken[-1] = StairwayBreak(last.revision, last.step, reason)
                return False
        return True
