"""The databases ``bench.plain_alembic`` runs plain ``alembic`` on: a tree as ``alembic -c
INI`` sees it, fresh databases, and the commands and read-backs on one of them."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from .alembic_commands import AlembicRunner, Command

#: ``fresh_database()``: a context manager giving the URL of a new empty database, dropped after.
FreshDatabase = Callable[[], AbstractContextManager[URL]]


@contextmanager
def fresh_database_on(admin_url: URL | str) -> Iterator[URL]:
    """A new empty database ``test_plain_<random>`` on the server ``admin_url`` reaches (as a
    role that may create databases), dropped after."""
    admin = sa.make_url(admin_url)
    name = f"test_plain_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield admin.set(database=name)
        finally:
            with engine.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Tree:
    """A project's Alembic tree as plain ``alembic -c INI`` sees it.

    ``ini``: its ini file; each command gets a copy beside it whose ``sqlalchemy.url`` is
    the database under test. ``env``: the whole environment of each command (a user's
    shell); ``url_env``: variables of it that env.py reads its URL from, set to that
    database's URL too. ``cwd``: where commands run (default: the ini's folder).
    ``version_table``/``version_table_schema``: where env.py keeps the versions.
    """

    ini: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    url_env: tuple[str, ...] = ()
    cwd: Path | None = None
    section: str = "alembic"
    version_table: str = "alembic_version"
    version_table_schema: str | None = None

    def script(self) -> ScriptDirectory:
        """The tree, loaded by Alembic in this process (its graph, for the walk)."""
        return ScriptDirectory.from_config(Config(str(self.ini), ini_section=self.section))


#: What a migration could leave in the catalog, as (kind, name) rows: relations, types
#: (enum, domain, range, composite of its own), functions, extensions, schemas. Objects an
#: extension owns go with it. The version table (and the schema holding it) are Alembic's.
LEFTOVERS = """
WITH user_ns AS (
  SELECT oid, nspname FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema')
    AND nspname !~ '^pg_(toast|temp_)')
SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
       WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' ELSE 'table' END,
       n.nspname::text || '.' || c.relname::text
FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relname <> :version_table
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT 'type', n.nspname::text || '.' || t.typname::text
FROM pg_type t JOIN user_ns n ON n.oid = t.typnamespace
WHERE (t.typtype IN ('e', 'd', 'r')
       OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                  AND d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT 'function', n.nspname::text || '.' || p.proname::text
FROM pg_proc p JOIN user_ns n ON n.oid = p.pronamespace
WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'extension', extname::text FROM pg_extension WHERE extname <> 'plpgsql'
UNION ALL
SELECT 'schema', n.nspname::text FROM user_ns n
WHERE n.nspname <> 'public'
  AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid
                  AND c.relname = :version_table)
ORDER BY 1, 2
"""


class Session:
    """Commands on one database (a context manager): a copy of the tree's ini beside it
    (``%(here)s`` unchanged) naming the database, and a connection reading it back."""

    def __init__(self, tree: Tree, url: URL, run: AlembicRunner) -> None:
        self.tree, self.url, self.run = tree, url, run
        rendered = url.render_as_string(hide_password=False)
        self.env = {**tree.env, **dict.fromkeys(tree.url_env, rendered)}
        self.ini = tree.ini.with_name(f".plain-alembic-{uuid.uuid4().hex[:12]}.ini")
        # Pooled: one connection, idle between commands (no transaction, no lock held).
        self.engine = sa.create_engine(url, pool_size=1)
        name = sa.table(tree.version_table, schema=tree.version_table_schema)
        self.version_table = str(sa.select(sa.text("1")).select_from(name)).split("FROM ")[-1]

    def __enter__(self) -> Session:
        self.ini.write_text(_with_url(self.tree.ini.read_text(), self.tree.section, self.url))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.engine.dispose()
        self.ini.unlink(missing_ok=True)

    def command(self, *argv: str) -> Command:
        cwd = self.tree.cwd or self.tree.ini.parent
        return self.run(
            ["-c", str(self.ini), "-n", self.tree.section, *argv], cwd=cwd, env=self.env
        )

    def rows(self) -> set[str]:
        """What the version table holds (nothing when it does not exist)."""
        with self.engine.connect() as connection:
            found = connection.execute(sa.text("SELECT to_regclass(:t)"), {"t": self.version_table})
            if found.scalar() is None:
                return set()
            versions = connection.execute(sa.text(f"SELECT version_num FROM {self.version_table}"))
            return {str(row[0]) for row in versions}

    def leftovers(self) -> list[str]:
        with self.engine.connect() as connection:
            found = connection.execute(
                sa.text(LEFTOVERS), {"version_table": self.tree.version_table}
            )
            return [f"{kind} {name}" for kind, name in found]


def _with_url(ini: str, section: str, url: URL) -> str:
    """The ini's text with ``sqlalchemy.url`` of ``section`` set to ``url`` (added if absent)."""
    value = url.render_as_string(hide_password=False).replace("%", "%%")
    lines = ini.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
    if start is None:
        return f"[{section}]\nsqlalchemy.url = {value}\n{ini}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if re.match(r"\s*sqlalchemy\.url\s*[=:]", lines[i]):
            lines[i] = f"sqlalchemy.url = {value}"
            # a continuation line would belong to the old value
            while i + 1 < end and lines[i + 1][:1].isspace() and lines[i + 1].strip():
                del lines[i + 1]
                end -= 1
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"sqlalchemy.url = {value}")
    return "\n".join(lines) + "\n"
