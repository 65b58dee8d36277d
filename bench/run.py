"""The benchmark of issues 6 and 15: ``python bench/run.py [--quick] [--rows 1,2,3,4,5,6]``.

Prints one table (medians, a baseline measured in the same run, ratio, target,
met) and, with ``--results``, writes it into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.floor import row_floor, row_other_checks
from bench.inproc import Sizes, row_clone, row_connection, row_stairway
from bench.subproc import SubSizes, row_session_start, row_suite, runtime_entries
from bench.timing import Row, render_table
from pytest_reynard_db.postgres import EphemeralServer, find_binaries

FULL = Sizes(
    clone_reps=30, remigrate_reps=10, connection_reps=300, stair_sizes=(50, 100, 200), stair_reps=3
)
QUICK = Sizes(
    clone_reps=10, remigrate_reps=3, connection_reps=100, stair_sizes=(50, 100, 200), stair_reps=1
)
FULL_SUB = SubSizes(cold_reps=3, warm_reps=5, baseline_reps=5, suite_tests=200, suite_reps=2)
QUICK_SUB = SubSizes(cold_reps=1, warm_reps=3, baseline_reps=3, suite_tests=200, suite_reps=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: ``--quick``, ``--rows``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--rows", default="1,2,3,4,5,6", help="rows to run, e.g. 1,2")
    parser.add_argument("--floor-reps", type=int, default=None, help="row 6's repetitions")
    return parser.parse_args(argv)


def machine() -> str:
    """nproc, memory, Python and PostgreSQL versions, as one line."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    postgres = find_binaries().postgres
    version = subprocess.run([str(postgres), "--version"], capture_output=True, text=True).stdout
    return (
        f"nproc {os.cpu_count()}, memory {pages / 2**30:.1f} GiB, "
        f"Python {platform.python_version()}, {version.strip()}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the selected rows and print the table."""
    args = parse_args(argv)
    wanted = {int(r) for r in args.rows.split(",") if r.strip()}
    sizes, sub = (QUICK, QUICK_SUB) if args.quick else (FULL, FULL_SUB)
    before = runtime_entries()
    started = time.perf_counter()
    rows: list[Row] = []
    if wanted & {1, 2, 3, 6}:
        with EphemeralServer.start() as server:
            for number, row_fn in ((1, row_clone), (2, row_connection), (3, row_stairway)):
                if number in wanted:
                    print(f"row {number}...", file=sys.stderr, flush=True)
                    rows.extend(row_fn(server, sizes))
            if 6 in wanted:  # the stairway, upgrade and downgrade_clean vs the raw SQL floor
                print("row 6...", file=sys.stderr, flush=True)
                reps = args.floor_reps or (3 if args.quick else 7)
                rows.extend(row_floor(server, sizes.stair_sizes, reps))
                rows.extend(row_other_checks(server, sizes.stair_sizes[-1], reps))
    if 4 in wanted:
        print("row 4...", file=sys.stderr, flush=True)
        rows.extend(row_session_start(sub))
    if 5 in wanted:
        print("row 5...", file=sys.stderr, flush=True)
        rows.extend(row_suite(sub))
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}; {machine()}")
    print(f"# python bench/run.py {' '.join(argv or sys.argv[1:])}")
    print(render_table(rows))
    leftovers = sorted(runtime_entries() - before)
    print(
        f"# took {time.perf_counter() - started:.0f} s; new entries in the runtime dir: "
        f"{', '.join(leftovers) or 'none'}"
    )
    return 0 if all(row.met for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
