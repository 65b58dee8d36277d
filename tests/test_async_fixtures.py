"""The async fixtures (``reynard_db_async_engine``, ``..._connection``, ``..._session``) in
users' runs: under pytest-asyncio (strict and auto modes) and anyio's plugin, on psycopg
and asyncpg, with xdist; rolled back whatever the test commits; still guarded."""

from __future__ import annotations

# Imported once by this process: pytester's in-process runs drop the modules they
# imported, and asyncpg's compiled modules, imported a second time, crash the interpreter.
import asyncpg  # noqa: F401
import pytest
from reynard_trees import connections_received

from pytest_reynard_db.postgres import EphemeralServer

# Each pair runs the same body twice: whichever runs second would see the first one's work
# if the fixture leaked it, in any order. {mark} is the runner's mark, {driver} the one
# the engine should use.
ROLLED_BACK = """
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

COUNT = text("SELECT count(*) FROM world WHERE name = 'committed'")
INSERT = text("INSERT INTO world (name) VALUES ('committed')")

{mark}
async def test_engine(reynard_db_async_engine, reynard_db):
    assert isinstance(reynard_db_async_engine, AsyncEngine)
    assert reynard_db_async_engine.url.drivername == "postgresql+{driver}"
    assert reynard_db_async_engine.url.database == reynard_db.name
    async with reynard_db_async_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM spirit"))).scalar() == 8

{mark}
@pytest.mark.parametrize("run", [1, 2])
async def test_connection_commit_is_rolled_back(reynard_db_async_connection, run):
    assert isinstance(reynard_db_async_connection, AsyncConnection)
    assert (await reynard_db_async_connection.execute(COUNT)).scalar() == 0
    await reynard_db_async_connection.execute(INSERT)
    await reynard_db_async_connection.commit()
    assert (await reynard_db_async_connection.execute(COUNT)).scalar() == 1

{mark}
@pytest.mark.parametrize("run", [1, 2])
async def test_session_commit_is_rolled_back(reynard_db_async_session, run):
    assert isinstance(reynard_db_async_session, AsyncSession)
    assert (await reynard_db_async_session.execute(COUNT)).scalar() == 0
    await reynard_db_async_session.execute(INSERT)
    await reynard_db_async_session.commit()
    await reynard_db_async_session.rollback()  # after the commit: nothing to undo
    assert (await reynard_db_async_session.execute(COUNT)).scalar() == 1
"""

PYTEST_ASYNCIO = {"strict": "@pytest.mark.asyncio", "auto": ""}


def async_project(pytester: pytest.Pytester, **ini: str) -> None:
    """The ``pytester`` project, with ``ini`` added to ``[tool.pytest.ini_options]``."""
    with (pytester.path / "pyproject.toml").open("a") as pyproject:
        pyproject.writelines(f'{key} = "{value}"\n' for key, value in ini.items())


def use_asyncpg(pytester: pytest.Pytester) -> None:
    """The ecs_e2e database's ini names asyncpg, as an async project's does."""
    ini = pytester.path / "alembic_ecs_e2e.ini"
    ini.write_text(ini.read_text().replace("postgresql+psycopg://", "postgresql+asyncpg://"))


#: In-process runs inside an xdist worker of the outer suite: the package is imported
#: already, and pytest warns that it cannot rewrite its asserts (the outer run's doing).
IN_PROCESS = ("-W", "ignore::pytest.PytestAssertRewriteWarning")


def assert_clean(result: pytest.RunResult, **outcomes: int) -> None:
    """The run had ``outcomes`` and said nothing on stderr, nor any warning."""
    result.assert_outcomes(**outcomes)
    assert result.stderr.str() == "", result.stderr.str()
    assert "warning" not in result.stdout.str().lower(), result.stdout.str()


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_under_pytest_asyncio(pytester: pytest.Pytester, mode: str) -> None:
    async_project(pytester, asyncio_mode=mode)
    pytester.makepyfile(test_async=ROLLED_BACK.format(mark=PYTEST_ASYNCIO[mode], driver="psycopg"))
    assert_clean(pytester.runpytest(*IN_PROCESS, "--reynard-db=ecs_e2e"), passed=5)


def test_under_anyio(pytester: pytest.Pytester) -> None:
    """anyio's tests run our fixtures in anyio's loop, pytest-asyncio installed beside it
    in its (default) strict mode: the fixtures must not be handed to pytest-asyncio (on
    asyncpg, whose connections are bound to their loop, that fails)."""
    use_asyncpg(pytester)
    pytester.makepyfile(test_async=ROLLED_BACK.format(mark="@pytest.mark.anyio", driver="asyncpg"))
    assert_clean(pytester.runpytest(*IN_PROCESS, "--reynard-db=ecs_e2e"), passed=5)


def test_with_xdist(pytester: pytest.Pytester) -> None:
    async_project(pytester, asyncio_mode="auto")
    pytester.makepyfile(test_async=ROLLED_BACK.format(mark="", driver="psycopg"))
    assert_clean(pytester.runpytest(*IN_PROCESS, "--reynard-db=ecs_e2e", "-n", "2"), passed=5)


def test_asyncpg_where_the_ini_names_it(pytester: pytest.Pytester) -> None:
    """The ini's URL names asyncpg: the engine uses it, in the loop of the test's own
    loop scope (a module's here, fixtures' default the function's: asyncpg's connections
    are bound to the loop that made them)."""
    use_asyncpg(pytester)
    async_project(pytester)
    mark = '@pytest.mark.asyncio(loop_scope="module")'
    pytester.makepyfile(test_async=ROLLED_BACK.format(mark=mark, driver="asyncpg"))
    assert_clean(pytester.runpytest(*IN_PROCESS, "--reynard-db=ecs_e2e"), passed=5)


def test_a_raw_commit_is_caught(pytester: pytest.Pytester) -> None:
    """A test that ends the outer transaction itself errors at teardown, naming the async
    fixture, and the next test does not see what it committed."""
    async_project(pytester, asyncio_mode="auto")
    pytester.makepyfile(
        test_raw="""
        from sqlalchemy import text

        COUNT = text("SELECT count(*) FROM world WHERE name = 'raw'")
        INSERT = text("INSERT INTO world (name) VALUES ('raw')")

        async def test_raw_commit(reynard_db_async_connection):
            await reynard_db_async_connection.execute(INSERT)
            await reynard_db_async_connection.exec_driver_sql("COMMIT")

        async def test_after(reynard_db_async_session):
            assert (await reynard_db_async_session.execute(COUNT)).scalar() == 0
        """
    )
    result = pytester.runpytest(*IN_PROCESS, "--reynard-db=ecs_e2e")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*reynard_db_async_connection: test_raw_commit ended the outer transaction itself*"]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
def test_the_guard_refuses_production_in_an_async_engine(
    pytester: pytest.Pytester, decoy: EphemeralServer, driver: str
) -> None:
    """In the same run as the fixtures' connections (allowed), an async engine of the
    test's own on the production server is refused before it reaches it."""
    async_project(pytester, asyncio_mode="auto")
    prod = decoy.url.set(drivername=f"postgresql+{driver}", database="app")
    pytester.makepyfile(
        test_prod=f"""
        import pytest
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
        from pytest_reynard_db.foundation.errors import GuardRefused

        async def test_ours(reynard_db_async_connection):
            assert (await reynard_db_async_connection.execute(text("SELECT 1"))).scalar() == 1

        async def test_production():
            engine = create_async_engine({prod.render_as_string(hide_password=False)!r})
            with pytest.raises(GuardRefused, match="refused a connection to"):
                async with engine.connect():
                    pass
            await engine.dispose()
        """
    )
    before = connections_received(decoy)
    assert_clean(pytester.runpytest(*IN_PROCESS, "--reynard-db=ecs_e2e"), passed=2)
    assert connections_received(decoy) == before


def missing(pytester: pytest.Pytester, module: str) -> str:
    """A ``PYTHONPATH`` on which ``module`` fails to import, as in a virtualenv without it."""
    site = pytester.path.parent / f"without_{module}"
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
    )
    return str(site)


def test_asyncpg_named_but_not_installed_is_psycopg(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_asyncpg(pytester)
    async_project(pytester, asyncio_mode="auto")
    pytester.makepyfile(test_async=ROLLED_BACK.format(mark="", driver="psycopg"))
    monkeypatch.setenv("PYTHONPATH", missing(pytester, "asyncpg"))
    assert_clean(pytester.runpytest_subprocess("--reynard-db=ecs_e2e"), passed=5)


def test_without_greenlet_it_is_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``async`` extra not installed: the test errors in one line saying how to get it;
    the sync fixtures work all the same."""
    async_project(pytester, asyncio_mode="auto")
    pytester.makepyfile(
        test_async="""
        async def test_async(reynard_db_async_session):
            pass

        def test_sync(reynard_db_session):
            pass
        """
    )
    monkeypatch.setenv("PYTHONPATH", missing(pytester, "greenlet"))
    result = pytester.runpytest_subprocess("--reynard-db=ecs_e2e")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "_*ERROR at setup of test_async*_",
            "reynard_db_async_engine: SQLAlchemy's asyncio extension needs greenlet, which is "
            "not installed: pip install 'pytest-reynard-db[async]'",
            "=*short test summary info*=",
        ],
        consecutive=True,
    )


TWO_DATABASES = """
import pytest
from sqlalchemy import text

COUNTS = {
    "ecs_e2e": text("SELECT count(*) FROM world WHERE name = 'both'"),
    "main": text("SELECT count(*) FROM audit_log WHERE action = 'both'"),
}
INSERTS = {
    "ecs_e2e": text("INSERT INTO world (name) VALUES ('both')"),
    "main": text("INSERT INTO audit_log (action) VALUES ('both')"),
}


@pytest.mark.reynard_db("ecs_e2e", "main")
@pytest.mark.parametrize("run", [1, 2])
async def test_both_committed_both_rolled_back(
    reynard_db_async_connections, reynard_db_async_connection, reynard_dbs, run
):
    assert list(reynard_db_async_connections) == ["ecs_e2e", "main"]
    assert reynard_db_async_connections["ecs_e2e"] is reynard_db_async_connection
    for name, conn in reynard_db_async_connections.items():
        assert conn.engine.url.database == reynard_dbs[name].name
        assert (await conn.execute(COUNTS[name])).scalar() == 0
        await conn.execute(INSERTS[name])
        await conn.commit()
        assert (await conn.execute(COUNTS[name])).scalar() == 1
"""


def test_several_databases_async(pytester: pytest.Pytester) -> None:
    """``reynard_db_async_connections``: one rolled-back async connection per database the
    test asks for (the new user's signup writes to two databases, issue 24)."""
    async_project(pytester, asyncio_mode="auto")
    pytester.makepyfile(test_two=TWO_DATABASES)
    assert_clean(pytester.runpytest(*IN_PROCESS), passed=2)
