"""How the stairway walks (issue 15): one ``env.py`` run for the whole tree, the heads
read back after every step inside it, and a fallback to one run per step for an
``env.py`` that opens its own connection; each shape still names every broken revision.

Real server, real Alembic, copies of the Reynard ``main`` tree with env.py swapped
or revisions added. No timing here: bench/floor.py measures the speed.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from reynard_trees import stairway_of, write_revision

from pytest_reynard_db.postgres import EphemeralServer

MAIN_VERSIONS = Path("alembic/main/versions")
MAIN_REVISIONS = 4

#: The stock ``alembic init`` shape: an engine of its own from ``sqlalchemy.url``
#: (the manager aims it at the throw-away database), the passed connection ignored.
OWN_ENGINE_ENV = """\
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

#: ``alembic init -t async``'s shape: an async engine of its own, migrations in ``run_sync``.
ASYNC_ENV = """\
import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import async_engine_from_config

config = context.config


def do_run_migrations(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations():
    connectable = async_engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    async with connectable.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await connectable.dispose()


asyncio.run(run_async_migrations())
"""

#: The passed connection, inside a transaction env.py opens: Alembic commits nothing itself.
OUTER_TRANSACTION_ENV = """\
from alembic import context

connection = context.config.attributes["connection"]
with connection.begin():
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


def forgets_a_column(project: Path) -> Path:
    """A revision whose downgrade forgets the column its upgrade adds (fails at re-up)."""
    return write_revision(
        project / MAIN_VERSIONS,
        "3a1400000099",
        "3a1400000004",
        'op.add_column("user_account", sa.Column("nickname", sa.String(50)))',
        "pass  # forgets to drop the column",
    )


def test_a_sound_tree_is_walked_in_one_env_py_run(
    project: Path, pg_server: EphemeralServer
) -> None:
    results, runs = stairway_of(project, pg_server)
    assert [r.ok for r in results] == [True], results
    assert f"{MAIN_REVISIONS} revisions: up, down, up" in results[0].message
    assert runs == 1


def test_each_broken_revision_costs_one_more_run(project: Path, pg_server: EphemeralServer) -> None:
    """A revision whose downgrade fails, then one on top of it (walked: its up worked)."""
    path = forgets_a_column(project)
    write_revision(project / MAIN_VERSIONS, "3a140000009a", "3a1400000099")
    results, runs = stairway_of(project, pg_server)
    assert [(r.revision, r.ok) for r in results] == [("3a1400000099", False)]
    assert results[0].summary.startswith(f"{path.relative_to(project)}: revision 3a1400000099")
    assert "re-up step" in results[0].summary
    # the walk, then the rebuild (one upgrade to the revisions reached) and the rest of the walk
    assert runs == 3


@pytest.mark.parametrize(
    "env_py", [None, OWN_ENGINE_ENV, ASYNC_ENV], ids=["passed", "own", "async"]
)
@pytest.mark.parametrize("when", ["upgrade", "downgrade"])
def test_heads_are_read_back_after_every_step_of_the_one_run(
    project: Path, pg_server: EphemeralServer, when: str, env_py: str | None
) -> None:
    """A revision that writes a row of its own into ``alembic_version``: Alembic's
    bookkeeping still succeeds, only reading the table back after the step shows it,
    on the connection passed to env.py or on one env.py opened itself."""
    if env_py is not None:
        (project / "alembic/main/env.py").write_text(env_py)
    stray = "op.execute(\"INSERT INTO alembic_version VALUES ('stray')\")"
    bodies = (stray, "pass") if when == "upgrade" else ("pass", stray)
    write_revision(project / MAIN_VERSIONS, "3a1400000099", "3a1400000004", *bodies)
    [result], _ = stairway_of(project, pg_server)
    assert not result.ok and result.revision == "3a1400000099"
    if when == "upgrade":
        assert "revision 3a1400000099, up step: upgrade 3a1400000099 left the database at" in (
            result.summary
        )
        assert "3a1400000099, stray, expected 3a1400000099" in result.summary
    else:
        assert "down step: downgrade 3a1400000099@3a1400000004 left the database at" in (
            result.summary
        )
        assert "3a1400000004, stray, expected 3a1400000004" in result.summary
    assert "env.py connected to another database" not in result.message


@pytest.mark.parametrize(
    ("env_py", "sound_runs"),
    [
        # its own connection, on the throw-away database: walked in one run on it
        (OWN_ENGINE_ENV, 1),
        (ASYNC_ENV, 1),
        # a transaction env.py began itself: Alembic commits no step in it, one run a step
        (OUTER_TRANSACTION_ENV, 1 + 3 * MAIN_REVISIONS),
    ],
    ids=["own-engine", "async", "outer-transaction"],
)
def test_other_env_py_shapes_are_walked_and_name_the_broken_revision(
    project: Path, pg_server: EphemeralServer, env_py: str, sound_runs: int
) -> None:
    (project / "alembic/main/env.py").write_text(env_py)
    results, runs = stairway_of(project, pg_server)
    assert [r.ok for r in results] == [True], results
    assert runs == sound_runs
    path = forgets_a_column(project)
    results, _ = stairway_of(project, pg_server)
    [result] = results
    assert result.file == str(path.relative_to(project))
    assert result.summary.startswith(f"{result.file}: revision 3a1400000099, re-up step")
    assert 'column "nickname" of relation "user_account" already exists' in result.message


def branched_tree(root: Path) -> Path:
    """Every shape a downgrade step can meet: a base, a linear run, two branches, a
    merge of them, a ``depends_on`` across branches, and a second root."""
    folder = root / "versions"
    folder.mkdir(parents=True)
    write_revision(folder, "a1", None)
    write_revision(folder, "a2", "a1")
    write_revision(folder, "b1", "a2", labels="bee")
    write_revision(folder, "c1", "a2", labels="sea")
    write_revision(folder, "b2", "b1", depends_on="c1")
    write_revision(folder, "m1", ("b2", "c1"))
    write_revision(folder, "m2", ("m1", "a2"))  # a parent that is the other's ancestor
    write_revision(folder, "z1", None, labels="zed")
    write_revision(folder, "z2", "z1")
    return folder


def test_walk_steps_answer_as_alembics_own_steps(tmp_path: Path) -> None:
    """``WalkStep`` answers a downgrade's "which parents become heads" without a graph
    walk when there is one parent and no other head; in every case, for every revision
    and every set of other heads, its answers are Alembic's."""
    from itertools import combinations

    from alembic.runtime.migration import RevisionStep
    from alembic.script import ScriptDirectory

    from pytest_reynard_db.migration.tree import WalkStep

    script = ScriptDirectory(str(tmp_path), version_locations=[str(branched_tree(tmp_path))])
    revision_map = script.revision_map
    scripts = [s for s in script.walk_revisions() if s is not None]
    assert len(scripts) == 9
    shortcut_taken = 0
    for revision in scripts:
        others = [s.revision for s in scripts if s is not revision]
        head_sets = [set()] + [set(c) for n in (1, 2) for c in combinations(others, n)]
        for other_heads in head_sets:
            heads = other_heads | {revision.revision}
            ours, theirs = (
                WalkStep(revision_map, revision, False),
                RevisionStep(revision_map, revision, False),
            )
            assert sorted(ours._unmerge_to_revisions(heads)) == sorted(
                theirs._unmerge_to_revisions(heads)
            ), (revision.revision, heads)
            for question in ("should_delete_branch", "should_unmerge_branches"):
                assert getattr(ours, question)(heads) == getattr(theirs, question)(heads)
            shortcut_taken += not other_heads and len(revision._normalized_down_revisions) == 1
    assert shortcut_taken == 4  # a2, b1, c1, z2: the fast path was taken, not only Alembic's


def test_downgrade_takes_alembics_steps_as_walk_steps(tmp_path: Path) -> None:
    """``downgrade`` (the verb and ``downgrade_clean``) takes the very steps Alembic
    would, in its order, each a ``WalkStep``."""
    from alembic.script import ScriptDirectory

    from pytest_reynard_db.migration.tree import WalkStep, downgrade_steps

    script = ScriptDirectory(str(tmp_path), version_locations=[str(branched_tree(tmp_path))])
    heads = tuple(script.get_heads())
    for target in ("base", "a1", "a2", "sea@base", "zed@base"):
        ours = downgrade_steps(script, target, heads)
        assert ours == list(script._downgrade_revs(target, heads)), target
        assert ours and all(type(step) is WalkStep for step in ours), target


def test_a_long_walk_is_cut_into_env_py_runs_of_walk_chunk_revisions(
    project: Path, pg_server: EphemeralServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What one transaction holds is bounded: with an env.py that migrates in one
    transaction, every table a step dropped stays locked until the commit."""
    stairway_module = importlib.import_module("pytest_reynard_db.checks.stairway")

    (project / "alembic/main/env.py").write_text(OWN_ENGINE_ENV)  # one transaction a run
    monkeypatch.setattr(stairway_module, "WALK_CHUNK", 3)
    results, runs = stairway_of(project, pg_server)
    assert [r.ok for r in results] == [True], results
    assert runs == 2  # revisions 1-3, then 4
    forgets_a_column(project)  # the 5th: broken at its re-up
    results, runs = stairway_of(project, pg_server)
    assert [(r.revision, r.ok) for r in results] == [("3a1400000099", False)]
    assert runs == 3  # 1-3, then 4-5 (fails), then the rebuild's upgrade


@pytest.mark.parametrize("env_py", [None, OWN_ENGINE_ENV], ids=["passed", "own"])
def test_a_sound_branched_tree_with_merges_and_depends_on_passes(
    project: Path, pg_server: EphemeralServer, env_py: str | None
) -> None:
    """Downgrading a merge while another root's head is there, Alembic puts back both
    parents, one of which the other depends on: a redundant row, Alembic's own doing,
    not the revision's. The heads it means are the same."""
    import shutil

    versions = project / MAIN_VERSIONS
    shutil.rmtree(versions)
    branched_tree(versions.parent)
    if env_py is not None:
        (project / "alembic/main/env.py").write_text(env_py)
    results, _ = stairway_of(project, pg_server)
    assert [r.ok for r in results] == [True], results
    assert "9 revisions: up, down, up" in results[0].message
