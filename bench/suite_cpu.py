"""What this project's own suite spends, and the least two workers could take:
``python bench/suite_cpu.py [PYTEST ARGS...]`` (about 15 minutes for the whole suite).

The suite runs whole in one process (no ``-n``), this module loaded as a plugin
(``-p bench.suite_cpu``): around each item it reads the machine's busy CPU time from
``/proc/stat`` (user, nice, system, irq, softirq of every core), so an item's count holds
the servers and children it started, not only its own process. One process runs one item
at a time: what the machine did meanwhile is that item's, give or take the machine's
own background. Printed: the totals, the floor for N workers (busy CPU / N, as if they
were perfectly packed), and the files that cost most.

Why: issue 25 asks for the suite within 6 minutes on 2 cores; this says whether a better
schedule could get there, or only less work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Where the plugin appends ``nodeid <tab> wall s <tab> busy CPU s`` per item.
OUT_VARIABLE = "REYNARD_BENCH_SUITE_CPU"
TICKS = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """The machine's busy CPU time so far, every core, in seconds."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / TICKS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    busy, start = busy_seconds(), time.perf_counter()
    yield
    wall, cpu = time.perf_counter() - start, busy_seconds() - busy
    with open(os.environ[OUT_VARIABLE], "a") as out:
        out.write(f"{item.nodeid}\t{wall:.3f}\t{cpu:.3f}\n")


def table(rows: list[tuple[str, float, float]], workers: tuple[int, ...] = (2, 3)) -> str:
    wall = sum(r[1] for r in rows)
    cpu = sum(r[2] for r in rows)
    waited = sum(max(0.0, r[1] - r[2]) for r in rows)
    lines = [
        f"items: {len(rows)}; tests' wall time {wall:.0f} s; busy CPU {cpu:.0f} s "
        f"({cpu / wall:.2f} cores on average); waiting {waited:.0f} s",
        *(f"floor with {n} workers (busy CPU / {n}): {cpu / n / 60:.1f} min" for n in workers),
        "",
        "| file | CPU s | share | items | CPU s per item |",
        "| --- | --- | --- | --- | --- |",
    ]
    by_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for nodeid, _, item_cpu in rows:
        totals = by_file[nodeid.split("::", 1)[0]]
        totals[0] += item_cpu
        totals[1] += 1
    for name, (file_cpu, items) in sorted(by_file.items(), key=lambda kv: -kv[1][0])[:15]:
        lines.append(
            f"| {name} | {file_cpu:.1f} | {file_cpu / cpu:.1%} | {items:.0f} "
            f"| {file_cpu / items:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "items.tsv"
        env = {**os.environ, OUT_VARIABLE: str(out)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        done = subprocess.run([*command, "-p", "bench.suite_cpu", *argv], cwd=ROOT, env=env)
        rows = [
            (nodeid, float(wall), float(cpu))
            for nodeid, wall, cpu in (line.split("\t") for line in out.read_text().splitlines())
        ]
    print(table(rows))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
