"""Attacks on the check items' server launched as the plugin registers (issue 25, row 8:
``options.surely_runs_check_items``, ``initdb_cache.begin_preparing(launch=True)``, the
first hook's ``Prepared.thread_ended`` then ``fork_spares``).

Six worked and are fixed: the children were not forked about one run in three when
the first hook had waited for the launching thread (Python's join returns before the
system's thread is gone, and ``fork_spares`` counts the system's); a SIGTERM while the
first hook waited for a cold initdb was a traceback of ours and exit 1 (Ctrl-C: a
traceback of ours); ``-qh`` (a help) launched a server; a start whose port was taken
launched again once, not twice; a wait for another run's initdb build was not said; a
hangup ignored by ``nohup`` ended the run (before this change too). A seventh, a Ctrl-C
that left a lock held hung the run's end, is fixed by the lead: that end waits for an
abandoned start a bounded time (``initdb_cache.ABANDONED_START_WAIT``), then stops the
server it launched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pytest_reynard_db.foundation.filesystem import file_lock
from pytest_reynard_db.postgres import find_binaries
from pytest_reynard_db.postgres.executor import EphemeralPostgres
from pytest_reynard_db.postgres.initdb_cache import cache_dir, server_binaries
from pytest_reynard_db.postgres.reaper import stop_postmaster
from pytest_reynard_db.postgres.runas import run_as, runtime_root
from tests.reynard_trees import clean_env, pytest_argv, reynard_project, run_pytest, wait_until
from tests.test_early_attacks import SEES_THE_EARLY_START
from tests.test_early_initdb import (
    NO_DATABASE_NEEDED,
    _initdb_entries,
    entry_point_plugin,
    running_servers,
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: the Reynard registry, no database selected in its ini."""
    return reynard_project(tmp_path / "project")


#: ``Prepared.thread_ended`` then ``fork_spares``, as the first hook does, many times: a
#: thread that, like the launching one, starts a process and ends. Prints how many times
#: no child was forked.
JOIN_THEN_FORK = """\
import subprocess, sys, threading
from concurrent.futures import Future
from pathlib import Path

from pytest_reynard_db.checks.spares import fork_spares
from pytest_reynard_db.postgres.initdb_cache import Prepared

refused = 0
for _ in range(int(sys.argv[2])):
    prepared = Prepared(Future(), Future(), launched=Future())
    prepared.thread = threading.Thread(target=subprocess.run, args=(["true"],))
    prepared.thread.start()
    prepared.thread_ended()
    spares = fork_spares(1, Path(sys.argv[1]))
    refused += len(spares) == 0
    spares.close()
print(refused)
"""


def test_the_children_fork_once_the_launching_thread_ended(tmp_path: Path) -> None:
    """Python's ``join`` returns before the system's thread is gone (``/proc/self/task``
    still listed it one time in three): ``fork_spares``, which counts the system's
    threads, then refused to fork, and the check items each started an interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", JOIN_THEN_FORK, str(tmp_path), "60"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert done.stdout.strip() == "0", f"no child forked {done.stdout.strip()} times in 60"


#: A plugin registered after ours whose first hook runs just before ours (pluggy calls
#: the later-registered first): it says the first hook has come.
FIRST_HOOK_SEEN = """\
import os, pathlib

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config):
    pathlib.Path(os.environ["FIRST_HOOK_FILE"]).write_text("reached")
"""


def _slow_initdb(bindir: Path, seconds: float) -> Path:
    """``bindir``: the real PostgreSQL binaries, its initdb slowed by ``seconds``."""
    real = find_binaries()
    bindir.mkdir()
    (bindir / "postgres").symlink_to(real.postgres)
    (bindir / "initdb").write_text(f'#!/bin/sh\nsleep {seconds}\nexec {real.initdb} "$@"\n')
    (bindir / "initdb").chmod(0o755)
    return bindir


@pytest.mark.parametrize(
    "how", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["sigterm", "sighup", "sigint"]
)
def test_a_run_ended_while_the_first_hook_waits_for_a_cold_initdb(
    project: Path, runtime: Path, tmp_path: Path, how: signal.Signals
) -> None:
    """Cold cache: the first hook waits for the launching thread (its initdb) before it
    forks the children. A run ended then ends as one ended before the first hook: by
    its signal, no traceback, the cache whole, no server left."""
    plugins = tmp_path / "plugins"
    entry_point_plugin(plugins, "first_hook_seen", FIRST_HOOK_SEEN)
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)
    reached = tmp_path / "reached"
    env = clean_env(
        REYNARD_DB_RUNTIME_DIR=str(runtime),
        REYNARD_DB_PG_BIN=str(_slow_initdb(runtime.parent / "bin", 6)),
        FIRST_HOOK_FILE=str(reached),
        PYTHONPATH=str(plugins),
    )
    argv = [sys.executable, "-m", "pytest", "-p", "reynard_db", "-p", "no:cacheprovider"]
    output_file = tmp_path / "output.txt"
    with output_file.open("w") as output:  # a file, not a pipe: a child left would hold it
        process = subprocess.Popen(
            [*argv, "--reynard-db=ecs", "--reynard-db-checks", "test_nothing.py"],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    wait_until(lambda: reached.exists() or process.poll() is not None, 60, "the first hook")
    time.sleep(0.5)  # our first hook, next, is waiting for the initdb (6 s) by then
    process.send_signal(how)
    process.wait(timeout=60)

    said = output_file.read_text()
    assert process.returncode == -how, said
    assert "Traceback" not in said, said
    complete, scratch = _initdb_entries(runtime)
    assert len(complete) == 1 and scratch == [], os.listdir(runtime)
    assert not running_servers(runtime), os.listdir(runtime)
    assert not list(runtime.glob("server-*")), os.listdir(runtime)


@pytest.mark.parametrize("flags", ["-qh", "-hv", "-qV"])
def test_combined_short_flags_that_run_no_test_launch_nothing_ahead(
    project: Path, runtime: Path, tmp_path: Path, flags: str
) -> None:
    """``-qh`` is ``-q -h`` (argparse combines short flags): a help, which runs no test,
    launched the check items' server as the plugin registered (``--help`` did not)."""
    (project / "conftest.py").write_text(SEES_THE_EARLY_START)
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)
    seen_dir = tmp_path / "seen"
    seen_dir.mkdir()

    done = run_pytest(
        project,
        "--reynard-db=ecs",
        "--reynard-db-checks",
        flags,
        REYNARD_DB_RUNTIME_DIR=str(runtime),
        SEEN_DIR=str(seen_dir),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "reynard-db" not in done.stderr, done.stderr
    # begun at the first hook (the initdb thread, as for any run), not before
    assert [path.read_text() for path in seen_dir.iterdir()] == ["(True, False, False)"]
    assert not list(runtime.glob("server-*")), os.listdir(runtime)


#: A ``postgres`` that, its first ``TAKEN`` starts, asks for its port to be taken (a file
#: ``want-PORT``) and waits until it is (``taken-PORT``): someone outside took the port
#: between its reserve and the postmaster's bind.
PORT_TAKEN_FIRST = """\
#!/bin/sh
port=
prev=
for arg in "$@"; do
    [ "$prev" = -p ] && port=$arg
    prev=$arg
done
if [ -n "$port" ] && [ "$(ls {marks} | grep -c '^taken-')" -lt {taken} ]; then
    touch {marks}/want-$port
    while [ ! -e {marks}/taken-$port ]; do sleep 0.02; done
fi
exec {postgres} "$@"
"""


def _take_ports_asked(marks: Path, held: list[socket.socket], stop: threading.Event) -> None:
    """Take each port a ``PORT_TAKEN_FIRST`` postgres asks for, until ``stop``."""
    while not stop.is_set():
        for want in marks.glob("want-*"):
            port = int(want.name.split("-", 1)[1])
            sock = socket.socket()
            # bound, not listening: the postmaster's bind fails, the probe is refused
            sock.bind(("127.0.0.1", port))
            held.append(sock)
            want.unlink()
            (marks / f"taken-{port}").touch()
        time.sleep(0.01)


def test_a_start_launches_again_twice_when_its_port_is_taken(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone outside took the port between reserve and bind: the server is launched
    again on another port, twice at most (three launches, as before ``launch`` and
    ``finish_start`` were split, which left one)."""
    monkeypatch.setenv("REYNARD_DB_RUNTIME_DIR", str(runtime))
    real = find_binaries()
    marks = runtime.parent / "marks"
    marks.mkdir(mode=0o777)
    marks.chmod(0o777)  # the server's user (postgres, when root runs the suite) writes there
    bindir = runtime.parent / "bin"
    bindir.mkdir()
    (bindir / "initdb").symlink_to(real.initdb)
    script = PORT_TAKEN_FIRST.format(marks=marks, taken=2, postgres=real.postgres)
    (bindir / "postgres").write_text(script)
    (bindir / "postgres").chmod(0o755)
    binaries = find_binaries({"REYNARD_DB_PG_BIN": str(bindir)})
    held: list[socket.socket] = []
    stop = threading.Event()
    taker = threading.Thread(target=_take_ports_asked, args=(marks, held, stop))
    taker.start()
    try:
        with EphemeralPostgres(binaries=binaries, boot_timeout=60) as process:
            taken = sorted(int(sock.getsockname()[1]) for sock in held)
            assert len(taken) == 2 and process.port not in taken, (process.port, taken)
    finally:
        stop.set()
        taker.join()
        for sock in held:
            sock.close()
    assert not running_servers(runtime), os.listdir(runtime)


def test_a_wait_for_another_runs_initdb_is_said(
    project: Path, runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cold cache, another run building it (its lock held): the first hook waits for the
    launching thread, whose "waiting for" line was lost in pytest's capture. The run
    stood still, silent, before its header (up to ``--lock-timeout``)."""
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)
    monkeypatch.setenv("REYNARD_DB_RUNTIME_DIR", str(runtime))
    user = run_as()
    root = runtime_root(user)
    cache = cache_dir(server_binaries(user, root), user, root)
    output_file = tmp_path / "output.txt"
    with file_lock(f"{cache}.lock", "the test's build"):
        with output_file.open("w") as output:
            process = subprocess.Popen(
                pytest_argv("--reynard-db=ecs", "--reynard-db-checks", "test_nothing.py"),
                cwd=project,
                env=clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime)),
                stdout=subprocess.DEVNULL,
                stderr=output,
            )
        wait_until(
            lambda: "waiting for" in output_file.read_text() or process.poll() is not None,
            30,
            "the run to say its wait",
        )
        said = output_file.read_text()  # while the lock is held
    process.wait(timeout=120)

    assert process.returncode == 0, output_file.read_text()
    assert f"reynard-db: waiting for the initdb cache {cache.name}" in said, said
    assert f"held by pid {os.getpid()}" in said, said
    assert output_file.read_text().strip().splitlines()[-1].startswith("reynard-db: waiting")


#: A test that says it has begun, then takes its time.
SLOW_TEST = """\
import os, pathlib, time


def test_slow():
    pathlib.Path(os.environ["STARTED_FILE"]).write_text("started")
    time.sleep(3)
"""


@pytest.mark.parametrize(
    "options",
    [["--reynard-db=ecs"], ["--reynard-db=ecs", "--reynard-db-checks"]],
    ids=["tests", "checks"],
)
def test_a_hangup_ignored_by_nohup_stays_ignored(
    project: Path, runtime: Path, tmp_path: Path, options: list[str]
) -> None:
    """``nohup pytest ...``, then the terminal closes (SIGHUP): pytest alone goes on; the
    run's handlers (``errors.terminate_as_interrupt``) ended it, exit 129."""
    (project / "test_slow.py").write_text(SLOW_TEST)
    started = tmp_path / "started"
    process = subprocess.Popen(
        pytest_argv(*options, "test_slow.py"),
        cwd=project,
        env=clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime), STARTED_FILE=str(started)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # nohup's
    )
    wait_until(lambda: started.exists() or process.poll() is not None, 60, "the slow test")
    process.send_signal(signal.SIGHUP)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0, out + err
    assert " passed in " in out.splitlines()[-1] and "failed" not in out, out
    assert "Traceback" not in err and "reynard-db" not in err, err
    assert not list(runtime.glob("server-*")), os.listdir(runtime)


#: The check items' server launched, then Python's import lock held by the main thread
#: (where a Ctrl-C that cut an import short leaves it, seen at the end of a run ended
#: while its conftest imported), then the run's end (``stop_untaken``).
IMPORT_LOCK_LEFT_HELD = """\
import _imp

from pytest_reynard_db.postgres.initdb_cache import begin_preparing

prepared = begin_preparing(launch=True)
prepared.thread_ended()
_imp.acquire_lock()
prepared.finish_starting()
prepared.stop_untaken()
print("ended")
"""


def test_a_run_ended_with_a_lock_left_held_does_not_wait_for_ever(runtime: Path) -> None:
    """A Ctrl-C can leave a lock held by the main thread (Python's import lock, logging's:
    cut between its acquire and its ``try``); the start's thread, which imports and logs
    (psycopg), then waits for it for ever, and the run's end waits for that thread: the
    run hung (faulthandler showed both threads)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", IMPORT_LOCK_LEFT_HELD],
            env=clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime)),
            capture_output=True,
            text=True,
            timeout=20,
        )
        left = running_servers(runtime)
    finally:
        for data in running_servers(runtime):
            stop_postmaster(data)
    assert done.returncode == 0 and done.stdout == "ended\n", done.stderr
    assert left == [], "the server the stuck start launched was left running"
