"""The migration manager through ``reynard-migrate``, on copies of the Reynard trees."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fork import Cli
from reynard_trees import REPO, scalar, write_revision
from sqlalchemy import create_engine, text

from pytest_reynard_db.cli import main
from pytest_reynard_db.postgres import EphemeralServer

ECS_HEADS = ("4a3e00000004", "a6e400000004", "ec5000000004")
MAIN_HEAD = "3a1400000004"


@pytest.fixture
def db_url(pg_server: EphemeralServer, request: pytest.FixtureRequest) -> str:
    """A fresh empty database on the shared server."""
    name = f"test_cli_{request.node.name[:40].lower()}"
    pg_server.drop_database(name)
    url = pg_server.create_database(name)
    return url.render_as_string(hide_password=False)


def heads_of(url: str) -> set[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    return set(rows)


def test_setup_brings_every_database_to_head(
    project: Path, pg_server: EphemeralServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("reynard_ecs", "reynard_ecs_e2e", "reynard", "reynard_e2e"):
        pg_server.drop_database(name)
    admin = pg_server.url.render_as_string(hide_password=False)
    assert main(["--project", str(project), "setup", "--url", admin]) == 0
    out = capsys.readouterr().out
    assert "ecs: created, at 4a3e00000004, a6e400000004, ec5000000004" in out
    for name, heads in (
        ("reynard_ecs", set(ECS_HEADS)),
        ("reynard_ecs_e2e", set(ECS_HEADS)),
        ("reynard", {MAIN_HEAD}),
        ("reynard_e2e", {MAIN_HEAD}),
    ):
        assert heads_of(pg_server.database_url(name).render_as_string(False)) == heads
    # Idempotent: a second run creates nothing and stays at head.
    assert (
        main(
            [
                "--project",
                str(project),
                "setup",
                "ecs",
                "--url",
                pg_server.database_url("reynard_ecs").render_as_string(False),
            ]
        )
        == 0
    )
    assert "created" not in capsys.readouterr().out


def test_upgrade_downgrade_current(
    project: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--project", str(project), "upgrade", "main", "--url", db_url]) == 0
    assert heads_of(db_url) == {MAIN_HEAD}
    assert (
        main(
            [
                "--project",
                str(project),
                "downgrade",
                "main",
                "--to",
                "3a1400000002",
                "--url",
                db_url,
            ]
        )
        == 0
    )
    assert heads_of(db_url) == {"3a1400000002"}
    assert main(["--project", str(project), "current", "main", "--url", db_url]) == 0
    assert "3a1400000002" in capsys.readouterr().out
    assert (
        main(["--project", str(project), "downgrade", "main", "--to", "base", "--url", db_url]) == 0
    )
    assert heads_of(db_url) == set()


def test_sql_prints_and_touches_nothing(
    project: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--project", str(project), "upgrade", "ecs", "--sql", "--url", db_url]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE entity" in out and "CREATE TYPE spirit_kind" in out
    assert scalar(db_url, "SELECT to_regclass('alembic_version')") is None


def test_an_ini_without_logging_sections_is_a_valid_ini(project: Path, cli: Cli) -> None:
    """Alembic needs only ``[alembic]``: ``alembic_env`` leaves logging alone without the
    logging sections (a stock ``env.py`` there is a one-line error: ``test_bad_input``)."""
    ini = project / "alembic_main.ini"
    ini.write_text(ini.read_text().split("[loggers]")[0])
    url = "postgresql://u@127.0.0.1:9/x"  # --sql connects to nothing
    code, out, err = cli("upgrade", "main", "--sql", "--url", url)
    assert code == 0, err
    assert "CREATE TABLE user_account" in out and "Traceback" not in err


def test_url_env_is_used_and_shell_value_restored(
    project: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["--project", str(project), "upgrade", "main"]) == 0
    assert heads_of(db_url) == {MAIN_HEAD}
    assert os.environ["DATABASE_URL"] == db_url


def test_copy_check_detects_a_revision_added_to_the_source_only(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--project", str(project), "copy", "--check"]) == 0
    new = write_revision(
        project / "alembic/ecs/versions/ecs", "ec5000000099", "ec5000000004", slug="extra"
    )
    assert main(["--project", str(project), "copy", "--check"]) == 1
    assert "ec5000000099_extra.py" in capsys.readouterr().out
    assert main(["--project", str(project), "copy", "ecs"]) == 0
    assert (project / "alembic/ecs_e2e/versions/ecs/ec5000000099_extra.py").read_bytes() == (
        new.read_bytes()
    )
    assert main(["--project", str(project), "copy", "--check"]) == 0


def test_create_on_a_branch_writes_into_its_folder(project: Path, cli: Cli) -> None:
    before = set((project / "alembic/ecs/versions/naming").iterdir())
    code, _out, err = cli("create", "ecs", "--branch", "naming", "-m", "x", "--empty")
    assert code == 0, err
    added = set((project / "alembic/ecs/versions/naming").iterdir()) - before
    assert len(added) == 1
    body = added.pop().read_text()
    assert "down_revision: str | Sequence[str] | None = '4a3e00000004'" in body


def test_create_needs_a_branch_when_there_are_several_heads(project: Path, cli: Cli) -> None:
    code, _, err = cli("create", "ecs", "-m", "x", "--empty")
    assert code == 2
    assert "3 heads" in err and "--branch" in err and "Traceback" not in err
    code, _, err = cli("create", "ecs", "-m", "x", "--empty", "--branch", "nope")
    assert code == 2 and "no branch labelled 'nope'" in err


def test_create_autogenerates_against_a_throwaway_database(project: Path, cli: Cli) -> None:
    """The models match main's heads: compared on a throw-away database, nothing to write."""
    code, out, err = cli("create", "main", "-m", "no change")
    assert (code, err) == (0, ""), out
    assert out.startswith("main: no changes detected between the models and heads"), out
    assert not list((project / "alembic/main/versions").glob("*_no_change.py"))


def test_two_upgrades_at_once_take_turns(project: Path, db_url: str) -> None:
    argv = [
        sys.executable,
        "-m",
        "pytest_reynard_db",
        "--project",
        str(project),
        "upgrade",
        "ecs",
        "--url",
        db_url,
    ]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [p.communicate(timeout=300) for p in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), results
    assert heads_of(db_url) == set(ECS_HEADS)
    # The seed data migration ran exactly once.
    assert scalar(db_url, "SELECT count(*) FROM spirit") == 8


def test_failing_migration_leaves_the_last_good_revision(
    project: Path, db_url: str, cli: Cli
) -> None:
    write_revision(
        project / "alembic/main/versions",
        "3a1400000005",
        "3a1400000004",
        'op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))\n'
        'op.execute("SELECT no_such_function()")',
        'op.drop_table("half_done")',
        slug="broken",
    )
    code, _, err = cli("upgrade", "main", "--url", db_url)
    assert code == 1
    assert "3a1400000005_broken.py" in err and "no_such_function" in err
    assert "database left at 3a1400000004" in err and "Traceback" not in err
    assert heads_of(db_url) == {MAIN_HEAD}
    assert scalar(db_url, "SELECT to_regclass('half_done')") is None


def test_read_only_verbs(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--project", str(project), "list"]) == 0
    listing = capsys.readouterr().out
    assert "ecs_e2e  reynard_ecs_e2e" in listing and " ".join(ECS_HEADS) in listing
    assert main(["--project", str(project), "heads", "ecs"]) == 0
    assert capsys.readouterr().out.count("(head)") == 3
    assert main(["--project", str(project), "history", "main"]) == 0
    assert "<base> -> 3a1400000001" in capsys.readouterr().out
    assert main(["--project", str(project), "graph", "ecs", "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith("digraph")


def test_seed_scripts_are_shims(project: Path) -> None:
    shutil.copytree(REPO / "scripts", project / "scripts")
    for script, args in (("migrate.py", ["history", "ecs"]), ("copy_migrations.py", ["--check"])):
        result = subprocess.run(
            [sys.executable, f"scripts/{script}", *args],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
    migrate = subprocess.run(
        [
            sys.executable,
            "scripts/migrate.py",
            "create",
            "main",
            "--message",
            "via shim",
            "--empty",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert list((project / "alembic/main/versions").glob("*_via_shim.py"))


def test_one_broken_entry_does_not_stop_verbs_on_the_others(project: Path, cli: Cli) -> None:
    """``heads ecs`` works when ``ecs_e2e``'s ini is broken; ``list`` shows the broken one
    with its reason and exits 2; a versions folder git dropped is a warning."""
    (project / "alembic_ecs_e2e.ini").write_text("[alembic\nscript_location = x\n")
    main_ini = project / "alembic_main.ini"
    main_ini.write_text(
        main_ini.read_text().replace(
            "version_locations = %(here)s/alembic/main/versions",
            "version_locations = %(here)s/alembic/main/versions:%(here)s/alembic/main/gone",
        )
    )
    code, out, err = cli("heads", "ecs")
    assert code == 0 and "ec5000000004" in out, out + err
    code, out, err = cli("list")
    assert code == 2, out + err
    assert re.search(r"^ecs_e2e .*error: .*alembic_ecs_e2e\.ini: unreadable ini", out, re.M), out
    assert re.search(r"^ecs +reynard_ecs ", out, re.M), out
    assert "warning: " in err and "alembic/main/gone" in err, err
    code, out, err = cli("heads", "ecs_e2e")
    assert code == 2 and "unreadable ini" in err and "Traceback" not in err, err


def test_current_reads_the_version_table_env_py_configures(
    project: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``current`` is ``alembic current``: the revision is read from the table env.py names
    (mlflow's auth tree keeps ``alembic_version_auth``), not Alembic's default one. It read
    ``alembic_version``, and said the database was at base."""
    env_py = project / "alembic/main/env.py"
    body = env_py.read_text()
    assert 'default_url_env="DATABASE_URL")' in body
    env_py.write_text(body.replace(")\n", ', version_table="reynard_version")\n'))
    argv = ["--project", str(project)]
    assert main([*argv, "current", "main", "--url", db_url]) == 0
    assert capsys.readouterr().out == "main: base (no revision applied)\n"
    assert scalar(db_url, "SELECT to_regclass('reynard_version')") is None  # read, not made
    assert main([*argv, "upgrade", "main", "--to", "3a1400000002", "--url", db_url]) == 0
    assert scalar(db_url, "SELECT version_num FROM reynard_version") == "3a1400000002"
    capsys.readouterr()

    assert main([*argv, "current", "main", "--url", db_url]) == 0

    out, err = capsys.readouterr()
    assert out.strip().startswith("3a1400000002"), out
    assert err == "", err
    assert scalar(db_url, "SELECT to_regclass('alembic_version')") is None  # nothing written
