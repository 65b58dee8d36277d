"""Tests stay isolated: a test that ends ``reynard_db_connection``'s outer transaction
itself (issue 12), run as users run it, in an inner pytest session."""

from __future__ import annotations

import pytest


def test_a_test_that_really_commits_fails_and_later_tests_get_a_clean_database(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_commits="""
        from sqlalchemy import text

        LEAKED = "SELECT count(*) FROM world WHERE name LIKE 'leaked%'"

        def test_raw_commit(reynard_db_connection):
            reynard_db_connection.execute(text("INSERT INTO world (name) VALUES ('leaked1')"))
            reynard_db_connection.execute(text("COMMIT"))
            reynard_db_connection.execute(text("INSERT INTO world (name) VALUES ('after')"))

        def test_after_raw_commit(reynard_db_connection):
            assert reynard_db_connection.execute(text(LEAKED)).scalar() == 0

        def test_dbapi_commit(reynard_db_connection):
            reynard_db_connection.execute(text("INSERT INTO world (name) VALUES ('leaked2')"))
            reynard_db_connection.connection.commit()

        def test_after_dbapi_commit(reynard_db, reynard_db_connection):
            assert reynard_db_connection.execute(text(LEAKED)).scalar() == 0
            with reynard_db.engine.connect() as other:  # a connection of its own sees it too
                assert other.execute(text(LEAKED)).scalar() == 0

        def test_orm_session_raw_commit(reynard_db_session):
            reynard_db_session.execute(text("INSERT INTO world (name) VALUES ('leaked3')"))
            reynard_db_session.execute(text("COMMIT"))

        def test_savepoint_commits_are_fine(reynard_db_connection, reynard_db_session):
            reynard_db_connection.execute(text("INSERT INTO world (name) VALUES ('kept')"))
            reynard_db_connection.commit()
            reynard_db_session.commit()
            assert reynard_db_connection.execute(text(LEAKED)).scalar() == 0

        def test_a_failed_statement_is_fine(reynard_db_connection):
            try:
                reynard_db_connection.execute(text("SELECT no_such_column FROM world"))
            except Exception:
                pass
        """
    )
    result = pytester.runpytest("--reynard-db=ecs_e2e")
    result.assert_outcomes(passed=7, errors=3)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_raw_commit*",
            "*reynard_db_connection: test_raw_commit ended the outer transaction itself*replaced*",
        ]
    )
    for name in ("test_dbapi_commit", "test_orm_session_raw_commit"):
        result.stdout.fnmatch_lines([f"*ERROR at teardown of {name}*"])
    out = result.stdout.str()
    assert "ERROR at teardown of test_a_failed_statement_is_fine" not in out
    assert "ERROR at teardown of test_savepoint_commits_are_fine" not in out
