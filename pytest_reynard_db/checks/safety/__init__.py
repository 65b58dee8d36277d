"""The opt-in migration-safety checks, ``lint`` and ``locks``, and their one entry point.

- ``lint`` renders each revision's offline SQL and runs Squawk over it;
- ``locks`` applies each revision on a filled throw-away database (``fill``) and
  reads which locks it took and which tables it rewrote;
- ``findings`` holds what both produce (findings, waivers, per-revision reports)
  and folds them into ``CheckResult`` rows; ``report`` prints the ``lint`` verb's
  table, JSON or Markdown.

``safety_reports`` is what ``reynard-migrate lint`` calls; ``check`` and the
pytest items call ``lint`` and ``locks`` as any other check.
"""

from __future__ import annotations

from ...foundation.errors import CheckFailed, CheckTimedOut, ReynardDBError, time_limit
from ..heads import walk_order
from ..runner import CheckRunner
from .findings import RevisionReport

# The report functions only: ``safety.lint`` stays the module, which SQLAlchemy's dialect
# registry reaches by attribute (``lint.OfflineDialect``); ``suite`` imports the checks.
from .lint import lint_reports
from .locks import locks_reports

#: The safety checks in the order ``lint`` runs them, each with its report function.
REPORTS = {"lint": lint_reports, "locks": locks_reports}

__all__ = ["REPORTS", "RevisionReport", "safety_reports"]


def safety_reports(
    runner: CheckRunner, only: str | None = None, timeout: float | None = None
) -> tuple[list[RevisionReport], list[ReynardDBError]]:
    """One report per revision and safety check (``only`` one of them), oldest first, and
    the error of each check that could not run.

    One check's error (Squawk not installed, a check running longer than ``timeout``
    seconds: a ``CheckFailed`` naming the database and the check) does not hide what
    the other found: each is run and reported on its own.
    """
    reports: list[RevisionReport] = []
    errors: list[ReynardDBError] = []
    for check, run in REPORTS.items():
        if only not in (None, check):
            continue
        try:
            with time_limit(timeout):
                reports += run(runner)
        except CheckTimedOut as exc:
            errors.append(CheckFailed(f"database {runner.db.name!r}: check {check} {exc}"))
        except ReynardDBError as exc:
            errors.append(exc)
    order = {s.revision: i for i, s in enumerate(walk_order(runner.script))}
    reports.sort(key=lambda r: (order.get(r.revision, len(order)), r.check))
    return reports, errors
