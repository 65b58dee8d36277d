"""The child interpreter of ``isolated.run_isolated``: one database's checks, in a
process that has imported nothing of the application before.

``python -m pytest_reynard_db.checks.child FD``: the request on stdin (two JSON lines:
the database, then its server and checks), the answer in JSON lines on descriptor FD
(progress events, then the results, or one error); what the checks and ``env.py``
print goes to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace
from typing import IO, Any

from ..foundation.urls import one_line
from . import CheckResult

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


def _child(requests: IO[str], out: IO[str], forked: bool) -> None:
    """The child's side: read the request on ``requests``, run the checks, answer on
    ``out``. ``forked``: a child forked ahead (``spares.Spare``), which adopts the
    parent's allow-list as it is now, as an interpreter the parent starts does when it
    imports a driver (``child_guard``)."""
    # Imported before the request is read: while the parent is told the database (a
    # forked spare child: while pytest collects) and starts the server.
    from ..foundation.registry import load_registry
    from ..guard import GUARD, redirect_note
    from ..postgres import ExistingServer
    from . import CheckRunner, run_check

    first = requests.readline()
    if not first:  # a spare child no database was given to
        return
    request: dict[str, Any] = json.loads(first)
    if forked and request["cwd"] not in sys.path:
        # what ``python -m`` puts first in a started child (a console script's parent has
        # its scripts folder there): an env.py may import its models from it
        sys.path.insert(0, request["cwd"])
    for entry in reversed(request["sys_path"]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # the parent's as they are now (a conftest may have set a variable env.py reads)
    os.environ.clear()
    os.environ.update(request["environ"])
    os.chdir(request["cwd"])
    if forked:
        _adopt_the_parents_list()
    # the command's -q/-v, as in its own process (``env_run.verbosity``), forked or started
    logging.disable(request.get("logging_disabled", logging.NOTSET))

    told = requests.readline()
    if not told:  # the parent will not run these checks after all
        return

    def say(reply: dict[str, Any]) -> None:
        out.write(json.dumps(reply) + "\n")
        out.flush()

    def advance(
        database: str, check: str, done: int | None = None, total: int | None = None, /
    ) -> None:
        say({"progress": [database, check, done, total]})

    registry = replace(load_registry(request["root"]), base=request.get("base"))
    db = registry.get(request["database"])
    noted = 0
    with GUARD.armed_for(opt_in_hint=OPT_IN_HINT, allow=tuple(request["allow"])):
        # Checks until the parent closes the requests: once (a batch), or one item's at a
        # time for as long as a pytest-xdist worker runs this database's items.
        while told:
            asked = {**request, **json.loads(told)}
            results: list[CheckResult] = []
            server = ExistingServer(asked["server"]) if asked["server"] else None
            try:
                runner = CheckRunner(
                    db,
                    registry,
                    server,
                    progress=advance if asked.get("progress", False) else None,
                    run_id=asked.get("run_id"),
                )
                for name in asked["checks"]:
                    say({"progress": [db.name, name]})
                    results.extend(run_check(runner, name, timeout=asked["timeout"]))
            finally:
                if server is not None:
                    server.stop()
            for redirect in GUARD.redirects[noted:]:
                print(f"{asked['note_prefix']}{redirect_note(redirect)}", file=sys.stderr)
            noted = len(GUARD.redirects)
            say({"results": [_entry(r) for r in results]})
            told = requests.readline()


def _adopt_the_parents_list() -> None:
    """The run's allow-list, from the file ``$REYNARD_DB_GUARD`` names (the parent's, as
    it is now: its server was started after the fork), re-read before a refusal."""
    from ..foundation.errors import ReynardDBError
    from ..guard import GUARD, inherit

    path = os.environ.get(inherit.GUARD_VARIABLE)
    if not path:
        return
    try:
        allowed = inherit.load(path)
    except (OSError, ValueError) as exc:
        raise ReynardDBError(f"the run's allow-list ({path}) cannot be read: {exc}") from None
    GUARD.adopt(allowed, source=path)  # as child_guard._arm does, in its own words


def _entry(result: CheckResult) -> dict[str, Any]:
    return {**result.as_json(), "skipped": result.skipped}


def main(argv: Sequence[str]) -> int:
    """Answer on descriptor ``argv[0]``; what the checks print goes to stderr. The
    requests come on stdin, read from a descriptor of their own (``nothing_on_stdin``)."""
    requests = os.fdopen(os.dup(0), encoding="utf-8")
    nothing_on_stdin()
    return serve(requests, os.fdopen(int(argv[0]), "w", encoding="utf-8"))


def nothing_on_stdin() -> None:
    """Descriptor 0 (and ``sys.stdin``) is ``/dev/null``: an env.py that reads stdin reads
    nothing and goes on, where it read the child's requests (a kept child's next ones, or
    waited for them) or, forked, the command's stdin (a user's terminal, a pipe)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, encoding=sys.stdin.encoding if sys.stdin else None, closefd=False)  # noqa: SIM115


def serve(requests: IO[str], out: IO[str], *, forked: bool = False) -> int:
    """Read the request on ``requests``, answer on ``out``; the exit code. Both the
    interpreter started for it (``main``) and a child forked ahead (``spares.Spare``)
    come here."""
    from ..foundation.errors import ReynardDBError, ctrl_c_silenced, terminate_as_interrupt
    from ..foundation.urls import redact

    parent = os.getppid()
    sys.stdout = sys.stderr  # an env.py's print() must not break the answer
    try:
        # ended by the parent (interrupted): its databases are dropped on the way out. A
        # terminal's Ctrl-C comes to the child too, then its parent's SIGTERM: psycopg,
        # cancelling the statement the first cut short, logged the second ("query
        # cancellation interrupted (Terminated)") above the command's one line.
        with terminate_as_interrupt(silence=True), ctrl_c_silenced():
            _end_with_parent(parent)
            _child(requests, out, forked)
    except KeyboardInterrupt:
        return 130
    except ReynardDBError as exc:  # the registry or the server: its one line, per check
        out.write(json.dumps({"error": redact(exc)}) + "\n")
        return 2
    except Exception as exc:  # a bug: still one line, per check
        out.write(json.dumps({"error": redact(f"{type(exc).__name__}: {one_line(exc)}")}) + "\n")
        return 2
    finally:
        # Both closed here, not left to the collector: a pipe collected open is a
        # ResourceWarning ("Exception ignored" where a user's warnings are errors).
        requests.close()
        with suppress(OSError):  # a parent gone (killed) reads no more
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
