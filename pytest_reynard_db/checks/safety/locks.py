"""``locks``: what each revision really locks and rewrites, measured on PostgreSQL (opt-in).

A linter guesses from SQL text; this runs the revision. One throw-away
database walks the tree bases first (so it holds at least the revision's
parents), with a few rows in every table (``fill``). Each revision then runs
alone inside an outer transaction: the connection goes to ``env.py`` in
``config.attributes["connection"]`` already in a transaction, so Alembic does
not commit. Before rolling back, ``pg_locks`` for this backend and
``pg_class.relfilenode`` (read before and after) say which relations that
existed before the revision are now held in a mode that blocks writes
(``ACCESS EXCLUSIVE`` blocks reads too) and which tables were rewritten. The
revision is then applied for real and the walk goes on.

What cannot be measured is reported as "not measured" with the reason, a note
that fails nothing, never guessed at: a revision using ``autocommit_block``
(it cannot run in a transaction; it is applied and the walk goes on), and every
revision of a tree whose ``env.py`` migrates on a connection of its own (the
stock ``alembic init`` one builds an engine from ``sqlalchemy.url``): its
revisions run and commit outside the check's transaction, where neither its
locks nor a rollback can be had, so nothing is run at all.

A revision run on a connection that already holds locks (the outer transaction over
filled tables) could wait for them forever: a second connection doing the migration's
work (a revision that opens one of its own) waits on the check's own locks, and
PostgreSQL cannot see a deadlock that runs through a client. ``SelfDeadlockWatch``
(below) polls ``pg_blocking_pids`` from a connection of its own and cancels a backend
blocked by the check's backend; the check then says that revision was not measured,
and why.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from alembic.script import Script
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from ...foundation.errors import MigrationFailed
from ...migration.env_run import runs_outside_a_transaction
from ...migration.manager import MigrationManager
from ...migration.tree import upgrade_steps
from .. import CheckResult
from ..heads import walk_order
from ..runner import USER_SCHEMA, CheckRunner
from ..walk import same_connection
from .fill import Filler
from .findings import Finding, RevisionReport, apply_waivers, read_waivers, to_results

CHECK = "locks"
NOT_MEASURED = "not measured"
RELATION = re.compile(r'relation "([^"]+)"')

#: Lock modes reported, and the rule a finding of each is waived by.
MODES = {
    "AccessExclusiveLock": ("access-exclusive-lock", "blocks reads and writes"),
    "ExclusiveLock": ("share-lock", "blocks writes"),
    "ShareRowExclusiveLock": ("share-lock", "blocks writes"),
    "ShareLock": ("share-lock", "blocks writes"),
}
STRENGTH = list(MODES)  # strongest first
KINDS = {"r": "table", "p": "table", "m": "materialized view", "i": "index", "S": "sequence"}

RELATIONS = text(
    f"""
    SELECT c.oid, c.relkind, c.relfilenode, n.nspname, c.relname,
           COALESCE(t.relname, '') AS of_table
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_index x ON x.indexrelid = c.oid
    LEFT JOIN pg_class t ON t.oid = x.indrelid
    WHERE c.relkind IN ('r', 'p', 'm', 'i', 'S')
      AND {USER_SCHEMA}
      AND c.relname <> 'alembic_version' AND COALESCE(t.relname, '') <> 'alembic_version'
    """
)
SCANS = text(
    "SELECT relid, COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_xact_user_tables"
)
#: Modes that block writes but are reported only on a table also read under them
#: (a foreign key's validation scan); a new table's foreign key takes them briefly.
SCAN_MODES = frozenset({"ShareRowExclusiveLock", "ExclusiveLock"})
UNIQUE_VIOLATION = "23505"
HELD = text(
    """
    SELECT relation, mode FROM pg_locks
    WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    """
)


class NotMeasured(Exception):
    """A revision whose locks cannot be read, and why; ``everywhere``: nor any other's."""

    def __init__(self, reason: str, *, everywhere: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.everywhere = everywhere


@dataclass(frozen=True)
class Relation:
    oid: int
    kind: str
    filenode: int
    schema: str
    name: str
    of_table: str

    @property
    def label(self) -> str:
        name = self.name if self.schema == "public" else f"{self.schema}.{self.name}"
        kind = KINDS.get(self.kind, "relation")
        return (
            name
            if kind == "table"
            else f"{kind} {name}" + (f" (of {self.of_table})" if self.of_table else "")
        )


def locks(runner: CheckRunner) -> list[CheckResult]:
    """Measure every revision; one failed result per revision with an unwaived finding."""
    return to_results(runner, CHECK, locks_reports(runner))


def locks_reports(runner: CheckRunner) -> list[RevisionReport]:
    """One report per revision, bases first; the walk stops at a revision that cannot be
    applied, and at one showing that ``env.py`` migrates elsewhere (that revision and every
    later one: "not measured", with the reason)."""
    reports: list[RevisionReport] = []
    filler = Filler()
    everywhere: str | None = None  # why no revision can be measured (env.py), once known
    with runner.scratch_database(CHECK) as manager, manager.locked() as connection:
        for revision in walk_order(runner.script):
            path = runner.relative(revision.path) or revision.path
            report = RevisionReport(runner.db.name, CHECK, revision.revision, path)
            reports.append(report)
            try:
                if everywhere is not None:
                    raise NotMeasured(everywhere, everywhere=True)
                findings = measure(
                    manager, connection, revision, report, filler, env_py=runner.env_py
                )
            except NotMeasured as exc:
                report.notes.append(f"{NOT_MEASURED}: {exc.reason}")
                report.checked = False
                everywhere = exc.reason if exc.everywhere else None
                findings = []
            waivers, bad = read_waivers(revision.path, locks=True)
            report.findings = apply_waivers(findings, waivers, CHECK, bad)
            if everywhere is not None:
                continue  # env.py migrates elsewhere: no walk to go on with
            try:  # now for real, on the tables as the earlier revisions left them
                manager.upgrade(revision.revision, connection=connection)
            except MigrationFailed as exc:
                report.findings.append(_failed(exc, "fails"))
                break
    return reports


def measure(
    manager: MigrationManager,
    connection: Connection,
    revision: Script,
    report: RevisionReport,
    filler: Filler,
    *,
    env_py: str = "env.py",
) -> list[Finding]:
    """Run ``revision`` on filled tables in an outer transaction, read locks and rewrites.

    ``NotMeasured`` when that cannot be done: the revision uses ``autocommit_block``;
    ``env.py`` (named ``env_py``) configures Alembic with a connection other than
    the one it is passed (nothing is run then, ``everywhere``); a second connection
    waited on this transaction's locks (it is stopped, see ``SelfDeadlockWatch``:
    it would wait forever)."""
    if runs_outside_a_transaction(revision.path):
        raise NotMeasured("autocommit_block (cannot run inside a transaction)")
    try:
        return _measure(manager, connection, revision, report, filler, env_py)
    except MigrationFailed as exc:
        if _sqlstate(exc) != UNIQUE_VIOLATION:
            return [_failed(exc, "fails on tables with rows")]
        report.notes.append(
            "measured on tables without generated rows: they collided with the revision's "
            f"own data ({exc.reason})"
        )
    try:
        return _measure(manager, connection, revision, report, None, env_py)
    except MigrationFailed as exc:
        return [_failed(exc, "fails")]


def _measure(
    manager: MigrationManager,
    connection: Connection,
    revision: Script,
    report: RevisionReport,
    filler: Filler | None,
    env_py: str,
) -> list[Finding]:
    before = relations(connection)
    connection.commit()
    outer = connection.begin()
    try:
        filled = filler.fill(connection) if filler is not None else []
        scanned_before = scans(connection)
        elsewhere: list[bool] = []

        def on_ours(heads: tuple[str, ...], context: Any) -> list[Any]:
            """The revision's steps, only if Alembic migrates on ``connection``."""
            if not same_connection(context.connection, connection):
                elsewhere.append(True)
                return []
            return upgrade_steps(manager.script, revision.revision, heads)

        with SelfDeadlockWatch(connection, manager.url) as watch:
            try:
                manager.walk(on_ours, connection=connection)
            except MigrationFailed:
                if watch.cancelled:
                    raise NotMeasured(SECOND_CONNECTION) from None
                raise
        if elsewhere:
            raise NotMeasured(env_elsewhere(env_py), everywhere=True)
        if watch.cancelled:
            raise NotMeasured(SECOND_CONNECTION)
        report.notes += filled  # what the fill could not do matters to a measured revision only
        held = connection.execute(HELD).all()
        scanned = {oid for oid, n in scans(connection).items() if n > scanned_before.get(oid, 0)}
        after = relations(connection)
    finally:
        if outer.is_active:
            outer.rollback()
    strongest: dict[int, str] = {}
    for oid, mode in held:
        if oid not in before or mode not in MODES:
            continue
        if mode in SCAN_MODES and oid not in scanned:
            continue  # a brief lock (a new table's foreign key): nothing read under it
        current = strongest.get(oid)
        if current is None or STRENGTH.index(mode) < STRENGTH.index(current):
            strongest[oid] = mode
    rewritten = {
        oid
        for oid, rel in before.items()
        if rel.kind in ("r", "m") and oid in after and after[oid].filenode != rel.filenode
    }
    # ACCESS EXCLUSIVE held for a catalogue change only (a nullable or constant-default
    # ADD COLUMN, a rename): nothing rewritten, nothing read under it. It queues behind
    # long transactions, so it is said, but it is not what takes production down.
    brief = {
        oid
        for oid, mode in strongest.items()
        if mode == "AccessExclusiveLock"
        and oid not in rewritten
        and not _read_under_lock(oid, before, scanned)
    }
    report.notes += [
        f"{before[oid].label}: AccessExclusiveLock, briefly (catalogue only: not rewritten, "
        "nothing read under it)"
        for oid in sorted(brief, key=lambda o: before[o].label)
    ]
    return [
        _finding(before[oid], strongest.get(oid), oid in rewritten)
        for oid in sorted((set(strongest) - brief) | rewritten, key=lambda o: before[o].label)
    ]


#: Why a revision run on the check's connection was not measured when another waited on it.
SECOND_CONNECTION = (
    "a second connection (opened by env.py or by the revision) waited on the locks of the "
    "check's transaction and was stopped; only the connection passed to env.py is measured"
)


def env_elsewhere(env_py: str) -> str:
    """Why nothing is measured under an ``env.py`` that migrates on a connection of its own."""
    return (
        f"{env_py} migrates on a connection of its own, not the one passed in "
        'config.attributes["connection"] (as the stock alembic init env.py does), and locks '
        "are read inside the check's transaction; to measure them: connectable = "
        'config.attributes.get("connection") or engine_from_config(...), and run on it '
        "directly when it is a Connection"
    )


def _read_under_lock(oid: int, before: dict[int, Relation], scanned: set[int]) -> bool:
    """Whether the revision read the relation (an index: its table) while holding it."""
    relation = before[oid]
    if relation.kind == "i":
        return any(r.name == relation.of_table and o in scanned for o, r in before.items())
    return oid in scanned


def scans(connection: Connection) -> dict[int, int]:
    """Sequential and index scans this transaction made, per table (``pg_stat_xact_*``)."""
    return {row[0]: row[1] for row in connection.execute(SCANS).all()}


def relations(connection: Connection) -> dict[int, Relation]:
    """Every user relation by oid, with its relfilenode."""
    return {row[0]: Relation(*row) for row in connection.execute(RELATIONS).all()}


def _finding(relation: Relation, mode: str | None, rewritten: bool) -> Finding:
    table = relation.of_table if relation.kind == "i" and relation.of_table else relation.name
    held = f"{mode} ({MODES[mode][1]})" if mode else "no blocking lock"
    state = "rewritten (new relfilenode)" if rewritten else "not rewritten"
    if rewritten:
        rule = "table-rewrite"
    else:
        assert mode is not None
        rule = MODES[mode][0]
    return Finding(CHECK, rule, f"{relation.label}: {held}, {state}", table=table)


def _failed(exc: MigrationFailed, how: str) -> Finding:
    """A revision that does not run (on tables with rows: ``NOT NULL`` without a default)."""
    reason = exc.reason
    named = RELATION.search(reason)
    return Finding(
        CHECK, "migration-failed", f"{how}: {reason}", table=named.group(1) if named else None
    )


def _sqlstate(exc: BaseException) -> str | None:
    cause = exc.__cause__
    orig = getattr(cause, "orig", None)
    return getattr(orig, "sqlstate", None)


# -- the self-deadlock watch -------------------------------------------------------------

WATCH_INTERVAL = 0.2
BLOCKED_BY = text(
    "SELECT pid, pg_cancel_backend(pid) FROM pg_stat_activity "
    "WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"
)


class SelfDeadlockWatch:
    """While active, cancel any backend that waits on ``connection``'s locks."""

    def __init__(self, connection: Connection, url: URL) -> None:
        self.backend = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
        self.url = url
        self.cancelled: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SelfDeadlockWatch:
        self._thread = threading.Thread(target=self._watch, name="reynard-db-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as watcher:
                watcher.execution_options(isolation_level="AUTOCOMMIT")
                while not self._stop.wait(WATCH_INTERVAL):
                    rows = watcher.execute(BLOCKED_BY, {"pid": self.backend}).all()
                    self.cancelled += [int(row[0]) for row in rows]
        except Exception:  # a watch that cannot watch must not fail the check
            return
        finally:
            engine.dispose()
