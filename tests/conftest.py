"""Shared fixtures of the project's own test suite."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.reaper import stop_postmaster
from pytest_reynard_db.postgres.reuse import reusable_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EphemeralServer]:
    """One real ephemeral server for the tests that need a plain server."""
    with EphemeralServer.start() as server:
        yield server


@pytest.fixture
def stop_reused_server() -> Iterator[None]:
    """A ``--reynard-db-reuse`` run leaves the kept server running, by design; stop it after."""
    yield
    process = reusable_server()
    if process.base_dir is not None:
        stop_postmaster(process.base_dir / "data")
        shutil.rmtree(process.base_dir, ignore_errors=True)
