"""Several databases in one test (issue 24, point 4): ``@pytest.mark.reynard_db("a", "b")``
and ``--reynard-db=a,b`` give ``reynard_dbs`` and ``reynard_db_connections``.

Inner pytest runs on the Reynard trees: ``main`` (``audit_log``) and ``ecs`` (``world``)
are two databases of their own. Each test writes down the PostgreSQL database behind
every name it got (``dbs.log``: worker, name, database), so that the outer test sees
that one name is one session database across tests, whichever names a test asks for.
"""

from __future__ import annotations

import pytest

TWO_DATABASES = """
import os

import pytest
from sqlalchemy import text

AUDIT = text("SELECT count(*) FROM audit_log WHERE action = 'two-dbs'")
WORLD = text("SELECT count(*) FROM world WHERE name = 'two-dbs'")


def show(dbs):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open("dbs.log", "a") as log:
        log.writelines(f"{worker} {n} {d.name}\\n" for n, d in dbs.items())


# Run twice: whichever runs second would see the first one's writes if they leaked.
@pytest.mark.reynard_db("main", "ecs")
@pytest.mark.parametrize("run", [1, 2])
def test_writes_to_both(reynard_db_connections, reynard_dbs, run):
    show(reynard_dbs)
    assert list(reynard_db_connections) == ["main", "ecs"] == list(reynard_dbs)
    main, ecs = reynard_db_connections["main"], reynard_db_connections["ecs"]
    assert main.engine.url.database == reynard_dbs["main"].name
    assert ecs.engine.url.database == reynard_dbs["ecs"].name
    assert (main.execute(AUDIT).scalar(), ecs.execute(WORLD).scalar()) == (0, 0)
    main.execute(text("INSERT INTO audit_log (action) VALUES ('two-dbs')"))
    ecs.execute(text("INSERT INTO world (name) VALUES ('two-dbs')"))
    main.commit()  # the code under test commits: a savepoint, rolled back after
    ecs.commit()
    assert (main.execute(AUDIT).scalar(), ecs.execute(WORLD).scalar()) == (1, 1)


@pytest.mark.reynard_db("main", "ecs")
def test_single_database_fixtures_give_the_first(
    reynard_db, reynard_dbs, reynard_db_name, reynard_db_session, reynard_db_connections
):
    assert reynard_db_name == "main" and reynard_db is reynard_dbs["main"]
    reynard_db_session.execute(text("INSERT INTO audit_log (action) VALUES ('two-dbs')"))
    reynard_db_session.commit()
    # the first database's connection is reynard_db_connection, the session's
    assert reynard_db_connections["main"].execute(AUDIT).scalar() == 1


@pytest.mark.reynard_db("ecs")
def test_one_database(reynard_dbs, reynard_db, reynard_db_connections):
    show(reynard_dbs)
    assert list(reynard_dbs) == ["ecs"] and reynard_db is reynard_dbs["ecs"]
    assert reynard_db_connections["ecs"].execute(WORLD).scalar() == 0


def test_unmarked(reynard_dbs, reynard_db):
    show(reynard_dbs)
    assert list(reynard_dbs) == ["main", "ecs"] and reynard_db is reynard_dbs["main"]
"""


def databases_seen(log: str) -> dict[tuple[str, str], set[str]]:
    """(worker, registry name) -> the PostgreSQL databases its tests got for that name."""
    seen: dict[tuple[str, str], set[str]] = {}
    for line in log.splitlines():
        worker, name, database = line.split()
        seen.setdefault((worker, name), set()).add(database)
    return seen


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_two_databases_in_one_test(pytester: pytest.Pytester, workers: tuple[str, ...]) -> None:
    """Writes to both databases are seen by the test and by no later test; one name is
    one session database (per process) whatever set of names a test asks for."""
    pytester.makepyfile(test_two=TWO_DATABASES)
    result = pytester.runpytest_subprocess("--reynard-db=main,ecs", "-v", *workers)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*test_writes_to_both[[]main-ecs-1[]]*"])  # the marker's id
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    seen = databases_seen((pytester.path / "dbs.log").read_text())
    assert {name for _, name in seen} == {"main", "ecs"}, seen
    assert all(len(databases) == 1 for databases in seen.values()), seen
    if workers:
        assert {worker for worker, _ in seen} == {"gw0", "gw1"}, seen


def test_markers_alone_select_every_database_they_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.reynard_db("main", "ecs")
        def test_both(reynard_dbs):
            assert list(reynard_dbs) == ["main", "ecs"]
            assert reynard_dbs["ecs"].head and reynard_dbs["main"].head == ("3a1400000004",)

        def test_unmarked(reynard_dbs):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "reynard-db: databases main, ecs (from @pytest.mark.reynard_db) on *",
            "*no database selected: this test has no @pytest.mark.reynard_db(NAME)*",
        ]
    )


def test_a_commit_that_escapes_is_undone_in_every_database(pytester: pytest.Pytester) -> None:
    """A raw COMMIT on the second database's connection: the test errors at teardown
    naming that database, which is cloned again; the next test does not see the row."""
    pytester.makepyfile(
        test_escape="""
        import pytest
        from sqlalchemy import text

        pytestmark = pytest.mark.reynard_db("main", "ecs")

        def test_escapes(reynard_db_connections):
            ecs = reynard_db_connections["ecs"]
            ecs.execute(text("INSERT INTO world (name) VALUES ('escaped')"))
            ecs.exec_driver_sql("COMMIT")

        def test_after(reynard_db_connections):
            count = text("SELECT count(*) FROM world WHERE name = 'escaped'")
            assert reynard_db_connections["ecs"].execute(count).scalar() == 0
        """
    )
    result = pytester.runpytest("--reynard-db=main")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*reynard_db_connections: test_escapes[[]main-ecs[]] ended the outer transaction"
            " itself*the session database test_ecs_*_session* was replaced*"
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_an_unknown_name_in_the_marker_is_one_line(pytester: pytest.Pytester) -> None:
    """The test that names it errors in one line; the others run."""
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.reynard_db("main", "nope")
        def test_x(reynard_dbs):
            pass

        def test_y(reynard_db):
            pass
        """
    )
    result = pytester.runpytest("--reynard-db=main")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["reynard-db: unknown database 'nope'*known: ecs, ecs_e2e*"])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize("option", [("--reynard-db=main",), ()], ids=["option", "markers"])
def test_a_marker_without_a_name_is_one_line(
    pytester: pytest.Pytester, option: tuple[str, ...]
) -> None:
    """A collection error of the test's module, with or without ``--reynard-db``."""
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.reynard_db()
        def test_x(reynard_dbs):
            pass
        """
    )
    result = pytester.runpytest(*option)
    expected = (
        "*reynard-db: test_bad.py::test_x: use @pytest.mark.reynard_db('name'[[], 'name'...[]])"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["_* ERROR collecting test_bad.py _*", expected, "=*"])
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "pytest_generate_tests" not in output, output


def test_the_header_names_what_markers_add(pytester: pytest.Pytester) -> None:
    """With ``reynard_db = "main"`` selected and markers naming ``ecs`` too, the header
    (before collection) said only ``main`` (the second new user's trial, issue 24): the
    databases markers add are said once collected."""
    pytester.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.reynard_db("main", "ecs")
        def test_both(reynard_dbs):
            assert list(reynard_dbs) == ["main", "ecs"]
        """
    )
    result = pytester.runpytest("--reynard-db=main")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["reynard-db: databases main on an ephemeral server*", "reynard-db: markers also use ecs"]
    )
    alone = pytester.runpytest("--reynard-db=main,ecs")
    assert "markers also use" not in alone.stdout.str()


def test_a_database_not_asked_for_says_how_to_ask(pytester: pytest.Pytester) -> None:
    """``reynard_db_connections["ecs"]`` in a test that asked for ``main`` alone was a bare
    ``KeyError: 'ecs'`` (the third new user's trial, issue 24): it says how to ask."""
    pytester.makepyfile(
        test_missing="""
        import pytest

        @pytest.mark.reynard_db("main")
        def test_missing(reynard_db_connections, reynard_dbs):
            assert list(reynard_dbs) == ["main"] and len(reynard_db_connections) == 1
            reynard_db_connections["ecs"]
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    said = (
        "reynard_db_connections['ecs']: this test asked for 'main' only; ask for 'ecs' too: "
        "@pytest.mark.reynard_db('main', 'ecs'), or --reynard-db=main,ecs"
    )
    assert said in result.stdout.str(), result.stdout.str()
