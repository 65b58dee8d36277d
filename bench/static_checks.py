"""The pre-commit checks' cost: ``python bench/static_checks.py [--reps N] [--compare DIR]``.

Times ``reynard-migrate check --only single_head,mirror_sync`` on the shipped trees
(from the repository root, as the pre-commit hook runs it) as a fresh process, the
way a commit pays for it, against two floors measured in the same rounds: the
interpreter's start and ``import alembic.script`` (loading a tree needs Alembic,
and every revision file imports it). ``--compare DIR`` also times the same
command with the package imported from another checkout (e.g. the main branch),
on this interpreter. Rounds alternate the commands, so a load change on a shared
machine hits all of them alike. Prints one table (medians, minimum, target, met).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ("-m", "pytest_reynard_db", "check", "--only", "single_head,mirror_sync")
#: The issue's target: well under a second.
TARGET = 1.0


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one run of ``argv`` from the repository root (it must exit 0)."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=15, help="rounds (default 15)")
    parser.add_argument("--compare", type=Path, help="another checkout to time the same way")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass (interpreter start)": ([sys.executable, "-c", "pass"], env),
        "python -c 'import alembic.script' (floor)": (
            [sys.executable, "-c", "import alembic.script"],
            env,
        ),
        "check --only single_head,mirror_sync": ([sys.executable, *COMMAND], env),
    }
    if args.compare is not None:
        # The editable install's finder would win over PYTHONPATH: take it out first.
        runner = (
            "import sys, runpy; "
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
            f"sys.path.insert(0, {str(args.compare.resolve())!r}); "
            "sys.argv[0] = 'reynard-migrate'; "
            "runpy.run_module('pytest_reynard_db', run_name='__main__')"
        )
        cases[f"the same, code from {args.compare}"] = (
            [sys.executable, "-c", runner, *COMMAND[2:]],
            env,
        )
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for command, case_env in cases.values():  # warm-up: page cache, .pyc files
        timed(command, case_env)
    for _ in range(args.reps):
        for name, (command, case_env) in cases.items():
            samples[name].append(timed(command, case_env))
    shown = " ".join(argv or sys.argv[1:])
    print(f"# python bench/static_checks.py {shown}; nproc {os.cpu_count()}")
    print(f"# load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    print("| command | median | min | target | met |")
    print("|---|---|---|---|---|")
    ours = statistics.median(samples["check --only single_head,mirror_sync"])
    for name, values in samples.items():
        median = statistics.median(values)
        is_ours = name.startswith("check")
        target = f"< {TARGET:g} s" if is_ours else ""
        met = ("yes" if median < TARGET else "NO") if is_ours else ""
        low = min(values) * 1000
        print(f"| {name} | {median * 1000:.0f} ms | {low:.0f} ms | {target} | {met} |")
    return 0 if ours < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
