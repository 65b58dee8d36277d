"""Starting and stopping one ephemeral, test-tuned PostgreSQL server.

Built on testing.common (testing.postgresql's base class): we keep its life cycle
(set-up, stop, clean-up) and change what a test server needs: an unprivileged user
when we are root, a cached ``initdb``, durability switched off, a race-free port, a
boot wait and a stop without 0.1 s sleeps, and an owner record so that a server whose
owner was killed is reaped by the next run.

And the server kept running between runs (``--reynard-db-reuse``), one per binaries
and user: it lives in ``<runtime root>/reuse-<key>``, is never reaped, and keeps running after
the run: the next run attaches to it in a few milliseconds (``reusable_server``).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import shutil
import socket
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..foundation.errors import ServerError
from ..foundation.filesystem import FileLock, LockBusy, file_lock
from ..guard import GUARD, HARNESS_CLUSTER_NAME
from ..guard.reached import server_identity
from .binaries import Binaries, CloneMethod, planned, settings_for
from .initdb_cache import SUPERUSER as SUPERUSER
from .initdb_cache import _tail, cached_initdb, server_binaries
from .reaper import (
    owner_alive,
    owner_record,
    postmaster_pid,
    read_owner,
    read_owner_file,
    reap_orphans,
    release_shared_memory,
    stop_postmaster,
    write_owner_file,
)
from .runas import run_as, runtime_root

if TYPE_CHECKING:  # testing.common loads when a server starts
    from .tuned import _TunedPostgresql

#: The processes of kept servers this process started, never waited for (``stop``).
_KEPT_RUNNING: list[object] = []

#: The server's log file in its directory, as testing.common names it (after the class).
LOG_NAME = "_TunedPostgresql.log"

HOST = "127.0.0.1"
BOOT_TIMEOUT = 30.0
#: A start's launches at most: its port taken by someone outside between reserve and bind,
#: the server is launched again on another, twice.
LAUNCHES = 3
# Durability buys nothing for a database that dies with the test run.
TUNING = (
    "fsync=off",
    "full_page_writes=off",
    "synchronous_commit=off",
    "logging_collector=off",
    "max_connections=200",
    "shared_buffers=64MB",
    "max_wal_size=1GB",
    "checkpoint_timeout=30min",
    # Dynamic shared memory as files in the data directory (pg_dynshmem), not in /dev/shm:
    # a postmaster killed by SIGKILL (OOM, a stop that had to escalate) removes neither, and
    # /dev/shm kept ~1 MB of memory per such server until the reboot; the directory goes.
    "dynamic_shared_memory_type=mmap",
    f"cluster_name={HARNESS_CLUSTER_NAME}",  # how the guard's net knows a server of ours
)


class EphemeralPostgres:
    """One throw-away server: ``start()``, ``url``, ``stop()``; also a context manager."""

    def __init__(
        self,
        *,
        binaries: Binaries | None = None,
        boot_timeout: float = BOOT_TIMEOUT,
        base_dir: Path | None = None,
        persistent: bool = False,
        settings: Sequence[str] = (),
        abandon: threading.Event | None = None,
    ) -> None:
        """``settings``: extra ``name=value`` server settings (``-c``), after the tuning.
        ``abandon``: once set, a start still waiting for the server to boot gives up and
        stops it (a start begun ahead for a run that ended needing none).

        Where the runtime directory has reflinks, PostgreSQL >= 18 binaries are preferred
        (unless ``binaries`` are given) and clone templates by reflink (``binaries.planned``)."""
        self.user = run_as()
        self.root = runtime_root(self.user)
        self.binaries = server_binaries(self.user, self.root, binaries)
        self.boot_timeout = boot_timeout
        self.abandon = abandon
        self.persistent = persistent
        self.settings = (*settings_for(self.binaries.version, self.root), *settings)
        self.base_dir: Path | None = None
        self.port: int | None = None
        #: Where ``start`` puts the server (default: a new directory under the runtime root).
        self.requested_dir = base_dir
        self._port_lock: FileLock | None = None
        self._pg: _TunedPostgresql | None = None
        #: Who the server said it is (``guard.reached``) when it was started or attached to.
        self.identity: str | None = None

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> EphemeralPostgres:
        reap_orphans(self.root)
        template = self._cached_initdb()
        self.base_dir = self.requested_dir or Path(
            tempfile.mkdtemp(prefix="server-", dir=self.root)
        )
        self.base_dir.mkdir(mode=0o700, exist_ok=True)
        owner_record(self.base_dir, persistent=self.persistent)
        atexit.register(self.stop)
        for attempt in range(LAUNCHES):
            self.port, self._port_lock = reserve_port(self.root)
            try:
                from .tuned import _TunedPostgresql

                self._pg = _TunedPostgresql(
                    user=self.user,
                    extra=self.settings,
                    base_dir=str(self.base_dir),
                    initdb=str(self.binaries.initdb),
                    postgres=str(self.binaries.postgres),
                    version=self.binaries.version,
                    port=self.port,
                    copy_data_from=None if (self.base_dir / "data").exists() else str(template),
                    boot_timeout=self.boot_timeout,
                    abandon=self.abandon,
                    auto_start=0,
                )
                self._pg.setup()
                self._pg.start()
                # Ours: all of it is throw-away. Its identity is what the probe that found
                # it up asked (the guard's own question): not asked again.
                self.identity = self._pg.identity
                GUARD.allow_server(self.url, identity=self.identity)
                owner_record(self.base_dir, persistent=self.persistent, port=self.port)
                return self
            except RuntimeError as exc:
                self._release_port()
                log = self._log_tail()
                if "could not bind" in log and attempt < LAUNCHES - 1:
                    continue  # someone outside took our port between reserve and bind
                self.stop()
                raise ServerError(
                    f"PostgreSQL {self.binaries.version} ({self.binaries.bindir}) did not start: "
                    f"{str(exc).splitlines()[0]}\n{log}"
                ) from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server and remove its directory (a persistent one is left running)."""
        if self._pg is not None:
            pg, self._pg = self._pg, None
            if self.persistent:
                # Detached: testing.common would stop it when collected. Its Popen is kept
                # until the interpreter exits: collected while the server runs, it warns
                # (ResourceWarning "still running"; an error where warnings are errors).
                _KEPT_RUNNING.append(pg.child_process)
                pg.child_process = None
            else:
                with contextlib.suppress(Exception):
                    pg.terminate()
        self._release_port()
        if self.base_dir is not None and not self.persistent:
            release_shared_memory(self.base_dir / "data")
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
        atexit.unregister(self.stop)

    def __enter__(self) -> EphemeralPostgres:
        return self.start() if self._pg is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- facts ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerError("the server is not running")
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/postgres"

    @property
    def clone_method(self) -> CloneMethod:
        """How this server clones templates (it need not be started)."""
        return planned(self.binaries.version, self.root)

    @property
    def pid(self) -> int | None:
        return self._pg.server_pid if self._pg else None

    # -- helpers --------------------------------------------------------------------------
    def _cached_initdb(self) -> Path:
        """The initdb cache of these binaries and user (made once, then copied)."""
        return cached_initdb(self.binaries, self.user, self.root)

    def _release_port(self) -> None:
        if self._port_lock is not None:
            # Its file too: each start reads the folder (``reap_caches``), and one file per
            # port ever used was thousands after a day of runs.
            self._port_lock.release(remove=True)
            self._port_lock = None

    def _log_tail(self) -> str:
        if self.base_dir is None:
            return ""
        log = self.base_dir / LOG_NAME
        try:
            return _tail(log.read_text(errors="replace"))
        except OSError:
            return ""


def reserve_port(root: Path) -> tuple[int, FileLock]:
    """A free TCP port on loopback, held by a lock file so that no other run picks it."""
    locks = root / "ports"
    locks.mkdir(mode=0o700, exist_ok=True)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        lock = FileLock(str(locks / f"{port}.lock"))
        try:
            lock.acquire(timeout=0)
        except LockBusy:
            continue
        return port, lock
    raise ServerError(f"no free port found (port locks in {locks})")


# -- reuse -------------------------------------------------------------------------------


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
            kept.attach(process).identity = identity
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
