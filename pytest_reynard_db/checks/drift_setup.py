"""What production had before its first migration, given to ``drift``'s throw-away database.

A tree's migrations create their objects where the migrating session's ``search_path``
says, and may grant to roles the server has: neither is in the tree. A production
database whose application role owns a schema of its name (PostgreSQL's secure schema
pattern, ``"$user", public``), or whose ``search_path`` is set on the database, keeps
its tables there; migrated as the throw-away server's superuser, the same tree puts
them in ``public``, and every table would be drift. So the throw-away database is
migrated as production's was, as far as its own server can say:

- the live session's ``search_path`` (its ``"$user"`` the live role), with the schema
  the live version table is in first: where Alembic wrote it is where the migrations ran;
- that schema made empty beforehand when the tree does not make it (a DBA's set-up:
  the first migration is tried without it, and again on a fresh database with it);
- the live server's roles, made ``NOLOGIN`` on the throw-away server (ours alone), so
  that a ``GRANT`` or a policy ``TO`` one migrates.

Read in the live database's own session, by qualified functions and catalog reads only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg import sql
from sqlalchemy import Connection, text

if TYPE_CHECKING:
    from ..postgres import Server

#: One element of a ``search_path`` as ``SHOW`` prints it: a quoted or a bare name.
_ELEMENT = re.compile(r'\s*("(?:[^"]|"")*"|[^,\s]+)\s*(?:,|$)')


@dataclass(frozen=True)
class LiveSession:
    """The live session's own view: the schemas its names resolve in (those that exist),
    its ``search_path`` as set (``"$user"`` replaced by its role), and the server's roles."""

    path: tuple[str, ...]
    search_path: tuple[str, ...]
    roles: tuple[str, ...]

    @classmethod
    def read(cls, connection: Connection) -> LiveSession:
        row = connection.execute(
            text(
                "SELECT pg_catalog.current_schemas(false), "
                "pg_catalog.current_setting('search_path'), pg_catalog.session_user(), "
                "ARRAY(SELECT rolname FROM pg_catalog.pg_roles "
                "WHERE rolname OPERATOR(pg_catalog.!~) '^pg_' ORDER BY 1)"
            )
        ).one()
        path, setting, user, roles = row
        named = [_unquoted(m.group(1)) for m in _ELEMENT.finditer(setting) if m.group(1)]
        return cls(
            tuple(path or ()),
            tuple(user if name == "$user" else name for name in named),
            tuple(roles or ()),
        )

    def search_path_for(self, schema: str | None) -> tuple[str, ...]:
        """The throw-away database's ``search_path``: ``schema`` (the live version table's)
        first, then the live session's own."""
        first = (schema,) if schema is not None else ()
        return first + tuple(name for name in self.search_path if name != schema)


def prepare(
    server: Server,
    database: str,
    live: LiveSession,
    schema: str | None,
    *,
    make_schema: bool,
) -> None:
    """Give ``database`` (empty, on ``server``) the live set-up before it migrates."""
    from ..postgres import EphemeralServer

    with server.admin() as admin:
        if isinstance(server, EphemeralServer):  # ours alone: its roles are no one's
            have = {row[0] for row in admin.execute("SELECT rolname FROM pg_catalog.pg_roles")}
            for role in live.roles:
                if role not in have:
                    admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        path = sql.SQL(", ").join(sql.Identifier(n) for n in live.search_path_for(schema))
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET search_path TO {}").format(
                sql.Identifier(database), path
            )
        )
    if make_schema and schema is not None:
        with server.connect(database) as connection:
            connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )


def has_schema(server: Server, database: str, schema: str | None) -> bool:
    """Whether ``database`` has ``schema`` (None: no schema asked for)."""
    if schema is None:
        return True
    with server.connect(database) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
    return found is not None


def _unquoted(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name
