"""How check results are shown: a summary table, the JSON (as the README's "Migration
checks" shows it), a progress line, and where CI shows them: GitHub workflow
annotations and JUnit XML.

Every format renders from the results' fields (``status``, ``places``: file, line,
function), never from their messages. ``github``: one ``::error`` per place of a
failed result (a ``::notice`` for a skipped or not-run one), on the file and line a
pull request shows: the ``upgrade()`` or ``downgrade()`` of the revision at fault, the
statement a ``lint`` finding is about. ``junit``: one ``<testsuite>`` per database, one
``<testcase>`` per result, for CI systems that read JUnit (pytest's own items already
go through ``--junit-xml``).

Kept apart from the checks so that the CLI and the pytest plugin only choose
a rendering; nothing here runs a check.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from ..foundation.urls import counted
from ..foundation.urls import print_table as print_rows
from . import CheckResult

CHECK_FORMATS = ("table", "json", "github", "junit")


def show_results(
    results: Sequence[CheckResult], fmt: str, out: TextIO, err: TextIO | None = None
) -> None:
    """``check --format``: the table, the JSON, or a CI's own format. ``github`` prints
    workflow commands only on ``out``, and the tally on ``err``: a passing step's log then
    says it ran (a pass has no annotation)."""
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
    print_rows(rows, out)
    for result in results:
        if result.status == "failed" and "\n" in result.message.strip():  # the row had line 1
            print(f"\n{result.database} {result.check}:", file=out)
            print(result.message.strip(), file=out)
    print(f"\n{tally(results)}", file=out)


#: How the table names each result kind.
VERDICTS = {"ok": "ok", "failed": "FAIL", "skipped": "skip", "not_run": "not run"}


def tally(results: Sequence[CheckResult]) -> str:
    """``5 checks, all passed`` (``, 1 skipped`` where one did not apply), or ``3 checks, 1
    failed, 1 not run``: how many results of each kind but ``ok``. No result is ``0 checks
    run``, never "all passed": the databases were refused (stderr says why, exit 2), and
    stdout may be read alone."""
    if not results:
        return "0 checks run"
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


#: The workflow command of each kind of result that is not a plain pass.
LEVELS = {"failed": "error", "skipped": "notice", "not_run": "notice"}


def print_github(results: Sequence[CheckResult], out: TextIO) -> None:
    """Workflow commands: ``::error file=F,line=N,title=T::message`` per place a failure
    points at (each revision of a ``lint`` failure, each file of a drifted mirror), one
    without a file where it points at none (two heads)."""
    for result in results:
        level = LEVELS.get(result.status or "ok")
        if level is None:
            continue
        title = f"title={_property(f'{result.database} {result.check}')}"
        for place in result.places or (None,):
            where = []
            if place is not None:
                where = [f"file={_property(place.file)}"]
                where += [f"line={place.line}"] if place.line else []
            message = place.message if place is not None and place.message else result.message
            print(f"::{level} {','.join([*where, title])}::{_data(message)}", file=out)


def print_junit(results: Sequence[CheckResult], out: TextIO) -> None:
    """JUnit XML: a suite per database, a case per result (failure or skipped inside, a
    not-run one skipped with its reason); ``file`` and ``line`` where the result has a
    place, no ``file`` attribute where it has none."""
    import xml.etree.ElementTree as ET  # on use: the table and JSON need no XML

    suites = ET.Element("testsuites", name="reynard-db")
    by_database: dict[str, list[CheckResult]] = {}
    for result in results:
        by_database.setdefault(result.database, []).append(result)
    for database, rows in by_database.items():
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"reynard-db::{database}",
            tests=str(len(rows)),
            failures=str(sum(r.status == "failed" for r in rows)),
            skipped=str(sum(r.status in ("skipped", "not_run") for r in rows)),
        )
        for result in rows:
            case = ET.SubElement(
                suite, "testcase", classname=f"reynard-db.{database}", name=result.check
            )
            if result.places:
                case.set("file", result.places[0].file)
                if result.places[0].line:
                    case.set("line", str(result.places[0].line))
            if result.status == "failed":
                failure = ET.SubElement(case, "failure", message=result.summary)
                failure.text = result.message
            elif result.status in ("skipped", "not_run"):
                ET.SubElement(case, "skipped", message=result.summary)
    ET.indent(suites)
    out.write(ET.tostring(suites, encoding="unicode", xml_declaration=True))
    out.write("\n")


def _data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped (GitHub's rules)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    """A workflow command's property value: also ``:`` and ``,`` escaped."""
    return _data(text).replace(":", "%3A").replace(",", "%2C")
