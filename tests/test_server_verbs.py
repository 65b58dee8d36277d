"""``reynard-migrate server status|stop|prune``: their output and exit codes.

The reuse server lives in a runtime directory of the test's own
(``$REYNARD_DB_RUNTIME_DIR``), so the verbs never see another run's kept server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fork import run_cli, run_pytest_argv
from reynard_trees import clean_env, reynard_project, write_revision

from pytest_reynard_db.postgres import EphemeralServer, find_binaries
from pytest_reynard_db.postgres.binaries import describe


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = reynard_project(tmp_path / "project")
    (root / "test_a.py").write_text("def test_a(reynard_db):\n    pass\n")
    return root


def run(project: Path, runtime: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_pytest_argv(  # a pytest run forked, reynard-migrate's started
        argv, project, clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime)), timeout=120
    )


def cli(project: Path, runtime: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``reynard-migrate --project PROJECT ARGS`` (forked: ``cli_fork.run_cli``)."""
    env = clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime))
    code, out, err = run_cli(project, *args, env=env)
    return subprocess.CompletedProcess(args, code, out, err)


def run_pytest(project: Path, runtime: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pytest test_a.py`` against ``main`` in the project, as a user runs it."""
    pytest_argv = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "--reynard-db=main")
    return run(project, runtime, sys.executable, *pytest_argv, *args, "test_a.py")


def pytest_reuse(project: Path, runtime: Path) -> None:
    result = run_pytest(project, runtime, "--reynard-db-reuse")
    assert result.returncode == 0, result.stdout + result.stderr


def test_status_stop_and_prune_of_the_reuse_server(project: Path, runtime: Path) -> None:
    result = cli(project, runtime, "server", "status")
    assert (result.returncode, result.stderr) == (0, "")
    # Which PostgreSQL the kept server runs (issue 24): the binaries found now name it.
    binaries = [f"binaries: {line}" for line in describe(find_binaries())]
    assert binaries[0].startswith("binaries: PostgreSQL ") and " from " in binaries[0]
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"reuse server: not running \(.*/reuse-[0-9a-f]{12}\)", lines[0])
    assert lines[1:] == binaries

    pytest_reuse(project, runtime)
    write_revision(project / "alembic/main/versions", "3a1400000005", "3a1400000004", slug="more")
    pytest_reuse(project, runtime)  # a second template: the tree changed

    status = cli(project, runtime, "server", "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert re.fullmatch(r"reuse server: running, pid \d+, port \d+ \(.*\)", lines[0])
    assert lines[1 : 1 + len(binaries)] == binaries
    del lines[1 : 1 + len(binaries)]
    assert lines[1:4] == ["runs: none", "templates: 2", lines[3]]
    assert lines[3].split() == ["template", "last", "used", "tree"]
    kinds = sorted(line.split()[-1] for line in lines[4:])
    assert kinds == ["current", "digest"], status.stdout  # "old digest"
    old = next(line.split()[0] for line in lines[4:] if line.endswith("old digest"))

    prune = cli(project, runtime, "server", "prune")
    assert prune.returncode == 0, prune.stderr
    assert prune.stdout == f"dropped {old}\npruned 1 database\n"
    assert "old digest" not in cli(project, runtime, "server", "status").stdout

    # A run using it (a record whose owner is alive: this process) keeps it running.
    records = next(p for p in runtime.glob("reuse-*") if p.is_dir()) / "runs"
    (records / "live.json").write_text(f'{{"pid": {os.getpid()}, "start": "unknown"}}')
    refused = cli(project, runtime, "server", "stop")
    assert refused.returncode == 1
    assert refused.stderr.startswith("reynard-migrate: error: reuse server ")
    assert f"is in use by the run(s) of pid {os.getpid()}; stop it when they end" in refused.stderr
    (records / "live.json").unlink()

    stop = cli(project, runtime, "server", "stop")
    assert stop.returncode == 0, stop.stderr
    assert re.fullmatch(r"reuse server: stopped \(pid \d+, port \d+\); removed .*\n", stop.stdout)
    assert not [p for p in runtime.glob("reuse-*") if p.is_dir()]
    again = cli(project, runtime, "server", "stop")
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_a_shared_server_status_and_prune(project: Path, runtime: Path) -> None:
    with EphemeralServer.start() as server:  # its own: other tests leave templates on theirs
        shared_server_status_and_prune(project, runtime, server)


def shared_server_status_and_prune(
    project: Path, runtime: Path, pg_server: EphemeralServer
) -> None:
    url = pg_server.url.render_as_string(hide_password=False)
    result = run_pytest(project, runtime, f"--reynard-db-url={url}")
    assert result.returncode == 0, result.stdout
    status = cli(project, runtime, "server", "status", "--url", url)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[:3] == [
        f"shared server postgresql+psycopg://postgres@127.0.0.1:{pg_server.url.port}/postgres: "
        f"PostgreSQL {pg_server.version}",
        "runs: none",
        "templates: 1",
    ]
    assert status.stdout.splitlines()[-1].endswith("current")
    # Current templates stay; one unused for 0 days goes.
    assert cli(project, runtime, "server", "prune", "--url", url).stdout == "pruned 0 databases\n"
    pruned = cli(project, runtime, "server", "prune", "--url", url, "--older-than", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert re.fullmatch(r"dropped test_tpl_main_[0-9a-f]{12}\npruned 1 database\n", pruned.stdout)

    stop = cli(project, runtime, "server", "stop", "--url", url)
    assert stop.returncode == 2
    assert stop.stderr == (
        "reynard-migrate: error: server stop --url: a shared server is not ours to stop\n"
    )


def test_bad_input_is_one_line_and_exit_2(project: Path, runtime: Path) -> None:
    for args, message in (
        (("prune", "--older-than", "-1"), "server prune --older-than -1: prune takes DAYS ≥ 0"),
        (("status", "--url", "not a url"), "--url: malformed database URL 'not a url'"),
        (
            ("status", "--url", "postgresql://u:secret@127.0.0.1:1/postgres"),
            "cannot connect to postgresql+psycopg://u:***@127.0.0.1:1/postgres: ",
        ),
    ):
        result = cli(project, runtime, "server", *args)
        assert result.returncode == 2, result
        assert result.stderr.startswith(f"reynard-migrate: error: {message}"), result.stderr
        assert result.stderr.count("\n") == 1 and "secret" not in result.stderr


TWO_TEMPLATES = """
def test_at_heads(reynard_db):
    pass

def test_at_an_older_revision(reynard_db_factory):
    reynard_db_factory("main", "3a1400000002")
"""


def tree_kinds(status: str) -> dict[str, str]:
    """``server status``: each template's name and what it says of its tree."""
    rows = status.split("last used", 1)[1].splitlines()[1:]
    return {row.split()[0]: row.split("  ")[-1].strip() for row in rows if row.strip()}


def test_two_projects_on_one_shared_server_never_prune_each_others_templates(
    tmp_path: Path, runtime: Path
) -> None:
    """Both register a database ``main`` (a template named by the database alone was
    taken for the other's: pruned as "old digest"); a project's template at an older
    revision (``reynard_db_factory``) is of its current tree."""
    mine = reynard_project(tmp_path / "mine")
    theirs = reynard_project(tmp_path / "theirs")
    (mine / "test_a.py").write_text(TWO_TEMPLATES)
    (theirs / "test_a.py").write_text("def test_a(reynard_db):\n    pass\n")
    write_revision(theirs / "alembic/main/versions", "3a1400000005", "3a1400000004", slug="more")
    with EphemeralServer.start() as server:
        url = server.url.render_as_string(hide_password=False)
        for project in (mine, theirs):
            result = run_pytest(project, runtime, f"--reynard-db-url={url}")
            assert result.returncode == 0, result.stdout + result.stderr
        status = cli(mine, runtime, "server", "status", "--url", url)
        assert status.returncode == 0, status.stderr
        kinds = tree_kinds(status.stdout)
        assert sorted(kinds.values()) == ["another project", "current", "current"], status.stdout
        theirs_template = next(name for name, kind in kinds.items() if kind == "another project")
        mine_templates = set(kinds) - {theirs_template}

        for project in (mine, theirs):
            pruned = cli(project, runtime, "server", "prune", "--url", url)
            assert (pruned.returncode, pruned.stdout) == (0, "pruned 0 databases\n"), pruned
            assert pruned.stderr == ""

        # Its tree changed: its own old templates go, never the other project's.
        write_revision(mine / "alembic/main/versions", "3a1400000006", "3a1400000004", slug="x")
        kinds = tree_kinds(cli(mine, runtime, "server", "status", "--url", url).stdout)
        assert kinds == {
            **dict.fromkeys(mine_templates, "old digest"),
            theirs_template: ("another project"),
        }
        pruned = cli(mine, runtime, "server", "prune", "--url", url)
        assert pruned.returncode == 0, pruned.stderr
        assert sorted(pruned.stdout.splitlines()) == sorted(
            [*(f"dropped {name}" for name in mine_templates), "pruned 2 databases"]
        )
        after = tree_kinds(cli(theirs, runtime, "server", "status", "--url", url).stdout)
        assert after == {theirs_template: "current"}
