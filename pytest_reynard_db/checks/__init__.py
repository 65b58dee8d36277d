"""The migration checks (the README's "Migration checks"), as plain functions over a
``CheckRunner``.

Each check is a function ``(runner) -> CheckResult | list[CheckResult]`` in
its own module; ``CHECKS`` lists them in the order they run (cheap file
checks first). ``OPT_IN_CHECKS`` (``lint``, ``locks``) run only when named in
``--only`` or in ``[tool.reynard-db.lint] enabled``, so a tree that passed
before does not turn red on upgrade; ``history`` only when named in ``--only`` or
given a base (``check --base``, ``base`` in ``[tool.reynard-db]``). ``run_checks`` is what
the CLI and the pytest plugin call: it never lets an exception out of a check, so one
broken database or revision becomes one failed result that names it, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..lint_settings import OPT_IN
from ..registry import Registry

if TYPE_CHECKING:
    from .result import CheckResult
    from .runner import CheckRunner
    from .suite import ALL_CHECKS, CHECKS, OPT_IN_CHECKS, run_check, run_checks

#: The default checks, in the order they run.
CHECKS_DEFAULT = (
    "single_head",
    "mirror_sync",
    "upgrade",
    "stairway",
    "downgrade_clean",
    "models_match",
)

#: Every check's name, in the order they run: the file checks first (``ALL_CHECKS``' order).
CHECK_ORDER = ("single_head", "mirror_sync", "history", *CHECKS_DEFAULT[2:], *OPT_IN)

#: Checks that read files only: they need no PostgreSQL server.
FILE_CHECKS = frozenset({"single_head", "mirror_sync", "history"})

#: Checks that need no server but a tool (``lint`` runs Squawk over offline SQL).
OFFLINE_CHECKS = FILE_CHECKS | {"lint"}

# The checks themselves load on first use (PEP 562): naming them imports none.
_WHERE = {
    "ALL_CHECKS": "suite",
    "CHECKS": "suite",
    "OPT_IN_CHECKS": "suite",
    "run_check": "suite",
    "run_checks": "suite",
    "CheckResult": "result",
    "CheckRunner": "runner",
}

__all__ = [
    "ALL_CHECKS",
    "CHECKS",
    "CHECK_ORDER",
    "FILE_CHECKS",
    "OFFLINE_CHECKS",
    "OPT_IN_CHECKS",
    "CheckResult",
    "CheckRunner",
    "enabled_checks",
    "needs_server",
    "run_check",
    "run_checks",
    "select_checks",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def select_checks(only: Iterable[str] | None = None, enabled: Iterable[str] = ()) -> list[str]:
    """The check ids to run, in ``ALL_CHECKS`` order; an unknown id is a ``ConfigError``.

    Without ``only``: every default check, and the opt-in checks in ``enabled``.
    """
    if only is None:
        chosen = set(enabled)
        return [name for name in CHECK_ORDER if name in CHECKS_DEFAULT or name in chosen]
    wanted = [name.strip() for name in only if name.strip()]
    unknown = [name for name in wanted if name not in CHECK_ORDER]
    if unknown:
        named = ", ".join(repr(n) for n in unknown)
        raise ConfigError(f"unknown check {named} (checks: {', '.join(CHECK_ORDER)})")
    return [name for name in CHECK_ORDER if name in wanted]


def enabled_checks(registry: Registry) -> tuple[str, ...]:
    """The opt-in checks ``[tool.reynard-db.lint] enabled`` turns on (unknown ids: ConfigError),
    and ``history`` when the registry has a base."""
    return (*registry.lint.enabled, *(("history",) if registry.base else ()))


def needs_server(only: Iterable[str] | None = None, enabled: Iterable[str] = ()) -> bool:
    """Whether any of the selected checks migrates a database."""
    return any(name not in OFFLINE_CHECKS for name in select_checks(only, enabled))
