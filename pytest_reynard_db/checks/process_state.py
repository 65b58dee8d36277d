"""What a migration step may leave in this process for the next one, where each plain
``alembic`` command is a new process: the run's config attributes and context options
(``process_notes``), and its connection's ``info`` (``connection_notes``, read with the
connection's other hooks). The stairway's walk reads them after each step: a change ends
its ``env.py`` run, and the next run has a new config, a new context, and (its
connection's notes differing from the connection's first) a new connection.

``os.environ`` is not among them: modules stay imported for a whole check (README, the
stairway's known differences), and what an application's module put there as it was
imported (its ``.env`` loaded, python-dotenv's way) must stay with it; put back, every
later run lacked it, where each plain command imports the module and loads it afresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection


def _keys_and_values(mapping: Mapping[Any, Any] | None) -> dict[Any, int]:
    """``mapping`` as its keys and its values' identities: an entry added, removed or set
    to another object (a note left in place by mutation is not seen)."""
    return {key: id(value) for key, value in (mapping or {}).items()}


def process_notes(context: MigrationContext) -> tuple[Any, ...]:
    """What a step may leave in this process for the next: the run's
    ``config.attributes`` and the context's options."""
    config = context.config
    return (
        _keys_and_values(config.attributes if config is not None else None),
        _keys_and_values(context.opts),
    )


def connection_notes(connection: Connection) -> dict[Any, int]:
    """``connection``'s ``info`` (its DBAPI connection's, kept with it), as
    ``_keys_and_values``: a revision's note there reaches the next step on the same
    connection."""
    return _keys_and_values(connection.info)
