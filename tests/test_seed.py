"""The seed hook (``pytest_reynard_db_seed``), run as users run it: inner pytest sessions.

Each project's seed appends the database's name to ``seeded.log`` beside its conftest:
the log counts the seed's calls, across xdist workers and runs. Each conftest carries a
token of its own, so that no template another test built (same trees, same seed code)
is reused here by accident.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pytest_reynard_db.postgres import EphemeralServer

SEED = """
# token {token}
import pathlib
from sqlalchemy import text

def pytest_reynard_db_seed(name, connection):
    with pathlib.Path(__file__).with_name("seeded.log").open("a") as log:
        log.write(name + "\\n")
    if name == "main":
        connection.execute(text(
            "INSERT INTO user_account (username, email) "
            "SELECT 'seed' || i, 'seed' || i || '@example.org' FROM generate_series(1, {users}) i"
        ))
        connection.commit()  # as it goes: what follows is committed after the hook
        connection.execute(text("CREATE TABLE seeded_after_commit (id int)"))
"""

EVERY_FIXTURE = """
import pytest
from sqlalchemy import text

SEEDED = text("SELECT count(*) FROM user_account WHERE username LIKE 'seed%'")
ONE = text("DELETE FROM user_account WHERE username = 'seed1'")

def test_session_database(reynard_db):
    with reynard_db.engine.connect() as conn:
        assert conn.execute(SEEDED).scalar() == 3
        assert conn.execute(text("SELECT to_regclass('seeded_after_commit')")).scalar()

def test_mapping(reynard_dbs):
    with reynard_dbs["main"].engine.connect() as conn:
        assert conn.execute(SEEDED).scalar() == 3

# Each pair deletes a seeded row: whichever runs second would miss it if it leaked.
@pytest.mark.parametrize("run", [1, 2])
def test_connection(reynard_db_connection, run):
    assert reynard_db_connection.execute(SEEDED).scalar() == 3
    reynard_db_connection.execute(ONE)
    reynard_db_connection.commit()

@pytest.mark.parametrize("run", [1, 2])
def test_orm_session(reynard_db_session, run):
    assert reynard_db_session.execute(SEEDED).scalar() == 3
    reynard_db_session.execute(ONE)
    reynard_db_session.commit()

@pytest.mark.parametrize("run", [1, 2])
def test_fresh(reynard_db_fresh, run):
    with reynard_db_fresh.engine.begin() as conn:
        assert conn.execute(SEEDED).scalar() == 3
        conn.execute(ONE)

def test_factory_at_heads(reynard_db_factory):
    with reynard_db_factory("main").engine.connect() as conn:
        assert conn.execute(SEEDED).scalar() == 3

def test_factory_at_another_revision_is_as_migrated(reynard_db_factory):
    older = reynard_db_factory("main", "3a1400000003")
    with older.engine.connect() as conn:
        assert conn.execute(SEEDED).scalar() == 0
"""

COUNT = """
from sqlalchemy import text

def test_count(reynard_db):
    with reynard_db.engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM user_account WHERE username LIKE 'seed%'")
        ).scalar()
    print("SEEDED", count)
"""


def seed(project: Path, *, users: int = 3, token: str | None = None) -> str:
    """Write the seeding conftest; its token (new unless given)."""
    token = token or uuid.uuid4().hex
    (project / "conftest.py").write_text(SEED.format(token=token, users=users))
    return token


def seed_calls(project: Path) -> list[str]:
    log = project / "seeded.log"
    return log.read_text().splitlines() if log.exists() else []


def test_every_fixture_sees_the_seed_made_once(pytester: pytest.Pytester) -> None:
    seed(pytester.path)
    pytester.makepyfile(test_seeded=EVERY_FIXTURE)
    result = pytester.runpytest("--reynard-db=main")
    result.assert_outcomes(passed=10)
    assert seed_calls(pytester.path) == ["main"], "seeded once, at heads only"
    assert result.stderr.str() == ""


def test_xdist_seeds_once_per_run(pytester: pytest.Pytester) -> None:
    seed(pytester.path)
    pytester.makepyfile(
        test_parallel="""
        import os
        import pytest
        from sqlalchemy import text

        @pytest.mark.parametrize("i", range(6))
        def test_fresh(reynard_db_fresh, i):
            assert os.environ["PYTEST_XDIST_WORKER"] in reynard_db_fresh.name
            with reynard_db_fresh.engine.connect() as conn:
                seeded = "SELECT count(*) FROM user_account WHERE username LIKE 'seed%'"
                assert conn.execute(text(seeded)).scalar() == 3
        """
    )
    result = pytester.runpytest("-n", "2", "--reynard-db=main")
    result.assert_outcomes(passed=6)
    assert seed_calls(pytester.path) == ["main"]
    assert "Traceback" not in result.stderr.str()


def test_a_failing_seed_is_one_line_naming_the_conftest(pytester: pytest.Pytester) -> None:
    (pytester.path / "conftest.py").write_text(
        "from sqlalchemy import text\n"
        "\n"
        "def pytest_reynard_db_seed(name, connection):\n"
        "    connection.execute(text('INSERT INTO no_such_table VALUES (1)'))\n"
    )
    pytester.makepyfile(
        test_x="def test_a(reynard_db):\n    pass\n\ndef test_b(reynard_db_fresh):\n    pass\n"
    )
    result = pytester.runpytest("--reynard-db=main")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*reynard-db: seeding database 'main' failed at conftest.py:4: ProgrammingError: "
            '*relation "no_such_table" does not exist*; the template was not kept',
            "*reynard-db: failed as reported above: seeding database 'main'*",
        ]
    )
    assert "Traceback" not in result.stdout.str() and result.stderr.str() == ""
    # Fixed, the next run builds the template: the failed one was never kept.
    seed(pytester.path)
    pytester.runpytest("--reynard-db=main").assert_outcomes(passed=2)
    assert seed_calls(pytester.path) == ["main"]


def test_shared_server_seeds_once_in_total_and_again_when_the_seed_changes(
    pytester: pytest.Pytester, pg_server: EphemeralServer
) -> None:
    token = seed(pytester.path)
    pytester.makepyfile(test_count=COUNT)
    args = (f"--reynard-db-url={pg_server.url.render_as_string(hide_password=False)}", "-s")
    for _ in range(2):
        result = pytester.runpytest("--reynard-db=main", *args)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["*SEEDED 3*"])
    assert seed_calls(pytester.path) == ["main"], "the second run cloned the first's template"
    seed(pytester.path, users=5, token=token)  # the seed's code changed, nothing else
    result = pytester.runpytest("--reynard-db=main", *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*SEEDED 5*"])
    assert seed_calls(pytester.path) == ["main", "main"]
    assert result.stderr.str() == ""


@pytest.mark.usefixtures("stop_reused_server")
def test_reuse_rebuilds_when_the_seed_changes(pytester: pytest.Pytester) -> None:
    token = seed(pytester.path)
    pytester.makepyfile(test_count=COUNT)
    args = ("--reynard-db=main", "--reynard-db-reuse", "-s")
    for _ in range(2):
        pytester.runpytest_subprocess(*args).stdout.fnmatch_lines(["*SEEDED 3*"])
    assert seed_calls(pytester.path) == ["main"]
    seed(pytester.path, users=4, token=token)
    result = pytester.runpytest_subprocess(*args)
    result.stdout.fnmatch_lines(["*SEEDED 4*"])
    assert seed_calls(pytester.path) == ["main", "main"]
    assert "Traceback" not in result.stderr.str()
