"""Hostile tests of issue 22's rule (a stairway step behaves as a fresh ``alembic`` command)
that need more than a corpus tree under the two env.py shapes of ``tests/test_oracle.py``:
an env.py whose engine lives in an application module, so the same pooled DBAPI connection
serves every ``env.py`` run of the walk; each test compares our verdicts with plain
Alembic's (``bench.plain_alembic``), as the oracle does.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from oracle_corpus import Rev
from oracle_corpus_state import SEARCH_PATH, TEMP_TABLE
from reynard_trees import clean_env
from test_oracle import CASES, CHECKED, URL_ENV, fork_server, fresh_database, make_tree, stock

from bench.plain_alembic import ForkServer, Tree, plain_checks
from pytest_reynard_db.checks import run_checks
from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.registry import load_registry

__all__ = ["fork_server", "stock"]  # fixtures, used by name

#: The application's engine, made once per process (``from app.db import engine``): its
#: QueuePool hands the same DBAPI connection to every env.py run of one process.
APP_DB = """\
import os

from sqlalchemy import create_engine

engine = create_engine(os.environ["{url_env}"])
"""

ENV_PY = """\
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from alembic import context
from {module} import engine

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


def app_engine_tree(stock: Path, dest: Path, revisions: tuple[Rev, ...]) -> Path:
    project = make_tree(stock, dest, revisions, "stock")
    module = f"appdb_{uuid.uuid4().hex[:10]}"  # one per tree: sys.modules keeps the first
    migrations = project / "migrations"
    (migrations / f"{module}.py").write_text(APP_DB.format(url_env=URL_ENV))
    (migrations / "env.py").write_text(ENV_PY.format(module=module))
    return project


@pytest.mark.parametrize("only", [("stairway",), CHECKED], ids=["stairway-alone", "all-three"])
@pytest.mark.parametrize(
    "revisions",
    [
        pytest.param(TEMP_TABLE, id="temp_table_without_on_commit_drop"),
        pytest.param(SEARCH_PATH, id="session_search_path"),
        pytest.param(CASES["tenant_set_by_an_earlier_revisions_function"].sound, id="tenant"),
    ],
)
def test_an_env_py_on_an_application_engine_gets_plain_alembics_verdict(
    revisions: tuple[Rev, ...],
    only: tuple[str, ...],
    stock: Path,
    tmp_path: Path,
    pg_server: EphemeralServer,
    fork_server: ForkServer,
) -> None:
    """Sound trees for plain Alembic (each command a new process, so a new pool and a new
    session). The walk ends its env.py run after a step that changed the session, but the
    next run's ``engine.connect()`` is the same pooled session: what the step left is still
    there. And the engine is made once, on the first check's throw-away database."""
    project = app_engine_tree(stock, tmp_path / "app", revisions)
    tree = Tree(ini=project / "alembic.ini", env=clean_env(), url_env=(URL_ENV,))
    verdicts = plain_checks(tree, lambda: fresh_database(pg_server), fork_server)
    assert verdicts.upgrade.ok and verdicts.downgrade_clean.ok and verdicts.stairway.ok, verdicts
    registry = load_registry(project)
    results = run_checks(registry, [registry.get("app")], pg_server, only=only)
    assert [r.check for r in results] == list(only)
    failed = [f"{r.check}: {r.message}" for r in results if not r.ok]
    assert not failed, "\n".join(failed)
