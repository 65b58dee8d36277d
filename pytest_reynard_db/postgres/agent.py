"""A run's server work, done by a child forked as pytest starts: the run's agent.

What a run cost over a bare pytest was mostly not its tests' work. A warm run
(``--reynard-db-reuse``) imported psycopg (~45 ms, and more at the interpreter's exit),
made three connections to the kept server (the guard's ask, the admin one, the run's
presence), pruned, then cloned and dropped; a run without reuse started its server
(~250 ms: the initdb cache copied, the postmaster's boot) when its first test asked.
The agent, forked as the plugin registers (``plugin.early``), attaches to the kept
server, or starts the run's own, on the other core while pytest loads its plugins,
conftests and tests; the test process asks it for clones and drops over a pipe
(``agent_server``), and imports psycopg only to migrate a template or if a test connects.

The agent owns the run's server: the run's record on the kept server
(``executor.run_record``) and the run's own server's directory name its pid, and its
presence session holds the templates the run uses. It lives as long as the test
process: when its pipe closes, whatever ended the test process, it drops the run's
databases (on the kept server) or stops and removes the run's server, and goes. It
ignores Ctrl-C (the test process, told too, ends it) and takes SIGTERM and SIGHUP as
that end.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..foundation import errors
from ..foundation.errors import ReynardDBError, ServerError
from ..foundation.forking import LINUX, ForkedProcess, flush_standard_streams, threads

# Light to import: the test process forks it as the plugin registers. What the agent
# itself needs (psycopg, the servers) it imports once forked, on its own core.
if TYPE_CHECKING:
    from .server import EphemeralServer
    from .shared import RunPresence

#: How long the test process waits for the agent to end once told, then once SIGTERMed (s).
END_TIMEOUT = 10.0


class AgentEnded(ServerError):
    """The run's agent has ended: it answers no more requests."""


@dataclass(frozen=True)
class Attached:
    """What the agent found when it started or attached to the run's server."""

    url: str
    identity: str
    version: int
    base_dir: str


class Agent:
    """The test process's end of a forked agent: one request at a time, over two pipes."""

    def __init__(self, run_id: str, *, reuse: bool, worker: str = "main") -> None:
        """``reuse``: attach to the kept server (``--reynard-db-reuse``); else start the
        run's own."""
        self.run_id = run_id
        self.reuse = reuse
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        flush_standard_streams()  # not written twice, by both processes
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; the tests read what it does
            # As CPython advises for a fork without exec: the collector leaves what pytest
            # made alone, and the pages this child shares with pytest stay shared.
            gc.freeze()
            code = 2
            try:
                os.close(requests_write)
                os.close(replies_read)
                # Closed here, not left to the collector: a pipe collected open is a
                # ResourceWarning, raised in a run whose filterwarnings say "error".
                with (
                    os.fdopen(requests_read, encoding="utf-8") as requests,
                    _closed_quietly(os.fdopen(replies_write, "w", encoding="utf-8")) as replies,
                ):
                    code = _serve(requests, replies, run_id, worker, reuse)
            except SystemExit as exc:  # ended by a signal (_end_by_signal): said so, not 2
                code = exc.code if isinstance(exc.code, int) else code
            finally:
                flush_standard_streams()
                os._exit(code)  # pytest's clean-up, atexit and buffers are the parent's
        os.close(requests_read)
        os.close(replies_write)
        self.process = ForkedProcess(pid, os.fdopen(requests_write, "w", encoding="utf-8"))
        self._replies = os.fdopen(replies_read, encoding="utf-8")
        self._lock = threading.Lock()
        self._attached: Attached | None = None
        self._ended = False  # no more requests
        self._waited = False  # its end waited for
        self._unread = 0  # replies of requests told, not asked
        os.register_at_fork(after_in_child=self._let_go)

    def _let_go(self) -> None:
        """In a child a test forks (``os.fork``, a multiprocessing pool): the agent is the
        test process's. The child's copy of the pipe would keep the agent from seeing the
        run end until the child ends too; and the child must not end the agent."""
        self._ended = True
        for stream in (self.process.stdin, self._replies):
            with suppress(OSError, ValueError):  # closed: the agent had ended
                if stream is not None:
                    _to_devnull(stream.fileno())

    def attached(self) -> Attached:
        """The run's server, once the agent has started or attached to it (its error
        raised here, each time)."""
        if self._attached is None:
            found = self.ask("attached")
            self._attached = Attached(**found)
        return self._attached

    def ask(self, op: str, **arguments: Any) -> Any:
        """Send one request and wait for its answer; the agent's error is raised here (or
        that of a request told before it, first)."""
        with self._lock:
            lines = self._send(op, arguments, read=self._unread + 1)
            self._unread = 0
        replies = [json.loads(line) for line in lines]
        for reply in replies:
            if "error" in reply:
                kind = getattr(errors, reply.get("kind", ""), ServerError)
                if not (isinstance(kind, type) and issubclass(kind, ReynardDBError)):
                    kind = ServerError
                raise kind(reply["error"])
        return replies[-1].get("value")

    def tell(self, op: str, **arguments: Any) -> None:
        """Send one request without waiting for its answer: an error it meets is raised by
        the next ``ask`` (a round trip saved where the next request would wait anyway)."""
        with self._lock:
            self._send(op, arguments, read=0)
            self._unread += 1

    def _send(self, op: str, arguments: dict[str, Any], *, read: int) -> list[str]:
        """Write a request, then read ``read`` replies (under the lock)."""
        if self._ended:
            raise AgentEnded(f"the run's agent (pid {self.process.pid}) has ended")
        lines: list[str] = []
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
            self.process.stdin.flush()
            while len(lines) < read and (line := self._replies.readline()):
                lines.append(line)
        except OSError:
            pass
        if len(lines) < read:
            self._ended = True
            code = self.process.wait(END_TIMEOUT)
            raise AgentEnded(
                f"the run's agent (pid {self.process.pid}) ended unexpectedly (exit {code})"
            )
        return lines

    def let_end(self) -> None:
        """Tell the agent the run needs its server no more, without waiting: it drops what
        the run left (or stops and removes the run's own server) while pytest reports;
        ``end`` then waits. Later requests raise ``AgentEnded``."""
        with self._lock:
            self._ended = True
        with suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.close()  # end of requests: the agent cleans up and goes

    def end(self) -> None:
        """Tell the agent the run is over and wait for it: it drops what the run left,
        ends its presence and removes the run's record. Once; later calls do nothing."""
        with self._lock:
            if self._waited:
                return
            self._waited = True
        self.let_end()
        # Busy past that (attaching to a kept server another run holds the lock of):
        # SIGTERM, which it takes as the same end; then SIGKILL.
        for then in (self.process.terminate, self.process.kill):
            try:
                self.process.wait(END_TIMEOUT)
                break
            except subprocess.TimeoutExpired:
                then()
        else:
            self.process.wait()
        with suppress(OSError):
            self._replies.close()


def _to_devnull(fd: int) -> None:
    """``fd`` made /dev/null's: closed, its number could be another file's, which the
    object that owns ``fd`` would close when collected."""
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.dup2(devnull, fd, inheritable=False)
    finally:
        os.close(devnull)


def fork_agent(run_id: str, *, reuse: bool) -> Agent | None:
    """An agent for the run ``run_id`` (``reuse``: on the kept server), forked now if this
    process may fork (Linux, one thread: a fork copies no other thread, nor releases the
    locks they held); else None, and the run does its server work itself."""
    if not LINUX or threads() != 1:
        return None
    _import_what_both_need()
    return Agent(run_id, reuse=reuse)


def _import_what_both_need() -> None:
    """Import, before the fork, what the test process imports later anyway (SQLAlchemy's
    URLs and PostgreSQL dialect, the servers' module without psycopg): imported after it,
    the agent paid them again (~130 ms of CPU, on a machine whose cores were both busy)."""
    from ..foundation.urls import parse_url
    from . import server  # noqa: F401

    parse_url("postgresql://localhost/postgres")  # the dialect's modules


# -- the agent -------------------------------------------------------------------------------


def _serve(requests: IO[str], replies: IO[str], run_id: str, worker: str, reuse: bool) -> int:
    """Attach, then answer requests until the pipe closes; clean up however it ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the run tells us
    _only_where_urls_say()
    for ending in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(ending, _end_by_signal)
    with ExitStack() as cleanup:
        kept: _Kept | None = None
        failure: dict[str, Any] = {}
        # The run may end before its server is ready. A kept server's lock may be waited
        # for minutes: the run's end cuts that short (as SIGTERM). A start of the run's own
        # gives up at its next probe (``abandon``), stopping what it launched, for an end
        # or a signal alike (``errors.held_until_over``): not cut short, which would leave
        # a postmaster no one stops; nor seen through (a server that hangs at its boot kept
        # a run that took no database waiting for its boot timeout).
        abandon = threading.Event()
        watch = _EndWatch(requests, _end_by_sigterm if reuse else abandon.set)
        try:
            kept = _attach(run_id, worker, reuse, cleanup, abandon)
        except Exception as exc:  # a bug too: said, not hidden behind "ended unexpectedly"
            failure = _error(exc)
        finally:
            watch.over()
        for line in requests:
            reply = failure if kept is None else _answer(kept, json.loads(line))
            replies.write(json.dumps(reply) + "\n")
            replies.flush()
    return 0


@contextmanager
def _closed_quietly(replies: IO[str]) -> Iterator[IO[str]]:
    """``replies``, closed at the end; a test process gone already (its end of the pipe
    closed: ``BrokenPipeError`` on the last flush) is not an error of the agent's."""
    try:
        yield replies
    finally:
        with suppress(OSError):
            replies.close()


def _only_where_urls_say() -> None:
    """libpq's defaults that send a connection to another address than its URL's host
    (``$PGHOSTADDR``, a service's ``hostaddr``) are dropped: the test process's guard pins
    them away from each connection it lets through, and the agent's, its own, unguarded,
    went there (its admin statements to a server not ours)."""
    from ..guard.target import ENV_DEFAULTS

    for keyword in ("hostaddr", "service"):
        os.environ.pop(ENV_DEFAULTS[keyword], None)


def _end_by_signal(number: int, frame: object) -> None:  # pragma: no cover - in the agent
    raise SystemExit(128 + number)


def _end_by_sigterm() -> None:  # pragma: no cover - in the agent
    os.kill(os.getpid(), signal.SIGTERM)


class _EndWatch:
    """The run may end while its agent attaches or starts the run's server: the pipe's
    close (every copy of its other end closed) then calls ``on_end``, not once the server
    is ready. Ready, the agent reads that close in its turn, after the requests before it."""

    def __init__(self, requests: IO[str], on_end: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._over = False
        self._on_end = on_end
        poller = select.poll()
        poller.register(requests.fileno(), 0)  # no event asked: woken by the hang-up alone
        threading.Thread(target=self._watch, args=(poller,), daemon=True).start()

    def _watch(self, poller: select.poll) -> None:  # pragma: no cover - in the agent
        poller.poll()  # until every copy of the pipe's other end is closed
        with self._lock:  # over: a signal would cut the clean-up short
            if not self._over:
                self._on_end()

    def over(self) -> None:
        """Attached (or failed to): the watch ends. Under the lock, so that a signal sent
        before is handled before the clean-up begins."""
        with self._lock:
            self._over = True


@dataclass
class _Kept:
    server: EphemeralServer
    presence: RunPresence | None  # on the kept server only
    identity: str


def _attach(
    run_id: str, worker: str, reuse: bool, cleanup: ExitStack, abandon: threading.Event
) -> _Kept:
    """What a run does first on its server: ``cleanup`` undoes it, in order.

    With ``reuse``, the kept server attached (started, if it is not running), the run's
    record written, the databases of dead runs dropped, the run's presence begun,
    templates unused too long dropped. Else the run's own server started (stopped and
    removed at the end; given up, once ``abandon`` is set, while it boots)."""
    from .initdb_cache import server_binaries
    from .runas import run_as, runtime_root
    from .server import EphemeralServer

    user = run_as()
    binaries = server_binaries(user, runtime_root(user))
    presence: RunPresence | None = None
    if reuse:
        from .shared import RunPresence, prune_templates, template_max_age

        server = EphemeralServer.reusable(binaries=binaries, run_id=run_id)
        cleanup.callback(server.stop)  # a kept server is left running: this detaches
        record = server.enrol(run_id)
        cleanup.callback(_drop_run_then_its_record, server, run_id, record)
        presence = RunPresence(server, run_id, worker).start()
        cleanup.callback(presence.close)
        prune_templates(server, max_age=template_max_age(), everything_ours=True)
    else:
        # A signal abandons the start, which stops what it launched; its exit is raised
        # once the start is over and, if it got through, its stop is on the clean-up list
        # (its ``atexit`` is the forked pytest's, never run)
        with errors.held_until_over(abandon.set):
            server = EphemeralServer.start(binaries=binaries, abandon=abandon)
            cleanup.callback(server.stop)
    # For the test process's guard: what the start or attach asked (ours is not armed).
    identity = server.process.identity
    assert identity is not None, "started or attached: asked"
    return _Kept(server, presence, identity)


def _drop_run_then_its_record(server: EphemeralServer, run_id: str, record: Path) -> None:
    """``EphemeralServer.leave``; a drop that fails (its record kept for the next run) is
    said on stderr, which is the terminal's (the agent was forked before pytest captured
    it)."""
    try:
        server.leave(run_id, record)
    except ReynardDBError as exc:
        print(f"reynard-db: clean-up failed: {exc}", file=sys.stderr, flush=True)


def _answer(kept: _Kept, request: dict[str, Any]) -> dict[str, Any]:
    """One request's reply: ``{"value": ...}`` or ``{"error": ..., "kind": ...}``."""
    server = kept.server
    operations: dict[str, Callable[..., Any]] = {
        "attached": lambda: {
            "url": server.url.render_as_string(hide_password=False),
            "identity": kept.identity,
            "version": server.version,
            "base_dir": str(server.process.base_dir),
        },
        "exists": server.exists,
        "create": lambda name, template, end_sessions: str(
            server.create_database(name, template, end_sessions=end_sessions)
        ),
        "drop": server.drop_database,  # the run's own or the kept server: not guarded
        "rename": server.rename_database,
        "hold": lambda template: _presence(kept).hold(template),
        "mark_used": lambda **marks: _presence(kept).mark_used(**marks),
    }
    arguments = {k: v for k, v in request.items() if k != "op"}
    try:
        return {"value": operations[request["op"]](**arguments)}
    except Exception as exc:  # a bug too: said in the test process
        return _error(exc)


def _presence(kept: _Kept) -> RunPresence:
    if kept.presence is None:
        raise ServerError("the run's own server has no presence to hold templates with")
    return kept.presence


def _error(exc: Exception) -> dict[str, Any]:
    """The reply that raises ``exc`` again in the test process (``Agent.ask``): a harness
    error as itself, any other (a bug) as a ``ServerError`` naming its type."""
    if isinstance(exc, ReynardDBError):
        return {"error": str(exc), "kind": type(exc).__name__}
    return {"error": f"{type(exc).__name__}: {exc}", "kind": "ServerError"}
