"""The transaction ``reynard_db_connection`` (and ``reynard_db_async_connection``) wraps
each test in, and rolls back.

Kept out of ``fixtures`` (a thin front): the connection, its outer transaction and
the savepoints its commits become, and what a lost server looks like from here. A
server that went away (its postmaster killed) shows up as a driver error deep in
SQLAlchemy; it is said as one ``ServerError`` line naming the database, which the
plugin's ``stash.catch_harness_errors`` reports without a traceback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, RootTransaction, event
from sqlalchemy.exc import DBAPIError

from ..foundation.errors import ServerError
from ..foundation.urls import first_line, mask_url
from ..provisioning.provision import TestDatabase

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

OUTER_SAVEPOINT = "reynard_db_outer"  # see outer_transaction_intact
#: The fixture's own statements, whatever options the test set on the connection
#: (``execution_options`` changes a Connection in place): ``stream_results`` made them
#: server-side cursors, ``DECLARE ... CURSOR FOR ROLLBACK ...``.
OWN_STATEMENT = {"stream_results": False}
#: What a rollback leaves on the session and the next test on this pooled connection would
#: find: session-level advisory locks and prepared statements (psycopg forgets its own
#: prepared statements when it sees ``DEALLOCATE ALL``, as after any ``ROLLBACK``).
SESSION_RESET = "; SELECT pg_advisory_unlock_all(); DEALLOCATE ALL"


@dataclass
class Outcome:
    """What the test did to the outer transaction, known once it is rolled back."""

    intact: bool = True


@contextmanager
def rolled_back(database: TestDatabase) -> Iterator[tuple[Connection, Outcome]]:
    """A connection in a transaction rolled back at the end, whatever the test commits."""
    outcome = Outcome()
    try:
        connection = database.engine.connect()
    except DBAPIError as exc:  # whatever it is, it is the harness's connection that failed
        raise _unreachable(database, exc) from None
    with server_gone_as_error(database), connection:
        outer = begin_outer(connection)
        try:
            yield connection, outcome
        finally:
            outcome.intact = rolled_back_to_start(connection)
            _end(outer)


@asynccontextmanager
async def rolled_back_async(
    database: TestDatabase, engine: AsyncEngine
) -> AsyncIterator[tuple[AsyncConnection, Outcome]]:
    """``rolled_back`` on an ``AsyncConnection`` of ``engine``: the same transaction, as the
    async connection is a front over a sync ``Connection`` (``run_sync`` reaches it)."""
    outcome = Outcome()
    connection = engine.connect()
    try:
        await connection.start()
    except DBAPIError as exc:
        raise _unreachable(database, exc) from None
    with server_gone_as_error(database):
        try:
            outer = await connection.run_sync(begin_outer)
            try:
                yield connection, outcome
            finally:
                outcome.intact = await connection.run_sync(outer_transaction_intact)
                await connection.run_sync(lambda _: _end(outer))
        finally:
            await connection.close()


def _end(outer: RootTransaction) -> None:
    """Roll the outer transaction back (nothing left to send where the server's is already
    over); a test that closed the connection (``with connection:``) ended it already, and
    SQLAlchemy warns of a second rollback ("transaction already deassociated")."""
    if outer.is_active:
        outer.rollback()


def begin_outer(connection: Connection) -> RootTransaction:
    """Open the outer transaction and its own savepoint; commits become savepoints."""
    outer = connection.begin()
    connection.exec_driver_sql(f"SAVEPOINT {OUTER_SAVEPOINT}", execution_options=OWN_STATEMENT)
    commit_to_savepoints(connection)
    return outer


@contextmanager
def server_gone_as_error(database: TestDatabase) -> Iterator[None]:
    """A lost connection (server killed, or unreachable) as one line naming the database;
    any other database error is the code under test's, and stays as it is."""
    try:
        yield
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise _unreachable(database, exc) from None


def _unreachable(database: TestDatabase, exc: DBAPIError) -> ServerError:
    return ServerError(
        f"database {database.name!r} ({mask_url(database.url)}): the server cannot be "
        f"reached: {first_line(exc.orig)}"
    )


def outer_transaction_intact(connection: Connection, *, then: str = "") -> bool:
    """Whether the fixture's outer transaction is still open on the server.

    It holds a savepoint of its own (``OUTER_SAVEPOINT``), made first: rolling
    back to it works in that transaction, even after a failed statement, and
    fails in any other (a raw ``COMMIT`` ends it; the driver then opens a new one).
    A lost connection is not the test's doing: it is raised, not answered.
    ``then``: a statement sent in the same message, run only when the rollback worked.
    """
    if connection.closed or connection.invalidated:
        return True  # closing it rolled back whatever was open
    try:
        connection.exec_driver_sql(
            f"ROLLBACK TO SAVEPOINT {OUTER_SAVEPOINT}{then}", execution_options=OWN_STATEMENT
        )
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        return False
    return True


#: Drivers that send a statement without parameters as a simple query, which may hold
#: several statements (asyncpg and pg8000 prepare every statement: one per message).
SIMPLE_QUERY_DRIVERS = frozenset({"psycopg", "psycopg2"})


def rolled_back_to_start(connection: Connection) -> bool:
    """``outer_transaction_intact``, and the outer transaction rolled back and the session's
    advisory locks and prepared statements ended (``SESSION_RESET``), in one round trip
    where the driver allows (a test pays for every round trip of the fixture): the
    ``ROLLBACK`` after a ``ROLLBACK TO SAVEPOINT`` that failed does not run, and the
    caller's rollback sends it then (the connection is then replaced: see ``Outcome``).
    Drivers that prepare every statement (asyncpg, pg8000) keep a cache of their own that
    ``DEALLOCATE ALL`` would break: their connections are not pooled across tests."""
    simple = connection.dialect.driver in SIMPLE_QUERY_DRIVERS
    return outer_transaction_intact(connection, then=f"; ROLLBACK{SESSION_RESET}" if simple else "")


def commit_to_savepoints(connection: Connection) -> None:
    """Make ``commit()``/``rollback()`` on the test's connection act on a savepoint.

    The outer transaction must survive anything the code under test does, so a
    commit releases the current savepoint and opens the next one.
    """
    connection.begin_nested()

    @event.listens_for(connection, "commit")
    def _never_commit(conn: Connection) -> None:
        raise RuntimeError("reynard_db_connection: the outer transaction must not commit")

    def ending_the_savepoint(how: str) -> Callable[[], None]:
        def end() -> None:
            # SQLAlchemy sends SAVEPOINT and RELEASE with the connection's own options, and
            # a stream_results the test set made them server-side cursors: off meanwhile
            streaming = connection.get_execution_options().get("stream_results", False)
            if streaming:
                connection.execution_options(stream_results=False)
            try:
                nested = connection.get_nested_transaction()
                if nested is not None:
                    getattr(nested, how)()  # release or roll back the savepoint ...
                connection.begin_nested()  # ... and open the next one
            finally:
                if streaming:
                    connection.execution_options(stream_results=streaming)

        return end

    connection.commit = ending_the_savepoint("commit")  # type: ignore[method-assign]
    connection.rollback = ending_the_savepoint("rollback")  # type: ignore[method-assign]
