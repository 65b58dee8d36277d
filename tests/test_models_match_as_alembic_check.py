"""``models_match`` is ``alembic check``'s verdict (hostile verdict round 20, F4).

``alembic check`` runs autogenerate as ``alembic revision --autogenerate`` does, env.py's
``process_revision_directives`` hook included: a project that keeps a table its models no
longer have by dropping autogenerate's ``DropTableOp`` in that hook (instead of an
``include_object``) passes ``alembic check``, and ``create`` writes no revision for it.
``models_match`` compared with ``compare_metadata``, which runs no hook, and failed it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_fork import cli_of
from reynard_trees import alembic_init_project, write_revision

REVISION = "0a0000000001"
MODELS = """\
import sqlalchemy as sa
target_metadata = sa.MetaData()
sa.Table("t", target_metadata, sa.Column("id", sa.Integer, primary_key=True))
"""
DROPS_NO_TABLE = """\
from alembic.operations import ops as _ops


def process_revision_directives(context, revision, directives):
    for script in directives:
        script.upgrade_ops.ops = [
            o for o in script.upgrade_ops.ops if not isinstance(o, _ops.DropTableOp)
        ]


"""


def project_with_a_legacy_table(root: Path, *, hook: bool) -> Path:
    """``alembic init``; models of table ``t``; one revision making ``t`` and ``legacy``."""
    project = alembic_init_project(root, "postgresql://nobody@127.0.0.1:1/nowhere", REVISION)
    (project / "models.py").write_text(MODELS)
    for old in (project / "migrations" / "versions").glob("*.py"):
        old.unlink()
    write_revision(
        project / "migrations" / "versions",
        REVISION,
        None,
        "op.create_table('t', sa.Column('id', sa.Integer, primary_key=True))\n"
        "op.create_table('legacy', sa.Column('id', sa.Integer, primary_key=True))",
        "op.drop_table('legacy')\nop.drop_table('t')",
    )
    env_py = project / "migrations" / "env.py"
    source = env_py.read_text().replace(
        "target_metadata = None\n", "from models import target_metadata\n"
    )
    if hook:
        configured = "target_metadata=target_metadata\n        )"
        assert configured in source
        source = source.replace(
            "def run_migrations_offline", DROPS_NO_TABLE + "def run_migrations_offline"
        )
        source = source.replace(
            configured,
            "target_metadata=target_metadata,\n"
            "            process_revision_directives=process_revision_directives,\n        )",
        )
    env_py.write_text(source)
    return project


@pytest.mark.parametrize("hook", [True, False], ids=["hook-keeps-it", "no-hook"])
def test_models_match_applies_env_pys_revision_hook(tmp_path: Path, hook: bool) -> None:
    project = project_with_a_legacy_table(tmp_path / "app", hook=hook)
    cli = cli_of(project)
    code, out, err = cli("check", "app", "--only", "models_match", "--json")
    [result] = json.loads(out)["results"]
    if hook:  # as alembic check: "No new upgrade operations detected"
        assert code == 0 and result["ok"], out + err
        assert err == "", err
        code, out, err = cli("create", "app", "-m", "nothing")  # and create agrees
        assert code == 0 and "no changes" in out, out + err
    else:
        assert code == 1 and not result["ok"], out + err
        assert "remove table legacy" in result["message"], result


# -- a model module imported by a revision, not by env.py (F3) ----------------------------
MODELS_PACKAGE = {
    "myapp/__init__.py": "",
    "myapp/models.py": (
        "from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column\n\n"
        "class Base(DeclarativeBase):\n    pass\n\n"
        "class User(Base):\n"
        '    __tablename__ = "users"\n'
        "    id: Mapped[int] = mapped_column(primary_key=True)\n"
    ),
    "myapp/billing.py": (
        "from sqlalchemy.orm import Mapped, mapped_column\n"
        "from myapp.models import Base\n\n"
        "class Plan(Base):\n"
        '    __tablename__ = "plans"\n'
        "    id: Mapped[int] = mapped_column(primary_key=True)\n"
    ),
}
SEEDS_A_PLAN = (
    "from sqlalchemy.orm import Session\n"
    "from myapp.billing import Plan\n"
    "with Session(bind=op.get_bind()) as session:\n"
    "    session.add(Plan(id=1))\n"
    "    session.flush()"
)


@pytest.mark.parametrize("where", ["upgrade", "downgrade"])
@pytest.mark.parametrize("only", [(), ("--only", "models_match")], ids=["all", "only"])
def test_a_model_module_only_a_revision_imports_is_not_a_model(
    tmp_path: Path, where: str, only: tuple[str, ...]
) -> None:
    """env.py imports ``myapp.models`` and forgets ``myapp.billing`` (autogenerate then wants
    to drop ``plans``: ``alembic check`` fails); a data migration imports ``myapp.billing``
    in its ``upgrade()`` (or ``downgrade()``). Run in the check's process before the
    comparison, that import registered ``plans`` on the models' MetaData and models_match
    passed (or not, by which checks ran before it)."""
    project = alembic_init_project(tmp_path / "app", "postgresql://nobody@127.0.0.1:1/x", REVISION)
    for name, text in MODELS_PACKAGE.items():
        (project / name).parent.mkdir(exist_ok=True)
        (project / name).write_text(text)
    versions = project / "migrations" / "versions"
    for old in versions.glob("*.py"):
        old.unlink()
    write_revision(
        versions,
        REVISION,
        None,
        "op.create_table('users', sa.Column('id', sa.Integer, primary_key=True))",
        "op.drop_table('users')",
    )
    create = "op.create_table('plans', sa.Column('id', sa.Integer, primary_key=True))"
    seeded_up = f"{create}\n{SEEDS_A_PLAN}" if where == "upgrade" else create
    seeded_down = (
        f"{SEEDS_A_PLAN}\nop.drop_table('plans')"
        if where == "downgrade"
        else ("op.drop_table('plans')")
    )
    write_revision(versions, "0a0000000002", REVISION, seeded_up, seeded_down)
    env_py = project / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            "target_metadata = None\n",
            "from myapp.models import Base\ntarget_metadata = Base.metadata\n",
        )
    )
    code, out, err = cli_of(project)("check", "app", *only, "--json")
    results = {r["check"]: r for r in json.loads(out)["results"]}
    assert code == 1, out + err
    assert not results["models_match"]["ok"], results["models_match"]
    assert "remove table plans" in results["models_match"]["message"]
    assert all(r["ok"] for name, r in results.items() if name != "models_match"), results
