"""Each database's checks in a clean interpreter (issue 13).

Running ``env.py`` imports the application's models, and what an import does stays
in the process: tables registered in a ``MetaData`` two databases share, modules
replaced in ``sys.modules``, a ``create_all`` at import. In one process the results
of one database's checks would then depend on which databases ran before (and on
``--only``), and in a pytest run on what the test modules imported. So
``run_isolated`` runs one database's checks in a child interpreter
(``python -m pytest_reynard_db.checks.child``) with nothing imported but this
package, the parent's ``sys.path`` and environment, and the parent's server.

The child reaches that server as an existing server (``ExistingServer``: it creates
only its ``test_check_*`` databases and drops only those), with the production guard
armed as in the parent. It is told its request in two JSON lines on stdin: the
database first (it then imports the package while the parent starts the server),
then the server and the checks. It talks to the parent in JSON lines on its own stdout
descriptor (progress events, then the results); the ``env.py``'s own prints go to
stderr, which is the parent's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from ..foundation.registry import Database, Registry
from . import CheckResult

if TYPE_CHECKING:  # the servers load on use: file checks need none
    from ..postgres import Server
    from .runner import Progress

#: The child's module: not imported by ``checks`` itself, so ``-m`` runs it cleanly.
CHILD = "pytest_reynard_db.checks.child"
#: How often a forked child's end is looked for while waiting with a deadline (seconds).
REAP_POLL = 0.01


class ChildProcess(Protocol):
    """What ``IsolatedChild`` uses of its process: a ``subprocess.Popen`` or a
    ``ForkedProcess``."""

    stdin: IO[str] | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


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
        spare: Spare | None = None,
    ) -> None:
        """``spare``: a child forked ahead to use (``Spare``); by default an interpreter
        is started for it."""
        self.db = db
        request = {
            "root": str(registry.root),
            "base": registry.base,  # check --base replaces the registry's
            "database": db.name,
            "timeout": timeout,
            "allow": list(allow),
            "sys_path": [p for p in sys.path if p],
            # As they are now: a child forked ahead has those of before the conftests.
            "environ": dict(os.environ),
            "cwd": os.getcwd(),
            "note_prefix": note_prefix,
        }
        self.process: ChildProcess
        if spare is not None:
            self.process, self._replies = spare.process, spare.replies
        else:
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


class ForkedProcess:
    """A child forked from this process, seen as the part of ``subprocess.Popen`` that
    ``IsolatedChild`` uses."""

    def __init__(self, pid: int, stdin: IO[str]) -> None:
        self.pid = pid
        self.stdin: IO[str] | None = stdin
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            with suppress(ChildProcessError):  # reaped already: it is over
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid == 0:
                    return None
                self.returncode = os.waitstatus_to_exitcode(status)
            if self.returncode is None:
                self.returncode = 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked child {self.pid}", timeout or 0)
            if deadline is None:
                with suppress(ChildProcessError):
                    _, status = os.waitpid(self.pid, 0)
                    self.returncode = os.waitstatus_to_exitcode(status)
                continue
            time.sleep(REAP_POLL)
        return code

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, number: int) -> None:
        if self.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, number)


class Spare:
    """A child forked from pytest before any conftest or test module was imported, for
    an ``IsolatedChild`` to use later.

    It has imported what pytest and its plugins imported (pytest-alembic: SQLAlchemy
    and Alembic) and nothing of the application, so it is as clean as an interpreter
    started for the checks, without paying a few hundred ms to import them again; it
    imports the checks' own modules at once, on its own core, while pytest collects.
    ``fork_spares`` makes them only while that holds.
    """

    def __init__(self, earlier: Sequence[Spare] = ()) -> None:
        """``earlier``: the spares forked before this one, whose ends of the pipes this
        child closes (a copy of a request pipe's end would keep its reader waiting)."""
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        for stream in (sys.stdout, sys.stderr):  # not written twice, by both processes
            with suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its results are what the tests read
            code = 2
            try:
                os.close(requests_write)
                os.close(replies_read)
                for other in earlier:
                    other.forget()
                _as_a_new_interpreter()
                from .child import serve

                code = serve(
                    os.fdopen(requests_read, encoding="utf-8"),
                    os.fdopen(replies_write, "w", encoding="utf-8"),
                    forked=True,
                )
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with suppress(Exception):
                        stream.flush()
                with suppress(Exception):  # its own allow-list file, if it made one
                    from ..guard import inherit

                    inherit.withdraw()
                # pytest's clean-up, atexit and buffers are the parent's, not ours
                os._exit(code)
        os.close(requests_read)
        os.close(replies_write)
        self.process = ForkedProcess(pid, os.fdopen(requests_write, "w", encoding="utf-8"))
        self.replies = os.fdopen(replies_read, encoding="utf-8")

    def forget(self) -> None:
        """Close this process's ends of the spare's pipes, leaving the spare alone."""
        for stream in (self.process.stdin, self.replies):
            with suppress(OSError):
                if stream is not None:
                    os.close(stream.fileno())

    def close(self) -> None:
        """End a spare no database was given to: it holds nothing yet (no database, no
        connection), so it is killed, not kept waiting for its imports to end."""
        self.process.kill()
        self.process.wait()
        with suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        self.replies.close()


def _as_a_new_interpreter() -> None:  # pragma: no cover - in the forked child
    """What a forked child holds of pytest that an interpreter started for the checks
    would not: the standard streams pytest replaced (``--capture=sys`` keeps what is
    written to them in the parent's memory: the child writes to its descriptors, as an
    interpreter would) and the guard's allow-list file (the parent's: ``inherit.forget``;
    the child adopts the parent's list when told its checks, ``child.serve``)."""
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__
    from ..guard import inherit

    inherit.forget()


class Spares:
    """Children forked ahead (``Spare``), taken one per database's checks; none left,
    an interpreter is started instead."""

    def __init__(self, spares: list[Spare]) -> None:
        self._spares = spares

    def take(self) -> Spare | None:
        return self._spares.pop(0) if self._spares else None

    def close(self) -> None:
        while self._spares:
            self._spares.pop().close()


def fork_spares(count: int, root: Path) -> Spares:
    """``count`` spare children, forked now, if this process is still clean (else none:
    each database's checks start an interpreter):

    - one thread: a fork copies no other thread, nor releases the locks they held;
    - nothing imported but the standard library, installed libraries and this package:
      a plugin named with ``-p`` may be the application's, and an outer pytest running
      this one in-process has imported its tests;
    - none of those libraries is the application at ``root`` installed (a deployed
      image): no imported top-level name is also a module of ``root`` (or ``root/src``);
    - no ``MetaData`` of SQLAlchemy held by a module outside SQLAlchemy, Alembic and
      this package: models imported (by an entry-point plugin) before ``env.py`` runs
      are what an interpreter started for the checks would not have (issue 13).
    """
    if count <= 0 or _threads() != 1 or not _only_libraries_imported(root):
        return Spares([])
    spares: list[Spare] = []
    for _ in range(count):
        spares.append(Spare(spares))
    return Spares(spares)


def _threads() -> int:
    """This process's threads, those a C library started too where the system says
    (Linux's ``/proc``; Python 3.12 warns on a fork with any)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _only_libraries_imported(root: Path) -> bool:
    """Whether ``sys.modules`` holds only what ``fork_spares`` allows."""
    paths = sysconfig.get_paths()
    places = [paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]
    places.append(str(Path(__file__).parent.parent))  # this package, installed or not
    libraries = tuple(
        {os.path.join(path, "") for place in places for path in (place, os.path.realpath(place))}
    )
    tops: set[str] = set()
    for name, module in list(sys.modules.items()):
        source = getattr(module, "__file__", None)
        if source and not (
            source.startswith(libraries) or os.path.realpath(source).startswith(libraries)
        ):
            return False
        tops.add(name.partition(".")[0])
    project = [root, root / "src"]
    for top in tops - set(sys.stdlib_module_names) - set(sys.builtin_module_names):
        if any(
            (where / f"{top}.py").exists() or (where / top / "__init__.py").exists()
            for where in project
        ):
            return False  # the application, installed
    return not _models_imported()


#: Modules whose ``MetaData`` are not an application's models.
OWN_METADATA = ("sqlalchemy", "alembic", "pytest_alembic", "pytest_reynard_db")


def _models_imported() -> bool:
    """Whether a module outside ``OWN_METADATA`` holds a SQLAlchemy ``MetaData`` (or a
    declarative class, which has one) at its top level."""
    sqlalchemy = sys.modules.get("sqlalchemy")
    if sqlalchemy is None:
        return False  # nothing could have made one
    metadata = sqlalchemy.MetaData
    skipped = {*OWN_METADATA, *sys.stdlib_module_names}
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in skipped or module is None:
            continue
        for value in list(getattr(module, "__dict__", {}).values()):
            if isinstance(value, metadata):
                return True
            # a declarative base's class attribute (read from the class: no descriptor runs)
            if isinstance(value, type) and isinstance(vars(value).get("metadata"), metadata):
                return True
    return False
