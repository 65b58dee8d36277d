"""The server kept running between runs (``--reynard-db-reuse``): one per binaries and user.

It lives in ``<runtime root>/reuse-<key>``, is never reaped, and keeps running after
the run: the next run attaches to it in a few milliseconds (``reusable_server``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg

from ..guard import GUARD
from .binaries import Binaries
from .executor import HOST, SUPERUSER, EphemeralPostgres
from .reaper import postmaster_pid, read_owner, stop_postmaster
from .waits import file_lock


def reusable_server(binaries: Binaries | None = None) -> EphemeralPostgres:
    """The server kept between runs (``--reynard-db-reuse``): attach to it, or start it.

    One per binaries and user, in ``<runtime root>/reuse-<key>``; it is never reaped
    and keeps running after the run (the next run attaches in a few milliseconds).
    """
    process = EphemeralPostgres(binaries=binaries, persistent=True)
    base_dir = reuse_dir(process)
    with file_lock(f"{base_dir}.lock", f"the reuse server {base_dir}"):
        record = read_owner(base_dir)
        port = record.get("port") if record else None
        if port:
            GUARD.allow_server(f"postgresql://{SUPERUSER}@{HOST}:{port}/postgres")
        if port and postmaster_pid(base_dir / "data") and answers(int(port)):
            process.base_dir, process.port = base_dir, int(port)
            return process
        stop_postmaster(base_dir / "data")
        process.requested_dir = base_dir
        return process.start()


def reuse_dir(process: EphemeralPostgres) -> Path:
    """The directory of the kept server for ``process``'s binaries and user (it may not exist)."""
    key = hashlib.sha256(
        f"{process.binaries.bindir}|{process.binaries.version}|{process.user.uid}".encode()
    ).hexdigest()[:12]
    return process.root / f"reuse-{key}"


def answers(port: int) -> bool:
    """Whether a server of ours answers on ``port``."""
    try:
        with psycopg.connect(
            host=HOST, port=port, user=SUPERUSER, dbname="postgres", connect_timeout=2
        ):
            return True
    except psycopg.OperationalError:
        return False
