"""Run by every Python child of a guarded run (``guard.inherit``) whose ``$PYTHONPATH``
starts with this folder, at start-up: ``pytest_reynard_db.child_guard`` waits for a
PostgreSQL driver's import to arm the child's guard (in this environment the package's
``.pth`` has done so already). An interpreter that cannot import this package refuses
every driver instead. Then the interpreter's own ``sitecustomize``, if any, runs as it
would have.
"""

from __future__ import annotations

import importlib
import importlib.abc
import os
import sys
from typing import Any

#: The modules whose import means a connection may follow (``child_guard.DRIVERS``).
DRIVERS = frozenset({"psycopg", "psycopg2", "pg8000.core", "asyncpg.connect_utils"})


class _Refuse(importlib.abc.MetaPathFinder):
    """Another interpreter, without the harness: its drivers cannot be guarded."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name in DRIVERS:
            raise ImportError(
                f"reynard-db: refused a PostgreSQL driver in {sys.executable}: a child of a "
                f"run whose production guard cannot be put in place here ({self.reason})"
            )
        return None


def _install() -> None:
    if not os.environ.get("REYNARD_DB_GUARD"):
        return
    try:
        from pytest_reynard_db.child_guard import install
    except ImportError as exc:
        sys.meta_path.insert(0, _Refuse(str(exc)))
        return
    install()


def _chain() -> None:
    """The interpreter's own ``sitecustomize`` (ours shadows it on ``sys.path``)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    ours = sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")
    except ImportError as exc:
        if exc.name != "sitecustomize":
            raise
        if ours is not None:
            sys.modules["sitecustomize"] = ours


_install()
_chain()
