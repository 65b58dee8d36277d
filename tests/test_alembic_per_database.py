"""pytest-alembic's tests with ``--reynard-db=a,b``: once per database (issue 13), and
its single-head test agreeing with our ``single_head`` on branch-labelled trees.

``ecs`` has three heads, one per branch label; ``main`` one unlabelled head. CI runs
this file on pytest 8 as well (``.ci/run``, ``-k alembic``).
"""

from __future__ import annotations

import pytest
from reynard_trees import write_revision


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """conftest's, with a ``tests/conftest.py``: pytest-alembic's anchor."""
    tests_dir = pytester.path / "tests"
    tests_dir.mkdir()
    (tests_dir / "conftest.py").write_text("")  # pytest-alembic's anchor
    return pytester


def test_alembic_builtin_tests_run_once_per_database(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--test-alembic", "--reynard-db=main,ecs", "-v")
    result.assert_outcomes(passed=8)
    for name in ("single_head_revision", "upgrade", "up_down_consistency"):
        for db in ("main", "ecs"):
            result.stdout.fnmatch_lines([f"*::test_{name}[[]{db}[]] PASSED*"])


def test_alembic_single_head_agrees_with_ours(pytester: pytest.Pytester) -> None:
    """Two unlabelled heads in ``main``: both fail it, naming the heads and the merge;
    ``ecs``'s three labelled heads pass both."""
    write_revision(
        pytester.path / "alembic/main/versions", "3a1400000099", "3a1400000003", slug="second"
    )
    args = ("--reynard-db=main,ecs", "-v")
    builtin = pytester.runpytest("--test-alembic", *args, "-k", "single_head")
    builtin.assert_outcomes(passed=1, failed=1, deselected=6)
    builtin.stdout.fnmatch_lines(
        [
            "*test_single_head_revision[[]main[]] FAILED*",
            "*test_single_head_revision[[]ecs[]] PASSED*",
            "*the tree (no branch label) has 2 heads: 3a1400000004, 3a1400000099*",
            "*merge them: reynard-migrate merge main 3a1400000004 3a1400000099",
        ]
    )
    checks = pytester.runpytest("--reynard-db-checks", *args, "-k", "single_head")
    checks.stdout.fnmatch_lines(
        ["*reynard-db::main::single_head FAILED*", "*reynard-db::ecs::single_head PASSED*"]
    )


def test_alembic_own_tests_run_once_per_database(pytester: pytest.Pytester) -> None:
    """A test of the user's own that uses pytest-alembic's fixtures: once per database,
    unless a marker names one; a test of ``reynard_db`` alone keeps the first."""
    pytester.makepyfile(
        test_own="""
        import pytest
        from pytest_alembic import tests

        SEEN = []

        def test_upgrade(alembic_runner, alembic_engine, reynard_db_name):
            SEEN.append(reynard_db_name)
            assert alembic_engine.url.database.startswith(f"test_{reynard_db_name}_")
            tests.test_upgrade(alembic_runner)

        @pytest.mark.reynard_db("ecs")
        def test_marked(alembic_engine):
            assert alembic_engine.url.database.startswith("test_ecs_")

        def test_first(reynard_db):
            assert reynard_db.db.name == "main"

        def test_seen():
            assert sorted(SEEN) == ["ecs", "main"]
        """
    )
    result = pytester.runpytest("--reynard-db=main,ecs", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*test_own.py::test_upgrade[[]main[]] PASSED*"])
    result.stdout.fnmatch_lines(["*test_own.py::test_upgrade[[]ecs[]] PASSED*"])
    result.stdout.fnmatch_lines(["*test_own.py::test_marked[[]ecs[]] PASSED*"])
