"""``reynard-migrate`` and ``pytest`` in the tests: ``run_cli`` (and ``run_cli_in``,
``cli_of``, the ``cli`` fixture's ``Cli``) and ``run_pytest_argv``, forked by default from
a fork server, or started.

A new interpreter spends about half a second starting and importing SQLAlchemy, Alembic
and the CLI before ``main`` runs, and a second or more starting pytest; ~200 tests run
the CLI, several hundred a user's ``python -m pytest``. Each test process (an xdist
worker) starts one server of each kind on first use (``run_forked``), and one more for a
test's runs with their own ``PYTHONPATH`` (a project's package folder): an interpreter
started as the run's would be (``sys.executable``, a user's shell's environment, standard
streams that are pipes) that imports what the run imports before its entry point, and
nothing else: for the CLI what ``pytest_reynard_db.cli.run`` imports before it calls
``main``; for pytest, ``pytest`` (what ``python -m pytest`` imports before it runs
``pytest.__main__``; no plugin, which pytest rewrites as it imports it), and the
libraries pytest-alembic's plugin imports (SQLAlchemy, Alembic, Mako: ``AHEAD``) hidden
from ``sys.modules`` until the run imports one of them, where a started run imports
them. For each run it forks a child that takes the caller's
whole environment, umask, working directory and arguments, writes to the caller's pipes
and runs the entry point: a fresh interpreter at that moment, without its start.

Audit of what the child holds that a new interpreter would not (the package reads no
variable, directory or argument at import; its ``GUARD``, logging and caches are never
used by the server, so each child starts from them untouched):

- what the interpreter reads at its start (``START_VARIABLES``: ``PYTHON*`` such as
  ``PYTHONPATH``, the locale, the guard's ``.pth``/sitecustomize variable, the drivers'
  variables read at import): a server serves only the runs whose values are its own; a
  run with another ``PYTHONPATH`` alone (a project's folder) gets a server started with
  it, one start for all the test's runs, unless that ``PYTHONPATH`` holds a
  ``sitecustomize`` or ``usercustomize``, which runs (and may print) at every start; any
  other run is started as an interpreter instead (``run_forked`` returns None);
- a module or regular package in the run's directory named like one the server imported
  (a project's own ``typing_extensions``), which a started interpreter would import from
  there: that child execs ``python -m`` instead (``shadowed``), a started run;
- ``sys.path[0]`` (``python -m`` puts the working directory there), ``sys.argv``,
  ``tempfile``'s cached directory and the C library's time zone: set again in the child;
- the hash seed (``PYTHONHASHSEED``): every child has the server's, where each started
  interpreter draws its own: no test may rely on a set's order, either way;
- its parent is the server's waiter, not the test process, and its process group is the
  server's: the tests about signals, the interpreter or the entry point run it started
  (``run_cli(..., process="exec")``, ``run_pytest_argv(..., process="exec")``, or their
  own ``subprocess.Popen``);
- a pytest child has the standard library modules this module and ``AHEAD``'s libraries
  import (``socket``, ``selectors``, ``json``, ``asyncio``...) already imported; its
  modules not of the standard library are a started run's, as it starts, at its conftest
  and in a test (``test_cli_fork.test_a_forked_pytest_run_is_the_started_one``), but for
  when they appear: ``AHEAD``'s all at once, at the first import of any of them (a
  started run imports them as pytest-alembic's plugin loads, or ``typing_extensions``
  alone if a plugin before it does); ``__main__`` is ``pytest.__main__`` as run by
  ``-m`` (``runpy``).

The server runs as ``python tests/cli_fork.py FD KIND`` (FD: its end of a socket pair;
KIND: "cli" or "pytest"): this
module imports only the standard library at its top, for the server's sake.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import importlib.util
import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

#: The variables an interpreter, the package or its drivers read when they start or are
#: imported (a name, or a prefix ending in ``*``).
START_VARIABLES = (
    "PYTHON*",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "REYNARD_DB_GUARD",
    "PSYCOPG*",
    "*SQLALCHEMY*",
)


def _started(name: str) -> bool:
    return any(
        name == pattern
        or (pattern.startswith("*") and pattern.endswith("*") and pattern[1:-1] in name)
        or (pattern.endswith("*") and name.startswith(pattern[:-1]))
        for pattern in START_VARIABLES
    )


def start_values(env: Mapping[str, str]) -> dict[str, str]:
    """The values in ``env`` of the variables read at an interpreter's start (an empty
    one is as unset: the guard's fixture leaves ``PYTHONPATH=""``)."""
    return {name: value for name, value in env.items() if value and _started(name)}


# -- what the tests call -------------------------------------------------------------------


#: How ``run_cli`` runs the CLI: ``"fork"`` (the default) a child of this process's fork
#: server, a fresh interpreter at ``main`` without the half second of its start
#: (the fork server); ``"exec"`` a new interpreter, for the tests about the process itself
#: (signals, the interpreter's start and exit, the guard inherited at start, the entry
#: point, PATH and PYTHONPATH, the terminal's encoding).
Process = Literal["fork", "exec"]


class Cli(Protocol):
    """The ``cli`` fixture: ``run_cli`` on the test's ``project``."""

    def __call__(
        self, *argv: str, env: dict[str, str] | None = None, process: Process = "fork"
    ) -> tuple[int, str, str]: ...


def cli_argv(project: Path, *argv: str) -> list[str]:
    """The command line of ``reynard-migrate --project PROJECT ARGV...``."""
    return [sys.executable, "-m", "pytest_reynard_db", "--project", str(project), *argv]


def run_cli(
    project: Path,
    *argv: str,
    env: dict[str, str] | None = None,
    process: Process = "fork",
    timeout: float = 300,
) -> tuple[int, str, str]:
    """``reynard-migrate --project PROJECT ARGV...`` in a child process, as a user runs it
    (``run_cli_in`` the project)."""
    argv = ("--project", str(project), *argv)
    return run_cli_in(project, *argv, env=env, process=process, timeout=timeout)


def run_cli_in(
    cwd: Path,
    *argv: str,
    env: dict[str, str] | None = None,
    process: Process = "fork",
    timeout: float = 300,
) -> tuple[int, str, str]:
    """``reynard-migrate ARGV...`` run in ``cwd``: (exit code, stdout, stderr), killed after
    ``timeout`` seconds (``subprocess.TimeoutExpired``). Forked only when the child would
    be the interpreter ``env`` starts (the fork server); else, as with ``process="exec"``,
    started."""
    if process == "fork":
        forked = run_forked(argv, env, cwd, timeout)
        if forked is not None:
            return forked
    command = [sys.executable, "-m", "pytest_reynard_db", *argv]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
    return result.returncode, result.stdout, result.stderr


def cli_of(project: Path, *, env: dict[str, str] | None = None, process: Process = "fork") -> Cli:
    """``run_cli`` on ``project`` as a ``Cli``, ``env`` and ``process`` its defaults."""

    def run(
        *argv: str, env: dict[str, str] | None = env, process: Process = process
    ) -> tuple[int, str, str]:
        return run_cli(project, *argv, env=env, process=process)

    return run


def run_pytest_argv(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    *,
    timeout: float = 300,
    umask: int = -1,
    process: Process = "fork",
) -> subprocess.CompletedProcess[str]:
    """``argv``, ``python -m pytest ...`` (``reynard_trees.pytest_argv``), run in ``cwd``
    as ``subprocess.run(argv, capture_output=True, text=True, ...)`` runs it: forked from
    the pytest fork server (``ForkServer`` of kind "pytest": pytest imported, no plugin)
    where the child would be the interpreter ``env`` starts, else (and with ``process``
    "exec") started."""
    command = list(argv)
    if process == "fork" and command[:3] == [sys.executable, "-m", "pytest"]:
        forked = run_forked(command[3:], env, cwd, timeout, kind="pytest", umask=umask)
        if forked is not None:
            return subprocess.CompletedProcess(command, *forked)
    return subprocess.run(
        command,
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        umask=umask,
    )


# -- the fork server, asked by the test process ---------------------------------------------


#: What a fork server's children run: ``reynard-migrate`` (``python -m pytest_reynard_db``)
#: or pytest (``python -m pytest``, ``run_pytest_argv``).
Kind = Literal["cli", "pytest"]


class ForkServer:
    """The client's side: one server process, asked over a socket pair."""

    def __init__(self, env: Mapping[str, str], kind: Kind = "cli") -> None:
        self.start = start_values(env)
        self.kind = kind
        self.control, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(theirs.fileno()), kind],
            pass_fds=[theirs.fileno()],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        theirs.close()

    def serves(self, env: Mapping[str, str]) -> bool:
        """Whether a child of the server is the interpreter ``env`` would start."""
        return self.process.poll() is None and start_values(env) == self.start

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        timeout: float,
        umask: int = -1,
    ) -> tuple[int, str, str]:
        """``reynard-migrate ARGV`` (or ``pytest ARGV``) forked, as ``subprocess.run(...,
        capture_output=True, text=True, timeout=timeout, umask=umask)`` would give it:
        (exit code, stdout, stderr)."""
        mine, theirs = socket.socketpair()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            socket.send_fds(self.control, [b"R"], [theirs.fileno()])
            socket.send_fds(mine, [b"R"], [out_write, err_write])
            request = {"argv": list(argv), "env": dict(env), "cwd": str(cwd), "umask": umask}
            mine.sendall(json.dumps(request).encode())
            mine.shutdown(socket.SHUT_WR)
        finally:  # the child's ends: each pipe ends when the child does
            theirs.close()
            os.close(out_write)
            os.close(err_write)
        try:
            said, out, err = _read_all(timeout, mine, out_read, err_read)
        finally:
            mine.close()
        lines = said.decode().split()
        if len(lines) != 2:
            raise RuntimeError(f"the {self.kind} fork server did not answer:\n{self.stderr()}")
        return int(lines[1]), _text(out), _text(err)

    def stderr(self) -> str:
        """What the server wrote, once it has ended (its start failed)."""
        if self.process.poll() is None:
            return "(the server is running)"
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")

    def close(self) -> None:
        self.control.close()  # the server ends at the end of its socket
        self.process.wait(timeout=30)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


#: This process's servers by the start values they were started with, the latest used
#: last; the process's own (its environment's values) and ``SERVERS_KEPT`` others.
_servers: dict[tuple[int, Kind, frozenset[tuple[str, str]]], ForkServer] = {}
SERVERS_KEPT = 2


def run_forked(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: Path,
    timeout: float,
    *,
    kind: Kind = "cli",
    umask: int = -1,
) -> tuple[int, str, str] | None:
    """``reynard-migrate ARGV`` (``kind`` "pytest": ``pytest ARGV``) forked by this
    process's server of that kind for ``env``'s start values (None: this process's
    environment), started on first use; None where a fork would not be the interpreter
    ``env`` starts (start values other than the process's but for ``PYTHONPATH``, or a
    ``PYTHONPATH`` that ``customizes`` the start)."""
    env = os.environ if env is None else env
    key = (os.getpid(), kind, frozenset(start_values(env).items()))
    server = _servers.pop(key, None)
    if server is None or not server.serves(env):
        if not _pythonpath_alone(env, os.environ) or customizes(env):
            return None
        server = ForkServer(env, kind)
        atexit.register(server.close)
    _servers[key] = server  # the latest used last
    _close_the_oldest()
    return server.run(argv, env, cwd, timeout, umask)


def _pythonpath_alone(env: Mapping[str, str], own: Mapping[str, str]) -> bool:
    """Whether ``env``'s start values are ``own``'s but for ``PYTHONPATH`` (a project's
    folder): any other (a locale, the guard's file read at start) is a test's subject."""

    def but_the_path(values: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in start_values(values).items() if k != "PYTHONPATH"}

    return but_the_path(env) == but_the_path(own)


def customizes(env: Mapping[str, str]) -> bool:
    """Whether ``env``'s ``PYTHONPATH`` holds a module the ``site`` module imports at every
    interpreter's start: a server would run it once, each started run once each."""
    return any(
        (Path(folder) / name).exists()
        for folder in env.get("PYTHONPATH", "").split(os.pathsep)
        if folder
        for name in ("sitecustomize.py", "sitecustomize", "usercustomize.py", "usercustomize")
    )


def _close_the_oldest() -> None:
    """End the least recently used servers past ``SERVERS_KEPT`` besides the process's
    own: a test that set its own ``PYTHONPATH`` is over once later tests set theirs."""
    own = frozenset(start_values(os.environ).items())
    for kind in ("cli", "pytest"):
        others = [key for key in _servers if key[:2] == (os.getpid(), kind) and key[2] != own]
        _close(others[: max(0, len(others) - SERVERS_KEPT)])


def _close(keys: list[tuple[int, Kind, frozenset[tuple[str, str]]]]) -> None:
    for key in keys:
        server = _servers.pop(key)
        atexit.unregister(server.close)
        server.close()


def _read_all(timeout: float, answer: socket.socket, *pipes: int) -> tuple[bytes, ...]:
    """Everything written to the answer socket and the pipes until each is closed; the
    child (its pid: the answer's first line) killed if that takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    read = {answer.fileno(): bytearray(), **{fd: bytearray() for fd in pipes}}
    with selectors.DefaultSelector() as selector:
        for fd in read:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            events = selector.select(timeout=max(left, 0))
            if not events and left <= 0:
                _kill(read[answer.fileno()])
                raise subprocess.TimeoutExpired("a forked run", timeout)
            for key, _ in events:
                chunk = os.read(key.fd, 65536)
                if chunk:
                    read[key.fd] += chunk
                else:
                    selector.unregister(key.fd)
    for fd in pipes:
        os.close(fd)
    return tuple(bytes(read[fd]) for fd in (answer.fileno(), *pipes))


def _kill(said: bytes | bytearray) -> None:
    pid = said.decode().split()[:1]
    if pid:
        with suppress(ProcessLookupError):  # ended in the meantime
            os.kill(int(pid[0]), signal.SIGKILL)


def _text(data: bytes) -> str:
    """``data`` as ``subprocess.run(..., text=True)`` decodes it (locale, newlines)."""
    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


# -- the server's side ---------------------------------------------------------------------


def serve(control: socket.socket, kind: Kind) -> socket.socket | None:
    """Fork a waiter per request received on ``control``; return in the CLI's child (its
    answer socket), and None when the test process has closed its end."""
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(control, 1, 1)
        except OSError:
            return None
        if not fds:
            return None  # the test process closed its end: it is over
        while _reap_waiters():
            pass
        answer = socket.socket(fileno=fds[0])
        if os.fork() == 0:
            control.close()
            return _wait_for_the_child(answer, kind)
        answer.close()


def _reap_waiters() -> bool:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    return pid != 0


def _wait_for_the_child(answer: socket.socket, kind: Kind) -> socket.socket:
    """The waiter: fork the run's child, tell the test process its pid then its exit code.
    Only the child returns (to run the CLI); the waiter ends here (or, failing, with its
    traceback on the server's stderr: the test process sees no exit code, and says so)."""
    _, fds, _, _ = socket.recv_fds(answer, 1, 2)
    request = b"".join(iter(lambda: answer.recv(65536), b""))
    pid = os.fork()
    if pid == 0:
        _become_the_child(json.loads(request), fds, kind)
        return answer
    for fd in fds:
        os.close(fd)
    answer.sendall(f"{pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    answer.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    os._exit(0)


def _become_the_child(request: dict[str, Any], fds: list[int], kind: Kind) -> None:
    """What ``python -m pytest_reynard_db ARGV`` (``python -m pytest ARGV``) would have at
    ``main``: the request's standard streams, umask, environment, directory,
    ``sys.path[0]`` and ``sys.argv``."""
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    if request["umask"] >= 0:
        os.umask(request["umask"])
    cwd = str(request["cwd"])
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    tempfile.tempdir = None
    sys.path[0] = cwd
    package = "pytest" if kind == "pytest" else "pytest_reynard_db"
    if shadowed(cwd):  # a started interpreter would import the directory's own module
        os.execv(sys.executable, [sys.executable, "-m", package, *request["argv"]])
    # ``python -m``'s: the entry module's file (found, not imported: importing runs it)
    spec = importlib.util.find_spec(f"{package}.__main__")
    sys.argv = [str(spec.origin if spec else ""), *request["argv"]]


#: What a module's file may end with on the import path (besides a package's directory).
MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")


def shadowed(where: str) -> bool:
    """Whether ``where`` (a run's ``sys.path[0]``) holds a module or a regular package
    named like one this server imported (hidden or not): a started interpreter, whose
    import path begins there, would import that one instead."""
    hidden = [finder.hidden for finder in sys.meta_path if isinstance(finder, _Hidden)]
    imported = {name.partition(".")[0] for name in [*sys.modules, *(n for h in hidden for n in h)]}
    imported.discard("__main__")
    try:
        entries = os.listdir(where)
    except OSError:
        return False
    for entry in entries:
        name = entry.partition(".")[0]
        if name not in imported:
            continue
        if entry.endswith(MODULE_SUFFIXES) or os.path.exists(
            os.path.join(where, entry, "__init__.py")
        ):
            return True
    return False


#: The plugin whose libraries the pytest server imports ahead (``import_hidden``): every
#: run loads pytest-alembic's, and with it SQLAlchemy, Alembic and Mako (~250 ms a run).
AHEAD = "pytest_alembic.plugin"


class _Hidden(importlib.abc.MetaPathFinder):
    """Modules imported by the server, out of ``sys.modules`` until a run first imports
    one of them: then all are put back at once (what the same import brings in a started
    interpreter), the one asked for through ``_Imported``. Finding one changes nothing
    (``importlib.util.find_spec``, asking whether a library is installed, imports
    nothing): the spec found is the module's own, but for its loader."""

    def __init__(self, hidden: dict[str, ModuleType]) -> None:
        self.hidden = hidden

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        module = self.hidden.get(name)
        if module is None:
            return None
        own = module.__spec__
        spec = importlib.machinery.ModuleSpec(
            name,
            _Imported(self, module),
            origin=own.origin,
            is_package=own.submodule_search_locations is not None,
        )
        spec.submodule_search_locations = own.submodule_search_locations
        spec.cached = own.cached
        spec.has_location = own.has_location
        return spec

    def put_back(self, name: str) -> ModuleType:
        """All hidden modules in ``sys.modules`` but ``name``, which is returned: importlib
        puts it there itself (were it there now, importlib would load it again, a new
        module object, from its own spec)."""
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        module = self.hidden.pop(name)
        for other, hidden in self.hidden.items():
            sys.modules.setdefault(other, hidden)
        self.hidden.clear()
        return module


class _Imported(importlib.abc.Loader):
    """Loads a hidden module: the very object the server imported, its own spec kept."""

    def __init__(self, finder: _Hidden, module: ModuleType) -> None:
        self.finder = finder
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec: Any) -> ModuleType:
        if self.finder.hidden.get(spec.name) is self.module:
            return self.finder.put_back(spec.name)
        return self.module  # put back since (another hidden module was imported first)

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.spec  # importlib set this loader's; the module's own again


def import_hidden(plugin: str) -> None:
    """Import ``plugin`` here, then forget it (a run imports it again, as pytest rewrites a
    plugin's modules) and hide what it brought from libraries outside the standard
    library (``_Hidden``): a run sees them appear where a started interpreter imports
    them, and finds them imported already."""
    before = set(sys.modules)
    importlib.import_module(plugin)
    top = plugin.partition(".")[0]
    hidden: dict[str, ModuleType] = {}
    for name in set(sys.modules) - before:
        first = name.partition(".")[0]
        if first in sys.stdlib_module_names:
            continue  # left imported, as this module's own are
        module = sys.modules.pop(name)
        if first != top:  # the plugin's own: forgotten, not hidden
            hidden[name] = module
    sys.meta_path.insert(0, _Hidden(hidden))


def _serve_pytest(control: socket.socket) -> None:
    """The server of pytest runs: it imports pytest (what ``python -m pytest`` imports
    before ``console_main``) and, hidden until a run imports them, the libraries of
    ``AHEAD`` (``import_hidden``); no plugin (pytest rewrites a plugin's modules as it
    imports them)."""
    import runpy

    import pytest  # noqa: F401 - what ``python -m pytest`` imports first

    with suppress(ImportError):  # not installed: a run imports nothing of it either
        import_hidden(AHEAD)
    if (answer := serve(control, "pytest")) is not None:
        answer.close()
        runpy.run_module("pytest", run_name="__main__", alter_sys=True)  # what -m runs


def _serve_the_cli(control: socket.socket) -> None:
    import runpy

    from pytest_reynard_db.cli import front  # noqa: F401 - what run() imports first

    if (answer := serve(control, "cli")) is not None:
        answer.close()
        runpy.run_module("pytest_reynard_db", run_name="__main__", alter_sys=True)  # what -m runs


if __name__ == "__main__":
    control = socket.socket(fileno=int(sys.argv[1]))
    if sys.argv[2] == "pytest":
        _serve_pytest(control)
    else:
        _serve_the_cli(control)
