"""A warm run's agent (``postgres.agent``): the admin work of a ``--reynard-db-reuse`` run is
done by a child forked as the plugin registers, and whatever ends the run, the agent drops
what the run made and goes.

The runs here are started as a user's shell starts them (``clean_env``: no
``$PYTEST_XDIST_WORKER``, with which a pytest a test starts in an xdist worker forks no
agent, as a worker's own runs do not).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reynard_trees import (
    HOLD_FILE_LOCK,
    clean_env,
    ctrl_c_as_in_a_terminal,
    pytest_argv,
    reynard_project,
    wait_for,
    wait_until,
)

from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.agent import END_TIMEOUT
from pytest_reynard_db.postgres.executor import reusable_server

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


@pytest.fixture
def kept(stop_reused_server: None, tmp_path: Path) -> Iterator[tuple[Path, EphemeralServer]]:
    """A project, and the kept server its first ``--reynard-db-reuse`` run started."""
    project = reynard_project(tmp_path / "project")
    (project / "test_where.py").write_text(WHERE)
    first = run(project)
    assert first.returncode == 0, first.stdout + first.stderr
    server = EphemeralServer(reusable_server())  # attaches to the running one
    try:
        yield project, server
    finally:
        server.close()


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        pytest_argv(*ARGS, *args),
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
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


def test_a_warm_run_leaves_the_kept_server_to_its_agent(
    kept: tuple[Path, EphemeralServer],
) -> None:
    """The run's record names the agent, a child of the test process; the test process
    never imports psycopg for a test that does not connect; at the end the run's
    databases, its record and its agent are gone, and nothing is said on stderr."""
    project, server = kept
    result = run(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    seen = where(result.stdout)
    assert seen["psycopg"] is False
    records = seen["records"]
    assert isinstance(records, dict) and len(records) == 1, records
    (agent,) = records.values()
    assert agent != seen["pid"]
    assert not alive(agent)
    assert run_databases(server) == []
    assert not list(server.process.base_dir.glob("runs/*.json"))  # type: ignore[union-attr]


def test_a_warm_run_whose_tests_connect(kept: tuple[Path, EphemeralServer]) -> None:
    """Connections, rolled-back transactions and fresh clones (made from the clone pool's
    threads, over the agent's one pipe) work as without an agent."""
    project, server = kept
    (project / "test_connect.py").write_text(
        "from sqlalchemy import text\n"
        "def test_connection(reynard_db_connection):\n"
        "    assert reynard_db_connection.execute(text('SELECT 1')).scalar() == 1\n"
        "def test_fresh(reynard_db_fresh):\n"
        "    with reynard_db_fresh.engine.connect() as conn:\n"
        "        assert conn.execute(text('SELECT version_num FROM alembic_version')).scalar()\n"
        "def test_fresh_again(reynard_db_fresh):\n"
        "    assert reynard_db_fresh.name\n"
    )
    result = run(project, "test_connect.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert result.stderr == ""
    assert run_databases(server) == []


SLEEPER = """\
import json, os, pathlib, time

def test_sleep(reynard_db):
    runtime = pathlib.Path(os.environ["REYNARD_DB_RUNTIME_DIR"])
    agents = [json.loads(p.read_text())["pid"] for p in runtime.glob("reuse-*/runs/*.json")]
    pathlib.Path("started").write_text(json.dumps({"agents": agents, "db": reynard_db.name}))
    time.sleep(120)
"""


@pytest.mark.parametrize("ending", ["SIGKILL", "SIGTERM", "Ctrl-C"])
def test_a_warm_run_ended_by_a_signal_leaves_nothing(
    kept: tuple[Path, EphemeralServer], ending: str
) -> None:
    """SIGKILL: the agent sees its pipe close and drops what the run made; SIGTERM: the
    run ends as on Ctrl-C and tells its agent; Ctrl-C reaches the agent too (the whole
    process group), which leaves the end to the run. Either way no database, record or
    agent is left, and no traceback is printed."""
    project, server = kept
    (project / "test_sleep.py").write_text(SLEEPER)
    with ctrl_c_as_in_a_terminal():
        session = subprocess.Popen(
            pytest_argv(*ARGS, "test_sleep.py"),
            cwd=project,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's job
        )
    started = json.loads(wait_for(project / "started", session))
    (agent,) = started["agents"]
    assert run_databases(server) == [started["db"]]
    if ending == "Ctrl-C":
        os.killpg(session.pid, signal.SIGINT)
    else:
        session.send_signal(getattr(signal, ending))
    out, err = session.communicate(timeout=60)
    expected = {"SIGKILL": -signal.SIGKILL, "SIGTERM": 128 + signal.SIGTERM, "Ctrl-C": 2}[ending]
    assert session.returncode == expected, out + err
    assert "Traceback" not in out + err
    wait_until(lambda: not alive(agent), timeout=30, what="the agent to end")
    assert run_databases(server) == []
    assert not list(server.process.base_dir.glob("runs/*.json"))  # type: ignore[union-attr]


def test_an_agent_that_died_is_one_line(kept: tuple[Path, EphemeralServer]) -> None:
    """An agent killed from outside: the test that asks for a database fails in one line
    naming it, no traceback; the next run passes and drops what the dead run left."""
    project, server = kept
    (project / "test_killed.py").write_text(
        "import json, os, pathlib, signal, time\n"
        "def test_killed(request):\n"
        "    runtime = pathlib.Path(os.environ['REYNARD_DB_RUNTIME_DIR'])\n"
        "    deadline = time.monotonic() + 60\n"
        "    while not (records := list(runtime.glob('reuse-*/runs/*.json'))):\n"
        "        assert time.monotonic() < deadline, 'the agent wrote no record'\n"
        "        time.sleep(0.02)\n"
        "    (agent,) = [json.loads(p.read_text())['pid'] for p in records]\n"
        "    os.kill(agent, signal.SIGKILL)\n"
        "    request.getfixturevalue('reynard_db')\n"
    )
    result = run(project, "test_killed.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the run's agent (pid" in result.stdout and "ended unexpectedly" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "clean-up" not in result.stdout + result.stderr
    again = run(project, "test_where.py")
    assert again.returncode == 0, again.stdout + again.stderr
    assert run_databases(server) == []
    assert not list(server.process.base_dir.glob("runs/*.json"))  # type: ignore[union-attr]


#: A test whose own child outlives the run (a daemon it starts, a multiprocessing pool
#: never closed): forked from the test process, it holds what that process held. Then
#: the test sleeps for ``$SLEEP`` seconds.
FORKS = """\
import json, os, pathlib, time

def test_forks(reynard_db):
    runtime = pathlib.Path(os.environ["REYNARD_DB_RUNTIME_DIR"])
    agents = [json.loads(p.read_text())["pid"] for p in runtime.glob("reuse-*/runs/*.json")]
    child = os.fork()
    if child == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # not the run's output: its reader would wait for this child
            os.dup2(devnull, fd)
        time.sleep(120)
        os._exit(0)
    found = {"agents": agents, "db": reynard_db.name, "child": child}
    pathlib.Path("started.tmp").write_text(json.dumps(found))
    os.replace("started.tmp", "started")  # whole, when the test reads it
    time.sleep(float(os.environ["SLEEP"]))
"""


@pytest.mark.parametrize("ending", ["end", "SIGKILL"])
def test_a_child_a_test_forks_does_not_keep_the_agent(
    kept: tuple[Path, EphemeralServer], ending: str
) -> None:
    """A child forked by a test holds the agent's pipe as the test process does: the agent,
    waiting for its end, waited for that child's (``END_TIMEOUT`` at the run's end, then
    SIGTERM; forever after a SIGKILL). The run ends at once, and the agent with it."""
    project, server = kept
    (project / "test_forks.py").write_text(FORKS)
    child = None
    try:
        started = time.monotonic()
        session = subprocess.Popen(
            # faulthandler's copy of stderr, which the child would hold too: not the agent's
            pytest_argv(*ARGS, "-p", "no:faulthandler", "test_forks.py"),
            cwd=project,
            env=clean_env(SLEEP="0" if ending == "end" else "120"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        found = json.loads(wait_for(project / "started", session))
        child, (agent,) = found["child"], found["agents"]
        if ending == "SIGKILL":
            session.kill()
        out, err = session.communicate(timeout=60)
        if ending == "end":
            assert session.returncode == 0, out + err
            assert err == ""
            assert time.monotonic() - started < END_TIMEOUT
        wait_until(lambda: not alive(agent), timeout=30, what="the agent to end")
        assert alive(child)  # the child outlived the agent: it held nothing of it
        assert run_databases(server) == []
        assert not list(server.process.base_dir.glob("runs/*.json"))  # type: ignore[union-attr]
    finally:
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.parametrize("ending", ["SIGTERM", "SIGKILL"])
def test_a_run_ended_while_its_agent_waits_for_the_kept_server(
    kept: tuple[Path, EphemeralServer], tmp_path: Path, ending: str
) -> None:
    """Another process holds the kept server's lock (a run attaching, ``server stop``): the
    agent waits for it, minutes at most. A run ended meanwhile ends its agent at once: it
    waited for the lock before it read the run's end (SIGTERM: ``END_TIMEOUT`` more, until
    the run SIGTERMed it; SIGKILL: as long as the lock was held, holding the run's output)."""
    project, server = kept
    marker, release = tmp_path / "holding", tmp_path / "release"
    lock = f"{server.process.base_dir}.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE_LOCK, lock, str(marker), str(release), "a test"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marker, holder)
        err_file = tmp_path / "stderr.txt"
        with err_file.open("w") as err_out:  # a file, read while the run waits
            session = subprocess.Popen(
                pytest_argv(*ARGS, "test_where.py"),
                cwd=project,
                env=clean_env(),
                stdout=subprocess.PIPE,
                stderr=err_out,
                text=True,
            )
        said = "reynard-db: waiting for the reuse server"
        wait_until(lambda: said in err_file.read_text(), 60, "the agent to wait for the lock")
        (agent,) = children(session.pid)
        signalled = time.monotonic()
        session.send_signal(getattr(signal, ending))
        wait_until(lambda: not alive(agent), timeout=30, what="the agent to end")
        out, _ = session.communicate(timeout=60)
        assert time.monotonic() - signalled < END_TIMEOUT
        assert session.returncode == {"SIGTERM": 128 + signal.SIGTERM}.get(ending, -signal.SIGKILL)
        assert holder.poll() is None  # the agent ended while the lock was held
        assert "Traceback" not in out + err_file.read_text()
    finally:
        release.touch()
        holder.communicate(timeout=60)
    assert not list(server.process.base_dir.glob("runs/*.json"))  # type: ignore[union-attr]

