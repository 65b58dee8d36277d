"""What a run has made by the time its tests begin is frozen out of the collector's sight
(``foundation.long_lived``, issue 25: a bare pytest spent ~160 ms of 0.6 s walking it,
mostly at its exit): in a run that selects a database, in ``reynard-migrate``, and not
in a run where the plugin is inactive, which must change nothing of the process."""

from __future__ import annotations

import re
import shutil
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


#: An outer suite that runs pytest in-process (``pytester``) again and again, each run
#: selecting a database: it says how many objects are frozen after each.
RUNS_PYTEST_IN_PROCESS = """\
import gc, os, shutil
from pathlib import Path

import pytest


@pytest.mark.parametrize("run", range(4))
def test_inner(pytester, run):
    shutil.copytree(os.environ["INNER_PROJECT"], pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_inprocess(
        "-o", "asyncio_default_fixture_loop_scope=function", "--reynard-db=ecs", "test_x.py"
    )
    result.assert_outcomes(passed=1)
    print(f"AFTER-RUN={gc.get_freeze_count()}")
"""


def test_a_long_in_process_suite_freezes_once(project: Path, runtime: Path, tmp_path: Path) -> None:
    """An outer suite that does not load the plugin itself (``-p no:reynard_db``) runs
    pytest in-process with a database, again and again: pytester unloads the modules each
    inner run imported, ours too, so each run found the process not yet frozen and froze
    what its predecessors left (~5,000 objects a run, never collected: memory without
    bound). The first run freezes; the others find the process frozen already."""
    inner = tmp_path / "inner"
    shutil.copytree(project, inner)
    (inner / "test_x.py").write_text("def test_x():\n    pass\n")
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "test_outer.py").write_text(RUNS_PYTEST_IN_PROCESS)

    done = run_pytest(
        outer,
        "-p",
        "no:reynard_db",
        "-p",
        "pytester",
        "-s",
        "test_outer.py",
        INNER_PROJECT=str(inner),
        REYNARD_DB_RUNTIME_DIR=str(runtime),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    frozen = [int(count) for count in re.findall(r"AFTER-RUN=(\d+)", done.stdout)]
    assert len(frozen) == 4 and frozen[0] > 10_000, done.stdout
    assert frozen[-1] - frozen[0] < 1_000, frozen  # not one run's leftovers more a run
