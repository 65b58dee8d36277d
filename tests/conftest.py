"""Shared fixtures of the project's own test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_reynard_db.postgres import EphemeralServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EphemeralServer]:
    """One real ephemeral server for the tests that need a plain server."""
    with EphemeralServer.start() as server:
        yield server
