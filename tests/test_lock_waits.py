"""Waiting for locks: never in silence, never forever, and on the right lock.

Real ``reynard-migrate`` processes against a real server: the migration lock is
one per physical database (two registry names on it take turns), a wait says
who holds the lock, ``--lock-timeout`` ends it with one line, and two ``setup``
at once on a missing database both succeed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
from cli_fork import cli_argv
from reynard_trees import (
    clean_env,
    copy_reynard_trees,
    hold_file_lock,
    scalar,
    wait_for,
    wait_until,
    write_revision,
)
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from pytest_reynard_db.migration.target import advisory_lock_key, migration_lock_held
from pytest_reynard_db.postgres import EphemeralServer

MAIN_HEAD = "3a1400000004"
SLOW = "3a1400000005"
# Writes a marker, then waits (in Python, holding the migration lock) for a release file.
SLOW_UPGRADE = """\
import os, pathlib, time
pathlib.Path(os.environ["SLOW_MARKER"]).write_text("migrating")
deadline = time.monotonic() + 120
while not pathlib.Path(os.environ["SLOW_RELEASE"]).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
op.create_table("took_turns", sa.Column("id", sa.Integer, primary_key=True))
"""


def fresh_url(server: EphemeralServer, name: str) -> str:
    server.drop_database(name)
    return server.create_database(name).render_as_string(hide_password=False)


def test_two_registry_names_on_one_database_take_turns_and_a_wait_names_the_holder(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    project = copy_reynard_trees(tmp_path / "project")
    for tree in ("main", "e2e"):  # e2e mirrors main: the same revision in both
        write_revision(project / f"alembic/{tree}/versions", SLOW, MAIN_HEAD, SLOW_UPGRADE)
    url = fresh_url(pg_server, "test_lock_turns")
    marker, release = tmp_path / "marker", tmp_path / "release"
    env = clean_env(SLOW_MARKER=str(marker), SLOW_RELEASE=str(release))
    first = subprocess.Popen(
        cli_argv(project, "upgrade", "main", "--url", url),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second: subprocess.Popen[str] | None = None
    try:
        wait_for(marker, first)  # `upgrade main` holds the lock, mid-migration

        # Another registry name, the same physical database: it waits, says for
        # whom, and gives up after --lock-timeout with one line (exit 1).
        impatient = subprocess.run(
            cli_argv(project, "upgrade", "e2e", "--url", url, "--lock-timeout", "3"),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert impatient.returncode == 1, impatient.stdout + impatient.stderr
        lines = impatient.stderr.strip().splitlines()
        assert len(lines) == 2, impatient.stderr
        waiting, gave_up = lines
        assert "waiting for the migration lock of database 'e2e'" in waiting
        assert "application_name 'reynard-db main'" in waiting, waiting
        assert "state '" in waiting and "pid " in waiting, waiting
        assert "query started 20" in waiting, waiting
        assert gave_up.startswith("reynard-migrate: error: gave up waiting for the migration lock")
        assert "after 3 s (--lock-timeout)" in gave_up and "reynard-db main" in gave_up

        # A patient one waits on the lock (PostgreSQL shows it waiting) and then
        # finds the revision applied: it ran once.
        second = subprocess.Popen(
            cli_argv(project, "upgrade", "e2e", "--url", url),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: bool(
                scalar(
                    url,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                )
            ),
            60,
            "upgrade e2e waiting on the lock upgrade main holds",
        )
    finally:
        release.write_text("go")
    outcomes = [p.communicate(timeout=120) for p in (first, second) if p is not None]
    assert first.returncode == 0, outcomes[0]
    assert second is not None and second.returncode == 0, outcomes[1]
    assert scalar(url, "SELECT version_num FROM alembic_version") == SLOW
    assert scalar(url, "SELECT to_regclass('took_turns')::text") == "took_turns"


def test_two_setups_at_once_on_a_missing_database_both_succeed(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    project = copy_reynard_trees(tmp_path / "project")
    pg_server.drop_database("test_setup_race")
    url = pg_server.database_url("test_setup_race").render_as_string(hide_password=False)
    admin = pg_server.url.render_as_string(hide_password=False).replace("+psycopg", "")
    # Both look, find no database, and reach CREATE DATABASE together: held there by
    # a lock on pg_database until both wait on it (the race, made certain).
    with psycopg.connect(admin) as gate:
        gate.execute("LOCK TABLE pg_database IN SHARE MODE")
        setups = [
            subprocess.Popen(
                cli_argv(project, "setup", "main", "--url", url),
                env=clean_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]

        def both_waiting() -> bool:
            ended = [p for p in setups if p.poll() is not None]
            if ended:  # what it said, not a wait for a lock it will never ask for
                out, err = ended[0].communicate()
                pytest.fail(
                    f"a setup ended (exit {ended[0].returncode}) before the race:\n{out}{err}"
                )
            # client backends only: an autovacuum worker of pg_database (the suite creates
            # and drops many databases on this server) waits on the gate too, and made the
            # count 3 for good (CI's run of 7c660f0)
            return bool(
                scalar(
                    admin,
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                    "WHERE NOT l.granted AND l.relation = 'pg_database'::regclass "
                    "AND a.backend_type = 'client backend'",
                )
                == 2
            )

        try:
            wait_until(both_waiting, 60, "both setups waiting at CREATE DATABASE")
        except BaseException:
            for setup in setups:
                setup.kill()
            raise
        finally:
            gate.rollback()
    outcomes = [p.communicate(timeout=120) for p in setups]
    for setup, (out, err) in zip(setups, outcomes, strict=True):
        assert setup.returncode == 0, out + err
        assert "duplicate key" not in err
    assert sum("created" in out for out, _ in outcomes) == 1, outcomes
    assert scalar(url, "SELECT version_num FROM alembic_version") == MAIN_HEAD


def test_a_file_lock_wait_names_its_holder_and_gives_up_after_the_timeout(tmp_path: Path) -> None:
    """The lock around template builds (and the reuse server's, and the initdb cache's)."""
    from pytest_reynard_db.foundation.errors import LockTimeout
    from pytest_reynard_db.foundation.filesystem import file_lock

    lock, marker, release = tmp_path / "tpl.lock", tmp_path / "marker", tmp_path / "release"
    holder = hold_file_lock(lock, marker, release, "a template build")
    try:
        said: list[str] = []
        with (
            pytest.raises(LockTimeout) as raised,
            file_lock(lock, "the build of template test_tpl_x", timeout=3, say=said.append),
        ):
            pytest.fail("acquired a lock another process holds")
        assert len(said) == 1, said
        waiting = f"waiting for the build of template test_tpl_x ({lock}), held by pid {holder.pid}"
        assert waiting in said[0], said
        message = str(raised.value)
        assert "after 3 s (--lock-timeout)" in message and f"pid {holder.pid}" in message
        assert "\n" not in message
    finally:
        release.write_text("go")
        holder.communicate(timeout=60)
    with file_lock(lock, "the build of template test_tpl_x", timeout=30):
        pass  # released by its holder: taken at once


def test_a_lock_whose_session_the_server_ended_is_left_to_the_server(
    pg_server: EphemeralServer,
) -> None:
    """The session holding the migration lock ended by the server (its stop while a check
    child is interrupted, ``pg_terminate_backend``): PostgreSQL released the lock with
    it, and the block's end tried again on the dead connection. Under load, Ctrl-C to
    ``reynard-migrate check`` printed that AdminShutdown's traceback ("Exception ignored
    in: <generator object MigrationManager.locked>") above "interrupted" (a -n 3 run of
    ``test_ctrl_c_to_a_check_of_every_database_is_one_line``)."""
    url = pg_server.create_database("test_lock_session_ended")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            with migration_lock_held(connection, where="database 'app'", timeout=5):
                backend = connection.execute(text("SELECT pg_backend_pid()")).scalar()
                with pg_server.admin() as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
            assert connection.invalidated
        with engine.connect() as other:  # free: the server released it
            key = {"key": advisory_lock_key()}
            assert other.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar()
    finally:
        engine.dispose()
        pg_server.drop_database("test_lock_session_ended")
