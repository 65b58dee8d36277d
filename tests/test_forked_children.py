"""A check child forked ahead (``checks.spares``: ``reynard-migrate check`` of several
databases, a pytest run's items) or kept by an xdist worker is an interpreter started for
the checks, as an ``env.py`` sees it (the hostile tester's round of session 16): the
working directory on ``sys.path``, nothing on stdin, the command's verbosity, no folder
left behind. Each run here is the console script a user types (``reynard-migrate``,
``pytest``): its ``sys.path[0]`` is the scripts folder, not the working directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reynard_trees import (
    admin_url,
    alembic_init_project,
    clean_env,
    ctrl_c_as_in_a_terminal,
    scratch_databases,
    wait_until,
)
from test_check_isolation import make_project

from pytest_reynard_db.postgres import EphemeralServer, find_binaries

SCRIPTS = Path(sys.executable).parent
#: The two databases' ``upgrade`` items (each in a child of its own).
ITEMS = ["--reynard-db=app,auth", "--reynard-db-checks", "-k", "upgrade", "-p", "no:cacheprovider"]
#: ``reynard-migrate`` in a process that imported a module of the project first (its
#: ``shared``): not clean, so its children are started interpreters (``fork_spares``).
STARTED = (
    "import sys, shared\n"
    "from pytest_reynard_db.__main__ import main\n"
    "sys.argv[0] = 'reynard-migrate'\n"
    "main()\n"
)
RUNS = {
    "check": [str(SCRIPTS / "reynard-migrate"), "check", "app", "auth", "--only", "upgrade"],
    "check, started": [sys.executable, "-c", STARTED, "check", "app", "auth", "--only", "upgrade"],
    "pytest": [str(SCRIPTS / "pytest"), *ITEMS],
    "pytest -n 2": [str(SCRIPTS / "pytest"), "-n", "2", *ITEMS],
}


def before_env_py(project: Path, code: str) -> None:
    """``code`` run first in both databases' ``env.py``."""
    for name in ("app", "auth"):
        env_py = project / f"{name}_migrations" / "env.py"
        env_py.write_text(code + env_py.read_text())


def run(
    project: Path, argv: list[str], url: str, *, stdin: int | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    command = [*argv, f"--url={url}" if "check" in argv else f"--reynard-db-url={url}"]
    return subprocess.run(
        command,
        cwd=project,
        env=clean_env(**env),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("how", list(RUNS))
def test_the_working_directory_is_on_sys_path(
    tmp_path: Path, pg_server: EphemeralServer, how: str
) -> None:
    """A project whose ``env.py`` imports its models from the working directory (no
    ``prepend_sys_path`` in the ini, no ``pythonpath`` for pytest): a started child had it
    (``python -m`` puts it first); a child forked from a console script had the scripts
    folder instead, and every check failed on ``No module named 'app_models'``."""
    project = make_project(tmp_path / "two")
    for ini in project.glob("alembic_*.ini"):
        ini.write_text(ini.read_text().replace("prepend_sys_path = .\n", ""))
    (project / "pyproject.toml").write_text("")
    done = run(project, RUNS[how], admin_url(pg_server))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No module named" not in done.stdout + done.stderr


@pytest.mark.parametrize("how", list(RUNS))
def test_env_py_reads_nothing_on_stdin(
    tmp_path: Path, pg_server: EphemeralServer, how: str
) -> None:
    """An ``env.py`` that reads stdin reads nothing, and the run does not wait on it: a
    forked child's stdin was the command's (a user's terminal, or a pipe still open), a
    kept child's its requests (a read swallowed the next item's, or waited for ever)."""
    project = make_project(tmp_path / "two")
    read = tmp_path / "read.txt"
    before_env_py(project, f"import sys\nopen({str(read)!r}, 'a').write(repr(sys.stdin.read()))\n")
    with subprocess.Popen(["sleep", "300"], stdout=subprocess.PIPE) as open_pipe:
        try:
            done = run(project, RUNS[how], admin_url(pg_server), stdin=open_pipe.stdout)
        finally:
            open_pipe.kill()
    assert done.returncode == 0, done.stdout + done.stderr
    assert read.read_text() == "''" * 2, read.read_text()


@pytest.mark.parametrize("how", list(RUNS))
def test_strict_warnings_see_no_pipe_left_open(
    tmp_path: Path, pg_server: EphemeralServer, how: str
) -> None:
    """Under a user's strict warnings (``PYTHONWARNINGS=error``; ``-s``, where pytest would
    hide the children's stderr in its capture), a child closes both ends of its pipes: its
    requests were left to the collector, "Exception ignored ... ResourceWarning: unclosed
    file" once per child (the hostile tester's round of session 17)."""
    project = make_project(tmp_path / "two")
    argv = [*RUNS[how], *(["-s"] if "pytest" in how else [])]
    done = run(project, argv, admin_url(pg_server), PYTHONWARNINGS="error::ResourceWarning")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "ResourceWarning" not in output and "Exception ignored" not in output, output


def test_a_forked_child_leaves_no_folder(
    tmp_path: Path, pg_server: EphemeralServer, runtime: Path
) -> None:
    """Each child's own folder in the runtime directory (``runas.process_scratch``) goes
    when it ends: a forked one ends without the interpreter's exit, where it went."""
    project = make_project(tmp_path / "two")
    done = run(project, RUNS["check"], admin_url(pg_server), REYNARD_DB_RUNTIME_DIR=str(runtime))
    assert done.returncode == 0, done.stdout + done.stderr
    assert list((runtime / "scratch").iterdir()) == []


LOGS = """\
import logging
logging.basicConfig()
logging.getLogger("app.env").setLevel(logging.INFO)
logging.getLogger("app.env").warning("ENV-WARNING")
logging.getLogger("app.env").info("ENV-INFO")
"""


@pytest.mark.parametrize("how", ["check", "check, started"])
@pytest.mark.parametrize(
    ("flag", "shown"),
    [("-q", set()), (None, {"ENV-WARNING"}), ("-v", {"ENV-WARNING", "ENV-INFO"})],
)
def test_children_log_as_the_command_says(
    tmp_path: Path, pg_server: EphemeralServer, flag: str | None, shown: set[str], how: str
) -> None:
    """``-q``, the default and ``-v`` hide the records of an ``env.py`` in each database's
    child as in the command's own process (``check DB``): a forked child kept the
    command's setting by chance; a started one showed every record."""
    project = make_project(tmp_path / "two")
    before_env_py(project, LOGS)
    argv = [*RUNS[how], *([flag] if flag else [])]
    done = run(project, argv, admin_url(pg_server))
    assert done.returncode == 0, done.stdout + done.stderr
    assert {word for word in ("ENV-WARNING", "ENV-INFO") if word in done.stderr} == shown


def test_a_child_killed_fails_only_the_checks_that_apply(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    """A database's child killed with ``-9`` (the OOM killer) mid-check: its checks fail,
    saying so, each that applies to it once; not ``mirror_sync`` too, for a database that
    mirrors none (a line no run of it has), and the other database's run as always."""
    project = make_project(tmp_path / "two")
    pids, slept = tmp_path / "pids.txt", tmp_path / "slept"
    argv = [*RUNS["check"][:4], "--format", "json", f"--url={admin_url(pg_server)}"]
    env = clean_env(ISOLATION_PIDS=str(pids), ISOLATION_SLEEP_ONCE=str(slept))
    with subprocess.Popen(
        argv, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as check:
        try:
            wait_until(lambda: slept.exists() or check.poll() is not None, 120, "app's env.py")
            pid, models = pids.read_text().split()
            assert models == "app_models"
            os.kill(int(pid), signal.SIGKILL)
            out, err = check.communicate(timeout=120)
        finally:
            check.kill()
    assert check.returncode == 1, out + err
    results = json.loads(out)["results"]
    checked = {db: [r["check"] for r in results if r["database"] == db] for db in ("app", "auth")}
    assert checked["app"] == checked["auth"], checked
    assert all(r["ok"] for r in results if r["database"] == "auth"), results
    assert all("killed by signal 9" in r["message"] for r in results if r["database"] == "app")
    assert scratch_databases(pg_server) == [], "the killed child's database, dropped by check"


AFTER_THE_CHECKS = """\
import os

def test_after_the_checks():
    mine, children = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
            command = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if parent == mine and b"checks.child" in command:
            children.append(pid)
    assert children == []
"""


def test_a_workers_kept_children_end_when_its_check_items_do(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    """An xdist worker's kept children (``IsolatedChild.run(keep=True)``) end once the
    worker goes on to other tests, not idle (~70 MB each) until the run ends."""
    project = make_project(tmp_path / "two")
    (project / "test_after.py").write_text(AFTER_THE_CHECKS)
    argv = [str(SCRIPTS / "pytest"), "-n", "1", "--reynard-db=app", "--reynard-db-checks"]
    done = run(project, [*argv, "-p", "no:cacheprovider", "test_after.py"], admin_url(pg_server))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout, done.stdout


#: A binary ({binary}) that waits until {release} exists to run, for the arguments that
#: match {when}.
HELD = """\
#!/bin/sh
case " $* " in *{when}*) while [ ! -e {release} ]; do sleep 0.1; done ;; esac
exec {binary} "$@"
"""
#: What is held, by the binary that holds it and its arguments: initdb (any), or the
#: server's boot (a postgres launched with ``-p PORT``, not initdb's).
HELD_BY = {"initdb": ("initdb", ""), "boot": ("postgres", '" -p "')}


#: A project's conftest writing to {out}, as the run ends, how many check children it left
#: with their pipes open.
LEFT_OPEN = """\
import gc, pathlib

def pytest_unconfigure():
    from pytest_reynard_db.checks.isolated import IsolatedChild

    children = [o for o in gc.get_objects() if isinstance(o, IsolatedChild)]
    left = [c for c in children if not c._replies.closed]
    pathlib.Path({out!r}).write_text(str(len(left)))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
@pytest.mark.parametrize("held", list(HELD_BY))
def test_a_check_item_interrupted_while_it_waits_for_the_server_leaves_no_pipe_open(
    tmp_path: Path, runtime: Path, sig: signal.Signals, held: str
) -> None:
    """Ctrl-C or SIGTERM while the first check item waits for the run's server (its initdb
    or its boot held here): the item's child was never closed, and its pipes, collected
    open, were two "Exception ignored ... ResourceWarning" under ``-W error`` (the hostile
    tester's round of session 17)."""
    project = alembic_init_project(tmp_path / "app", "postgresql+psycopg://nobody@127.0.0.1:9/app")
    with (project / "pyproject.toml").open("a") as pyproject:
        pyproject.write('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    # tests that import the models: no child forked ahead, the checks' is started
    (project / "models.py").write_text("import sqlalchemy as sa\nmetadata = sa.MetaData()\n")
    (project / "test_models.py").write_text("import models\n\ndef test_models():\n    pass\n")
    # What was left open is seen where it is left, not when the collector happens to
    # take it (a cycle through the interruption's traceback): at the run's end, its
    # check children whose pipes are still open.
    left_open = tmp_path / "left_open.txt"
    (project / "conftest.py").write_text(LEFT_OPEN.format(out=str(left_open)))
    release = runtime.parent / "release"
    bindir = runtime.parent / "bin"  # where the server's user goes in
    bindir.mkdir()
    real = find_binaries()
    holder, when = HELD_BY[held]
    for name in ("initdb", "postgres"):
        binary = getattr(real, name)
        if name != holder:
            (bindir / name).symlink_to(binary)
            continue
        (bindir / name).write_text(HELD.format(release=release, binary=binary, when=when))
        (bindir / name).chmod(0o755)
    env = clean_env(
        REYNARD_DB_RUNTIME_DIR=str(runtime), REYNARD_DB_PG_BIN=str(bindir), PYTHONUNBUFFERED="1"
    )
    argv = [
        str(SCRIPTS / "pytest"),
        "-W",
        "error::ResourceWarning",
        "-v",
        "--reynard-db=app",
        "--reynard-db-checks",
    ]
    with (
        ctrl_c_as_in_a_terminal(),
        subprocess.Popen(
            [*argv, "-p", "no:cacheprovider"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as pytest_run,
    ):
        try:
            assert pytest_run.stdout is not None and pytest_run.stderr is not None
            shown = b""
            while b"::app::" not in shown:  # -v names an item as it begins, before a newline
                chunk = os.read(pytest_run.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(shown.decode() + pytest_run.stderr.read())
                shown += chunk
            time.sleep(0.5)  # the item is waiting for the held initdb or boot
            pytest_run.send_signal(sig)
            # acted on while held; then released, or the run's end, which waits for an
            # initdb it began, waited ~20 s for the start to give up
            time.sleep(0.5)
            release.touch()
            out, err = pytest_run.communicate(timeout=60)
        finally:
            release.touch()
            if pytest_run.poll() is None:
                pytest_run.kill()
    assert pytest_run.returncode in (2, 128 + sig, -sig), out + err
    assert "ResourceWarning" not in err and "Exception ignored" not in err, err
    assert left_open.read_text() == "0", out + err
