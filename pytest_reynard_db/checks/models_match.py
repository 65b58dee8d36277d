"""Schemas compared, in one set of words: the ``models_match`` check (autogenerate finds
nothing to do on a database at heads) and what ``drift`` finds between a live database
and its tree migrated on a throw-away one (``schema_differences``).

A model column that no migration creates (or a migration the models never
learned about) passes every other check and breaks at runtime. The comparison
is Alembic's own autogenerate, run through the tree's ``env.py``, so it uses
the env's ``target_metadata`` and options (``compare_type``,
``include_object``, ...) exactly as ``alembic check`` would.

For ``drift``, tables, columns and their types, nullability, indexes, unique and foreign
keys and comments are the same autogenerate comparison, with the throw-away database
reflected into a ``MetaData`` standing for the models. Everything else (each column's
default, identity, generation, collation and storage, and every kind of object in
``schema_catalog.KINDS``) is read from ``pg_catalog`` on both sides, each as PostgreSQL
itself prints it. Every difference is said in ``describe``'s words, as ``models_match``
says its own: what would make the first database (the live one) match the second (the
tree).

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

from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.types import TypeEngine

from ..foundation.urls import counted
from ..migration.env_run import preserved_logging
from ..migration.first_models import registered_since, without_tables
from ..migration.manager import MigrationManager, exported
from . import CheckResult
from .heads import all_heads, moved_to
from .runner import USER_SCHEMA, CheckRunner, upgrade_first
from .schema_catalog import COLUMNS, KINDS

CHECK = "models_match"


class NoTargetMetadata(Exception):
    """``env.py`` configures no ``target_metadata``: there are no models to match."""


def models_match(runner: CheckRunner) -> CheckResult:
    """Upgrade a throw-away database to heads and compare it with the models.

    A tree whose ``env.py`` sets no ``target_metadata`` (the stock ``alembic init``
    one) has nothing to compare: skipped, not failed.
    """
    with runner.scratch_database(CHECK) as manager:
        upgrade_first(manager)
        # compared at heads, or not at all: env.py may have migrated another database
        why = moved_to(runner, "upgrade heads", set(manager.current()), all_heads(runner.script))
        if why is not None:
            return runner.result(CHECK, False, why)
        try:
            diffs = differences(manager)
        except NoTargetMetadata:
            return runner.result(
                CHECK, True, f"skipped: no target_metadata in {runner.env_py}", status="skipped"
            )
    if diffs:
        listed = "\n".join(f"  {describe(d)}" for d in diffs)
        return runner.result(
            CHECK,
            False,
            f"the models differ from the migrated database ({counted(len(diffs), 'difference')}); "
            f"write a migration for them:\n{listed}",
        )
    return runner.result(CHECK, True, "the models match the database at heads")


#: The command line env.py sees: ``alembic revision --autogenerate``'s, as for ``create``.
#: A hook written for it (Alembic's cookbook "don't generate empty migrations" tests
#: ``config.cmd_opts.autogenerate``) runs as it does there; ``alembic check``'s own
#: namespace has no such option, and that hook raised AttributeError under it.
AUTOGENERATE = ("revision", "--autogenerate")


def differences(manager: MigrationManager) -> list[Any]:
    """Alembic's autogenerate diffs between ``env.py``'s target_metadata and the database,
    as ``alembic check`` finds them: after env.py's ``process_revision_directives`` hook,
    which may take operations out (a table kept on purpose) or drop the revision."""
    found: list[Any] = []
    script = manager.script

    def compare(revision: Any, context: MigrationContext) -> list[Any]:
        metadata = context.opts.get("target_metadata")
        if metadata is None:
            raise NoTargetMetadata
        late = registered_since(metadata)
        if late:  # a migration's import, which alembic check's process never ran
            metadata = without_tables(metadata, late)
        directives = [produce_migrations(context, metadata)]
        hook = context.opts.get("process_revision_directives")
        if hook is not None:
            hook(context, revision, directives)
        found.extend(
            diff
            for migration in directives
            for upgrade_ops in migration.upgrade_ops_list
            for diff in upgrade_ops.as_diffs()
        )
        return []  # migrate nothing

    with (
        manager.locked() as connection,
        manager.watched(),  # before exported: it reads the production URL
        exported(manager.url_envs, manager.url),
        EnvironmentContext(manager.config(connection, command=AUTOGENERATE), script, fn=compare),
        preserved_logging(),
    ):
        script.run_env()
    return found


def describe(diff: Any, *, unqualified: str | None = None) -> str:
    """One readable line for one autogenerate diff (a tuple, or a list of modify tuples);
    a table of schema ``unqualified`` is named without it, as one of the default schema's."""

    def table_of(table: Any) -> str:
        return qualified(getattr(table, "schema", None), getattr(table, "name", str(table)))

    def qualified(schema: str | None, name: str) -> str:
        return f"{schema}.{name}" if schema and schema != unqualified else name

    if isinstance(diff, list):
        return "; ".join(describe(d, unqualified=unqualified) for d in diff)
    kind, *args = diff
    if kind in ("add_table", "remove_table"):
        return f"{_verb(kind)} table {table_of(args[0])}"
    if kind in ("add_column", "remove_column"):
        schema, table, column = args
        return f"{_verb(kind)} column {qualified(schema, table)}.{column.name} ({column.type})"
    if kind in ("add_index", "remove_index"):
        index = args[0]
        columns = ", ".join(str(c.name) for c in index.columns)
        return f"{_verb(kind)} index {index.name} on {table_of(index.table)} ({columns})"
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        constraint = args[0]
        what = "foreign key" if kind.endswith("_fk") else type(constraint).__name__
        return (
            f"{_verb(kind)} {what} {constraint.name or ''} on {table_of(constraint.table)}".replace(
                "  ", " "
            )
        )
    if kind.startswith("modify_"):
        schema, table, column, _existing, old, new = args
        what = kind[len("modify_") :].replace("_", " ")
        return (
            f"change {what} of {qualified(schema, table)}.{column}: {_value(old)} -> {_value(new)}"
        )
    if kind in ("add_table_comment", "remove_table_comment"):
        return f"{_verb(kind)} comment on table {table_of(args[0])}"
    return repr(diff)


def _value(value: Any) -> str:
    """A type as SQL (``VARCHAR(50)``), a server default as its text, else its repr."""
    if isinstance(value, TypeEngine):
        return str(value)
    arg = getattr(value, "arg", None)  # a server default: DefaultClause(text(...))
    if arg is not None:
        return str(getattr(arg, "text", arg))
    return repr(value)


def _verb(kind: str) -> str:
    return "add" if kind.startswith("add_") else "remove"


# -- drift's comparison: a live schema against its tree's ------------------------------

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


def schema_differences(live: Side, tree: Side, *, unqualified: str | None) -> list[str]:
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
