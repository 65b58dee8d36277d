"""The benchmark: ``python bench/run.py [--quick] [--rows 1,2,...,8] [--compare | --results]``.

Prints one table (medians, a baseline measured in the same run, ratio, target,
met). ``--results`` writes it into ``bench/RESULTS.md`` whole, every row dated
(all rows: a table regenerated row by row hides the rows nobody re-measured);
``--compare`` flags each row more than 25% worse than its recorded ratio (exit 1).
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

from bench.compare import (
    RESULTS,
    compare,
    read_recorded,
    render_comparison,
    render_recorded,
    write_recorded,
)
from bench.drift_row import row_drift
from bench.floor import row_floor, row_other_checks
from bench.inproc import Sizes, row_clone, row_connection, row_stairway
from bench.subproc import (
    SubSizes,
    row_check_items,
    row_session_start,
    row_suite,
    runtime_entries,
)
from bench.timing import Row, render_table
from pytest_reynard_db.postgres import EphemeralServer, find_binaries

FULL = Sizes(
    clone_reps=30, remigrate_reps=10, connection_reps=300, stair_sizes=(50, 100, 200), stair_reps=3
)
QUICK = Sizes(
    clone_reps=10, remigrate_reps=3, connection_reps=100, stair_sizes=(50, 100, 200), stair_reps=1
)
FULL_SUB = SubSizes(cold_reps=3, warm_reps=5, baseline_reps=5, suite_tests=200, suite_reps=2)
ALL_ROWS = "1,2,3,4,5,6,7,8"
QUICK_SUB = SubSizes(cold_reps=1, warm_reps=3, baseline_reps=3, suite_tests=200, suite_reps=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: ``--quick``, ``--rows``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--rows", default=ALL_ROWS, help="rows to run, e.g. 1,2")
    parser.add_argument("--floor-reps", type=int, default=None, help="row 6's repetitions")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--compare", action="store_true", help="flag rows >25%% worse than bench/RESULTS.md"
    )
    what.add_argument(
        "--results", action="store_true", help="write the table into bench/RESULTS.md (all rows)"
    )
    args = parser.parse_args(argv)
    if args.results and (args.quick or args.rows != ALL_ROWS):
        parser.error("--results records every row at full repetitions: drop --rows and --quick")
    return args


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
    try:
        recorded = read_recorded(RESULTS.read_text()) if args.compare else {}
    except (OSError, ValueError) as exc:
        print(f"bench/run.py: {RESULTS}: {exc}", file=sys.stderr)
        return 2
    wanted = {int(r) for r in args.rows.split(",") if r.strip()}
    sizes, sub = (QUICK, QUICK_SUB) if args.quick else (FULL, FULL_SUB)
    before = runtime_entries()
    started = time.perf_counter()
    rows: list[Row] = []
    if wanted & {1, 2, 3, 6, 7}:
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
            if 7 in wanted:  # drift on the ecs tree vs migrating it once (issue 26)
                print("row 7...", file=sys.stderr, flush=True)
                rows.extend(row_drift(server, 3 if args.quick else 7))
    if 4 in wanted:
        print("row 4...", file=sys.stderr, flush=True)
        rows.extend(row_session_start(sub))
    if 5 in wanted:
        print("row 5...", file=sys.stderr, flush=True)
        rows.extend(row_suite(sub))
    if 8 in wanted:
        print("row 8...", file=sys.stderr, flush=True)
        rows.extend(row_check_items(sub))
    now = datetime.datetime.now()
    command = f"python bench/run.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    print(f"# {now.isoformat(timespec='seconds')}; {machine()}")
    print(f"# {command}")
    print(render_table(rows))
    if args.results:
        table = render_recorded(rows, now.date().isoformat())
        header = f"{now.isoformat(timespec='seconds')}; {machine()}; {command}"
        RESULTS.write_text(write_recorded(RESULTS.read_text(), table, header))
        print(f"# written into {RESULTS}")
    leftovers = sorted(runtime_entries() - before)
    print(
        f"# took {time.perf_counter() - started:.0f} s; new entries in the runtime dir: "
        f"{', '.join(leftovers) or 'none'}"
    )
    if args.compare:
        compared = compare(rows, recorded)
        print(render_comparison(compared))
        return 1 if any(item.worse for item in compared) else 0
    return 0 if all(row.met for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
