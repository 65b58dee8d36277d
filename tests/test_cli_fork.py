"""The tests' forked ``reynard-migrate`` (``cli_fork``) is the started one: the same exit
code, stdout and stderr on success, bad input and a check's failure; the same
environment, directory, import path and temporary directory in ``env.py``; a run whose
interpreter would start otherwise (``PYTHONPATH``) is forked from a server started so, or
started where its start runs code (a ``sitecustomize``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cli_fork
import pytest
from cli_fork import run_cli
from reynard_trees import clean_env, pytest_argv, write_revision

#: Put first in the main tree's env.py: what a new interpreter would hold, on stderr.
REPORT = """\
import os as _os, sys as _sys, tempfile as _tempfile
print("parent", _os.getppid(), file=_sys.stderr)
print("cwd", _os.getcwd(), "path0", _sys.path[0], "argv0", _sys.argv[0], file=_sys.stderr)
print("tmp", _tempfile.gettempdir(), "told", _os.environ.get("TOLD"), file=_sys.stderr)
print("modules", "reynard_models.main" in _sys.modules, file=_sys.stderr)
"""

#: A revision lint fails: an index built while the table is locked against writes.
INDEX = 'op.create_index("ix_user_account_id", "user_account", ["id"])'


def both(project: Path, *argv: str, env: dict[str, str]) -> tuple[tuple[int, str, str], ...]:
    return tuple(run_cli(project, *argv, env=env, process=p) for p in ("fork", "exec"))


@pytest.mark.parametrize(
    "argv",
    [
        ("list",),
        ("heads", "main"),
        ("history", "ecs"),
        ("heads", "nosuch"),
        ("--bogus", "list"),
        ("lint", "main", "--format", "json"),
        ("check", "main", "--only", "single_head"),
    ],
    ids=["list", "heads", "history", "unknown-database", "usage", "lint", "check-fails"],
)
def test_forked_and_started_say_the_same(project: Path, argv: tuple[str, ...]) -> None:
    versions = project / "alembic/main/versions"
    write_revision(versions, "3a1400000009", "3a1400000003")  # a second head
    write_revision(versions, "3a140000000a", "3a1400000004", INDEX, slug="index")
    forked, started = both(project, *argv, env=clean_env())
    assert forked == started
    code, out, err = forked
    if argv[0] == "list":
        assert code == 0 and "main" in out and err == "", forked
    elif argv[0] in ("heads", "history"):
        assert code == (2 if argv[1] == "nosuch" else 0), forked
        assert ("unknown database 'nosuch'" in err) == (argv[1] == "nosuch"), forked
    elif argv[0] == "--bogus":
        assert code == 2 and "unrecognized arguments: --bogus" in err, forked
    elif argv[0] == "lint":
        assert code == 1 and '"revision": "3a140000000a"' in out and err == "", forked
    else:  # the second head written above
        assert code == 1 and "3a1400000009" in out and err == "", forked


def test_env_py_sees_what_a_new_interpreter_would(project: Path, tmp_path: Path) -> None:
    """``env.py`` run by ``upgrade --sql`` (it connects to nothing) reports its process:
    all but its parent is the same forked (a child of the fork server's) and started."""
    env_py = project / "alembic/main/env.py"
    env_py.write_text(REPORT + env_py.read_text())
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = clean_env(TOLD="yes", TMPDIR=str(tmp))
    url = "postgresql://u@127.0.0.1:9/x"
    forked, started = both(project, "upgrade", "main", "--sql", "--url", url, env=env)
    assert forked[0] == started[0] == 0, (forked, started)
    forked_lines = forked[2].splitlines()
    started_lines = started[2].splitlines()
    assert started_lines[0] == f"parent {os.getpid()}"  # a child of this process
    assert forked_lines[0] != started_lines[0]  # the fork server's
    assert forked_lines[1:] == started_lines[1:]
    assert forked[1] == started[1] and "CREATE TABLE user_account" in forked[1]
    assert f"cwd {project} path0 {project} argv0 " in forked[2]
    assert f"tmp {tmp} told yes" in forked[2] and "modules False" in forked[2]


def test_a_run_whose_pythonpath_customizes_the_start_is_started(
    project: Path, tmp_path: Path
) -> None:
    """``PYTHONPATH`` is read at an interpreter's start (here a ``sitecustomize`` on it
    runs): a fork of a server would not run it, so that run is started."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nprint('sitecustomize ran', file=sys.stderr)\n"
    )
    env = clean_env(PYTHONPATH=str(site))
    forked, started = both(project, "list", env=env)
    assert forked == started
    assert forked[0] == 0 and forked[2] == "sitecustomize ran\n", forked


def test_a_run_with_its_own_pythonpath_is_forked_from_a_server_of_its_own(
    project: Path, tmp_path: Path
) -> None:
    """Another ``PYTHONPATH`` (a project's package folder, a site folder): its runs fork
    from a server started with it, one for them all, and see the import path, modules and
    output a started interpreter has; the process's own server serves the others still.
    A run whose other start values differ too is started."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "told.py").write_text("WHERE = 'the site folder'\n")
    env_py = project / "alembic/main/env.py"
    env_py.write_text(
        "import sys as _sys, told as _told\n"
        "print('told', _told.WHERE, _told.__file__, file=_sys.stderr)\n"
        + REPORT
        + env_py.read_text()
    )
    env = clean_env(PYTHONPATH=str(site))
    argv = ("upgrade", "main", "--sql", "--url", "postgresql://u@127.0.0.1:9/x")
    forked, started = both(project, *argv, env=env)
    assert forked[0] == started[0] == 0, (forked, started)
    forked_lines, started_lines = forked[2].splitlines(), started[2].splitlines()
    assert forked[1] == started[1] and forked_lines[2:] == started_lines[2:]
    assert forked_lines[0] == started_lines[0] == f"told the site folder {site / 'told.py'}"
    assert forked_lines[1] != started_lines[1] == f"parent {os.getpid()}"  # forked
    key = (os.getpid(), "cli", frozenset(cli_fork.start_values(env).items()))
    server = cli_fork._servers[key]
    own = run_cli(project, "list", env=clean_env())
    assert own[0] == 0 and "main" in own[1] and own[2] == "", own
    again = run_cli(project, *argv, env=env)
    assert again[2].splitlines()[2:] == forked_lines[2:] and again[2].startswith("told"), again
    assert cli_fork._servers[key] is server and server.process.poll() is None  # one for both
    # another value read at start besides PYTHONPATH (here the hash seed): started
    seeded = run_cli(project, *argv, env=clean_env(PYTHONPATH=str(site), PYTHONHASHSEED="7"))
    assert seeded[2].splitlines()[1] == f"parent {os.getpid()}", seeded


#: A project's conftest and test reporting the process they run in (``pytest`` runs).
PYTEST_REPORT = """\
import gc, json, os, signal, sys, threading, warnings

def umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask

def facts():
    return {
        "cwd": os.getcwd(), "path0": sys.path[0], "argv": sys.argv,
        "main": getattr(sys.modules["__main__"].__spec__, "name", None),
        "umask": umask(), "told": os.environ.get("TOLD"),
        "third_party": sorted(
            {m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names)
        ),
        "frozen": gc.get_freeze_count() > 0, "threads": threading.active_count(),
        "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)],
        "flags": str(sys.flags), "warnings": len(warnings.filters),
    }

AT_CONFTEST = facts()

def test_report():
    from early_report import AT_START
    print("REPORT", json.dumps({"start": AT_START, "conftest": AT_CONFTEST, "test": facts()}))
"""

#: Loaded by ``-p`` as pytest parses its arguments: before any installed plugin.
EARLY_REPORT = """import sys

AT_START = sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names))
"""


def test_a_forked_pytest_run_is_the_started_one(tmp_path: Path) -> None:
    """``pytest`` runs (``run_pytest_argv``) forked from the pytest fork server see what a
    started ``python -m pytest`` sees at its conftest and in a test: directory, import
    path, arguments, ``__main__``, umask, environment, every module not of the standard
    library, as pytest starts (SQLAlchemy and Alembic, which the server imported, are
    hidden until a plugin imports them; no plugin imported ahead: pytest rewrites
    plugins as it imports them), the collector's state, threads, signal handlers, flags
    and warning filters."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(PYTEST_REPORT)
    (project / "early_report.py").write_text(EARLY_REPORT)
    (project / "test_report.py").write_text("from conftest import test_report\n")
    argv = pytest_argv("-s", "-q", "-p", "early_report", "-p", "no:randomly", "test_report.py")
    env = clean_env(TOLD="yes")
    reports = []
    for process in ("fork", "exec"):
        result = cli_fork.run_pytest_argv(argv, project, env, umask=0o027, process=process)
        assert result.returncode == 0 and result.stderr == "", result
        line = next(line for line in result.stdout.splitlines() if "REPORT " in line)
        reports.append(json.loads(line.partition("REPORT ")[2]))
    forked, started = reports
    assert forked == started
    assert started["conftest"]["cwd"] == str(project) and started["test"]["umask"] == 0o027
    assert "sqlalchemy" not in started["start"]  # imported by plugins: not ahead of them
    assert "sqlalchemy" in started["test"]["third_party"]  # pytest-alembic's, by then
    assert any(key[:2] == (os.getpid(), "pytest") for key in cli_fork._servers)  # it forked


#: ``cli_fork.import_hidden`` in a new interpreter: what it hides, and what an import of
#: one hidden module gives back.
HIDDEN = """\
import sys
sys.path.insert(0, sys.argv[1])
import cli_fork

cli_fork.import_hidden("pytest_alembic.plugin")
finder = sys.meta_path[0]
engine, top = finder.hidden["sqlalchemy.engine"], finder.hidden["sqlalchemy"]
assert not [m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic", "mako")]
assert "pytest_alembic" not in sys.modules and "pytest_alembic" not in str(finder.hidden)
import importlib.util
spec = importlib.util.find_spec("sqlalchemy")  # is it installed? (imports nothing)
assert spec.origin == top.__spec__.origin and spec.submodule_search_locations, spec
assert not [m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic", "mako")]
import sqlalchemy.engine  # the parent hidden too: through the finder, then the rest at once

assert sqlalchemy is top and sqlalchemy.engine is engine
assert sys.modules["sqlalchemy"] is top and sys.modules["sqlalchemy.engine"] is engine
assert sqlalchemy.__spec__.origin.endswith("sqlalchemy/__init__.py"), sqlalchemy.__spec__
assert "alembic.config" in sys.modules and finder not in sys.meta_path
import pytest_alembic.plugin  # imported again: the server's was forgotten

assert pytest_alembic.plugin.__spec__.origin.endswith("__init__.py")
print("ok")
"""


def test_the_libraries_imported_ahead_are_the_same_modules_once_imported(tmp_path: Path) -> None:
    """The pytest server's libraries imported ahead (``import_hidden``) are out of
    ``sys.modules`` until one of them is imported (finding one, as a plugin asking whether
    a library is installed does, imports nothing); then that one, and all the others,
    are the very modules the server imported (not imported again), their own specs
    kept; the plugin itself is imported again (as pytest rewrites it)."""
    tests = str(Path(cli_fork.__file__).parent)
    result = subprocess.run(
        [sys.executable, "-c", HIDDEN, tests],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


#: A project's own ``typing_extensions`` (the library's, re-exported, and a mark), which
#: SQLAlchemy imports, and a test saying which one the run has.
OWN_TYPING_EXTENSIONS = """\
import importlib.util, os, sysconfig

MARK = "the project's"
_path = os.path.join(sysconfig.get_paths()["purelib"], "typing_extensions.py")
_spec = importlib.util.spec_from_file_location("_library_typing_extensions", _path)
_library = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_library)
globals().update({k: v for k, v in vars(_library).items() if not k.startswith("__")})
"""
WHICH = """\
import sys

def test_which():
    print("WHICH", getattr(sys.modules["typing_extensions"], "MARK", "the library's"))
"""


def test_a_project_module_named_like_one_imported_ahead_is_the_projects(tmp_path: Path) -> None:
    """A started ``python -m pytest`` imports the project's own ``typing_extensions.py``
    (its directory is first on the import path) where SQLAlchemy asks for it; a forked
    one, whose server imported the library's ahead, is started instead."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "typing_extensions.py").write_text(OWN_TYPING_EXTENSIONS)
    (project / "test_which.py").write_text(WHICH)
    argv = pytest_argv("-s", "-q", "-p", "no:randomly", "test_which.py")
    said = []
    for process in ("fork", "exec"):
        result = cli_fork.run_pytest_argv(argv, project, clean_env(), process=process)
        assert result.returncode == 0, result
        said.append([line for line in result.stdout.splitlines() if "WHICH" in line])
    assert said[0] == said[1] == ["WHICH the project's"]
