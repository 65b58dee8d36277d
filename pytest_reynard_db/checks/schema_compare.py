"""Two PostgreSQL schemas compared: what ``drift`` finds between a live database and its
tree migrated on a throw-away one.

Tables, columns and their types, defaults and nullability, indexes and constraints are
Alembic's own autogenerate comparison (as ``models_match``), with the throw-away
database reflected into a ``MetaData`` standing for the models. What autogenerate does
not compare (an enum's values, sequences, functions and procedures, triggers, views,
CHECK constraints, domains, rules, row level security and its policies, extensions) is
read from ``pg_catalog`` on both sides, each object as PostgreSQL itself prints its
definition. Every difference is said in ``models_match``'s words: what would
make the first database (the live one) match the second (the tree).

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

from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Connection, MetaData, event, text

from .models_match import describe
from .runner import USER_SCHEMA

#: The ``search_path`` of both sides while they are compared (see above).
CATALOG_ONLY = "pg_catalog"


@dataclass(frozen=True)
class Side:
    """One database to compare: a connection whose ``search_path`` is ``CATALOG_ONLY``, and
    its version table (name, schema; the schema None when it has none), which is Alembic's
    and not compared."""

    connection: Connection
    version_table: tuple[str, str | None]


def differences(live: Side, tree: Side, *, unqualified: str | None) -> list[str]:
    """Each difference between ``live``'s schema and ``tree``'s, one line each; a table of
    schema ``unqualified`` (the live session's own first schema) named without it."""
    name, schema = live.version_table
    context = MigrationContext.configure(
        live.connection,
        opts={
            "compare_type": True,
            "compare_server_default": same_default_text,
            "include_schemas": True,
            # None is the session's default schema: pg_catalog here, never the application's
            "include_name": lambda name, kind, _parents: kind != "schema" or name is not None,
            "version_table": name,
            "version_table_schema": schema,
        },
    )
    found = [
        describe(diff, unqualified=unqualified)
        for diff in compare_metadata(context, reflected(tree))
    ]
    return found + catalog_differences(catalog(live.connection), catalog(tree.connection))


def reflected(side: Side) -> MetaData:
    """Every table of every schema of the application's, each with its schema (its version
    table left out), each column as Alembic reflects the database it compares with (a
    serial's ``nextval`` default left out: the sequence is compared apart)."""
    metadata = MetaData()
    connection = side.connection
    impl = MigrationContext.configure(connection).impl
    event.listen(metadata, "column_reflect", impl.autogen_column_reflect)
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


def same_default_text(
    context: MigrationContext,
    live_column: Column[Any],
    tree_column: Column[Any],
    live_default: str | None,
    tree_default: Any,
    tree_text: str | None,
) -> bool:
    """Whether two reflected server defaults differ (Alembic's ``compare_server_default``
    hook): both are PostgreSQL's own text, so text decides."""
    return (live_default or None) != (tree_text or None)


#: Each kind of object autogenerate does not compare: its name and its definition, as
#: PostgreSQL prints it. Objects an extension owns are the extension's (listed once).
_NOT_EXTENSIONS = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{table}'::regclass "
    "AND d.objid = {oid} AND d.deptype = 'e')"
)
CATALOG: dict[str, str] = {
    "enum": f"""
        SELECT format('%I.%I', n.nspname, t.typname),
               '(' || string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder) || ')'
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE {USER_SCHEMA} AND {_NOT_EXTENSIONS.format(table="pg_type", oid="t.oid")}
        GROUP BY 1""",
    "sequence": f"""
        SELECT format('%I.%I', n.nspname, c.relname),
               format('%s start %s increment %s min %s max %s cache %s%s', s.seqtypid::regtype,
                      s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
                      CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END)
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMA} AND {_NOT_EXTENSIONS.format(table="pg_class", oid="c.oid")}""",
    "function": f"""
        SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
               pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.prokind <> 'a' AND {USER_SCHEMA}
          AND {_NOT_EXTENSIONS.format(table="pg_proc", oid="p.oid")}""",
    "trigger": f"""
        SELECT format('%I on %I.%I', t.tgname, n.nspname, c.relname), pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {USER_SCHEMA}""",
    "view": f"""
        SELECT format('%I.%I', n.nspname, c.relname),
               CASE c.relkind WHEN 'm' THEN 'materialized: ' ELSE '' END || pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {USER_SCHEMA}
          AND {_NOT_EXTENSIONS.format(table="pg_class", oid="c.oid")}""",
    "check constraint": f"""
        SELECT format('%I on %I.%I', k.conname, n.nspname, c.relname), pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE k.contype = 'c' AND {USER_SCHEMA}""",
    "domain": f"""
        SELECT format('%I.%I', n.nspname, t.typname),
               concat_ws(' ', format_type(t.typbasetype, t.typtypmod),
                         CASE WHEN t.typnotnull THEN 'NOT NULL' END,
                         'DEFAULT ' || t.typdefault,
                         (SELECT string_agg(format('CONSTRAINT %I %s', k.conname,
                                                   pg_get_constraintdef(k.oid)), ' '
                                            ORDER BY k.conname)
                          FROM pg_constraint k WHERE k.contypid = t.oid))
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype = 'd' AND {USER_SCHEMA}
          AND {_NOT_EXTENSIONS.format(table="pg_type", oid="t.oid")}""",
    "rule": f"""
        SELECT format('%I on %I.%I', r.rulename, n.nspname, c.relname), pg_get_ruledef(r.oid)
        FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE r.rulename <> '_RETURN' AND {USER_SCHEMA}""",
    "row level security": f"""
        SELECT format('%I.%I', n.nspname, c.relname),
               CASE WHEN c.relforcerowsecurity THEN 'enabled, forced' ELSE 'enabled' END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relrowsecurity AND {USER_SCHEMA}""",
    "policy": f"""
        SELECT format('%I on %I.%I', p.polname, n.nspname, c.relname),
               concat_ws(' ', CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
                         'for ' || p.polcmd::text,
                         'to ' || (SELECT string_agg(CASE WHEN r = 0 THEN 'public'
                                                          ELSE r::regrole::text END, ', '
                                                     ORDER BY 1)
                                   FROM unnest(p.polroles) r),
                         'using ' || pg_get_expr(p.polqual, p.polrelid),
                         'with check ' || pg_get_expr(p.polwithcheck, p.polrelid))
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMA}""",
    # present or not: the server's own version of an extension is not the tree's business
    "extension": "SELECT extname, '' FROM pg_extension WHERE extname <> 'plpgsql'",
}

#: Kinds whose definition is short enough to show both sides of a change.
SHOWN = frozenset(
    {"enum", "sequence", "trigger", "check constraint", "domain", "row level security", "policy"}
)


def catalog(connection: Connection) -> dict[str, dict[str, str]]:
    """Each kind of ``CATALOG``: every object's name and definition."""
    return {
        kind: {str(name): str(body) for name, body in connection.execute(text(query))}
        for kind, query in CATALOG.items()
    }


def catalog_differences(
    live: dict[str, dict[str, str]], tree: dict[str, dict[str, str]]
) -> list[str]:
    """``add``, ``remove`` or ``change`` lines, as ``models_match.describe`` says them."""
    lines: list[str] = []
    for kind in CATALOG:
        have, want = live.get(kind, {}), tree.get(kind, {})
        for name in sorted(set(have) | set(want)):
            if name not in have:
                lines.append(f"add {kind} {name}")
            elif name not in want:
                lines.append(f"remove {kind} {name}")
            elif have[name] != want[name]:
                change = f"{have[name]} -> {want[name]}" if kind in SHOWN else "it differs"
                lines.append(f"change definition of {kind} {name}: {change}")
    return lines
