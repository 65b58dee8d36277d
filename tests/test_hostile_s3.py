"""Hostile tests of the features added on 2026-11-27 (shared servers, ``server`` verbs,
authoring verbs, check isolation): each one an attack that worked once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from pytest_reynard_db.postgres import EphemeralServer, ExistingServer
from pytest_reynard_db.postgres.server import connect_args
from pytest_reynard_db.postgres.shared import (
    TEMPLATE_COMMENT,
    RunPresence,
    drop_dead_runs,
    prune_templates,
)


@pytest.fixture
def shared() -> Iterator[EphemeralServer]:
    with EphemeralServer.start() as server:
        yield server


def sql(server: EphemeralServer, *statements: str) -> None:
    with psycopg.connect(**connect_args(server.url), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def databases(server: EphemeralServer) -> set[str]:
    with psycopg.connect(**connect_args(server.url), autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


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
        time.sleep(2.5)
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
