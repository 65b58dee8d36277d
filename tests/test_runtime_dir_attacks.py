"""Attacks on where ``$REYNARD_DB_RUNTIME_DIR`` puts the runtime directory
(``postgres.runas``), by hostile25e: a ``~`` no shell expanded, a relative path and a
conftest that changes directory. What no socket path can go under (too long, a comma,
not UTF-8) is in ``test_guard_user_paths``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from reynard_trees import reynard_project, run_pytest
from test_guard_attacks import TRIVIAL_TEST

from pytest_reynard_db.postgres.runas import run_as, runtime_root


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
