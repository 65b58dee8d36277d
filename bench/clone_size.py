"""Row 9, fresh database vs template size (issue 28): ``python bench/clone_size.py [--reps N]``.

For each runtime directory (the default one, and a loop-mounted XFS with reflinks the
bench makes when it can: ``reflink_fs``), a server is started there as the harness
starts one (its binaries, its clone method), and the ECS template is seeded to about
8, 100 and 600 MB by the provisioner's seed (as ``pytest_reynard_db_seed`` would).
Measured, medians:

- the clone: ``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY`` (the drop not timed);
- what a test waits for: ``reynard_db_fresh``'s set-up and tear-down around a 20 ms test
  body, the next clone made ahead (``inproc.fixture_wait``).

Targets: on reflinks, the 600 MB clone within 2x the 8 MB one, and what a test waits
for at the clone-ahead floor (under 1 ms, as at 8 MB) at every size. A
directory where no reflink file system can be made is a line saying why.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Connection, text

from bench.inproc import TEST_BODY, _admin_connection, _name, fixture_wait
from bench.projects import REPO
from bench.reflink_fs import Unavailable, reflink_file_system
from bench.timing import Row, absolute_row, fmt_seconds, render_table, slowdown_row
from pytest_reynard_db.foundation.registry import load_registry
from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.runas import RUNTIME_DIR_ENV
from pytest_reynard_db.provisioning.provision import Provisioner, Seed

SIZES_MB = (8, 100, 600)
#: What an empty database and the migrated ECS schema take already.
BASE_MB = 8
#: What a test may wait for, its clone made ahead: the floor is tens of µs, one ms is far
#: below a clone of any size (a ratio of two medians that small measures the machine's load).
WAIT_FLOOR = 1e-3
#: One filler row: 960 characters (not compressed: under TOAST's 2 kB), about 1 kB a row.
ROW_BYTES = 1060


def filler(megabytes: int) -> Seed:
    """A seed that grows the template to about ``megabytes``."""
    rows = max(0, (megabytes - BASE_MB) * 2**20 // ROW_BYTES)

    def fill(name: str, connection: Connection) -> None:
        connection.execute(
            text(
                "CREATE TABLE bench_filler AS SELECT i, repeat(md5(i::text), 30) AS pad "
                "FROM generate_series(1, :rows) i"
            ),
            {"rows": rows},
        )

    return Seed(fill=fill, digest=f"bench-filler-{rows}")


@contextmanager
def provisioner(server: EphemeralServer, seed: Seed, locks: Path) -> Iterator[Provisioner]:
    made = Provisioner(load_registry(REPO), server, run_id="benchsize", lock_dir=locks, seed=seed)
    try:
        yield made
    finally:
        made.close()


@dataclass(frozen=True)
class Sized:
    """Medians at one template size: a raw clone, its drop, what a test waits for."""

    clone: float
    drop: float
    wait: float
    nbytes: int


def measure(server: EphemeralServer, reps: int, locks: Path) -> dict[int, Sized]:
    """Per template size (MB), its medians."""
    found = {}
    for size in SIZES_MB:
        with provisioner(server, filler(size), locks) as made:
            template, _ = made.template("ecs")
            took, dropped, nbytes = clone_median(server, template, reps)
            waits = [fixture_wait(made, TEST_BODY) for _ in range(reps + 2)][2:]
            found[size] = Sized(took, dropped, statistics.median(waits), nbytes)
        with _admin_connection(server) as conn:  # the next size's template has room
            conn.execute(f'DROP DATABASE IF EXISTS "{template}"')
    return found


def clone_median(server: EphemeralServer, template: str, reps: int) -> tuple[float, float, int]:
    """Medians of ``reps`` raw clones of ``template`` and of their drops, each dropped
    before the next is made (a run of undropped 600 MB clones fills memory), and its size."""
    clones, drops = [], []
    with _admin_connection(server) as conn:
        row = conn.execute("SELECT pg_database_size(%s)", (template,)).fetchone()
        for rep in range(reps + 1):  # the first one warms up
            name = _name("size")
            started = time.perf_counter()
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
            made = time.perf_counter()
            conn.execute(f'DROP DATABASE "{name}"')
            if rep:
                clones.append(made - started)
                drops.append(time.perf_counter() - made)
    return statistics.median(clones), statistics.median(drops), int(row[0]) if row else 0


def rows_for(where: str, server: EphemeralServer, reps: int) -> list[Row]:
    method = server.process.clone_method
    label = f"PostgreSQL {server.version}, {'clone' if method.clone else 'copy'}"
    with _locks() as locks:
        found = measure(server, reps, locks)
    small = found[SIZES_MB[0]]
    rows = []
    for size in SIZES_MB[1:]:
        big = found[size]
        note = (
            f"{where}, {label}, {big.nbytes / 2**20:.0f} MB vs {small.nbytes / 2**20:.0f} MB; "
            f"drop {fmt_seconds(big.drop)} vs {fmt_seconds(small.drop)}"
        )
        clone_row = slowdown_row(f"9 clone, {size} MB template", big.clone, small.clone, "8 MB", 2)
        wait_row = absolute_row(
            f"9 test waits, {size} MB template", big.wait, small.wait, "8 MB", WAIT_FLOOR
        )
        clone_row.note = wait_row.note = note
        rows += [clone_row, wait_row]
    return rows


@contextmanager
def _locks() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-locks-") as locks:
        yield Path(locks)


@contextmanager
def runtime_dir(path: Path | None) -> Iterator[None]:
    """``$REYNARD_DB_RUNTIME_DIR`` set to ``path`` (None: the default) while a server starts."""
    before = os.environ.pop(RUNTIME_DIR_ENV, None)
    if path is not None:
        os.environ[RUNTIME_DIR_ENV] = str(path)
    try:
        yield
    finally:
        os.environ.pop(RUNTIME_DIR_ENV, None)
        if before is not None:
            os.environ[RUNTIME_DIR_ENV] = before


def run(reps: int) -> tuple[list[Row], list[str]]:
    """The rows, and a line per directory that could not be measured (why)."""
    rows: list[Row] = []
    skipped: list[str] = []
    with runtime_dir(None), EphemeralServer.start() as server:
        rows += rows_for(f"default runtime dir {server.process.root}", server, reps)
    try:
        with (
            reflink_file_system(size_mb=4096) as mount,
            runtime_dir(mount / "runtime"),
            EphemeralServer.start() as server,
        ):
            rows += rows_for("XFS reflink=1 (loop)", server, reps)
    except Unavailable as exc:
        skipped.append(f"9 on a reflink file system: skipped, {exc}")
    return rows, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fresh database vs template size (row 9)")
    parser.add_argument("--reps", type=int, default=15, help="clones per size (median)")
    args = parser.parse_args(argv)
    rows, skipped = run(args.reps)
    print(render_table(rows))
    for line in skipped:
        print(line)
    print(f"(test body {fmt_seconds(TEST_BODY)}; medians of {args.reps})")
    return 0 if all(r.met for r in rows if "reflink" in r.note) else 1


if __name__ == "__main__":
    sys.exit(main())
