"""What every other part of the package stands on, and which imports none of them: the
errors and their exit codes, URLs (parsed, masked, as libpq reads them), how messages and
paths are shown, files written whole, file locks that say who holds them, signals, and
the registry of a project's databases with its settings.

The lowest layer: ``postgres/`` and ``guard/`` build on it, then ``migration/``,
``provisioning/``, ``checks/``, and the two fronts, ``cli/`` and ``plugin/``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any


def lazy_name(package: str, where: dict[str, str], name: str, names: dict[str, Any]) -> Any:
    """``name`` of ``package`` loaded on first use (PEP 562's module ``__getattr__``), from
    its module ``where[name]``, and kept in the package's ``names`` (its ``globals()``):
    the package imports its heavy modules only when a name of theirs is asked for."""
    if name not in where:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = names[name] = getattr(import_module(f".{where[name]}", package), name)
    return value
