"""The ini's ``reynard_db_checks = true`` adds the check items to whole runs only
(``pytest``, ``pytest DIR``), as pytest runs only the tests of the files it is given;
``--reynard-db-checks`` adds them always (issue 25: one file while working runs that
file only)."""

from __future__ import annotations

import pytest


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    with (pytester.path / "pyproject.toml").open("a") as pyproject:
        pyproject.write('reynard_db = "main"\nreynard_db_checks = true\n')
    tests = pytester.path / "tests"
    tests.mkdir()
    (tests / "test_one.py").write_text("def test_one():\n    pass\n")
    return pytester


def _collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--co", "-q", *args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert result.stderr.str().strip() == ""
    return [line for line in result.outlines if "::" in line]


@pytest.mark.parametrize("args", [(), ("tests",), (".",)], ids=["testpaths", "dir", "root"])
def test_a_whole_run_has_the_check_items(project: pytest.Pytester, args: tuple[str, ...]) -> None:
    items = _collected(project, *args)
    assert "reynard-db::main::single_head" in items
    assert "tests/test_one.py::test_one" in items


@pytest.mark.parametrize(
    "args", [("tests/test_one.py",), ("tests/test_one.py::test_one",)], ids=["file", "node"]
)
def test_a_run_of_one_file_has_its_tests_only(
    project: pytest.Pytester, args: tuple[str, ...]
) -> None:
    assert _collected(project, *args) == ["tests/test_one.py::test_one"]
    flagged = _collected(project, *args, "--reynard-db-checks")
    assert "reynard-db::main::single_head" in flagged
