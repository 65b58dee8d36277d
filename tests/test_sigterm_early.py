"""SIGTERM to a ``--reynard-db-checks`` run at the two moments it went wrong (session 12's
review): each provoked deterministically, by a run held at that moment (a blocking
conftest or ``-p`` plugin; a FIFO in the initdb cache, where the server's start copies).

- From the first hook to pytest_configure, pytest cannot make a clean exit of a Ctrl-C:
  ``Terminated`` raised then was a traceback and exit 1. The run now stops what it began
  (its server, its check children, its guard) and ends by the signal.
- A run interrupted while it waited for the server its first hook began to start had
  taken that start from the end's clean-up: nothing waited for it, and the interpreter's
  exit removed the server's directory while the start still copied the initdb cache
  into it (half a data directory, no owner record, reaped only 120 s later).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from pytest_reynard_db.guard.inherit import PREFIX as GUARD_FILE_PREFIX
from tests.reynard_trees import (
    HAS_A_THREAD,
    clean_env,
    ctrl_c_as_in_a_terminal,
    reynard_project,
    run_pytest,
    wait_until,
)
from tests.test_early_initdb import running_servers

A_DATABASE = "def test_one(reynard_db):\n    assert reynard_db.head\n"

#: Blocks, once the file ``{marker}`` is written, until the run is ended: as a conftest
#: (imported after the plugin's first hook) or in a ``-p`` plugin's first hook.
HOLDS_THE_RUN = """\
import pathlib, time

def hold():
    pathlib.Path({marker!r}).write_text("held")
    time.sleep(120)
"""
HELD_CONFTEST = HOLDS_THE_RUN + "\nhold()\n"
HELD_PLUGIN = HOLDS_THE_RUN + "\n\ndef pytest_load_initial_conftests(early_config):\n    hold()\n"

#: A conftest that dumps every thread's stack to ``{dump}`` on SIGUSR1 (``faulthandler``,
#: from C: also while the main thread waits on a lock), then writes ``{marker}``.
#: A conftest whose run writes its threads' stacks on SIGUSR1, from a Python handler (run in
#: the main thread, the GIL held): faulthandler's C handler, dumping every thread from
#: inside the signal, crashed the run with SIGSEGV once under load (CI, 2026-12-07).
SHOWS_ITS_STACKS = """\
import pathlib, signal, sys, traceback

DUMP = open({dump!r}, "w")

def _dump(signum, frame):  # in faulthandler's words: 'File "...", line N in name'
    for thread, stack in sys._current_frames().items():
        DUMP.write(f"Thread {{thread}}:\\n")
        for at in reversed(traceback.extract_stack(stack)):
            DUMP.write(f'  File "{{at.filename}}", line {{at.lineno}} in {{at.name}}\\n')
    DUMP.flush()

signal.signal(signal.SIGUSR1, _dump)
pathlib.Path({marker!r}).write_text("ready")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: the Reynard registry, one test that takes a database."""
    root = reynard_project(tmp_path / "project")
    (root / "test_one.py").write_text(A_DATABASE)
    return root


#: The runs the test started: killed with their process group after it (a test that fails
#: while its run is held must not leave the run, nor its children, held for good).
_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _runs_killed() -> Iterator[None]:
    yield
    while _STARTED:
        run = _STARTED.pop()
        if run.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
            run.wait()


def start_run(
    project: Path, runtime: Path, *args: str, checks: bool = True, **env: str
) -> subprocess.Popen[bytes]:
    """``pytest --reynard-db=ecs --reynard-db-checks`` (``checks``) in ``project``, its
    output in ``output.txt`` (a file, not a pipe: a child left would hold a pipe), Ctrl-C
    as in a terminal. Its command line names the project (``--rootdir``): a forked check
    child is found by it."""
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--rootdir={project}"]
    argv += [*args, "--reynard-db=ecs", *(["--reynard-db-checks"] if checks else []), "test_one.py"]
    with (project / "output.txt").open("w") as output, ctrl_c_as_in_a_terminal():
        run = subprocess.Popen(
            argv,
            cwd=project,
            env=clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1", **env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _STARTED.append(run)
    return run


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left to a container's init that reaps none does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_naming(text: str) -> list[int]:
    """The live processes whose command line holds ``text`` (``pgrep -f``), but ours."""
    found = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split() if int(p) != os.getpid() and alive(int(p))]


def assert_nothing_left(runtime: Path, project: Path, output: str) -> None:
    """No server directory, no postmaster, no forked check child of the run."""
    assert not list(runtime.glob("server-*")), (os.listdir(runtime), output)
    assert processes_naming(str(runtime)) == [], output
    assert processes_naming(str(project)) == [], output


@pytest.mark.parametrize(
    ("held_in", "how"),
    [("conftest", signal.SIGTERM), ("plugin", signal.SIGTERM), ("conftest", signal.SIGINT)],
    ids=["conftest-sigterm", "plugin-sigterm", "conftest-sigint"],
)
def test_a_run_ended_before_pytest_configure_leaves_nothing(
    project: Path, runtime: Path, tmp_path: Path, held_in: str, how: signal.Signals
) -> None:
    """Held in a conftest (its import follows the plugin's first hook: the check items'
    children forked, the server starting) or in a ``-p`` plugin's first hook (an imported
    module outside the libraries: no spare forked; the run's agent is, as the plugin
    registers, and starts the server). SIGTERM ends it by the signal, once the agent has
    stopped its server; Ctrl-C (SIGINT) with pytest's own traceback of the conftest, as
    without the plugin."""
    marker = tmp_path / "held"
    if held_in == "conftest":
        (project / "conftest.py").write_text(HELD_CONFTEST.format(marker=str(marker)))
        run = start_run(project, runtime)
    else:
        plugins = tmp_path / "plugins"
        plugins.mkdir()
        (plugins / "held_plugin.py").write_text(HELD_PLUGIN.format(marker=str(marker)))
        run = start_run(project, runtime, "-p", "held_plugin", PYTHONPATH=str(plugins))
    output = project / "output.txt"
    wait_until(lambda: marker.exists() or run.poll() is not None, 60, "the run to be held")
    wait_until(
        lambda: running_servers(runtime) or run.poll() is not None,
        60,
        "the server its first hook starts (a run of check items needs it)",
    )
    assert run.poll() is None, output.read_text()
    forked = [pid for pid in processes_naming(str(project)) if pid != run.pid]
    # the run's agent (forked as the plugin registers), and the check items' spare child
    # once the first hook has forked it (not for a -p plugin outside the libraries)
    assert len(forked) == 1 + (held_in == "conftest"), forked

    run.send_signal(how)
    run.wait(timeout=60)

    said = output.read_text()
    if how == signal.SIGTERM:
        assert run.returncode == -signal.SIGTERM, said  # ended by the signal, as pytest alone
        assert "Traceback" not in said, said
    else:
        assert run.returncode != 0 and "KeyboardInterrupt" in said, said
    assert "clean-up failed" not in said, said
    assert_nothing_left(runtime, project, said)
    guard_files = Path(tempfile.gettempdir()).glob(f"*{GUARD_FILE_PREFIX}{run.pid}-*")
    assert list(guard_files) == [], said


#: A FIFO in the initdb cache: the server's start, copying the cache, waits there for a
#: writer (``release``): the start held at a known point, half its data directory made.
FIFO_NAME = "zz-holds-the-copy"


def hold_the_copy(project: Path, runtime: Path) -> Path:
    """The initdb cache built (a run that collects), then a FIFO put in it; the FIFO."""
    warm = run_pytest(
        project, "--reynard-db=ecs", "--co", "-q", REYNARD_DB_RUNTIME_DIR=str(runtime)
    )
    assert warm.returncode == 0, warm.stdout + warm.stderr
    (cache,) = [p for p in runtime.glob("initdb-*") if (p / "PG_VERSION").exists()]
    fifo = cache / FIFO_NAME
    os.mkfifo(fifo)
    return fifo


def release(fifo: Path) -> None:
    """The copy waiting on ``fifo`` goes on (it reads an empty file)."""
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO: no one reads


def stacks(run: subprocess.Popen[bytes], dump: Path) -> str:
    """The run's threads' stacks now (``SHOWS_ITS_STACKS``); empty once it has ended."""
    if run.poll() is not None:
        return ""
    size = dump.stat().st_size
    run.send_signal(signal.SIGUSR1)
    wait_until(lambda: dump.stat().st_size > size or run.poll() is not None, 10, "the stacks")
    return dump.read_text()[size:]


def waiting_for_its_held_start(
    run: subprocess.Popen[bytes], dump: Path, marker: Path, output: Path
) -> None:
    """Until ``run`` (its conftest ``SHOWS_ITS_STACKS``, writing ``marker``, its stacks to
    ``dump``) waits for the server its first hook began to start (``_started_ahead``: the
    start held on the initdb cache's FIFO); it must not have ended meanwhile."""
    wait_until(lambda: marker.exists() or run.poll() is not None, 60, "the conftest")
    wait_until(
        lambda: "_started_ahead" in stacks(run, dump) or run.poll() is not None,
        60,
        "the run to wait for the server its first hook began to start",
    )
    assert run.poll() is None, output.read_text()


def release_once_the_end_waits(
    run: subprocess.Popen[bytes], dump: Path, fifo: Path, output: Path
) -> None:
    """Once the run's end waits for its server's start (held on ``fifo``), that start goes
    on, and the run is waited for; it must not have ended while the start still copied."""
    wait_until(
        lambda: "stop_untaken" in stacks(run, dump) or run.poll() is not None,
        60,
        "the run's end to wait for the start, or the run to end",
    )
    try:
        assert run.poll() is None, (
            f"ended while its server's start still copied\n{output.read_text()}"
        )
    finally:
        if run.poll() is None:
            release(fifo)
        run.wait(timeout=60)


def waiting_on(pid: int) -> str:
    """Where the kernel has the main thread of ``pid`` sleep ("0": running)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def test_sigterm_while_the_run_waits_for_its_server_leaves_no_server_directory(
    project: Path, runtime: Path, tmp_path: Path
) -> None:
    """The run's first check item waits for the server its first hook began to start (in
    the test process: a thread kept the agent from being forked), whose start is held
    while it copies the initdb cache (half a data directory). SIGTERM then: the run's end
    waits for that start (the start gives up: the run has ended), and nothing is left."""
    fifo = hold_the_copy(project, runtime)
    dump, marker = tmp_path / "stacks.txt", tmp_path / "ready"
    conftest = SHOWS_ITS_STACKS.format(dump=str(dump), marker=str(marker))
    (project / "conftest.py").write_text(conftest)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "threaded_plugin.py").write_text(HAS_A_THREAD)
    run = start_run(project, runtime, "-p", "threaded_plugin", PYTHONPATH=str(plugins))
    output = project / "output.txt"
    waiting_for_its_held_start(run, dump, marker, output)
    # half made (copied under data.partial, renamed data once whole)
    assert [p.name for p in runtime.glob("server-*/data*")], os.listdir(runtime)

    # faulthandler's dump restarts the wait it interrupts (SA_RESTART): a SIGTERM arriving
    # while the dump is written would be caught, but the wait would go on unwoken.
    wait_until(lambda: "futex" in waiting_on(run.pid), 10, "the dump to end, the wait to go on")

    run.send_signal(signal.SIGTERM)
    # raised, reported (pytest's summary), then the run's end (no dump meanwhile: see above)
    wait_until(
        lambda: "terminated by SIGTERM" in output.read_text() or run.poll() is not None,
        60,
        "the SIGTERM to be raised",
    )
    release_once_the_end_waits(run, dump, fifo, output)

    said = output.read_text()
    assert run.returncode == 128 + signal.SIGTERM, said  # ended as interrupted, by SIGTERM
    assert "Traceback" not in said and "clean-up failed" not in said, said
    assert_nothing_left(runtime, project, said)


#: ``SHOWS_ITS_STACKS``, and the run's agent held (SIGSTOP) as the run's end begins, its
#: pid then written to ``{held}``: the test process's wait for it lasts until it goes on.
HOLDS_THE_AGENT_AT_THE_END = (
    SHOWS_ITS_STACKS
    + """
import os
import re

from pytest_reynard_db.plugin.stash import AGENT


def pytest_unconfigure(config):
    agent = config.stash[AGENT].process.pid
    os.kill(agent, signal.SIGSTOP)
    pathlib.Path({held!r}).write_text(str(agent))
"""
)


def test_sigterm_while_the_run_waits_for_its_agent_at_its_end(
    project: Path, runtime: Path, tmp_path: Path
) -> None:
    """SIGTERM (a CI job cancelled) once the tests are over, while the test process waits
    for its agent to stop the run's server (an agent slow to end: held here): the wait is
    seen through, then the run ends by the signal (exit 143), without a traceback. The
    agent's wait is on pytest's clean-up list, under the run's handler, which raised
    ``Terminated`` out of it: pytest's traceback, exit 1, the agent not waited for."""
    dump, marker, held = tmp_path / "stacks.txt", tmp_path / "ready", tmp_path / "held"
    conftest = HOLDS_THE_AGENT_AT_THE_END.format(dump=str(dump), marker=str(marker), held=str(held))
    (project / "conftest.py").write_text(conftest)
    run = start_run(project, runtime, checks=False)
    output = project / "output.txt"
    wait_until(lambda: held.exists() or run.poll() is not None, 120, "the run's end")
    assert held.exists(), output.read_text()
    agent = int(held.read_text())
    try:
        waits = re.compile(r'agent\.py", line \d+ in end\b')
        wait_until(
            lambda: waits.search(stacks(run, dump)) or run.poll() is not None,
            60,
            "the run to wait for its agent",
        )
        run.send_signal(signal.SIGTERM)
    finally:
        os.kill(agent, signal.SIGCONT)
    run.wait(timeout=60)

    said = output.read_text()
    assert "1 passed" in said, said
    assert run.returncode == 128 + signal.SIGTERM, said
    assert "Traceback" not in said and "clean-up failed" not in said, said
    assert_nothing_left(runtime, project, said)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signal_while_xdists_controller_waits_for_its_server(
    project: Path, runtime: Path, tmp_path: Path, how: signal.Signals
) -> None:
    """``pytest -n 2``: the controller waits, in its pytest_configure, for the server its
    first hook began to start (its workers are handed its URL), here held while it copies
    the initdb cache. pytest's reporter is not registered yet: a SIGTERM raised as Ctrl-C
    there ended the run with exit 2 and not a word (hostile17, F3), as did Ctrl-C. Now
    SIGTERM ends it by the signal (143, as before pytest_configure) and Ctrl-C says it in
    one line; either way the start is waited for and stopped, and nothing is left."""
    fifo = hold_the_copy(project, runtime)
    dump, marker = tmp_path / "stacks.txt", tmp_path / "ready"
    (project / "conftest.py").write_text(
        SHOWS_ITS_STACKS.format(dump=str(dump), marker=str(marker))
    )
    run = start_run(project, runtime, "-n", "2", checks=False)
    output = project / "output.txt"
    waiting_for_its_held_start(run, dump, marker, output)
    wait_until(lambda: "futex" in waiting_on(run.pid), 10, "the dump to end, the wait to go on")

    run.send_signal(how)
    # the handler run before the next dump (SIGUSR1): a dump restarts the wait it
    # interrupts, a signal not yet acted on would leave that wait unwoken (see above)
    time.sleep(1)
    release_once_the_end_waits(run, dump, fifo, output)

    said = output.read_text()
    if how == signal.SIGTERM:
        assert run.returncode == -signal.SIGTERM, said  # ended by the signal, as pytest alone
    else:
        assert run.returncode == 2, said  # pytest's code for an interrupted run
        assert "reynard-db: interrupted while the run's server started" in said, said
    assert "Traceback" not in said and "clean-up failed" not in said, said
    assert_nothing_left(runtime, project, said)


@pytest.mark.parametrize("distributed", [False, True], ids=["one process", "xdist"])
def test_sigterm_in_pytest_sessionstart_exits_by_the_signal(
    project: Path, runtime: Path, tmp_path: Path, distributed: bool
) -> None:
    """Held in pytest_sessionstart (where xdist's controller starts its workers): pytest
    calls no pytest_sessionfinish for a session that never began, where the run's exit
    became 128 + the signal, so a SIGTERM there exited 2, as a Ctrl-C (hostile17's F3,
    its second window). Now 143 there too, and nothing left."""
    marker = tmp_path / "held"
    held = HOLDS_THE_RUN.format(marker=str(marker))
    (project / "conftest.py").write_text(
        held + "\n\ndef pytest_sessionstart(session):\n    hold()\n"
    )
    run = start_run(project, runtime, *(["-n", "2"] if distributed else []))
    output = project / "output.txt"
    wait_until(lambda: marker.exists() or run.poll() is not None, 60, "the run to be held")
    assert run.poll() is None, output.read_text()

    run.send_signal(signal.SIGTERM)
    run.wait(timeout=60)

    said = output.read_text()
    assert "terminated by SIGTERM" in said, said  # pytest's report of the interruption
    assert run.returncode == 128 + signal.SIGTERM, said
    assert "Traceback" not in said and "clean-up failed" not in said, said
    assert_nothing_left(runtime, project, said)


#: Each worker's end held (``{marker}/<worker>`` written, then a few seconds), once it has
#: told the controller it finished: xdist's controller waits for it to exit in its
#: pytest_sessionfinish (``teardown_nodes``).
A_WORKER_SLOW_TO_END = """\
import os, pathlib, time

def pytest_unconfigure(config):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        pathlib.Path({marker!r}, worker).write_text("ending")
        time.sleep(3)
"""


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_a_signal_while_xdist_waits_for_its_workers_to_end(
    project: Path, runtime: Path, tmp_path: Path, how: signal.Signals
) -> None:
    """The tests are over and xdist's controller waits, in its pytest_sessionfinish, for
    its workers to end: a SIGTERM there was still raised as Ctrl-C, out of xdist's hook
    (pytest's traceback, exit 1), and the run stopped its server while the workers still
    dropped their databases ("clean-up failed"): the hostile tester's round of session
    18, 10 runs of 10 as "[100%]" appeared. Now held until the run's end, as once
    pytest_unconfigure has begun: the workers end, then the run ends by the signal."""
    ending = tmp_path / "ending"
    ending.mkdir()
    (project / "conftest.py").write_text(A_WORKER_SLOW_TO_END.format(marker=str(ending)))
    run = start_run(project, runtime, "-n", "2", checks=False)
    output = project / "output.txt"
    both = {"gw0", "gw1"}
    wait_until(
        lambda: {p.name for p in ending.iterdir()} == both or run.poll() is not None,
        120,
        "both workers' end",
    )
    assert run.poll() is None, output.read_text()
    time.sleep(0.5)  # the controller takes their "finished" (sent before their end) meanwhile

    run.send_signal(how)
    run.wait(timeout=60)

    said = output.read_text()
    assert "1 passed" in said, said
    assert run.returncode == 128 + how, said
    assert "Traceback" not in said and "clean-up failed" not in said, said
    assert_nothing_left(runtime, project, said)
