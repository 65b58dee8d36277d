"""The per-database settings a template's clones must carry.

A migration may set its database's defaults (``ALTER DATABASE ... SET search_path TO
billing, public``, a ``timezone``); PostgreSQL keeps them in ``pg_db_role_setting``, and
``CREATE DATABASE ... TEMPLATE`` does not copy them: every test database cloned from the
template started with the server's defaults, where ``alembic upgrade`` on one database
keeps them. Each clone is given its template's, written as ``pg_dump`` writes them (a list
setting such as ``search_path`` element by element, each quoted; any other as one quoted
value).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.sql import Composed

#: Settings whose value is a list of quoted elements (``pg_dump``'s
#: ``variable_is_guc_list_quote``).
LIST_SETTINGS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)

_OF_DATABASE = (
    "SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s"
    " JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase"
    " WHERE d.datname = %s AND s.setrole = 0"
)


def settings_of(conn: Connection[Any], database: str) -> list[str]:
    """``database``'s own settings, as PostgreSQL stores them (``name=value``)."""
    row = conn.execute(_OF_DATABASE, (database,)).fetchone()
    stored = row[0] if row else None
    return [str(entry) for entry in stored] if isinstance(stored, list) else []


def alter_statements(database: str, settings: list[str]) -> list[Composed]:
    """``ALTER DATABASE database SET name TO ...`` for each of ``settings``."""
    from psycopg import sql

    statements = []
    for entry in settings:
        name, _, value = entry.partition("=")
        values = (split_list(value) or [""]) if name.lower() in LIST_SETTINGS else [value]
        statements.append(
            sql.SQL("ALTER DATABASE {} SET {} TO {}").format(
                sql.Identifier(database),
                sql.Identifier(*name.split(".")),  # a custom one: app.tenant
                sql.SQL(", ").join(sql.Literal(v) for v in values),
            )
        )
    return statements


def split_list(value: str) -> list[str]:
    """A list setting's stored value into its elements (PostgreSQL's ``SplitGUCList``):
    comma-separated, white space around each dropped, a double-quoted element taken
    whole (``""`` inside it one quote)."""
    elements: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            i += 1
            element = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        element.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                element.append(value[i])
                i += 1
            elements.append("".join(element))
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            elements.append(value[start:i].strip())
        while i < n and value[i] != ",":
            i += 1
        i += 1  # past the comma
    return elements
