"""Arms the guard of a Python child of a guarded run (``guard.inherit``), at start-up.

Run by ``pytest_reynard_db_guard.pth`` (installed in site-packages with the package, as
``pytest-cov.pth`` is) in every interpreter of this environment whose environment has
``$REYNARD_DB_GUARD``, whatever its ``$PYTHONPATH``; and by the ``sitecustomize`` that
the run puts first on ``$PYTHONPATH`` (``guard/startup``), for the rest.

It only waits: the first time the child imports a PostgreSQL driver, right after the
driver's module is loaded and before anything can call it, the child's guard is armed
with the run's allow-list (the file ``$REYNARD_DB_GUARD`` names). Importing the guard
costs SQLAlchemy, so a child that never imports a driver never pays for it; importing
this module costs nothing more than the package's lazy ``__init__``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any

#: The modules whose import means a connection may follow (``guard.hooks.DRIVER_PATCHES``).
DRIVERS = frozenset({"psycopg", "psycopg2", "pg8000.core", "asyncpg.connect_utils"})
VARIABLE = "REYNARD_DB_GUARD"


def install() -> None:
    """Wait for a driver's import, if this process is a guarded run's child (once)."""
    if os.environ.get(VARIABLE) and not any(_is_ours(f) for f in sys.meta_path):
        sys.meta_path.insert(0, _ArmOnDriverImport())
    _forget_the_package()


def _is_ours(finder: object) -> bool:
    # by name: this module may be loaded twice (``_forget_the_package``), as two classes
    return type(finder).__name__ == _ArmOnDriverImport.__name__


def _forget_the_package() -> None:
    """This package out of ``sys.modules`` again when nothing else of it was imported: a
    child that is a pytest run (an xdist worker) imports it as a plugin later, and pytest,
    which rewrites a plugin's asserts, warns of a package imported before it could
    (``PytestAssertRewriteWarning``; with ``filterwarnings = error`` every worker crashed).
    The finder waiting for a driver keeps what it needs; ``_arm`` imports the guard anew."""
    ours = [name for name in sys.modules if name.split(".")[0] == "pytest_reynard_db"]
    if set(ours) <= {"pytest_reynard_db", __name__}:
        for name in ours:
            del sys.modules[name]


class _ArmOnDriverImport(importlib.abc.MetaPathFinder):
    """Arms the guard right after the first driver module is loaded (once)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in DRIVERS:
            return None
        hooks = sys.modules.get("pytest_reynard_db.guard.hooks")
        if hooks is not None and getattr(hooks, "_undo", None):
            # Armed already by a run of its own (an xdist worker, a check's interpreter):
            # its hooks guard this import; the parent's list is not needed.
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            _arm()  # an ImportError here fails the driver's import: nothing can connect

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _arm() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not _is_ours(f)]
    from pytest_reynard_db.guard import GUARD, inherit

    path = os.environ[VARIABLE]
    try:
        allowed = inherit.load(path)
    except (OSError, ValueError) as exc:
        raise ImportError(
            f"reynard-db: refused a PostgreSQL driver: this process was started by a run "
            f"whose allow-list ({path}) cannot be read ({exc}); has that run ended?"
        ) from None
    GUARD.adopt(allowed, source=path)  # the hooks patch the drivers imported
