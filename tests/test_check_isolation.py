"""One database's checks do not depend on what another's ``env.py`` imports (issue 13).

Two databases, ``app`` and ``auth``, whose models share one ``MetaData`` (a module
``shared``), as an application with one declarative base does. Importing
``app_models`` registers ``app``'s table in it, and also replaces a module in
``sys.modules`` (``auth``'s ``naming``), both at import, as an application's models
module with a ``create_all``-style side effect would. In one interpreter, ``auth``'s
``models_match`` would then see ``app``'s table, and its ``upgrade`` would name its
table after the replaced module, depending on whether ``app`` ran first. Each database's
checks run in a clean interpreter, so ``auth``'s results are the same whatever runs
with it, in whatever order, with ``--only`` or not, from the CLI or as pytest items
in a run whose test modules imported ``app_models``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from reynard_trees import clean_env, run_cli, write_revision

ENV_PY = """
from alembic import context
from sqlalchemy import engine_from_config, pool

import {models}
import shared

config = context.config
target_metadata = shared.metadata


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {{}}), prefix="sqlalchemy.",
        poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
"""

INI = """
[alembic]
script_location = {name}_migrations
prepend_sys_path = .
sqlalchemy.url = postgresql://nobody@127.0.0.1:1/{name}
"""

FILES = {
    "shared.py": "from sqlalchemy import MetaData\nmetadata = MetaData()\n",
    "naming.py": 'USERS = "users"\n',
    "auth_models.py": """
        import sqlalchemy as sa
        import naming
        import shared

        users = sa.Table(
            naming.USERS, shared.metadata, sa.Column("id", sa.Integer, primary_key=True)
        )
        """,
    "app_models.py": """
        import sys
        import types

        import sqlalchemy as sa
        import shared

        # side effects at import: a table in the shared MetaData, a module replaced
        items = sa.Table("items", shared.metadata, sa.Column("id", sa.Integer, primary_key=True))
        sys.modules["naming"] = types.SimpleNamespace(USERS="app_users")
        """,
}


def make_project(root: Path) -> Path:
    root.mkdir()
    for name, body in FILES.items():
        (root / name).write_text(textwrap.dedent(body).lstrip())
    for name, table in (("app", "items"), ("auth", "users")):
        (root / f"alembic_{name}.ini").write_text(INI.format(name=name))
        folder = root / f"{name}_migrations"
        (folder / "versions").mkdir(parents=True)
        (folder / "env.py").write_text(ENV_PY.format(models=f"{name}_models"))
        write_revision(
            folder / "versions",
            f"{name}00000001",
            None,
            f"op.create_table({table!r}, sa.Column('id', sa.Integer, primary_key=True))",
            f"op.drop_table({table!r})",
        )
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "two")


def auth_results(project: Path, *argv: str) -> list[dict[str, object]]:
    code, out, err = run_cli(project, "check", *argv, "--json", env=clean_env())
    assert code in (0, 1), err
    results = json.loads(out)["results"]
    return [r for r in results if r["database"] == "auth"]


def test_cli_results_of_one_database_do_not_depend_on_another(project: Path) -> None:
    alone = auth_results(project, "auth")
    assert [(r["check"], r["ok"]) for r in alone] == [
        ("single_head", True),
        ("upgrade", True),
        ("stairway", True),
        ("downgrade_clean", True),
        ("models_match", True),
    ], alone
    assert auth_results(project, "app", "auth") == alone
    assert auth_results(project) == alone  # every database, app first
    only = auth_results(project, "app", "auth", "--only", "models_match,upgrade")
    assert only == [r for r in alone if r["check"] in ("upgrade", "models_match")]


def test_check_items_do_not_depend_on_what_tests_imported(
    project: Path, pytester: pytest.Pytester
) -> None:
    """The run's test modules imported ``app_models`` (as an application's tests do):
    ``auth``'s items pass as they do alone."""
    (project / "tests").mkdir()
    (project / "tests" / "test_app.py").write_text(
        "import app_models\n\ndef test_app():\n    assert app_models.items is not None\n"
    )
    pytester.chdir()
    for args in (("--reynard-db=app,auth",), ("--reynard-db=auth,app",), ("--reynard-db=auth",)):
        result = pytester.runpytest_subprocess(
            str(project),
            f"--rootdir={project}",
            "-p",
            "no:cacheprovider",
            "-v",
            "--reynard-db-checks",
            *args,
        )
        result.stdout.fnmatch_lines(["*reynard-db::auth::models_match PASSED*"])
        result.stdout.fnmatch_lines(["*reynard-db::auth::upgrade PASSED*"])
        result.stdout.no_fnmatch_line("*FAILED*")
