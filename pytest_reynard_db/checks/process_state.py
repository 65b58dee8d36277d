"""What a migration step may leave in this process for the next one, where each plain
``alembic`` command is a new process: the run's config attributes and context options, and
its connection's ``info``. The stairway's walk reads them after each step
(``process_notes``): a change ends its ``env.py`` run, and the next run has a new config,
a new context, and (``connection_notes`` differing) a new connection.

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
    ``config.attributes``, the context's options and its connection's ``info``."""
    config = context.config
    connection = context.connection
    return (
        _keys_and_values(config.attributes if config is not None else None),
        _keys_and_values(context.opts),
        _keys_and_values(connection.info if connection is not None else None),
    )


def connection_notes(connection: Connection) -> tuple[Any, ...]:
    """The keys of ``connection``'s ``info`` (its DBAPI connection's, kept with it): a
    revision's note there reaches the next step on the same connection."""
    return tuple(sorted(map(repr, connection.info)))
