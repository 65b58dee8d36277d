"""``lint`` on revisions that have no offline SQL: reported "not lintable offline", never a crash.

Real Squawk, real Alembic: the trees are copies of the Reynard main tree with
data migrations on top (a ``bulk_insert`` of JSON, rows read through
``op.get_bind()``, an ORM session), and a small project whose ``env.py`` has
no offline branch. The revisions that can be rendered are still linted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_fork import Cli, run_cli
from reynard_trees import write_revision

from pytest_reynard_db.checks import CheckResult, run_checks
from pytest_reynard_db.foundation.registry import load_registry

MAIN_VERSIONS = Path("alembic/main/versions")

JSON_ROWS = """\
settings = sa.table("settings", sa.column("id", sa.Integer), sa.column("data", sa.JSON))
op.bulk_insert(settings, [{"id": 1, "data": {"theme": ["dark"]}}])"""

READS_ROWS = """\
rows = op.get_bind().execute(sa.text("SELECT id FROM user_account")).fetchall()
for row in rows:
    op.execute(sa.text(f"UPDATE user_account SET display_name = 'x' WHERE id = {row.id}"))"""

ORM_MIGRATION = """\
from sqlalchemy import orm

class Base(orm.DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "user_account"
    id = sa.Column(sa.Integer, primary_key=True)

session = orm.Session(bind=op.get_bind())
for user in session.query(User).all():
    session.delete(user)
session.commit()"""

UNSAFE_INDEX = 'op.create_index("ix_ua_display_name", "user_account", ["display_name"])'


@pytest.fixture
def project(project: Path) -> Path:
    """The Reynard trees with three data migrations and an unsafe index on top of main."""
    root = project
    versions = root / MAIN_VERSIONS
    write_revision(versions, "3a1400000099", "3a1400000004", JSON_ROWS, slug="json_rows")
    write_revision(versions, "3a140000009a", "3a1400000099", READS_ROWS, slug="reads_rows")
    write_revision(versions, "3a140000009b", "3a140000009a", ORM_MIGRATION, slug="orm")
    write_revision(versions, "3a140000009c", "3a140000009b", UNSAFE_INDEX, slug="index")
    return root


def lint_of(project: Path, db: str) -> CheckResult:
    registry = load_registry(project)
    results = run_checks(registry, [registry.get(db)], None, only=["lint"])
    assert len(results) == 1, results
    return results[0]


def test_unrenderable_revisions_are_not_lintable_and_the_others_are_linted(
    project: Path,
) -> None:
    result = lint_of(project, "main")
    assert not result.ok  # the index after the data migrations was linted
    assert result.revision == "3a140000009c"
    assert "require-concurrent-index-creation on user_account" in result.summary
    notes = {
        line.split(": revision ")[1][:12]: line
        for line in result.message.splitlines()
        if "note: " in line
    }
    prefix = "note: not lintable offline: line"
    json_note = notes["3a1400000099"]
    assert prefix in json_note and "CompileError" in json_note and "JSON" in json_note
    assert json_note.startswith("alembic/main/versions/3a1400000099_json_rows.py: ")
    for revision in ("3a140000009a", "3a140000009b"):
        assert prefix in notes[revision]
        assert "op.get_bind() has no database in --sql mode" in notes[revision]
    assert "Traceback" not in result.message


def test_lint_verb_reports_not_lintable_revisions_without_a_traceback(
    project: Path, cli: Cli
) -> None:
    code, out, err = cli("lint", "main", "--only", "lint", "--format", "json")
    assert code == 1, err  # the index; the data migrations fail nothing
    assert "Traceback" not in err
    revisions = {r["revision"]: r for r in json.loads(out)["revisions"]}
    for revision in ("3a1400000099", "3a140000009a", "3a140000009b"):
        entry = revisions[revision]
        assert entry["ok"] is True and entry["findings"] == []
        assert entry["notes"][0].startswith("not lintable offline: line "), entry
    assert revisions["3a140000009c"]["ok"] is False
    assert revisions["3a1400000004"]["notes"] == []  # the shipped revisions render
    code, table, err = cli("lint", "main", "--only", "lint")
    assert "main      lint   3a1400000099  not checked" in table, table
    assert "note: not lintable offline: line" in table


ONLINE_ONLY_PYPROJECT = """\
[tool.reynard-db.databases.online]
ini = "alembic_online.ini"
database = "online"
url_env = "ONLINE_DATABASE_URL"
"""

ONLINE_ONLY_INI = """\
[alembic]
script_location = %(here)s/online_alembic
path_separator = os
sqlalchemy.url = postgresql+psycopg://localhost/online
"""

ONLINE_ONLY_ENV = '''\
"""An env.py with no offline branch: it always connects (as many hand-written ones do)."""
import os

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
url = os.environ.get("ONLINE_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''


def online_only_project(root: Path) -> Path:
    """A project of one tree (two revisions) whose ``env.py`` never runs offline."""
    (root / "pyproject.toml").write_text(ONLINE_ONLY_PYPROJECT)
    (root / "alembic_online.ini").write_text(ONLINE_ONLY_INI)
    versions = root / "online_alembic" / "versions"
    versions.mkdir(parents=True)
    (root / "online_alembic" / "env.py").write_text(ONLINE_ONLY_ENV)
    write_revision(
        versions,
        "0a1100000001",
        None,
        'op.create_table("widget", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("widget")',
    )
    write_revision(versions, "0a1100000002", "0a1100000001", UNSAFE_INDEX)
    return root


def test_env_py_without_offline_branch_is_reported_and_never_connects(tmp_path: Path) -> None:
    """Both revisions are not lintable with env.py's reason; the URL handed to env.py
    names a dialect that refuses to connect, so no server was reached or even tried."""
    project = online_only_project(tmp_path)
    result = lint_of(project, "online")
    assert result.ok, result.message  # nothing was found: nothing could be looked at
    assert result.summary == "0 of 2 revisions clean, 2 not checked, 2 notes"
    lines = result.message.splitlines()[1:]
    assert [line.split(":")[0] for line in lines] == [
        "online_alembic/versions/0a1100000001_test.py",
        "online_alembic/versions/0a1100000002_test.py",
    ]
    for line in lines:
        assert "note: not lintable offline: " in line
        assert "env.py connects to a database even with --sql" in line
        assert "nothing was connected to" in line
        assert "could not connect" not in line and "Connection refused" not in line


def test_lint_verb_on_env_py_without_offline_branch_exits_0_without_a_traceback(
    tmp_path: Path,
) -> None:
    project = online_only_project(tmp_path)
    code, out, err = run_cli(project, "lint", "online", "--only", "lint", "--format", "markdown")
    assert code == 0, err
    assert "Traceback" not in err
    assert "| online | `0a1100000001` | lint | ⚪ not checked |" in out
    assert "not lintable offline" in out and "env.py connects to a database" in out
