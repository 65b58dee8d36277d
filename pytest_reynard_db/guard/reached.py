"""What a new connection really reached, asked of the connection itself (``hooks``' net).

The checks before connecting (``target``) emulate each driver's reading of its
parameters, environment and service files; an emulation can be wrong. This is the
invariant behind it, right after each driver connects and before any statement of
the caller's: the host and port the driver itself says it connected to (psycopg's
and psycopg2's ``conn.info``, asyncpg's address, pg8000's socket peer), the
database the server says it is in (``current_database()``), and the server's
identity (the postmaster's start time: one running server; not a port).
``Guard.allows_reached`` judges them.
"""

from __future__ import annotations

import csv
import functools
import io
import socket
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL

from ..foundation.urls import escaped, parse_url
from .target import (
    LIBPQ,
    Endpoint,
    Target,
    compared_host,
    peer_endpoint,
    redirected,
    target_of,
    url_params,
)

#: One round trip, no transaction left open, every function named in ``pg_catalog`` (a
#: schema earlier on a role's ``search_path`` could otherwise answer for it). The
#: identity: the postmaster's start time to the microsecond, which names one running
#: server (not a port; the harness's servers share the ``system_identifier`` of their
#: cached initdb, so that would not tell them apart), and which any role may read (a
#: managed service revokes ``pg_control_system()``). A restart is another server, and the
#: guard does not ask again (``Guard.allows_reached``).
TRUTH_QUERY = (
    "SELECT pg_catalog.current_database(), pg_catalog.to_char(pg_catalog.timezone('UTC', "
    "pg_catalog.pg_postmaster_start_time()), 'YYYY-MM-DD HH24:MI:SS.US')"
)


@dataclass(frozen=True)
class Reached:
    """A connection as it is: its database, its server's identity (``TRUTH_QUERY``; None:
    not known) and where its driver says it connected (a name and an address may both be
    said)."""

    dbname: str
    identity: str | None
    places: tuple[Endpoint, ...]
    #: The address the driver says it dialled (psycopg's ``hostaddr``), when it says one:
    #: a host name among ``places`` stands for the connection only if it has that address.
    dialled: Endpoint | None = None

    def shown(self) -> str:
        where = ",".join(dict.fromkeys(str(p) for p in self.places)) or "a server"
        return escaped(f"database {self.dbname!r} at {where}")


def _reached(row: Any, places: list[Endpoint | None], dialled: Endpoint | None = None) -> Reached:
    dbname, identity = _text(row[0]), row[1]
    found = tuple(p for p in places if p is not None)
    return Reached(dbname, None if identity is None else _text(identity), found, dialled)


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


def psycopg_reached(conn: Any) -> Reached:
    """psycopg 3 (sync or async: one blocking round trip at libpq's level, outside
    psycopg's transaction bookkeeping, so no transaction is begun)."""
    result = conn.pgconn.exec_(TRUTH_QUERY.encode())
    if result.status != 2:  # TUPLES_OK
        raise OSError(result.error_message.decode(errors="replace").strip())
    info = conn.info
    row = (result.get_value(0, 0), result.get_value(0, 1))
    dialled = _place(info.hostaddr, info.port)
    return _reached(row, [_place(info.host, info.port), dialled], dialled)


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
    return _reached(row, [peer_endpoint(getattr(conn, "_addr", None)), peer_endpoint(peer)])


def pg8000_reached(conn: Any) -> Reached:
    context = conn.execute_unnamed(TRUTH_QUERY)
    usock = getattr(conn, "_usock", None)
    peer = None
    if isinstance(usock, socket.socket):
        peer = usock.getpeername()
    return _reached(context.rows[0], [peer_endpoint(peer)])


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
    neither ``$PGHOSTADDR`` nor a service file picks the address; only libpq's own keywords
    of the URL's query kept (another driver's options mean nothing to it); psycopg's own
    connect (its timeouts), which the hooks let pass. ``OSError`` when the server cannot be
    asked."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from .hooks import guard_asking

    known = _libpq_keywords()
    params = {k: v for k, v in url_params(url).items() if k in known}
    aimed = Target((place,), params.get("dbname") or "postgres", params.get("user") or "")
    pinned = redirected(params, aimed, url.password, family=LIBPQ)
    pinned["connect_timeout"] = "10"
    # said in the server's log and pg_stat_activity, and unable to write whatever it is
    pinned["application_name"] = "reynard-db guard"
    pinned["options"] = f"{pinned.get('options') or ''} -c default_transaction_read_only=on"
    # any server answers: $PGTARGETSESSIONATTRS=read-write refused the session made read-only
    # just above, and so every ask (a new server's readiness probe waited out its timeout)
    pinned["target_session_attrs"] = "any"
    try:
        with guard_asking():
            conn = psycopg.connect(make_conninfo(**pinned), autocommit=True)
    except psycopg.Error as exc:
        raise OSError(str(exc).strip()) from None
    try:  # at libpq's level: no loader an application registered reads the answer
        result = conn.pgconn.exec_(TRUTH_QUERY.encode())
        if result.status != 2:  # TUPLES_OK
            raise OSError(result.error_message.decode(errors="replace").strip())
        identity = result.get_value(0, 1)
    finally:
        conn.close()
    return None if identity is None else _text(identity)


def server_identity(url: str | URL) -> str | None:
    """The identity of the server at ``url``'s place (``identity_at``); None when nothing
    answers there as that server: one connection that is both a readiness probe and the
    guard's ask (``Guard.allow_server(url, identity=...)``). The place the URL itself
    names: ``$PGHOSTADDR`` would otherwise send a probe of our socket directory to
    whatever answers on that address."""
    parsed = parse_url(url)
    target = target_of(url_params(parsed), environ={})
    try:
        return identity_at(target.endpoints[0], parsed)
    except OSError:
        return None


def socket_identity(directory: str, port: int, url: str | URL) -> str | None:
    """The identity of the server listening in socket directory ``directory`` on ``port``,
    asked with ``url``'s credentials (``identity_at``, and its ``OSError``). The directory
    as given, not resolved as the allow-list compares places: PostgreSQL made its socket
    at the path it was given, and behind a symlink the real path may be too long for any
    socket (107 bytes)."""
    return identity_at(Endpoint(directory, port), parse_url(url))


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    from psycopg import pq

    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())
