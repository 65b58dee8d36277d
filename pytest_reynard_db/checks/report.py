"""How check results are shown: a summary table, the JSON (as the README's "Migration
checks" shows it), a progress line.

Kept apart from the checks so that the CLI and the pytest plugin only choose
a rendering; nothing here runs a check.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from .. import text
from ..text import counted
from .result import CheckResult

CHECK_FORMATS = ("table", "json", "github", "junit")


def show_results(
    results: Sequence[CheckResult], fmt: str, out: TextIO, err: TextIO | None = None
) -> None:
    """``check --format``: the table, the JSON, or a CI's own format. ``github`` prints
    workflow commands only on ``out``, and the tally on ``err``: a passing step's log then
    says it ran (a pass has no annotation)."""
    from .ci_formats import print_github, print_junit

    if fmt == "github":
        print_github(results, out)
        if err is not None and results:
            print(tally(results), file=err)
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
    """One row per result (database, check, ok/FAIL/skip/not run, first line), then each
    failure in full, then the count of each kind: ``3 checks, 1 failed, 1 not run``."""
    rows = [("database", "check", "result", "message")]
    rows += [(r.database, r.check, VERDICTS[r.status or "ok"], r.summary) for r in results]
    text.print_table(rows, out)
    for result in results:
        if result.status == "failed" and "\n" in result.message.strip():  # the row had line 1
            print(f"\n{result.database} {result.check}:", file=out)
            print(result.message.strip(), file=out)
    print(f"\n{tally(results)}", file=out)


#: How the table names each result kind.
VERDICTS = {"ok": "ok", "failed": "FAIL", "skipped": "skip", "not_run": "not run"}


def tally(results: Sequence[CheckResult]) -> str:
    """``5 checks, all passed`` (``, 1 skipped`` where one did not apply), or ``3 checks, 1
    failed, 1 not run``: how many results of each kind but ``ok``."""
    counts = {kind: sum(r.status == kind for r in results) for kind in ("failed", "skipped")}
    counts["not run"] = sum(r.status == "not_run" for r in results)
    parts = [f"{n} {kind}" for kind, n in counts.items() if n]
    if not counts["failed"] and not counts["not run"]:
        parts.insert(0, "all passed")
    return ", ".join([counted(len(results), "check"), *parts])


@contextmanager
def progress_line(stream: TextIO) -> Iterator[ProgressLine | None]:
    """A ``run_checks`` progress callback on a terminal, the line cleared at the end;
    None off a terminal (a pipe, a CI log: no progress, no control characters)."""
    if not stream.isatty():
        yield None
        return
    line = ProgressLine(stream)
    try:
        yield line
    finally:
        line.clear()


class ProgressLine:
    """``check <db>: <check> ...``, then ``check <db>: stairway 37/150`` as it advances:
    one terminal line rewritten in place.

    Only carriage returns and spaces, no escape sequence (a ``TERM=dumb`` terminal, an
    editor's shell show it too): each state is written from the line's start, padded
    over the previous one, and the cursor is put back at the start, so that a note
    printed meanwhile on the same stream overwrites the line instead of following it.
    Cut to the terminal's width: a wrapped line could not be rewritten.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.width = max(_columns(stream), 21) - 1  # the last column would wrap on some
        self.shown = 0

    def __call__(
        self, database: str, check: str, done: int | None = None, total: int | None = None, /
    ) -> None:
        state = f"{done}/{total}" if total else "..."
        self._write(f"check {database}: {check} {state}"[: self.width])

    def clear(self) -> None:
        """Blank the line (nothing of it stays above the results)."""
        if self.shown:
            self._write("")

    def _write(self, line: str) -> None:
        self.stream.write(f"\r{line.ljust(self.shown)}\r")
        self.stream.flush()
        self.shown = len(line)


def _columns(stream: TextIO) -> int:
    """The terminal's width: its own size, else ``$COLUMNS`` (a pty of unset size), else 80."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        columns = 0
    if not columns:
        given = os.environ.get("COLUMNS", "")
        columns = int(given) if given.isdigit() else 80
    return columns
