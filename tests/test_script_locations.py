"""``script_location`` and ``version_locations`` in every form Alembic accepts.

A package-resource form (``package:path``, as Prefect's
``prefect.server.database:_migrations``), ``%(here)s``, paths relative to the
ini's folder or to the current directory, several version locations split by
each ``path_separator`` (and the older ``version_path_separator``), and
``[tool.alembic]`` in pyproject.toml. Each form names the same tree: the
environment in the package ``shopapp.database`` (``src/shopapp/database``, found
through ``PYTHONPATH`` as an installed package would be), its two revisions in
two version locations. Each is read by ``reynard-migrate`` in a child process
(``list``, ``heads``, ``upgrade``, ``check --only upgrade``), as a user runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from cli_fork import run_cli
from reynard_trees import clean_env, run_pytest, write_revision

from pytest_reynard_db.postgres import EphemeralServer

FIRST, SECOND = "0c0000000001", "0c0000000002"
PACKAGE = "shopapp.database"
SRC = "src/shopapp/database"
#: The head as ``alembic heads`` prints it.
HEAD_LINE = f"{SECOND} (head)"

INI_HEAD = "[alembic]\n"
#: Each form: the [alembic] lines naming the tree, and the ini's place in the project.
FORMS: dict[str, tuple[str, str]] = {
    "package, space": (
        f"script_location = {PACKAGE}:_migrations\npath_separator = space\n"
        f"version_locations = {PACKAGE}:_migrations/versions {PACKAGE}:extra_versions\n",
        "alembic.ini",
    ),
    "package, newline": (
        f"script_location = {PACKAGE}:_migrations\npath_separator = newline\n"
        f"version_locations =\n    {PACKAGE}:_migrations/versions\n    {PACKAGE}:extra_versions\n",
        "alembic.ini",
    ),
    "package, version_path_separator ;": (
        f"script_location = {PACKAGE}:_migrations\nversion_path_separator = ;\n"
        f"version_locations = {PACKAGE}:_migrations/versions;{PACKAGE}:extra_versions\n",
        "alembic.ini",
    ),
    "here, os": (
        f"script_location = %(here)s/../{SRC}/_migrations\npath_separator = os\n"
        f"version_locations = %(here)s/../{SRC}/_migrations/versions"
        f":%(here)s/../{SRC}/extra_versions\n",
        "conf/alembic.ini",
    ),
    "relative to the ini, ;": (
        f"script_location = ../{SRC}/_migrations\npath_separator = ;\n"
        f"version_locations = ../{SRC}/_migrations/versions;../{SRC}/extra_versions\n",
        "conf/alembic.ini",
    ),
    "relative to the cwd, :": (  # as `alembic -c conf/alembic.ini` from the root reads it
        f"script_location = {SRC}/_migrations\npath_separator = :\n"
        f"version_locations = {SRC}/_migrations/versions:{SRC}/extra_versions\n",
        "conf/alembic.ini",
    ),
}
PYPROJECT_ALEMBIC = f"""
[tool.alembic]
script_location = "{PACKAGE}:_migrations"
version_locations = ["{PACKAGE}:_migrations/versions", "{PACKAGE}:extra_versions"]
"""


def make_project(root: Path, form: str) -> Path:
    """A project whose tree lives in the package ``shopapp.database`` under ``src``: the
    stock env.py, one revision in each of two version locations."""
    package = root / SRC
    package.mkdir(parents=True)
    for folder in (package, package.parent):
        (folder / "__init__.py").write_text("")
    scratch = root / "scratch.ini"
    command.init(Config(str(scratch)), str(package / "_migrations"), template="generic")
    # the generated ini's logging sections (the stock env.py's fileConfig reads them) and
    # its [alembic] section without the lines each form gives
    stock = [
        line
        for line in scratch.read_text().splitlines(keepends=True)
        if not line.startswith(("script_location", "path_separator", "[alembic]"))
    ]
    scratch.unlink()
    (package / "extra_versions").mkdir()
    write_revision(
        package / "_migrations" / "versions",
        FIRST,
        None,
        "op.create_table('item', sa.Column('id', sa.Integer, primary_key=True))",
        "op.drop_table('item')",
    )
    write_revision(
        package / "extra_versions",
        SECOND,
        FIRST,
        "op.add_column('item', sa.Column('name', sa.Text))",
        "op.drop_column('item', 'name')",
    )
    registry = '[tool.reynard-db.databases.shop]\nini = "{ini}"\ndatabase = "shop"\n'
    if form == "pyproject":
        (root / "alembic.ini").write_text(INI_HEAD + "".join(stock))
        (root / "pyproject.toml").write_text(registry.format(ini="alembic.ini") + PYPROJECT_ALEMBIC)
        return root
    lines, ini = FORMS[form]
    (root / ini).parent.mkdir(parents=True, exist_ok=True)
    (root / ini).write_text(INI_HEAD + lines + "".join(stock))
    (root / "pyproject.toml").write_text(registry.format(ini=ini))
    return root


@pytest.mark.parametrize("form", [*FORMS, "pyproject"])
def test_every_form_names_the_tree(tmp_path: Path, pg_server: EphemeralServer, form: str) -> None:
    project = make_project(tmp_path / "shop", form)
    env = clean_env(PYTHONPATH=str(project / "src"))
    tree = f"{SRC}/_migrations"

    code, out, err = run_cli(project, "list", env=env)
    assert (code, err) == (0, ""), out + err
    (row,) = [line.split() for line in out.splitlines() if line.startswith("shop ")]
    assert row[3:] == [tree, "-", SECOND], out

    code, out, err = run_cli(project, "heads", "shop", env=env)
    assert (code, out.strip(), err) == (0, HEAD_LINE, ""), out + err

    name = f"test_shop_{abs(hash(form))}"
    url = pg_server.create_database(name).render_as_string(hide_password=False)
    code, out, err = run_cli(project, "upgrade", "shop", "--url", url, env=env)
    assert (code, err) == (0, ""), out + err
    assert out.startswith(f"shop: at {SECOND} "), out
    pg_server.drop_database(name)

    admin = pg_server.url.render_as_string(hide_password=False)
    code, out, err = run_cli(project, "check", "--only", "upgrade", "--url", admin, env=env)
    assert (code, err) == (0, ""), out + err
    assert f"shop      upgrade  ok      base -> {SECOND}" in out, out


@pytest.mark.parametrize("form", ["package, space", "pyproject"])
def test_a_package_that_cannot_be_imported_is_one_line(tmp_path: Path, form: str) -> None:
    """Without ``src`` on PYTHONPATH the package is nowhere: one line naming the file and
    the key, exit 2; a package there without the folder named, the same."""
    project = make_project(tmp_path / "shop", form)
    source = project / ("pyproject.toml" if form == "pyproject" else "alembic.ini")
    for verb in (("list",), ("heads", "shop"), ("check", "--only", "upgrade")):
        code, out, err = run_cli(project, *verb, env=clean_env())
        lines = (out + err).strip().splitlines()
        message = (
            f"{source}: script_location: {PACKAGE}:_migrations: package '{PACKAGE}' cannot "
            "be imported: no module named 'shopapp'"
        )
        assert code == 2 and any(message in line for line in lines), (verb, out, err)
        assert "Traceback" not in err
    (project / SRC / "_migrations").rename(project / SRC / "moved")
    code, out, err = run_cli(
        project, "heads", "shop", env=clean_env(PYTHONPATH=str(project / "src"))
    )
    missing = project / SRC / "_migrations"
    assert (code, out) == (2, ""), out + err
    assert err == (
        f"reynard-migrate: error: {source}: script_location: no such directory: {missing} "
        f"(from {PACKAGE}:_migrations)\n"
    )


def test_the_plugin_migrates_a_tree_in_a_package(tmp_path: Path) -> None:
    project = make_project(tmp_path / "shop", "package, space")
    (project / "test_shop.py").write_text(
        "from sqlalchemy import text\n\n"
        "def test_migrated(reynard_db):\n"
        f"    assert reynard_db.head == ({SECOND!r},)\n"
        "    with reynard_db.engine.connect() as conn:\n"
        "        conn.execute(text('SELECT id, name FROM item'))\n"
    )
    result = run_pytest(
        project, "--reynard-db=shop", "--reynard-db-checks", PYTHONPATH=str(project / "src")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed, 1 skipped" in result.stdout, result.stdout
