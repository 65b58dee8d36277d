"""Nothing hangs: a stock ``alembic init`` env.py under ``locks``, and ``--timeout``.

Real projects, real ``reynard-migrate`` processes, real PostgreSQL. Each run has a
generous process timeout only so that a regression fails instead of hanging CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from reynard_trees import copy_reynard_trees, write_revision
from test_faults import clean_env

HANG_GUARD = 180  # seconds; a hang fails the test instead of the suite


def stock_project(root: Path) -> Path:
    """``alembic init`` (template generic) and a registry naming its ini; the second
    revision locks a table the first created (ADD COLUMN NOT NULL with a default)."""
    root.mkdir()
    command.init(Config(str(root / "alembic.ini")), str(root / "migrations"), template="generic")
    (root / "pyproject.toml").write_text('[tool.reynard-db.databases.app]\nini = "alembic.ini"\n')
    versions = root / "migrations" / "versions"
    write_revision(
        versions,
        "a10000000001",
        None,
        'op.create_table("item", sa.Column("id", sa.Integer, primary_key=True), '
        'sa.Column("name", sa.Text))',
        'op.drop_table("item")',
    )
    write_revision(
        versions,
        "a10000000002",
        "a10000000001",
        'op.add_column("item", sa.Column("flag", sa.Boolean(), nullable=False, '
        "server_default=sa.false()))",
        'op.drop_column("item", "flag")',
    )
    return root


def run(project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_reynard_db", "--project", str(project), *argv],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )


FIX = 'connectable = config.attributes.get("connection") or engine_from_config(...)'


def test_locks_on_a_stock_env_py_stops_and_names_env_py(tmp_path: Path) -> None:
    project = stock_project(tmp_path / "stock")

    lint = run(project, "lint", "app", "--only", "locks")
    assert lint.returncode == 1, lint.stdout + lint.stderr
    (line,) = lint.stderr.strip().splitlines()
    assert line.startswith(
        "reynard-migrate: error: migrations/env.py opens a connection of its own"
    )
    assert FIX in line

    check = run(project, "check", "app", "--only", "upgrade,locks", "--json")
    assert check.returncode == 1, check.stdout + check.stderr
    results = {r["check"]: r for r in json.loads(check.stdout)["results"]}
    assert results["upgrade"]["ok"] is True  # only the check that needs the connection fails
    assert results["locks"]["ok"] is False
    assert "migrations/env.py opens a connection of its own" in results["locks"]["message"]
    assert FIX in results["locks"]["message"]


SLEEPS = "import time\ntime.sleep(600)"


@pytest.mark.parametrize(
    "argv",
    [("check", "main", "--only", "upgrade,locks"), ("lint", "main", "--only", "locks")],
    ids=["check", "lint"],
)
def test_timeout_fails_the_running_check_with_that_reason(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    project = copy_reynard_trees(tmp_path / "project")
    write_revision(project / "alembic/main/versions", "3a1400000005", "3a1400000004", SLEEPS)

    result = run(project, *argv, "--timeout", "3")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    reason = "timed out after 3 s (--timeout)"
    if argv[0] == "check":
        rows = [line for line in result.stdout.splitlines() if line.startswith("main ")]
        assert len(rows) == 2 and all("FAIL" in row and reason in row for row in rows), rows
    else:
        (line,) = result.stderr.strip().splitlines()
        assert line == f"reynard-migrate: error: database 'main': check locks {reason}", line
