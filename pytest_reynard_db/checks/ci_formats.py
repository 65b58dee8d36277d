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


def print_github(results: Sequence[CheckResult], out: TextIO, *, root: Path) -> None:
    """Workflow commands: ``::error file=F,line=N,title=T::message`` per failure."""
    for result in results:
        if result.ok and not result.skipped:
            continue
        level = "notice" if result.ok else "error"
        properties = [f"title={_property(f'{result.database} {result.check}')}"]
        if result.file:
            properties.insert(0, f"file={_property(result.file)}")
            line = failing_line(root / result.file, result.message)
            if line is not None:
                properties.insert(1, f"line={line}")
        print(f"::{level} {','.join(properties)}::{_data(result.message)}", file=out)


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
