"""Which processes this project's own suite spends its CPU in:
``python bench/suite_processes.py [PYTEST ARGS...]`` (root, with Debian's ``acct``:
``accton`` and ``dump-acct``), or ``--from FILE`` to read an accounting file made before.

The suite runs as CI runs it (``-n 2`` unless the arguments say otherwise) under the
kernel's process accounting (``accton FILE``): each process that ends writes its command
name, whether it exec'd or is a fork of its parent, and its user and system CPU time.
Printed: the CPU by kind of process (the test processes, the interpreters the tests
start, the children forked from a fork server or a test process, PostgreSQL's
postmasters and their backends), with counts and the cost of one.

Why: ``bench/suite_cpu.py`` says what each test costs, this says what the cost is made of
(a server's start, an interpreter's, a check's work), the lever issue 25's 6 minutes need.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: ``dump-acct``'s time unit (``AHZ``): hundredths of a second.
TICKS = 100.0
#: A postgres process shorter than this is a probe (``postgres -V``), not a server.
PROBE_SECONDS = 0.05


@dataclass(frozen=True)
class Process:
    command: str
    cpu: float  # user + system, seconds
    elapsed: float
    pid: int
    parent: int
    forked: bool  # a fork that did not exec (``F`` in the accounting flags)


def read_accounting(path: Path) -> list[Process]:
    """The processes ``path`` (a kernel accounting file) records, as ``dump-acct`` reads
    them: ``command|version|user|system|elapsed|uid|gid|memory|io|pid|ppid|flags|...``."""
    dumped = subprocess.run(["dump-acct", str(path)], capture_output=True, text=True, check=True)
    processes = []
    for line in dumped.stdout.splitlines():
        fields = [field.strip() for field in line.split("|")]
        processes.append(
            Process(
                command=fields[0],
                cpu=(float(fields[2]) + float(fields[3])) / TICKS,
                elapsed=float(fields[4]) / TICKS,
                pid=int(fields[9]),
                parent=int(fields[10]),
                forked="F" in fields[11],
            )
        )
    return processes


def kind_of(process: Process, test_processes: set[int]) -> str:
    """What a process was to the suite, from its name, its fork flag and its length."""
    if process.pid in test_processes:
        return "the suite's own (pytest, its workers, their fork servers)"
    if process.command == "postgres":
        if process.forked:
            return "PostgreSQL backends and helpers (forks)"
        if process.elapsed < PROBE_SECONDS:
            return "postgres probes (-V, -C)"
        return "PostgreSQL postmasters (server starts)"
    if process.command.startswith(("python", "pytest", "reynard-migrate", "alembic")):
        return "Python, forked" if process.forked else "Python, started interpreters"
    return f"other: {process.command}"


def table(processes: list[Process]) -> str:
    # the suite's own processes: the longest-lived interpreters (pytest and its workers)
    pythons = [p for p in processes if p.command.startswith("python") and not p.forked]
    longest = max((p.elapsed for p in pythons), default=0.0)
    test_processes = {p.pid for p in pythons if p.elapsed > 0.9 * longest}
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for process in processes:
        totals = by_kind[kind_of(process, test_processes)]
        totals[0] += process.cpu
        totals[1] += 1
    total = sum(cpu for cpu, _ in by_kind.values())
    lines = [
        f"processes: {len(processes)}; CPU {total:.0f} s (user + system, every process ended)",
        "",
        "| processes | CPU s | share | count | CPU ms each |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, (cpu, count) in sorted(by_kind.items(), key=lambda kv: -kv[1][0])[:12]:
        lines.append(
            f"| {kind} | {cpu:.1f} | {cpu / total:.1%} | {count:.0f} | {cpu / count * 1000:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--from"]:
        print(table(read_accounting(Path(argv[1]))))
        return 0
    missing = [tool for tool in ("accton", "dump-acct") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        print(
            "bench/suite_processes.py: needs root and Debian's acct package "
            f"(apt-get install acct); missing: {', '.join(missing) or 'root'}",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        accounting = Path(scratch) / "pacct"
        accounting.touch()
        subprocess.run(["accton", str(accounting)], check=True, capture_output=True)
        try:
            workers = [] if any(a.startswith("-n") for a in argv) else ["-n", "2"]
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            done = subprocess.run([*command, *workers, *argv], cwd=ROOT)
        finally:
            subprocess.run(["accton", "off"], check=True, capture_output=True)
        print(table(read_accounting(accounting)))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
