"""pytest-reynard-db: several PostgreSQL databases, their Alembic trees, and tests on them.

Public API::

    from pytest_reynard_db import EphemeralServer, load_registry

    with EphemeralServer.start() as server:
        server.create_database("test_a")
        server.create_database("test_b", template="test_a")

The names load on first use (PEP 562), so that pytest, which imports this package
for the plugin in every session, pays for SQLAlchemy and psycopg only when a run
uses a database.
"""

from __future__ import annotations

from importlib import import_module

# typing is not imported at run time: ``reynard-migrate`` imports this package before it
# can take a Ctrl-C (``__main__``), and the less it runs then, the better
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .foundation.errors import (
        ConfigError,
        MigrationFailed,
        RevisionError,
        ReynardDBError,
        ServerError,
    )
    from .foundation.registry import Database, Registry, load_registry
    from .migration.manager import MigrationManager
    from .postgres import EphemeralServer, ExistingServer, Server, find_binaries
    from .provisioning.provision import Provisioner, TestDatabase

_WHERE = {
    "ConfigError": "foundation.errors",
    "MigrationFailed": "foundation.errors",
    "ReynardDBError": "foundation.errors",
    "RevisionError": "foundation.errors",
    "ServerError": "foundation.errors",
    "MigrationManager": "migration.manager",
    "EphemeralServer": "postgres",
    "ExistingServer": "postgres",
    "Server": "postgres",
    "find_binaries": "postgres",
    "Provisioner": "provisioning.provision",
    "TestDatabase": "provisioning.provision",
    "Database": "foundation.registry",
    "Registry": "foundation.registry",
    "load_registry": "foundation.registry",
}

__all__ = [
    "ConfigError",
    "Database",
    "EphemeralServer",
    "ExistingServer",
    "MigrationFailed",
    "MigrationManager",
    "Provisioner",
    "Registry",
    "RevisionError",
    "ReynardDBError",
    "Server",
    "ServerError",
    "TestDatabase",
    "find_binaries",
    "load_registry",
]


def __getattr__(name: str) -> Any:
    # not ``foundation.lazy_name``: a guarded child imports this package at its start
    # (``child_guard``), which must import nothing else of it
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)
