"""A warm run's agent (``postgres.agent``): the admin work of a ``--reynard-db-reuse`` run is
done by a child forked as the plugin registers, and whatever ends the run, the agent drops
what the run made and goes.

The runs are a user's shell's (``warm_runs``); what ends a run the hard way is
``test_warm_agent_attacks``'s.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from reynard_trees import wait_for, wait_until
from warm_runs import alive, run, run_databases, start, where

from pytest_reynard_db.postgres import EphemeralServer


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
    pathlib.Path("started.tmp").write_text(json.dumps({"agents": agents, "db": reynard_db.name}))
    os.replace("started.tmp", "started")  # whole, when the test reads it
    time.sleep(120)
"""


@pytest.mark.parametrize(
    "ending", ["SIGKILL", "SIGTERM", "Ctrl-C", "SIGTERM to the group", "SIGHUP to the group"]
)
def test_a_warm_run_ended_by_a_signal_leaves_nothing(
    kept: tuple[Path, EphemeralServer], ending: str
) -> None:
    """SIGKILL: the agent sees its pipe close and drops what the run made; SIGTERM: the
    run ends as on Ctrl-C and tells its agent; Ctrl-C reaches the agent too (the whole
    process group), which leaves the end to the run. Either way no database, record or
    agent is left, and no traceback is printed. SIGTERM or SIGHUP to the whole group (a
    CI job cancelled, a terminal closed) ends the agent with the run, whose drops then
    find it gone: it dropped what the run made, no clean-up failure to report."""
    project, server = kept
    (project / "test_sleep.py").write_text(SLEEPER)
    session = start(project, "test_sleep.py")
    started = json.loads(wait_for(project / "started", session))
    (agent,) = started["agents"]
    assert run_databases(server) == [started["db"]]
    if ending == "Ctrl-C":
        os.killpg(session.pid, signal.SIGINT)
    elif ending.endswith(" to the group"):
        os.killpg(session.pid, getattr(signal, ending.split()[0]))
    else:
        session.send_signal(getattr(signal, ending))
    out, err = session.communicate(timeout=60)
    expected = {
        "SIGKILL": -signal.SIGKILL,
        "SIGTERM": 128 + signal.SIGTERM,
        "Ctrl-C": 2,
        "SIGTERM to the group": 128 + signal.SIGTERM,
        "SIGHUP to the group": 128 + signal.SIGHUP,
    }[ending]
    assert session.returncode == expected, out + err
    assert "Traceback" not in out + err
    assert "clean-up failed" not in out + err
    wait_until(lambda: not alive(agent), timeout=30, what="the agent to end")
    assert run_databases(server) == []
    assert not list(server.process.base_dir.glob("runs/*.json"))  # type: ignore[union-attr]


@pytest.mark.parametrize("ending", ["SIGKILL", "SIGTERM"])
def test_an_agent_that_died_is_one_line(kept: tuple[Path, EphemeralServer], ending: str) -> None:
    """An agent killed from outside: the test that asks for a database fails in one line
    naming it and how it ended (SIGTERM's exit, 143, not a crash's 2), no traceback; the
    next run passes and drops what the dead run left."""
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
        "    os.kill(agent, getattr(signal, os.environ['ENDING']))\n"
        "    request.getfixturevalue('reynard_db')\n"
    )
    result = run(project, "test_killed.py", ENDING=ending)
    assert result.returncode == 1, result.stdout + result.stderr
    code = {"SIGKILL": -signal.SIGKILL, "SIGTERM": 128 + signal.SIGTERM}[ending]
    assert "the run's agent (pid" in result.stdout
    assert f"ended unexpectedly (exit {code})" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "clean-up" not in result.stdout + result.stderr
    again = run(project, "test_where.py")
    assert again.returncode == 0, again.stdout + again.stderr
    assert run_databases(server) == []
    assert not list(server.process.base_dir.glob("runs/*.json"))  # type: ignore[union-attr]
