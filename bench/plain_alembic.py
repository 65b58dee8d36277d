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

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import URL

from .alembic_commands import AlembicRunner, Command, ForkServer, Subprocesses

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
    "plain_checks",
    "plain_downgrade_clean",
    "plain_stairway",
    "plain_upgrade",
]

#: ``fresh_database()``: a context manager giving the URL of a new empty database, dropped after.
FreshDatabase = Callable[[], AbstractContextManager[URL]]


@dataclass(frozen=True)
class Tree:
    """A project's Alembic tree as plain ``alembic -c INI`` sees it.

    ``ini``: its ini file; each command gets a copy beside it whose ``sqlalchemy.url`` is
    the database under test. ``env``: the whole environment of each command (a user's
    shell); ``url_env``: variables of it that env.py reads its URL from, set to that
    database's URL too. ``cwd``: where commands run (default: the ini's folder).
    ``version_table``/``version_table_schema``: where env.py keeps the versions.
    """

    ini: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    url_env: tuple[str, ...] = ()
    cwd: Path | None = None
    section: str = "alembic"
    version_table: str = "alembic_version"
    version_table_schema: str | None = None

    def script(self) -> ScriptDirectory:
        """The tree, loaded by Alembic in this process (its graph, for the walk)."""
        return ScriptDirectory.from_config(Config(str(self.ini), ini_section=self.section))


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


#: What a migration could leave in the catalog, as (kind, name) rows: relations, types
#: (enum, domain, range, composite of its own), functions, extensions, schemas. Objects an
#: extension owns go with it. The version table (and the schema holding it) are Alembic's.
LEFTOVERS = """
WITH user_ns AS (
  SELECT oid, nspname FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema')
    AND nspname !~ '^pg_(toast|temp_)')
SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
       WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' ELSE 'table' END,
       n.nspname::text || '.' || c.relname::text
FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relname <> :version_table
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT 'type', n.nspname::text || '.' || t.typname::text
FROM pg_type t JOIN user_ns n ON n.oid = t.typnamespace
WHERE (t.typtype IN ('e', 'd', 'r')
       OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                  AND d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT 'function', n.nspname::text || '.' || p.proname::text
FROM pg_proc p JOIN user_ns n ON n.oid = p.pronamespace
WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'extension', extname::text FROM pg_extension WHERE extname <> 'plpgsql'
UNION ALL
SELECT 'schema', n.nspname::text FROM user_ns n
WHERE n.nspname <> 'public'
  AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid
                  AND c.relname = :version_table)
ORDER BY 1, 2
"""

_RUNNING = re.compile(r"Running (upgrade|downgrade) ([0-9a-zA-Z_, ()]*?) -> ([0-9a-zA-Z_, ()]*)")


class _Session:
    """Commands on one database: a copy of the ini aimed at it, and its version table read."""

    def __init__(self, tree: Tree, url: URL, run: AlembicRunner) -> None:
        self.tree, self.url, self.run = tree, url, run
        rendered = url.render_as_string(hide_password=False)
        self.env = {**tree.env, **dict.fromkeys(tree.url_env, rendered)}

    @contextmanager
    def ini(self) -> Iterator[Path]:
        """A copy of the tree's ini beside it (``%(here)s`` unchanged), naming the database."""
        copy = self.tree.ini.with_name(f".plain-alembic-{uuid.uuid4().hex[:12]}.ini")
        copy.write_text(_with_url(self.tree.ini.read_text(), self.tree.section, self.url))
        try:
            yield copy
        finally:
            copy.unlink(missing_ok=True)

    def command(self, *argv: str) -> Command:
        with self.ini() as ini:
            cwd = self.tree.cwd or self.tree.ini.parent
            return self.run(["-c", str(ini), "-n", self.tree.section, *argv], cwd=cwd, env=self.env)

    def rows(self) -> set[str]:
        """What the version table holds (nothing when it does not exist)."""
        table = sa.table(
            self.tree.version_table,
            sa.column("version_num"),
            schema=self.tree.version_table_schema,
        )
        engine = sa.create_engine(self.url, poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                if not sa.inspect(connection).has_table(
                    self.tree.version_table, schema=self.tree.version_table_schema
                ):
                    return set()
                return {str(row[0]) for row in connection.execute(sa.select(table.c.version_num))}
        finally:
            engine.dispose()

    def leftovers(self) -> list[str]:
        engine = sa.create_engine(self.url, poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                found = connection.execute(
                    sa.text(LEFTOVERS), {"version_table": self.tree.version_table}
                )
                return [f"{kind} {name}" for kind, name in found]
        finally:
            engine.dispose()


def _with_url(ini: str, section: str, url: URL) -> str:
    """The ini's text with ``sqlalchemy.url`` of ``section`` set to ``url`` (added if absent)."""
    value = url.render_as_string(hide_password=False).replace("%", "%%")
    lines = ini.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
    if start is None:
        return f"[{section}]\nsqlalchemy.url = {value}\n{ini}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if re.match(r"\s*sqlalchemy\.url\s*[=:]", lines[i]):
            lines[i] = f"sqlalchemy.url = {value}"
            # a continuation line would belong to the old value
            while i + 1 < end and lines[i + 1][:1].isspace() and lines[i + 1].strip():
                del lines[i + 1]
                end -= 1
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"sqlalchemy.url = {value}")
    return "\n".join(lines) + "\n"


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


def _step(session: _Session, script: ScriptDirectory, expected: set[str], *argv: str) -> str:
    """Run one command; why it failed ("" when it exited 0 and ``expected`` is applied)."""
    done = session.command(*argv)
    return done.error if not done.ok else _misplaced(session, script, expected, argv)


def _misplaced(
    session: _Session, script: ScriptDirectory, expected: set[str], argv: tuple[str, ...]
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
    session = _Session(tree, url, run)
    everything = {s.revision for s in walk_order(script)}
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
    session = _Session(tree, url, run)
    done = session.command("downgrade", "base")
    if not done.ok:
        return Verdict(False, done.error, _running(done.output))
    why = _misplaced(session, tree.script(), set(), done.argv[-2:])
    if why:
        return Verdict(False, why)
    left = session.leftovers()
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

    def _fresh(self, stack: ExitStack) -> _Session:
        url = stack.enter_context(self.fresh_database())
        return _Session(self.tree, url, self.run_command)

    def _stair(self, session: _Session, revision: Script) -> bool:
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

    def _rebuild(self, session: _Session) -> bool:
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
