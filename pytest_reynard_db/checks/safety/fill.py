"""A few generated rows in every table, so a revision meets a table that is not empty.

On an empty table ``ADD COLUMN ... NOT NULL`` without a default succeeds and
a validation scan costs nothing; with rows they fail or scan, as in
production. Values come from each column's type (numbers, text, booleans,
dates, enums, UUIDs, JSON, arrays, network addresses); a foreign key takes a
row of the table it references, so tables are filled parents first. Columns
with a server default keep it, except an integer primary key, which gets
values far above what a seed would pick by hand (a seed inserting ``id = 1``
later must not collide). A table that cannot be filled is skipped and named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from ..runner import USER_SCHEMA

ROWS = 3
FIRST_NUMBER = 20000  # fits a smallint, above hand-picked seed ids

TABLES = text(
    f"""
    SELECT c.oid, n.nspname, c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND {USER_SCHEMA}
      AND c.relname <> 'alembic_version'
    ORDER BY n.nspname, c.relname
    """
)
COLUMNS = text(
    """
    SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type,
           COALESCE(bt.typname, t.typname) AS base, COALESCE(bt.typcategory, t.typcategory) AS cat,
           a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated,
           a.attnum = ANY(COALESCE(pk.conkey, '{}')) AS in_pk
    FROM pg_attribute a
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
    LEFT JOIN pg_constraint pk ON pk.conrelid = a.attrelid AND pk.contype = 'p'
    WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum
    """
)
FOREIGN_KEYS = text(
    """
    SELECT con.conrelid, con.confrelid,
      ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
            JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
      ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
            JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
    FROM pg_constraint con WHERE con.contype = 'f'
    """
)


@dataclass(frozen=True)
class Table:
    oid: int
    schema: str
    name: str

    @property
    def sql(self) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}"

    @property
    def label(self) -> str:
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class ForeignKey:
    referenced: int
    columns: tuple[str, ...]
    referenced_columns: tuple[str, ...]


@dataclass
class Filler:
    """Fills every table; ``fill`` returns a note per table it could not fill (once each)."""

    reported: set[str] = field(default_factory=set)

    def fill(self, connection: Connection) -> list[str]:
        """Insert ``ROWS`` rows in every table, in the caller's transaction (not committed).

        Rolled back with the measured revision, the rows never meet the next
        revision's real run (a seed inserting the same enum label stays valid).
        """
        tables = {row[0]: Table(row[0], row[1], row[2]) for row in connection.execute(TABLES).all()}
        keys: dict[int, list[ForeignKey]] = {}
        for conrelid, confrelid, cols, refcols in connection.execute(FOREIGN_KEYS).all():
            keys.setdefault(conrelid, []).append(ForeignKey(confrelid, tuple(cols), tuple(refcols)))
        notes: list[str] = []
        for oid in parents_first(tables, keys):
            note = fill_table(connection, tables[oid], tables, keys.get(oid, []))
            if note and note not in self.reported:
                self.reported.add(note)
                notes.append(note)
        return notes


def parents_first(tables: dict[int, Table], keys: dict[int, list[ForeignKey]]) -> list[int]:
    """Table oids, each after the tables its foreign keys reference (cycles: any order)."""
    order: list[int] = []
    seen: set[int] = set()

    def visit(oid: int, path: set[int]) -> None:
        if oid in seen or oid in path or oid not in tables:
            return
        path.add(oid)
        for key in keys.get(oid, []):
            visit(key.referenced, path)
        path.discard(oid)
        seen.add(oid)
        order.append(oid)

    for oid in tables:
        visit(oid, set())
    return order


def fill_table(
    connection: Connection, table: Table, tables: dict[int, Table], keys: list[ForeignKey]
) -> str | None:
    """Insert up to ``ROWS`` rows in ``table``; a note naming it when none could be inserted."""
    columns = connection.execute(COLUMNS, {"oid": table.oid}).mappings().all()
    references = {
        col: (key, i, shift) for shift, key in enumerate(keys) for i, col in enumerate(key.columns)
    }
    error = ""
    inserted = 0
    for row in range(ROWS):
        names: list[str] = []
        values: list[str] = []
        override = False
        for column in columns:
            if column["attgenerated"]:
                continue
            name = column["attname"]
            integer_key = column["in_pk"] and column["cat"] == "N" and name not in references
            if column["atthasdef"] or column["attidentity"]:
                if not integer_key:
                    continue
                override = override or column["attidentity"] == "a"
            if name in references:
                key, index, shift = references[name]  # two keys to one table: two rows
                parent = tables.get(key.referenced)
                value = (
                    None
                    if parent is None or key.referenced == table.oid
                    else (_referenced(connection, parent, key, index, row + shift))
                )
            else:
                value = literal(column["type"], column["base"], column["cat"], row)
            if value is None:
                if column["attnotnull"]:
                    return f"table {table.label} not filled: no value for column {name}"
                continue
            names.append(quote(name))
            values.append(value)
        columns_sql = f" ({', '.join(names)})" if names else ""
        values_sql = f"VALUES ({', '.join(values)})" if names else "DEFAULT VALUES"
        overriding = " OVERRIDING SYSTEM VALUE" if override else ""
        statement = f"INSERT INTO {table.sql}{columns_sql}{overriding} {values_sql}"
        try:
            with connection.begin_nested():
                connection.execute(text(statement))
            inserted += 1
        except DBAPIError as exc:
            error = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    if inserted:
        return None
    return f"table {table.label} not filled: {error}"


def literal(type_: str, base: str, category: str, row: int) -> str | None:
    """A SQL expression of type ``type_`` for row ``row`` (None: no generic value)."""
    number = FIRST_NUMBER + row
    if category == "N":
        return f"CAST({number} AS {type_})"
    if category == "S":
        return f"CAST('rdb{row}' AS {type_})"
    if category == "B":
        return "true" if row % 2 == 0 else "false"
    if category == "D":
        return f"CAST(now() AS {type_})"
    if category == "T":
        return f"CAST('{row + 1} hours' AS {type_})"
    if category == "E":
        labels = f"enum_range(NULL::{type_})"
        return f"({labels})[1 + {row} % array_length({labels}, 1)]"
    if category == "A":
        return f"CAST('{{}}' AS {type_})"
    if category == "I":
        return f"CAST('10.0.0.{row + 1}' AS {type_})"
    if base == "uuid":
        return f"CAST(md5('rdb{row}' || random()::text) AS uuid)"
    if base in ("json", "jsonb"):
        return f"CAST('{{}}' AS {type_})"
    if base == "bytea":
        return f"CAST('rdb{row}' AS bytea)"
    return None


def _referenced(
    connection: Connection, parent: Table, key: ForeignKey, index: int, row: int
) -> str | None:
    count = connection.execute(text(f"SELECT count(*) FROM {parent.sql}")).scalar_one()
    if not count:
        return None
    order = ", ".join(quote(c) for c in key.referenced_columns)
    column = quote(key.referenced_columns[index])
    return f"(SELECT {column} FROM {parent.sql} ORDER BY {order} LIMIT 1 OFFSET {row % count})"


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
