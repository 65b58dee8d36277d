"""A project made with ``alembic init``, registered and nothing else changed.

Not our trees: the stock ``generic`` env.py builds its own engine from
``sqlalchemy.url``, ignores ``config.attributes["connection"]`` and sets
``target_metadata = None``. The checks, ``lint`` and the plugin's fixtures must
work on it as it is, and the production guard must hold with its production URL
in the ini and in the registered variable.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_fork import Cli
from reynard_trees import (
    admin_url,
    alembic_init_project,
    clean_env,
    connections_received,
    run_pytest,
    write_revision,
)

from pytest_reynard_db.postgres import EphemeralServer

REVISION = "0a0000000001"
PLUGIN_ARGS = ("--reynard-db=app", "--reynard-db-checks")


@pytest.fixture
def project(tmp_path: Path, decoy: EphemeralServer) -> Path:
    """``alembic init -t generic``, one revision, a registry entry; the ini names production."""
    production = decoy.database_url("app").render_as_string(hide_password=False)
    return alembic_init_project(tmp_path / "app", production, REVISION)


def test_check_and_lint_run_unchanged(project: Path, decoy: EphemeralServer, cli: Cli) -> None:
    before = connections_received(decoy)
    code, out, err = cli("check", "--json")
    assert code == 0, out + err
    results = {r["check"]: r for r in json.loads(out)["results"]}
    assert set(results) == {"single_head", "upgrade", "stairway", "downgrade_clean", "models_match"}
    assert results["upgrade"]["message"] == f"base -> {REVISION}"
    assert results["models_match"]["skipped"] and results["models_match"]["ok"]
    assert "no target_metadata" in results["models_match"]["message"]
    code, out, err = cli("check")
    assert code == 0 and "models_match     skip" in out, out + err
    code, out, err = cli("lint", "app", "--format", "json")
    assert code == 0, out + err
    assert connections_received(decoy) == before  # the ini names production; nothing reached it


def test_plugin_fixtures_and_check_items(project: Path, decoy: EphemeralServer) -> None:
    (project / "test_app.py").write_text(
        "import os\n"
        "from alembic import command\n"
        "from sqlalchemy import text\n\n"
        "def test_session(reynard_db):\n"
        "    with reynard_db.engine.connect() as conn:\n"
        "        assert conn.execute(text('SELECT count(*) FROM t')).scalar() == 0\n\n"
        "def test_fresh_driven_by_alembic(reynard_db_fresh):\n"
        "    assert os.environ.get('APP_DATABASE_URL') is None\n"
        "    command.downgrade(reynard_db_fresh.config, 'base')\n"
        "    command.upgrade(reynard_db_fresh.config, 'heads')\n"
    )
    production = decoy.database_url("app").render_as_string(hide_password=False)
    before = connections_received(decoy)
    result = run_pytest(project, "-rs", *PLUGIN_ARGS, APP_DATABASE_URL=production)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed, 1 skipped" in result.stdout, result.stdout
    assert "no target_metadata" in result.stdout
    # the skip is located at its item, not in the plugin's code (third new user, issue 24)
    assert "SKIPPED [1] reynard-db::app::models_match:1: " in result.stdout, result.stdout
    assert "plugin/check_items.py" not in result.stdout
    assert connections_received(decoy) == before


LOGGING_TESTS = """\
import logging

from alembic import command

APP = logging.getLogger("myapp")


def test_alembic_driven_on_a_fresh_database(reynard_db_fresh):
    command.downgrade(reynard_db_fresh.config, "base")


def test_logging_intact_after_alembic(caplog):
    APP.warning("still logging")
    assert not APP.disabled
    assert "still logging" in caplog.text


def test_pytest_alembic(alembic_runner):
    alembic_runner.migrate_up_to("heads")


def test_logging_intact_after_pytest_alembic(caplog):
    APP.warning("still logging")
    assert "still logging" in caplog.text
"""


def test_env_py_calling_fileconfig_unguarded(
    project: Path, cli: Cli, pg_server: EphemeralServer
) -> None:
    """``fileConfig(config.config_file_name)`` with no None check, as many env.py have:
    it gets a real file, and pytest's capture and the application's loggers survive it."""
    env_py = project / "migrations" / "env.py"
    source = env_py.read_text()
    guarded = "if config.config_file_name is not None:\n    fileConfig(config.config_file_name)"
    assert guarded in source
    env_py.write_text(source.replace(guarded, "fileConfig(config.config_file_name)"))
    (project / "test_logging.py").write_text(LOGGING_TESTS)
    result = run_pytest(project, "--reynard-db=app")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
    code, out, err = cli("check", "--only", "upgrade,stairway", "--url", admin_url(pg_server))
    assert code == 0, out + err
    assert "Running upgrade" not in err and "INFO" not in err, err  # checks stay quiet


@pytest.mark.parametrize("variable", ["DATABASE_URL", "MYAPP_URL"])
def test_an_application_connecting_at_conftest_import_is_refused(
    project: Path, decoy: EphemeralServer, variable: str
) -> None:
    """The guard is armed before conftests are imported: an application that connects at
    import time (and whose pooled connection would serve the tests) reaches nothing."""
    (project / "myapp.py").write_text(
        "import os\n"
        "from sqlalchemy import MetaData, create_engine\n"
        f"engine = create_engine(os.environ[{variable!r}])\n"
        "MetaData().reflect(bind=engine)\n"
    )
    (project / "conftest.py").write_text("import myapp  # noqa: F401\n")
    (project / "test_app.py").write_text(
        "from sqlalchemy import text\n"
        "import myapp\n\n"
        "def test_delete(reynard_db):\n"
        "    with myapp.engine.begin() as conn:\n"
        "        conn.execute(text('DROP TABLE IF EXISTS precious'))\n"
    )
    production = decoy.database_url("app").render_as_string(hide_password=False)
    before = connections_received(decoy)
    result = run_pytest(
        project, "--reynard-db=app", **{variable: production, "PYTHONPATH": str(project)}
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    expected = "refused a connection" if variable == "MYAPP_URL" else "KeyError: 'DATABASE_URL'"
    assert expected in output, output
    assert connections_received(decoy) == before


def test_an_error_importing_the_application_is_env_pys(project: Path, cli: Cli) -> None:
    """Attributed to env.py (file, line, the modules below it), not to the first revision
    of the stairway; ``--traceback`` shows the whole chain, the default one line."""
    env_py = project / "migrations" / "env.py"
    env_py.write_text("import myapp\n" + env_py.read_text())
    (project / "myapp.py").write_text("import settings\n")
    (project / "settings.py").write_text("raise RuntimeError('SECRET_KEY is not set')\n")
    env = clean_env(PYTHONPATH=str(project))
    code, out, err = cli("check", "--only", "upgrade,stairway", "--json", env=env)
    assert code == 1, out + err
    for result in json.loads(out)["results"]:
        assert result["file"] == "migrations/env.py" and result["revision"] is None, result
        assert (
            "migrations/env.py:1 (in myapp -> settings): RuntimeError: SECRET_KEY"
            in (result["message"])
        )
    code, out, err = cli("create", "app", "-m", "x", env=env)
    assert code == 1 and err.count("\n") == 1 and "env.py:1" in err, err
    code, out, err = cli("--traceback", "create", "app", "-m", "x", env=env)
    assert code == 1 and "Traceback" in err and "settings.py" in err, err


def test_the_readmes_recommended_env_py_works(project: Path, cli: Cli) -> None:
    """The env.py the README recommends, as printed there: check (lint's locks
    included), lint and the fixtures pass on it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("The recommended `env.py`")
    block = readme[readme.index("```python\n", start) + len("```python\n") :]
    env_py = block[: block.index("```")]
    (project / "myapp").mkdir()
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "models.py").write_text(
        "import sqlalchemy as sa\n"
        "from sqlalchemy.orm import DeclarativeBase\n\n"
        "class Base(DeclarativeBase):\n    pass\n\n"
        "class T(Base):\n"
        "    __tablename__ = 't'\n"
        "    id = sa.Column(sa.Integer, primary_key=True)\n"
    )
    (project / "migrations" / "env.py").write_text(env_py)
    (project / "test_app.py").write_text("def test_db(reynard_db_fresh):\n    pass\n")
    env = clean_env(PYTHONPATH=str(project))
    code, out, err = cli("check", "--only", "upgrade,stairway,models_match,locks", env=env)
    assert code == 0, out + err
    code, out, err = cli("lint", "app", env=env)
    assert code == 0, out + err
    result = run_pytest(project, "--reynard-db=app", "--reynard-db-checks", PYTHONPATH=str(project))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_revision_is_named_under_a_stock_env_py(
    project: Path, cli: Cli, pg_server: EphemeralServer
) -> None:
    """The stock env.py's ``fileConfig`` disables Alembic's loggers: the step being run
    must still be known, so a failing revision is named, not env.py."""
    write_revision(
        project / "migrations" / "versions",
        "0a0000000002",
        REVISION,
        "raise RuntimeError('boom in the revision')",
    )
    url = admin_url(pg_server)
    code, out, err = cli("check", "--only", "upgrade,stairway", "--json", "--url", url)
    assert code == 1, out + err
    for result in json.loads(out)["results"]:
        assert result["revision"] == "0a0000000002", result
        assert result["file"].endswith("0a0000000002_test.py"), result
        assert "before any migration ran" not in result["message"], result


UNSAFE = {  # revision -> (upgrade, downgrade); three of them unsafe for Squawk
    "0a0000000002": (
        "op.add_column('t', sa.Column('n', sa.Integer, nullable=False))",
        "op.drop_column('t', 'n')",
    ),
    "0a0000000003": ("op.create_index('ix_t_n', 't', ['n'])", "op.drop_index('ix_t_n', 't')"),
    "0a0000000004": (
        "op.alter_column('t', 'n', type_=sa.BigInteger)",
        "op.alter_column('t', 'n', type_=sa.Integer)",
    ),
    "0a0000000005": (
        "op.create_table('u', sa.Column('id', sa.Integer, primary_key=True))",
        "op.drop_table('u')",
    ),
}
NOT_MEASURED = (
    "not measured: migrations/env.py migrates on a connection of its own, not the one passed "
    'in config.attributes["connection"] (as the stock alembic init env.py does)'
)


def test_lint_shows_squawks_findings_and_locks_says_not_measured(
    project: Path, decoy: EphemeralServer, cli: Cli
) -> None:
    """The stock env.py runs its revisions on an engine of its own: ``locks`` cannot read
    them inside its transaction. That is a note on each revision, not an error hiding
    Squawk's findings; exit 1 for those findings."""
    down = REVISION
    for revision, (upgrade, downgrade) in UNSAFE.items():
        write_revision(project / "migrations" / "versions", revision, down, upgrade, downgrade)
        down = revision
    before = connections_received(decoy)
    code, out, err = cli("lint", "app")
    assert (code, err) == (1, ""), out + err
    rows = [line.split()[:4] for line in out.splitlines() if line.startswith("app ")]
    lint = {row[2]: row[3] for row in rows if row[1] == "lint"}
    locks = {row[2]: " ".join(row[3:]) for row in rows if row[1] == "locks"}
    assert lint == {
        REVISION: "ok",
        "0a0000000002": "FAIL",
        "0a0000000003": "FAIL",
        "0a0000000004": "FAIL",
        "0a0000000005": "ok",
    }, out
    assert set(locks) == set(lint) and all(v.startswith("not") for v in locks.values()), out
    for rule in ("adding-required-field", "require-concurrent-index-creation"):
        assert f"{rule} on t" in out
    assert "changing-column-type on t" in out
    assert f"locks, every revision:\n  note: {NOT_MEASURED}" in out  # said once
    assert out.count("not measured") == 1
    assert out.rstrip().endswith("10 revision checks, 3 failed, 5 not checked"), out

    code, out, err = cli("lint", "app", "--format", "json")
    assert (code, err) == (1, ""), out + err
    entries = json.loads(out)["revisions"]
    measured = [e for e in entries if e["check"] == "locks"]
    assert len(measured) == 5 and all(e["ok"] and not e["findings"] for e in measured)
    assert all(e["notes"][0].startswith(NOT_MEASURED) for e in measured), measured
    assert [e["revision"] for e in entries if not e["ok"]] == list(UNSAFE)[:3]

    code, out, err = cli("lint", "app", "--only", "locks")
    assert (code, err) == (0, ""), out + err
    assert out.rstrip().endswith("5 revision checks, all passed, 5 not checked"), out
    assert connections_received(decoy) == before  # the ini names production; nothing reached it


def test_markers_only_a_connection_pooled_at_import_is_judged_when_used(
    project: Path, decoy: EphemeralServer
) -> None:
    """Markers alone arm the guard when collection ends, after the application a conftest
    imports has connected: its pooled connection is judged the first time a test takes it,
    before any statement of the test's."""
    (project / "myapp.py").write_text(
        "import os\n"
        "from sqlalchemy import MetaData, create_engine\n"
        "engine = create_engine(os.environ['MYAPP_URL'])\n"
        "MetaData().reflect(bind=engine)\n"
    )
    (project / "conftest.py").write_text("import myapp  # noqa: F401\n")
    (project / "test_app.py").write_text(
        "import pytest\n"
        "from sqlalchemy import text\n"
        "import myapp\n\n"
        "@pytest.mark.reynard_db('app')\n"
        "def test_create(reynard_db):\n"
        "    with myapp.engine.begin() as conn:\n"
        "        conn.execute(text('CREATE TABLE stolen (id int)'))\n"
    )
    production = decoy.database_url("app").render_as_string(hide_password=False)
    before = connections_received(decoy)
    result = run_pytest(project, MYAPP_URL=production, PYTHONPATH=str(project))
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "1 failed" in output, output
    assert "refused a connection that reached database 'app'" in output, output
    assert connections_received(decoy) == before + 1  # the import's, which the README names


def test_pytest_alembic_s_model_test_is_skipped_where_env_py_has_no_metadata(
    project: Path,
) -> None:
    """The stock env.py sets no ``target_metadata``: pytest-alembic's
    ``test_model_definitions_match_ddl`` failed ("does not provide a MetaData object")
    where ``check``'s ``models_match`` is skipped (the new user's trial, issue 24); now
    skipped too, with the same reason."""
    result = run_pytest(project, "--test-alembic", "--reynard-db=app", "-v", "-rs")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test_model_definitions_match_ddl SKIPPED" in result.stdout, output
    assert "no target_metadata in env.py" in result.stdout, output
    assert "3 passed, 1 skipped" in result.stdout, output


def test_create_on_a_stock_env_py_says_the_fix(project: Path, cli: Cli) -> None:
    """Autogenerate needs env.py's ``target_metadata``, which the stock env.py leaves
    ``None``: Alembic's words alone did not say what to do (the new user's trial,
    issue 24); the line now says it, and ``--empty`` writes a revision by hand."""
    versions = project / "migrations" / "versions"
    before = set(versions.iterdir())
    code, out, err = cli("create", "app", "-m", "second")
    assert code == 2, out + err
    [line] = err.splitlines()
    assert "does not provide a MetaData object" in line, err
    assert "set target_metadata in env.py" in line and "--empty" in line, err
    assert set(versions.iterdir()) == before  # nothing written
    code, out, err = cli("create", "app", "-m", "second", "--empty")
    assert code == 0 and "wrote" in out, out + err
