"""The connection ``env.py`` migrates on, as a check walking in one run sees it.

A walk in one ``env.py`` run reads the version table back between steps on the
connection Alembic migrates on: the one the check passed, or one ``env.py``
opened itself (the stock ``alembic init`` env.py builds its own engine from
``sqlalchemy.url``, which the check aims at its throw-away database). Before the
first step the check makes sure such a connection is on that very database; one
on any other (an ``env.py`` that migrates elsewhere) is not walked this way.

The reads go through the DBAPI connection, not SQLAlchemy's execution: they run
at every step, and they must not begin a SQLAlchemy transaction of their own on a
connection whose transactions ``env.py`` and Alembic manage.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection


def same_connection(theirs: Connection | None, ours: Connection) -> bool:
    """Whether ``theirs`` is ``ours`` (the same DBAPI connection)."""
    if theirs is None:
        return False
    try:
        return theirs.connection.dbapi_connection is ours.connection.dbapi_connection
    except Exception:  # a connection of another kind (a mock, offline): not ours
        return False


def backend_pid(connection: Connection) -> int:
    """The server process behind ``connection`` (ends the read's transaction)."""
    pid = int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    connection.rollback()
    return pid


def beside(theirs: Connection | None, pid: int) -> bool:
    """Whether ``theirs`` is on the database where backend ``pid`` (the check's own
    connection, holding the lock) is: same server, same database.

    The throw-away database's name is random, so a backend with that pid on a
    database of that name is the check's. Any error says no: the walk then takes
    one ``env.py`` run per step, which reads back on the check's connection.
    """
    if theirs is None:
        return False
    try:
        rows = rows_of(
            theirs,
            "SELECT 1 FROM pg_stat_activity "
            f"WHERE pid = {int(pid)} AND datname = current_database()",
        )
    except Exception:
        return False
    return bool(rows)


def rows_of(connection: Connection, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (no parameters), run on ``connection``'s DBAPI connection."""
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()
