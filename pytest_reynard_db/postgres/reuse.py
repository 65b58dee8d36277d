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
from .reaper import postmaster_pid, read_owner, stop_postmaster, write_owner_file
from .waits import file_lock


def reusable_server(
    binaries: Binaries | None = None, *, run_id: str | None = None
) -> EphemeralPostgres:
    """The server kept between runs (``--reynard-db-reuse``): attach to it, or start it.

    One per binaries and user, in ``<runtime root>/reuse-<key>``; it is never reaped
    and keeps running after the run (the next run attaches in a few milliseconds).
    ``run_id``: the run's record (``runs/<run id>.json``) is written under the same lock,
    so ``server stop`` never stops it between the attach and the record.
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
        else:
            stop_postmaster(base_dir / "data")
            process.requested_dir = base_dir
            process.start()
        if run_id is not None:
            assert process.base_dir is not None
            (process.base_dir / "runs").mkdir(exist_ok=True)
            write_owner_file(run_record(process.base_dir, run_id))
        return process


def run_record(base_dir: Path, run_id: str) -> Path:
    """The record a run using the reuse server in ``base_dir`` leaves beside it."""
    return base_dir / "runs" / f"{run_id}.json"


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
