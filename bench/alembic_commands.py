"""Plain ``alembic`` commands, each as fresh as a new process: the runners of
``bench.plain_alembic``.

Two runners give the same answer (``tests/test_oracle.py`` shows it):

- ``Subprocesses``: ``python -m alembic ARGV`` in a child process per command, what a user types;
  ~0.3 s of imports each.
- ``ForkServer``: one server process that has imported Alembic and SQLAlchemy and run nothing;
  it forks one child per command, which calls ``alembic.config.main(argv=...)`` and exits with
  its code. Everything ``env.py`` and the revisions import or create (engines, metadata, the DDL
  runner's memo of types created, session settings, a TEMP table) lives and dies in that child,
  as in a new process; only the imports are shared.

Neither imports ``pytest_reynard_db``: this is the definition the checks are judged by.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

#: Seconds one command may run before it is killed (a lock wait that never ends).
COMMAND_TIMEOUT = 120.0

#: What every command imports before it runs anything: imported once by the fork server.
PRELOADED = (
    "logging.config",
    "alembic.command",
    "alembic.config",
    "alembic.ddl.postgresql",
    "alembic.op",
    "alembic.runtime.environment",
    "alembic.runtime.migration",
    "psycopg",
    "sqlalchemy.dialects.postgresql.psycopg",
)

#: Exit code of a command killed after ``COMMAND_TIMEOUT``.
TIMED_OUT = -9


@dataclass(frozen=True)
class Command:
    """One ``alembic`` command as it ended: its arguments, exit code and output
    (stdout and stderr, interleaved as a terminal shows them)."""

    argv: tuple[str, ...]
    code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def error(self) -> str:
        """The output's last line but SQLAlchemy's ``[SQL: ...]`` and ``(Background ...)``
        lines: Alembic's ``FAILED: ...`` or the exception."""
        lines = [
            line.strip()
            for line in self.output.splitlines()
            if line.strip() and not line.startswith(("[SQL:", "[parameters:", "(Background on"))
        ]
        return lines[-1] if lines else f"exit code {self.code}"


class AlembicRunner(Protocol):
    """Runs ``alembic ARGV`` as a fresh command in ``cwd`` with exactly the environment ``env``."""

    def __call__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> Command: ...


class Subprocesses:
    """``python -m alembic ARGV``, a new interpreter per command."""

    def __init__(self, python: str = sys.executable, timeout: float = COMMAND_TIMEOUT) -> None:
        self.python = python
        self.timeout = timeout

    def __call__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> Command:
        try:
            done = subprocess.run(
                [self.python, "-m", "alembic", *argv],
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else ""
            return Command(tuple(argv), TIMED_OUT, output + f"\ntimed out after {self.timeout} s")
        return Command(tuple(argv), done.returncode, done.stdout)


class ForkServer:
    """A process that imported Alembic and SQLAlchemy, forking one child per command.

    A context manager (the server is stopped on exit). ``env``: the server's own
    environment (what the interpreter reads at start: ``PYTHONPATH``...); each command
    still gets exactly its own ``env``. Not for concurrent use.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        # Run from its file, not as ``-m bench...``: nothing of this repository goes on sys.path.
        bootstrap = f"import runpy; runpy.run_path({__file__!r}, run_name='__fork_server__')"
        self._process = subprocess.Popen(
            [python, "-c", bootstrap],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=None if env is None else dict(env),
            cwd=tempfile.gettempdir(),
        )
        self.timeout = timeout

    def __call__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> Command:
        request = {"argv": list(argv), "cwd": str(cwd), "env": dict(env), "timeout": self.timeout}
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        reply = stdout.readline()
        if not reply:
            raise RuntimeError(f"the alembic fork server died (exit {self._process.wait()})")
        answer = json.loads(reply)
        return Command(tuple(argv), int(answer["code"]), str(answer["output"]))

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- the server side: runs in the fork server's interpreter -------------------------------------
def _serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer one request a line until stdin closes; nothing of Alembic is run here."""
    for name in PRELOADED:
        importlib.import_module(name)

    for line in requests:
        request = json.loads(line)
        code, output = _fork_one(request)
        replies.write(json.dumps({"code": code, "output": output}) + "\n")
        replies.flush()


def _fork_one(request: dict[str, Any]) -> tuple[int, str]:
    """Fork a child for one command; its exit code and output."""
    with tempfile.TemporaryFile() as captured:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child never returns
            _child(request, captured.fileno())
        code = _wait(pid, float(request["timeout"]))
        captured.seek(0)
        output = captured.read().decode(errors="replace")
    if code == TIMED_OUT:
        output += f"\ntimed out after {request['timeout']} s"
    return code, output


def _child(request: dict[str, Any], out: int) -> None:
    """``python -m alembic ARGV`` in ``cwd``, in this forked interpreter; exits with its code."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = request["cwd"]  # as ``python -m`` puts the working directory first
        sys.argv = ["alembic", *request["argv"]]
        from alembic.config import main

        main(argv=request["argv"], prog="alembic")
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:
        traceback.print_exc()  # what the interpreter prints for an uncaught exception
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_code(code: object) -> int:
    """The process exit code ``sys.exit(code)`` gives."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _wait(pid: int, timeout: float) -> int:
    """The child's exit code; killed (``TIMED_OUT``) after ``timeout`` seconds."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return TIMED_OUT
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__fork_server__":
    _serve(sys.stdin, sys.stdout)
