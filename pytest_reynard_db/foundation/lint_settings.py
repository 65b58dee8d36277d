"""``[tool.reynard-db.lint]``: the one place its keys, types and values are checked.

The registry reads the table with ``LintSettings.from_table`` when it loads
pyproject.toml, so a bad key or an unknown check is a ``ConfigError`` before any
verb runs; the safety checks and ``check`` only read the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: The opt-in checks: off in ``check`` and the pytest items until enabled here.
OPT_IN = ("lint", "locks")

#: Rules to exclude, the PostgreSQL version Squawk assumes, and the opt-ins ``check`` runs.
LINT_KEYS = frozenset({"exclude", "pg_version", "enabled"})

#: Squawk rules left out unless the project's own ``exclude`` is all it wants:
#: they are about style (integer widths, text vs varchar, identity columns,
#: timestamptz), not locks; and the timeout rules ask for a ``SET`` that an
#: Alembic env issues on its connection, where offline SQL cannot show it.
DEFAULT_EXCLUDE = (
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamptz",
    "require-lock-timeout",
    "require-statement-timeout",
)


@dataclass(frozen=True)
class LintSettings:
    """Squawk rules to exclude, the PostgreSQL version, the enabled opt-in checks."""

    exclude: tuple[str, ...] = ()
    pg_version: str | None = None
    enabled: tuple[str, ...] = ()

    @classmethod
    def from_table(cls, table: Any, source: Path | str = "pyproject.toml") -> LintSettings:
        """The settings of a ``[tool.reynard-db.lint]`` table; anything wrong is a ConfigError
        naming ``source`` and the key."""
        here = f"{source}: [tool.reynard-db.lint]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{here} must be a table")
        for key, value in table.items():
            if key not in LINT_KEYS:
                raise ConfigError(
                    f"{here}: unknown key {key!r} (keys: {', '.join(sorted(LINT_KEYS))})"
                )
            if key in ("exclude", "enabled") and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                raise ConfigError(f"{here}: {key} must be a list of strings")
            if key == "pg_version" and (
                isinstance(value, bool) or not isinstance(value, str | int | float)
            ):
                raise ConfigError(f'{here}: pg_version must be a string such as "16"')
        enabled = tuple(table.get("enabled", ()))
        unknown = [name for name in enabled if name not in OPT_IN]
        if unknown:
            raise ConfigError(
                f"{here}: enabled: unknown check "
                f"{', '.join(repr(n) for n in unknown)} (opt-in checks: {', '.join(OPT_IN)})"
            )
        version = table.get("pg_version")
        return cls(
            exclude=tuple(table.get("exclude", ())),
            pg_version=None if version is None else str(version),
            enabled=enabled,
        )

    @property
    def excluded(self) -> tuple[str, ...]:
        """Every excluded Squawk rule: the defaults and the project's."""
        return tuple(dict.fromkeys([*DEFAULT_EXCLUDE, *self.exclude]))
