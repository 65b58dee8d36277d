"""Other people's Alembic projects: every ``alembic init`` template but ``generic``
(``tests/test_alembic_init.py``), made as a user makes them, with models and two revisions
of real tables, then used as a new user would: the fixtures, the check items, ``check``
and the production verbs on a ``--url`` database.
"""

from __future__ import annotations

import json
import re
import shutil
from contextlib import chdir
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from cli_fork import run_cli, run_cli_in
from reynard_trees import admin_url, clean_env, run_pytest, write_revision

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
    with chdir(root):  # a relative directory: the ini says %(here)s/alembic, as a user's
        command.init(Config("alembic.ini", toml_file="pyproject.toml"), "alembic", template)
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


def asyncpg_url(server: EphemeralServer, name: str) -> str:
    """A user's async URL for ``name``: ``postgresql+asyncpg://``."""
    url = server.database_url(name).set(drivername="postgresql+asyncpg")
    return url.render_as_string(hide_password=False)


def test_an_asyncpg_url_migrates(tmp_path: Path, pg_server: EphemeralServer) -> None:
    """The async template with the driver its users pick: env.py migrates on asyncpg,
    the harness's own connection (lock, ``current``) is a sync one to the same database."""
    project = user_project(tmp_path / "app", "async")
    pg_server.create_database("prod_asyncpg")
    url = asyncpg_url(pg_server, "prod_asyncpg")
    for argv in (("upgrade", "app"), ("current", "app"), ("downgrade", "app", "--to", FIRST)):
        code, out, err = run_cli(project, *argv, env=clean_env(APP_DATABASE_URL=url))
        assert code == 0, f"{argv}: {out}{err}"
    code, out, err = run_cli(project, "current", "app", "--url", url, env=clean_env())
    assert code == 0 and FIRST in out and SECOND not in out, out + err
    # asyncpg's own query keys (ssl=, libpq's sslmode=) on a database setup creates
    created = asyncpg_url(pg_server, "prod_asyncpg_setup") + "?ssl=disable"
    for argv in (("setup", "app", "--url", created), ("current", "app", "--url", created)):
        code, out, err = run_cli(project, *argv, env=clean_env())
        assert code == 0, f"{argv}: {out}{err}"
    assert SECOND in out, out


def test_an_asyncpg_url_without_asyncpg_is_one_line(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    """asyncpg not installed (an import of it fails, as in a virtualenv without it): one
    line naming the database, the (masked) URL, the driver and the way out, exit 2."""
    project = user_project(tmp_path / "app", "async")
    missing = tmp_path / "site" / "asyncpg"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'asyncpg'\", name='asyncpg')\n"
    )
    url = asyncpg_url(pg_server, "postgres")
    env = clean_env(PYTHONPATH=str(missing.parent))
    for argv in (("upgrade", "app", "--url", url), ("current", "app", "--url", url)):
        code, out, err = run_cli(project, *argv, env=env)
        assert code == 2, f"{argv}: {out}{err}"
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "the driver asyncpg is not installed" in err and "postgresql+psycopg" in err, err
    code, out, err = run_cli(project, "upgrade", "app", env=dict(env, APP_DATABASE_URL=url))
    assert code == 2 and "database 'app'" in err and err.count("\n") == 1, err


MULTIDB_REFUSED = (
    "one env.py migrating several databases (Alembic's multidb template) is not supported"
)


def test_the_multidb_template_is_refused_in_one_line(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    """One env.py migrating ``databases = engine1, engine2``, each engine's URL in its
    own section: the harness would aim both at one throw-away database (they then wait
    on each other's version row forever), and ``--url`` would be ignored. Refused: one
    line naming the ini and the way out, exit 2; the other databases still work."""
    project = alembic_init(tmp_path / "app", "multidb")
    ini = project / "alembic.ini"
    url = pg_server.database_url("postgres").render_as_string(hide_password=False)
    ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname", url))
    generic = alembic_init(project / "other", "generic")
    (generic / "alembic" / "versions" / ".gitkeep").write_text("")
    (project / "pyproject.toml").write_text(
        REGISTRY + '\n[tool.reynard-db.databases.other]\nini = "other/alembic.ini"\n'
    )
    for argv in (
        ("check",),
        ("upgrade", "app", "--url", url),
        ("create", "app", "-m", "x", "--empty"),
        ("history", "app"),
    ):
        code, out, err = run_cli(project, *argv, env=clean_env())
        assert code == 2, f"{argv}: {out}{err}"
        assert err.count("\n") == 1 and MULTIDB_REFUSED in err and str(ini) in err, err
        assert "databases = engine1, engine2" in err, err
    code, out, err = run_cli(project, "heads", "other", env=clean_env())
    assert code == 0, out + err
    result = run_pytest(project)
    assert result.returncode != 0 and MULTIDB_REFUSED in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


# -- trees as they sit in git -------------------------------------------------------------------
def ini_option(ini: Path, commented: str, value: str) -> None:
    """Uncomment ``# commented...`` in the ini ``alembic init`` wrote, as ``value``."""
    text = ini.read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"# {commented}"))
    ini.write_text(text.replace(line, value, 1))


def no_versions_folder(root: Path) -> Path:
    """A fresh clone of a project with no revision yet: git kept no ``versions/``."""
    shutil.rmtree(root / "alembic" / "versions")
    return root / "alembic" / "versions"


def crlf(root: Path) -> Path:
    """``core.autocrlf=true``: every text file checked out with CRLF line endings."""
    versions = root / "alembic" / "versions"
    for path in [*versions.glob("*.py"), *(root / "alembic").glob("*.*"), root / "alembic.ini"]:
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    return versions


def bom(root: Path) -> Path:
    """Revision files and env.py saved by an editor that writes a UTF-8 BOM."""
    versions = root / "alembic" / "versions"
    for path in [*versions.glob("*.py"), root / "alembic" / "env.py"]:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return versions


def symlinked_versions(root: Path) -> Path:
    """``alembic/versions`` a symlink to a folder elsewhere in the project."""
    versions = root / "alembic" / "versions"
    shutil.move(versions, root / "shared_versions")
    versions.symlink_to(root / "shared_versions", target_is_directory=True)
    return versions


def recursive_subfolders(root: Path) -> Path:
    """``recursive_version_locations = true``, a subfolder per year."""
    versions = root / "alembic" / "versions"
    for year, revision in (("2024", FIRST), ("2025", SECOND)):
        (versions / year).mkdir()
        shutil.move(versions / f"{revision}_test.py", versions / year)
    ini_option(
        root / "alembic.ini", "recursive_version_locations", "recursive_version_locations = true"
    )
    return versions


def several_locations(root: Path) -> Path:
    """Two ``version_locations``, ``%(here)s``-relative; the head in the second."""
    (root / "more_versions").mkdir()
    shutil.move(root / "alembic" / "versions" / f"{SECOND}_test.py", root / "more_versions")
    ini_option(
        root / "alembic.ini",
        "version_locations = ",
        "version_locations = %(here)s/alembic/versions:%(here)s/more_versions",
    )
    return root / "more_versions"


def dated_file_template(root: Path) -> Path:
    """``file_template`` with the date in subfolders (and recursive locations, as the
    ini's comment says it needs)."""
    ini = root / "alembic.ini"
    ini_option(
        ini,
        "file_template = %%(year)d/",
        "file_template = " + "%%(year)d/%%(month).2d/%%(rev)s_%%(slug)s",
    )
    ini_option(ini, "recursive_version_locations", "recursive_version_locations = true")
    return root / "alembic" / "versions"


def revision_environment(root: Path) -> Path:
    """``revision_environment = true``: env.py runs for every new revision (stock env.py,
    the ini's placeholder URL)."""
    ini_option(root / "alembic.ini", "revision_environment", "revision_environment = true")
    return root / "alembic" / "versions"


def ini_in_a_subfolder(root: Path) -> Path:
    """The ini and tree in ``db/`` (``prepend_sys_path = .``, the app at the root), run
    from the project root as ``alembic -c db/alembic.ini`` would be."""
    (root / "db").mkdir()
    shutil.move(root / "alembic.ini", root / "db" / "alembic.ini")
    shutil.move(root / "alembic", root / "db" / "alembic")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"alembic.ini"', '"db/alembic.ini"'))
    return root / "db" / "alembic" / "versions"


SHAPES = {
    f.__name__: f
    for f in (
        no_versions_folder,
        crlf,
        bom,
        symlinked_versions,
        recursive_subfolders,
        several_locations,
        dated_file_template,
        revision_environment,
        ini_in_a_subfolder,
    )
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_tree_as_it_sits_in_git(tmp_path: Path, shape: str) -> None:
    """check, history, create (written where Alembic would write it) and heads on each
    shape, run from the project's ``tests/`` folder (another cwd than the ini's)."""
    project = user_project(tmp_path / "app", "generic")
    expected_folder = SHAPES[shape](project)
    empty = shape == "no_versions_folder"
    env = clean_env()

    def cli(*argv: str) -> str:
        code, out, err = run_cli_in(project / "tests", *argv, env=env)
        assert code == 0, f"{argv}: {out}{err}"
        assert "Traceback" not in err, err
        return out

    only = "upgrade,stairway" if empty else "upgrade,stairway,models_match"
    out = cli("check", "--only", only, "--json")
    for result in json.loads(out)["results"]:
        assert result["ok"], result
    if not empty:
        assert f"{FIRST} -> {SECOND}" in cli("history", "app")
    cli("create", "app", "-m", "more", "--empty")
    written = [p for p in expected_folder.rglob("*_more.py")]
    assert len(written) == 1, sorted(project.rglob("*.py"))
    revision = re.search(r"revision = '(\w+)'|revision: str = '(\w+)'", written[0].read_text())
    assert revision is not None
    assert (revision.group(1) or revision.group(2)) in cli("heads", "app")
    if shape == "dated_file_template":
        assert written[0].parent.parent.parent == expected_folder, written[0]
    if shape == "revision_environment":  # a merge runs env.py too
        write_revision(expected_folder, "0b0000000003", SECOND)
        cli("merge", "app", "-m", "join")
        assert len(list(expected_folder.glob("*_join.py"))) == 1


OWN_VARIABLE_TEST = """\
from alembic import command


def test_fresh_driven_by_alembic(reynard_db_fresh, monkeypatch):
    url = reynard_db_fresh.url.render_as_string(hide_password=False)
    monkeypatch.setenv("MYAPP_DB_URL", url)  # what this env.py reads, as the README says
    command.downgrade(reynard_db_fresh.config, "base")
    command.upgrade(reynard_db_fresh.config, "heads")
"""


def reading_its_own_variable(project: Path) -> Path:
    """``project`` with an env.py that takes its URL from ``$MYAPP_DB_URL``."""
    env_py = project / "alembic" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            "config = context.config\n",
            "config = context.config\nimport os\n"
            "config.set_main_option('sqlalchemy.url', os.environ['MYAPP_DB_URL'])\n",
        )
    )
    return project


def test_an_env_py_reading_a_variable_of_its_own(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    """``os.environ["MYAPP_DB_URL"]`` instead of ``sqlalchemy.url``, registered as the
    database's ``url_env``: the checks get the throw-away database's URL there whether
    the shell sets it (to production, never reached) or not; a test driving Alembic
    itself sets it as the README shows."""
    project = reading_its_own_variable(user_project(tmp_path / "app", "generic"))
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("APP_DATABASE_URL", "MYAPP_DB_URL"))
    (project / "tests" / "test_app.py").write_text(OWN_VARIABLE_TEST)
    production = "postgresql://app:secret@127.0.0.1:1/app"
    for env in (clean_env(), clean_env(MYAPP_DB_URL=production)):
        url = admin_url(pg_server)
        code, out, err = run_cli(
            project, "check", "--only", "upgrade,stairway", "--url", url, env=env
        )
        assert code == 0 and "secret" not in out + err, out + err
    result = run_pytest(project, MYAPP_DB_URL=production)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


def test_a_pyproject_toml_registered_as_the_ini_is_one_line(tmp_path: Path) -> None:
    """``ini = "pyproject.toml"`` (its ``[tool.alembic]`` looks like the config): one line
    saying what to register instead, not configparser's reading of TOML."""
    project = user_project(tmp_path / "app", "pyproject")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('ini = "alembic.ini"', 'ini = "pyproject.toml"')
    )
    code, out, err = run_cli(project, "heads", "app", env=clean_env())
    assert code == 2 and err.count("\n") == 1, out + err
    assert f"{pyproject}: [tool.reynard-db.databases.app]: ini: " in err, err
    assert "register the alembic.ini beside it" in err, err


def test_an_unregistered_variable_of_env_pys_own_is_named_with_the_fix(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    """env.py reads ``os.environ["MYAPP_DB_URL"]``, not registered: one line naming the
    variable and the ``url_env`` that would point it at the database being migrated."""
    project = reading_its_own_variable(user_project(tmp_path / "app", "generic"))
    url = admin_url(pg_server)
    code, out, err = run_cli(project, "check", "--only", "upgrade", "--url", url, env=clean_env())
    assert code == 1, out + err
    assert "KeyError: 'MYAPP_DB_URL'" in out + err, out + err
    assert 'register it as url_env = "MYAPP_DB_URL" under [tool.reynard-db.databases.app]' in (
        out + err
    )
    assert "Traceback" not in out + err
