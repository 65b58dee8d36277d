"""``lint``: each revision's offline SQL, checked by Squawk (opt-in).

Squawk knows which DDL blocks reads or writes (an index built without
``CONCURRENTLY``, a ``NOT NULL`` column without a default, a type change, a
foreign key validated at once); it reads SQL files, and an Alembic tree has
none. Here each revision's ``--sql`` step (below: the offline SQL of exactly one
revision) is written to a temporary file, Squawk's JSON findings are mapped back
to the revision file, the statement and its table, and the revision's waivers
are applied.

Squawk is the optional extra ``pytest-reynard-db[lint]`` (the ``squawk-cli``
wheel); without it the check fails with one line saying how to install it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.script import Script
from sqlalchemy.dialects import registry as dialects
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import URL

from ...foundation.errors import ConfigError, MigrationFailed, ReynardDBError
from ...foundation.registry import Database, LintSettings
from ...foundation.urls import first_line
from ...migration.env_run import env_py_failure
from ...migration.tree import first_parent, last_line
from ...postgres.runas import process_scratch
from .. import CheckResult
from ..heads import walk_order
from ..runner import CheckRunner
from .findings import (
    BAD_WAIVER,
    Finding,
    RevisionReport,
    apply_waivers,
    read_waivers,
    to_results,
)

CHECK = "lint"
SQUAWK_TIMEOUT = 120
#: How a revision without offline SQL is reported (a note: nothing was found, nothing checked).
NOT_LINTABLE = "not lintable offline"


class SquawkMissing(ReynardDBError):
    """Squawk is not installed (exit 2)."""


def lint(runner: CheckRunner) -> list[CheckResult]:
    """Lint every revision's SQL; one failed result per revision with an unwaived finding."""
    return to_results(runner, CHECK, lint_reports(runner))


def lint_reports(runner: CheckRunner) -> list[RevisionReport]:
    """One report per revision, bases first.

    A revision whose offline SQL cannot be rendered gets a note "not lintable
    offline: <reason>" and the others are still linted; once ``env.py`` is the
    cause (it connects even with ``--sql``), it is not run again: every later
    revision gets the same note.
    """
    squawk = find_squawk()
    settings = runner.registry.lint
    reports: list[RevisionReport] = []
    everywhere: str | None = None  # why no revision renders (env.py), once known
    for revision in walk_order(runner.script):
        path = runner.relative(revision.path) or revision.path
        findings: list[Finding] = []
        notes: list[str] = []
        try:
            if everywhere is not None:
                raise NotLintable(everywhere, everywhere=True)
            sql = revision_sql(runner, revision)
        except NotLintable as exc:
            notes.append(f"{NOT_LINTABLE}: {exc.reason}")
            if exc.everywhere:
                everywhere = exc.reason
        else:
            findings = run_squawk(squawk, sql, settings, label=path) if sql.statements else []
        waivers, bad = read_waivers(revision.path, locks=False)
        reports.append(
            RevisionReport(
                runner.db.name,
                CHECK,
                revision.revision,
                path,
                apply_waivers(findings, waivers, CHECK, bad),
                notes,
                checked=not notes,
            )
        )
    return reports


def find_squawk() -> str:
    """The ``squawk`` binary: on PATH, else next to this Python (a venv not activated)."""
    found = shutil.which("squawk")
    if found:
        return found
    beside = Path(sys.executable).parent / ("squawk.exe" if os.name == "nt" else "squawk")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise SquawkMissing(
        "check 'lint' needs Squawk: pip install 'pytest-reynard-db[lint]' (the squawk-cli package)"
    )


def run_squawk(
    squawk: str, sql: RevisionSQL, settings: LintSettings, *, label: str
) -> list[Finding]:
    """Squawk's findings on ``sql``, each mapped to its statement and table."""
    with tempfile.TemporaryDirectory(prefix="lint-", dir=process_scratch()) as tmp:
        target = Path(tmp) / "revision.sql"
        target.write_text(sql.text, encoding="utf-8")
        command = [squawk, "--reporter", "json", "--no-error-on-unmatched-pattern"]
        if settings.excluded:
            command.append(f"--exclude={','.join(settings.excluded)}")
        if settings.pg_version:
            command.append(f"--pg-version={settings.pg_version}")
        try:
            done = subprocess.run(
                [*command, str(target)],
                capture_output=True,
                text=True,
                timeout=SQUAWK_TIMEOUT,
                cwd=tmp,  # no project .squawk.toml: the settings are ours
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"{label}: cannot run {squawk}: {exc}") from None
    try:
        raw = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        error = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(
            f"{label}: squawk failed (exit {done.returncode}): {error[0] if error else '?'}"
        ) from None
    return [_finding(item, sql) for item in raw if isinstance(item, dict)]


def _finding(item: dict[str, Any], sql: RevisionSQL) -> Finding:
    line = int(item.get("line", 0))
    statement = sql.statement_at(line, item.get("line_end"))
    text = statement.text if statement else None
    help_ = str(item.get("help") or "").strip()
    message = str(item.get("message", "")).strip()
    return Finding(
        CHECK,
        str(item.get("rule_name", "squawk")),
        f"{message} {help_}".strip(),
        table_of(text) if text else None,
        text,
    )


__all__ = [
    "BAD_WAIVER",
    "CHECK",
    "NOT_LINTABLE",
    "SquawkMissing",
    "find_squawk",
    "lint",
    "lint_reports",
]


# -- the offline SQL of one revision ------------------------------------------------------
#
# Alembic's range ``<down_rev>:<rev>`` (``base:<rev>`` for a base, one parent for a merge)
# is what a user would type; in a tree of several branches it may also print the steps of
# a ``depends_on`` or of a merge's other parent. Alembic marks each step with a comment,
# ``-- Running upgrade <parents> -> <rev>``, so the step of ``rev`` is cut out by that
# marker. Alembic's own bookkeeping (the ``alembic_version`` table) is dropped: it is not
# the revision's.

MARKER = re.compile(r"^-- Running upgrade .*-> (?P<rev>\S+)\s*$")
OFFLINE_DRIVER = "reynard_offline"
OFFLINE_URL = URL.create(f"postgresql+{OFFLINE_DRIVER}", database="reynard_db_offline")
TABLE_PATTERNS = (
    re.compile(
        r"\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<name>[\w\".]+)", re.IGNORECASE
    ),
    re.compile(
        r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
        r"(?:[\w\".]+\s+)?ON\s+(?:ONLY\s+)?(?P<name>[\w\".]+)",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:CREATE|DROP)\s+TABLE\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(?P<name>[\w\".]+)",
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:TRUNCATE|VACUUM\s+FULL|CLUSTER)\s+(?:TABLE\s+)?(?P<name>[\w\".]+)", re.I),
    re.compile(r"\b(?:UPDATE|DELETE\s+FROM|INSERT\s+INTO)\s+(?P<name>[\w\".]+)", re.IGNORECASE),
    re.compile(r"\bDROP\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?(?P<name>[\w\".]+)", re.I),
)


class OfflineConnect(Exception):
    """``env.py`` tried to connect while rendering offline SQL (and was not let)."""


class OfflineDialect(PGDialect_psycopg):
    """psycopg's PostgreSQL dialect, so offline SQL renders as it would, that never connects.

    The made-up offline URL names it: an ``env.py`` that connects in ``--sql``
    mode fails here, before any socket is opened, instead of reaching whatever
    server answers on the default port.
    """

    supports_statement_cache = True

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        raise OfflineConnect("env.py connected to a database in offline (--sql) mode")


dialects.register(f"postgresql.{OFFLINE_DRIVER}", __name__, "OfflineDialect")


class NotLintable(Exception):
    """A revision whose offline SQL cannot be rendered, and why.

    ``everywhere``: the cause is not in the revision (``env.py`` connects, or fails
    on import): no revision of the tree can be rendered.
    """

    def __init__(self, reason: str, *, everywhere: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.everywhere = everywhere


@dataclass(frozen=True)
class Statement:
    """One statement of a revision's SQL and the (0-based) lines it spans in the file."""

    text: str
    first: int
    last: int


@dataclass(frozen=True)
class RevisionSQL:
    """The SQL of one revision's step, as it would run (in Alembic's transaction)."""

    text: str
    statements: tuple[Statement, ...]

    def statement_at(self, line: int, line_end: int | None = None) -> Statement | None:
        """The statement spanning 0-based ``line`` (as Squawk reports it)."""
        for statement in self.statements:
            if statement.first <= line <= statement.last:
                return statement
        end = line if line_end is None else line_end
        for statement in self.statements:
            if line <= statement.first <= end:
                return statement
        return None


def step_range(revision: Script) -> str:
    """``<down_rev>:<rev>``; ``base:<rev>`` for a base; one (the first) parent for a merge."""
    return f"{first_parent(revision)}:{revision.revision}"


def revision_sql(runner: CheckRunner, revision: Script) -> RevisionSQL:
    """The ``--sql`` output of exactly ``revision``'s upgrade step, rendered by a manager
    aimed at a URL that is never connected to."""
    buffer = io.StringIO()  # the Config's stdout and output_buffer (where --sql goes)
    manager = runner.manager(OFFLINE_URL, stdout=buffer)
    try:
        manager.upgrade(step_range(revision), sql=True)
    except Exception as exc:  # whatever the revision or env.py raises: a reason, not a crash
        original = _original(exc)  # the manager wraps it in a one-line MigrationFailed
        if isinstance(original, OfflineConnect):
            raise NotLintable(
                f"{runner.env_py} connects to a database even with --sql (it has no "
                "context.is_offline_mode() branch); nothing was connected to",
                everywhere=True,
            ) from None
        raise not_lintable(runner.db, revision, original) from None
    section = cut_step(buffer.getvalue(), revision.revision)
    return split(section)


def _original(exc: BaseException) -> BaseException:
    """What the manager wrapped in its one-line ``MigrationFailed`` (only that wrapper is
    undone: a library's own ``raise ... from`` chain is part of the error)."""
    if isinstance(exc, MigrationFailed) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def not_lintable(db: Database, revision: Script, exc: BaseException) -> NotLintable:
    """Why ``revision`` could not be rendered: the revision file's line and the error; or,
    raised outside the revision (in ``env.py``: every revision would fail), where in
    ``env.py``, named as a failed migration run names it."""
    error = f"{type(exc).__name__}: {first_line(exc)}"
    line = last_line(exc, Path(revision.path)) if revision.path else None
    if line is None:
        return NotLintable(f"{env_py_failure(db, exc).where}: {error}", everywhere=True)
    hint = ""
    if "get_bind(" in Path(revision.path).read_text(encoding="utf-8", errors="replace"):
        hint = " (op.get_bind() has no database in --sql mode: the revision reads data)"
    return NotLintable(f"line {line}: {error}{hint}")


def cut_step(output: str, revision: str) -> str:
    """The lines after ``-- Running upgrade ... -> <revision>`` up to the next step's marker."""
    lines: list[str] = []
    inside = False
    for line in output.splitlines():
        marker = MARKER.match(line)
        if marker is not None:
            inside = marker.group("rev") == revision
            continue
        if inside:
            lines.append(line)
    return "\n".join(lines)


def split(section: str) -> RevisionSQL:
    """Statements of ``section`` (Alembic ends each with ``;`` at a line end), bookkeeping dropped.

    The text is wrapped in ``BEGIN``/``COMMIT`` as Alembic runs a step; a
    revision's ``autocommit_block`` shows up inside as ``COMMIT; ... BEGIN;``.
    """
    chunks: list[str] = []
    current: list[str] = []
    for raw in section.splitlines():
        if not current and not raw.strip():
            continue
        current.append(raw)
        if raw.rstrip().endswith(";"):
            chunks.append("\n".join(current).strip())
            current = []
    if current and "\n".join(current).strip():
        chunks.append("\n".join(current).strip())
    chunks = [c for c in chunks if "alembic_version" not in c]
    # The section ends with this step's COMMIT and, when a step follows, its BEGIN.
    if chunks and _is_transaction(chunks[-1]) and chunks[-1].upper().startswith("BEGIN"):
        chunks.pop()
    if chunks and _is_transaction(chunks[-1]) and chunks[-1].upper().startswith("COMMIT"):
        chunks.pop()
    kept = [c for c in chunks if not _is_transaction(c)]
    # Alembic's per-step BEGIN/COMMIT are outside the marker; inner ones are autocommit blocks.
    inner = [c for c in chunks if _is_transaction(c)]
    body: list[str] = ["BEGIN;", ""]
    statements: list[Statement] = []
    line = 2
    for chunk in chunks:
        if chunk not in kept and chunk not in inner:
            continue
        count = chunk.count("\n") + 1
        if chunk in kept:
            statements.append(Statement(chunk, line, line + count - 1))
        body += [chunk, ""]
        line += count + 1
    body += ["COMMIT;", ""]
    return RevisionSQL("\n".join(body), tuple(statements))


def table_of(statement: str) -> str | None:
    """The table a statement is about, read from its text (None when it names none)."""
    for pattern in TABLE_PATTERNS:
        found = pattern.search(statement)
        if found is not None:
            return found.group("name").replace('"', "")
    return None


def _is_transaction(chunk: str) -> bool:
    return chunk.rstrip(";").strip().upper() in {"BEGIN", "COMMIT", "BEGIN TRANSACTION"}
