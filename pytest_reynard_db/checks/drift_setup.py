"""What production had before its first migration, given to ``drift``'s throw-away database.

A tree's migrations create their objects where the migrating session's ``search_path``
says, as the role it runs as, and may grant to roles the server has: none of that is in
the tree. Migrated as the throw-away server's superuser, in ``public``, a tree whose
production database keeps its tables in a schema named after the application's role
(PostgreSQL's secure schema pattern, ``"$user", public``), or in a schema a DBA made
and set on the database, would be all drift. So the throw-away database is migrated in
up to three ways, each only when the ones before do not match the live database:

1. with the live session's ``search_path`` as set (``"$user"`` kept: a function made
   with ``SET search_path FROM CURRENT`` keeps it as written);
2. with the schema the live version table is in first: where Alembic wrote it is where
   the migrations ran, when the path was changed since (a role's path set afterwards);
3. as production may have been set up by hand before its first migration (a DBA's
   step, not the tree's): the schemas of the live session's path and of the live
   version table made empty first, the live server's roles made on the throw-away
   server (ours alone), each ``NOLOGIN SUPERUSER`` so that nothing a role may do in
   production is refused there, and the database's sessions run as the live role (its
   ``"$user"``, its ownership).

``drift`` reports the closest (fewest differences; the earlier on a tie). The first two
make nothing the tree may make itself (``CREATE SCHEMA``, ``CREATE ROLE`` without ``IF
NOT EXISTS`` stay as they are in production's history). The live session is read by
one qualified function call on a plain psycopg connection (no SQLAlchemy dialect
set-up, whose unqualified ``current_schema()`` a schema on the live path could answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from ..postgres import Server

#: The live session, in one row: its path (existing schemas), its ``search_path`` as
#: set, its role (``"$user"``), and the server's roles. Every name qualified, the one
#: operator too: the live ``search_path`` is in force on this session.
LIVE_SESSION = (
    "SELECT pg_catalog.current_schemas(false), pg_catalog.current_setting('search_path'), "
    "pg_catalog.current_user(), ARRAY(SELECT rolname FROM pg_catalog.pg_roles "
    "WHERE rolname OPERATOR(pg_catalog.!~) '^pg_' ORDER BY 1)"
)


@dataclass(frozen=True)
class LiveSession:
    """The live session's own view: the schemas its names resolve in (those that exist),
    its ``search_path`` as set, its role, and the server's roles."""

    path: tuple[str, ...]
    search_path: str
    user: str
    roles: tuple[str, ...]

    @classmethod
    def read(cls, connect_args: dict[str, Any]) -> LiveSession:
        with psycopg.connect(**connect_args) as connection:
            row = connection.execute(LIVE_SESSION).fetchone()
            connection.rollback()
        assert row is not None
        path, search_path, user, roles = row
        return cls(tuple(path or ()), str(search_path), str(user), tuple(roles or ()))


def prepare(
    server: Server,
    database: str,
    live: LiveSession,
    version_schema: str | None,
    *,
    version_first: bool = False,
    as_production: bool = False,
) -> None:
    """Give ``database`` (empty, on ``server``) the live set-up before it migrates: the
    live ``search_path`` (``version_first``: after ``version_schema``); ``as_production``:
    also the live path's schemas and ``version_schema`` (where the live version table
    is: an ``env.py`` that sets its own path or ``version_table_schema`` names it), the
    live server's roles, and the live role for its sessions."""
    from ..postgres import EphemeralServer

    target = sql.Identifier(database)
    path = live.search_path
    if version_first and version_schema is not None:
        first = sql.Identifier(version_schema).as_string(None)
        path = f"{first}, {path}" if path else first
    with server.admin() as admin:
        # set_config checks the value as a SET would; FROM CURRENT stores it as it stands
        admin.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (path,))
        admin.execute(sql.SQL("ALTER DATABASE {} SET search_path FROM CURRENT").format(target))
        admin.execute("RESET search_path")
        if not as_production:
            return
        if isinstance(server, EphemeralServer):  # ours alone: its roles are no one's
            have = {row[0] for row in admin.execute("SELECT rolname FROM pg_catalog.pg_roles")}
            for role in live.roles:
                if role not in have:
                    admin.execute(
                        sql.SQL("CREATE ROLE {} NOLOGIN SUPERUSER").format(sql.Identifier(role))
                    )
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET role = {}").format(target, sql.Literal(live.user))
            )
    with server.connect(database) as connection:
        wanted = (*live.path, *([version_schema] if version_schema else []))
        for schema in dict.fromkeys(wanted):
            if schema.startswith("pg_") or schema == "information_schema":
                continue  # PostgreSQL's own, named on a path (pg_catalog, pg_temp)
            connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
