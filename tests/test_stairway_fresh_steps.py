"""Each stairway step as a command of its own (issue 22): nothing one Alembic run keeps
carries into the next step of the walk.

Plain Alembic runs ``upgrade R``, ``downgrade R@parent`` and ``upgrade R`` as three
commands: three processes, three connections, three runs of Alembic's DDL runner. The
walk takes them in one ``env.py`` run, so each case here is a tree that plain Alembic
passes (or fails) only because every step starts fresh: a named enum (SQLAlchemy notes
it created the type in the runner's memo), a revision's module-level ``MetaData``, a
temporary table and a ``SET`` left in the session, and an ``env.py`` whose ``SET LOCAL``
must hold for every step. Both env.py shapes: the passed connection (this repository's
``main`` env.py) and the stock ``alembic init`` one (an engine of its own).

``tests/test_oracle.py`` holds the same rule against plain Alembic's own commands, on a
corpus of patterns; these are the cases that broke the one-run walk, with its blame.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reynard_trees import stairway_of, write_revision
from test_stairway_walk import MAIN_VERSIONS, OWN_ENGINE_ENV

from pytest_reynard_db.checks import run_check
from pytest_reynard_db.checks.runner import CheckRunner
from pytest_reynard_db.foundation.registry import load_registry
from pytest_reynard_db.postgres import EphemeralServer

HEAD = "3a1400000004"
SHAPES = {"passed-connection": None, "own-engine": OWN_ENGINE_ENV}

ENUM_UP = (
    'op.create_table("pet", sa.Column("id", sa.Integer, primary_key=True),\n'
    '    sa.Column("kind", sa.Enum("cat", "dog", name="petkind")))'
)


def tree(project: Path, env_py: str | None) -> Path:
    if env_py is not None:
        (project / "alembic/main/env.py").write_text(env_py)
    return project / MAIN_VERSIONS


@pytest.fixture(params=list(SHAPES))
def versions(request: pytest.FixtureRequest, project: Path) -> Path:
    return tree(project, SHAPES[request.param])


def test_an_enum_dropped_by_its_downgrade_is_created_again_by_the_re_up(
    project: Path, versions: Path, pg_server: EphemeralServer
) -> None:
    write_revision(
        versions, "e1", HEAD, ENUM_UP, 'op.drop_table("pet")\nop.execute("DROP TYPE petkind")'
    )
    write_revision(  # a second table on the same type, in a later revision
        versions,
        "e2",
        "e1",
        'op.create_table("vet", sa.Column("id", sa.Integer, primary_key=True),\n'
        '    sa.Column("kind", sa.Enum("cat", "dog", name="petkind", create_type=False)))',
        'op.drop_table("vet")',
    )
    [result], _ = stairway_of(project, pg_server)
    assert result.ok, result.message


def test_an_enum_whose_downgrade_forgets_drop_type_fails_at_its_re_up(
    project: Path, versions: Path, pg_server: EphemeralServer
) -> None:
    write_revision(versions, "e1", HEAD, ENUM_UP, 'op.drop_table("pet")  # DROP TYPE forgotten')
    [result], _ = stairway_of(project, pg_server)
    assert not result.ok
    assert result.revision == "e1"
    assert 'revision e1, re-up step: type "petkind" already exists' in result.message


def test_a_table_defined_on_a_module_level_metadata_in_upgrade_passes(
    project: Path, versions: Path, pg_server: EphemeralServer
) -> None:
    """``sa.Table`` on the module's ``MetaData`` a second time in one process raises "already
    defined"; a new ``alembic`` process loads the module anew."""
    path = write_revision(
        versions,
        "m1",
        HEAD,
        'op.create_table("tag", sa.Column("id", sa.Integer, primary_key=True))\n'
        'tag = sa.Table("tag", META, sa.Column("id", sa.Integer))\n'
        'op.bulk_insert(tag, [{"id": 1}])',
        'op.drop_table("tag")',
    )
    path.write_text(
        path.read_text().replace("def upgrade()", "META = sa.MetaData()\ndef upgrade()")
    )
    [result], _ = stairway_of(project, pg_server)
    assert result.ok, result.message


def test_a_temporary_table_and_a_set_left_in_the_session_do_not_reach_the_next_step(
    project: Path, versions: Path, pg_server: EphemeralServer
) -> None:
    """A data migration's temporary table (no ``ON COMMIT DROP``) and a session-level
    ``SET search_path`` end with plain Alembic's command; the next step must not see them."""
    write_revision(
        versions,
        "s1",
        HEAD,
        'op.execute("CREATE SCHEMA IF NOT EXISTS side")\n'
        'op.execute("CREATE TEMP TABLE scratch AS SELECT 1 AS x")\n'
        'op.execute("SET search_path TO side, public")',
        'op.execute("DROP SCHEMA side")',
    )
    write_revision(  # unqualified: lands in public for a fresh command, so dropped there
        versions,
        "s2",
        "s1",
        'op.create_table("note", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("note", schema="public")',
    )
    [result], _ = stairway_of(project, pg_server)
    assert result.ok, result.message


#: The version table stays in ``public`` (``version_table_schema``): the check reads it
#: back on a connection of its own, which has the default ``search_path``.
LOCAL_SET_ENV = OWN_ENGINE_ENV.replace(
    "    with context.begin_transaction():\n",
    "    with context.begin_transaction():\n"
    '        connection.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS app")\n'
    '        connection.exec_driver_sql("SET LOCAL search_path TO app")\n',
).replace("target_metadata=None)", 'target_metadata=None, version_table_schema="public")')


def test_an_env_py_set_local_holds_for_every_step(
    project: Path, pg_server: EphemeralServer
) -> None:
    """``SET LOCAL`` inside ``begin_transaction`` holds for a whole ``alembic`` command:
    every step of the stairway is one, so every step must run under it."""
    versions = tree(project, LOCAL_SET_ENV)
    for path in versions.glob("*.py"):
        path.unlink()  # the main tree's revisions name no schema; these do
    write_revision(
        versions,
        "l1",
        None,
        'op.create_table("a", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("a", schema="app")',
    )
    write_revision(
        versions,
        "l2",
        "l1",
        'op.create_table("b", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("b", schema="app")',
    )
    [result], _ = stairway_of(project, pg_server)
    assert result.ok, result.message


def test_downgrade_clean_runs_its_downgrade_on_a_session_of_its_own(
    project: Path, versions: Path, pg_server: EphemeralServer
) -> None:
    """``alembic upgrade heads`` then ``alembic downgrade base``: the temporary table the
    upgrade left in its session is gone when the downgrade creates it again."""
    write_revision(
        versions,
        "t1",
        HEAD,
        'op.execute("CREATE TEMP TABLE scratch AS SELECT 1 AS x")',
        'op.execute("CREATE TEMP TABLE scratch AS SELECT 2 AS x")',
    )
    registry = load_registry(project)
    [result] = run_check(CheckRunner(registry.get("main"), registry, pg_server), "downgrade_clean")
    assert result.ok, result.message


#: mlflow's auth tree keeps its versions in a table of its own.
OWN_VERSION_TABLE_ENV = OWN_ENGINE_ENV.replace(
    "target_metadata=None)", 'target_metadata=None, version_table="alembic_version_auth")'
)


@pytest.mark.parametrize("broken", [False, True], ids=["sound", "forgets-a-column"])
def test_an_env_py_with_a_version_table_of_its_own_is_read_back_there(
    project: Path, pg_server: EphemeralServer, broken: bool
) -> None:
    versions = tree(project, OWN_VERSION_TABLE_ENV)
    write_revision(
        versions,
        "v1",
        HEAD,
        'op.add_column("user_account", sa.Column("nickname", sa.String(50)))',
        "pass" if broken else 'op.drop_column("user_account", "nickname")',
    )
    registry = load_registry(project)
    runner = CheckRunner(registry.get("main"), registry, pg_server)
    results = {name: run_check(runner, name) for name in ("upgrade", "stairway", "downgrade_clean")}
    assert all(r.ok for r in results["upgrade"]), results["upgrade"]
    # the forgotten column goes with its table at base: only the stairway can see it
    [clean] = results["downgrade_clean"]
    assert clean.ok and clean.message.endswith("leaves only alembic_version_auth"), clean
    [stairway] = results["stairway"]
    if broken:
        assert not stairway.ok and stairway.revision == "v1"
        assert 'column "nickname" of relation "user_account" already exists' in stairway.message
    else:
        assert stairway.ok, stairway.message
