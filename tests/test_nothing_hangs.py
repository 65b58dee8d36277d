"""Nothing hangs: a stock ``alembic init`` env.py under ``locks``, and ``--timeout``.

Real projects, real ``reynard-migrate`` processes, real PostgreSQL. Each run has a
generous process timeout only so that a regression fails instead of hanging CI.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from cli_fork import run_cli
from reynard_trees import clean_env, copy_reynard_trees, write_revision

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
    code, out, err = run_cli(project, *argv, env=clean_env(), timeout=HANG_GUARD)
    return subprocess.CompletedProcess(argv, code, out, err)


FIX = 'connectable = config.attributes.get("connection") or engine_from_config(...)'
NOT_MEASURED = "not measured: migrations/env.py migrates on a connection of its own"


def test_locks_on_a_stock_env_py_measures_nothing_and_says_why(tmp_path: Path) -> None:
    """The stock env.py would migrate on its own connection, outside the check's
    transaction (and wait there on the check's locks): nothing is run, and every
    revision is "not measured", naming env.py and the fix; no failure, no wait."""
    project = stock_project(tmp_path / "stock")

    lint = run(project, "lint", "app", "--only", "locks", "--format", "json")
    assert (lint.returncode, lint.stderr) == (0, ""), lint.stdout + lint.stderr
    revisions = json.loads(lint.stdout)["revisions"]
    assert [r["revision"] for r in revisions] == ["a10000000001", "a10000000002"]
    for revision in revisions:
        (note,) = revision["notes"]
        assert revision["ok"] and note.startswith(NOT_MEASURED) and FIX in note, revision

    check = run(project, "check", "app", "--only", "upgrade,locks", "--json")
    assert (check.returncode, check.stderr) == (0, ""), check.stdout + check.stderr
    results = {r["check"]: r for r in json.loads(check.stdout)["results"]}
    assert results["upgrade"]["ok"] is True
    locks = results["locks"]
    assert locks["ok"] is True, locks
    assert locks["message"].startswith("0 of 2 revisions clean, 2 not checked"), locks
    assert NOT_MEASURED in locks["message"] and FIX in locks["message"]


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


def test_a_check_that_times_out_hides_nothing_the_other_found(tmp_path: Path) -> None:
    """``lint`` runs both checks: ``locks`` timing out is its own error line (and exit
    code) after the report of what Squawk found."""
    project = copy_reynard_trees(tmp_path / "project")
    write_revision(
        project / "alembic/main/versions",
        "3a1400000005",
        "3a1400000004",
        'op.create_index("ix_ua_dn", "user_account", ["display_name"])\n'
        "if not op.get_context().as_sql:  # online only: the offline SQL renders at once\n"
        "    import time\n"
        "    time.sleep(600)",
    )

    result = run(project, "lint", "main", "--timeout", "10")

    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    reason = "check locks timed out after 10 s (--timeout)"
    assert line == f"reynard-migrate: error: database 'main': {reason}", line
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("main ")]
    assert ["main", "lint", "3a1400000005", "FAIL"] in [row[:4] for row in rows], result.stdout
    assert all(row[1] == "lint" for row in rows), rows  # locks reported nothing: it did not end
    assert "require-concurrent-index-creation on user_account" in result.stdout
