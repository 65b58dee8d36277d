"""Row 6 (issue 15): the stairway against the raw SQL floor, and its profile.

The floor is what the stairway cannot avoid: the same DDL and ``alembic_version``
writes, sent as literal SQL on one psycopg connection, each revision's upgrade,
downgrade and upgrade again in a transaction of its own. It runs on an empty
database of the same server, in the same run, as our stairway, so the ratio is
not at the mercy of this shared machine's drift. The floor leaves out creating
and dropping its database; our side includes them (the check makes one): the
ratio is, if anything, pessimistic.

``python bench/floor.py --profile 200`` prints cProfile's top lines of our
stairway over a generated 200-revision tree (what bench/RESULTS.md quotes).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import pstats
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.alone import stairway_alone, walk_alone
from bench.projects import STOCK_ENV, stair_project
from bench.timing import Row, median_time, slowdown_row
from pytest_reynard_db.checks.downgrade_clean import downgrade_clean
from pytest_reynard_db.checks.heads import upgrade
from pytest_reynard_db.checks.runner import CheckRunner
from pytest_reynard_db.checks.stairway import stairway
from pytest_reynard_db.foundation.registry import load_registry
from pytest_reynard_db.postgres import EphemeralServer

#: The goal of issue 15: at most this many times the floor, and this scaling.
FLOOR_RATIO = 2.0
FLOOR_SCALING = 2.1

_names = itertools.count(1)

VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)


def revision_id(index: int) -> str:
    """The id ``bench.projects.stair_project`` gives revision ``index`` (1-based)."""
    return f"r{index:011d}"


def up_sql(index: int) -> list[str]:
    """What Alembic sends for revision ``index``'s upgrade, version table included."""
    rev = revision_id(index)
    version = (
        f"INSERT INTO alembic_version (version_num) VALUES ('{rev}')"
        if index == 1
        else f"UPDATE alembic_version SET version_num='{rev}' "
        f"WHERE alembic_version.version_num = '{revision_id(index - 1)}'"
    )
    return [
        f"CREATE TABLE t{index} (id SERIAL NOT NULL, PRIMARY KEY (id))",
        f"ALTER TABLE t{index} ADD COLUMN c{index} TEXT",
        version,
    ]


def down_sql(index: int) -> list[str]:
    """What Alembic sends for revision ``index``'s downgrade, version table included."""
    rev = revision_id(index)
    version = (
        f"DELETE FROM alembic_version WHERE alembic_version.version_num = '{rev}'"
        if index == 1
        else f"UPDATE alembic_version SET version_num='{revision_id(index - 1)}' "
        f"WHERE alembic_version.version_num = '{rev}'"
    )
    return [f"ALTER TABLE t{index} DROP COLUMN c{index}", f"DROP TABLE t{index}", version]


def raw_stairway(conn: psycopg.Connection[Any], revisions: int) -> None:
    """The floor: up, down, up for each revision, one transaction per step, on ``conn``."""
    with conn.transaction():
        conn.execute(VERSION_TABLE)
    for index in range(1, revisions + 1):
        for statements in (up_sql(index), down_sql(index), up_sql(index)):
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement.encode())


def floor_once(server: EphemeralServer, revisions: int) -> float:
    """One timed floor walk on a new empty database (created and dropped untimed)."""
    name = f"test_bench_floor_{next(_names)}"
    url = server.create_database(name)
    try:
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=name, autocommit=True
        ) as conn:
            started = time.perf_counter()
            raw_stairway(conn, revisions)
            return time.perf_counter() - started
    finally:
        server.drop_database(name)


def stair_runner(server: EphemeralServer, project: Path) -> CheckRunner:
    """A runner over the generated project, its tree loaded (as ``check`` has it by then)."""
    registry = load_registry(project)
    runner = CheckRunner(registry.get("stair"), registry, server)
    _ = runner.script
    return runner


def our_stairway(runner: CheckRunner) -> None:
    """``checks.stairway`` on ``runner``; a failure is a bug of the benchmark or ours."""
    failed = [r for r in stairway(runner) if not r.ok]
    if failed:
        raise RuntimeError(f"our stairway failed: {failed[0].message}")


def median(samples: list[float]) -> float:
    return sorted(samples)[len(samples) // 2]


def reference_row(name: str, alone: float, floor: float, ours: float) -> Row:
    """Alembic alone against the floor (no target), with ours/alone in the note."""
    row = slowdown_row(name, alone, floor, "raw SQL", FLOOR_RATIO)
    row.target, row.met, row.note = "none", True, f"ours/alone {ours / alone:.2f}x"
    return row


def row_floor(server: EphemeralServer, sizes: tuple[int, ...], reps: int) -> list[Row]:
    """Stairway vs floor at each size, Alembic alone beside it (medians of runs
    interleaved, so that drift hits each alike), then t(big)/t(small) of ours."""
    rows: list[Row] = []
    ours_by_size: dict[int, float] = {}
    floor_by_size: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        for size in sizes:
            runner = stair_runner(server, stair_project(Path(tmp) / f"tree{size}", size))
            stock = stair_runner(server, stair_project(Path(tmp) / f"stock{size}", size, STOCK_ENV))
            biggest = size == sizes[-1]
            samples: dict[str, list[float]] = {"ours": [], "floor": [], "alone": [], "stock": []}
            our_stairway(runner)  # warm-up: imports, the server's catalogue caches
            for _ in range(reps):
                samples["ours"].append(median_time(partial(our_stairway, runner), 1, warmup=0))
                samples["floor"].append(floor_once(server, size))
                samples["alone"].append(stairway_alone(server, runner.script))
                if biggest:
                    samples["stock"].append(median_time(partial(our_stairway, stock), 1, 0))
            ours, base, alone = (median(samples[k]) for k in ("ours", "floor", "alone"))
            ours_by_size[size], floor_by_size[size] = ours, base
            name = f"6 stairway {size} revs vs raw SQL floor"
            rows.append(slowdown_row(name, ours, base, "raw SQL", FLOOR_RATIO))
            name = f"6 (reference) Alembic alone, same steps, {size} revs"
            rows.append(reference_row(name, alone, base, ours))
            if biggest:  # what most projects have: env.py migrates on an engine of its own
                name = f"6 stairway {size} revs, stock alembic init env.py, vs floor"
                rows.append(
                    slowdown_row(name, median(samples["stock"]), base, "raw SQL", FLOOR_RATIO)
                )
    if len(sizes) >= 2:
        big, small = sizes[-1], sizes[-2]
        scale = ours_by_size[big] / ours_by_size[small]
        limit = FLOOR_SCALING * big / small / 2
        floor_scale = floor_by_size[big] / floor_by_size[small]
        rows.append(
            Row(
                f"6 stairway vs floor scaling t({big})/t({small})",
                ours_by_size[big],
                floor_by_size[big],
                f"floor scales {floor_scale:.2f}",
                scale,
                f"t({big})/t({small})",
                f"<= {limit:g}",
                scale <= limit,
            )
        )
    return rows


def row_other_checks(server: EphemeralServer, size: int, reps: int) -> list[Row]:
    """``upgrade`` and ``downgrade_clean`` over the same tree, against their own floors,
    Alembic alone beside each (runs interleaved)."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        runner = stair_runner(server, stair_project(Path(tmp) / f"tree{size}", size))
        for name, check, down in (
            ("upgrade", upgrade, False),
            ("downgrade_clean", downgrade_clean, True),
        ):

            def ours(check: Any = check, name: str = name) -> None:
                results = check(runner)
                if not all(r.ok for r in (results if isinstance(results, list) else [results])):
                    raise RuntimeError(f"our {name} failed: {results}")

            ours()
            samples: dict[str, list[float]] = {"ours": [], "floor": [], "alone": []}
            for _ in range(reps):
                samples["ours"].append(median_time(ours, 1, warmup=0))
                samples["floor"].append(floor_walk(server, size, down=down))
                samples["alone"].append(walk_alone(server, runner.script, down=down))
            mine, base, alone = (median(samples[k]) for k in ("ours", "floor", "alone"))
            label = f"6 {name} {size} revs vs raw SQL floor"
            rows.append(slowdown_row(label, mine, base, "raw SQL", FLOOR_RATIO))
            label = f"6 (reference) Alembic alone, {name}'s steps, {size} revs"
            rows.append(reference_row(label, alone, base, mine))
    return rows


def floor_walk(server: EphemeralServer, revisions: int, *, down: bool) -> float:
    """The floor of ``upgrade`` (base to head) or ``downgrade_clean`` (and back to base)."""
    name = f"test_bench_floor_{next(_names)}"
    url = server.create_database(name)
    try:
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=name, autocommit=True
        ) as conn:
            started = time.perf_counter()
            with conn.transaction():
                conn.execute(VERSION_TABLE)
            steps = [up_sql(i) for i in range(1, revisions + 1)]
            if down:
                steps += [down_sql(i) for i in range(revisions, 0, -1)]
            for statements in steps:
                with conn.transaction():
                    for statement in statements:
                        conn.execute(statement.encode())
            return time.perf_counter() - started
    finally:
        server.drop_database(name)


def profile(revisions: int, top: int) -> str:
    """cProfile's top ``top`` lines (cumulative) of one stairway over ``revisions``."""
    with EphemeralServer.start() as server, tempfile.TemporaryDirectory() as tmp:
        runner = stair_runner(server, stair_project(Path(tmp) / "tree", revisions))
        our_stairway(runner)  # warm-up
        floor = floor_once(server, revisions)
        profiler = cProfile.Profile()
        profiler.enable()
        our_stairway(runner)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return f"floor: {floor:.3f} s\n" + out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """``--profile N``: the profile of one stairway over N revisions."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", type=int, default=200, help="revisions")
    parser.add_argument("--top", type=int, default=30, help="lines of each listing")
    args = parser.parse_args(argv)
    print(profile(args.profile, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
