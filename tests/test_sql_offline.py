"""``--sql`` touches nothing: an ``env.py`` without an offline branch is refused, not run
against production.

The project is ``alembic init``'s, its ``env.py`` stripped of its
``context.is_offline_mode()`` branch (as many are); the ini and the registered
variable name a decoy "production" server that logs every connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from cli_fork import run_cli
from reynard_trees import clean_env, connections_received, write_revision

from pytest_reynard_db.postgres import EphemeralServer

REVISION = "0a0000000001"
OFFLINE_BRANCH = (
    "if context.is_offline_mode():\n    run_migrations_offline()\nelse:\n"
    "    run_migrations_online()\n"
)


@pytest.fixture
def online_only(tmp_path: Path, decoy: EphemeralServer) -> tuple[Path, str]:
    """The project, and its production URL; its env.py always connects."""
    root = tmp_path / "app"
    root.mkdir()
    ini = root / "alembic.ini"
    command.init(Config(str(ini)), str(root / "migrations"), template="generic")
    production = decoy.database_url("app").render_as_string(hide_password=False)
    stock = "driver://user:pass@localhost/dbname"
    ini.write_text(ini.read_text().replace(stock, production.replace("%", "%%")))
    env_py = root / "migrations" / "env.py"
    assert OFFLINE_BRANCH in env_py.read_text()
    env_py.write_text(env_py.read_text().replace(OFFLINE_BRANCH, "run_migrations_online()\n"))
    write_revision(root / "migrations" / "versions", REVISION, None, "op.execute('SELECT 1')")
    (root / "pyproject.toml").write_text(
        '[tool.reynard-db.databases.app]\nini = "alembic.ini"\ndatabase = "app"\n'
        'url_env = "APP_DATABASE_URL"\n'
    )
    return root, production


@pytest.mark.parametrize(
    "argv",
    [
        ("upgrade", "app", "--sql"),
        ("downgrade", "app", "--to", f"{REVISION}:base", "--sql"),
        ("stamp", "app", "heads", "--sql"),
    ],
)
def test_sql_never_connects(
    online_only: tuple[Path, str], decoy: EphemeralServer, argv: tuple[str, ...]
) -> None:
    project, production = online_only
    before = connections_received(decoy)
    code, out, err = run_cli(project, *argv, env=clean_env(APP_DATABASE_URL=production))
    assert code == 2, out + err
    assert err.count("\n") == 1, err
    assert "migrations/env.py:" in err and "--sql runs env.py offline" in err, err
    assert "password" not in err and "Traceback" not in err, err
    assert connections_received(decoy) == before


def test_sql_with_an_offline_branch_still_prints(
    online_only: tuple[Path, str], decoy: EphemeralServer
) -> None:
    """The stock env.py (its offline branch kept) prints the SQL and reaches nothing."""
    project, production = online_only
    env_py = project / "migrations" / "env.py"
    env_py.write_text(env_py.read_text().replace("run_migrations_online()\n", OFFLINE_BRANCH))
    before = connections_received(decoy)
    code, out, err = run_cli(
        project, "upgrade", "app", "--sql", env=clean_env(APP_DATABASE_URL=production)
    )
    assert code == 0 and err == "", out + err
    assert "SELECT 1" in out and "alembic_version" in out, out
    assert connections_received(decoy) == before
