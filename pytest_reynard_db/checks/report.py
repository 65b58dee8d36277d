"""How check results are shown: a summary table, the JSON (as the README's "Migration
checks" shows it), a progress line.

Kept apart from the checks so that the CLI and the pytest plugin only choose
a rendering; nothing here runs a check.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from .. import text
from .result import CheckResult

CHECK_FORMATS = ("table", "json", "github", "junit")


def show_results(results: Sequence[CheckResult], fmt: str, out: TextIO, *, root: Path) -> None:
    """``check --format``: the table, the JSON, or a CI's own format."""
    from .ci_formats import print_github, print_junit

    if fmt == "github":
        print_github(results, out, root=root)
    elif fmt == "junit":
        print_junit(results, out)
    else:
        (print_json if fmt == "json" else print_table)(results, out)


def print_json(results: Sequence[CheckResult], out: TextIO) -> None:
    """``{"results": [...]}``, one entry per database and check that ran (the README's
    "Migration checks")."""
    json.dump({"results": [r.as_json() for r in results]}, out, indent=2)
    out.write("\n")


def print_table(results: Sequence[CheckResult], out: TextIO) -> None:
    """One row per result (database, check, ok/FAIL, first line), then each failure in full."""
    rows = [("database", "check", "result", "message")]
    rows += [(r.database, r.check, _verdict(r), r.summary) for r in results]
    text.print_table(rows, out)
    failed = [r for r in results if not r.ok]
    for result in failed:
        if "\n" in result.message.strip():  # the table showed the first line only
            print(f"\n{result.database} {result.check}:", file=out)
            print(result.message.strip(), file=out)
    verdict = f"{len(failed)} failed" if failed else "all passed"
    print(f"\n{len(results)} checks, {verdict}", file=out)


def _verdict(result: CheckResult) -> str:
    if result.skipped:
        return "skip"
    return "ok" if result.ok else "FAIL"


def progress_line(stream: TextIO) -> Callable[[str, str], None]:
    """A ``run_checks`` progress callback printing ``check <db>: <check>`` on ``stream``."""

    def show(database: str, check: str) -> None:
        print(f"check {database}: {check} ...", file=stream, flush=True)

    return show
