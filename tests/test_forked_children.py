"""A check child forked ahead (``checks.spares``: ``reynard-migrate check`` of several
databases, a pytest run's items) or kept by an xdist worker is an interpreter started for
the checks, as an ``env.py`` sees it (the hostile tester's round of session 16): the
working directory on ``sys.path``, nothing on stdin, the command's verbosity, no folder
left behind. Each run here is the console script a user types (``reynard-migrate``,
``pytest``): its ``sys.path[0]`` is the scripts folder, not the working directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from reynard_trees import admin_url, clean_env
from test_check_isolation import make_project

from pytest_reynard_db.postgres import EphemeralServer

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
