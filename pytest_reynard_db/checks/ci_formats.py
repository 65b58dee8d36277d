"""Check results where CI shows them: GitHub workflow annotations and JUnit XML.

Both render from the results' fields (``status``, ``places``: file, line,
function), never from their messages. ``github``: one ``::error`` per place of a
failed result (a ``::notice`` for a skipped or not-run one), on the file and line
a pull request shows: the ``upgrade()`` or ``downgrade()`` of the revision at
fault, the statement a ``lint`` finding is about. ``junit``: one ``<testsuite>``
per database, one ``<testcase>`` per result, for CI systems that read JUnit
(pytest's own items already go through ``--junit-xml``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import TextIO

from .result import CheckResult

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
