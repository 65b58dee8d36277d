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
armed as in the parent. It talks to the parent in JSON lines on its own stdout
descriptor (progress events, then the results); the ``env.py``'s own prints go to
stderr, which is the parent's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..registry import Database, Registry
from .result import CheckResult
from .runner import Progress

if TYPE_CHECKING:  # the servers load on use: file checks need none
    from ..postgres import Server

#: The child's module: not imported by ``checks`` itself, so ``-m`` runs it cleanly.
CHILD = "pytest_reynard_db.checks.child"


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
    request = {
        "root": str(registry.root),
        "base": registry.base,  # check --base replaces the registry's
        "database": db.name,
        "checks": list(names),
        "server": server.url.render_as_string(hide_password=False) if server else None,
        "timeout": timeout,
        "allow": list(allow),
        "sys_path": [p for p in sys.path if p],
        "note_prefix": note_prefix,
        "progress": progress is not None,  # the child says how far a check is only if heard
    }
    read, write = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", CHILD, str(write)],
            stdin=subprocess.PIPE,
            pass_fds=(write,),
            text=True,
        )
    finally:
        os.close(write)
    results: list[CheckResult] | None = None
    error: str | None = None
    try:
        with os.fdopen(read, encoding="utf-8") as replies:
            assert child.stdin is not None
            child.stdin.write(json.dumps(request))
            child.stdin.close()
            for line in replies:
                reply = json.loads(line)
                if "progress" in reply and progress is not None:
                    progress(*reply["progress"])
                elif "results" in reply:
                    results = [CheckResult.from_json(entry) for entry in reply["results"]]
                elif "error" in reply:
                    error = reply["error"]
        code = child.wait()
    finally:  # interrupted (Ctrl-C, SIGTERM): the child ends too, dropping its databases
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if results is not None:
        return results
    if error is None:
        why = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
        error = f"the interpreter running its checks {why} before it reported (see its stderr)"
    if db.name not in error:
        error = f"database {db.name!r}: {error}"
    return [CheckResult(db.name, name, False, error) for name in names]
