"""The async fixtures: ``reynard_db_async_engine``, ``reynard_db_async_connection``,
``reynard_db_async_session`` and ``reynard_db_async_connections`` (one per database a
test asks for), on SQLAlchemy's asyncio extension.

Who runs them. A plugin cannot pick the user's async test runner, so the fixtures
are plain ``async def`` fixtures run by whichever plugin runs the test, in the test's
own event loop (asyncpg's connections are bound to the loop that made them; a
private loop of ours would hand tests connections they cannot use):

- a test of anyio's plugin (it asks for ``anyio_backend``): anyio runs them, as it runs
  every async fixture of such a test;
- any other test, with pytest-asyncio: ``pytest_fixture_setup`` below has
  pytest-asyncio run them, in strict mode too (where only fixtures marked with
  ``pytest_asyncio.fixture`` are run), in the loop of the test's own loop scope.

The engine is a sync fixture (making an ``AsyncEngine`` needs no loop) that pools
nothing (``NullPool``): each connection lives in one test's loop, whatever the loop
scopes are, as SQLAlchemy's asyncio documentation advises for several event loops.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest

from .fixtures import AskedFor
from .stash import catch_harness_errors

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    from ..foundation.registry import Database
    from ..provisioning.provision import TestDatabase

ASYNC_FIXTURES = (
    "reynard_db_async_connection",
    "reynard_db_async_session",
    "reynard_db_async_connections",
)


@pytest.fixture(scope="session")
def reynard_db_async_engine(reynard_db: TestDatabase) -> Iterator[AsyncEngine]:
    """An ``AsyncEngine`` on ``reynard_db``: psycopg's async connection, or asyncpg where
    the database's ini names it and it is installed; disposed at the end of the session."""
    if not _importable("greenlet"):
        pytest.fail(
            "reynard_db_async_engine: SQLAlchemy's asyncio extension needs greenlet, which is "
            "not installed: pip install 'pytest-reynard-db[async]'",
            pytrace=False,
        )
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(async_url(reynard_db), poolclass=NullPool)
    yield engine
    engine.sync_engine.dispose()  # NullPool keeps no connection: no loop needed


@pytest.fixture
async def reynard_db_async_connection(
    request: pytest.FixtureRequest, reynard_db: TestDatabase, reynard_db_async_engine: AsyncEngine
) -> AsyncIterator[AsyncConnection]:
    """An ``AsyncConnection`` in a transaction rolled back after the test, whatever the
    test commits (``reynard_db_connection``'s outer transaction, on the async driver)."""
    from .fixtures import replace_after_escape
    from .outer_transaction import rolled_back_async

    with catch_harness_errors(request):
        async with rolled_back_async(reynard_db, reynard_db_async_engine) as (connection, outcome):
            yield connection
    if not outcome.intact:
        replace_after_escape(request, "reynard_db_async_connection", [reynard_db])


@pytest.fixture
async def reynard_db_async_connections(
    request: pytest.FixtureRequest,
    reynard_dbs: Mapping[str, TestDatabase],
    reynard_db: TestDatabase,
    reynard_db_async_connection: AsyncConnection,
) -> AsyncIterator[Mapping[str, AsyncConnection]]:
    """Registry name -> an ``AsyncConnection`` rolled back after the test, one per database
    the test asks for (``reynard_db_connections``, async); the first database's is
    ``reynard_db_async_connection`` itself, so ``reynard_db_async_session`` sees its writes."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from .fixtures import replace_after_escape
    from .outer_transaction import Outcome, rolled_back_async

    outcomes: list[tuple[TestDatabase, Outcome]] = []
    engines: list[AsyncEngine] = []
    with catch_harness_errors(request):
        async with AsyncExitStack() as stack:
            connections: dict[str, AsyncConnection] = {}
            for name, database in reynard_dbs.items():
                if database is reynard_db:
                    connections[name] = reynard_db_async_connection
                    continue
                engine = create_async_engine(async_url(database), poolclass=NullPool)
                engines.append(engine)
                connections[name], outcome = await stack.enter_async_context(
                    rolled_back_async(database, engine)
                )
                outcomes.append((database, outcome))
            yield AskedFor("reynard_db_async_connections", connections)
        for engine in engines:
            await engine.dispose()
    escaped = [database for database, outcome in outcomes if not outcome.intact]
    if escaped:
        replace_after_escape(request, "reynard_db_async_connections", escaped)


@pytest.fixture
async def reynard_db_async_session(
    request: pytest.FixtureRequest,
    reynard_db: TestDatabase,
    reynard_db_async_connection: AsyncConnection,
) -> AsyncIterator[AsyncSession]:
    """An ``AsyncSession`` on ``reynard_db_async_connection``; its commits become savepoints.

    ``expire_on_commit=False``, as SQLAlchemy advises for asyncio: an attribute read after
    a commit would otherwise need a lazy load, which asyncio cannot do implicitly.
    """
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import AsyncSession

    from .outer_transaction import outer_transaction_intact, server_gone_as_error

    session = AsyncSession(
        bind=reynard_db_async_connection,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
    )
    try:
        yield session
    finally:
        with catch_harness_errors(request), server_gone_as_error(reynard_db):
            try:
                await session.close()
            except DBAPIError:
                # As reynard_db_session: a savepoint lost with an outer transaction the
                # test ended is the connection fixture's to report.
                if await reynard_db_async_connection.run_sync(outer_transaction_intact):
                    raise


def async_url(database: TestDatabase) -> URL:
    """``database.url`` with the async driver: asyncpg where the database's ini names it
    (``sqlalchemy.url = postgresql+asyncpg://...``) and it is installed, else psycopg."""
    wants_asyncpg = _ini_driver(database.entry) == "asyncpg"
    asyncpg = wants_asyncpg and _importable("asyncpg")
    return database.url.set(drivername="postgresql+asyncpg" if asyncpg else "postgresql+psycopg")


def _importable(module: str) -> bool:
    """Whether ``module`` imports (a module found but broken is as good as missing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _ini_driver(entry: Database) -> str | None:
    """The driver the ini's ``sqlalchemy.url`` names (``asyncpg``), if it names one."""
    from configparser import Error as IniError

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = entry.ini_url()
        return make_url(url).get_driver_name() if url else None
    except (ArgumentError, ValueError, IniError):  # a placeholder (driver://...), %(x)s unset
        return None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """Have pytest-asyncio run our async fixtures for a test anyio does not run, in the
    loop of the test's loop scope (strict mode runs only the fixtures marked for it)."""
    func = fixturedef.func
    if (
        fixturedef.argname not in ASYNC_FIXTURES
        or getattr(func, "__module__", None) != __name__  # a conftest's fixture of that name
        or "anyio_backend" in request.fixturenames  # anyio's own hook runs them
        or not request.config.pluginmanager.has_plugin("asyncio")
    ):
        return (yield)
    # Until the fixture's teardown: pytest-asyncio looks at the mark again when it calls
    # the test (strict mode warns of an unmarked async fixture); anyio's test, next, gets
    # the unmarked function back.
    marked = pytest.MonkeyPatch()
    marked.setattr(fixturedef, "func", _marked_for_pytest_asyncio(func, _test_loop_scope(request)))
    request.addfinalizer(marked.undo)
    return (yield)


def _marked_for_pytest_asyncio(func: Any, loop_scope: str) -> Any:
    """A copy of ``func`` marked with ``pytest_asyncio.fixture`` (the mark is an attribute
    of the function; the copy keeps the original unmarked for anyio's tests)."""
    import pytest_asyncio

    copy = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__module__ = func.__module__
    # (its overloads type a fixture function written as such, not one built at run time)
    pytest_asyncio.fixture(copy, loop_scope=loop_scope)  # type: ignore[call-overload]
    return copy


def _test_loop_scope(request: pytest.FixtureRequest) -> str:
    """The loop scope pytest-asyncio runs the requesting test in: its ``asyncio`` mark's
    ``loop_scope``, else the ini's ``asyncio_default_test_loop_scope``, else the function."""
    marker = request.node.get_closest_marker("asyncio")
    scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope") if marker else None
    return str(scope or request.config.getini("asyncio_default_test_loop_scope") or "function")
