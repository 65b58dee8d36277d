"""What a new connection really reached, asked of the connection itself (``hooks``' net).

The checks before connecting (``target``) emulate each driver's reading of its
parameters, environment and service files; an emulation can be wrong. This is the
invariant behind it, right after each driver connects and before any statement of
the caller's: the host and port the driver itself says it connected to (psycopg's
and psycopg2's ``conn.info``, asyncpg's address, pg8000's socket peer), the
database the server says it is in (``current_database()``), and the server's
identity (``system_identifier`` and start time: one running cluster; not a port).
``Guard.allows_reached`` judges them.
"""

from __future__ import annotations

import csv
import io
import socket
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL

from ..urls import escaped
from .target import LIBPQ, SOCKET_FILE, Endpoint, Target, compared_host, redirected, url_params

#: One round trip, no transaction left open. The identity: the cluster's
#: ``system_identifier`` (made by ``initdb``; the harness's servers share one, copied from
#: its cached initdb) with the postmaster's start time, which tells two running copies
#: apart. A role that may not read the control data (a managed service's) gets the
#: start time alone.
TRUTH_QUERY = (
    "SELECT current_database(), concat_ws('@', CASE WHEN has_function_privilege("
    "'pg_control_system()', 'EXECUTE') THEN (SELECT system_identifier::text "
    "FROM pg_control_system()) END, extract(epoch FROM pg_postmaster_start_time())::text)"
)


@dataclass(frozen=True)
class Reached:
    """A connection as it is: its database, its server's identity (``TRUTH_QUERY``; None:
    not known) and where its driver says it connected (a name and an address may both be
    said)."""

    dbname: str
    identity: str | None
    places: tuple[Endpoint, ...]

    def shown(self) -> str:
        where = ",".join(dict.fromkeys(str(p) for p in self.places)) or "a server"
        return escaped(f"database {self.dbname!r} at {where}")


def _reached(row: Any, places: list[Endpoint | None]) -> Reached:
    dbname, identity = _text(row[0]), row[1]
    found = tuple(p for p in places if p is not None)
    return Reached(dbname, None if identity is None else _text(identity), found)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _place(host: str | None, port: Any) -> Endpoint | None:
    """As the allow-list compares places: a socket folder's symlinks resolved, a name in
    lower case."""
    if not host:
        return None
    try:
        return Endpoint(compared_host(host), int(port))
    except (TypeError, ValueError):
        return None


def _socket_place(address: Any) -> Endpoint | None:
    """A peer address: ``(host, port, ...)``, or a Unix socket's file path."""
    if isinstance(address, tuple) and len(address) >= 2:
        return _place(str(address[0]), address[1])
    if isinstance(address, (str, bytes)) and address:
        path = address.decode() if isinstance(address, bytes) else address
        folder, _, name = path.rpartition("/")
        found = SOCKET_FILE.match(name)
        return _place(folder or "/", found.group(1)) if found else None
    return None


def psycopg_reached(conn: Any) -> Reached:
    """psycopg 3 (sync or async: one blocking round trip at libpq's level, outside
    psycopg's transaction bookkeeping, so no transaction is begun)."""
    result = conn.pgconn.exec_(TRUTH_QUERY.encode())
    if result.status != 2:  # TUPLES_OK
        raise OSError(result.error_message.decode(errors="replace").strip())
    info = conn.info
    row = (result.get_value(0, 0), result.get_value(0, 1))
    return _reached(row, [_place(info.host, info.port), _place(info.hostaddr, info.port)])


def psycopg2_reached(conn: Any) -> Reached:
    """psycopg2: the answer as the server wrote it (``COPY ... TO STDOUT``, CSV), never
    through the process's typecasters, which any imported module may replace."""
    import psycopg2.extensions

    # The plain cursor class itself: a connection_factory's ``cursor()`` may refuse until the
    # caller sets it up (LoggingConnection's ``initialize``), or return dicts.
    answer = io.StringIO()
    with psycopg2.extensions.cursor(conn) as cursor:
        psycopg2.extensions.cursor.copy_expert(
            cursor, f"COPY ({TRUTH_QUERY}) TO STDOUT (FORMAT csv)", answer
        )
    conn.rollback()  # what the query began (without autocommit)
    row = next(csv.reader(io.StringIO(answer.getvalue())))
    return _reached([value or None for value in row], [_place(conn.info.host, conn.info.port)])


async def asyncpg_reached(conn: Any) -> Reached:
    row = await conn.fetchrow(TRUTH_QUERY)
    transport = getattr(conn, "_transport", None)
    peer = transport.get_extra_info("peername") if transport is not None else None
    return _reached(row, [_socket_place(getattr(conn, "_addr", None)), _socket_place(peer)])


def pg8000_reached(conn: Any) -> Reached:
    context = conn.execute_unnamed(TRUTH_QUERY)
    usock = getattr(conn, "_usock", None)
    peer = None
    if isinstance(usock, socket.socket):
        peer = usock.getpeername()
    return _reached(context.rows[0], [_socket_place(peer)])


def cursor_reached(conn: Any) -> Reached:
    """Any other DB-API connection (one a driver's lowest level opened): the server's
    word only, no place."""
    cursor = conn.cursor()
    try:
        cursor.execute(TRUTH_QUERY)
        row = cursor.fetchone()
    finally:
        cursor.close()
        conn.rollback()
    return _reached(row, [])


def identity_at(place: Endpoint, url: URL) -> str | None:
    """The identity of the server at ``place``, asked by the guard itself with the
    credentials of ``url`` (the URL that allowed the place), before the first connection
    seen there is believed: that connection may have been dialled elsewhere (``hostaddr=``,
    a service file) while naming the place. Every where-and-who keyword explicit, so that
    neither ``$PGHOSTADDR`` nor a service file picks the address; at libpq's lowest level,
    which no hook judges. ``OSError`` when the server cannot be asked."""
    import psycopg
    from psycopg import generators, pq, waiting
    from psycopg.conninfo import make_conninfo

    params = url_params(url)
    aimed = Target((place,), params.get("dbname") or "postgres", params.get("user") or "")
    pinned = redirected(params, aimed, url.password, family=LIBPQ)
    # said in the server's log and pg_stat_activity, and unable to write whatever it is
    pinned["application_name"] = "reynard-db guard"
    pinned["options"] = f"{pinned.get('options') or ''} -c default_transaction_read_only=on"
    try:  # psycopg's own non-blocking connect: ``PGconn.connect`` holds the GIL throughout
        conn = waiting.wait_conn(generators.connect(make_conninfo(**pinned)), timeout=10.0)
    except psycopg.Error as exc:
        raise OSError(str(exc).strip()) from None
    try:
        result = conn.exec_(TRUTH_QUERY.encode())
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise OSError(result.error_message.decode(errors="replace").strip())
        identity = result.get_value(0, 1)
    finally:
        conn.finish()
    return None if identity is None else _text(identity)
