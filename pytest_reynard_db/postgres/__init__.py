"""PostgreSQL servers: binaries, ephemeral processes, and the database janitor."""

from .binaries import Binaries, find_binaries
from .executor import EphemeralPostgres
from .janitor import EphemeralServer, ExistingServer, Server

__all__ = [
    "Binaries",
    "EphemeralPostgres",
    "EphemeralServer",
    "ExistingServer",
    "Server",
    "find_binaries",
]
