"""Nothing is left in the system temp directory.

313 ``reynard-db-silent-*.ini`` files (copies of users' inis, which may hold URLs) were
found in /tmp after one day of runs. What a run needs on disk lives under its runtime
directory and goes with it; a run killed with SIGKILL leaves its part there, and the
next run removes it. Each child process here has a temp directory of its own
(``$TMPDIR``), counted before and after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fork import run_cli, run_pytest_argv
from reynard_trees import clean_env, reynard_project, wait_for

from pytest_reynard_db.postgres.runas import SCRATCH, run_as, runtime_root

HOLD = """
import os, pathlib, time

def test_fresh(reynard_db_fresh, reynard_db_connection):
    pass

def test_hold(reynard_db_fresh):
    pathlib.Path(os.environ["HOLD_READY"]).touch()
    time.sleep(120)
"""


@pytest.fixture
def tmpdir_of_children(tmp_path: Path) -> Path:
    path = tmp_path / "tmp"
    path.mkdir()
    return path


def left_in(path: Path) -> list[str]:
    """What is in ``path``, but pytest's own ``pytest-of-<user>`` (xdist makes it for its
    workers' ``--basetemp``; pytest keeps the last three by design)."""
    return sorted(name for name in os.listdir(path) if not name.startswith("pytest-of-"))


def pytest_run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``pytest --reynard-db=main ARGS`` in ``project``, in a user's shell with ``env``."""
    return run_pytest_argv(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reynard-db=main", *args],
        project,
        clean_env(**env),
    )


def test_cli_and_pytest_runs_leave_nothing_in_the_temp_directory(
    tmp_path: Path, tmpdir_of_children: Path
) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_hold.py").write_text(HOLD)
    tmp = tmpdir_of_children
    for argv in (
        ("check", "main", "--only", "single_head,upgrade,stairway"),
        ("create", "main", "-m", "nothing new"),
        ("lint", "main", "--only", "lint"),
    ):
        code, out, err = run_cli(project, *argv, env=clean_env(TMPDIR=str(tmp)))
        assert code in (0, 1), (argv, out, err)
        assert left_in(tmp) == [], argv

    for args in (("-k", "fresh"), ("-k", "fresh", "-n", "2")):
        done = pytest_run(project, *args, TMPDIR=str(tmp))
        assert done.returncode == 0, done.stdout + done.stderr
        assert left_in(tmp) == [], args


def test_a_runs_template_build_locks_go_with_it(tmp_path: Path, runtime: Path) -> None:
    """Each template build takes a lock file named by its server's port and template; its
    file was left after the build: 582 in a day's runtime directory, each looked at by
    every server's start (the reaper's stale-lock sweep). The builder now removes it as it
    lets go (a waiter, holding the removed file, takes the path's new one)."""
    project = reynard_project(tmp_path / "project")
    (project / "test_hold.py").write_text(HOLD)
    for args in (("-k", "fresh"), ("-k", "fresh", "-n", "2")):
        done = pytest_run(project, *args, REYNARD_DB_RUNTIME_DIR=str(runtime))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and "clean-up failed" not in done.stderr, done.stderr
        assert sorted(os.listdir(runtime / "locks")) == [], args


def test_a_run_killed_with_sigkill_leaves_what_the_next_run_removes(
    tmp_path: Path, tmpdir_of_children: Path
) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_hold.py").write_text(HOLD)
    tmp = tmpdir_of_children
    ready = tmp_path / "ready"
    victim = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reynard-db=main"],
        cwd=project,
        env=clean_env(TMPDIR=str(tmp), HOLD_READY=str(ready)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(ready, victim)
    scratch = runtime_root(run_as()) / SCRATCH
    left_by_victim = [p for p in scratch.iterdir() if p.name.startswith(f"{victim.pid}-")]
    assert left_by_victim, "the run keeps its files under its runtime directory"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)

    done = pytest_run(project, "-k", "fresh", TMPDIR=str(tmp))
    assert done.returncode == 0, done.stdout + done.stderr
    assert left_in(tmp) == []
    assert not any(path.exists() for path in left_by_victim), "the next run removes them"


def test_a_template_that_fails_to_render_is_one_line_and_leaves_no_file(
    tmp_path: Path, tmpdir_of_children: Path
) -> None:
    """Alembic writes a traceback file to the temp directory and names it; never removed."""
    project = reynard_project(tmp_path / "project")
    mako = project / "alembic/main/script.py.mako"
    mako.write_text(mako.read_text() + "\n${no_such_name.attribute}\n")
    env = clean_env(TMPDIR=str(tmpdir_of_children))
    code, out, err = run_cli(project, "create", "main", "-m", "x", "--empty", env=env)
    assert code == 2, (out, err)
    line = mako.read_text().count("\n")
    assert err == (
        f"reynard-migrate: error: database 'main': alembic/main/script.py.mako, line {line}: "
        "template rendering "
        "failed: AttributeError: 'Undefined' object has no attribute 'attribute'\n"
    )
    assert left_in(tmpdir_of_children) == []
    assert not list((project / "alembic/main/versions").glob("*_x.py"))
