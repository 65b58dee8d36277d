"""A PostgreSQL server as the harness runs it (``executor``), on testing.common's
``Database`` life cycle: imported when a server starts, not before.

testing.postgresql's ``Postgresql`` is not used: what it adds over ``Database`` is
overridden here, and importing it imports pg8000 (20-40 ms at every server start)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from testing.common.database import Database

from ..guard.reached import socket_identity
from .executor import HOST, SUPERUSER, TUNING
from .initdb_cache import _initdb
from .runas import RunAs

#: Between two readiness probes while the server boots. testing.common sleeps 0.1 s,
#: and a server that is up in 40 ms was then waited for 100 ms, at every start.
BOOT_POLL = 0.01


def _copy_private(source: str, target: str) -> str:
    """``source`` copied to ``target``, a new file its owner's alone (0600, as initdb
    made it) whatever the umask: ``shutil.copyfile`` gives a copy the umask's mode (0644
    under the usual 022, 0666 under 000). No ``copystat``; plain descriptors, and the
    bytes moved in the kernel (``sendfile``): a quarter of the copy's CPU was Python's
    file objects and buffers."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _copy_bytes(src, dst, os.fstat(src).st_size)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return target


def _copy_bytes(source: int, target: int, size: int) -> None:
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(target, source, offset, size - offset)
            if sent == 0:
                return
            offset += sent
    except OSError:
        if offset:
            raise
        # a system whose sendfile writes only to sockets (macOS): through a buffer
        while chunk := os.read(source, 1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view) :]


class _TunedPostgresql(Database):  # type: ignore[misc]
    """testing.common's server with our binaries, user, tuning, socket directory and
    readiness probe."""

    DEFAULT_SETTINGS: ClassVar[dict[str, Any]] = {
        "auto_start": 0,
        "copy_data_from": None,
        "port": None,
    }
    subdirectories = ("data", "tmp")
    child_process: subprocess.Popen[bytes] | None  # testing.common's, set by ``start``

    def __init__(
        self,
        *,
        user: RunAs,
        initdb: str,
        postgres: str,
        version: int,
        extra: Sequence[str] = (),
        abandon: threading.Event | None = None,
        **settings: Any,
    ) -> None:
        self.run_as = user
        self.abandon = abandon
        self.initdb = initdb
        self.version = version
        self.postgres = postgres
        self.extra = tuple(extra)
        #: The server's identity (``guard.reached``), once a probe found it up.
        self.identity: str | None = None
        #: What the last probe was told (libpq's error), said if the boot times out: a
        #: server up that refuses the probe (``$PGREQUIREAUTH``...) is no slow start.
        self.refusal = ""
        super().__init__(**settings)

    def get_data_directory(self) -> str:
        return os.path.join(self.base_dir, "data")

    def setup(self) -> None:
        """testing.common's setup (same error), the initdb cache's ~1000 files copied
        without their metadata: ``copy2``'s ``copystat`` per file was ~20% of the copy,
        and the server's user is given the tree next anyway (``initialize_database``)."""
        source = self.settings["copy_data_from"]
        if source:
            data_dir = self.get_data_directory()
            # Whole or not at all: a copy cut short (a signal to a kept server's starter)
            # under the data directory's name is taken for one by the next start.
            partial = f"{data_dir}.partial"
            try:
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(source, partial, copy_function=_copy_private)
                os.chmod(partial, 0o700)
                os.rename(partial, data_dir)
            except Exception as exc:
                raise RuntimeError(f"could not copytree {source} to {data_dir}: {exc!r}") from None
        for subdir in self.subdirectories:
            os.makedirs(os.path.join(self.base_dir, subdir), mode=0o700, exist_ok=True)
        try:
            self.initialize_database()
        except Exception:
            self.cleanup()
            raise

    def initialize_database(self) -> None:
        # testing.common made these as us; the server's user must own them.
        self.run_as.give(Path(self.base_dir))
        if not os.path.exists(os.path.join(self.base_dir, "data", "PG_VERSION")):
            _initdb(self.initdb, Path(self.base_dir) / "data", self.run_as, self.version)

    def get_server_commandline(self) -> list[str]:
        argv = [
            self.postgres,
            "-p",
            str(self.settings["port"]),
            "-D",
            os.path.join(self.base_dir, "data"),
            "-k",
            os.path.join(self.base_dir, "tmp"),
            "-h",
            HOST,
            "-F",
        ]
        for setting in (*TUNING, *self.extra):
            argv += ["-c", setting]
        return argv

    def start(self) -> None:
        """testing.common's start (same errors, same log file), the postmaster launched as
        the server's user in a session of its own (``RunAs.popen_args``)."""
        if self.child_process:
            return
        self.prestart()
        with open(os.path.join(self.base_dir, f"{self.name}.log"), "w") as log:
            try:
                self.child_process = subprocess.Popen(
                    self.get_server_commandline(),
                    stdout=log,
                    stderr=log,
                    **self.run_as.popen_args(),
                )
            except Exception as exc:
                raise RuntimeError(f"failed to launch {self.name}: {exc!r}") from None
        try:
            self.wait_booting()
            self.poststart()
        except Exception:
            self.stop()
            raise

    def is_server_available(self) -> bool:
        """Up when it says who it is: the probe is the guard's own pinned question
        (``socket_identity``, which its hooks let pass), whose answer the guard is then
        given (``EphemeralPostgres.start``): one connection, not a probe and an ask.

        Asked through the server's private socket directory (``-k``), not its TCP port:
        somebody else's server may have taken the port between reserve and bind, and
        answer there while ours, not yet failed, still runs. Only ours answers in its
        directory, and PostgreSQL makes that socket only once its TCP port is bound, so
        the answer also says the port is ours."""
        sockets = os.path.join(self.base_dir, "tmp")
        url = f"postgresql://{SUPERUSER}@/postgres"
        try:
            self.identity = socket_identity(sockets, int(self.settings["port"]), url)
        except OSError as exc:
            self.identity, self.refusal = None, " ".join(str(exc).split())
        return self.identity is not None

    def poststart(self) -> None:
        """testing.postgresql creates a ``test`` database here; we need none."""

    def wait_booting(self) -> None:
        """testing.common's wait (same errors), probing every ``BOOT_POLL`` s, not 0.1 s."""
        deadline = time.monotonic() + self.settings.get("boot_timeout", self.DEFAULT_BOOT_TIMEOUT)
        assert self.child_process is not None  # started
        while True:
            # Ours exited first: whatever answers on the port then is not ours.
            if self.child_process.poll() is not None:
                raise RuntimeError(f"*** failed to launch {self.name} ***\n{self.read_bootlog()}")
            if self.is_server_available():
                return
            if self.abandon is not None and self.abandon.is_set():
                raise RuntimeError(f"*** {self.name} abandoned while booting ***")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"*** failed to launch {self.name} (timeout; its readiness probe was told: "
                    f"{self.refusal or 'nothing'}) ***\n{self.read_bootlog()}"
                )
            time.sleep(BOOT_POLL)

    def terminate(self, *args: Any) -> None:
        """An immediate shutdown (SIGQUIT), waited for as the process exits: testing.common
        polls every 0.1 s, a tenth of a second lost at every stop. Not a fast one (SIGINT,
        testing.postgresql's): its shutdown checkpoint writes every page the run made dirty
        (about half of a stop after migrations), into a directory removed next."""
        process = self.child_process
        if process is None or self._owner_pid != os.getpid():
            return
        try:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout=self.DEFAULT_KILL_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                raise RuntimeError(
                    f"*** failed to shutdown postgres (timeout) ***\n{self.read_bootlog()}"
                ) from None
        except OSError:
            pass
        self.child_process = None
