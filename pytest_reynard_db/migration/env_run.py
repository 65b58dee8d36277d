"""One run of a tree's ``env.py``, on steps its caller chooses.

What ``alembic.command.upgrade``/``downgrade``/``stamp`` do, on an already-loaded
tree: an ``EnvironmentContext`` whose migration function yields the steps the verb
chose (``tree.upgrade_steps`` and the like, or a check's own walk), each noted by a
``StepTracker`` just before Alembic runs it. ``exported`` aims the tree's URL
variables at the target for the duration.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from ..atomic_file import refuse_non_regular
from ..errors import ConfigError
from ..logs import preserved_logging
from ..registry import Database
from ..text import shown_path
from .migration_errors import StepTracker
from .tree import note_version_table

#: Alembic's migration function: ``(current heads, MigrationContext) -> steps to run``.
StepsFn = Callable[[tuple[str, ...], Any], Iterable[Any]]


def split_range(target: str) -> tuple[str | None, str]:
    """``FROM:TO`` as (``FROM``, ``TO``); a plain target has no start (``--sql`` only)."""
    if ":" in target:
        start, end = target.split(":", 1)
        return start, end
    return None, target


def run_env(
    db: Database,
    script: ScriptDirectory,
    config: Config,
    steps: StepsFn,
    tracker: StepTracker,
    *,
    destination: str | tuple[str, ...],
    start: str | None = None,
    sql: bool = False,
    purge: bool = False,
    quiet: bool = False,
) -> None:
    """Run ``db``'s ``env.py`` once; Alembic takes its steps from ``steps``.

    ``destination`` and ``start`` are what ``env.py`` sees as ``get_context()``'s
    destination and (``--sql``) starting revisions; ``quiet``: the process's logging
    is put back afterwards (``env.py``'s ``fileConfig`` changes it).
    """
    env_py = Path(script.dir) / "env.py"
    refuse_non_regular(env_py, where=f"database {db.name!r}: ")
    if not env_py.is_file():  # Alembic: ImportError "Can't find Python file", a traceback
        raise ConfigError(
            f"database {db.name!r}: {shown_path(env_py)}: no such file (the tree's "
            f"environment, in script_location of {shown_path(db.ini)})"
        )

    def chosen(heads: Any, context: Any) -> Any:
        note_version_table(script, context)
        return tracker.tracked(steps(heads, context))

    with (
        EnvironmentContext(
            config,
            script,
            fn=chosen,
            as_sql=sql,
            starting_rev=start,
            destination_rev=destination,
            purge=purge,
        ),
        preserved_logging() if quiet else nullcontext(),
    ):
        script.run_env()


@contextmanager
def exported(names: Sequence[str], url: URL) -> Iterator[None]:
    """Each ``$name`` points at ``url`` while migrations run, whatever the shell had set."""
    previous = {name: os.environ.get(name) for name in names}
    rendered = url.render_as_string(hide_password=False)
    os.environ.update(dict.fromkeys(names, rendered))
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
