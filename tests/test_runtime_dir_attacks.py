"""Attacks on the runtime directory's fitness for PostgreSQL's socket paths
(``postgres.runas``), by hostile25e: a comma (PostgreSQL's ``-k`` and libpq's ``host``
are comma-separated lists) or bytes that are not UTF-8 (no conninfo can name them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_fork import cli_argv
from reynard_trees import clean_env, pytest_argv, reynard_project, run_pytest
from test_guard_attacks import TRIVIAL_TEST

from pytest_reynard_db.foundation.errors import ServerError
from pytest_reynard_db.postgres.runas import run_as, runtime_root

#: Directory names no server's socket path can go under, and what the one line says.
UNFIT = {
    "comma": ("a,b", "a comma"),
    "not-utf8": (os.fsdecode(b"\xff"), "not UTF-8"),
}


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A temp directory the server's user can reach (pytest's own is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="rdb-h25e-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("front", ["check", "pytest"])
@pytest.mark.parametrize("unfit", sorted(UNFIT))
def test_a_runtime_directory_unfit_for_socket_paths_is_one_line(
    tmp_path: Path, reachable_tmp: Path, unfit: str, front: str
) -> None:
    """Every server start failed there: with a comma, the server's log (a lock file in
    half the path) after its launch; not UTF-8, a traceback from initdb's output."""
    name, said = UNFIT[unfit]
    project = reynard_project(tmp_path / "project")
    (project / "test_trivial.py").write_text(TRIVIAL_TEST)
    runtime = reachable_tmp / name / "reynard-db"
    argv = (
        cli_argv(project, "check", "main", "--only", "upgrade")
        if front == "check"
        else pytest_argv("--reynard-db=main")
    )

    done = subprocess.run(
        argv,
        cwd=project,
        env=clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime)),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
    )

    shown = f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode != 0, shown
    assert "Traceback" not in done.stdout + done.stderr, shown
    lines = [line for line in (done.stdout + done.stderr).splitlines() if said in line]
    assert lines and "REYNARD_DB_RUNTIME_DIR" in lines[0], shown
    assert "LOG:" not in done.stdout + done.stderr, shown
    assert not (reachable_tmp / name).exists()  # refused before anything is made


@pytest.mark.parametrize("unfit", sorted(UNFIT))
def test_a_temp_directory_unfit_for_socket_paths_is_passed_over(
    reachable_tmp: Path, monkeypatch: pytest.MonkeyPatch, unfit: str
) -> None:
    name, _ = UNFIT[unfit]
    bad = reachable_tmp / name
    clean = reachable_tmp / "clean"
    for parent in (bad, clean):
        parent.mkdir(mode=0o1777)
        parent.chmod(0o1777)
    monkeypatch.delenv("REYNARD_DB_RUNTIME_DIR", raising=False)  # the default places

    assert runtime_root(run_as(), candidates=(bad, clean)) == clean / f"reynard-db-{os.geteuid()}"
    assert not list(bad.iterdir())
    with pytest.raises(ServerError, match="no directory"):
        runtime_root(run_as(), candidates=(bad,))


def test_a_tilde_in_the_runtime_directory_is_the_home_directory(
    reachable_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``REYNARD_DB_RUNTIME_DIR: ~/.cache/reynard-db`` in a CI file's ``env:`` reaches the
    process unexpanded (no shell): it was made as a directory named ``~`` in the current
    directory, the user's checkout."""
    home, checkout = reachable_tmp / "home", reachable_tmp / "checkout"
    for directory in (home, checkout):
        directory.mkdir(mode=0o755)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("REYNARD_DB_RUNTIME_DIR", "~/.cache/reynard-db")
    monkeypatch.chdir(checkout)

    assert runtime_root(run_as()) == home / ".cache" / "reynard-db"
    assert not list(checkout.iterdir())


#: A conftest that changes directory as it is imported (as some projects' do, to find
#: their fixtures' files).
CHDIR_CONFTEST = """\
import os

os.chdir("sub")
"""


@pytest.mark.parametrize("checks", [False, True])
def test_a_relative_runtime_directory_is_one_directory(reachable_tmp: Path, checks: bool) -> None:
    """``REYNARD_DB_RUNTIME_DIR=rt``, and a conftest that changes directory: the run made
    ``rt`` where it began (its initdb thread) and ``sub/rt`` after (its server, the check
    items' children), an initdb cache in each (40 MB, and initdb run twice)."""
    project = reynard_project(reachable_tmp / "project")
    (project / "sub").mkdir()
    (project / "conftest.py").write_text(CHDIR_CONFTEST)
    (project / "test_one.py").write_text(TRIVIAL_TEST)
    for path in (project, *project.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the server's user goes in
    options = ("--reynard-db-checks",) if checks else ()

    done = run_pytest(project, "--reynard-db=main", *options, REYNARD_DB_RUNTIME_DIR="rt")

    assert done.returncode == 0, done.stdout + done.stderr
    assert (project / "rt").is_dir()
    assert not (project / "sub" / "rt").exists(), os.listdir(project / "sub" / "rt")
