"""The README's two-database example, run as written (issue 24, point 4).

The block marked ``<!-- two-databases: PATH -->`` in the README is written, as printed,
into a project of two databases made with ``alembic init`` (the stock env.py): ``app``
(``user_account``) and ``audit`` (``audit_log``), and run by pytest in a child process,
as a user runs it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from reynard_trees import run_pytest, write_revision

REPO = Path(__file__).resolve().parents[1]
MARKED = re.compile(r"^<!-- two-databases: (\S+) -->\n```python\n(.*?)^```", re.S | re.M)
TABLES = {
    "app": "op.create_table('user_account', sa.Column('id', sa.Integer, primary_key=True),"
    " sa.Column('name', sa.String(50), nullable=False))",
    "audit": "op.create_table('audit_log', sa.Column('id', sa.Integer, primary_key=True),"
    " sa.Column('action', sa.String(64), nullable=False))",
}


def readme_example(readme: str) -> tuple[str, str]:
    """(path, body) of the README's two-database example."""
    [found] = MARKED.findall(readme)
    return found[0], found[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Two databases, each ``alembic init``'s tree with one revision, registered."""
    registry = []
    for name, table in TABLES.items():
        ini = tmp_path / f"{name}.ini"
        command.init(Config(str(ini)), str(tmp_path / f"{name}_migrations"), template="generic")
        versions = tmp_path / f"{name}_migrations" / "versions"
        write_revision(versions, f"{name}00000001", None, table, slug=name)
        registry.append(
            f'[tool.reynard-db.databases.{name}]\nini = "{name}.ini"\n'
            f'database = "{name}"\nurl_env = "{name.upper()}_DATABASE_URL"\n'
        )
    (tmp_path / "pyproject.toml").write_text("\n".join(registry))
    return tmp_path


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_the_two_database_example_runs_as_written(project: Path, workers: tuple[str, ...]) -> None:
    path, body = readme_example((REPO / "README.md").read_text())
    (project / path).parent.mkdir(parents=True, exist_ok=True)
    (project / path).write_text(body)
    result = run_pytest(project, path, "-v", *workers)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "2 passed" in output and "[app-audit]" in output, output


def test_a_leak_would_fail_it(project: Path) -> None:
    """The example can fail: the same writes through connections that are not rolled
    back (the databases' own engines, committed) are seen by the next test."""
    path, body = readme_example((REPO / "README.md").read_text())
    leaking = body.replace(
        'app, audit = reynard_db_connections["app"], reynard_db_connections["audit"]',
        'app, audit = (reynard_dbs[n].engine.connect() for n in ("app", "audit"))',
    )
    assert leaking != body
    (project / path).parent.mkdir(parents=True, exist_ok=True)
    (project / path).write_text(leaking)
    result = run_pytest(project, path)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "1 failed, 1 passed" in output, output
    assert "test_the_next_test_sees_neither_write" in output, output
