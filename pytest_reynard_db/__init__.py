"""pytest-reynard-db: several PostgreSQL databases, their Alembic trees, and tests on them.

Public API::

    from pytest_reynard_db import EphemeralServer, load_registry

    with EphemeralServer.start() as server:
        server.create_database("test_a")
        server.create_database("test_b", template="test_a")
"""

from .errors import ConfigError, MigrationFailed, RevisionError, ReynardDBError, ServerError
from .postgres import EphemeralServer, ExistingServer, Server, find_binaries
from .registry import Database, Registry, load_registry

__all__ = [
    "ConfigError",
    "Database",
    "EphemeralServer",
    "ExistingServer",
    "MigrationFailed",
    "Registry",
    "RevisionError",
    "ReynardDBError",
    "Server",
    "ServerError",
    "find_binaries",
    "load_registry",
]
