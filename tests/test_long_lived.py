"""What a run has made by the time its tests begin is frozen out of the collector's sight
(``foundation.long_lived``, issue 25: a bare pytest spent ~160 ms of 0.6 s walking it,
mostly at its exit): in a run that selects a database, in ``reynard-migrate``, and not
in a run where the plugin is inactive, which must change nothing of the process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reynard_trees import clean_env, reynard_project, run_pytest

#: A test that says how many objects the collector ignores, and that it still collects
#: a cycle the test makes (what the tests make is not frozen).
SAYS_WHAT_IS_FROZEN = """\
import gc


class Node:
    pass


def test_frozen():
    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    print(f"FROZEN={gc.get_freeze_count()} COLLECTED={gc.collect()}")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = reynard_project(tmp_path / "project")
    (root / "test_frozen.py").write_text(SAYS_WHAT_IS_FROZEN)
    return root


def _said(stdout: str) -> tuple[int, int]:
    found = re.search(r"FROZEN=(\d+) COLLECTED=(\d+)", stdout)
    assert found, stdout
    return int(found[1]), int(found[2])


@pytest.mark.parametrize("reuse", [False, True], ids=["own-server", "reuse"])
def test_a_run_with_a_database_freezes_what_it_imported(
    project: Path, runtime: Path, reuse: bool
) -> None:
    args = ["--reynard-db=ecs", "-s", "test_frozen.py"] + ["--reynard-db-reuse"] * reuse

    done = run_pytest(project, *args, REYNARD_DB_RUNTIME_DIR=str(runtime))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    frozen, collected = _said(done.stdout)
    assert frozen > 10_000, done.stdout  # pytest, SQLAlchemy, Alembic and the conftests
    assert collected >= 2, done.stdout  # the test's own cycle: collected as before


def test_an_inactive_plugin_freezes_nothing(project: Path, runtime: Path) -> None:
    done = run_pytest(project, "-s", "test_frozen.py", REYNARD_DB_RUNTIME_DIR=str(runtime))

    assert done.returncode == 0, done.stdout + done.stderr
    assert _said(done.stdout)[0] == 0, done.stdout


def test_a_collector_turned_off_is_left_so(project: Path, runtime: Path) -> None:
    """A conftest that turned the collector off (a suite tuning its own GC) is obeyed:
    nothing is frozen behind its back."""
    (project / "conftest.py").write_text("import gc\n\ngc.disable()\n")

    done = run_pytest(
        project, "--reynard-db=ecs", "-s", "test_frozen.py", REYNARD_DB_RUNTIME_DIR=str(runtime)
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert _said(done.stdout)[0] == 0, done.stdout


def test_the_cli_freezes_what_it_imported(project: Path) -> None:
    """``reynard-migrate`` freezes once its verbs are imported (the work after it:
    migrations, checks)."""
    says = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('FROZEN=%d COLLECTED=0' % gc.get_freeze_count()))\n"
        "sys.argv = ['reynard-migrate', 'heads', 'main']\n"
        "from pytest_reynard_db.cli import run\n"
        "run()\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", says],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert _said(done.stdout)[0] > 10_000, done.stdout
