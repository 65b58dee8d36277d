"""The registry: which databases a project has, where their Alembic trees are, and the
project's ``[tool.reynard-db.lint]`` settings.

Read from ``[tool.reynard-db.databases.<name>]`` in the project's pyproject.toml,
or discovered from ``alembic_<name>.ini`` files beside it (``registry_files``
reads them). Everything here is plain data; nothing connects to a database.

``LintSettings.from_table`` is the one place the lint table's keys, types and values are
checked: the registry reads it when it loads pyproject.toml, so a bad key or an unknown
check is a ``ConfigError`` before any verb runs; the safety checks and ``check`` only
read the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy.engine import URL

from .errors import ConfigError, UnknownDatabaseError
from .urls import MAINTENANCE_DATABASE, admin_url, parse_url, with_driver

#: Databases an admin URL may name: the server's own, holding no application's data.
MAINTENANCE_DATABASES = ("postgres", "template1")


# -- [tool.reynard-db.lint], checked in one place --------------------------------------

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


# -- the registry ----------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """One registered database and its Alembic environment."""

    name: str
    ini: Path
    database: str
    url_env: str
    mirror_of: str | None
    description: str
    script_location: Path
    version_locations: tuple[Path, ...]
    sys_paths: tuple[Path, ...] = ()
    #: The pyproject.toml whose ``[tool.alembic]`` holds the rest of the settings, if any.
    toml: Path | None = None

    def alembic_config(self, *, url: str | URL | None = None, **attributes: Any) -> Config:
        """A fresh Alembic ``Config`` for this database's ini.

        ``url`` (when given) replaces ``sqlalchemy.url``; ``attributes`` land in
        ``config.attributes`` (``connection`` there is used by our ``env.py``). For quiet
        use (tests, checks), ``migration.env_run.silenced`` points it at a copy of the ini
        whose logging sections log nothing.
        """
        config = Config(str(self.ini), toml_file=str(self.toml) if self.toml else None)
        # Absolute paths, so that the tree is found whatever the current directory
        # (Alembic resolves relative ones against the cwd).
        config.set_main_option("path_separator", "os")
        config.set_main_option("script_location", str(self.script_location))
        config.set_main_option(
            "version_locations", os.pathsep.join(str(p) for p in self.version_locations)
        )
        if self.sys_paths:
            config.set_main_option(
                "prepend_sys_path", os.pathsep.join(str(p) for p in self.sys_paths)
            )
        config.set_main_option("reynard_url_env", self.url_env)
        if url is not None:
            rendered = with_driver(parse_url(url)).render_as_string(hide_password=False)
            # configparser interpolates '%': a password containing one must be escaped.
            config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
        config.attributes.update(attributes)
        return config

    def ini_url(self) -> str | None:
        """The ini's ``sqlalchemy.url``, if it sets one."""
        return Config(str(self.ini)).get_main_option("sqlalchemy.url") or None

    def production_url(
        self, url: str | URL | None = None, *, environ: Mapping[str, str] | None = None
    ) -> URL:
        """Resolve the production URL: ``url`` > ``$<url_env>`` > the ini's ``sqlalchemy.url``."""
        environ = os.environ if environ is None else environ
        if url:
            return with_driver(parse_url(url, origin="--url"))
        if environ.get(self.url_env):
            return with_driver(parse_url(environ[self.url_env], origin=f"${self.url_env}"))
        ini_url = self.ini_url()
        if ini_url:
            try:
                return with_driver(parse_url(ini_url, origin=f"{self.ini.name}: sqlalchemy.url"))
            except ConfigError as exc:
                # Most often alembic init's placeholder (driver://...), left on purpose:
                # the fix is the variable or --url, not the ini.
                unset = "is empty" if self.url_env in environ else "is not set"
                raise ConfigError(
                    f"database {self.name!r}: ${self.url_env} {unset}, and {exc}; "
                    f"set ${self.url_env} or pass --url URL"
                ) from None
        raise ConfigError(
            f"database {self.name!r}: no URL; pass --url, set ${self.url_env}, "
            f"or set sqlalchemy.url in {self.ini}"
        )


@dataclass(frozen=True)
class Broken:
    """A registry entry that could not be read: what is known of it, and why."""

    name: str
    database: str
    url_env: str
    error: ConfigError


@dataclass(frozen=True)
class Registry:
    """All databases of one project, by name, in declaration order."""

    root: Path
    source: Path
    databases: dict[str, Database] = field(default_factory=dict)
    lint: LintSettings = field(default_factory=LintSettings)
    #: Entries whose configuration is broken: each fails alone, when it is used.
    broken: dict[str, Broken] = field(default_factory=dict)
    #: What Alembic accepts but a user should hear about (a versions folder git dropped).
    warnings: list[str] = field(default_factory=list)
    #: The git ref the ``history`` check compares the trees with (``check --base`` wins).
    base: str | None = None

    def get(self, name: str) -> Database:
        if name in self.broken:
            raise self.broken[name].error
        try:
            return self.databases[name]
        except KeyError:
            known = ", ".join([*self.databases, *self.broken]) or "none"
            raise UnknownDatabaseError(
                f"unknown database {name!r} in {self.source} (known: {known})"
            ) from None

    def select(self, names: Iterable[str] = ()) -> list[Database]:
        """The named databases (every working one when ``names`` is empty; a named broken
        one raises its error)."""
        names = list(names)
        return [self.get(n) for n in names] if names else list(self.databases.values())

    def mirrors_of(self, name: str) -> list[Database]:
        return [db for db in self.databases.values() if db.mirror_of == name]

    def mirror_pairs(self, names: Iterable[str] = ()) -> list[tuple[Database, Database]]:
        """(source, mirror) pairs: a name is a mirror, or a source meaning all its mirrors;
        no names means every mirror."""
        pairs: list[tuple[Database, Database]] = []
        for db in self.select(names):
            for mirror in [db] if db.mirror_of else self.mirrors_of(db.name):
                assert mirror.mirror_of is not None
                pair = (self.get(mirror.mirror_of), mirror)
                if pair not in pairs:
                    pairs.append(pair)
        return pairs

    def url_envs(self, name: str) -> list[str]:
        """The variables a database's migrations may read for their URL: its own
        ``url_env`` and, for a mirror, its sources' (a mirror's ``env.py`` is often a
        copy of the production one, reading the production variable)."""
        envs: list[str] = []
        current: str | None = name
        while current is not None and current not in envs:
            if current in self.broken:
                envs.append(self.broken[current].url_env)
                break
            db = self.get(current)
            envs.append(db.url_env)
            current = db.mirror_of
        return list(dict.fromkeys(envs))

    def production_variables(self) -> set[str]:
        """Every registered ``url_env``, broken entries' too (they still name production)."""
        return {db.url_env for db in self.databases.values()} | {
            b.url_env for b in self.broken.values()
        }

    def production_names(self) -> set[str]:
        return {db.database for db in self.databases.values()} | {
            b.database for b in self.broken.values()
        }

    def refuse_as_admin_url(
        self, url: URL, *, option: str, allow: tuple[str, ...] = (), allow_option: str = ""
    ) -> None:
        """An admin URL must name the server's maintenance database: the harness connects
        to it for its own admin work, so a registered production database there is a
        mistake, and so is any other application database (``?dbname=prod``) unless the
        user opted in to exactly that URL."""
        if url.database in self.production_names():
            raise ConfigError(
                f"refusing {option}: it names the production database {url.database!r}; "
                "give the server's admin URL (e.g. .../postgres)"
            )
        database = url.database or MAINTENANCE_DATABASE
        if database in MAINTENANCE_DATABASES or database.startswith("test_"):
            return
        if any(_same_database(url, other) for other in allow):
            return
        raise ConfigError(
            f"refusing {option}: it names database {database!r}, not a maintenance database "
            f"({', '.join(MAINTENANCE_DATABASES)}), and the harness connects to it; give the "
            f"server's admin URL, or to use this database anyway pass it to {allow_option} too"
        )


def find_project_root(start: Path | None = None, *, hint: str = "pass --project DIR") -> Path:
    """The nearest directory upward from ``start`` (default: cwd) holding pyproject.toml;
    ``hint``: what the front's user can do when there is none."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").exists():  # a FIFO there is refused, by its kind
            return candidate
    raise ConfigError(f"no pyproject.toml in {here} or above; {hint}")


def load_registry(project: Path | str | None = None) -> Registry:
    """Read the registry of the project at ``project`` (default: found from cwd)."""
    from .registry_files import build_database, database_specs, mirror_errors, unreadable

    root = Path(project).resolve() if project else find_project_root()
    pyproject = root / "pyproject.toml"
    specs, lint, base = database_specs(root, pyproject)
    databases: dict[str, Database] = {}
    broken: dict[str, Broken] = {}
    warnings: list[str] = []
    for name, spec in specs.items():
        try:
            databases[name] = build_database(root, pyproject, name, spec, warnings)
        except ConfigError as exc:
            broken[name] = unreadable(name, spec, exc)
    for name, error in mirror_errors(pyproject, databases, broken).items():
        broken[name] = unreadable(name, specs[name], error)
        del databases[name]
    return Registry(
        root=root,
        source=pyproject,
        databases=databases,
        lint=lint,
        broken=broken,
        warnings=warnings,
        base=base,
    )


def _same_database(url: URL, other: str) -> bool:
    try:
        parsed = admin_url(other, origin="opt-in")
    except ConfigError:
        return False
    return (parsed.host, parsed.port, parsed.database) == (url.host, url.port, url.database)
