"""``lint``: each revision's offline SQL, checked by Squawk (opt-in).

Squawk knows which DDL blocks reads or writes (an index built without
``CONCURRENTLY``, a ``NOT NULL`` column without a default, a type change, a
foreign key validated at once); it reads SQL files, and an Alembic tree has
none. Here each revision's ``--sql`` step (see ``offline_sql``) is written to
a temporary file, Squawk's JSON findings are mapped back to the revision file,
the statement and its table, and the revision's waivers are applied.

Squawk is the optional extra ``pytest-reynard-db[lint]`` (the ``squawk-cli``
wheel); without it the check fails with one line saying how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ...foundation.errors import ConfigError, ReynardDBError
from ...foundation.registry import LintSettings
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
from .offline_sql import NotLintable, RevisionSQL, revision_sql, table_of

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
