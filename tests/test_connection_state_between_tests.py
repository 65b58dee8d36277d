"""What one test leaves on ``reynard_db_connection``'s connection (hostile fixtures round
20): the next test that gets the same pooled connection starts as on a new one.

A rollback ends what is transactional; a session-level advisory lock and a ``PREPARE``
are not, and outlived the test (a job runner's ``pg_try_advisory_lock`` then said
"another worker runs it"; a second ``PREPARE`` of the name failed). And the fixture's own
statements at teardown must not take options the test set on the connection:
``execution_options(stream_results=True)`` (the documented way to stream a result) made
them server-side cursors, ``DECLARE ... CURSOR FOR ROLLBACK ...``, a syntax error read as
the test having ended the outer transaction itself.
"""

from __future__ import annotations

import pytest

SESSION_STATE = """
import pytest
from sqlalchemy import text

HELD = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
)
PREPARED = text("SELECT count(*) FROM pg_prepared_statements WHERE name = 'mine'")


# Each runs twice: whichever runs second would find the first's lock and statement.
@pytest.mark.parametrize("run", [1, 2])
def test_session_state(reynard_db_connection, run):
    assert reynard_db_connection.execute(HELD).scalar() == 0
    assert reynard_db_connection.execute(PREPARED).scalar() == 0
    reynard_db_connection.execute(text("SELECT pg_advisory_lock(42)"))
    reynard_db_connection.execute(text("PREPARE mine AS SELECT 1"))
    reynard_db_connection.commit()
    assert reynard_db_connection.execute(HELD).scalar() == 1
"""

STREAMED = """
from sqlalchemy import text


def test_streamed(reynard_db_connection):
    streaming = reynard_db_connection.execution_options(stream_results=True)
    rows = streaming.execute(text("SELECT generate_series(1, 1000)")).all()
    assert len(rows) == 1000
    reynard_db_connection.commit()  # a savepoint, sent on the same connection


def test_after(reynard_db_connection):
    assert reynard_db_connection.execute(text("SELECT 1")).scalar() == 1
"""


def test_advisory_locks_and_prepared_statements_end_with_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_state=SESSION_STATE)
    result = pytester.runpytest("--reynard-db=main")
    result.assert_outcomes(passed=2)


def test_a_streamed_result_leaves_the_fixtures_own_statements_alone(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_streamed=STREAMED)
    result = pytester.runpytest("--reynard-db=main")
    result.assert_outcomes(passed=2)
    assert "outer transaction" not in result.stdout.str()


CLOSED = """
from sqlalchemy import text


def save(connection):  # application code that owns the connection it is handed
    with connection:
        connection.execute(text("CREATE TABLE mine (id int)"))


def test_closes_it(reynard_db_connection):
    save(reynard_db_connection)


def test_after(reynard_db_connection):
    assert reynard_db_connection.execute(text("SELECT to_regclass('mine')")).scalar() is None
"""


def test_a_connection_the_test_closed_is_no_warning_at_teardown(
    pytester: pytest.Pytester,
) -> None:
    """Closing it (``with connection:``) rolled everything back; the fixture's own rollback
    then warned "transaction already deassociated from connection" from its own line, an
    error where warnings are errors."""
    pytester.makepyfile(test_closed=CLOSED)
    result = pytester.runpytest("--reynard-db=main", "-W", "error::sqlalchemy.exc.SAWarning")
    result.assert_outcomes(passed=2)
    assert "deassociated" not in result.stdout.str()


SETTINGS_REVISION = (
    "op.execute(\"DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path TO "
    '\\"$user\\", reynard_extra, public\', current_database()); EXECUTE format('
    "'ALTER DATABASE %I SET timezone TO ''Europe/Berlin''', current_database()); END $$\")"
)
SETTINGS_TESTS = """
from sqlalchemy import text


def test_connection(reynard_db_connection):
    show = reynard_db_connection.execute(text("SHOW search_path")).scalar()
    assert show == '"$user", reynard_extra, public'
    assert reynard_db_connection.execute(text("SHOW timezone")).scalar() == "Europe/Berlin"


def test_fresh(reynard_db_fresh):
    with reynard_db_fresh.engine.connect() as conn:
        assert conn.execute(text("SHOW timezone")).scalar() == "Europe/Berlin"
"""


def test_a_migrations_database_settings_reach_every_clone(pytester: pytest.Pytester) -> None:
    """Hostile fixtures round 20, F7: ``ALTER DATABASE ... SET`` in a migration; PostgreSQL's
    ``CREATE DATABASE ... TEMPLATE`` does not copy it, and every test database had the
    server's defaults where ``alembic upgrade`` keeps the migration's."""
    from reynard_trees import write_revision

    write_revision(
        pytester.path / "alembic/main/versions", "3a1400000005", "3a1400000004", SETTINGS_REVISION
    )
    pytester.makepyfile(test_settings=SETTINGS_TESTS)
    result = pytester.runpytest("--reynard-db=main")
    result.assert_outcomes(passed=2)
