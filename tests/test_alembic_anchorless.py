"""``--test-alembic`` in a project without ``tests/conftest.py`` (issue 24, point 6).

pytest-alembic binds its built-in tests to that one file; without it they were
collected nowhere, silently. With ``--reynard-db`` they are collected under
``pytest-alembic::`` (``pytest_alembic_compat.anchorless``). The project here is
the Reynard trees with a test file of its own and no conftest anywhere.
"""

from __future__ import annotations

import pytest
from reynard_trees import break_main

BUILTIN = ("model_definitions_match_ddl", "single_head_revision", "up_down_consistency", "upgrade")


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """conftest's, with ``tests/test_app.py`` and no conftest.py."""
    tests_dir = pytester.path / "tests"
    tests_dir.mkdir()
    (tests_dir / "test_app.py").write_text("def test_app():\n    pass\n")
    assert not list(pytester.path.rglob("conftest.py"))
    return pytester


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_builtin_tests_are_collected_without_a_conftest(
    pytester: pytest.Pytester, workers: tuple[str, ...]
) -> None:
    result = pytester.runpytest_subprocess(
        "--test-alembic", "--reynard-db=main,ecs", "-v", *workers
    )
    result.assert_outcomes(passed=1 + 2 * len(BUILTIN))
    passed = {line.split()[-1 if workers else 0] for line in result.outlines if "PASSED" in line}
    assert passed >= {
        f"pytest-alembic::test_{name}[{db}]" for name in BUILTIN for db in ("main", "ecs")
    }, result.stdout.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_they_select_and_fail_as_others(pytester: pytest.Pytester) -> None:
    """``-k`` selects among them; a broken revision fails ``test_upgrade`` with
    pytest-alembic's own report, not a crash of the collector."""
    break_main(pytester.path)
    result = pytester.runpytest("--test-alembic", "--reynard-db=main", "-k", "upgrade", "-v")
    result.assert_outcomes(failed=1, deselected=4)
    result.stdout.fnmatch_lines(["*pytest-alembic::test_upgrade FAILED*", "*broken_on_purpose*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_without_the_plugin_pytest_alembic_is_left_alone(pytester: pytest.Pytester) -> None:
    """No ``--reynard-db``: pytest-alembic's own behaviour (nothing bound, nothing run)."""
    result = pytester.runpytest("--test-alembic", "-v")
    result.assert_outcomes(passed=1)
    assert "pytest-alembic::" not in result.stdout.str()
