"""How a database's checks run apart: in a clean interpreter (issue 13), each within its
time, and the ``locks`` check watched for a self-deadlock. This module is both sides of
the child: the parent's ``run_isolated``/``IsolatedChild`` and the child's ``main``.

Running ``env.py`` imports the application's models, and what an import does stays
in the process: tables registered in a ``MetaData`` two databases share, modules
replaced in ``sys.modules``, a ``create_all`` at import. In one process the results
of one database's checks would then depend on which databases ran before (and on
``--only``), and in a pytest run on what the test modules imported. So
``run_isolated`` runs one database's checks in a child interpreter
(``python -m pytest_reynard_db.checks.isolated FD``) with nothing imported but this
package, the parent's ``sys.path`` and environment, and the parent's server.

The child reaches that server as an existing server (``ExistingServer``: it creates
only its ``test_check_*`` databases and drops only those), with the production guard
armed as in the parent. It is told its request in two JSON lines on stdin: the
database first (it then imports the package while the parent starts the server),
then the server and the checks. It answers in JSON lines on descriptor FD (progress
events, then the results, or one error); what the checks and ``env.py`` print goes
to stderr, which is the parent's.

No check runs unbounded. ``time_limit`` (``--timeout SECONDS`` of ``check`` and
``lint``) raises ``CheckTimedOut`` in the main thread when a check outlives its limit.
It is a ``KeyboardInterrupt``, as SIGINT is, for one reason: psycopg then cancels the
statement the check was waiting on, so the connection can be rolled back and the
scratch database dropped; ``run_check`` catches it and fails the check with that reason.

``SelfDeadlockWatch`` serves the ``locks`` check, which runs a revision on a
connection that already holds locks (an outer transaction over filled tables).
A second connection doing the migration's work (a revision that opens one of
its own) would wait for the check's own locks, forever: PostgreSQL cannot see a
deadlock that runs through a client. The watch polls ``pg_blocking_pids`` from
a connection of its own and cancels a backend blocked by the check's backend;
the check then says that revision was not measured, and why. (An ``env.py``
that migrates on a connection of its own is seen before anything runs: see
``safety.locks``.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from ..foundation.registry import Database, Registry
from ..foundation.urls import one_line
from . import CheckResult

if TYPE_CHECKING:  # the servers load on use: file checks need none
    from ..postgres import Server
    from .runner import Progress

#: The child's module (``-m``): not imported by ``checks`` itself, so runpy finds it unloaded.
CHILD = "pytest_reynard_db.checks.isolated"


def run_isolated(
    registry: Registry,
    db: Database,
    server: Server | None,
    names: Sequence[str],
    *,
    timeout: float | None = None,
    allow: Sequence[str] = (),
    progress: Progress | None = None,
    note_prefix: str = "reynard-migrate: note: ",
) -> list[CheckResult]:
    """The results of checks ``names`` on ``db``, run in a child interpreter."""
    child = IsolatedChild(registry, db, timeout=timeout, allow=allow, note_prefix=note_prefix)
    return child.run(server, names, progress)


class IsolatedChild:
    """The child interpreter of one database's checks, started before it is told its
    server and checks: it imports the package (SQLAlchemy, Alembic, psycopg: a few
    hundred ms) while the parent starts the server. ``run`` says the rest and waits
    for the results; ``close`` ends a child that will not be told."""

    def __init__(
        self,
        registry: Registry,
        db: Database,
        *,
        timeout: float | None = None,
        allow: Sequence[str] = (),
        note_prefix: str = "reynard-migrate: note: ",
    ) -> None:
        self.db = db
        request = {
            "root": str(registry.root),
            "base": registry.base,  # check --base replaces the registry's
            "database": db.name,
            "timeout": timeout,
            "allow": list(allow),
            "sys_path": [p for p in sys.path if p],
            "note_prefix": note_prefix,
        }
        read, write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", CHILD, str(write)],
                stdin=subprocess.PIPE,
                pass_fds=(write,),
                text=True,
            )
        finally:
            os.close(write)
        self._replies = os.fdopen(read, encoding="utf-8")
        self._tell(request, last=False)

    def run(
        self, server: Server | None, names: Sequence[str], progress: Progress | None = None
    ) -> list[CheckResult]:
        """The results of checks ``names`` on ``server`` (None: file checks only)."""
        results: list[CheckResult] | None = None
        error: str | None = None
        try:
            self._tell(
                {
                    "server": server.url.render_as_string(hide_password=False) if server else None,
                    "checks": list(names),
                    "progress": progress is not None,  # said how far a check is only if heard
                },
                last=True,
            )
            with self._replies as replies:
                for line in replies:
                    reply = json.loads(line)
                    if "progress" in reply and progress is not None:
                        progress(*reply["progress"])
                    elif "results" in reply:
                        results = [CheckResult.from_json(entry) for entry in reply["results"]]
                    elif "error" in reply:
                        error = reply["error"]
            code = self.process.wait()
        finally:  # interrupted (Ctrl-C, SIGTERM): the child ends too, dropping its databases
            self.close()
        if results is not None:
            return results
        if error is None:
            why = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
            error = f"the interpreter running its checks {why} before it reported (see its stderr)"
        if self.db.name not in error:
            error = f"database {self.db.name!r}: {error}"
        return [CheckResult(self.db.name, name, False, error) for name in names]

    def close(self) -> None:
        """End the child if it still runs (told nothing more, it exits on its own)."""
        child = self.process
        if child.stdin is not None and not child.stdin.closed:
            with suppress(OSError):
                child.stdin.close()
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._replies.close()

    def _tell(self, message: dict[str, Any], *, last: bool) -> None:
        """One JSON line to the child (one that died early reads nothing: its exit says)."""
        assert self.process.stdin is not None
        with suppress(BrokenPipeError):
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            if last:
                self.process.stdin.close()


# -- the child's side ------------------------------------------------------------------

OPT_IN_HINT = "--allow URL"
#: How often the child looks whether its parent is still there (seconds).
PARENT_POLL = 0.2


def _end_with_parent(parent: int) -> None:
    """SIGTERM ourselves once ``parent`` is gone (killed with -9: it cannot end us), so
    the checks stop and their databases are dropped instead of migrating for no one."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="reynard-db-parent", daemon=True).start()


def _child(out: IO[str]) -> None:
    """The child's side: read the request on stdin, run the checks, answer on ``out``."""
    request: dict[str, Any] = json.loads(sys.stdin.readline())
    for entry in reversed(request["sys_path"]):
        if entry not in sys.path:
            sys.path.insert(0, entry)

    # Imported while the parent starts the server (the request's second line waits for it).
    from ..foundation.registry import load_registry
    from ..guard import GUARD, redirect_note
    from ..postgres import ExistingServer
    from . import CheckRunner, run_check

    told = sys.stdin.readline()
    if not told:  # the parent will not run these checks after all
        return
    request.update(json.loads(told))

    def say(reply: dict[str, Any]) -> None:
        out.write(json.dumps(reply) + "\n")
        out.flush()

    def advance(
        database: str, check: str, done: int | None = None, total: int | None = None, /
    ) -> None:
        say({"progress": [database, check, done, total]})

    listening = request.get("progress", False)
    registry = replace(load_registry(request["root"]), base=request.get("base"))
    db = registry.get(request["database"])
    results: list[CheckResult] = []
    with GUARD.armed_for(opt_in_hint=OPT_IN_HINT, allow=tuple(request["allow"])):
        server = ExistingServer(request["server"]) if request["server"] else None
        try:
            runner = CheckRunner(db, registry, server, progress=advance if listening else None)
            for name in request["checks"]:
                say({"progress": [db.name, name]})
                results.extend(run_check(runner, name, timeout=request["timeout"]))
        finally:
            if server is not None:
                server.stop()
        for redirect in GUARD.redirects:
            print(f"{request['note_prefix']}{redirect_note(redirect)}", file=sys.stderr)
    say({"results": [_entry(r) for r in results]})


def _entry(result: CheckResult) -> dict[str, Any]:
    return {**result.as_json(), "skipped": result.skipped}


def main(argv: Sequence[str]) -> int:
    """Answer on descriptor ``argv[0]``; what the checks print goes to stderr."""
    from ..foundation.errors import ReynardDBError, terminate_as_interrupt
    from ..foundation.urls import redact

    parent = os.getppid()
    out = os.fdopen(int(argv[0]), "w", encoding="utf-8")
    sys.stdout = sys.stderr  # an env.py's print() must not break the answer
    try:
        # ended by the parent (interrupted): its databases are dropped on the way out
        with terminate_as_interrupt():
            _end_with_parent(parent)
            _child(out)
    except KeyboardInterrupt:
        return 130
    except ReynardDBError as exc:  # the registry or the server: its one line, per check
        out.write(json.dumps({"error": redact(exc)}) + "\n")
        return 2
    except Exception as exc:  # a bug: still one line, per check
        out.write(json.dumps({"error": redact(f"{type(exc).__name__}: {one_line(exc)}")}) + "\n")
        return 2
    finally:
        with suppress(OSError):  # a parent gone (killed) reads no more
            out.close()
    return 0


# -- bounded: a time limit per check, a self-deadlock watch ----------------------------

#: The default of ``--timeout``: far beyond any sane check, but finite.
DEFAULT_CHECK_TIMEOUT = 1800.0
WATCH_INTERVAL = 0.2

BLOCKED_BY = text(
    "SELECT pid, pg_cancel_backend(pid) FROM pg_stat_activity "
    "WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"
)


class CheckTimedOut(KeyboardInterrupt):
    """A check ran longer than ``--timeout`` allows."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"timed out after {seconds:g} s (--timeout)")


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``CheckTimedOut`` in the block after ``seconds`` (None or 0: no limit).

    Only in the main thread (Python delivers signals there); elsewhere no limit.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise CheckTimedOut(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class SelfDeadlockWatch:
    """While active, cancel any backend that waits on ``connection``'s locks."""

    def __init__(self, connection: Connection, url: URL) -> None:
        self.backend = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
        self.url = url
        self.cancelled: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SelfDeadlockWatch:
        self._thread = threading.Thread(target=self._watch, name="reynard-db-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as watcher:
                watcher.execution_options(isolation_level="AUTOCOMMIT")
                while not self._stop.wait(WATCH_INTERVAL):
                    rows = watcher.execute(BLOCKED_BY, {"pid": self.backend}).all()
                    self.cancelled += [int(row[0]) for row in rows]
        except Exception:  # a watch that cannot watch must not fail the check
            return
        finally:
            engine.dispose()


if __name__ == "__main__":
    # The child (``-m``): the checks it runs import this module again under its own
    # name; nothing here keeps state, so the two copies cannot disagree.
    sys.exit(main(sys.argv[1:]))
