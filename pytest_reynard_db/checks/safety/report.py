"""The per-revision report of ``reynard-migrate lint``: a table, JSON, or Markdown.

The Markdown is meant for a pull-request comment: one row per revision and
check, then each finding with its statement, waived ones struck through with
their reason. Nothing here runs a check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from ... import text
from ...text import counted, one_line
from .findings import STATEMENT_WIDTH, RevisionReport

FORMATS = ("table", "json", "markdown")


def render(reports: Sequence[RevisionReport], fmt: str, out: TextIO) -> None:
    {"table": print_table, "json": print_json, "markdown": print_markdown}[fmt](reports, out)


def print_json(reports: Sequence[RevisionReport], out: TextIO) -> None:
    """``{"ok": bool, "revisions": [{database, check, revision, file, ok, findings, notes}]}``."""
    payload = {"ok": all(r.ok for r in reports), "revisions": [r.as_json() for r in reports]}
    json.dump(payload, out, indent=2)
    out.write("\n")


def print_table(reports: Sequence[RevisionReport], out: TextIO) -> None:
    """One row per revision and check, then every finding under its revision."""
    rows = [("database", "check", "revision", "result", "file")]
    rows += [(r.database, r.check, r.revision, _verdict(r), r.file) for r in reports]
    text.print_table(rows, out)
    shared = shared_notes(reports)
    for check, notes in shared.items():
        print(f"\n{check}, every revision:", file=out)
        for note in notes:
            print(f"  note: {note}", file=out)
    for report in reports:
        notes = [n for n in report.notes if n not in shared.get(report.check, ())]
        if not report.findings and not notes:
            continue
        print(f"\n{report.file} ({report.check}):", file=out)
        for finding in report.findings:
            waived = f" [waived: {finding.waived}]" if finding.waived else ""
            print(f"  {finding.describe()}{waived}", file=out)
            if finding.statement:
                print(f"    {one_line(finding.statement, STATEMENT_WIDTH)}", file=out)
        for note in notes:
            print(f"  note: {note}", file=out)
    print(f"\n{_summary(reports)}", file=out)


def shared_notes(reports: Sequence[RevisionReport]) -> dict[str, list[str]]:
    """Per check, the notes every one of its revisions has (two or more: said once, not
    on each; an ``env.py`` that cannot be linted offline or measured is the usual one)."""
    by_check: dict[str, list[RevisionReport]] = {}
    for report in reports:
        by_check.setdefault(report.check, []).append(report)
    shared: dict[str, list[str]] = {}
    for check, mine in by_check.items():
        common = [n for n in mine[0].notes if all(n in r.notes for r in mine[1:])]
        if len(mine) > 1 and common:
            shared[check] = common
    return shared


def print_markdown(reports: Sequence[RevisionReport], out: TextIO) -> None:
    """A pull-request comment: a summary table, then the findings of each revision."""
    print("### Migration safety (reynard-db lint)\n", file=out)
    print(f"**{_summary(reports)}**\n", file=out)
    print("| database | revision | check | result | file |", file=out)
    print("| --- | --- | --- | --- | --- |", file=out)
    for r in reports:
        mark = "✅ ok" if r.ok else "❌ FAIL"
        if r.ok and r.findings:
            mark = "✅ waived"
        if r.ok and not r.checked:
            mark = "⚪ not checked"
        print(f"| {r.database} | `{r.revision}` | {r.check} | {mark} | `{r.file}` |", file=out)
    shared = shared_notes(reports)
    for check, notes in shared.items():
        print(f"\n#### {check}, every revision\n", file=out)
        for note in notes:
            print(f"- _note: {_md(note)}_", file=out)
    for report in reports:
        notes = [n for n in report.notes if n not in shared.get(report.check, ())]
        if not report.findings and not notes:
            continue
        print(f"\n#### `{report.file}` ({report.check})\n", file=out)
        for finding in report.findings:
            shown = _md(finding.describe())
            if finding.waived:
                print(f"- ~~{shown}~~ waived: {_md(finding.waived)}", file=out)
            else:
                print(f"- **{shown}**", file=out)
            if finding.statement:
                print(f"  ```sql\n  {one_line(finding.statement, 400)}\n  ```", file=out)
        for note in notes:
            print(f"- _note: {_md(note)}_", file=out)


def _verdict(report: RevisionReport) -> str:
    if not report.ok:
        return "FAIL"
    if not report.checked:
        return "not checked"
    return "waived" if report.findings else "ok"


def _summary(reports: Sequence[RevisionReport]) -> str:
    failed = sum(1 for r in reports if not r.ok)
    verdict = f"{failed} failed" if failed else "all passed"
    unchecked = sum(1 for r in reports if r.ok and not r.checked)
    return f"{counted(len(reports), 'revision check')}, {verdict}" + (
        f", {unchecked} not checked" if unchecked else ""
    )


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
