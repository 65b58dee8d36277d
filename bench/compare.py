"""The recorded table of ``bench/RESULTS.md`` and a run compared with it (``run.py --compare``).

``run.py --results`` writes the table whole between two markers, each row with the
date it was measured; ``--compare`` reads it back and flags every row whose ratio is
more than ``TOLERANCE`` worse than its recorded one. Ratios, not times: absolute
times on a shared machine drift, a ratio against a baseline measured in the same
run much less (see RESULTS.md's preamble).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bench.timing import Row, fmt_seconds

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")
BEGIN = "<!-- current table: begin (python bench/run.py --results) -->"
END = "<!-- current table: end -->"
#: A row is flagged when its ratio is this much worse than the recorded one.
TOLERANCE = 1.25
_RATIO = re.compile(r"^\s*(-?[0-9.]+)x\s+(.+?)\s*$")
_NOTE = re.compile(r"\s*\[[^\]]*\]\s*$")


@dataclass(frozen=True)
class Recorded:
    """One row of the recorded table: its ratio (and which way it reads) and its date."""

    name: str
    ratio: float
    ratio_label: str
    measured: str


@dataclass(frozen=True)
class Compared:
    """A row of this run against its recorded self (``recorded`` None: a new row)."""

    row: Row
    recorded: Recorded | None

    @property
    def below_zero(self) -> bool:
        """Whether a ratio is at or below zero (a start below a bare pytest's: ``ours`` is
        what a run adds to it), where one ratio over another means nothing."""
        return self.recorded is not None and min(self.recorded.ratio, self.row.ratio) <= 0

    @property
    def change(self) -> float | None:
        """How many times worse (> 1) or better (< 1) the ratio is than recorded; for a
        ratio at or below zero, by how much of the baseline it grew (``growth``)."""
        if self.recorded is None or self.below_zero:
            return None
        if self.row.ratio_label == "base/ours":  # a speed-up: a smaller one is worse
            return self.recorded.ratio / self.row.ratio
        return self.row.ratio / self.recorded.ratio

    @property
    def growth(self) -> float | None:
        """This run's ratio minus the recorded one (an ``ours/base`` row at or below zero)."""
        if self.recorded is None or not self.below_zero or self.row.ratio_label != "ours/base":
            return None
        return self.row.ratio - self.recorded.ratio

    @property
    def worse(self) -> bool:
        change, growth = self.change, self.growth
        if growth is not None:  # grew by more than a quarter of the baseline
            return growth > TOLERANCE - 1
        return change is not None and change > TOLERANCE


def row_key(name: str) -> str:
    """A row's name without its bracketed note (which holds numbers of the run)."""
    return _NOTE.sub("", name).strip()


def render_recorded(rows: list[Row], measured: str) -> str:
    """The rows as the recorded table: the run's table with the date of each row."""
    header = ["row", "ours (median)", "baseline (median)", "ratio", "target", "met", "measured"]
    lines = [header]
    for row in rows:
        name = f"{row.name} [{row.note}]" if row.note else row.name
        lines.append(
            [
                name,
                fmt_seconds(row.ours),
                f"{fmt_seconds(row.baseline)} ({row.baseline_name})",
                f"{row.ratio:.2f}x {row.ratio_label}",
                row.target,
                "yes" if row.met else "NO",
                measured,
            ]
        )
    return "\n".join(_markdown(lines))


def _markdown(lines: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]

    def render(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [render(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [
        render(line) for line in lines[1:]
    ]


def read_recorded(text: str) -> dict[str, Recorded]:
    """The recorded table of RESULTS.md's ``text``, by row key; ``ValueError`` when the
    markers are missing (a RESULTS.md older than ``--results``)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no recorded table (the line {BEGIN!r}); run --results first")
    recorded: dict[str, Recorded] = {}
    for line in text[start + len(BEGIN) : end].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 7 or cells[0] == "row" or set(cells[0]) <= {"-"}:
            continue
        found = _RATIO.match(cells[3])
        if found is None:
            raise ValueError(f"recorded row {cells[0]!r}: unreadable ratio {cells[3]!r}")
        key = row_key(cells[0])
        recorded[key] = Recorded(key, float(found.group(1)), found.group(2), cells[6])
    return recorded


def write_recorded(text: str, table: str, command: str) -> str:
    """RESULTS.md's ``text`` with its recorded table replaced whole by ``table`` (placed
    after the preamble's first heading block when there was none)."""
    block = f"{BEGIN}\n# {command}\n{table}\n{END}"
    start, end = text.find(BEGIN), text.find(END)
    if start >= 0 and end > start:
        return text[:start] + block + text[end + len(END) :]
    heading = "\n## Current table\n\n"
    first_section = text.find("\n## ")
    at = first_section if first_section >= 0 else len(text)
    return text[:at] + heading + block + "\n" + text[at:]


def compare(rows: list[Row], recorded: dict[str, Recorded]) -> list[Compared]:
    return [Compared(row, recorded.get(row_key(row.name))) for row in rows]


def render_comparison(compared: list[Compared]) -> str:
    """One line per row: recorded ratio (and when), this run's, the change, the flag."""
    lines = [["row", "recorded", "now", "change", "verdict"]]
    for item in compared:
        row, old = item.row, item.recorded
        now = f"{row.ratio:.2f}x {row.ratio_label}"
        if old is None:
            lines.append([row_key(row.name), "(not recorded)", now, "", "new row"])
            continue
        change, growth = item.change, item.growth
        shown = "" if change is None else f"{change:.2f}x"
        if growth is not None:
            shown = f"{growth:+.2f} of the baseline"
        verdict = f"WORSE by more than {TOLERANCE:g}x" if item.worse else "ok"
        lines.append([row_key(row.name), f"{old.ratio:.2f}x ({old.measured})", now, shown, verdict])
    return "\n".join(_markdown(lines))
