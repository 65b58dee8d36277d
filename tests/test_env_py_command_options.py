"""An env.py that reads Alembic's command-line options (hostile verdict round 20, F1, F2).

Plain ``alembic`` hands env.py its parsed command line as ``config.cmd_opts``: every
subcommand has ``-x``, ``revision`` has ``autogenerate``. ``context.get_x_argument()`` (the
documented API for ``alembic -x seed=true upgrade head``) and Alembic's cookbook hook "don't
generate empty migrations" (``if config.cmd_opts.autogenerate:``) read it. Our verbs gave
env.py a namespace holding ``quiet`` alone, and the checks none at all: every verb failed
with ``'Namespace' object has no attribute 'x'``, every check with ``'NoneType' object ...``,
and ``create`` printed a traceback.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_fork import cli_of
from reynard_trees import alembic_init_project

from pytest_reynard_db.postgres import EphemeralServer

REVISION = "0a0000000001"

#: ``alembic init``'s env.py, reading the ``-x`` arguments the way Alembic documents.
GET_X_ARGUMENT = (
    'x_args = context.get_x_argument(as_dictionary=True)\nSEED = x_args.get("seed") == "true"\n'
)
#: ... or the parsed options themselves (``-x`` is on every subcommand).
CMD_OPTS_X = 'extra = dict(a.split("=", 1) for a in (config.cmd_opts.x or []))\n'

#: Alembic's cookbook: "Don't Generate Empty Migrations with Autogenerate".
COOKBOOK_HOOK = """\
    def process_revision_directives(context, revision, directives):
        if config.cmd_opts.autogenerate:
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []

"""
MODELS = """\
import sqlalchemy as sa
target_metadata = sa.MetaData()
sa.Table("t", target_metadata, sa.Column("id", sa.Integer, primary_key=True){more})
"""


def project_reading(root: Path, lines: str) -> Path:
    """``alembic init`` and one revision; env.py runs ``lines`` after ``target_metadata``."""
    project = alembic_init_project(root, "postgresql://nobody@127.0.0.1:1/nowhere", REVISION)
    env_py = project / "migrations" / "env.py"
    source = env_py.read_text()
    assert source.count("target_metadata = None\n") == 1
    env_py.write_text(
        source.replace("target_metadata = None\n", f"target_metadata = None\n{lines}")
    )
    return project


@pytest.fixture
def target(pg_server: EphemeralServer) -> Iterator[str]:
    name = f"test_cmd_opts_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    yield url.render_as_string(hide_password=False)
    pg_server.drop_database(name)


@pytest.mark.parametrize("reads", [GET_X_ARGUMENT, CMD_OPTS_X], ids=["get_x_argument", "cmd_opts"])
def test_every_verb_and_check_runs_an_env_py_that_reads_x(
    tmp_path: Path, target: str, reads: str
) -> None:
    project = project_reading(tmp_path / "app", reads)
    cli = cli_of(project)
    for argv in (
        ("upgrade", "app"),
        ("current", "app"),
        ("downgrade", "app", "--to", "base"),
        ("stamp", "app", "heads"),
        ("stamp", "app", "base"),
        ("upgrade", "app", "--sql"),
        ("-v", "upgrade", "app"),
    ):
        code, out, err = cli(*argv, "--url", target)
        assert code == 0, f"{argv}: {out}{err}"
        assert "Traceback" not in err and "Namespace" not in err, err
        if argv[0] != "-v":  # -v: Alembic's INFO lines go to stderr
            assert err == "", f"{argv}: {err}"

    code, out, err = cli("check", "--json")
    assert code == 0, out + err
    assert err == "", err
    assert all(r["ok"] for r in json.loads(out)["results"]), out
    code, out, err = cli("-v", "check", "app")
    assert code == 0, out + err


def test_the_cookbooks_empty_migration_hook_works_in_create(tmp_path: Path) -> None:
    project = project_reading(tmp_path / "app", "")
    (project / "models.py").write_text(MODELS.format(more=""))
    env_py = project / "migrations" / "env.py"
    source = env_py.read_text()
    opened = "    with connectable.connect() as connection:\n"
    configured = "target_metadata=target_metadata\n        )"
    assert opened in source and configured in source
    source = source.replace("target_metadata = None\n", "from models import target_metadata\n")
    source = source.replace(opened, COOKBOOK_HOOK + opened)
    source = source.replace(
        configured,
        "target_metadata=target_metadata,\n"
        "            process_revision_directives=process_revision_directives,\n        )",
    )
    env_py.write_text(source)
    versions = project / "migrations" / "versions"
    cli = cli_of(project)

    code, out, err = cli("create", "app", "-m", "nothing")  # models as migrated: no file
    assert code == 0, out + err
    assert "Traceback" not in err, err
    assert sorted(p.name for p in versions.glob("*.py")) == [f"{REVISION}_test.py"]

    # models_match runs the hook as for `revision --autogenerate` (alembic check's own
    # namespace has no `autogenerate`: AttributeError there, and here since b193e78)
    code, out, err = cli("check", "app", "--only", "models_match")
    assert code == 0 and "the models match" in out, out + err

    (project / "models.py").write_text(MODELS.format(more=', sa.Column("y", sa.Integer)'))
    code, out, err = cli("check", "app", "--only", "models_match")
    assert code == 1 and "add column t.y" in out, out + err
    code, out, err = cli("create", "app", "-m", "add y")
    assert code == 0, out + err
    [new] = [p for p in versions.glob("*.py") if p.name != f"{REVISION}_test.py"]
    assert "op.add_column('t', sa.Column('y'" in new.read_text()


def test_an_error_in_a_revision_hook_of_create_is_one_line(tmp_path: Path) -> None:
    """Whatever the user's ``process_revision_directives`` raises is one line naming env.py."""
    project = project_reading(tmp_path / "app", "")
    (project / "models.py").write_text(MODELS.format(more=""))
    env_py = project / "migrations" / "env.py"
    source = env_py.read_text().replace(
        "target_metadata = None\n", "from models import target_metadata\n"
    )
    opened = "    with connectable.connect() as connection:\n"
    hook = (
        "    def process_revision_directives(context, revision, directives):\n"
        "        raise ValueError('the hook is broken')\n\n"
    )
    configured = "target_metadata=target_metadata\n        )"
    source = source.replace(opened, hook + opened).replace(
        configured,
        "target_metadata=target_metadata,\n"
        "            process_revision_directives=process_revision_directives,\n        )",
    )
    env_py.write_text(source)
    code, out, err = cli_of(project)("create", "app", "-m", "x")
    assert code != 0, out
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and "the hook is broken" in err and "env.py" in err, err


def test_x_arguments_reach_env_py(tmp_path: Path, target: str) -> None:
    """``reynard-migrate -x seed=true upgrade app``: env.py reads them as under ``alembic``."""
    said = tmp_path / "x.json"
    project = project_reading(
        tmp_path / "app", GET_X_ARGUMENT + f"open({str(said)!r}, 'w').write(repr(x_args))\n"
    )
    cli = cli_of(project)
    code, out, err = cli("-x", "seed=true", "-x", "n=2", "upgrade", "app", "--url", target)
    assert code == 0, out + err
    assert said.read_text() == "{'seed': 'true', 'n': '2'}"
    code, out, err = cli("upgrade", "app", "--url", target)
    assert code == 0, out + err
    assert said.read_text() == "{}"


def test_x_values_reach_env_py_exactly_as_given(tmp_path: Path, target: str) -> None:
    """Review of af35770: an empty value and one starting with '=' went through argparse
    again (``-x`` with nothing, ``-x=v``): a usage error, and 'v' for '=v'."""
    said = tmp_path / "x.txt"
    project = project_reading(
        tmp_path / "app", f"open({str(said)!r}, 'w').write(repr(config.cmd_opts.x))\n"
    )
    cli = cli_of(project)
    code, out, err = cli("-x", "", "-x", "=v", "-x", "data=x y", "upgrade", "app", "--url", target)
    assert code == 0, out + err
    assert said.read_text() == "['', '=v', 'data=x y']"
