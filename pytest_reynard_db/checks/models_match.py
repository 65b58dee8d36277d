"""``models_match``: autogenerate finds nothing to do on a database at heads.

A model column that no migration creates (or a migration the models never
learned about) passes every other check and breaks at runtime. The comparison
is Alembic's own autogenerate, run through the tree's ``env.py``, so it uses
the env's ``target_metadata`` and options (``compare_type``,
``include_object``, ...) exactly as ``alembic check`` would.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from sqlalchemy.types import TypeEngine

from ..foundation.urls import counted
from ..migration.logs import preserved_logging
from ..migration.manager import MigrationManager, exported
from . import CheckResult
from .heads import all_heads, moved_to
from .runner import CheckRunner, upgrade_first

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


def differences(manager: MigrationManager) -> list[Any]:
    """Alembic's autogenerate diffs between ``env.py``'s target_metadata and the database."""
    found: list[Any] = []
    script = manager.script

    def compare(revision: Any, context: MigrationContext) -> list[Any]:
        metadata = context.opts.get("target_metadata")
        if metadata is None:
            raise NoTargetMetadata
        found.extend(compare_metadata(context, metadata))
        return []  # migrate nothing

    with (
        manager.locked() as connection,
        manager.watched(),  # before exported: it reads the production URL
        exported(manager.url_envs, manager.url),
        EnvironmentContext(manager.config(connection), script, fn=compare),
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
