"""Tiny projects generated under a temporary directory for the benchmark."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

STAIR_ENV = '''\
"""A minimal env.py: a passed Connection or Engine, else $STAIR_DATABASE_URL."""

import os

from alembic import context
from sqlalchemy import Connection, create_engine, pool

config = context.config


def run(connection: Connection) -> None:
    """Run the migrations on ``connection``, one transaction per migration."""
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


passed = config.attributes.get("connection")
if isinstance(passed, Connection):
    run(passed)
else:
    url = os.environ.get("STAIR_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    engine = passed or create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        run(conn)
'''

#: ``alembic init``'s env.py, online part: an engine of its own from ``sqlalchemy.url``,
#: one transaction for the run (what most projects have).
STOCK_ENV = """\
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config

connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}),
    prefix="sqlalchemy.",
    poolclass=pool.NullPool,
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

STAIR_REVISION = '''\
"""revision {index}: table t{index} and its column c{index}"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("t{index}", sa.Column("id", sa.Integer, primary_key=True))
    op.add_column("t{index}", sa.Column("c{index}", sa.Text))


def downgrade() -> None:
    op.drop_column("t{index}", "c{index}")
    op.drop_table("t{index}")
'''


def stair_project(root: Path, revisions: int, env_py: str = STAIR_ENV) -> Path:
    """A project with one database ``stair``: a linear tree of ``revisions`` revisions
    (``env_py``: its env.py, by default one on the connection it is passed)."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [tool.reynard-db.databases.stair]
            ini = "alembic_stair.ini"
            database = "stair"
            url_env = "STAIR_DATABASE_URL"
            """
        )
    )
    (root / "alembic_stair.ini").write_text(
        textwrap.dedent(
            """\
            [alembic]
            script_location = %(here)s/alembic/stair
            path_separator = os
            sqlalchemy.url = postgresql+psycopg://localhost/stair
            """
        )
    )
    versions = root / "alembic" / "stair" / "versions"
    versions.mkdir(parents=True)
    (root / "alembic" / "stair" / "env.py").write_text(env_py)
    down: str | None = None
    for index in range(1, revisions + 1):
        revision = f"r{index:011d}"
        (versions / f"{revision}_step.py").write_text(
            STAIR_REVISION.format(index=index, revision=revision, down=down)
        )
        down = revision
    return root


def ecs_project(root: Path, conftest: str = "") -> Path:
    """A copy of this repository's trees, models, inis and ``[tool.reynard-db]`` table."""
    root.mkdir(parents=True)
    shutil.copytree(
        REPO / "alembic", root / "alembic", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        REPO / "reynard_models",
        root / "reynard_models",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for ini in REPO.glob("alembic_*.ini"):
        shutil.copy(ini, root / ini.name)
    table = _reynard_db_table(REPO / "pyproject.toml")
    (root / "pyproject.toml").write_text(
        table + '\n[tool.pytest.ini_options]\npythonpath = ["."]\naddopts = ""\n'
    )
    (root / "conftest.py").write_text(conftest)
    return root


def _reynard_db_table(pyproject: Path) -> str:
    """The ``[tool.reynard-db...]`` sections of ``pyproject`` as text."""
    keep: list[str] = []
    inside = False
    for line in pyproject.read_text().splitlines():
        if line.startswith("["):
            inside = line.startswith("[tool.reynard-db")
        if inside:
            keep.append(line)
    return "\n".join(keep) + "\n"


#: conftest of row 5: every template build appends its name to $BENCH_BUILD_LOG (the
#: provisioner says each build on its logger, see ``provision``).
BUILD_COUNTER = '''\
"""Count template builds (the benchmark checks there is one per run)."""

import logging
import os


class _Count(logging.Handler):
    def emit(self, record):
        with open(os.environ["BENCH_BUILD_LOG"], "a") as log:
            log.write(record.template + "\\n")


_builds = logging.getLogger("pytest_reynard_db.provisioning.provision")
_builds.setLevel(logging.INFO)
_builds.addHandler(_Count(logging.INFO))
'''

ONE_TEST = """\
def test_one(reynard_db):
    assert reynard_db.head
"""

TRIVIAL_TEST = """\
def test_one():
    assert True
"""

FRESH_SUITE = """\
import pytest
from sqlalchemy import text


@pytest.mark.parametrize("i", range({count}))
def test_fresh(reynard_db_fresh, i):
    # What a test of the ECS models does with a database of its own: write a little,
    # read it back. (With the clone made ahead, the fixture itself costs ~0: a suite
    # of empty tests would measure only xdist's start-up.)
    with reynard_db_fresh.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO entity (is_active) SELECT true FROM generate_series(1, 500)")
        )
        conn.execute(
            text("INSERT INTO component (entity_id, component_type, data) "
                 "SELECT id, 'position', jsonb_build_object('x', id) FROM entity")
        )
        rows = conn.execute(
            text("SELECT count(*) FROM component c JOIN entity e ON e.id = c.entity_id")
        ).scalar()
    assert rows == 500
"""
