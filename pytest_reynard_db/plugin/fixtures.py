"""The plugin's fixtures: the server, the selected database, connections and sessions
rolled back after each test, fresh databases and databases at any revision.

Each is a thin front over ``Provisioner`` (``provision``): every selected database is
migrated once into a template, and tests get clones of it or rolled-back
transactions on a session clone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from .stash import catch_harness_errors, provisioner_of, run_state

# Nothing heavy is imported here either: SQLAlchemy and the servers load in the fixtures.
if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from ..postgres import Server
    from ..provision import TestDatabase


@pytest.fixture(scope="session")
def reynard_db_server(request: pytest.FixtureRequest) -> Server:
    """The run's PostgreSQL server: ``.url``, ``.create_database``, ``.drop_database``."""
    with catch_harness_errors(request):
        return run_state(request).server


@pytest.fixture(scope="session")
def reynard_db_name(request: pytest.FixtureRequest) -> str:
    """The registry name of the database a test runs against (marker, else --reynard-db)."""
    state = run_state(request)
    name = getattr(request, "param", None)
    if name is None and state.settings.from_markers:
        pytest.fail(
            "no database selected: this test has no @pytest.mark.reynard_db(NAME) and no "
            "--reynard-db=NAME was given",
            pytrace=False,
        )
    name = name or next(iter(state.settings.databases), None)
    if name is None:
        pytest.fail("no database selected: pass --reynard-db=NAME", pytrace=False)
    with catch_harness_errors(request):
        state.registry.get(name)
    return str(name)


@pytest.fixture(scope="session")
def reynard_db(request: pytest.FixtureRequest, reynard_db_name: str) -> Iterator[TestDatabase]:
    """The selected database migrated to heads, for the whole session."""
    provisioner = provisioner_of(request)
    with catch_harness_errors(request):
        database = provisioner.clone(reynard_db_name, purpose="session")
    yield database
    provisioner.drop(database)


@pytest.fixture
def reynard_db_connection(
    request: pytest.FixtureRequest, reynard_db: TestDatabase
) -> Iterator[Connection]:
    """A connection in a transaction rolled back after the test, whatever the test commits.

    A test that ends that transaction itself (a raw ``COMMIT``, a DBAPI-level
    commit) fails at teardown, and the session database is replaced by a fresh
    clone: what it committed never reaches a later test. A server lost meanwhile is one
    line naming the database (see ``outer_transaction``).
    """
    from .outer_transaction import rolled_back

    with catch_harness_errors(request), rolled_back(reynard_db) as (connection, outcome):
        yield connection
    if not outcome.intact:
        _replace_after_escape(request, reynard_db)


@pytest.fixture
def reynard_db_session(
    request: pytest.FixtureRequest, reynard_db_connection: Connection, reynard_db: TestDatabase
) -> Iterator[Session]:
    """An ORM session on ``reynard_db_connection``; its commits become savepoints."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session

    from .outer_transaction import outer_transaction_intact, server_gone_as_error

    session = Session(bind=reynard_db_connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        with catch_harness_errors(request), server_gone_as_error(reynard_db):
            try:
                session.close()
            except DBAPIError:
                # Its savepoint went with an outer transaction the test ended: the
                # connection fixture says so; anything else is the session's own error.
                if outer_transaction_intact(reynard_db_connection):
                    raise


@pytest.fixture
def reynard_db_fresh(
    request: pytest.FixtureRequest, reynard_db_name: str
) -> Iterator[TestDatabase]:
    """A database of this test's own, cloned from the migrated template, dropped after."""
    provisioner = provisioner_of(request)
    with catch_harness_errors(request):
        database = provisioner.clone(reynard_db_name, purpose="fresh")
    yield database
    provisioner.drop(database)


@pytest.fixture(scope="session")
def reynard_db_factory(request: pytest.FixtureRequest) -> Callable[..., TestDatabase]:
    """``factory(name, revision="heads")``: a database at any revision (templates cached)."""
    provisioner = provisioner_of(request)

    def factory(name: str, revision: str = "heads") -> TestDatabase:
        with catch_harness_errors(request):
            return provisioner.clone(name, revision, purpose="rev")

    return factory


def _replace_after_escape(request: pytest.FixtureRequest, database: TestDatabase) -> None:
    """Replace the session database with a fresh clone, then fail the test saying why."""
    with catch_harness_errors(request):
        provisioner_of(request).replace(database)
    pytest.fail(
        f"reynard_db_connection: {request.node.name} ended the outer transaction itself "
        "(a raw COMMIT or ROLLBACK, or a commit on the DBAPI connection), so what it wrote "
        f"before may have been committed; the session database {database.name} was replaced "
        "by a fresh clone of its template. Use connection.commit() (a savepoint here), or "
        "reynard_db_fresh for code that must really commit.",
        pytrace=False,
    )
