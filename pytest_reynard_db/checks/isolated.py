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
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from typing import IO, TYPE_CHECKING, Any, Protocol

from ..foundation.registry import Database, Registry
from . import SPECS, CheckResult

# The servers load on use (file checks need none).
if TYPE_CHECKING:
    from ..postgres import Server
    from .runner import Progress
    from .spares import Spare

#: The child's module: not imported by ``checks`` itself, so ``-m`` runs it cleanly.
CHILD = "pytest_reynard_db.checks.child"


def _logging_disabled() -> int:
    """``logging.disable``'s level in this process (0: logging not even imported)."""
    logging = sys.modules.get("logging")
    return int(logging.root.manager.disable) if logging is not None else 0


#: Seconds a kept child told there are no more checks has to end on its own.
FINISH_WAIT = 5.0


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
    spare: Spare | None = None,
    run_id: str | None = None,
) -> list[CheckResult]:
    """The results of checks ``names`` on ``db``, run in a child interpreter (``spare``:
    one forked ahead, ``Spare``; ``run_id``: named in its throw-away databases)."""
    child = IsolatedChild(
        registry,
        db,
        timeout=timeout,
        allow=allow,
        note_prefix=note_prefix,
        spare=spare,
        run_id=run_id,
    )
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
        run_id: str | None = None,
    ) -> None:
        """``spare``: a child forked ahead to use (``Spare``); by default an interpreter
        is started for it. ``run_id``: the pytest run whose check items these are
        (``CheckRunner``)."""
        self.db = db
        request = {
            "run_id": run_id,
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
            # the log records the command hides (-q, the default), hidden there too
            "logging_disabled": _logging_disabled(),
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
        self,
        server: Server | None,
        names: Sequence[str],
        progress: Progress | None = None,
        *,
        keep: bool = False,
    ) -> list[CheckResult]:
        """The results of checks ``names`` on ``server`` (None: file checks only).
        ``keep``: the child waits for more checks of its database (``run`` again) until
        ``close``; by default it ends once it has answered."""
        results: list[CheckResult] | None = None
        error: str | None = None
        code: int | None = None
        try:
            self._tell(
                {
                    "server": server.url.render_as_string(hide_password=False) if server else None,
                    "checks": list(names),
                    "progress": progress is not None,  # said how far a check is only if heard
                },
                last=not keep,
            )
            for line in self._replies:
                reply = json.loads(line)
                if "progress" in reply and progress is not None:
                    progress(*reply["progress"])
                elif "results" in reply:
                    results = [CheckResult.from_json(entry) for entry in reply["results"]]
                    if keep:
                        break  # the child reads the next checks
                elif "error" in reply:
                    error = reply["error"]
            if results is None or not keep:
                code = self.process.wait()
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): the child ends too, dropping
            self.close()  # its databases
            raise
        if code is not None:
            self.close()
        if results is not None:
            return results
        if error is None:
            assert code is not None
            why = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
            error = f"the interpreter running its checks {why} before it reported (see its stderr)"
        if self.db.name not in error:
            error = f"database {self.db.name!r}: {error}"
        return [
            CheckResult(self.db.name, name, False, error)
            for name in names
            if SPECS[name].applies_to(self.db)  # as the child would have: no entry else
        ]

    @property
    def alive(self) -> bool:
        """Whether the child still waits for checks (``run(..., keep=True)``)."""
        return not self._replies.closed and self.process.poll() is None

    def close(self, *, done: bool = False) -> None:
        """End the child if it still runs (told nothing more, it exits on its own).
        ``done``: a kept child between checks, told there are no more: given a moment to
        end on its own before it is terminated."""
        child = self.process
        if child.stdin is not None and not child.stdin.closed:
            with suppress(OSError):
                child.stdin.close()
        if done:
            with suppress(subprocess.TimeoutExpired):
                child.wait(timeout=FINISH_WAIT)
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
