"""Row 7 of the benchmark (issue 26): ``drift`` on the Reynard ``ecs`` tree, against
migrating that tree once.

``drift`` migrates a throw-away database to the live revision (what the baseline
measures alone), then reflects both databases and reads their catalogs; the row shows
what the comparison adds to that one migration. "Production" is a database of the
bench's server, migrated to heads once before the measurement; the two are timed in
turns, so a slow moment of the shared machine hits both alike.
"""

from __future__ import annotations

import io
import itertools
import statistics
from pathlib import Path

from sqlalchemy.engine import URL

from bench.timing import Row, slowdown_row, timed
from pytest_reynard_db.checks.drift import drift
from pytest_reynard_db.foundation.registry import Database, Registry, load_registry
from pytest_reynard_db.migration.manager import MigrationManager
from pytest_reynard_db.postgres import EphemeralServer

REPO = Path(__file__).resolve().parent.parent
#: drift is one migration and two reflections and catalog reads: at most this many times
#: the migration alone.
DRIFT_RATIO = 3.0
_names = itertools.count()


def row_drift(server: EphemeralServer, reps: int) -> list[Row]:
    """``drift ecs`` on a database at heads vs ``upgrade heads`` of ``ecs`` on an empty one."""
    registry = load_registry(REPO)
    ecs = registry.get("ecs")
    live = server.create_database("test_bench_drift_production")
    try:
        MigrationManager(ecs, live, stdout=io.StringIO(), quiet=True).upgrade("heads")
        ours: list[float] = []
        base: list[float] = []
        for _ in range(reps + 1):  # the first of each is a warm-up
            ours.append(timed(lambda: _drift_matches(registry, ecs, live, server)))
            base.append(migrate_once(server, ecs))
        mine, theirs = statistics.median(ours[1:]), statistics.median(base[1:])
    finally:
        server.drop_database("test_bench_drift_production")
    name = "7 drift ecs (a match) vs migrating ecs once"
    return [slowdown_row(name, mine, theirs, "upgrade heads", DRIFT_RATIO)]


def _drift_matches(registry: Registry, ecs: Database, live: URL, server: EphemeralServer) -> None:
    result = drift(registry, ecs, live, server)
    if not result.ok:
        raise RuntimeError(f"drift found differences on a database it migrated: {result.message}")


def migrate_once(server: EphemeralServer, ecs: Database) -> float:
    """One ``upgrade heads`` of ``ecs`` on an empty database (created and dropped untimed)."""
    name = f"test_bench_drift_base_{next(_names)}"
    url = server.create_database(name)
    try:
        manager = MigrationManager(ecs, url, stdout=io.StringIO(), quiet=True)
        return timed(lambda: manager.upgrade("heads"))
    finally:
        server.drop_database(name)
