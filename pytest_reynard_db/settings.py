"""The plugin's settings, resolved once: command line > ini > environment > default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

SOURCES = ("copy", "point")
URL_ENV = "REYNARD_DB_URL"


@dataclass(frozen=True)
class Settings:
    """What ``--reynard-db*`` (or the ini keys of the same names) asked for."""

    databases: tuple[str, ...] = ()
    url: str | None = None
    source: str = "copy"
    checks: bool = False
    reuse: bool = False
    allow: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.databases) or self.checks


OPTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--reynard-db", "the database(s) tests run against, NAME[,NAME]", {"metavar": "NAME"}),
    (
        "--reynard-db-url",
        f"admin URL of an existing server (also ${URL_ENV}); default: an ephemeral server",
        {"metavar": "URL"},
    ),
    (
        "--reynard-db-source",
        "for a mirror: migrate with its own copied tree (copy) or its source's tree (point)",
        {"choices": SOURCES},
    ),
    (
        "--reynard-db-checks",
        "collect the migration checks as test items reynard-db::<db>::<check>",
        {"action": "store_true", "default": None},
    ),
    (
        "--reynard-db-reuse",
        "keep the ephemeral server and migrated templates between runs",
        {"action": "store_true", "default": None},
    ),
    (
        "--reynard-db-allow",
        "URL[,URL]: databases tests may connect to on purpose, besides the run's own "
        "(every other connection is refused)",
        {"metavar": "URL"},
    ),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("reynard-db", "PostgreSQL databases migrated with Alembic")
    for flag, help_, extra in OPTIONS:
        dest = flag.lstrip("-").replace("-", "_")
        group.addoption(flag, dest=dest, help=help_, **extra)
        # The ini key is the option without its dashes: pytest's spelling (reynard_db),
        # and the literal one (reynard-db) as well.
        for key in (dest, flag.lstrip("-")):
            if extra.get("action") == "store_true":
                parser.addini(key, help_, type="bool", default=None)
            else:
                parser.addini(key, help_, type="string", default=None)


def get_settings(config: pytest.Config, *, early: bool = False) -> Settings:
    """Resolve every setting in one place (pytest-postgresql's ``get_config`` pattern).

    ``early``: before ``pytest_configure``, when only the known arguments are parsed.
    """

    def option(name: str) -> Any:
        if early:
            return getattr(config.known_args_namespace, name, None)
        return config.getoption(name)

    def pick(name: str) -> Any:
        for value in (
            option(name),
            config.getini(name),
            config.getini(name.replace("_", "-")),
        ):
            if value is not None and value != "":
                return value
        return None

    names = pick("reynard_db") or ""
    source = pick("reynard_db_source") or "copy"
    if source not in SOURCES:
        raise pytest.UsageError(f"reynard_db_source: {source!r} is not one of {', '.join(SOURCES)}")
    return Settings(
        databases=tuple(n.strip() for n in str(names).split(",") if n.strip()),
        url=pick("reynard_db_url") or os.environ.get(URL_ENV) or None,
        source=source,
        checks=bool(pick("reynard_db_checks")),
        reuse=bool(pick("reynard_db_reuse")),
        allow=tuple(u.strip() for u in str(pick("reynard_db_allow") or "").split(",") if u.strip()),
    )
