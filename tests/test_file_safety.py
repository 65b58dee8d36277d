"""Files are never lost: ``reynard-migrate copy`` and ``create`` as users run them, in child
processes, on copies of the Reynard trees (issue 12).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reynard_trees import copy_reynard_trees, run_cli

MAIN = Path("alembic/main/versions")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of this repository's trees, inis, models and registry, free to break."""
    return copy_reynard_trees(tmp_path)


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


# -- create: never over an existing file ----------------------------------------------------
def test_create_never_overwrites_a_revision_file(project: Path) -> None:
    ini = project / "alembic_main.ini"
    ini.write_text(
        ini.read_text().replace("file_template = %%(rev)s_%%(slug)s", "file_template = %%(slug)s")
    )
    assert "file_template = %%(slug)s\n" in ini.read_text()
    code, out, err = run_cli(project, "create", "main", "-m", "add nickname", "--empty")
    assert code == 0, err
    written = project / MAIN / "add_nickname.py"
    written.write_text(written.read_text() + "# hand edits\n")
    before = snapshot(project / MAIN)

    code, out, err = run_cli(project, "create", "main", "-m", "add nickname", "--empty")
    assert code == 1, (out, err)
    assert "alembic/main/versions/add_nickname.py already exists" in one_error_line(err)
    assert snapshot(project / MAIN) == before
