"""Attacks on the readiness probe through the server's private socket directory
(``tuned._TunedPostgresql.is_server_available``), by hostile25e."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_reynard_db.foundation.errors import ServerError
from pytest_reynard_db.guard.reached import server_identity
from pytest_reynard_db.postgres.executor import EphemeralPostgres
from tests.reynard_trees import reynard_project, run_pytest
from tests.test_early_initdb import A_DATABASE, running_servers


def test_a_runtime_directory_reached_through_a_symlink_to_a_deep_place_starts(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$REYNARD_DB_RUNTIME_DIR`` short, but a symlink to a directory so deep that the
    socket's resolved path passes 107 bytes: PostgreSQL listens on the path as given, and
    the probe must ask there. It asked the resolved path, which no socket can have: every
    start waited out its boot timeout, then failed with the server's log."""
    deep = runtime.parent.joinpath(*["d" * 30] * 3)
    deep.mkdir(parents=True)
    for part in (deep, *deep.parents[:2]):
        part.chmod(0o711)  # the server's user (postgres, when root runs the suite) goes in
    (runtime.parent / "s").symlink_to(deep)
    monkeypatch.setenv("REYNARD_DB_RUNTIME_DIR", str(runtime.parent / "s" / "rt"))
    assert len(os.fsencode(os.path.realpath(runtime.parent / "s"))) > 107 - 38

    with EphemeralPostgres(boot_timeout=10) as process:
        assert server_identity(process.url) is not None
    assert not running_servers(deep / "rt"), os.listdir(deep / "rt")


def test_a_read_write_target_session_in_the_environment_is_no_hang(
    tmp_path: Path, runtime: Path
) -> None:
    """``$PGTARGETSESSIONATTRS=read-write`` (a user of a primary and its replicas): the
    guard's ask makes its session read-only, so libpq refused every answer. Each server
    start waited out its boot timeout, then failed with the server's log, which said
    nothing of the cause."""
    project = reynard_project(tmp_path / "project")
    (project / "test_one.py").write_text(A_DATABASE)

    done = run_pytest(
        project,
        "--reynard-db=ecs",
        "test_one.py",
        PGTARGETSESSIONATTRS="read-write",
        REYNARD_DB_RUNTIME_DIR=str(runtime),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout
    assert not running_servers(runtime), os.listdir(runtime)


def test_a_probe_refused_by_the_environment_says_why(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$PGCHANNELBINDING=require``: libpq refuses our server (trust, no SCRAM) whenever
    the probe asks. The start times out, as before, but its first line now says what the
    probe was told: it said "(timeout)" and the server's log, which showed a server up."""
    monkeypatch.setenv("REYNARD_DB_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("PGCHANNELBINDING", "require")

    with pytest.raises(ServerError) as raised:
        EphemeralPostgres(boot_timeout=2).start()

    first = str(raised.value).splitlines()[0]
    assert "readiness probe was told: " in first and "channel binding" in first, first
    assert not running_servers(runtime), os.listdir(runtime)
