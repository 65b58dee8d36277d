"""What a migration step may leave in this process for the next one, where each plain
``alembic`` command is a new process: the environment, the run's config attributes and
context options, a connection's ``info``. The stairway's walk reads them after each step
(``process_notes``: a change ends its ``env.py`` run), and every check leaves the
environment as it found it (``environment_kept``), the harness's own variables aside.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection


def _keys_and_values(mapping: Mapping[Any, Any] | None) -> dict[Any, int]:
    """``mapping`` as its keys and its values' identities: an entry added, removed or set
    to another object (a note left in place by mutation is not seen)."""
    return {key: id(value) for key, value in (mapping or {}).items()}


def process_notes(context: MigrationContext) -> tuple[Any, ...]:
    """What a step may leave in this process for the next, where each plain command is a
    new process: the environment, the run's ``config.attributes`` and context options, and
    its connection's ``info``. A step that changed any ends the ``env.py`` run (a new run
    has a new config and context; ``environment_kept`` puts the environment back)."""
    config = context.config
    connection = context.connection
    return (
        {k: v for k, v in os.environ.items() if not k.startswith(HARNESS_VARIABLES)},
        _keys_and_values(config.attributes if config is not None else None),
        _keys_and_values(context.opts),
        _keys_and_values(connection.info if connection is not None else None),
    )


def connection_notes(connection: Connection) -> tuple[Any, ...]:
    """The keys of ``connection``'s ``info`` (its DBAPI connection's, kept with it): a
    revision's note there reaches the next step on the same connection."""
    return tuple(sorted(map(repr, connection.info)))


@contextmanager
def environment_kept() -> Iterator[dict[str, str]]:
    """The process's environment as it is now, put back after the block: a check's
    ``env.py`` runs and revisions are commands of their own, and what one sets in
    ``os.environ`` must not reach the next, nor the caller. The snapshot is yielded
    (``restore_environment`` puts it back mid-block)."""
    kept = dict(os.environ)
    try:
        yield kept
    finally:
        restore_environment(kept)


#: Variables the harness itself sets as it goes, left as they are: the guard exports its
#: allow-list to the children it arms (``REYNARD_DB_GUARD`` and ``PYTHONPATH``, once, at
#: the first server or database allowed, which may be in a check), the runtime directory.
HARNESS_VARIABLES = ("REYNARD_DB_", "PYTHONPATH")


def restore_environment(kept: Mapping[str, str]) -> None:
    """``os.environ`` made ``kept`` again (only what differs is touched), the harness's own
    variables aside (``HARNESS_VARIABLES``)."""
    if os.environ == kept:
        return
    for name in set(os.environ) - set(kept):
        if not name.startswith(HARNESS_VARIABLES):
            del os.environ[name]
    for name, value in kept.items():
        if os.environ.get(name) != value and not name.startswith(HARNESS_VARIABLES):
            os.environ[name] = value
