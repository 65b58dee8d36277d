"""What the two migration-safety checks (``lint`` and ``locks``) share.

Both look at one revision at a time and produce ``Finding`` objects about it;
a ``RevisionReport`` gathers them per revision (the ``lint`` verb prints
those), and ``to_results`` folds them into ``CheckResult`` rows for ``check``
and the pytest items: one failed row per revision with an unwaived finding,
or one passing row for the database.

Also here: the waivers a revision
file can carry, ``# reynard-db: allow <rule> -- <reason>``. A waiver silences
every finding of that one rule in that one revision; the reason is required,
and a waiver without one silences nothing and is itself a finding.

The per-revision report of ``reynard-migrate lint``: a table, JSON, or Markdown.

The Markdown is meant for a pull-request comment: one row per revision and
check, then each finding with its statement, waived ones struck through with
their reason. Nothing here runs a check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ...foundation.urls import counted, one_line
from ...foundation.urls import print_table as print_rows
from .. import CheckResult, Place
from ..runner import CheckRunner, identifiers, statement_line

#: A finding's statement is shown on one line of at most this many characters.
STATEMENT_WIDTH = 160

WAIVER = re.compile(r"#\s*reynard-db:\s*allow\b(?P<rest>.*)$")
WAIVER_BODY = re.compile(r"^\s*(?P<rule>[A-Za-z0-9_-]+)\s*(?:--\s*(?P<reason>.*?))?\s*$")
BAD_WAIVER = "waiver-without-reason"
#: The rules of the ``locks`` check (a waiver for any other rule is ``lint``'s).
LOCK_RULES = frozenset({"access-exclusive-lock", "share-lock", "table-rewrite"})


@dataclass(frozen=True)
class Waiver:
    """``# reynard-db: allow <rule> -- <reason>`` on line ``line`` of a revision file."""

    rule: str
    reason: str
    line: int


@dataclass(frozen=True)
class Finding:
    """One problem of one revision: a Squawk rule or a measured lock, on a table.

    ``waived`` holds the waiver's reason when a waiver silences the finding.
    """

    check: str
    rule: str
    message: str
    table: str | None = None
    statement: str | None = None
    waived: str | None = None

    def describe(self) -> str:
        on = f" on {self.table}" if self.table else ""
        return f"{self.rule}{on}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "rule": self.rule,
            "table": self.table,
            "message": self.message,
            "statement": self.statement,
            "waived": self.waived,
        }


@dataclass
class RevisionReport:
    """What one check found about one revision (``file`` relative to the project root)."""

    database: str
    check: str
    revision: str
    file: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: False when the revision could not be looked at (its notes say why): not
    #: lintable offline, not measured. It does not fail the check.
    checked: bool = True

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.waived is None]

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "check": self.check,
            "revision": self.revision,
            "file": self.file,
            "ok": self.ok,
            "findings": [f.as_json() for f in self.findings],
            "notes": list(self.notes),
        }


def read_waivers(path: str | Path, *, locks: bool) -> tuple[list[Waiver], list[int]]:
    """The waivers of a revision file for the ``locks`` rules (or every other rule), and
    the lines of those without a reason."""
    waivers: list[Waiver] = []
    bad: list[int] = []
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        found = WAIVER.search(line)
        if found is None:
            continue
        body = WAIVER_BODY.match(found.group("rest"))
        rule = body.group("rule") if body else (found.group("rest").split() or [""])[0]
        if (rule in LOCK_RULES) != locks:
            continue
        if body is None or not (body.group("reason") or "").strip():
            bad.append(number)
            continue
        waivers.append(Waiver(body.group("rule"), body.group("reason").strip(), number))
    return waivers, bad


def apply_waivers(
    findings: Iterable[Finding], waivers: Sequence[Waiver], check: str, bad_lines: Sequence[int]
) -> list[Finding]:
    """``findings`` with waived ones marked, plus one finding per waiver without a reason."""
    reasons = {w.rule: w.reason for w in waivers}
    out = [
        Finding(f.check, f.rule, f.message, f.table, f.statement, reasons[f.rule])
        if f.rule in reasons
        else f
        for f in findings
    ]
    out += [
        Finding(
            check,
            BAD_WAIVER,
            f"line {line}: a waiver needs a reason: "
            "`# reynard-db: allow <rule> -- <reason>` (this one waives nothing)",
        )
        for line in bad_lines
    ]
    return out


def to_results(
    runner: CheckRunner, check: str, reports: Sequence[RevisionReport]
) -> list[CheckResult]:
    """One result per database and check (as the README's "Migration checks" has it): a
    failure lists every revision with an unwaived finding and names the first in
    ``revision``/``file``.

    The notes of the other revisions (``not lintable offline: ...``, ``not
    measured: ...``) follow, one line each: they do not fail the check, and are
    not hidden either.
    """
    failed = [r for r in reports if not r.ok]
    noted = [
        f"{r.file}: revision {r.revision}: note: {n}" for r in reports if r.ok for n in r.notes
    ]
    if not failed:
        waived = sum(len(r.findings) for r in reports)
        notes = sum(len(r.notes) for r in reports)
        extra = "".join(
            [f", {waived} waived" if waived else "", f", {notes} notes" if notes else ""]
        )
        unchecked = sum(1 for r in reports if not r.checked)
        clean = f"{counted(len(reports), 'revision')} clean"
        if unchecked:
            clean = f"{len(reports) - unchecked} of {clean}, {unchecked} not checked"
        message = "\n".join([f"{clean}{extra}", *noted])
        return [runner.result(check, True, message)]
    blocks = [failure_message(report) for report in failed]
    message = "\n".join([*blocks, *noted])
    if len(failed) > 1:
        message = f"{len(failed)} revisions with findings:\n{message}"
    first = failed[0]
    places = tuple(
        Place(report.file, finding_line(runner, report), "upgrade", block)
        for report, block in zip(failed, blocks, strict=True)
    )
    return [
        runner.result(
            check,
            False,
            message,
            revision=first.revision,
            file=first.file,
            function="upgrade",
            line=places[0].line,
            places=places,
        )
    ]


def finding_line(runner: CheckRunner, report: RevisionReport) -> int | None:
    """The line of the statement in ``upgrade()`` the findings are about: the one naming
    most of their tables and their SQL's identifiers (else ``upgrade()``'s own line)."""
    names: set[str] = set()
    for finding in report.failures:
        names |= identifiers(f"{finding.table or ''} {finding.statement or ''}")
    return statement_line(runner.registry.root / report.file, names)


def failure_message(report: RevisionReport) -> str:
    """First line: file, revision, each rule and table; then each finding with its statement."""
    failures = report.failures
    tables = ", ".join(
        dict.fromkeys(f"{f.rule} on {f.table}" if f.table else f.rule for f in failures)
    )
    lines = [f"{report.file}: revision {report.revision}: {tables}"]
    for finding in failures:
        lines.append(f"  {finding.describe()}")
        if finding.statement:
            lines.append(f"    {one_line(finding.statement, STATEMENT_WIDTH)}")
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)


# -- report ------------------------------------------------------------------------------

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
    print_rows(rows, out)
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
