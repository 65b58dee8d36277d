"""Shared fixtures of the project's own test suite.

- ``decoy``: a "production" server (one per module) logging every connection, which
  the guard does not count as the harness's (``decoy_server``: the same, not taken off
  the guard's list); a module names its databases in ``DECOY_DATABASES``.
- ``runtime``: a runtime directory of the test's own, empty.
- ``project``: a user's project, a directory holding copies of the Reynard trees,
  inis, models and registry, free to break (a module whose tests need another project
  overrides it, or extends it: ``def project(project)``).
- ``cli``: ``reynard-migrate`` on ``project``, in a child process, as a user runs it
  (forked by default: ``cli_fork.run_cli``).
- ``pytester``: pytest's own, its directory a Reynard project (``reynard_project``) and
  its inner runs set up once here (``-p no:cacheprovider``), for the plugin's tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_fork import Cli, cli_of
from reynard_trees import QUIET_ASYNCIO, clean_env, copy_reynard_trees, reynard_project, server_tmp
from warm_runs import WHERE, run

from pytest_reynard_db.guard import GUARD, inherit
from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.executor import reusable_server
from pytest_reynard_db.postgres.reaper import stop_postmaster

#: Run beside the suite by its first process: pytest's rewriting of every plugin's modules
#: (pytest-alembic's, anyio's, xdist's...; ours too when installed from a wheel) and our
#: package's bytecode, written where an environment without ``PYTHONDONTWRITEBYTECODE``
#: keeps them (their ``__pycache__``).
WARM_UP = """\
import compileall, pkgutil, pytest

class Warm:
    def pytest_configure(self, config):
        import pytest_reynard_db  # imported by its plugin, as in every run
        for module in pkgutil.walk_packages(pytest_reynard_db.__path__, "pytest_reynard_db."):
            if not module.name.endswith("__main__"):
                __import__(module.name)
        compileall.compile_dir(pytest_reynard_db.__path__[0], quiet=1)

pytest.main(["-q", "--co", "-p", "no:cacheprovider"], plugins=[Warm()])
"""
_WARMING = pytest.StashKey[tuple[subprocess.Popen[bytes], Path]]()


def pytest_configure(config: pytest.Config) -> None:
    """Where ``PYTHONDONTWRITEBYTECODE`` is set, no interpreter writes bytecode, and pytest
    rewrote every plugin's modules again in each of the suite's inner runs: a quarter of
    its start. The first process writes them once, in a child (as without the variable);
    every interpreter reads them, and still writes nothing (a user's project is asserted
    unwritten, and its revisions, edited in place, are compiled afresh each time)."""
    if hasattr(config, "workerinput"):
        return  # xdist's controller does it
    empty = Path(tempfile.mkdtemp(prefix="reynard-warm-up-"))
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    process = subprocess.Popen(
        [sys.executable, "-c", WARM_UP],
        cwd=empty,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config.stash[_WARMING] = (process, empty)


def pytest_unconfigure(config: pytest.Config) -> None:
    warming = config.stash.get(_WARMING, None)
    if warming is not None:
        process, empty = warming
        process.kill()  # done long ago, unless the run was shorter than it
        process.wait()
        shutil.rmtree(empty, ignore_errors=True)


#: The modules one xdist worker runs whole: each builds a costly module fixture for all its
#: tests, which ``--dist load`` builds again in every worker sent one of them.
#: ``test_oracle.py``: ``plain_verdicts`` judges the trees of every selected test (a worker
#: cannot know which it will be sent); ``test_install.py``: ``dist`` builds the wheel.
WHOLE_MODULES = ("tests/test_oracle.py", "tests/test_install.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``-n N`` (``--dist load``): ``WHOLE_MODULES`` each on one worker, sent first (the
    largest first), and every other test to whichever worker is free, one at a time."""
    if config.getoption("dist") != "load":
        return None  # another --dist asked for: xdist's own
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class WholeModules(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in WHOLE_MODULES else nodeid

    return WholeModules(config, log)


#: The longest tests, 10 s or more each (``--durations`` under ``-n 2`` on 2 cores): under
#: ``-n N`` sent first after ``WHOLE_MODULES``, so that a run does not end on one of them
#: while the other workers idle. A whole node id, or a function's (each of its parameters).
LONGEST = (
    "tests/test_drift_false_alarms.py::test_mlflows_tree_as_migrated_matches",
    "tests/test_faults.py::test_no_password_in_any_output",
    "tests/test_faults.py::test_production_database_is_never_connected_to",
    "tests/test_check_targets.py::test_the_same_verdict_whatever_runs_beside",
    "tests/test_readme_ci.py::test_the_recipe_runs_as_written_against_a_service_like_server",
    "tests/test_drift_prepared.py::test_open_webuis_tree_as_migrated_matches",
    "tests/test_seed.py::test_reuse_rebuilds_when_the_seed_changes",
    "tests/test_shared_server.py::test_a_killed_run_is_cleaned_by_the_next_and_no_one_elses_"
    "databases_are_touched",
    "tests/test_server_verbs.py::test_status_stop_and_prune_of_the_reuse_server",
    "tests/test_nothing_hangs.py::test_a_check_that_times_out_hides_nothing_the_other_found",
    "tests/test_bad_input.py::test_bad_input[silent-server]",
    "tests/test_readme_quickstart.py::test_the_quickstart_runs_as_written",
    "tests/test_drift_false_alarms.py::test_optunas_tree_as_migrated_matches",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker, ``LONGEST`` first (every worker collects the same order, and the
    scheduler sends single tests in it). One process keeps the files' order: a test moved
    out of its module builds that module's fixtures twice."""
    if not hasattr(config, "workerinput"):
        return
    longest = [
        item for item in items if item.nodeid.split("[", 1)[0] in LONGEST or item.nodeid in LONGEST
    ]
    moved = set(map(id, longest))
    items[:] = longest + [item for item in items if id(item) not in moved]


@pytest.fixture(autouse=True)
def a_users_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test's child processes are a user's commands typed in a shell, not children of this
    (dogfooding, armed) run: they do not inherit its guard (``guard.inherit``; tested on
    runs of their own in ``test_guard_user_paths.py``)."""
    monkeypatch.delenv(inherit.GUARD_VARIABLE, raising=False)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if inherit.STARTUP in paths:
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p != inherit.STARTUP))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EphemeralServer]:
    """One real ephemeral server for the tests that need a plain server."""
    with EphemeralServer.start() as server:
        yield server


@pytest.fixture(scope="module")
def decoy_server(request: pytest.FixtureRequest) -> Iterator[EphemeralServer]:
    """A 'production' server (one per module) logging every connection. Its databases:
    ``app``, or those the module names in ``DECOY_DATABASES``; each holds ``precious``,
    one row that no attack may change."""
    names = getattr(request.module, "DECOY_DATABASES", ("app",))
    # cluster_name: a server of somebody else's (the harness's are named reynard-db)
    settings = ("log_connections=on", "cluster_name=production")
    with EphemeralServer.start(settings=settings) as server:
        for name in names:
            server.create_database(name)
            with server.connect(name) as conn:
                conn.execute("CREATE TABLE precious (id int)")
                conn.execute("INSERT INTO precious VALUES (1)")
        yield server


@pytest.fixture(scope="module")
def decoy(decoy_server: EphemeralServer) -> EphemeralServer:
    """``decoy_server`` taken off the guard's list: for the guard, somebody else's server."""
    GUARD.forget_server(decoy_server.url)
    return decoy_server


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A temp directory the server's user can reach (pytest's own is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="rdb-reachable-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A runtime directory of the test's own (for ``REYNARD_DB_RUNTIME_DIR``), not made yet:
    no initdb cache, no kept server. Outside pytest's private (0700) temp directory, so the
    server's user (postgres, when root runs the suite) goes in; kept servers stopped after."""
    parent = server_tmp("reynard-runtime-")
    parent.chmod(0o711)
    try:
        yield parent / "reynard-db"
    finally:
        for data in parent.glob("reynard-db/reuse-*/data"):
            stop_postmaster(data)
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def stop_reused_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A ``--reynard-db-reuse`` run leaves the kept server running, by design; stop it after.
    The test's runs keep theirs in a runtime directory of the test's own: the kept server is
    one per user and runtime directory, and a test in another xdist worker stops its own."""
    runtime = server_tmp("reynard-reuse-")
    runtime.chmod(0o711)  # the server's user (postgres, when root runs the suite) goes through
    monkeypatch.setenv("REYNARD_DB_RUNTIME_DIR", str(runtime / "reynard-db"))
    try:
        yield
        process = reusable_server()
        if process.base_dir is not None:
            stop_postmaster(process.base_dir / "data")
            shutil.rmtree(process.base_dir, ignore_errors=True)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def kept(stop_reused_server: None, tmp_path: Path) -> Iterator[tuple[Path, EphemeralServer]]:
    """A project, and the kept server its first ``--reynard-db-reuse`` run started (the
    tests of a warm run's agent: ``warm_runs``)."""
    project = reynard_project(tmp_path / "project")
    (project / "test_where.py").write_text(WHERE)
    first = run(project)
    assert first.returncode == 0, first.stdout + first.stderr
    server = EphemeralServer(reusable_server())  # attaches to the running one
    try:
        yield project, server
    finally:
        server.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of this repository's trees, inis, models and registry, free to break."""
    return copy_reynard_trees(tmp_path)


@pytest.fixture
def cli(project: Path) -> Cli:
    """``cli(*argv, env=None, process="fork")``: ``reynard-migrate --project PROJECT
    ARGV...`` in a child process; ``(exit code, stdout, stderr)``. ``env``: the child's
    whole environment; ``process``: forked or started (``cli_fork.run_cli``)."""

    return cli_of(project)


#: Every inner pytest run of the plugin's tests: no cache written into the project, and
#: pytest-asyncio set up (``QUIET_ASYNCIO``: see ``reynard_trees.clean_env``).
PYTESTER_ADDOPTS = f"-p no:cacheprovider {QUIET_ASYNCIO}"


#: What pytest-xdist exports in its workers: an inner run that inherits them is taken by the
#: plugin for a worker of its own (``options.xdist_worker``), so under ``-n N`` every inner run
#: went another way than a user's run does (no early server, no agent).
XDIST_WORKER_VARIABLES = (
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
)


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytest's ``pytester``, its directory a user's project (the Reynard trees, models
    and registry; pytest set up to import the models), its inner runs' defaults set, and
    none of this suite's xdist worker variables in their environment."""
    for variable in XDIST_WORKER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    reynard_project(pytester.path)
    with (pytester.path / "pyproject.toml").open("a") as pyproject:
        pyproject.write(f'addopts = "{PYTESTER_ADDOPTS}"\n')
    return pytester
