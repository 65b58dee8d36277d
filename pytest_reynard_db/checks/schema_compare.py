"""Two PostgreSQL schemas compared: what ``drift`` finds between a live database and its
tree migrated on a throw-away one.

Tables, columns and their types, nullability, indexes, unique and foreign keys and
comments are Alembic's own autogenerate comparison (as ``models_match``), with the
throw-away database reflected into a ``MetaData`` standing for the models. Everything
else (each column's default, identity, generation, collation and storage, and every
kind of object in ``schema_catalog.KINDS``) is read from ``pg_catalog`` on both sides,
each as PostgreSQL itself prints it. Every difference is said in ``models_match``'s
words: what would make the first database (the live one) match the second (the tree).

Both connections have ``search_path`` set to ``pg_catalog`` alone (``CATALOG_ONLY``), so
no function, operator or type of the live database's can answer a name these reads use
(CVE-2018-1058: a ``public.format(text, name, name)`` is a closer match than the built-in
``format`` wherever it is on the path; pg_dump's answer is the same). Every object of
the application's is then read with its schema, on both sides alike, and a database's
own ``search_path`` is not a difference.

Nothing here writes, and a default is compared as text (PostgreSQL prints both sides
alike), never by evaluating it on the server as Alembic's PostgreSQL comparison does:
evaluating ``nextval(...)`` would advance a sequence.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, text

from .models_match import describe
from .runner import USER_SCHEMA
from .schema_catalog import COLUMNS, KINDS

#: The ``search_path`` of both sides while they are compared (see above).
CATALOG_ONLY = "pg_catalog"
#: What both sides are compared under: the ``search_path`` above, and the settings that
#: change how PostgreSQL prints a default or a constraint (a timestamp's time zone, a
#: date's style), which a production server may set otherwise than the throw-away one.
SESSION = {
    "search_path": CATALOG_ONLY,
    "TimeZone": "UTC",
    "DateStyle": "ISO,MDY",
    "IntervalStyle": "postgres",
}


@dataclass(frozen=True)
class Side:
    """One database to compare: a connection whose ``search_path`` is ``CATALOG_ONLY``, and
    its version table (name, schema; the schema None when it has none), which is Alembic's
    and not compared."""

    connection: Connection
    version_table: tuple[str, str | None]


def differences(live: Side, tree: Side, *, unqualified: str | None) -> list[str]:
    """Each difference between ``live``'s schema and ``tree``'s, one line each; a table of
    schema ``unqualified`` (the live session's own first schema) named without it.

    Alembic compares tables, columns' types and nullability, indexes, unique and
    foreign keys, comments; a column's default (and identity, generation, collation) is
    compared here, as PostgreSQL prints it (Alembic's hook for defaults fails on an
    identity or generated column, and it leaves a serial's default out on one side).
    SQLAlchemy's warnings about what it cannot reflect (an extension's type, a NOT VALID
    constraint's options) are not the user's: those are read from the catalog instead.
    """
    name, schema = live.version_table
    context = MigrationContext.configure(
        live.connection,
        opts={
            "compare_type": True,
            "compare_server_default": False,
            "include_schemas": True,
            # None is the session's default schema: pg_catalog here, never the application's
            "include_name": lambda name, kind, _parents: kind != "schema" or name is not None,
            "version_table": name,
            "version_table_schema": schema,
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = [
            describe(diff, unqualified=unqualified)
            for diff in compare_metadata(context, reflected(tree))
        ]
    found += column_differences(columns(live.connection), columns(tree.connection), unqualified)
    return found + catalog_differences(catalog(live.connection), catalog(tree.connection))


def reflected(side: Side) -> MetaData:
    """Every table of every schema of the application's, each with its schema (its version
    table left out). Defaults are not Alembic's to compare here (``columns`` reads them),
    so the tree is reflected as it is, without Alembic's hook that looks up each serial's
    sequence to leave its default out."""
    metadata = MetaData()
    connection = side.connection
    schemas = connection.execute(
        text(f"SELECT n.nspname FROM pg_namespace n WHERE {USER_SCHEMA} ORDER BY 1")
    ).scalars()
    for schema in schemas:
        metadata.reflect(connection, schema=schema)
    name, schema = side.version_table
    version = metadata.tables.get(f"{schema}.{name}")
    if version is not None:
        metadata.remove(version)
    return metadata


#: Every kind of ``KINDS`` in one statement (one round trip and one plan a side, not one
#: per kind): rows of (kind, name, definition).
_ALL_KINDS = "\nUNION ALL\n".join(
    f"SELECT '{kind}'::text, k.* FROM ({spec.query}) AS k(name, body)"
    for kind, spec in KINDS.items()
)


def catalog(connection: Connection) -> dict[str, dict[str, str]]:
    """Each kind of ``KINDS``: every object's name and definition."""
    found: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
    for kind, name, body in connection.execute(text(_ALL_KINDS)):
        found[kind][str(name)] = str(body)
    return found


def catalog_differences(
    live: dict[str, dict[str, str]], tree: dict[str, dict[str, str]]
) -> list[str]:
    """``add``, ``remove`` or ``change`` lines, as ``models_match.describe`` says them."""
    lines: list[str] = []
    for kind, spec in KINDS.items():
        have, want = live.get(kind, {}), tree.get(kind, {})
        for name in sorted(set(have) | set(want)):
            if name not in have:
                lines += [] if spec.changes_only else [f"add {kind} {name}"]
            elif name not in want:
                lines += [] if spec.changes_only else [f"remove {kind} {name}"]
            elif have[name] != want[name]:
                change = f"{have[name]} -> {want[name]}" if spec.shown else "it differs"
                lines.append(f"change definition of {kind} {name}: {change}")
    return lines


#: A column's properties read from the catalog, in the order ``COLUMNS`` returns them
#: after its name; the type is said only when either side's is an extension's.
_COLUMN_PROPERTIES = ("default", "identity", "generated expression", "collation", "storage")


def columns(connection: Connection) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """Every column of every table: (schema, table, column) -> its ``COLUMNS`` properties."""
    return {(row[0], row[1], row[2]): tuple(row[3:]) for row in connection.execute(text(COLUMNS))}


def column_differences(
    live: dict[tuple[str, str, str], tuple[Any, ...]],
    tree: dict[tuple[str, str, str], tuple[Any, ...]],
    unqualified: str | None,
) -> list[str]:
    """``change <property> of <table>.<column>: <live> -> <tree>`` for each column both
    sides have (one only one side has is Alembic's ``add``/``remove column``)."""
    lines: list[str] = []
    for key in sorted(set(live) & set(tree)):
        schema, table, column = key
        where = f"{table if schema == unqualified else f'{schema}.{table}'}.{column}"
        have, want = live[key], tree[key]
        for index, what in enumerate(_COLUMN_PROPERTIES):
            if have[index] != want[index]:
                lines.append(f"change {what} of {where}: {have[index]} -> {want[index]}")
        live_type, live_extension, tree_type, tree_extension = *have[5:], *want[5:]
        if live_type != tree_type and (live_extension or tree_extension):
            lines.append(f"change type of {where}: {live_type} -> {tree_type}")
    return lines
