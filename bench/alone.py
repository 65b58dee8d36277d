"""Alembic by itself: the reference rows of row 6 (no target).

Each function takes the steps a check takes, on one connection to an empty
database of the same server, one transaction per step, through a bare
``MigrationContext``: no env.py, nothing read back, no guard, no lock, no
scratch database made and dropped in the timing. What our check takes beyond
this is ours; what this takes beyond the floor is Alembic's (building and
compiling each operation through SQLAlchemy, its version-table bookkeeping),
which a check cannot take away and still run the revisions through Alembic.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from pytest_reynard_db.foundation.urls import with_driver
from pytest_reynard_db.postgres import EphemeralServer

#: Alembic's migration function: ``(heads, context) -> steps``.
Steps = Callable[[tuple[str, ...], MigrationContext], Iterable[Any]]

_names = itertools.count(1)


def timed_alone(server: EphemeralServer, runs: list[Steps]) -> float:
    """Seconds Alembic takes to run each of ``runs`` in turn on one new empty database."""
    name = f"test_bench_alembic_{next(_names)}"
    url = server.create_database(name)
    engine = create_engine(with_driver(url), poolclass=NullPool)  # psycopg 3, as ours
    try:
        with engine.connect() as connection:
            started = time.perf_counter()
            for steps in runs:
                opts = {"fn": steps, "transaction_per_migration": True}
                context = MigrationContext.configure(connection, opts=opts)
                with Operations.context(context):
                    context.run_migrations()
            return time.perf_counter() - started
    finally:
        engine.dispose()
        server.drop_database(name)


def stairway_alone(server: EphemeralServer, script: ScriptDirectory) -> float:
    """The stairway's 3 steps a revision (up, down, up), bases first, Alembic's own steps."""
    order = [s for s in reversed(list(script.walk_revisions())) if s is not None]

    def steps(heads: tuple[str, ...], context: MigrationContext) -> Iterable[RevisionStep]:
        for revision in order:
            for upward in (True, False, True):
                yield RevisionStep(script.revision_map, revision, upward)

    return timed_alone(server, [steps])


def walk_alone(server: EphemeralServer, script: ScriptDirectory, *, down: bool) -> float:
    """``upgrade heads`` (then, with ``down``, ``downgrade base``) as Alembic's commands
    plan them."""

    def upgrade(heads: tuple[str, ...], context: MigrationContext) -> Iterable[Any]:
        return script._upgrade_revs("heads", heads)

    def downgrade(heads: tuple[str, ...], context: MigrationContext) -> Iterable[Any]:
        return script._downgrade_revs("base", heads)

    return timed_alone(server, [upgrade, downgrade] if down else [upgrade])
