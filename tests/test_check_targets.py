"""Issue 22, points 4 and 5: while a check migrates, env.py reaches its throw-away database
and nothing else, and a check's verdict does not depend on what ran before it.

Real trees, real ``reynard-migrate`` and ``pytest`` child processes, a real PostgreSQL
server for "another database". The attacks: an env.py that falls back to a SQLite file
when its variable is unset (as open-webui's does); an application that env.py imports
whose import creates its key store (a SQLite file through SQLAlchemy or through the
standard library, or another PostgreSQL database) and carries on if that fails; a
revision that opens a SQLite file. Each is refused before the driver connects (no file,
no table), in one line naming the line of env.py or of the revision, with the same
verdict alone, with ``--only`` combinations, all together and as pytest items.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from cli_fork import run_cli
from reynard_trees import clean_env, reynard_project, run_pytest, write_revision

from pytest_reynard_db.postgres import EphemeralServer

TRACEBACK = "Traceback (most recent call last)"
MIGRATING = ("upgrade", "stairway", "downgrade_clean", "models_match")
MAY = "a check may reach only its throw-away database (its own production URL is sent there)"

#: main's env.py, importing an application module at line 2 (as Reynard's auth does).
ENV_IMPORTING_THE_APP = '''\
"""main's env.py, importing the application."""
import keystore  # noqa: F401
from pytest_reynard_db.alembic_env import run_migrations
from reynard_models.main import MainBase

run_migrations(MainBase.metadata, default_url_env="DATABASE_URL")
'''

#: The application's key store, made at import; the application carries on without it.
KEYSTORES = {
    "sqlite-sqlalchemy": """\
        import sqlalchemy as sa

        metadata = sa.MetaData()
        sa.Table("keys", metadata, sa.Column("id", sa.Integer))
        try:
            metadata.create_all(sa.create_engine("sqlite:///{path}"))
        except Exception:
            pass
        """,
    "sqlite-stdlib": """\
        import sqlite3

        try:
            sqlite3.connect("{path}").execute("CREATE TABLE keys (id int)")
        except Exception:
            pass
        """,
    "postgresql": """\
        import os

        import sqlalchemy as sa

        metadata = sa.MetaData()
        sa.Table("keys", metadata, sa.Column("id", sa.Integer))
        try:
            metadata.create_all(sa.create_engine(os.environ["KEYSTORE_URL"]))
        except Exception:
            pass
        """,
}

#: Every way the checks are run (``--only`` selections, all of them, pytest items).
SELECTIONS = {
    "stairway": ("stairway",),
    "upgrade": ("upgrade",),
    "stairway,upgrade": ("stairway", "upgrade"),
    "downgrade_clean,models_match": ("downgrade_clean", "models_match"),
    "all": MIGRATING,
}


@pytest.fixture
def keystore_db(pg_server: EphemeralServer) -> str:
    """Another PostgreSQL database, on another server than the check's: the key store."""
    name = "keystore"
    with pg_server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.database_url(name).render_as_string(hide_password=False)


def app_project(tmp_path: Path, keystore: str) -> tuple[Path, str]:
    """The Reynard project, main's env.py importing ``keystore``; the target it makes."""
    project = reynard_project(tmp_path / "project")
    keys = tmp_path / "keys.db"
    (project / "keystore.py").write_text(textwrap.dedent(KEYSTORES[keystore].format(path=keys)))
    (project / "alembic/main/env.py").write_text(ENV_IMPORTING_THE_APP)
    target = f"sqlite:///{keys}" if keystore.startswith("sqlite") else "postgresql://"
    return project, target


def refusal_re(target: str, where: str = "alembic/main/env.py:2") -> re.Pattern[str]:
    """The one line every check that ran env.py fails with."""
    return re.compile(
        rf"^database 'main': {re.escape(where)}: refused a connection to "
        rf"{re.escape(target)}\S*: {re.escape(MAY)}$"
    )


def assert_clean_stderr(err: str) -> None:
    assert TRACEBACK not in err, err
    assert "redirected by the production guard" not in err, err


def assert_untouched(tmp_path: Path, keystore: str, pg_server: EphemeralServer) -> None:
    assert not (tmp_path / "keys.db").exists()
    if keystore == "postgresql":
        with pg_server.connect("keystore") as conn:
            row = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'keys'").fetchone()
            assert row == (0,)


@pytest.mark.parametrize("keystore", list(KEYSTORES))
def test_the_same_verdict_whatever_runs_beside(
    tmp_path: Path, keystore: str, keystore_db: str, pg_server: EphemeralServer
) -> None:
    project, target = app_project(tmp_path, keystore)
    env = clean_env(KEYSTORE_URL=keystore_db)
    expected = refusal_re(target)
    for selection, checks in SELECTIONS.items():
        only = () if selection == "all" else ("--only", ",".join(checks))
        code, out, err = run_cli(project, "check", "main", *only, "--format", "json", env=env)
        shown = f"{selection}: exit {code}\n{out}\n{err}"
        assert code == 1, shown
        results = {r["check"]: r for r in json.loads(out)["results"] if r["check"] in MIGRATING}
        assert set(results) == set(checks), shown
        for result in results.values():
            assert expected.match(result["message"]), shown
            assert not result["ok"] and result["file"] == "alembic/main/env.py", shown
        assert_clean_stderr(err)
    assert_untouched(tmp_path, keystore, pg_server)

    ran = run_pytest(project, "--reynard-db=main", "--reynard-db-checks", KEYSTORE_URL=keystore_db)
    shown = f"exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    assert ran.returncode == 1, shown
    assert "4 failed, 1 passed" in ran.stdout, shown  # single_head reads files only
    failures = [line for line in ran.stdout.splitlines() if line.startswith("database 'main'")]
    assert len(failures) == 4 and all(expected.match(line) for line in failures), shown
    assert_clean_stderr(ran.stderr)
    assert_untouched(tmp_path, keystore, pg_server)


#: An env.py that falls back to a local SQLite file when its own variable is unset.
SQLITE_FALLBACK_ENV = '''\
"""An env.py as open-webui's: its own variable, else a local SQLite file."""
import os
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine

url = os.environ.get("WEBUI_DATABASE_URL") or f"sqlite:///{Path(__file__).parent}/local.db"
with create_engine(url).connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''


def test_an_env_py_falling_back_to_sqlite_fails_every_check_and_creates_no_file(
    tmp_path: Path,
) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "alembic/main/env.py").write_text(SQLITE_FALLBACK_ENV)
    local = project / "alembic/main/local.db"

    code, out, err = run_cli(project, "check", "main", "--format", "json", env=clean_env())

    shown = f"exit {code}\n{out}\n{err}"
    assert code == 1, shown
    expected = refusal_re(f"sqlite:///{local}", "alembic/main/env.py:9")
    results = [r for r in json.loads(out)["results"] if r["check"] in MIGRATING]
    assert len(results) == 4 and all(expected.match(r["message"]) for r in results), shown
    assert_clean_stderr(err)
    assert not local.exists(), shown


def test_a_production_verb_is_not_changed(tmp_path: Path, pg_server: EphemeralServer) -> None:
    """``upgrade`` is a production verb: the guard is not armed, and env.py does what plain
    Alembic would (here: migrate its SQLite file)."""
    project = reynard_project(tmp_path / "project")
    (project / "alembic/main/env.py").write_text(SQLITE_FALLBACK_ENV)
    versions = project / "alembic/main/versions"
    for path in versions.glob("*.py"):
        path.unlink()  # one revision SQLite can run
    write_revision(
        versions, "a10000000001", None, 'op.create_table("t", sa.Column("id", sa.Integer))'
    )
    url = pg_server.database_url("postgres").render_as_string(hide_password=False)

    code, out, err = run_cli(project, "upgrade", "main", "--url", url, env=clean_env())

    assert code == 0, f"{out}\n{err}"
    assert (project / "alembic/main/local.db").exists()


def test_a_revision_opening_a_sqlite_file_is_named_on_its_line(tmp_path: Path) -> None:
    project = reynard_project(tmp_path / "project")
    versions = project / "alembic/main/versions"
    opened = tmp_path / "side.db"
    path = write_revision(
        versions, "3a1400000005", "3a1400000004", f'import sqlite3\nsqlite3.connect("{opened}")'
    )
    line = path.read_text().splitlines().index(f'    sqlite3.connect("{opened}")') + 1
    relative = path.relative_to(project)

    code, out, err = run_cli(
        project, "check", "main", "--only", "upgrade", "--format", "json", env=clean_env()
    )

    shown = f"exit {code}\n{out}\n{err}"
    assert code == 1, shown
    [result] = json.loads(out)["results"]
    assert refusal_re(f"sqlite:///{opened}", f"{relative}:{line}").match(result["message"]), shown
    assert not opened.exists()
    assert_clean_stderr(err)


#: An env.py that reads its URL from a ``.env`` file and builds its own engine.
DOTENV_ENV = """\
from alembic import context
from sqlalchemy import create_engine, pool

url = dict(line.split("=", 1) for line in open(".env").read().splitlines())["DATABASE_URL"]
# libpq's other scheme (Heroku's DATABASE_URL), which SQLAlchemy 1.4 dropped: as apps fix it
url = url.replace("postgres://", "postgresql+psycopg://", 1)
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


@pytest.mark.parametrize(
    "production",
    [
        "postgresql+psycopg://app@db.invalid:5432/reynard",
        # libpq's other scheme: a production URL in this form was "not a PostgreSQL URL"
        "postgres://app@db.invalid:5432/reynard",
    ],
)
def test_its_own_production_url_is_still_redirected(tmp_path: Path, production: str) -> None:
    """env.py reading a ``.env`` whose ``DATABASE_URL`` is main's registered one: sent to the
    throw-away database, said on stderr, and the check passes."""
    project = reynard_project(tmp_path / "project")
    (project / ".env").write_text(f"DATABASE_URL={production}\n")
    (project / "alembic/main/env.py").write_text(DOTENV_ENV)

    code, out, err = run_cli(
        project, "check", "main", "--only", "upgrade", env=clean_env(DATABASE_URL=production)
    )

    assert code == 0, f"{out}\n{err}"
    assert re.search(r"env.py connected to postgresql://app@db.invalid:5432/reynard -> ", err), err
    assert TRACEBACK not in err and "refused" not in out + err, out + err


def test_its_own_production_url_hidden_from_a_pytest_run_is_still_redirected(
    tmp_path: Path,
) -> None:
    """Inside pytest the registered variables are hidden; the check items (in interpreters
    of their own) still know main's production target, and redirect it."""
    project = reynard_project(tmp_path / "project")
    production = "postgresql+psycopg://app@db.invalid:5432/reynard"
    (project / ".env").write_text(f"DATABASE_URL={production}\n")
    (project / "alembic/main/env.py").write_text(DOTENV_ENV)

    selected = ("-k", "upgrade or downgrade_clean", "-s")  # -s: the items' notes shown
    ran = run_pytest(
        project, "--reynard-db=main", "--reynard-db-checks", *selected, DATABASE_URL=production
    )

    shown = f"exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    assert ran.returncode == 0 and "2 passed" in ran.stdout, shown
    assert "env.py connected to postgresql://app@db.invalid:5432/reynard -> " in ran.stderr, shown
    assert TRACEBACK not in ran.stdout + ran.stderr, shown


#: An env.py that configures Alembic on the connection it is given and migrates nothing.
IDLE_ENV = """\
from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
"""


def test_a_check_that_migrates_reads_back_that_its_database_moved(tmp_path: Path) -> None:
    """``downgrade_clean`` found nothing left, and said ok, on a database nothing migrated;
    now it, and ``models_match``, say where the database was left."""
    project = reynard_project(tmp_path / "project")
    (project / "alembic/main/env.py").write_text(IDLE_ENV)

    code, out, err = run_cli(project, "check", "main", "--format", "json", env=clean_env())

    shown = f"exit {code}\n{out}\n{err}"
    assert code == 1, shown
    results = {r["check"]: r for r in json.loads(out)["results"]}
    for name in ("upgrade", "downgrade_clean", "models_match"):
        assert not results[name]["ok"], shown
        assert results[name]["message"].startswith(
            "database 'main': upgrade heads did not change the throw-away database (still at "
            "base): env.py connected to another database"
        ), shown
    assert_clean_stderr(err)
