"""Many pytest runs, on different "machines", sharing one server (``--reynard-db-url``).

Each run is a pytest process with a runtime directory of its own
(``$REYNARD_DB_RUNTIME_DIR``: its own lock files, as on another machine), all
against one server this test starts with ``log_statement=ddl``, so that every
template build (a ``CREATE DATABASE ..._building`` renamed into place) can be
counted in its log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_fork import run_pytest_argv
from reynard_trees import clean_env, databases, reynard_project, server_tmp, wait_for

from pytest_reynard_db.postgres import EphemeralServer

CONFTEST = """
import os, pathlib, time
import pytest

@pytest.fixture(scope="session", autouse=True)
def _start_together():
    # Every run asks for its templates at the same moment: the builds would race.
    barrier = os.environ.get("BARRIER_DIR")
    if barrier:
        pathlib.Path(barrier, str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(os.listdir(barrier)) < int(os.environ["BARRIER_N"]):
            assert time.monotonic() < deadline, "the other runs never came"
            time.sleep(0.02)
"""

TESTS = """
import os, pathlib, time
import pytest

def test_main(reynard_db_fresh):
    assert reynard_db_fresh.name.startswith("test_main_")

@pytest.mark.reynard_db("ecs")
def test_ecs(reynard_db):
    assert reynard_db.name.startswith("test_ecs_")

def test_hold(reynard_db_fresh):
    # Says which database it has, then waits until told to end (or is killed).
    ready = pathlib.Path(os.environ["HOLD_READY"])
    ready.with_suffix(".tmp").write_text(reynard_db_fresh.name)
    os.replace(ready.with_suffix(".tmp"), ready)  # whole, when the test reads it
    release = pathlib.Path(os.environ["HOLD_RELEASE"])
    deadline = time.monotonic() + 120
    while not release.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
"""


@pytest.fixture
def shared() -> Iterator[EphemeralServer]:
    """The shared server: a CI service container, as far as the runs can tell."""
    with EphemeralServer.start(settings=["log_statement=ddl"]) as server:
        yield server


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = reynard_project(tmp_path / "project")
    (root / "conftest.py").write_text(CONFTEST)
    (root / "test_shared.py").write_text(TESTS)
    return root


@pytest.fixture
def machines() -> Iterator[Path]:
    """Where each run's runtime directory goes: below /tmp, where the server's user
    (as root: ``postgres``) could reach it, as ``$REYNARD_DB_RUNTIME_DIR`` requires."""
    path = server_tmp("reynard-machines-")
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def machine(machines: Path, name: str) -> Path:
    """A runtime directory of its own: its lock files are no other run's."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=machines))
    path.chmod(0o711)
    return path


def start_run(
    project: Path, server: EphemeralServer, runtime: Path, *args: str, **env: str
) -> subprocess.Popen[str]:
    url = server.url.render_as_string(hide_password=False)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--reynard-db-url={url}",
            "--reynard-db=main,ecs",
            *args,
        ],
        cwd=project,
        env=clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(run: subprocess.Popen[str], *, passed: int) -> str:
    out, _ = run.communicate(timeout=180)
    assert run.returncode == 0, out
    assert f"{passed} passed" in out, out
    return out


def builds(server: EphemeralServer) -> dict[str, int]:
    """How many times each template was built: renames of a ``_building`` into place."""
    assert server.process.base_dir is not None
    log = (server.process.base_dir / "_TunedPostgresql.log").read_text(errors="replace")
    counts: dict[str, int] = {}
    for template in re.findall(r'_building" RENAME TO "(test_tpl_[a-z_]+?)_[0-9a-f]{12}"', log):
        counts[template] = counts.get(template, 0) + 1
    return counts


def test_concurrent_runs_build_each_template_once_and_leave_only_templates(
    shared: EphemeralServer, project: Path, tmp_path: Path, machines: Path
) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    runs = [
        start_run(
            project,
            shared,
            machine(machines, f"m{i}"),
            "-k",
            "not hold",
            BARRIER_DIR=str(barrier),
            BARRIER_N="3",
        )
        for i in range(3)
    ]
    for run in runs:
        finish(run, passed=2)
    assert builds(shared) == {"test_tpl_main": 1, "test_tpl_ecs": 1}, "built once in total"
    left = databases(shared, "test%")
    assert all(name.startswith("test_tpl_") for name in left), left
    assert len(left) == 2, left


def test_a_killed_run_is_cleaned_by_the_next_and_no_one_elses_databases_are_touched(
    shared: EphemeralServer, project: Path, tmp_path: Path, machines: Path
) -> None:
    shared.create_database("test_someone_else")  # a bystander of the same naming prefix
    first = start_run(project, shared, machine(machines, "first"), "-k", "not hold")
    finish(first, passed=2)  # both templates exist now
    killed = start_run(
        project,
        shared,
        machine(machines, "killed"),
        "-k",
        "hold",
        HOLD_READY=str(tmp_path / "killed.ready"),
        HOLD_RELEASE=str(tmp_path / "never"),
    )
    alive = start_run(
        project,
        shared,
        machine(machines, "alive"),
        "-k",
        "hold",
        HOLD_READY=str(tmp_path / "alive.ready"),
        HOLD_RELEASE=str(tmp_path / "alive.release"),
    )
    killed_db = wait_for(tmp_path / "killed.ready", killed)
    alive_db = wait_for(tmp_path / "alive.ready", alive)
    killed_run = killed_db.split("_")[2]
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    left_by_killed = {name for name in databases(shared, "test%") if f"_{killed_run}_" in name}
    assert killed_db in left_by_killed

    # The next run: the killed run's clones go, the live run's and the bystander stay.
    # With a template max age of 0 it also prunes every template no run holds: ecs's
    # (then rebuilt by it), never main's (the live run holds it).
    finish(
        start_run(
            project,
            shared,
            machine(machines, "next"),
            "-k",
            "not hold",
            REYNARD_DB_TEMPLATE_MAX_AGE="0",
        ),
        passed=2,
    )
    now = databases(shared, "test%")
    assert not (left_by_killed & now), now
    assert alive_db in now and "test_someone_else" in now
    assert builds(shared) == {"test_tpl_main": 1, "test_tpl_ecs": 2}, builds(shared)

    (tmp_path / "alive.release").touch()
    finish(alive, passed=1)
    left = databases(shared, "test%")
    assert {n for n in left if not n.startswith("test_tpl_")} == {"test_someone_else"}, left


# -- the shared server as CI uses it -------------------------------------------------------
CI_TESTS = """
def test_session(reynard_db):
    assert reynard_db.name.startswith("test_main_")

def test_fresh_one(reynard_db_fresh):
    pass

def test_fresh_two(reynard_db_fresh):
    pass

def test_an_older_revision(reynard_db_factory):
    assert reynard_db_factory("main", "3a1400000002").head == ("3a1400000002",)

def test_by_hand(reynard_db_server):
    reynard_db_server.create_database("test_made_by_hand")
"""


def complaints(text: str) -> list[str]:
    """The lines of a run's output that say something went wrong."""
    return [line for line in text.splitlines() if re.search(r"(?i)error|fail|warn|refus", line)]


@pytest.mark.parametrize("how", ["option", "environment", "option -n 2", "environment -n 2"])
def test_a_clean_run_on_a_shared_server_says_nothing_wrong(
    shared: EphemeralServer, tmp_path: Path, machines: Path, how: str
) -> None:
    """As in the README's CI recipe: every run on an existing server ended with a false
    ``clean-up failed: could not drop ... this run did not create it`` (exit 0)."""
    root = reynard_project(tmp_path / "project")
    (root / "test_ci.py").write_text(CI_TESTS)
    url = shared.url.render_as_string(hide_password=False)
    args = ["-p", "no:cacheprovider", "--reynard-db=main", "test_ci.py"]
    env = {"REYNARD_DB_RUNTIME_DIR": str(machine(machines, "ci"))}
    if how.startswith("option"):
        args.append(f"--reynard-db-url={url}")
    else:
        env["REYNARD_DB_URL"] = url
    if how.endswith("-n 2"):
        args += ["-n", "2"]
    result = run_pytest_argv([sys.executable, "-m", "pytest", *args], root, clean_env(**env))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout, result.stdout
    assert result.stderr == "", result.stderr
    assert complaints(result.stdout) == [], result.stdout
    assert {n for n in databases(shared, "test%") if not n.startswith("test_tpl_")} == set()
