"""The server kept running between runs (``--reynard-db-reuse``): one per binaries and user.

It lives in ``<runtime root>/reuse-<key>``, is never reaped, and keeps running after
the run: the next run attaches to it in a few milliseconds (``reusable_server``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..foundation.waits import file_lock
from ..guard import GUARD
from ..guard.reached import server_identity
from .binaries import Binaries
from .executor import HOST, SUPERUSER, EphemeralPostgres
from .reaper import (
    owner_alive,
    postmaster_pid,
    read_owner,
    read_owner_file,
    stop_postmaster,
    write_owner_file,
)


@dataclass(frozen=True)
class Kept:
    """The reuse server in ``base_dir``, as far as its directory tells (nothing is started)."""

    base_dir: Path
    port: int | None
    pid: int | None

    @property
    def url(self) -> str | None:
        return (
            None if self.port is None else f"postgresql://{SUPERUSER}@{HOST}:{self.port}/postgres"
        )

    def identity(self) -> str | None:
        """The running server's identity (the guard's ``server_identity``); None: not running.
        Asked with all the guard pins (no ``$PGHOSTADDR`` or service file picks the address)."""
        if self.pid is None or self.url is None:
            return None
        return server_identity(self.url)

    @property
    def running(self) -> bool:
        return self.identity() is not None

    def attach(self, process: EphemeralPostgres) -> EphemeralPostgres:
        """``process`` made the running kept server's (which it must be)."""
        process.base_dir, process.port = self.base_dir, self.port
        return process

    def runs(self) -> list[int]:
        """Pids of the runs using it now (their records beside it, owner alive)."""
        return [pid for pid in run_owners(self.base_dir).values() if pid is not None]


def kept_at(base_dir: Path) -> Kept:
    """The kept server of ``base_dir``: the port its owner record says, its postmaster."""
    record = read_owner(base_dir)
    port = record.get("port") if record else None
    return Kept(base_dir, int(port) if port else None, postmaster_pid(base_dir / "data"))


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
        kept = kept_at(base_dir)
        # One connection: the probe is the guard's ask (which its hooks let pass), and the
        # guard is told the identity it found (EphemeralServer then keeps it).
        identity = kept.identity()
        if identity is not None and kept.url is not None:
            GUARD.allow_server(kept.url, identity=identity)
            kept.attach(process)
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


def run_owners(base_dir: Path) -> dict[Path, int | None]:
    """Each run record beside the reuse server in ``base_dir`` (sorted), and the pid of
    its owner while that run lives (None: dead, or a record that cannot be read)."""
    owners: dict[Path, int | None] = {}
    for record in sorted((base_dir / "runs").glob("*.json")):
        owner = read_owner_file(record)
        owners[record] = int(owner["pid"]) if owner is not None and owner_alive(owner) else None
    return owners


def reuse_dir(process: EphemeralPostgres) -> Path:
    """The directory of the kept server for ``process``'s binaries and user (it may not exist)."""
    key = hashlib.sha256(
        f"{process.binaries.bindir}|{process.binaries.version}|{process.user.uid}".encode()
    ).hexdigest()[:12]
    return process.root / f"reuse-{key}"
