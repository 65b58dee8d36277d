"""The stairway walked on the connection env.py migrates on (issue 15), attacked.

A review of the one-run walk on env.py's own connection found a false pass (an
env.py whose migrations are never committed), false failures and wrong blame
when a whole chunk of steps shared one transaction (a deferred foreign key, a
failure at COMMIT, a revision reading through a second connection), and a double
walk when env.py calls ``run_migrations`` twice. Each is here, on the tree of
``test_stairway_walk`` (the Reynard ``main`` tree) with its env.py replaced.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from reynard_trees import stairway_of, write_revision
from test_stairway_walk import MAIN_REVISIONS, MAIN_VERSIONS, OWN_ENGINE_ENV

from pytest_reynard_db.postgres import EphemeralServer

HEAD = "3a1400000004"

#: The stock shape without ``context.begin_transaction()``: under SQLAlchemy 2 nothing is
#: committed, and ``alembic upgrade head`` with it leaves the database untouched.
NO_COMMIT_ENV = OWN_ENGINE_ENV.replace(
    "    with context.begin_transaction():\n        context.run_migrations()\n",
    "    context.run_migrations()\n",
)

#: A statement before ``configure`` begins a transaction Alembic then leaves to env.py,
#: which never commits it: closing the connection rolls the whole upgrade back.
STATEMENT_FIRST_ENV = OWN_ENGINE_ENV.replace(
    "    context.configure(",
    '    connection.exec_driver_sql("SELECT pg_advisory_lock(4242)")\n    context.configure(',
)

#: A transaction of env.py's own around the run (``engine.begin()``): committed at its end.
ENGINE_BEGIN_ENV = OWN_ENGINE_ENV.replace("connectable.connect()", "connectable.begin()")

#: ``run_migrations`` twice in one run: ``alembic upgrade`` finds nothing left the second time.
TWICE_ENV = OWN_ENGINE_ENV.replace(
    "        context.run_migrations()\n",
    "        context.run_migrations()\n        context.run_migrations()\n",
)

DEFERRED_FK_TABLE = (
    'op.execute("CREATE TABLE dfk (id int PRIMARY KEY, uid int REFERENCES user_account (id) '
    'DEFERRABLE INITIALLY DEFERRED)")'
)


def with_env(project: Path, env_py: str) -> Path:
    (project / "alembic/main/env.py").write_text(env_py)
    return project / MAIN_VERSIONS


@pytest.mark.parametrize("env_py", [NO_COMMIT_ENV, STATEMENT_FIRST_ENV], ids=["no-tx", "stmt"])
def test_an_env_py_whose_migrations_never_stay_fails(
    project: Path, pg_server: EphemeralServer, env_py: str
) -> None:
    with_env(project, env_py)
    [result], _ = stairway_of(project, pg_server)
    assert not result.ok
    assert "env.py ran the migrations on the throw-away database but nothing stayed" in (
        result.message
    )
    assert "context.begin_transaction()" in result.message


@pytest.mark.parametrize("env_py", [OWN_ENGINE_ENV, ENGINE_BEGIN_ENV], ids=["own", "begin"])
def test_a_sound_revision_with_a_deferred_foreign_key_passes(
    project: Path, pg_server: EphemeralServer, env_py: str
) -> None:
    """Its down step drops a table with a pending deferred check: fine once the up is
    committed, as deploys run it; "pending trigger events" if both share a transaction."""
    up = DEFERRED_FK_TABLE + '\nop.execute("INSERT INTO dfk SELECT 1, min(id) FROM user_account")'
    write_revision(with_env(project, env_py), "jj01", HEAD, up, 'op.execute("DROP TABLE dfk")')
    results, _ = stairway_of(project, pg_server)
    assert [r.ok for r in results] == [True], results


@pytest.mark.parametrize("env_py", [OWN_ENGINE_ENV, ENGINE_BEGIN_ENV], ids=["own", "begin"])
def test_a_failure_at_commit_is_the_revision_that_caused_it(
    project: Path, pg_server: EphemeralServer, env_py: str
) -> None:
    versions = with_env(project, env_py)
    write_revision(versions, "gg00", HEAD, DEFERRED_FK_TABLE, 'op.execute("DROP TABLE dfk")')
    write_revision(versions, "gg01", "gg00", 'op.execute("INSERT INTO dfk VALUES (1, -42)")')
    write_revision(versions, "gg02", "gg01")
    write_revision(
        versions,
        "gg03",
        "gg02",
        'op.add_column("user_account", sa.Column("innocent", sa.Integer))',
        'op.drop_column("user_account", "innocent")',
    )
    results, _ = stairway_of(project, pg_server)
    assert [(r.ok, r.revision) for r in results] == [(False, "gg01")], results
    assert "up step" in results[0].message and "foreign key" in results[0].message


def test_a_revision_reading_through_a_second_connection_sees_the_steps_before(
    project: Path, pg_server: EphemeralServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data migration reading in a session of its own waits on nothing and sees the
    earlier revisions' tables: each step was committed before the next."""
    stairway_module = importlib.import_module("pytest_reynard_db.checks.stairway")
    monkeypatch.setattr(stairway_module, "WALK_CHUNK", 2)
    versions = with_env(project, OWN_ENGINE_ENV)
    write_revision(
        versions,
        "kk01",
        HEAD,
        'op.create_table("kk", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("kk")',
    )
    second = (
        "with op.get_bind().engine.connect() as other:\n"
        "    other.execute(sa.text(\"SET lock_timeout = '5s'\"))\n"
        '    other.execute(sa.text("SELECT count(*) FROM kk")).scalar()'
    )
    write_revision(versions, "kk02", "kk01", second)
    results, _ = stairway_of(project, pg_server)
    assert [r.ok for r in results] == [True], results


def test_run_migrations_twice_in_one_env_py_run_walks_once(
    project: Path, pg_server: EphemeralServer
) -> None:
    with_env(project, TWICE_ENV)
    results, runs = stairway_of(project, pg_server)
    assert [r.ok for r in results] == [True], results
    assert runs == 1
    write_revision(project / MAIN_VERSIONS, "aa01", HEAD, 'op.execute("SELECT 1/0")')
    write_revision(project / MAIN_VERSIONS, "aa02", "aa01")
    [result], _ = stairway_of(project, pg_server)
    assert result.revision == "aa01"
    assert "not reached (they need it): aa02\n" in result.message  # once


def test_an_env_py_transaction_of_its_own_is_walked_a_run_a_step(
    project: Path, pg_server: EphemeralServer
) -> None:
    """Alembic commits nothing in a transaction env.py began; only separate runs give
    each step its commit."""
    with_env(project, ENGINE_BEGIN_ENV)
    results, runs = stairway_of(project, pg_server)
    assert [r.ok for r in results] == [True], results
    assert runs == 1 + 3 * MAIN_REVISIONS
