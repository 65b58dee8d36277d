"""Attacks on "a run that runs no test starts no server" (``options.NO_TESTS``), by
hostile25e: under xdist (``-n 2``), its controller started the run's server for its workers
at its configure, for ``--setup-plan`` and ``--fixtures`` alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reynard_trees import reynard_project, run_pytest
from tests.test_early_initdb import A_DATABASE, launches_logged


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: the Reynard registry, no database selected in its ini."""
    return reynard_project(tmp_path / "project")


@pytest.mark.parametrize("option", ["--setup-plan", "--fixtures"])
@pytest.mark.parametrize("checks", [False, True])
def test_a_distributed_run_that_runs_no_test_starts_no_server(
    project: Path, runtime: Path, checks: bool, option: str
) -> None:
    """``--setup-plan -n 2``: the plan of fixtures, shown by the workers, sets none up. The
    controller launched the run's server to hand its workers the URL (``pytest_configure_node``)
    and stopped it at the end; ``--fixtures -n 2`` too, which starts no worker."""
    (project / "test_one.py").write_text(A_DATABASE)
    launches = launches_logged(runtime.parent / "bin")
    options = ("--reynard-db-checks",) if checks else ()

    for cache in ("cold", "warm"):  # a cold run's first hook starts no server ahead
        done = run_pytest(
            project,
            "--reynard-db=ecs",
            *options,
            option,
            "-n",
            "2",
            "test_one.py",
            REYNARD_DB_RUNTIME_DIR=str(runtime),
            REYNARD_DB_PG_BIN=str(launches.parent),
        )

        assert done.returncode == 0, cache + done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
        assert launches.read_text() == "", cache
    assert not list(runtime.glob("server-*")), os.listdir(runtime)


def test_a_distributed_setup_only_still_sets_the_database_up(project: Path, runtime: Path) -> None:
    """``--setup-only -n 2`` sets the fixtures up: the run's server is started (once, by
    the controller, its workers handed its URL) and the database made."""
    (project / "test_one.py").write_text(A_DATABASE)
    launches = launches_logged(runtime.parent / "bin")

    done = run_pytest(
        project,
        "--reynard-db=ecs",
        "--setup-only",
        "-n",
        "2",
        "test_one.py",
        REYNARD_DB_RUNTIME_DIR=str(runtime),
        REYNARD_DB_PG_BIN=str(launches.parent),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert len(launches.read_text().splitlines()) == 1, launches.read_text()
    assert not list(runtime.glob("server-*")), os.listdir(runtime)
