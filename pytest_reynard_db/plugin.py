"""The pytest plugin: a thin front over the registry, the servers and the manager."""

from __future__ import annotations

import pytest

from . import pytest_alembic_compat


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    pytest_alembic_compat.install(session.config)
