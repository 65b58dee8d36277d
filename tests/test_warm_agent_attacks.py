"""A warm run's agent (``postgres.agent``) attacked: what ends a run (a child a test forks,
a signal while the agent waits for the kept server or starts it, the kept server killed
mid-run) leaves neither the agent waiting nor a database, record or broken kept server.
The runs are a user's shell's (``warm_runs``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reynard_trees import (
    HAS_A_THREAD,
    clean_env,
    hold_file_lock,
    pytest_argv,
    wait_for,
    wait_until,
)
from warm_runs import ARGS, alive, children, run, run_databases, start

from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.agent import END_TIMEOUT
from pytest_reynard_db.postgres.executor import reusable_server
from pytest_reynard_db.postgres.reaper import stop_postmaster

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
    holder = hold_file_lock(lock, marker, release, "a test")
    try:
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


def test_a_kept_server_start_cut_short_leaves_nothing_half_made(
    kept: tuple[Path, EphemeralServer],
) -> None:
    """The run's process group ended (a CI job cancelled, a terminal closed: SIGTERM or
    SIGHUP to all) while the agent starts the kept server, copying the initdb cache to its
    data directory: the copy cut short was taken for a data directory by every later run,
    which failed to start the server until ``reynard-migrate server stop``. A FIFO in the
    cache holds the copy midway, deterministically."""
    project, server = kept
    base_dir = server.process.base_dir
    assert base_dir is not None
    stop_postmaster(base_dir / "data")
    shutil.rmtree(base_dir)
    (cache,) = (path for path in base_dir.parent.glob("initdb-*") if path.is_dir())
    fifo = cache / "zz-holds-the-copy"
    os.mkfifo(fifo)
    session = start(project, "test_where.py")
    try:
        writer = wait_until(lambda: _opened_by_a_reader(fifo), 60, "the copy to reach the FIFO")
        assert writer is not None  # what wait_until returns is true
        os.killpg(session.pid, signal.SIGTERM)  # the copy, reading the FIFO, is cut short
        session.communicate(timeout=60)
        os.close(writer)
    finally:
        fifo.unlink()
    again = run(project, "test_where.py")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stderr == ""


def _opened_by_a_reader(fifo: Path) -> int | None:
    """A writer's end of ``fifo`` once a reader has opened it (then blocked on reading)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


#: A test that kills the kept server's postmaster (-9: the OOM killer, a crash), then waits
#: for its backends to go: one still up may yet run the run's DROP DATABASE (an idle backend
#: sees the postmaster's death and the statement at once, and on a busy machine may take the
#: statement first), and then nothing was left to drop.
KILLS_THE_SERVER = """\
import os, pathlib, signal, time

def running(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False

def test_kills_the_server(reynard_db):
    runtime = pathlib.Path(os.environ["REYNARD_DB_RUNTIME_DIR"])
    (pid_file,) = runtime.glob("reuse-*/data/postmaster.pid")
    postmaster = int(pid_file.read_text().split()[0])
    backends = pathlib.Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    os.kill(postmaster, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(map(running, backends)):
        assert time.monotonic() < deadline, "a backend outlived its postmaster by 60 s"
        time.sleep(0.01)
    pathlib.Path("killed").write_text(str(postmaster))
"""


@pytest.mark.parametrize("by", ["agent", "test-process"])
def test_a_kept_server_killed_mid_run_loses_no_database(
    kept: tuple[Path, EphemeralServer], tmp_path: Path, by: str
) -> None:
    """The kept server killed mid-run: the run's databases cannot be dropped at its end
    (said in one line), and its record was removed all the same, so that they were no
    run's to drop, kept for good. The record is kept: the next run restarts the server and
    drops them. By the run's agent, and by a test process that does its server's work
    itself (a thread kept it from forking the agent)."""
    project, _ = kept
    (project / "test_kills.py").write_text(KILLS_THE_SERVER)
    if by == "agent":
        killed = run(project, "test_kills.py")
    else:
        (tmp_path / "threaded_plugin.py").write_text(HAS_A_THREAD)
        path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
        killed = run(project, "-p", "threaded_plugin", "test_kills.py", PYTHONPATH=path)
    # the same line by both (review13: the test process's did not say the next run drops them)
    assert "reynard-db: clean-up failed: could not drop the run's databases" in killed.stderr
    assert "the next run drops them" in killed.stderr
    assert "Traceback" not in killed.stdout + killed.stderr
    # Reaped (by init, in its time): till then PostgreSQL takes its pid for a postmaster's.
    postmaster = Path(f"/proc/{(project / 'killed').read_text()}")
    wait_until(lambda: not postmaster.exists(), 30, "the killed postmaster to be reaped")
    again = run(project, "test_where.py")
    assert again.returncode == 0, again.stdout + again.stderr
    restarted = EphemeralServer(reusable_server())
    try:
        assert run_databases(restarted) == []
        assert not list(restarted.process.base_dir.glob("runs/*.json"))  # type: ignore[union-attr]
    finally:
        restarted.close()


@pytest.mark.parametrize("named_by", ["PGHOSTADDR", "PGSERVICE"])
def test_the_agent_connects_to_the_kept_server_alone(
    kept: tuple[Path, EphemeralServer], tmp_path: Path, named_by: str
) -> None:
    """libpq's environment names another address for the kept server's host (``$PGHOSTADDR``,
    a service's ``hostaddr``): the test process's guard pins each connection it lets
    through, but the agent's were its own, unguarded, and went there: the run failed, or
    its admin statements (CREATE, DROP DATABASE, the prune) reached a server not ours.
    Whatever answers at that address is never asked."""
    project, server = kept
    assert server.url.port is not None
    env = {"PGHOSTADDR": "127.0.0.2"}
    if named_by == "PGSERVICE":
        services = tmp_path / "pg_service.conf"
        services.write_text("[production]\nhostaddr=127.0.0.2\n")
        env = {"PGSERVICEFILE": str(services), "PGSERVICE": "production"}
    with _listening(("127.0.0.2", server.url.port)) as knocks:
        result = run(project, "test_where.py", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert knocks == []


@contextlib.contextmanager
def _listening(address: tuple[str, int]) -> Iterator[list[tuple[str, int]]]:
    """Who connects to ``address`` in the block (each connection closed at once)."""
    knocks: list[tuple[str, int]] = []
    with socket.create_server(address) as listener:
        listener.settimeout(0.05)

        def accept() -> None:
            while listener.fileno() != -1:
                with contextlib.suppress(OSError):  # the timeout, or closed
                    connection, peer = listener.accept()
                    knocks.append(peer)
                    connection.close()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield knocks
    thread.join(timeout=5)
