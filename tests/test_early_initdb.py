"""A cold start's initdb runs in a thread from the run's first hook, or from the plugin's
registration when the command line surely asks for a server, beside the imports and the
collection (``initdb_cache.begin_preparing``); the run waits for it, whatever happens.

Real pytest runs in a fresh runtime directory (no initdb cache): the cache is complete
after the run, and no half-made initdb is left in a scratch directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import pytest

from pytest_reynard_db.postgres import EphemeralServer, find_binaries
from tests.reynard_trees import (
    QUIET_ASYNCIO,
    clean_env,
    reynard_project,
    run_pytest,
    wait_until,
)

NO_DATABASE_NEEDED = "def test_nothing():\n    assert True\n"
A_DATABASE = "def test_one(reynard_db):\n    assert reynard_db.head\n"
NOTHING_OF_A_SERVER_IMPORTED = """\
import sys


def test_nothing():
    server_modules = {"psycopg", "pytest_reynard_db.provisioning.provision"}
    assert not server_modules & set(sys.modules)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: the Reynard registry, no database selected in its ini."""
    return reynard_project(tmp_path / "project")


def _initdb_entries(runtime: Path) -> tuple[list[str], list[str]]:
    """The initdb caches (complete) and the scratch initdb directories left."""
    names = sorted(p.name for p in runtime.glob("initdb-*") if p.is_dir())
    complete = [n for n in names if (runtime / n / "PG_VERSION").exists()]
    return complete, [n for n in names if n not in complete]


def test_a_cold_run_builds_the_cache_beside_the_imports(project: Path, runtime: Path) -> None:
    (project / "test_one.py").write_text(A_DATABASE)

    done = run_pytest(
        project, "--reynard-db=ecs", "test_one.py", REYNARD_DB_RUNTIME_DIR=str(runtime)
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "Traceback" not in done.stderr and "waiting for" not in done.stderr, done.stderr
    complete, scratch = _initdb_entries(runtime)
    assert len(complete) == 1 and scratch == [], os.listdir(runtime)


#: A plugin registered after ours (an entry point, as pytest-alembic's is) whose import is
#: slow: it waits, up to a deadline, for the initdb cache to be complete, and says whether
#: it was. Complete while it imports: the initdb began as our plugin registered, before
#: pytest parsed its options (the first hook comes after every plugin's import).
SLOW_PLUGIN = """\
import os, pathlib, time

runtime = pathlib.Path(os.environ["REYNARD_DB_RUNTIME_DIR"])
deadline = time.monotonic() + 20


def complete():
    return any((p / "PG_VERSION").exists() for p in runtime.glob("initdb-*"))


while not complete() and time.monotonic() < deadline:
    time.sleep(0.01)
pathlib.Path(os.environ["SEEN_FILE"]).write_text(str(complete()))
"""


@pytest.mark.parametrize("where", ["arguments", "PYTEST_ADDOPTS", "ini addopts"])
def test_initdb_begins_as_the_plugin_registers_when_the_command_line_asks(
    project: Path, runtime: Path, tmp_path: Path, where: str
) -> None:
    """``--reynard-db=ecs`` (in the arguments, ``$PYTEST_ADDOPTS`` or the ini's
    ``addopts``) surely starts a server: its initdb runs beside the imports of the
    plugins registered after ours (``options.surely_starts_a_server``)."""
    plugins = tmp_path / "plugins"
    entry_point_plugin(plugins, "slow_after_reynard", SLOW_PLUGIN)
    (project / "test_one.py").write_text(A_DATABASE)
    seen = tmp_path / "seen.txt"
    env = {"REYNARD_DB_RUNTIME_DIR": str(runtime), "SEEN_FILE": str(seen)}

    args = ["test_one.py"]
    if where == "arguments":
        args.insert(0, "--reynard-db=ecs")
    elif where == "PYTEST_ADDOPTS":
        env["PYTEST_ADDOPTS"] = f"{QUIET_ASYNCIO} --reynard-db=ecs"
    else:
        with (project / "pyproject.toml").open("a") as pyproject:
            pyproject.write('addopts = "--reynard-db=ecs"\n')

    # ``-p reynard_db``: ours first, the slow one at the entry points' loading
    done = run_pytest(project, "-p", "reynard_db", *args, PYTHONPATH=str(plugins), **env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert seen.read_text() == "True", "initdb began only at the first hook"
    complete, scratch = _initdb_entries(runtime)
    assert len(complete) == 1 and scratch == [], os.listdir(runtime)


#: A plugin registered after ours that says it is importing (a marker file), then takes
#: its time: a run ended now is ended before pytest's first hook.
SLEEPY_PLUGIN = """\
import os, pathlib, time

pathlib.Path(os.environ["IMPORTING_FILE"]).write_text("importing")
time.sleep(60)
"""


def entry_point_plugin(plugins: Path, name: str, source: str) -> None:
    """A distribution in ``plugins`` (a directory to put on ``PYTHONPATH``) with one
    pytest plugin, ``name``, loaded by pytest's entry points."""
    info = plugins / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[pytest11]\n{name} = {name}\n")
    (plugins / f"{name}.py").write_text(source)


def test_a_run_ended_before_its_first_hook_waits_for_its_initdb_and_ends_by_the_signal(
    project: Path, runtime: Path, tmp_path: Path
) -> None:
    """SIGTERM while the plugins after ours import (the initdb begun as ours registered,
    cold, by the run's agent): the run ends by SIGTERM, as it would without the plugin,
    no traceback (pytest cannot yet make a signal a clean exit: ``Terminated`` raised
    there was a traceback and exit 1); the agent completes the cache (no half-made one),
    then stops and removes the server it started for the run."""
    plugins = tmp_path / "plugins"
    entry_point_plugin(plugins, "sleepy_after_reynard", SLEEPY_PLUGIN)
    (project / "test_one.py").write_text(A_DATABASE)
    importing = tmp_path / "importing"
    env = clean_env(
        REYNARD_DB_RUNTIME_DIR=str(runtime), IMPORTING_FILE=str(importing), PYTHONPATH=str(plugins)
    )
    argv = [sys.executable, "-m", "pytest", "-p", "reynard_db", "-p", "no:cacheprovider"]
    err_file = tmp_path / "stderr.txt"
    with err_file.open("w") as err_out:  # a file, not a pipe: a child left would hold it
        process = subprocess.Popen(
            [*argv, "--reynard-db=ecs", "test_one.py"],
            cwd=project,
            env=env,
            stdout=err_out,
            stderr=subprocess.STDOUT,
        )
    wait_until(lambda: importing.exists() or process.poll() is not None, 60, "the slow plugin")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)

    output = err_file.read_text()
    assert process.returncode == -signal.SIGTERM, output
    assert "Traceback" not in output, output

    def agent_done() -> bool:
        complete, scratch = _initdb_entries(runtime)
        return len(complete) == 1 and scratch == [] and not list(runtime.glob("server-*"))

    wait_until(agent_done, 60, "the cache whole and the run's server removed")


@pytest.mark.parametrize("how", ["option", "environment", "ini"])
def test_a_run_on_an_existing_server_makes_no_initdb(
    project: Path, runtime: Path, pg_server: EphemeralServer, how: str
) -> None:
    """``--reynard-db=ecs`` with an existing server (``--reynard-db-url``, its variable,
    its ini key) begins no initdb, early or at the first hook: it starts no server."""
    (project / "test_one.py").write_text(A_DATABASE)
    url = pg_server.url.render_as_string(hide_password=False)
    args = ["--reynard-db=ecs", "test_one.py"]
    env = {"REYNARD_DB_RUNTIME_DIR": str(runtime)}
    if how == "option":
        args.append(f"--reynard-db-url={url}")
    elif how == "environment":
        env["REYNARD_DB_URL"] = url
    else:
        with (project / "pyproject.toml").open("a") as pyproject:
            pyproject.write(f'reynard_db_url = "{url}"\n')

    done = run_pytest(project, *args, **env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert _initdb_entries(runtime) == ([], []), os.listdir(runtime)


def test_a_run_that_needs_no_database_waits_for_the_initdb_it_began(
    project: Path, runtime: Path
) -> None:
    """The run ends long before its (slowed) initdb does: it still waits, leaving the
    cache whole (the next run's cold start is then a warm one) and no scratch behind."""
    real = find_binaries()
    bindir = runtime.parent / "bin"
    bindir.mkdir()
    (bindir / "postgres").symlink_to(real.postgres)
    (bindir / "initdb").write_text(f'#!/bin/sh\nsleep 2\nexec {real.initdb} "$@"\n')
    (bindir / "initdb").chmod(0o755)
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)

    # check items (deselected): a run that starts its server from the first hook
    done = run_pytest(
        project,
        "--reynard-db=ecs",
        "--reynard-db-checks",
        "-k",
        "test_nothing",
        "test_nothing.py",
        REYNARD_DB_RUNTIME_DIR=str(runtime),
        REYNARD_DB_PG_BIN=str(bindir),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    complete, scratch = _initdb_entries(runtime)
    assert len(complete) == 1 and scratch == [], os.listdir(runtime)
    # the server started ahead, beside the collection, is stopped: no test took it
    assert not list(runtime.glob("server-*")), os.listdir(runtime)


def test_a_run_of_tests_alone_starts_its_server_when_a_test_asks(
    project: Path, runtime: Path
) -> None:
    """Without check items or xdist, the run's tests may take no database (``pytest
    tests/test_x.py``): no server is started for a run whose tests need none."""
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)

    done = run_pytest(
        project, "--reynard-db=ecs", "test_nothing.py", REYNARD_DB_RUNTIME_DIR=str(runtime)
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert not list(runtime.glob("server-*")), os.listdir(runtime)


def test_a_warm_run_whose_tests_take_no_database_imports_no_server_module(
    project: Path, runtime: Path
) -> None:
    """What only a server needs is imported when a test first asks for one: psycopg
    (~45 ms) and the provisioner, at every ``pytest --reynard-db=...`` otherwise, and
    the header's lines (which PostgreSQL, its clone method) need neither. (The servers'
    module, without psycopg, is imported before the run's agent is forked: ~8 ms the
    agent would pay again.) (A cold run
    starts its server while it waits for initdb: the first run builds the cache.)"""
    (project / "test_nothing.py").write_text(NOTHING_OF_A_SERVER_IMPORTED)
    env = {"REYNARD_DB_RUNTIME_DIR": str(runtime)}
    assert run_pytest(project, "--reynard-db=ecs", "test_nothing.py", **env).returncode in (0, 1)

    done = run_pytest(project, "--reynard-db=ecs", "test_nothing.py", **env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "reynard-db: clone method: " in done.stdout  # the header, computed all the same
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("selection", "code"), [([], 0), (["--reynard-db="], 0), (["--reynard-db", "--co"], 4)]
)
def test_no_initdb_without_a_database_selected(
    project: Path, runtime: Path, selection: list[str], code: int
) -> None:
    """No option, an empty one, or one with no name after it (the next argument is an
    option: pytest's usage error) select no database: no initdb, early or at the first
    hook."""
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)

    done = run_pytest(project, *selection, "test_nothing.py", REYNARD_DB_RUNTIME_DIR=str(runtime))

    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert _initdb_entries(runtime) == ([], []), os.listdir(runtime)


def running_servers(runtime: Path) -> list[Path]:
    """The data directories under ``runtime`` whose postmaster is alive."""
    alive = []
    for pid_file in runtime.glob("server-*/data/postmaster.pid"):
        with suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().split()[0]), 0)
            alive.append(pid_file.parent)
    return alive


#: A postgres that writes each server launch (``-p PORT``: not initdb's) to {log}.
LAUNCHES_LOGGED = """\
#!/bin/sh
case " $* " in *" -p "*) echo "$*" >> {log} ;; esac
exec {postgres} "$@"
"""


def launches_logged(bindir: Path) -> Path:
    """The machine's initdb and a ``LAUNCHES_LOGGED`` postgres in ``bindir``; its log."""
    real = find_binaries()
    bindir.mkdir()
    (bindir / "initdb").symlink_to(real.initdb)
    launches = bindir / "launches.txt"
    launches.touch(mode=0o666)
    launches.chmod(0o666)  # the server's user (postgres, when root runs the suite) writes it
    (bindir / "postgres").write_text(LAUNCHES_LOGGED.format(log=launches, postgres=real.postgres))
    (bindir / "postgres").chmod(0o755)
    return launches


SLOW_COLLECTION = """\
import time


def pytest_collection_finish(session):
    time.sleep(1)
"""


#: Runs that run no test: pytest's listings and IDE discovery, its plan of fixtures
#: (``--setup-plan``, which sets none up), with the check items (``--setup-plan``
#: launched their server), and distributed (hostile25e: xdist's controller launched the
#: run's server for its workers, and ``--fixtures -n 2``, which starts no worker, too).
NO_TEST_RUNS = {
    **{
        option: ("--reynard-db-checks", option)
        for option in ("--collect-only", "--fixtures", "--markers", "--setup-plan")
    },
    **{
        f"{option} -n 2{' checks' if checks else ''}": (
            *(("--reynard-db-checks",) if checks else ()),
            option,
            "-n",
            "2",
        )
        for option in ("--setup-plan", "--fixtures")
        for checks in (False, True)
    },
}


@pytest.mark.parametrize("run", sorted(NO_TEST_RUNS))
def test_a_run_that_runs_no_test_starts_no_server(project: Path, runtime: Path, run: str) -> None:
    """IDE test discovery (``--collect-only``), pytest's listings and its plan of fixtures
    launch no server, not even one stopped at the end (``NO_TEST_RUNS``)."""
    (project / "test_one.py").write_text(A_DATABASE)
    # a large project's collection: time for a server begun at the first hook to launch
    (project / "conftest.py").write_text(SLOW_COLLECTION)
    launches = launches_logged(runtime.parent / "bin")

    for cache in ("cold", "warm"):  # a cold run's first hook starts no server ahead
        done = run_pytest(
            project,
            "--reynard-db=ecs",
            *NO_TEST_RUNS[run],
            "test_one.py",
            REYNARD_DB_RUNTIME_DIR=str(runtime),
            REYNARD_DB_PG_BIN=str(launches.parent),
        )

        assert done.returncode == 0, cache + done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
        assert launches.read_text() == "", cache
    assert not list(runtime.glob("server-*")), os.listdir(runtime)


def test_a_distributed_setup_only_still_sets_the_database_up(project: Path, runtime: Path) -> None:
    """``--setup-only -n 2`` sets the fixtures up: the run's server is started (once, by
    the controller, its workers handed its URL) and the database made."""
    (project / "test_one.py").write_text(A_DATABASE)
    launches = launches_logged(runtime.parent / "bin")

    done = run_pytest(
        project,
        "--reynard-db=ecs",
        "--setup-only",
        "-n",
        "2",
        "test_one.py",
        REYNARD_DB_RUNTIME_DIR=str(runtime),
        REYNARD_DB_PG_BIN=str(launches.parent),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert len(launches.read_text().splitlines()) == 1, launches.read_text()
    assert not list(runtime.glob("server-*")), os.listdir(runtime)
