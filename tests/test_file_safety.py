"""Files are never lost: ``reynard-migrate copy`` and ``create`` as users run them, in child
processes, on copies of the Reynard trees (issue 12).

Each test breaks one promise the old code did not keep: a mirror-only revision
overwritten, a renamed revision left behind as a duplicate id, a helper module
pruned, a killed copy's temp files left over, an OS error as a traceback, a hand
edited revision overwritten by ``create``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from cli_fork import Cli
from reynard_trees import wait_until, write_revision

ECS = Path("alembic/ecs/versions/ecs")
ECS_E2E = Path("alembic/ecs_e2e/versions/ecs")
MAIN = Path("alembic/main/versions")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (hidden ones too), by relative path, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def one_error_line(err: str) -> str:
    """The single ``reynard-migrate: error:`` line ``err`` must consist of."""
    assert "Traceback" not in err, err
    assert err.startswith("reynard-migrate: error: ") and err.count("\n") == 1, err
    return err


# -- copy: a mirror-only revision where the source has a file ---------------------------------
def test_copy_reports_a_mirror_only_revision_at_a_source_path_as_a_conflict(
    project: Path,
    cli: Cli,
) -> None:
    mine = write_revision(project / ECS_E2E, "ec50000000e2", "ec5000000004", slug="mine")
    mine.write_text(mine.read_text() + "# hand work in the mirror\n")
    mine.rename(project / ECS_E2E / "ec5000000005_local.py")  # the path the source will use
    write_revision(project / ECS, "ec5000000005", "ec5000000004", slug="local")
    write_revision(project / ECS, "ec5000000006", "ec5000000005", slug="more")
    before = snapshot(project / "alembic/ecs_e2e")

    for flags in ((), ("--dry-run",), ("--prune",)):
        code, out, err = cli("copy", "ecs_e2e", *flags)
        assert code == 1, (flags, out, err)
        line = one_error_line(err)
        assert "alembic/ecs_e2e/versions/ecs/ec5000000005_local.py" in line
        assert "alembic/ecs/versions/ecs/ec5000000005_local.py" in line
        assert "nothing written" in line
        assert "conflict" in out and "ec50000000e2" in out
        assert "wrote" not in out
        assert snapshot(project / "alembic/ecs_e2e") == before, flags

    code, out, _ = cli("copy", "--check")
    assert code == 1 and "conflict" in out


# -- copy: a renamed source revision ------------------------------------------------------------
def test_copy_follows_a_renamed_source_revision(project: Path, cli: Cli) -> None:
    old = next((project / ECS).glob("ec5000000004_*.py"))
    renamed = old.with_name("ec5000000004_renamed.py")
    old.rename(renamed)

    code, out, err = cli("copy", "ecs_e2e", "--dry-run")
    assert code == 0, err
    assert f"would remove alembic/ecs_e2e/versions/ecs/{old.name}" in out
    code, out, err = cli("copy", "ecs_e2e")
    assert code == 0, err
    mirror = project / ECS_E2E
    assert not (mirror / old.name).exists()
    assert (mirror / renamed.name).read_bytes() == renamed.read_bytes()
    assert f"removed alembic/ecs_e2e/versions/ecs/{old.name}" in out
    # One file per revision id: the mirror's tree loads, and is in sync.
    code, out, err = cli("heads", "ecs_e2e")
    assert code == 0, err
    assert cli("copy", "--check")[0] == 0


# -- copy --prune: revisions only ---------------------------------------------------------------
def test_prune_removes_mirror_only_revisions_and_keeps_helper_modules(
    project: Path, cli: Cli
) -> None:
    helper = project / ECS_E2E / "helpers.py"
    helper.write_text('"""Shared by the e2e revisions."""\n\nSEED = 42\n')
    extra = write_revision(project / ECS_E2E, "ec50000000e2", "ec5000000004", slug="local")
    code, out, err = cli("copy", "ecs_e2e", "--prune")
    assert code == 0, err
    assert not extra.exists()
    assert helper.read_text() == '"""Shared by the e2e revisions."""\n\nSEED = 42\n'
    assert "kept alembic/ecs_e2e/versions/ecs/helpers.py (not a revision" in out


def ended_or_writing(child: subprocess.Popen[bytes], mirror: Path) -> bool:
    """The copy has ended, or is writing a file (its temp file is there)."""
    return child.poll() is not None or bool(list(mirror.glob(".*.tmp")))


# -- copy: a killed copy, and the operating system saying no --------------------------------
def test_a_killed_copy_leaves_temp_files_that_the_next_copy_removes(
    project: Path, cli: Cli
) -> None:
    big = project / ECS / "ec5000000005_big.py"
    mirror = project / ECS_E2E
    for size in (64, 256, 512):
        body = '"""big"""\nrevision = "ec5000000005"\ndown_revision = "ec5000000004"\n'
        big.write_text(body + "#" * (size << 20) + "\n")
        child = subprocess.Popen(
            [sys.executable, "-m", "pytest_reynard_db", "--project", str(project), "copy"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # polled often: the window between the temp file and its rename is short
        wait_until(
            partial(ended_or_writing, child, mirror),
            120,
            "the copy to end or to write its temp file",
            interval=0.0005,
        )
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()
            break
        (mirror / big.name).unlink(missing_ok=True)  # too fast to catch: a bigger file
    left = list(mirror.glob(".*.tmp"))
    assert left, "the copy was never caught writing"
    code, out, err = cli("copy")
    assert code == 0, err
    assert not list(mirror.glob(".*.tmp"))
    assert "removed leftover" in out and left[0].name in out
    assert (mirror / big.name).read_bytes() == big.read_bytes()


@contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """``folder`` refuses new files, for whoever runs the CLI: immutable as root (whom
    permissions do not stop), read-only otherwise."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("chattr +i is not available here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


def test_os_errors_are_one_line_and_exit_2(project: Path, cli: Cli) -> None:
    write_revision(project / ECS, "ec5000000005", "ec5000000004", slug="new")
    mirror = project / ECS_E2E
    with unwritable(mirror):
        code, out, err = cli("copy")
    assert code == 2, (out, err)
    assert re.search(r"cannot write .*ec5000000005_new\.py: (Operation not permitted|Perm)", err)
    one_error_line(err)

    (mirror / "ec5000000005_new.py").mkdir()
    before = snapshot(project / "alembic/ecs_e2e")
    code, out, err = cli("copy")
    assert code == 2, (out, err)
    assert "ec5000000005_new.py: a folder is in the way" in one_error_line(err)
    assert snapshot(project / "alembic/ecs_e2e") == before  # no temp file left either


# -- create: never over an existing file ----------------------------------------------------
def test_create_never_overwrites_a_revision_file(project: Path, cli: Cli) -> None:
    ini = project / "alembic_main.ini"
    ini.write_text(
        ini.read_text().replace("file_template = %%(rev)s_%%(slug)s", "file_template = %%(slug)s")
    )
    assert "file_template = %%(slug)s\n" in ini.read_text()
    code, out, err = cli("create", "main", "-m", "add nickname", "--empty")
    assert code == 0, err
    written = project / MAIN / "add_nickname.py"
    written.write_text(written.read_text() + "# hand edits\n")
    before = snapshot(project / MAIN)

    code, out, err = cli("create", "main", "-m", "add nickname", "--empty")
    assert code == 1, (out, err)
    assert "alembic/main/versions/add_nickname.py already exists" in one_error_line(err)
    assert snapshot(project / MAIN) == before
