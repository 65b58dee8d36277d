"""Hostile tests of the features added on 2026-11-27 (shared servers, ``server`` verbs,
authoring verbs, check isolation): each one an attack that worked once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cli_fork import run_cli
from reynard_trees import clean_env, databases, reynard_project, server_tmp, wait_until

from pytest_reynard_db import load_registry
from pytest_reynard_db.cli import server_admin
from pytest_reynard_db.foundation.errors import CheckFailed
from pytest_reynard_db.postgres import EphemeralServer, ExistingServer
from pytest_reynard_db.postgres.executor import kept_at, reusable_server
from pytest_reynard_db.postgres.reaper import stop_postmaster
from pytest_reynard_db.postgres.server import connect_args
from pytest_reynard_db.postgres.shared import (
    RUN_APP_PREFIX,
    TEMPLATE_COMMENT,
    RunPresence,
    drop_dead_runs,
    prune_templates,
)
from pytest_reynard_db.provisioning.resolve import project_identity


@pytest.fixture
def shared() -> Iterator[EphemeralServer]:
    with EphemeralServer.start() as server:
        yield server


def sql(server: EphemeralServer, *statements: str) -> None:
    with psycopg.connect(**connect_args(server.url), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def idle_for(server: EphemeralServer, run: str, seconds: float) -> bool:
    """Run ``run``'s presence session has been idle more than ``seconds`` (as
    ``live_runs`` measures it), by the server's clock; False once it has no session."""
    with server.connect() as conn:
        [(idle,)] = conn.execute(
            "SELECT min(EXTRACT(EPOCH FROM now() - GREATEST("
            "backend_start, xact_start, query_start, state_change)))::float8 "
            "FROM pg_stat_activity WHERE application_name LIKE %s",
            [f"{RUN_APP_PREFIX}{run} %"],
        ).fetchall()
    return idle is not None and idle > seconds


def test_a_run_with_a_shorter_stale_setting_never_drops_a_live_runs_databases(
    shared: EphemeralServer,
) -> None:
    # Run A: alive, default heartbeat (20 s). Run B was given $REYNARD_DB_STALE_AFTER=1.
    presence = RunPresence(ExistingServer(shared.url), "aaaaaaaa", "main").start()
    try:
        live = "test_main_aaaaaaaa_main_fresh1"
        dead = "test_main_cccccccc_main_fresh1"  # a run killed with -9: no session
        ExistingServer(shared.url).create_database(live)
        ExistingServer(shared.url).create_database(dead)
        wait_until(lambda: idle_for(shared, "aaaaaaaa", 1.5), 30, "run A idle past B's 1 s")
        dropped = drop_dead_runs(ExistingServer(shared.url), "bbbbbbbb", stale=1)
        assert dropped == [dead]
        assert live in databases(shared)
    finally:
        presence.close()


def test_a_users_database_named_like_a_runs_is_never_dropped(shared: EphemeralServer) -> None:
    # The user's own database, same role, a name that fits test_<db>_<8 hex>_main_<word><n>.
    sql(shared, "CREATE DATABASE test_app_0badf00d_main_fixture1")
    assert drop_dead_runs(ExistingServer(shared.url), "bbbbbbbb", stale=0) == []
    assert "test_app_0badf00d_main_fixture1" in databases(shared)


def test_the_drop_of_a_runs_databases_keeps_to_test_names(shared: EphemeralServer) -> None:
    """``drop_run`` (a run's end on a shared server) matched ``test_`` with LIKE's ``_``
    a wildcard: a user's ``testx_...`` database carrying the run id was dropped, though
    on an existing server only ``test_*`` databases are ever ours (review13)."""
    sql(shared, "CREATE DATABASE testx_0badf00d_keep", "CREATE DATABASE test_app_0badf00d_main_db1")
    server = ExistingServer(shared.url)
    try:
        assert server.drop_run("0badf00d") == ["test_app_0badf00d_main_db1"]
    finally:
        server.close()
    assert "testx_0badf00d_keep" in databases(shared)
    assert "test_app_0badf00d_main_db1" not in databases(shared)


def test_prune_never_drops_another_roles_template(shared: EphemeralServer) -> None:
    # A superuser admin URL (a CI service container's postgres) sees every role's templates.
    sql(
        shared,
        "CREATE ROLE other LOGIN CREATEDB",
        "CREATE DATABASE test_tpl_other_deadbeef OWNER other",
        f"COMMENT ON DATABASE test_tpl_other_deadbeef IS '{TEMPLATE_COMMENT}; used 1; run 12'",
    )
    assert prune_templates(ExistingServer(shared.url), max_age=0) == []
    assert prune_templates(ExistingServer(shared.url), max_age=None) == []
    assert "test_tpl_other_deadbeef" in databases(shared)


def slow_env_py(root: Path, *databases: str, seconds: float = 30) -> None:
    for name in databases:
        env_py = root / "alembic" / name / "env.py"
        env_py.write_text(f"import time\ntime.sleep({seconds})\n" + env_py.read_text())


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def test_kill_9_of_check_ends_its_child_interpreter_which_drops_its_databases(
    shared: EphemeralServer, tmp_path: Path
) -> None:
    root = reynard_project(tmp_path / "project")
    slow_env_py(root, "main", "ecs")
    url = shared.url.render_as_string(hide_password=False)
    check = subprocess.Popen(
        [sys.executable, "-m", "pytest_reynard_db", "check", "main", "ecs", "--url", url],
        cwd=root,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr").open("w"),  # a pipe would wait for the child's end
    )
    wait_until(
        lambda: check.poll() is not None or databases(shared, "test_check_%"),
        60,
        "the check's throw-away database",
    )
    assert check.poll() is None, (tmp_path / "stderr").read_text()
    kids = children(check.pid)  # one per database, forked ahead: one runs, one waits
    assert kids
    check.kill()
    check.wait()
    try:
        wait_until(
            lambda: not any(Path(f"/proc/{child}").exists() for child in kids),
            10,
            "the check's children to end with it (not to run on for no one)",
        )
    finally:
        for child in kids:
            if Path(f"/proc/{child}").exists():
                os.kill(child, signal.SIGKILL)
    assert not {n for n in databases(shared) if n.startswith("test_check_")}
    stderr = (tmp_path / "stderr").read_text()
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize("dbs", [["main"], ["main", "ecs"]], ids=["in-process", "isolated"])
def test_what_env_py_prints_never_mixes_into_check_json(tmp_path: Path, dbs: list[str]) -> None:
    root = reynard_project(tmp_path / "project")
    for name in dbs:
        env_py = root / "alembic" / name / "env.py"
        body = "import os\nprint('PRINTED')\nos.write(1, b'FD1\\n')\n"
        env_py.write_text(body + env_py.read_text())
    code, stdout, stderr = run_cli(root, "check", *dbs, "--only", "upgrade", "--format", "json")
    assert code == 0, stderr
    assert [r["check"] for r in json.loads(stdout)["results"]] == ["upgrade"] * len(dbs)
    assert stderr.count("PRINTED") == stderr.count("FD1") == len(dbs)


def test_server_stop_never_stops_the_reuse_server_a_run_just_attached_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The run's record used to be written after the reuse lock was released: a
    # `server stop` in between stopped the server under the run.
    runtime = server_tmp("reynard-hostile-")
    runtime.chmod(0o711)
    monkeypatch.setenv("REYNARD_DB_RUNTIME_DIR", str(runtime))
    try:
        process = reusable_server(run_id="0123abcd")
        assert process.port is not None
        with pytest.raises(CheckFailed, match="in use"):
            server_admin.stop()
        assert process.base_dir is not None and kept_at(process.base_dir).running
    finally:
        for data in runtime.glob("reuse-*/data"):
            stop_postmaster(data)
        shutil.rmtree(runtime, ignore_errors=True)


def test_a_servers_idle_session_timeout_never_makes_a_live_run_look_dead() -> None:
    # A managed server ending idle sessions after 2 s; the run beats every 5 s.
    with EphemeralServer.start(settings=["idle_session_timeout=2s"]) as server:
        presence = RunPresence(ExistingServer(server.url), "aaaaaaaa", "main", heartbeat=5)
        presence.start()
        try:
            live = "test_main_aaaaaaaa_main_fresh1"
            ExistingServer(server.url).create_database(live)
            wait_until(
                lambda: idle_for(server, "aaaaaaaa", 3),
                30,
                "run A's session idle past the server's idle_session_timeout, and kept",
            )
            assert drop_dead_runs(ExistingServer(server.url), "bbbbbbbb", stale=120) == []
            assert live in databases(server)
        finally:
            presence.close()


def test_prune_of_old_digests_leaves_another_projects_templates(
    shared: EphemeralServer, tmp_path: Path
) -> None:
    # One role, two projects on a CI service container, both with a database `main`:
    # `server prune --url` (no --older-than) drops this project's old digests, never the
    # other project's templates (current to it), nor one whose project is not recorded.
    registry = load_registry(reynard_project(tmp_path / "project"))
    ours, theirs = project_identity(registry), "0" * 12
    comment = f"{TEMPLATE_COMMENT}; used 1; run 12; tree ffffffffffff; projects"
    sql(
        shared,
        "CREATE DATABASE test_tpl_main_0123456789ab",
        "CREATE DATABASE test_tpl_main_0123456789ac",
        "CREATE DATABASE test_tpl_main_0123456789ad",
        "CREATE DATABASE test_tpl_billing_0123456789ab",
        f"COMMENT ON DATABASE test_tpl_main_0123456789ab IS '{comment} {ours}'",
        f"COMMENT ON DATABASE test_tpl_main_0123456789ac IS '{comment} {theirs}'",
        f"COMMENT ON DATABASE test_tpl_main_0123456789ad IS '{TEMPLATE_COMMENT}; used 1; run 12'",
        f"COMMENT ON DATABASE test_tpl_billing_0123456789ab IS '{comment} {theirs} {ours}'",
    )
    url = shared.url.render_as_string(hide_password=False)
    assert server_admin.prune(registry, url, None) == ["test_tpl_main_0123456789ab"]
    left = databases(shared)
    assert {"test_tpl_main_0123456789ac", "test_tpl_main_0123456789ad"} <= left
    assert "test_tpl_billing_0123456789ab" in left


def test_a_database_a_killed_run_left_unmarked_goes_with_its_marked_ones(
    shared: EphemeralServer,
) -> None:
    # Killed during CREATE DATABASE of its clone made ahead (seen in CI): fresh2 exists,
    # but the run died before marking it. Its marked fresh1 says whose it is.
    server = ExistingServer(shared.url)
    server.create_database("test_main_cccccccc_main_fresh1")  # marked by create_database
    sql(
        shared,
        "CREATE DATABASE test_main_cccccccc_main_fresh2",  # unmarked: the kill came first
        "CREATE DATABASE test_app_0badf00d_main_fixture1",  # a user's look-alike, alone
    )
    dropped = drop_dead_runs(ExistingServer(shared.url), "bbbbbbbb", stale=0)
    assert sorted(dropped) == ["test_main_cccccccc_main_fresh1", "test_main_cccccccc_main_fresh2"]
    assert "test_app_0badf00d_main_fixture1" in databases(shared)
