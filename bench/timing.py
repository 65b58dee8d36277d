"""Timing helpers and the result table of the benchmark."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


def median_time(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """The median wall time of ``fn()`` in seconds over ``reps`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def timed(fn: Callable[[], object]) -> float:
    """The wall time of one call of ``fn()`` in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Row:
    """One line of the table: our median, the baseline's median, ratio, target, verdict."""

    name: str
    ours: float
    baseline: float
    baseline_name: str
    ratio: float
    ratio_label: str
    target: str
    met: bool
    note: str = ""


def speedup_row(name: str, ours: float, base: float, base_name: str, least: float) -> Row:
    """A row whose target is ``baseline / ours >= least`` (we are ``least`` times faster)."""
    ratio = base / ours
    return Row(name, ours, base, base_name, ratio, "base/ours", f">= {least:g}x", ratio >= least)


def slowdown_row(name: str, ours: float, base: float, base_name: str, most: float) -> Row:
    """A row whose target is ``ours / baseline <= most`` (at most ``most`` times the baseline)."""
    ratio = ours / base
    return Row(name, ours, base, base_name, ratio, "ours/base", f"<= {most:g}x", ratio <= most)


def absolute_row(name: str, ours: float, base: float, base_name: str, limit: float) -> Row:
    """A row whose target is an absolute limit on our median (seconds)."""
    return Row(
        name,
        ours,
        base,
        base_name,
        ours / base if base else float("inf"),
        "ours/base",
        f"ours <= {fmt_seconds(limit)}",
        ours <= limit,
    )


def fmt_seconds(seconds: float) -> str:
    """Seconds in a readable unit: µs, ms or s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def render_table(rows: list[Row]) -> str:
    """The rows as one Markdown table (readable in a terminal and in RESULTS.md)."""
    header = ["row", "ours (median)", "baseline (median)", "ratio", "target", "met"]
    lines = [header]
    for row in rows:
        baseline = f"{fmt_seconds(row.baseline)} ({row.baseline_name})"
        ratio = f"{row.ratio:.2f}x {row.ratio_label}"
        name = f"{row.name} [{row.note}]" if row.note else row.name
        met = "yes" if row.met else "NO"
        lines.append([name, fmt_seconds(row.ours), baseline, ratio, row.target, met])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [render(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(render(line) for line in lines[1:])
    return "\n".join(out)
