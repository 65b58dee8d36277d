"""Errors a new user meets first say how to fix them, with our verbs; ``create`` with
nothing to autogenerate writes nothing and says so.

The project is ``alembic init``'s, registered, its env.py given a table as
``target_metadata`` and nothing else changed: the ini keeps Alembic's placeholder
URL (``driver://...``), as the Quick start leaves it. Real Alembic, a real server
(the suite's ``pg_server``), the CLI in a child process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from cli_fork import run_cli
from reynard_trees import clean_env

from pytest_reynard_db.postgres import EphemeralServer

VERSIONS = Path("migrations/versions")
PETS = (
    "import sqlalchemy as sa\ntarget_metadata = sa.MetaData()\n"
    "sa.Table('pet', target_metadata, sa.Column('id', sa.Integer, primary_key=True))"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    command.init(Config(str(root / "alembic.ini")), str(root / "migrations"), template="generic")
    env_py = root / "migrations" / "env.py"
    env_py.write_text(env_py.read_text().replace("target_metadata = None", PETS))
    (root / "pyproject.toml").write_text(
        '[tool.reynard-db.databases.app]\nini = "alembic.ini"\ndatabase = "app"\n'
        'url_env = "APP_DATABASE_URL"\n'
    )
    return root


@pytest.fixture
def missing_url(pg_server: EphemeralServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL on the suite's server naming a database that does not exist (until ``setup``
    makes it; dropped after the test)."""
    name = "test_missing_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    pg_server.drop_database(name)
    url = pg_server.create_database(name).render_as_string(hide_password=False)
    pg_server.drop_database(name)
    yield url
    pg_server.drop_database(name)


def versions(project: Path) -> list[str]:
    return sorted(p.name for p in (project / VERSIONS).glob("*.py"))


def one_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("reynard-migrate: error: "), err
    return lines[0].removeprefix("reynard-migrate: error: ")


# -- point 8: the unset variable, the missing database ----------------------------------------
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_an_unset_url_env_is_named_with_url(project: Path, value: str | None) -> None:
    env = clean_env() if value is None else clean_env(APP_DATABASE_URL=value)
    state = "is not set" if value is None else "is empty"
    for argv in (("upgrade", "app"), ("current", "app"), ("stamp", "app", "heads")):
        code, out, err = run_cli(project, *argv, env=env)
        assert (code, out) == (2, ""), (argv, err)
        assert one_error(err) == (
            f"database 'app': $APP_DATABASE_URL {state}, and alembic.ini: sqlalchemy.url: not "
            "a PostgreSQL URL: 'driver://user:***@localhost/dbname'; set $APP_DATABASE_URL or "
            "pass --url URL"
        ), argv


def test_a_missing_database_suggests_setup(project: Path, missing_url: str) -> None:
    code, out, err = run_cli(project, "upgrade", "app", env=clean_env(APP_DATABASE_URL=missing_url))
    assert (code, out) == (2, ""), err
    message = one_error(err)
    assert "does not exist" in message, message
    assert message.endswith("; create it and migrate it to heads: reynard-migrate setup app")
    assert "Traceback" not in err

    code, out, err = run_cli(project, "current", "app", "--url", missing_url, env=clean_env())
    assert code == 2
    assert one_error(err).endswith("reynard-migrate setup app --url URL"), err

    # What it suggests works.
    code, out, err = run_cli(project, "setup", "app", env=clean_env(APP_DATABASE_URL=missing_url))
    assert (code, err) == (0, ""), out
    assert out.splitlines()[-1] == "app: created, at base", out


# -- point 9: create with nothing to autogenerate --------------------------------------------
NOTHING = (
    "app: no changes detected between the models and heads; nothing written "
    "(--empty writes an empty revision)\n"
)


def test_create_with_no_changes_writes_nothing_unless_empty(project: Path) -> None:
    code, out, err = run_cli(project, "create", "app", "-m", "pets", env=clean_env())
    assert (code, err) == (0, ""), out
    [pets] = versions(project)
    assert "op.create_table('pet'" in (project / VERSIONS / pets).read_text()

    code, out, err = run_cli(project, "create", "app", "-m", "again", env=clean_env())
    assert (code, out, err) == (0, NOTHING, "")
    assert versions(project) == [pets]

    code, out, err = run_cli(project, "create", "app", "-m", "by hand", "--empty", env=clean_env())
    assert (code, err) == (0, ""), out
    assert out.startswith("app: wrote migrations/versions/") and "_by_hand.py" in out, out
    assert len(versions(project)) == 2


def test_a_projects_own_hook_that_drops_empty_revisions_still_works(project: Path) -> None:
    """Alembic's cookbook hook in env.py (drop an empty autogenerated revision) sees the
    revision first, as without us; the outcome is the same one line."""
    env_py = project / "migrations" / "env.py"
    hook = (
        "def drop_empty(context, revision, directives):\n"
        "    if directives[0].upgrade_ops.is_empty():\n"
        "        directives[:] = []\n"
    )
    body = env_py.read_text().replace(
        "def run_migrations_offline", f"{hook}\n\ndef run_migrations_offline"
    )
    body = body.replace(
        "connection=connection, target_metadata=target_metadata\n",
        "connection=connection, target_metadata=target_metadata,\n"
        "            process_revision_directives=drop_empty,\n",
    )
    assert body.count("drop_empty") == 2, body
    env_py.write_text(body)
    code, out, err = run_cli(project, "create", "app", "-m", "pets", env=clean_env())
    assert (code, err) == (0, ""), out
    code, out, err = run_cli(project, "create", "app", "-m", "again", env=clean_env())
    assert (code, out, err) == (0, NOTHING, "")
    assert len(versions(project)) == 1
