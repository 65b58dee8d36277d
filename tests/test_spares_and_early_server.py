"""Hostile review of issue 25's two start-up mechanisms: attacks that worked.

1. ``--reynard-db-checks`` forks the check items' children at the plugin's first hook
   (``checks.isolated.Spare``, a2d810d), promised to be the same as an interpreter started
   for the checks (a2d810d's parent). The fork froze the child's environment, working
   directory and ``sys.stderr`` as they were at that hook, shared the guard's exported
   allow-list file with the run, and took an application installed in site-packages
   for a library.
2. The run's own server starts in the early thread (``initdb_cache.begin_preparing``,
   ``Prepared.decide(start=True)``,
   9b62875). A run that needs no server now waits for that start at its end, and a run
   ended before any test asks for a server (SIGKILL while conftests import, SIGTERM
   during the end-of-run wait) leaves a postmaster.

Each test passed on a2d810d's parent and failed on a2d810d or 9b62875; all hold
since (the SIGKILL one as the reaper's promise: a run killed with -9 leaves its
server to the next run, at any moment of it), and so does the attack on 017f6eb's
guess at "models imported" (a MetaData an extension object holds).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from reynard_trees import clean_env, reynard_project, run_pytest, server_tmp, wait_until
from test_check_isolation import make_project
from test_early_initdb import running_servers
from test_faults import gone

from pytest_reynard_db.postgres import find_binaries
from pytest_reynard_db.postgres.initdb_cache import cached_initdb, server_binaries
from pytest_reynard_db.postgres.runas import RUNTIME_DIR_ENV, run_as, runtime_root

NO_DATABASE_NEEDED = "def test_nothing():\n    assert True\n"
#: Where the tests below wait at most for a run to do what the old one did at once.
PROMPT = 15.0
#: How long ``slow_postgres`` takes to begin its boot (seconds).
SLOW_BOOT = 4


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A runtime directory of its own (servers observed there only), outside pytest's
    private (0700) temp directory: the server's user (postgres, under root) goes in."""
    parent = server_tmp("reynard-h25-")
    parent.chmod(0o711)
    try:
        yield parent / "reynard-db"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def checked_project(tmp_path: Path) -> Path:
    """test_check_isolation's two databases; ``auth``'s ``env.py`` says it ran."""
    project = make_project(tmp_path / "two")
    env_py = project / "auth_migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            "import auth_models", 'print("HOSTILE25-ENV-PY-RAN")\nimport auth_models', 1
        )
    )
    return project


def warm_initdb(runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Build ``runtime``'s initdb cache now (the fake binaries' initdb is the real one):
    a run's end then waits for no initdb, only for what 9b62875 added."""
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(runtime))
    user = run_as()
    root = runtime_root(user)
    cached_initdb(server_binaries(user, root), user, root)


def hanging_postgres(root: Path) -> Path:
    """A ``REYNARD_DB_PG_BIN``: the real initdb; a ``postgres`` that says its version
    and otherwise never answers (a server that hangs at boot), its pid added to
    ``hanging_pids(root)``."""
    real = find_binaries()
    bindir = root / "bin"
    bindir.mkdir()
    (bindir / "initdb").symlink_to(real.initdb)
    marks = root / "hanging"  # each launch's pid (the sleep's: it execs), written by
    marks.mkdir()  # the server's user
    marks.chmod(0o777)
    launched = marks / "pids"
    (bindir / "postgres").write_text(
        f'#!/bin/sh\ncase "$1" in -V|--version) exec {real.postgres} "$@";; esac\n'
        f"echo $$ >> {launched}\nexec sleep 600\n"
    )
    (bindir / "postgres").chmod(0o755)
    return bindir


def hanging_pids(root: Path) -> list[int]:
    """The pids of the ``hanging_postgres`` made under ``root`` launched so far."""
    launched = root / "hanging" / "pids"
    return [int(pid) for pid in launched.read_text().split()] if launched.exists() else []


def slow_postgres(root: Path) -> tuple[Path, Path]:
    """A ``REYNARD_DB_PG_BIN`` whose ``postgres`` starts the real one after SLOW_BOOT s,
    and the file it makes when it is launched, holding its pid (the postmaster's to be: it
    execs the real one), written by the server's user (anyone may write there)."""
    real = find_binaries()
    bindir = root / "bin"
    bindir.mkdir()
    marks = root / "marks"
    marks.mkdir()
    marks.chmod(0o777)
    launched = marks / "launched"
    (bindir / "initdb").symlink_to(real.initdb)
    (bindir / "postgres").write_text(
        f'#!/bin/sh\ncase "$1" in -V|--version) ;; *) echo $$ > {launched}.new\n'
        f"mv {launched}.new {launched}; sleep {SLOW_BOOT};; esac\n"
        f'exec {real.postgres} "$@"\n'
    )
    (bindir / "postgres").chmod(0o755)
    return bindir, launched


# -- 1. children forked at the first hook -------------------------------------------------
def auth_upgrade_asserting(
    project: Path, condition: str, otherwise: str
) -> subprocess.CompletedProcess[str]:
    """``auth``'s check items, its ``env.py`` asserting ``condition`` (``otherwise``: the
    message); its upgrade passed, the message not shown (asserted)."""
    env_py = project / "auth_migrations" / "env.py"
    assertion = f"import os\nassert {condition}, {otherwise!r}\nimport auth_models"
    env_py.write_text(env_py.read_text().replace("import auth_models", assertion, 1))
    done = run_pytest(project, "-v", "--reynard-db-checks", "--reynard-db=auth")
    assert "reynard-db::auth::upgrade PASSED" in done.stdout, done.stdout + done.stderr
    assert otherwise not in done.stdout
    return done


def test_a_variable_a_conftest_sets_is_seen_by_the_check_items(checked_project: Path) -> None:
    """A spare forked before the conftests ran missed the os.environ changes a conftest
    makes (APP_ENV=testing, a settings module); an interpreter started for the checks
    inherited them. Failed on a2d810d; fixed in 2fad42e (the request carries the
    environment)."""
    (checked_project / "conftest.py").write_text(
        'import os\n\nos.environ["HOSTILE25_MODE"] = "testing"\n'
    )
    done = auth_upgrade_asserting(
        checked_project, 'os.environ.get("HOSTILE25_MODE") == "testing"', "conftest not seen"
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_directory_a_conftest_moves_to_is_the_check_items(checked_project: Path) -> None:
    """A spare forked before the conftests ran missed a conftest's os.chdir (to where the
    application's relative paths point): env.py ran in the invocation directory, where an
    interpreter started for the checks ran in the run's. Failed on a2d810d; fixed in
    2fad42e (the request carries the working directory)."""
    (checked_project / "settings").mkdir()
    (checked_project / "settings" / "app.ini").write_text("[app]\n")
    (checked_project / "conftest.py").write_text(
        'import os\nfrom pathlib import Path\n\nos.chdir(Path(__file__).parent / "settings")\n'
    )
    auth_upgrade_asserting(
        checked_project, 'os.path.exists("app.ini")', "not in the settings directory"
    )


def test_what_env_py_prints_under_capture_sys_is_not_lost(checked_project: Path) -> None:
    """Under --capture=sys the spare was forked while pytest's sys.stderr was its
    in-memory capture: what env.py printed went into the child's copy of it and was lost
    (an interpreter started for the checks printed it on stderr). Failed on a2d810d;
    fixed in 017f6eb (the child takes the standard streams back)."""
    env_py = checked_project / "auth_migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            "import auth_models", 'raise RuntimeError("hostile25 broke env.py")\n', 1
        )
    )

    done = run_pytest(
        checked_project,
        "--capture=sys",
        "--reynard-db-checks",
        "--reynard-db=auth",
        "-k",
        "upgrade",
    )

    assert "hostile25 broke env.py" in done.stdout, done.stdout + done.stderr
    assert "HOSTILE25-ENV-PY-RAN" in done.stdout + done.stderr, done.stdout + done.stderr


#: A test run after the check items: a child interpreter reaches the run's own server
#: (all of it is throw-away: the guard allows the whole server, not only its databases).
A_CHILD_ON_THE_RUN_SERVER = """
import subprocess
import sys

REACH = "import sys, sqlalchemy as sa; sa.create_engine(sys.argv[1]).connect().close()"


def test_a_child_reaches_the_run_server(reynard_db):
    url = reynard_db.url.set(database="template1").render_as_string(hide_password=False)
    done = subprocess.run([sys.executable, "-c", REACH, url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-600:]
"""


def test_check_items_leave_the_run_allow_list_to_its_children(tmp_path: Path) -> None:
    """The spare was forked after the early guard exported the run's allow-list file; the
    child's GUARD.armed_for exported its own snapshot over the parent's file, dropping the
    run's server: a test's child process was then refused the run's own server (an
    interpreter started for the checks wrote a file of its own). Failed on a2d810d; fixed
    in 017f6eb (inherit.forget in the child)."""
    project = make_project(tmp_path / "two")
    (project / "tests").mkdir()
    (project / "tests" / "test_child.py").write_text(A_CHILD_ON_THE_RUN_SERVER)

    done = run_pytest(project, "-v", "--reynard-db-checks", "--reynard-db=auth")

    assert "reynard-db::auth::upgrade PASSED" in done.stdout, done.stdout + done.stderr
    assert "test_a_child_reaches_the_run_server PASSED" in done.stdout, done.stdout
    assert "GuardRefused" not in done.stdout + done.stderr


def install_the_application(
    project: Path, venv: Path, *, plugin: str = "app_models", keep: bool = False
) -> Path:
    """A virtualenv of this one's packages (hard links: no copy) where ``project``'s
    modules are installed, as a deployed application is (in site-packages, not editable),
    with a pytest11 entry point that loads ``plugin``; its python. ``keep``: the sources
    stay in the project too (a checkout of the application, installed)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(
        subprocess.run([python, "-c", where], capture_output=True, text=True).stdout.strip()
    )
    ours = sysconfig.get_paths()["purelib"]
    shutil.copytree(ours, site, symlinks=True, copy_function=os.link, dirs_exist_ok=True)
    for name in ("app_models.py", "auth_models.py", "shared.py", "naming.py", f"{plugin}.py"):
        if (project / name).exists():
            (shutil.copy if keep else shutil.move)(project / name, site / name)
    info = site / "hostile25_app-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile25-app\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[pytest11]\nhostile25_app = {plugin}\n")
    return python


def auth_items_with_the_plugin(python: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``auth``'s check items run by ``python`` in ``cwd``; the application's plugin
    loaded, ``models_match`` passed, exit 0 (asserted)."""
    argv = ["-m", "pytest", "-p", "no:cacheprovider", "-v", "--reynard-db-checks"]
    done = subprocess.run(
        [python, *argv, "--reynard-db=auth"],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "hostile25-app" in done.stdout, done.stdout + done.stderr  # the plugin loaded
    assert "reynard-db::auth::models_match PASSED" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_an_installed_application_an_entry_point_loads_gets_a_clean_child(
    tmp_path: Path,
) -> None:
    """fork_spares took every module in site-packages for a library: an application
    installed there (a deployed image) and loaded by an entry-point plugin was imported
    before the fork, so auth's child saw app's table (models_match failed; an interpreter
    started for the checks passed). Failed on a2d810d; fixed in 017f6eb (no fork when a
    module of the project, or a MetaData outside the libraries, is imported)."""
    project = make_project(tmp_path / "two")
    python = install_the_application(project, tmp_path / "venv")

    auth_items_with_the_plugin(python, project)


def test_an_installed_checkout_whose_plugin_replaces_a_module_gets_a_clean_child(
    tmp_path: Path,
) -> None:
    """The application's plugin holds no MetaData but replaces ``naming`` in
    ``sys.modules`` at import (issue 13's other side effect): a child forked after it
    would name ``auth``'s table ``app_users``. Its sources are in the project too (a
    checkout, installed; pytest run from its ``tests``, the project not on ``sys.path``:
    the installed copy is the one imported), so the child is an interpreter started for
    the checks."""
    project = make_project(tmp_path / "two")
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (project / "tests").mkdir()
    (project / "app_plugin.py").write_text(
        "import sys\nimport types\n\n"
        "sys.modules['naming'] = types.SimpleNamespace(USERS='app_users')\n"
    )
    python = install_the_application(project, tmp_path / "venv", plugin="app_plugin", keep=True)

    done = auth_items_with_the_plugin(python, project / "tests")
    assert "reynard-db::auth::upgrade PASSED" in done.stdout, done.stdout + done.stderr


#: ``shared`` as an ORM extension makes it (Flask-SQLAlchemy's ``db = SQLAlchemy()``): the
#: MetaData is an attribute of an object, not a module's.
SHARED_IN_AN_EXTENSION = """
import sqlalchemy as sa


class Extension:
    def __init__(self):
        self.metadata = sa.MetaData()


db = Extension()
"""


def hold_the_metadata_in_an_extension(project: Path) -> None:
    """``project``'s models and ``env.py`` use ``shared.db.metadata``."""
    (project / "shared.py").write_text(SHARED_IN_AN_EXTENSION.lstrip())
    for path in (
        project / "auth_models.py",
        project / "app_models.py",
        project / "auth_migrations" / "env.py",
        project / "app_migrations" / "env.py",
    ):
        path.write_text(path.read_text().replace("shared.metadata", "shared.db.metadata"))


def test_models_on_an_extension_object_an_entry_point_loads_get_a_clean_child(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "two")
    hold_the_metadata_in_an_extension(project)
    python = install_the_application(project, tmp_path / "venv")

    auth_items_with_the_plugin(python, project)


# -- 2. the run's server started in the early thread --------------------------------------
@pytest.mark.parametrize(
    "how",
    [
        ("--reynard-db-checks", "-k", "test_nothing"),  # (deselected) its server started ahead
        (),  # its agent starts its server all the same
    ],
    ids=["check-items-deselected", "tests"],
)
def test_a_run_that_needs_no_database_does_not_wait_for_a_hanging_server(
    tmp_path: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch, how: tuple[str, ...]
) -> None:
    """A server that hangs at its boot, started ahead for a run whose tests take no
    database: the run's end gives the start up (the agent's or the test process's), not
    waits for its boot timeout; nothing of it is left."""
    warm_initdb(runtime, monkeypatch)
    project = reynard_project(tmp_path / "project")
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)
    bindir = hanging_postgres(runtime.parent)

    started = time.monotonic()
    done = run_pytest(
        project,
        "--reynard-db=ecs",
        *how,
        "test_nothing.py",
        REYNARD_DB_RUNTIME_DIR=str(runtime),
        REYNARD_DB_PG_BIN=str(bindir),
    )
    took = time.monotonic() - started

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "clean-up failed" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert took < PROMPT, f"{took:.1f} s for a run that needs no database"
    assert not list(runtime.glob("server-*")), os.listdir(runtime)
    assert [pid for pid in hanging_pids(runtime.parent) if not gone(pid)] == []


def run_until_passed(project: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    """``pytest --reynard-db=ecs --reynard-db-checks -k test_nothing test_nothing.py`` in
    ``project`` (a run that starts its server ahead), once it says "1 passed"
    (its clean-up under way, if it is still running); its output's file."""
    out_file = project / "output.txt"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reynard-db=ecs"]
    argv += ["--reynard-db-checks", "-k", "test_nothing"]  # a run that starts it ahead
    with out_file.open("w") as out:  # a file, not a pipe: a child left would hold a pipe
        process = subprocess.Popen(
            [*argv, "test_nothing.py"], cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    wait_until(lambda: "1 passed" in out_file.read_text(), 60, "the run's 1 passed")
    return process, out_file


def test_a_run_terminated_at_its_end_leaves_no_postmaster(
    tmp_path: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm_initdb(runtime, monkeypatch)
    project = reynard_project(tmp_path / "project")
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)
    bindir, launched = slow_postgres(runtime.parent)
    env = clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime), REYNARD_DB_PG_BIN=str(bindir))

    process, out_file = run_until_passed(project, env)
    try:
        deadline = time.monotonic() + PROMPT
        while not launched.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:  # the tests are over: the clean-up is what is ended
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        wait_for_no_start(launched, runtime)
        assert running_servers(runtime) == [], out_file.read_text()
    finally:
        stop_postmasters(runtime)


def wait_for_no_start(launched: Path, runtime: Path) -> None:
    """Once the run has ended: until the slow start last launched is gone, or a server of
    ``runtime`` runs (the start exec'd the real postgres: the run left it). A poll, not
    PROMPT seconds each time; a run that ended before any launch: PROMPT seconds for a
    server to appear all the same."""
    if not launched.exists():
        deadline = time.monotonic() + PROMPT
        while not running_servers(runtime) and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    wait_until(
        lambda: gone(int(launched.read_text())) or running_servers(runtime),
        PROMPT,
        f"the slow start ({launched}) to end, or its server to run",
    )


def test_a_run_killed_while_its_conftest_imports_leaves_its_server_to_the_next_run(
    tmp_path: Path, runtime: Path
) -> None:
    """The server is started while the conftests import, before any test asks for it; a
    run killed then (SIGKILL, the OOM killer, a CI timeout) cannot stop it, as at any
    later moment of a run: the next run's start reaps it (its owner record names a dead
    pid), and nothing is left once that run ends."""
    project = reynard_project(tmp_path / "project")
    (project / "conftest.py").write_text("import time\n\ntime.sleep(60)\n")
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reynard-db=ecs"]
    argv += ["--reynard-db-checks", "-k", "test_nothing"]  # a run that starts it ahead
    env = clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime))
    process = subprocess.Popen(
        [*argv, "test_nothing.py"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: running_servers(runtime), PROMPT, "the early thread's server")
        process.kill()
        process.wait(timeout=60)
        (project / "conftest.py").unlink()
        done = subprocess.run(
            [*argv, "test_nothing.py"], cwd=project, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and "reynard-db" not in done.stderr, done.stderr
        assert running_servers(runtime) == []
    finally:
        stop_postmasters(runtime)


def stop_postmasters(runtime: Path) -> None:
    """Stop what a killed run left under ``runtime`` (SIGQUIT: an immediate shutdown)."""
    for data in running_servers(runtime):
        with suppress(OSError, ValueError):
            os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)


def test_an_agent_terminated_while_it_starts_the_server_leaves_nothing(
    tmp_path: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM to the run's agent while its postmaster boots (a slow ``postgres``): the
    signal abandons the start, which stops what it launched; the agent then ends by it
    (exit 143, said in one line by the test that asked), and no server directory or
    process of the start is left."""
    warm_initdb(runtime, monkeypatch)
    project = reynard_project(tmp_path / "project")
    (project / "test_one.py").write_text("def test_one(reynard_db):\n    assert reynard_db.head\n")
    bindir, launched = slow_postgres(runtime.parent)
    env = clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime), REYNARD_DB_PG_BIN=str(bindir))
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reynard-db=ecs"]
    out_file = project / "output.txt"
    with out_file.open("w") as out:  # a file, not a pipe: a child left would hold a pipe
        process = subprocess.Popen(
            [*argv, "test_one.py"], cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: launched.exists() or process.poll() is not None, 60, "the launch")
        agents = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(agents) == 1, (agents, out_file.read_text())
        os.kill(int(agents[0]), signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stop_postmasters(runtime)
    said = out_file.read_text()
    assert "the run's agent (pid " in said and "ended unexpectedly (exit 143)" in said, said
    assert "Traceback" not in said and "clean-up failed" not in said, said
    assert gone(int(launched.read_text())), said
    assert running_servers(runtime) == [] and not list(runtime.glob("server-*")), said
