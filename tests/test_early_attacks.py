"""Attacks on the initdb begun as the plugin registers (issue 25:
``options.surely_starts_a_server``, ``early.begin_early``): runs that must begin no
initdb, or none before their first hook, and runs that must still end cleanly.

Three worked and are fixed: an empty ``--reynard-db=`` began an initdb; a usage error
(an invalid ``--reynard-db-source``) waited for a cold initdb before it was said; each
xdist worker, not yet knowing it was one at its first hook, started a server of its own.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from tests.reynard_trees import QUIET_ASYNCIO, reynard_project, run_pytest
from tests.test_early_initdb import NO_DATABASE_NEEDED, _initdb_entries

A_DATABASE = "def test_one(reynard_db):\n    assert reynard_db.head\n"

#: A conftest that says, per process (``main`` or the xdist worker), whether the run's
#: initdb thread was begun by then (``EARLY_START``), whether before the first hook
#: (``EARLY_SIGNALS``, set only by ``early.begin_early``), and whether the check items'
#: children were forked (``SPARES``).
SEES_THE_EARLY_START = """\
import os
from pathlib import Path

from pytest_reynard_db.plugin.stash import AGENT, EARLY_SIGNALS, EARLY_START, SPARES


def pytest_configure(config):
    who = os.environ.get("PYTEST_XDIST_WORKER", "main")
    seen = tuple(key in config.stash for key in (EARLY_START, EARLY_SIGNALS, SPARES, AGENT))
    Path(os.environ["SEEN_DIR"], who).write_text(repr(seen))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: the Reynard registry, no database selected in its ini."""
    return reynard_project(tmp_path / "project")


def _seen(seen_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(seen_dir.iterdir())}


def _watching(project: Path, tmp_path: Path) -> Path:
    """``SEES_THE_EARLY_START`` as the project's conftest; the folder it writes to."""
    (project / "conftest.py").write_text(SEES_THE_EARLY_START)
    seen_dir = tmp_path / "seen"
    seen_dir.mkdir()
    return seen_dir


def _in_the_ini(project: Path, lines: str) -> None:
    """``lines`` added to the project's ``[tool.pytest.ini_options]`` (its last table)."""
    with (project / "pyproject.toml").open("a") as pyproject:
        pyproject.write(lines)


def test_an_empty_reynard_db_begins_no_initdb(project: Path, runtime: Path) -> None:
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)

    done = run_pytest(
        project, "--reynard-db=", "test_nothing.py", REYNARD_DB_RUNTIME_DIR=str(runtime)
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert _initdb_entries(runtime) == ([], []), os.listdir(runtime)


@pytest.mark.parametrize(
    "source", [("--reynard-db-source=bogus",), ("--reynard-db-source", "bogus")], ids=["=", " "]
)
def test_a_usage_error_begins_no_initdb(
    project: Path, runtime: Path, source: tuple[str, ...]
) -> None:
    """In either form argparse takes (the two-token one forked the agent, which built
    the initdb cache before the error was said)."""
    (project / "test_one.py").write_text(A_DATABASE)

    done = run_pytest(
        project, "--reynard-db=ecs", *source, "test_one.py", REYNARD_DB_RUNTIME_DIR=str(runtime)
    )

    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "--reynard-db-source: invalid choice: 'bogus'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert _initdb_entries(runtime) == ([], []), os.listdir(runtime)


def test_xdist_workers_begin_no_initdb_thread(project: Path, runtime: Path, tmp_path: Path) -> None:
    (project / "test_one.py").write_text(A_DATABASE)
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)
    seen_dir = _watching(project, tmp_path)

    done = run_pytest(
        project,
        "-n",
        "2",
        "--reynard-db=ecs",
        "test_one.py",
        "test_nothing.py",
        REYNARD_DB_RUNTIME_DIR=str(runtime),
        SEEN_DIR=str(seen_dir),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    # the controller began it as the plugin registered; the workers use its server
    expected = {
        "main": "(True, True, False, False)",
        "gw0": "(False, False, False, False)",
        "gw1": "(False, False, False, False)",
    }
    assert _seen(seen_dir) == expected


def test_the_two_token_form_begins_early(project: Path, runtime: Path, tmp_path: Path) -> None:
    """``--reynard-db ecs`` (two arguments) is read as ``--reynard-db=ecs``: the run's
    agent is forked as the plugin registers (it starts the server; no initdb thread)."""
    (project / "test_one.py").write_text(A_DATABASE)
    seen_dir = _watching(project, tmp_path)

    done = run_pytest(
        project,
        "--reynard-db",
        "ecs",
        "test_one.py",
        REYNARD_DB_RUNTIME_DIR=str(runtime),
        SEEN_DIR=str(seen_dir),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert _seen(seen_dir) == {"main": "(False, False, False, True)"}


def test_ini_check_items_still_fork_their_children(
    project: Path, runtime: Path, tmp_path: Path
) -> None:
    """``reynard_db_checks = true`` in the ini with ``--reynard-db`` on the command line:
    the run's agent is forked as the plugin registers (a process, not a thread: the
    process still has one thread), and the check items' children at the first hook."""
    _in_the_ini(project, "reynard_db_checks = true\n")
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)
    seen_dir = _watching(project, tmp_path)

    done = run_pytest(
        project, "--reynard-db=ecs", REYNARD_DB_RUNTIME_DIR=str(runtime), SEEN_DIR=str(seen_dir)
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "reynard-db" in done.stdout and "failed" not in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert _seen(seen_dir) == {"main": "(False, False, True, True)"}


def test_an_in_process_run_puts_the_signal_handlers_back(
    project: Path, runtime: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest in pytest (``pytester``, in-process), its initdb begun as the plugin
    registered: the outer run's SIGTERM/SIGHUP handlers are back after it, and its
    initdb thread is done (waited for). (An outer process of one thread, ``-n 0``, forks
    the inner run's agent instead: ended, and waited for, as the inner run ends.)"""
    (project / "test_nothing.py").write_text(NO_DATABASE_NEEDED)
    (project / "conftest.py").write_text(SEES_THE_EARLY_START)
    seen_dir = project / "seen"
    seen_dir.mkdir()
    monkeypatch.chdir(project)
    for name in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "REYNARD_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REYNARD_DB_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("SEEN_DIR", str(seen_dir))
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    result = pytester.runpytest_inprocess(
        *QUIET_ASYNCIO.split(), "--reynard-db=ecs", "test_nothing.py"
    )

    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stderr.str(), result.stderr.str()
    assert _seen(seen_dir)["main"] in ("(True, True, False, False)", "(False, False, False, True)")
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert not [t for t in threading.enumerate() if t.name == "reynard-db-initdb"]
    complete, scratch = _initdb_entries(runtime)
    assert len(complete) == 1 and scratch == [], os.listdir(runtime)


@pytest.mark.parametrize("key", ["reynard_db", "reynard-db"])
def test_the_ini_key_begins_early(project: Path, runtime: Path, tmp_path: Path, key: str) -> None:
    """The README's Quick start selects the database in the ini (``reynard_db = "ecs"``),
    no ``--reynard-db`` anywhere: the run's agent is forked as the plugin registers, as for
    the command line (session 12 found such runs took the in-process path)."""
    _in_the_ini(project, f'"{key}" = "ecs"\n')
    (project / "test_one.py").write_text(A_DATABASE)
    seen_dir = _watching(project, tmp_path)

    done = run_pytest(
        project, "test_one.py", REYNARD_DB_RUNTIME_DIR=str(runtime), SEEN_DIR=str(seen_dir)
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert _seen(seen_dir) == {"main": "(False, False, False, True)"}


def test_an_empty_reynard_db_reads_the_ini_key(
    project: Path, runtime: Path, tmp_path: Path
) -> None:
    """``--reynard-db=`` (empty) on the command line leaves the ini's database selected, as
    ``get_settings`` reads every option (an empty value is no value): the early read
    agrees, and forks the agent for it."""
    _in_the_ini(project, 'reynard_db = "ecs"\n')
    (project / "test_one.py").write_text(A_DATABASE)
    seen_dir = _watching(project, tmp_path)

    done = run_pytest(
        project,
        "--reynard-db=",
        "test_one.py",
        REYNARD_DB_RUNTIME_DIR=str(runtime),
        SEEN_DIR=str(seen_dir),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert _seen(seen_dir) == {"main": "(False, False, False, True)"}


@pytest.mark.parametrize(
    "args", [("--reynard-db", "--co"), ("--co", "--reynard-db")], ids=["before", "last"]
)
def test_a_missing_value_begins_nothing(
    project: Path, runtime: Path, args: tuple[str, ...]
) -> None:
    """``--reynard-db --co`` (or ``--reynard-db`` last) with a database in the ini:
    pytest's usage error (the option takes a value), said at once, with no agent or
    initdb begun for the ini's database."""
    _in_the_ini(project, 'reynard_db = "ecs"\n')
    (project / "test_one.py").write_text(A_DATABASE)

    done = run_pytest(project, *args, REYNARD_DB_RUNTIME_DIR=str(runtime))

    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "--reynard-db: expected one argument" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert _initdb_entries(runtime) == ([], []), os.listdir(runtime)


def test_an_invalid_ini_source_begins_nothing(project: Path, runtime: Path) -> None:
    """A database from the ini with an invalid ``reynard_db_source`` there: the usage
    error is said at once, with no agent, initdb or server begun for it."""
    _in_the_ini(project, 'reynard_db = "ecs"\nreynard_db_source = "bogus"\n')
    (project / "test_one.py").write_text(A_DATABASE)

    done = run_pytest(project, "test_one.py", REYNARD_DB_RUNTIME_DIR=str(runtime))

    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "reynard_db_source: 'bogus' is not one of copy, point" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert _initdb_entries(runtime) == ([], []), os.listdir(runtime)


@pytest.mark.parametrize(
    ("ini", "expected"),
    [
        ("reynard_db_reuse = true\n", True),
        ('"reynard-db-reuse" = true\n', True),
        ("reynard_db_reuse = false\n", False),
        ("", False),
    ],
)
def test_reuse_from_the_ini_is_read_before_pytest_parses(
    pytester: pytest.Pytester, ini: str, expected: bool
) -> None:
    """The agent is forked for the kept server or a server of its own on the early read of
    ``--reynard-db-reuse``: the ini's key, under either spelling, counts as the option."""
    from pytest_reynard_db.plugin.options import surely_reuses

    pytester.makepyprojecttoml(f"[tool.pytest.ini_options]\n{ini}")

    assert surely_reuses(pytester.parseconfig()) is expected
