"""Check results where CI shows them: GitHub workflow annotations and JUnit XML.

``github``: one ``::error`` (or ``::notice`` for a skipped check) per result
that is not a plain pass, on the revision file and the line of the function
the failing step ran (``upgrade`` or ``downgrade``), so the pull request shows
it on the right line. ``junit``: one ``<testsuite>`` per database, one
``<testcase>`` per check, for CI systems that read JUnit (pytest's own items
already go through ``--junit-xml``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .result import CheckResult

#: The step names a failure message carries, and the function each one ran.
STEP_FUNCTIONS = {"down": "downgrade", "up": "upgrade", "re-up": "upgrade"}
STEP = re.compile(r"\b(re-up|up|down) step\b")


#: A ``lint``/``locks`` failure's block per revision: ``<file>: revision <rev>: <rules>``.
REVISION_BLOCK = re.compile(r"^(?P<file>\S+\.py): revision (?P<rev>\S+): (?!note: )")
#: A ``mirror_sync`` failure's line per file: ``  changed: <path>``.
MIRROR_FILE = re.compile(r"^  (?:conflict|missing|changed|renamed|extra): (?P<file>\S.*)$")


def print_github(results: Sequence[CheckResult], out: TextIO, *, root: Path) -> None:
    """Workflow commands: ``::error file=F,line=N,title=T::message`` per failure, and per
    file it names: each revision of a ``lint``/``locks`` failure, each file of a
    ``mirror_sync`` one (the pull request shows each where it is)."""
    for result in results:
        if result.ok and not result.skipped:
            continue
        level = "notice" if result.ok else "error"
        title = f"title={_property(f'{result.database} {result.check}')}"
        for file, line, message in places(result, root):
            properties = [title]
            if file:
                where = [f"file={_property(file)}"] + ([f"line={line}"] if line else [])
                properties = [*where, title]
            print(f"::{level} {','.join(properties)}::{_data(message)}", file=out)


def places(result: CheckResult, root: Path) -> list[tuple[str | None, int | None, str]]:
    """``(file, line, message)`` for each place a result is about (one without a file when
    it names none)."""
    if not result.ok and result.check in ("lint", "locks"):
        blocks = _revision_blocks(result.message)
        if blocks:
            return [
                (file, table_line(root / file, text) or failing_line(root / file, ""), text)
                for file, text in blocks
            ]
    if not result.ok and result.check == "mirror_sync":
        files = [m.group("file") for m in map(MIRROR_FILE.match, result.message.splitlines()) if m]
        if files:
            return [(file, 1, result.message) for file in files]
    if result.file:
        return [(result.file, failing_line(root / result.file, result.message), result.message)]
    return [(None, None, result.message)]


def _revision_blocks(message: str) -> list[tuple[str, str]]:
    """The message of each failing revision of a lint/locks result, with its file."""
    blocks: list[tuple[str, list[str]]] = []
    for line in message.splitlines():
        match = REVISION_BLOCK.match(line)
        if match:
            blocks.append((match.group("file"), [line]))
        elif blocks and line.startswith("  "):
            blocks[-1][1].append(line)
    return [(file, "\n".join(lines)) for file, lines in blocks]


def table_line(path: Path, block: str) -> int | None:
    """The line, in ``upgrade``, of the statement a lint block is about: the one quoting
    most of the names in the block's SQL and its first line (table, index, column)."""
    names = set(re.findall(r"[A-Za-z_]\w*", block.split("\n")[0].split(": ", 2)[-1]))
    for line in block.splitlines()[1:]:
        if line.startswith("    "):  # the SQL statement of a finding
            names |= set(re.findall(r"[A-Za-z_]\w*", line))
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    start = failing_line(path, "") or 0
    best, best_score = None, 0
    for number, line in enumerate(lines[start:], start=start + 1):
        if re.match(r"def \w", line):
            break  # past upgrade
        score = len(names & set(re.findall(r"[\"']([A-Za-z_]\w*)[\"']", line)))
        if score > best_score:
            best, best_score = number, score
    return best


def print_junit(results: Sequence[CheckResult], out: TextIO) -> None:
    """JUnit XML: a suite per database, a case per check (failure or skipped inside)."""
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
            failures=str(sum(not r.ok for r in rows)),
            skipped=str(sum(r.skipped for r in rows)),
        )
        for result in rows:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"reynard-db.{database}",
                name=result.check,
                file=result.file or "",
            )
            if not result.ok:
                failure = ET.SubElement(case, "failure", message=result.summary)
                failure.text = result.message
            elif result.skipped:
                ET.SubElement(case, "skipped", message=result.summary)
    ET.indent(suites)
    out.write(ET.tostring(suites, encoding="unicode", xml_declaration=True))
    out.write("\n")


def failing_line(path: Path, message: str) -> int | None:
    """The line of ``def upgrade``/``def downgrade`` for the step the message names."""
    step = STEP.search(message)
    function = STEP_FUNCTIONS[step.group(1)] if step else "upgrade"
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for number, line in enumerate(lines, start=1):
        if re.match(rf"\s*def {function}\s*\(", line):
            return number
    return None


def _data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped (GitHub's rules)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    """A workflow command's property value: also ``:`` and ``,`` escaped."""
    return _data(text).replace(":", "%3A").replace(",", "%2C")
