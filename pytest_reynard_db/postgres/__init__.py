"""PostgreSQL servers: binaries, ephemeral processes, and the servers we create databases on.

The names load on first use (PEP 562): a verb that needs no server
(``check --only single_head,mirror_sync``, ``copy``) then never imports psycopg
or testing.postgresql, and starts in the time its trees take to load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..foundation import lazy_name

if TYPE_CHECKING:
    from .binaries import Binaries, find_binaries
    from .executor import EphemeralPostgres
    from .server import EphemeralServer, ExistingServer, Server

_WHERE = {
    "Binaries": "binaries",
    "find_binaries": "binaries",
    "EphemeralPostgres": "executor",
    "EphemeralServer": "server",
    "ExistingServer": "server",
    "Server": "server",
}

__all__ = [
    "Binaries",
    "EphemeralPostgres",
    "EphemeralServer",
    "ExistingServer",
    "Server",
    "find_binaries",
]


def __getattr__(name: str) -> Any:
    return lazy_name(__name__, _WHERE, name, globals())
