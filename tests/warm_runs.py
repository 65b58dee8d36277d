"""What the tests of a warm run's agent (``postgres.agent``) share: the inner runs'
arguments and test, a run in a user's shell, and what is left on the kept server.

The runs are started as a user's shell starts them (``clean_env``: no
``$PYTEST_XDIST_WORKER``, with which a pytest a test starts in an xdist worker forks no
agent, as a worker's own runs do not).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli_fork import run_pytest_argv
from reynard_trees import clean_env, ctrl_c_as_in_a_terminal, pytest_argv

from pytest_reynard_db.postgres import EphemeralServer

ARGS = ("--reynard-db=main", "--reynard-db-reuse", "-s", "-p", "no:randomly")

#: The inner tests: where the test process stands, what the run's record on the kept
#: server says, and whether psycopg was imported in the test process.
WHERE = """\
import json, os, pathlib, sys

def records():
    runtime = pathlib.Path(os.environ["REYNARD_DB_RUNTIME_DIR"])
    return {p.stem: json.loads(p.read_text())["pid"] for p in runtime.glob("reuse-*/runs/*.json")}

def test_where(reynard_db):
    print("WHERE", json.dumps({
        "pid": os.getpid(), "records": records(), "psycopg": "psycopg" in sys.modules,
        "database": reynard_db.name,
    }))
"""


def run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``pytest ARGS args`` in ``project``, in a user's shell with ``env`` exported."""
    return run_pytest_argv(pytest_argv(*ARGS, *args), project, clean_env(**env))


def start(project: Path, *args: str) -> subprocess.Popen[str]:
    """``pytest ARGS args`` begun in ``project`` in a process group of its own, as a
    terminal's job (its output piped)."""
    with ctrl_c_as_in_a_terminal():
        return subprocess.Popen(
            pytest_argv(*ARGS, *args),
            cwd=project,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )


def where(output: str) -> dict[str, object]:
    line = next(line for line in output.splitlines() if "WHERE " in line)
    found: dict[str, object] = json.loads(line.partition("WHERE ")[2])
    return found


def run_databases(server: EphemeralServer) -> list[str]:
    with server.connect() as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'test\\_main\\_%'"
        ).fetchall()
    return sorted(row[0] for row in rows)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rpartition(") ")[2].startswith("Z")


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
