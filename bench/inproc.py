"""Rows 1 to 3: measured in this process, on one ephemeral server."""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pytest_alembic import runner as alembic_runner
from pytest_alembic import tests as alembic_tests
from pytest_alembic.config import Config as AlembicTestConfig
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from pytest_reynard_db.checks.runner import CheckRunner
from pytest_reynard_db.checks.stairway import stairway
from pytest_reynard_db.foundation.registry import load_registry
from pytest_reynard_db.migration.env_run import silenced
from pytest_reynard_db.migration.manager import MigrationManager
from pytest_reynard_db.plugin.outer_transaction import rolled_back
from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.provisioning.provision import Provisioner, TestDatabase

from .projects import REPO, stair_project
from .timing import Row, absolute_row, median_time, slowdown_row, speedup_row

_names = itertools.count(1)


@dataclass
class Sizes:
    """Repetitions and tree sizes of one run (``--quick`` makes them small)."""

    clone_reps: int
    remigrate_reps: int
    connection_reps: int
    stair_sizes: tuple[int, ...]
    stair_reps: int


def _name(prefix: str) -> str:
    """A database name of this benchmark, unique in this process."""
    return f"test_bench_{prefix}_{next(_names)}"


@contextmanager
def ecs_provisioner(server: EphemeralServer) -> Iterator[Provisioner]:
    """A provisioner over this repository's registry, as the plugin makes one."""
    with tempfile.TemporaryDirectory(prefix="bench-locks-") as locks:
        provisioner = Provisioner(load_registry(REPO), server, run_id="bench", lock_dir=Path(locks))
        try:
            yield provisioner
        finally:
            provisioner.close()


def _admin_connection(server: EphemeralServer) -> psycopg.Connection[Any]:
    """A plain autocommit psycopg connection to the server's ``postgres`` database."""
    url = server.url
    return psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True
    )


# -- row 1 -----------------------------------------------------------------------------------
def row_clone(server: EphemeralServer, sizes: Sizes) -> list[Row]:
    """Clone + drop (``reynard_db_fresh``) vs re-migrating per test vs the raw SQL floor."""
    with ecs_provisioner(server) as provisioner:
        template, _ = provisioner.template("ecs")
        ours = median_time(lambda: fresh_cycle(provisioner), sizes.clone_reps, warmup=2)
        db = provisioner.registry.get("ecs")

        def remigrate() -> None:
            name = _name("migrate")
            url = server.create_database(name)
            MigrationManager(db, url, quiet=True).upgrade("heads")
            server.drop_database(name)

        migrate = median_time(remigrate, sizes.remigrate_reps)
        with _admin_connection(server) as conn:
            raw = median_time(lambda: raw_clone(conn, template), sizes.clone_reps, warmup=2)
        waits = [fixture_wait(provisioner, TEST_BODY) for _ in range(sizes.clone_reps + 2)][2:]
        waited = sorted(waits)[len(waits) // 2]
    return [
        speedup_row("1a fresh clone+drop vs re-migrate", ours, migrate, "upgrade heads", 20),
        slowdown_row("1b fresh clone+drop vs raw clone", ours, raw, "raw SQL", 1.5),
        speedup_row(
            f"1c fresh: what a test waits for, with a {TEST_BODY * 1000:.0f} ms test body",
            waited,
            migrate,
            "upgrade heads",
            20,
        ),
    ]


#: A test body's duration for row 1c: short for a test that touches a database.
TEST_BODY = 0.02


def fixture_wait(provisioner: Provisioner, body: float) -> float:
    """Set-up plus tear-down time of ``reynard_db_fresh`` around a test of ``body`` seconds.

    The next clone is made ahead and the drop happens in the background while
    the test runs: this is the part of the clone's cost a test suite still pays.
    """
    started = time.perf_counter()
    database = provisioner.clone("ecs", purpose="fresh")
    setup = time.perf_counter() - started
    time.sleep(body)
    started = time.perf_counter()
    provisioner.drop(database)
    return setup + time.perf_counter() - started


def fresh_cycle(provisioner: Provisioner) -> None:
    """What ``reynard_db_fresh`` does around one test: clone the template, then drop."""
    database = provisioner.clone("ecs", purpose="fresh")
    provisioner.drop(database)


def raw_clone(conn: psycopg.Connection[Any], template: str) -> None:
    """The floor: ``CREATE DATABASE .. TEMPLATE .. STRATEGY FILE_COPY`` and ``DROP DATABASE``."""
    name = sql.Identifier(_name("raw"))
    conn.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            name, sql.Identifier(template)
        )
    )
    conn.execute(sql.SQL("DROP DATABASE {}").format(name))


# -- row 2 -----------------------------------------------------------------------------------
def row_connection(server: EphemeralServer, sizes: Sizes) -> list[Row]:
    """The ``reynard_db_connection`` fixture's set-up and tear-down vs ``BEGIN; ROLLBACK``."""
    with ecs_provisioner(server) as provisioner:
        database = provisioner.clone("ecs", purpose="session")
        fixture = connection_fixture()
        ours = median_time(lambda: fixture(database), sizes.connection_reps, warmup=20)
        url = database.url
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
        ) as conn:

            def bare() -> None:
                conn.execute("BEGIN")
                conn.execute("ROLLBACK")

            base = median_time(bare, sizes.connection_reps, warmup=20)
        provisioner.drop(database)
    return [absolute_row("2 reynard_db_connection per test", ours, base, "BEGIN;ROLLBACK", 2e-3)]


def connection_fixture() -> Callable[[TestDatabase], None]:
    """One set-up and tear-down of what the fixture does (``outer_transaction.rolled_back``:
    the connection, its outer transaction and savepoint, the rollback and its check)."""

    def cycle(database: TestDatabase) -> None:
        with rolled_back(database) as (_, outcome):
            pass
        if not outcome.intact:
            raise RuntimeError("reynard_db_connection: the outer transaction was ended")

    return cycle


# -- row 3 -----------------------------------------------------------------------------------
def row_stairway(server: EphemeralServer, sizes: Sizes) -> list[Row]:
    """Our stairway vs pytest-alembic's two tests, on generated linear trees."""
    rows: list[Row] = []
    ours_by_size: dict[int, float] = {}
    theirs_by_size: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stair-") as tmp:
        for size in sizes.stair_sizes:
            project = stair_project(Path(tmp) / f"tree{size}", size)
            ours = median_time(partial(our_stairway, server, project), sizes.stair_reps, warmup=0)
            theirs = median_time(
                partial(their_stairway, server, project), sizes.stair_reps, warmup=0
            )
            ours_by_size[size], theirs_by_size[size] = ours, theirs
            name = f"3 stairway {size} revs (3 steps/rev) vs pytest-alembic (2 tests)"
            rows.append(slowdown_row(name, ours, theirs, "pytest-alembic", 1.0))
    if len(sizes.stair_sizes) >= 2:
        big, small = sizes.stair_sizes[-1], sizes.stair_sizes[-2]
        ours_scale = ours_by_size[big] / ours_by_size[small]
        theirs_scale = theirs_by_size[big] / theirs_by_size[small]
        row = Row(
            f"3 stairway scaling t({big})/t({small})",
            ours_by_size[big],
            theirs_by_size[big],
            f"theirs scale {theirs_scale:.2f}",
            ours_scale,
            f"t({big})/t({small})",
            f"<= {2.3 * big / small / 2:g}",
            ours_scale <= 2.3 * big / small / 2,
        )
        rows.append(row)
    return rows


def our_stairway(server: EphemeralServer, project: Path) -> None:
    """``checks.stairway`` through a new ``CheckRunner`` (tree loaded once per run)."""
    registry = load_registry(project)
    failed = [r for r in stairway(CheckRunner(registry.get("stair"), registry, server)) if not r.ok]
    if failed:
        raise RuntimeError(f"our stairway failed: {failed[0].message}")


def their_stairway(server: EphemeralServer, project: Path) -> None:
    """pytest-alembic's ``test_upgrade`` + ``test_up_down_consistency`` on a new database."""
    registry = load_registry(project)
    db = registry.get("stair")
    name = _name("pta")
    url = server.create_database(name)
    engine = create_engine(url, poolclass=NullPool)
    try:
        config = AlembicTestConfig(alembic_config=silenced(db.alembic_config(url=url), db.ini))
        with alembic_runner(config=config, engine=engine) as runner:
            alembic_tests.test_upgrade(runner)
        server.drop_database(name)
        server.create_database(name)
        with alembic_runner(config=config, engine=engine) as runner:
            alembic_tests.test_up_down_consistency(runner)
    finally:
        engine.dispose()
        server.drop_database(name)
