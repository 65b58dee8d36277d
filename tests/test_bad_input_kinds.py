"""Bad input of the kinds a hostile tester tried (issue 23): one line, an exit code.

- drivers: ``postgresql+pg8000://`` (a 66-line traceback: the harness passed libpq's
  ``connect_timeout`` to pg8000) and a driver SQLAlchemy does not know;
- files that are not regular files: a FIFO as a revision file, ``script.py.mako``,
  ``env.py``, the ini or pyproject.toml (reading one blocks until a writer comes, so
  the CLI hung; an ini was "no such file"), a device (``/dev/zero`` never ends);
- control characters in a name the user gives: a database name (a NUL there cut
  libpq's conninfo short, so host and port after it were dropped: the connection went
  to the default server), a revision message, a branch label;
- a full disk while ``create`` writes (a double traceback).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from cli_fork import run_cli, run_pytest_argv
from reynard_trees import clean_env, copy_reynard_trees, reynard_project

from pytest_reynard_db.postgres import EphemeralServer

SECRET = "s3cr3t"
MAIN = Path("alembic/main/versions")
#: Long enough for a hang to show as one: every case here ends in about a second.
HANG = 60


def run(project: Path, *argv: str, **env: str) -> tuple[int, str, str]:
    return run_cli(project, *argv, env=clean_env(**env), timeout=HANG)


def one_line(err: str, expected: str) -> None:
    assert err.startswith("reynard-migrate: error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert "Traceback" not in err and SECRET not in err


# -- drivers -----------------------------------------------------------------------------------
def test_pg8000_urls_work_and_fail_in_one_line(tmp_path: Path, pg_server: EphemeralServer) -> None:
    project = copy_reynard_trees(tmp_path)
    port = pg_server.url.port
    url = f"postgresql+pg8000://postgres@127.0.0.1:{port}/test_pg8000_main"
    pg_server.drop_database("test_pg8000_main")
    try:
        code, out, err = run(project, "setup", "main", "--url", url)
        assert code == 0, err
        code, out, err = run(project, "current", "main", "--url", url)
        assert (code, err) == (0, ""), err
        assert "3a1400000004" in out
    finally:
        pg_server.drop_database("test_pg8000_main")
    admin = f"postgresql+pg8000://postgres@127.0.0.1:{port}/postgres"
    code, out, err = run(project, "check", "main", "--only", "upgrade", "--url", admin)
    assert code == 0, out + err
    with pg_server.connect() as conn:  # a port where nothing listens, found free
        conn.execute("SELECT 1")
    closed = f"postgresql+pg8000://u:{SECRET}@127.0.0.1:1/x"
    code, out, err = run(project, "upgrade", "main", "--url", closed)
    assert code == 2, err
    one_line(err, "database 'main': cannot connect to postgresql+pg8000://u:***@127.0.0.1:1/x: ")


@pytest.mark.parametrize(
    "argv",
    [
        ("upgrade", "main", "--url", f"postgresql+nosuch://u:{SECRET}@h/x"),
        ("check", "main", "--url", f"postgresql+nosuch://u:{SECRET}@h/postgres"),
        ("upgrade", "main", "--sql", "--url", f"postgresql+nosuch://u:{SECRET}@h/x"),
    ],
)
def test_an_unknown_driver_is_one_line(tmp_path: Path, argv: tuple[str, ...]) -> None:
    code, _, err = run(copy_reynard_trees(tmp_path), *argv)
    assert code == 2, err
    one_line(err, "postgresql+nosuch://u:***@h/")
    assert "unknown driver 'nosuch'" in err


def test_an_unknown_driver_in_pytest_is_one_line(tmp_path: Path) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_a.py").write_text("def test_a(reynard_db):\n    pass\n")
    done = run_pytest_argv(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reynard-db=main"],
        project,
        clean_env(REYNARD_DB_URL=f"postgresql+nosuch://u:{SECRET}@h/postgres"),
        timeout=HANG,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # as any bad --reynard-db-url: the first test errs
    assert (
        "reynard-db: --reynard-db-url: postgresql+nosuch://u:***@h/postgres: unknown driver "
        "'nosuch'; "
    ) in done.stdout, output
    assert "Traceback" not in output and SECRET not in output


# -- files that are not regular files ------------------------------------------------------------
def fifo(path: str) -> Callable[[Path], Path]:
    def make(project: Path) -> Path:
        target = project / path
        target.unlink(missing_ok=True)
        os.mkfifo(target)
        return target

    return make


def device(path: str) -> Callable[[Path], Path]:
    def make(project: Path) -> Path:
        target = project / path
        target.unlink(missing_ok=True)
        target.symlink_to("/dev/zero")
        return target

    return make


@pytest.mark.parametrize(
    ("make", "argv", "kind"),
    [
        (fifo(f"{MAIN}/3a1400000009_fifo.py"), ("heads", "main"), "a FIFO"),
        (fifo(f"{MAIN}/3a1400000009_fifo.py"), ("check", "main", "--only", "upgrade"), "a FIFO"),
        (fifo("alembic/main/script.py.mako"), ("create", "main", "-m", "x", "--empty"), "a FIFO"),
        (fifo("alembic/main/env.py"), ("upgrade", "main", "--sql"), "a FIFO"),
        (fifo("alembic/main/env.py"), ("check", "main", "--only", "upgrade"), "a FIFO"),
        (fifo("alembic_main.ini"), ("heads", "main"), "a FIFO"),
        (fifo("pyproject.toml"), ("list",), "a FIFO"),
        (device(f"{MAIN}/3a1400000009_zero.py"), ("heads", "main"), "a character device"),
        (device("alembic_main.ini"), ("heads", "main"), "a character device"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_file_that_is_not_a_regular_file_is_refused_by_its_kind(
    tmp_path: Path, make: Callable[[Path], Path], argv: tuple[str, ...], kind: str
) -> None:
    project = copy_reynard_trees(tmp_path)
    target = make(project)
    code, out, err = run(project, *argv)
    said = f"is {kind}, not a regular file"
    if argv[0] == "check":  # a check that fails on it, as on any broken revision file
        assert code == 1, (out, err)
        assert f"{target.relative_to(project)} {said}" in out and err == "", (out, err)
        return
    assert code == 2, (out, err)
    one_line(err, said)
    assert f"{target.name} {said}" in err or f"{target.resolve()} {said}" in err, err


# -- control characters in names -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (("create", "main", "-m", "red \x1b[31malert", "--empty"), r"'red \x1b[31malert'"),
        (("create", "main", "-m", "two\nlines", "--empty"), r"'two\nlines'"),
        (("create", "main", "-m", "x", "--new-branch", "b\x07", "--empty"), r"'b\x07'"),
        (("upgrade", "main", "--to", "3a14\x1b[2J", "--sql"), r"'3a14\x1b[2J'"),
        (("current", "main", "--url", "postgresql://u@127.0.0.1:1/a%00b"), r"'a\x00b'"),
        (("current", "main", "--url", "postgresql://u@127.0.0.1:1/x?dbname=a%01b"), r"'a\x01b'"),
    ],
)
def test_control_characters_in_a_name_are_refused(
    tmp_path: Path, argv: tuple[str, ...], shown: str
) -> None:
    project = copy_reynard_trees(tmp_path)
    before = sorted(os.listdir(project / MAIN))
    code, out, err = run(project, *argv)
    assert code == 2, (out, err)
    one_line(err, shown)
    assert "control character" in err
    assert sorted(os.listdir(project / MAIN)) == before


def test_a_nul_in_a_registered_database_name_is_refused(tmp_path: Path) -> None:
    project = copy_reynard_trees(tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"reynard"', '"reyn\\u0000ard"', 1))
    code, out, err = run(project, "heads", "main")
    assert code == 2, (out, err)
    one_line(err, r"database: control character U+0000 in 'reyn\x00ard'")


# -- a full disk ---------------------------------------------------------------------------------
@pytest.fixture
def full_versions(tmp_path: Path) -> Iterator[Path]:
    """A project whose ``main`` versions folder is a small tmpfs, filled up."""
    project = copy_reynard_trees(tmp_path / "project")
    versions = project / MAIN
    saved = tmp_path / "saved"
    shutil.copytree(versions, saved)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(versions)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (as a full disk): {done.stderr.decode().strip()}")
    try:
        (saved / "3a1400000009_fork.py").write_text(  # a second head, for merge
            'revision = "3a1400000009"\ndown_revision = "3a1400000003"\n'
        )
        for revision in saved.iterdir():
            shutil.copy(revision, versions / revision.name)
        with open(versions / "filler", "wb", buffering=0) as filler, suppress(OSError):
            while True:  # until the disk is full
                filler.write(b"\0" * 1024)
        yield project
    finally:
        subprocess.run(["umount", str(versions)], check=True)


@pytest.mark.parametrize(
    "argv", [("create", "main", "-m", "x", "--empty", "--head", "3a1400000004"), ("merge", "main")]
)
def test_a_full_disk_while_writing_a_revision_is_one_line(
    full_versions: Path, argv: tuple[str, ...]
) -> None:
    before = sorted(os.listdir(full_versions / MAIN))
    code, out, err = run(full_versions, *argv)
    assert code == 2, (out, err)
    one_line(err, "No space left on device")
    assert "alembic/main/versions/" in err
    assert sorted(os.listdir(full_versions / MAIN)) == before  # no part-written file
