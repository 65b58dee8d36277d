"""The pytest plugin, run as users run it: inner pytest sessions through ``pytester``."""

from __future__ import annotations

import re

import pytest
from reynard_trees import break_main, databases, log_connections, write_revision
from sqlalchemy import create_engine, text

from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.executor import reusable_server


def test_every_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fixtures="""
        import pytest
        from sqlalchemy import text
        from sqlalchemy.orm import Session

        def test_session_database(reynard_db):
            assert reynard_db.name.startswith("test_ecs_e2e_")
            assert set(reynard_db.head) == {"ec5000000004", "4a3e00000004", "a6e400000004"}
            assert reynard_db.config.get_main_option("script_location").endswith("alembic/ecs_e2e")
            with reynard_db.engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM spirit")).scalar() == 8

        # Each pair runs the same body twice: whichever runs second would see the
        # first one's work if the fixture leaked it, in any order.
        @pytest.mark.parametrize("run", [1, 2])
        def test_connection_commit_is_rolled_back(reynard_db_connection, run):
            count = text("SELECT count(*) FROM world WHERE name = 'committed'")
            assert reynard_db_connection.execute(count).scalar() == 0
            reynard_db_connection.execute(text("INSERT INTO world (name) VALUES ('committed')"))
            reynard_db_connection.commit()
            assert reynard_db_connection.execute(count).scalar() == 1

        @pytest.mark.parametrize("run", [1, 2])
        def test_session_commit_is_rolled_back(reynard_db_session: Session, run):
            count = text("SELECT count(*) FROM world WHERE name = 'orm'")
            assert reynard_db_session.execute(count).scalar() == 0
            reynard_db_session.execute(text("INSERT INTO world (name) VALUES ('orm')"))
            reynard_db_session.commit()
            assert reynard_db_session.execute(count).scalar() == 1

        @pytest.mark.parametrize("run", [1, 2])
        def test_fresh_is_isolated(reynard_db_fresh, reynard_db, run):
            assert reynard_db_fresh.name != reynard_db.name
            with reynard_db_fresh.engine.begin() as conn:
                assert conn.execute(text("SELECT to_regclass('agent_interaction')")).scalar()
                conn.execute(text("DROP TABLE agent_interaction"))
            with reynard_db.engine.connect() as conn:
                assert conn.execute(text("SELECT to_regclass('agent_interaction')")).scalar()

        def test_factory_at_a_revision(reynard_db_factory):
            old = reynard_db_factory("ecs", "ec5000000002")
            with old.engine.connect() as conn:
                versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
                assert set(versions) == {"ec5000000002"}
                assert conn.execute(text("SELECT to_regclass('spirit')")).scalar() is None
            assert old.head == ("ec5000000002",)

        def test_server(reynard_db_server):
            reynard_db_server.create_database("test_by_hand")
            assert reynard_db_server.exists("test_by_hand")
            reynard_db_server.drop_database("test_by_hand")
        """
    )
    result = pytester.runpytest("--reynard-db=ecs_e2e")
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(["reynard-db: databases ecs_e2e on an ephemeral server*"])


def test_marker_picks_the_database(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marker="""
        import pytest

        def test_default(reynard_db):
            assert reynard_db.db.name == "ecs_e2e"

        @pytest.mark.reynard_db("main")
        def test_main(reynard_db, reynard_db_fresh):
            assert reynard_db.db.name == "main" and reynard_db.head == ("3a1400000004",)
            assert reynard_db_fresh.db.name == "main"

        @pytest.mark.reynard_db("e2e")
        def test_e2e_connection(reynard_db_connection):
            assert reynard_db_connection.engine.url.database.startswith("test_e2e_")
        """
    )
    pytester.runpytest("--reynard-db=ecs_e2e").assert_outcomes(passed=3)


def test_a_marker_given_by_pytest_param_fails_instead_of_the_default_database(
    pytester: pytest.Pytester,
) -> None:
    """Hostile fixtures round 20: ``pytest.param(..., marks=reynard_db("main"))`` is applied
    after the database is chosen; the test got the run's default, silently. Indirect
    parametrization, what the error says to use, picks it."""
    pytester.makepyfile(
        test_param_marker="""
        import pytest

        @pytest.mark.parametrize(
            "expected", [pytest.param("main", marks=pytest.mark.reynard_db("main"))]
        )
        def test_param_marker(expected, reynard_db):
            assert reynard_db.db.name == expected

        @pytest.mark.parametrize("reynard_db_name", ["main", "e2e"], indirect=True)
        def test_indirect(reynard_db_name, reynard_db):
            assert reynard_db.db.name == reynard_db_name

        # the database they name is the one they get: no error (review of bc4cdc4)
        @pytest.mark.parametrize(
            "expected", [pytest.param("ecs_e2e", marks=pytest.mark.reynard_db("ecs_e2e"))]
        )
        def test_param_marker_of_the_default(expected, reynard_db):
            assert reynard_db.db.name == expected

        def test_marked_by_a_hook(reynard_db):
            assert reynard_db.db.name == "ecs_e2e"
        """
    )
    pytester.makeconftest(
        """
        import pytest

        def pytest_collection_modifyitems(items):
            for item in items:
                if item.name == "test_marked_by_a_hook":
                    item.add_marker(pytest.mark.reynard_db("ecs_e2e"))
        """
    )
    result = pytester.runpytest("--reynard-db=ecs_e2e")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["*reynard-db: *test_param_marker*does not reach this test's database*indirect=True)*"]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize("key", ["reynard_db", "reynard-db"])
def test_ini_keys(pytester: pytest.Pytester, key: str) -> None:
    """Each option is also an ini key: pytest's spelling and the option's own."""
    with (pytester.path / "pyproject.toml").open("a") as pyproject:
        pyproject.write(f'{key} = "main"\n')
    pytester.makepyfile(
        test_ini="def test_a(reynard_db):\n    assert reynard_db.db.name == 'main'\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_unknown_database_option_is_one_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="def test_a(reynard_db):\n    pass\ndef test_b(reynard_db):\n    pass\n"
    )
    result = pytester.runpytest("--reynard-db=nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*reynard-db: unknown database 'nope'*known: ecs, ecs_e2e*"])


def test_unknown_marker_database_is_one_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.reynard_db("nope")
        def test_x(reynard_db):
            pass
        """
    )
    result = pytester.runpytest("--reynard-db=ecs_e2e")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*reynard-db: unknown database 'nope'*"])


@pytest.mark.parametrize(
    ("source", "tree", "head"),
    [
        ("copy", "alembic/ecs_e2e", "ec5000000099"),
        ("point", "alembic/ecs", "ec5000000004"),
    ],
)
def test_copy_or_point(pytester: pytest.Pytester, source: str, tree: str, head: str) -> None:
    # Only the mirror has this revision: copy mode migrates with it, point mode without.
    write_revision(
        pytester.path / "alembic/ecs_e2e/versions/ecs",
        "ec5000000099",
        "ec5000000004",
        slug="mirror_only",
    )
    pytester.makepyfile(
        test_source=f"""
        def test_tree(reynard_db):
            assert reynard_db.config.get_main_option("script_location").endswith("{tree}")
            assert "{head}" in reynard_db.head
        """
    )
    result = pytester.runpytest("--reynard-db=ecs_e2e", f"--reynard-db-source={source}")
    result.assert_outcomes(passed=1)


def test_production_urls_in_the_shell_are_never_used(
    pytester: pytest.Pytester, pg_server: EphemeralServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_server.drop_database("reynard_ecs")
    production = pg_server.create_database("reynard_ecs")
    rendered = production.render_as_string(hide_password=False)
    monkeypatch.setenv("ECS_DATABASE_URL", rendered)
    monkeypatch.setenv("ECS_E2E_DATABASE_URL", rendered)
    pytester.makepyfile(
        test_guard="""
        import os

        def test_env_points_at_the_test_database_while_migrating(reynard_db):
            assert reynard_db.name != "reynard_ecs"

        def test_alembic_env(alembic_engine, alembic_config):
            assert os.environ["ECS_DATABASE_URL"].endswith("/" + alembic_engine.url.database)
            assert alembic_config.get_main_option("sqlalchemy.url").endswith(
                alembic_engine.url.database)
        """
    )
    for source in ("copy", "point"):
        result = pytester.runpytest("--reynard-db=ecs_e2e", f"--reynard-db-source={source}")
        result.assert_outcomes(passed=2)
    engine = create_engine(production)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None
        assert (
            conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar()
            == 0
        )
    engine.dispose()
    pg_server.drop_database("reynard_ecs")


def test_existing_server_mode(pytester: pytest.Pytester, pg_server: EphemeralServer) -> None:
    admin = pg_server.url.render_as_string(hide_password=False)
    pytester.makepyfile(
        test_existing="""
        import re

        def test_names(reynard_db, reynard_db_fresh):
            assert re.fullmatch(r"test_ecs_e2e_[0-9a-f]{8}_main_session\\d+", reynard_db.name)
            assert re.fullmatch(r"test_ecs_e2e_[0-9a-f]{8}_main_fresh\\d+", reynard_db_fresh.name)
        """
    )
    before = databases(pg_server)
    result = pytester.runpytest(f"--reynard-db-url={admin}", "--reynard-db=ecs_e2e")
    result.assert_outcomes(passed=1)
    after = databases(pg_server)
    # Its clones are dropped; its template (named by the tree's digest) is kept for the
    # next run on this server, and pruned when unused (tests/test_shared_server.py).
    assert {n for n in after - before if not n.startswith("test_tpl_ecs_e2e_")} == set()
    assert before <= after


def test_existing_server_refuses_a_production_database(
    pytester: pytest.Pytester, pg_server: EphemeralServer
) -> None:
    url = pg_server.database_url("reynard_ecs").render_as_string(hide_password=False)
    pytester.makepyfile(test_x="def test_x(reynard_db):\n    pass\n")
    result = pytester.runpytest(f"--reynard-db-url={url}", "--reynard-db=ecs")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*refusing --reynard-db-url: it names the production database 'reynard_ecs'*"]
    )


def test_xdist_workers_share_one_template(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_parallel="""
        import os
        import pytest
        from sqlalchemy import text

        @pytest.mark.parametrize("i", range(6))
        def test_fresh(reynard_db_fresh, reynard_db_server, i):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            assert f"_{worker}_fresh" in reynard_db_fresh.name
            with reynard_db_server.connect() as conn:
                templates = conn.execute(
                    "SELECT count(*) FROM pg_database WHERE datname LIKE 'test_tpl_ecs_e2e_%'"
                ).fetchone()[0]
            assert templates == 1
        """
    )
    result = pytester.runpytest("-n", "2", "--reynard-db=ecs_e2e")
    result.assert_outcomes(passed=6)


@pytest.mark.usefixtures("stop_reused_server")
def test_reuse_keeps_the_server_and_rebuilds_a_changed_tree(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_reuse="""
        def test_where(reynard_db, reynard_db_server):
            with reynard_db_server.connect() as conn:
                rows = conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'test_tpl_main_%'"
                ).fetchall()
            print("PORT", reynard_db_server.url.port, "HEAD", reynard_db.head,
                  "TEMPLATES", sorted(r[0] for r in rows))
        """
    )
    args = ("--reynard-db=main", "--reynard-db-reuse", "-s")
    first = pytester.runpytest_subprocess(*args)
    first.assert_outcomes(passed=1)
    second = pytester.runpytest_subprocess(*args)
    second.assert_outcomes(passed=1)
    port = re.search(r"PORT (\d+)", first.stdout.str())
    assert port and f"PORT {port.group(1)} " in second.stdout.str(), "the server was reused"
    write_revision(
        pytester.path / "alembic/main/versions", "3a1400000005", "3a1400000004", slug="more"
    )
    third = pytester.runpytest_subprocess(*args)
    third.assert_outcomes(passed=1)
    assert "3a1400000005" in third.stdout.str()
    assert f"PORT {port.group(1)} " in third.stdout.str()


@pytest.mark.usefixtures("stop_reused_server")
def test_a_warm_run_connects_to_the_kept_server_three_times(pytester: pytest.Pytester) -> None:
    """The guard's ask (which is also the probe that the kept server runs), the run's
    presence (its locks and heartbeat) and the admin connection (the template, the clone,
    and its drop at the end): it used to be six, with a probe, a second ask and the drops'
    own connection opened for the session database alone."""
    pytester.makepyfile(test_x="def test_x(reynard_db):\n    assert reynard_db.head\n")
    args = ("--reynard-db=main", "--reynard-db-reuse")
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
    kept = EphemeralServer(reusable_server())
    authorized = log_connections(kept)
    kept.close()
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    assert result.stderr.str() == ""
    names = sorted(line.partition("application_name=")[2][:15] for line in authorized())
    assert names == ["", "reynard-db guar", "reynard-db run "], authorized()


@pytest.mark.usefixtures("stop_reused_server")
def test_reuse_drops_the_databases_of_a_dead_run(pytester: pytest.Pytester) -> None:
    """A killed run cannot drop its databases on the kept server: the next run does."""
    pytester.makepyfile(test_x="def test_x(reynard_db_fresh):\n    pass\n")
    args = ("--reynard-db=main", "--reynard-db-reuse")
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
    kept = EphemeralServer(reusable_server())  # attaches to the running one
    assert kept.process.base_dir is not None
    leftover = "test_main_deadbeef_main_fresh1"
    kept.create_database(leftover)
    (kept.process.base_dir / "runs" / "deadbeef.json").write_text('{"pid": 2147483646}')
    try:
        pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
        assert not kept.exists(leftover)
        assert not (kept.process.base_dir / "runs" / "deadbeef.json").exists()
        assert not list((kept.process.base_dir / "runs").glob("*.json")), "own record removed"
    finally:
        kept.close()


def test_migration_failure_is_one_error_naming_the_file(pytester: pytest.Pytester) -> None:
    break_main(pytester.path)
    pytester.makepyfile(test_x="def test_x(reynard_db):\n    pass\n")
    result = pytester.runpytest("--reynard-db=main")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*reynard-db: database 'main': *3a1400000005_broken.py: upgrade*broken_on_purpose*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_pytest_alembic_runs_on_our_databases(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_alembic="""
        from pytest_alembic import tests

        def test_engine_is_ours(alembic_engine):
            assert alembic_engine.dialect.name == "postgresql"
            assert alembic_engine.url.database.startswith("test_main_")

        def test_single_head(alembic_runner):
            tests.test_single_head_revision(alembic_runner)

        def test_upgrade(alembic_runner):
            tests.test_upgrade(alembic_runner)

        def test_up_down_consistency(alembic_runner):
            tests.test_up_down_consistency(alembic_runner)

        def test_models_match(alembic_runner):
            tests.test_model_definitions_match_ddl(alembic_runner)
        """
    )
    pytester.runpytest("--reynard-db=main").assert_outcomes(passed=5)


def test_users_own_alembic_config_works_with_our_engine(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def alembic_config():
            return {"file": "alembic_main.ini"}
        """
    )
    pytester.makepyfile(
        test_own="""
        from pytest_alembic import tests

        def test_upgrade(alembic_runner, alembic_engine):
            assert alembic_engine.dialect.name == "postgresql"
            tests.test_upgrade(alembic_runner)
        """
    )
    # A child process: pytest-alembic reads this ini itself, and its env.py then
    # reconfigures logging for the whole process.
    result = pytester.runpytest_subprocess("--reynard-db=main")
    result.assert_outcomes(passed=1)


def test_without_the_option_pytest_alembic_is_untouched(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        def test_default_engine(alembic_engine):
            assert alembic_engine.dialect.name == "sqlite"
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_test_alembic_collects_builtin_tests(pytester: pytest.Pytester) -> None:
    """``--test-alembic`` with a tests/conftest.py (pytest-alembic's anchor)."""
    tests_dir = pytester.path / "tests"
    tests_dir.mkdir()
    (tests_dir / "conftest.py").write_text("")
    (tests_dir / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--test-alembic", "--reynard-db=main")
    result.assert_outcomes(passed=5)
    result.stdout.no_fnmatch_line("*AttributeError*")


def test_checks_as_items(pytester: pytest.Pytester) -> None:
    """``--reynard-db-checks``: one item per database and check, selectable with -k."""
    versions = pytester.path / "alembic/main/versions"
    write_revision(
        versions,
        "3a1400000005",
        "3a1400000004",
        'op.add_column("audit_log", sa.Column("extra", sa.Text()))',
        "pass  # forgets the column, on purpose",
        slug="forgets",
    )
    result = pytester.runpytest("--reynard-db=main,e2e", "--reynard-db-checks", "-v")
    result.stdout.fnmatch_lines(
        [
            "*reynard-db::main::single_head PASSED*",
            "*reynard-db::main::stairway FAILED*",
            "*reynard-db::e2e::mirror_sync FAILED*",
        ]
    )
    result.stdout.fnmatch_lines(["*3a1400000005_forgets.py*re-up*extra*already exists*"])
    result.stdout.fnmatch_lines(["*missing: alembic/e2e/versions/3a1400000005_forgets.py*"])
    assert "Traceback" not in result.stdout.str()
    assert "reynard-db::main::mirror_sync" not in result.stdout.str()

    selected = pytester.runpytest("--reynard-db=main", "--reynard-db-checks", "-k", "single_head")
    selected.assert_outcomes(passed=1, deselected=4)


def test_a_harness_failure_is_reported_once_in_full(pytester: pytest.Pytester) -> None:
    """An unreachable server: one error in full, later tests point at it; no traceback, no
    chained exceptions, and the run's clean-up ends quietly."""
    pytester.makepyfile(
        test_x="def test_a(reynard_db):\n    pass\ndef test_b(reynard_db_fresh):\n    pass\n"
    )
    result = pytester.runpytest_subprocess(
        "--reynard-db=main",
        "--reynard-db-url=postgresql://u:pw@127.0.0.1:1/postgres",
    )
    result.assert_outcomes(errors=2)
    output = result.stdout.str() + result.stderr.str()
    assert output.count("\nreynard-db: cannot connect to") == 1, output  # the summary aside
    assert "reynard-db: failed as reported above" in output
    assert "Traceback" not in output and "During handling" not in output, output


def test_header_and_repr_are_short(pytester: pytest.Pytester) -> None:
    """``source=`` only when a selected database is a mirror; a TestDatabase is one line."""
    pytester.makepyfile(
        test_x="def test_repr(reynard_db):\n"
        "    assert repr(reynard_db) == (\n"
        "        f'<TestDatabase main: {reynard_db.name} at 3a1400000004>')\n"
    )
    result = pytester.runpytest("--reynard-db=main")
    result.assert_outcomes(passed=1)
    header = [line for line in result.outlines if line.startswith("reynard-db: databases")]
    assert header == ["reynard-db: databases main on an ephemeral server"], header
    result = pytester.runpytest("--reynard-db=e2e", "-k", "nothing")
    assert any(line.endswith("source=copy") for line in result.outlines)


def test_the_source_option_takes_every_source_the_provisioner_knows() -> None:
    from pytest_reynard_db.plugin import options
    from pytest_reynard_db.provisioning import resolve

    assert options.SOURCES == resolve.SOURCES


@pytest.mark.usefixtures("stop_reused_server")
def test_the_run_that_starts_the_kept_server_warns_of_nothing(pytester: pytest.Pytester) -> None:
    """The run that starts the ``--reynard-db-reuse`` server leaves it running, by design:
    its ``Popen`` collected while the server ran said ``ResourceWarning: subprocess N is
    still running``, and a project with ``filterwarnings = error`` exited 1 after its tests
    passed (the second new user's trial, issue 24)."""
    with (pytester.path / "pyproject.toml").open("a") as pyproject:
        pyproject.write('filterwarnings = ["error"]\n')
    pytester.makepyfile(test_kept="def test_kept(reynard_db):\n    assert reynard_db.name\n")
    for _ in range(2):  # the run that starts it, and one that finds it
        result = pytester.runpytest_subprocess("--reynard-db=main", "--reynard-db-reuse")
        output = result.stdout.str() + result.stderr.str()
        assert result.ret == 0, output
        assert "Warning" not in output and "still running" not in output, output
