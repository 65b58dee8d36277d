"""The tables each models' ``MetaData`` held when env.py first handed it to Alembic in this
process: what ``alembic check``, a process of its own, compares.

A revision may import a model module env.py does not (a data migration seeding rows with
the ORM). Run in the process that compares next, that import registers the module's tables
on the same ``MetaData``, and autogenerate takes them for models: a table env.py forgot then
passed ``models_match`` where ``alembic check`` proposes to drop it. Which checks had run
before decided the verdict. The first sighting is taken at the start of a run's steps, after
env.py configured its context and before any revision of that run ran.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import MetaData

_FIRST_SEEN: weakref.WeakKeyDictionary[MetaData, frozenset[str]] = weakref.WeakKeyDictionary()


def _metadatas(target: Any) -> list[MetaData]:
    if isinstance(target, MetaData):
        return [target]
    if isinstance(target, list | tuple):
        return [m for m in target if isinstance(m, MetaData)]
    return []


def note_models(context: Any) -> None:
    """Remember the tables of the context's ``target_metadata`` the first time it is seen."""
    for metadata in _metadatas(context.opts.get("target_metadata")):
        if metadata not in _FIRST_SEEN:
            _FIRST_SEEN[metadata] = frozenset(metadata.tables)


def registered_since(target: Any) -> set[str]:
    """Tables of ``target`` (a MetaData, or a list of them) registered after its first
    sighting: by code a migration ran, not by env.py's imports."""
    late: set[str] = set()
    for metadata in _metadatas(target):
        first = _FIRST_SEEN.get(metadata)
        if first is not None:
            late.update(set(metadata.tables) - first)
    return late


def without_tables(target: Any, late: set[str]) -> Any:
    """``target`` (a MetaData, or a list of them) as a process that never imported the
    ``late`` tables holds it: copies of the others' tables (``Table.to_metadata``) on a new
    MetaData of the same naming convention and schema; autogenerate then finds the
    database's table unmatched, as ``alembic check`` does."""

    def copied(metadata: MetaData) -> MetaData:
        kept = MetaData(schema=metadata.schema, naming_convention=metadata.naming_convention)
        kept.info.update(metadata.info)
        for key, table in metadata.tables.items():
            if key not in late:
                table.to_metadata(kept)
        return kept

    if isinstance(target, MetaData):
        return copied(target)
    return [copied(m) if isinstance(m, MetaData) else m for m in target]
