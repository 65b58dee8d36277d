"""Other people's Alembic projects: every ``alembic init`` template but ``generic``
(``tests/test_alembic_init.py``), made as a user makes them, with models and two revisions
of real tables, then used as a new user would: the fixtures, the check items, ``check``
and the production verbs on a ``--url`` database.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from reynard_trees import clean_env, run_cli, write_revision

from pytest_reynard_db.postgres import EphemeralServer

FIRST, SECOND = "0b0000000001", "0b0000000002"
ALL_CHECKS = {"single_head", "upgrade", "stairway", "downgrade_clean", "models_match"}
REGISTRY = (
    '[tool.reynard-db.databases.app]\nini = "alembic.ini"\ndatabase = "app"\n'
    'url_env = "APP_DATABASE_URL"\n\n'
    '[tool.pytest.ini_options]\nreynard_db = "app"\npythonpath = ["."]\n'
)
MODELS = """\
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "user_account"
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(50), nullable=False)


class Address(Base):
    __tablename__ = "address"
    id = sa.Column(sa.Integer, primary_key=True)
    user_id = sa.Column(sa.Integer, sa.ForeignKey("user_account.id"), nullable=False)
"""
USERS_UP = """op.create_table(
    "user_account",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
)"""
ADDRESS_UP = """op.create_table(
    "address",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("user_account.id"), nullable=False),
)"""
TESTS = """\
from alembic import command
from sqlalchemy import text


def test_migrated(reynard_db_connection):
    assert reynard_db_connection.execute(text("SELECT count(*) FROM address")).scalar() == 0


def test_fresh_driven_by_alembic(reynard_db_fresh):
    command.downgrade(reynard_db_fresh.config, "base")
    command.upgrade(reynard_db_fresh.config, "heads")
"""


def alembic_init(root: Path, template: str) -> Path:
    """``alembic init -t TEMPLATE alembic`` in ``root``, as the alembic CLI does it there
    (``alembic.ini`` and, for the pyproject templates, ``pyproject.toml`` in the cwd)."""
    root.mkdir(parents=True, exist_ok=True)
    config = Config(str(root / "alembic.ini"), toml_file=str(root / "pyproject.toml"))
    command.init(config, str(root / "alembic"), template=template)
    return root


def user_project(root: Path, template: str) -> Path:
    """A project from ``template``: models as ``target_metadata``, two revisions of real
    tables in ``alembic/versions`` (created: git keeps no empty folder), the registry."""
    alembic_init(root, template)
    (root / "myapp").mkdir()
    (root / "myapp" / "__init__.py").write_text("")
    (root / "myapp" / "models.py").write_text(MODELS)
    env_py = root / "alembic" / "env.py"
    source = env_py.read_text()
    assert "target_metadata = None" in source
    env_py.write_text(
        source.replace(
            "target_metadata = None",
            "from myapp.models import Base\ntarget_metadata = Base.metadata",
        )
    )
    versions = root / "alembic" / "versions"
    versions.mkdir(exist_ok=True)
    write_revision(versions, FIRST, None, USERS_UP, "op.drop_table('user_account')")
    write_revision(versions, SECOND, FIRST, ADDRESS_UP, "op.drop_table('address')")
    with (root / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n" + REGISTRY)
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text(TESTS)
    return root


def run_pytest(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``pytest ARGS`` in ``project``, from a user's shell."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_checks_pass(project: Path, *only: str) -> dict[str, dict[str, object]]:
    """``reynard-migrate check --json`` (``--only``) passes; the results by check."""
    argv = ["check", "--json", *(("--only", ",".join(only)) if only else ())]
    code, out, err = run_cli(project, *argv, env=clean_env())
    assert code == 0, out + err
    return {r["check"]: r for r in json.loads(out)["results"]}


@pytest.mark.parametrize("template", ["async", "pyproject", "pyproject_async"])
def test_a_template_project_works_as_made(tmp_path: Path, template: str) -> None:
    """The checks (models_match included: the models are the target metadata), the
    fixtures and the check items, on the project ``alembic init -t TEMPLATE`` made."""
    project = user_project(tmp_path / "app", template)
    results = assert_checks_pass(project)
    assert set(results) == ALL_CHECKS
    assert results["upgrade"]["message"] == f"base -> {SECOND}"
    assert not results["models_match"].get("skipped"), results["models_match"]
    result = run_pytest(project, "--reynard-db-checks")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout, result.stdout


@pytest.mark.parametrize("template", ["async", "pyproject", "pyproject_async"])
def test_the_production_verbs_on_a_template_project(
    tmp_path: Path, template: str, pg_server: EphemeralServer
) -> None:
    """upgrade, current, history, create, merge, downgrade on a ``--url`` database."""
    project = user_project(tmp_path / "app", template)
    name = f"prod_{template}"
    pg_server.create_database(name)
    url = pg_server.database_url(name).render_as_string(hide_password=False)

    def cli(*argv: str) -> str:
        code, out, err = run_cli(project, *argv, env=clean_env())
        assert code == 0, f"{argv}: {out}{err}"
        return out

    cli("upgrade", "app", "--url", url)
    assert SECOND in cli("current", "app", "--url", url)
    assert FIRST in cli("history", "app")
    cli("create", "app", "-m", "one", "--empty")
    written = sorted((project / "alembic" / "versions").glob("*_one.py"))
    assert len(written) == 1, list((project / "alembic").rglob("*.py"))
    write_revision(project / "alembic" / "versions", "0b0000000003", SECOND)  # a branch
    cli("merge", "app", "-m", "join")
    heads = cli("heads", "app")
    assert len(re.findall(r"\b[0-9a-f]{12}\b", heads)) == 1, heads
    cli("upgrade", "app", "--url", url)
    cli("downgrade", "app", "--to", "base", "--url", url)
    assert SECOND not in cli("current", "app", "--url", url)
