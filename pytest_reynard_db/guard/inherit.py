"""The guard in the run's child interpreters: a test's ``subprocess`` running the
application's CLI, a ``multiprocessing`` worker started with ``spawn``, a script that
``env.py`` runs.

A child does not inherit the parent's hooks, only its environment. So while the
guard is armed, the environment carries the allow-list (``$REYNARD_DB_GUARD``) and
``$PYTHONPATH`` starts with ``startup/``, whose ``sitecustomize`` every Python child
runs at start-up: it arms the child's guard with that allow-list as soon as the child
imports a PostgreSQL driver (never before: a child that does not connect pays
nothing). A child started with an environment of its own, or with ``-I``/``-E``/``-S``,
and non-Python clients (``psql``) are out of its reach.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: The allow-list, JSON: ``{"hint": ..., "servers": [[host, port]], "databases": [[host,
#: port, name]]}``.
GUARD_VARIABLE = "REYNARD_DB_GUARD"
#: The folder of the ``sitecustomize`` that arms a child's guard.
STARTUP = str(Path(__file__).resolve().with_name("startup"))
#: What the environment held before the first ``export`` (None: not exported).
_before: dict[str, str | None] | None = None


def export(snapshot: dict[str, Any]) -> None:
    """Children started from now on are guarded with ``snapshot``."""
    global _before
    if _before is None:
        _before = {name: os.environ.get(name) for name in (GUARD_VARIABLE, "PYTHONPATH")}
        os.environ["PYTHONPATH"] = os.pathsep.join([STARTUP, *_paths_but_ours()])
    os.environ[GUARD_VARIABLE] = json.dumps(snapshot)


def withdraw() -> None:
    """Children started from now on are not guarded (the environment as before ``export``;
    a ``$PYTHONPATH`` changed meanwhile keeps its change, without our folder)."""
    global _before
    if _before is None:
        return
    before, _before = _before, None
    rest = _paths_but_ours()
    if rest or before["PYTHONPATH"] is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(rest)
    else:
        os.environ.pop("PYTHONPATH", None)
    previous = before[GUARD_VARIABLE]
    if previous is None:
        os.environ.pop(GUARD_VARIABLE, None)
    else:
        os.environ[GUARD_VARIABLE] = previous


def _paths_but_ours() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != STARTUP]
