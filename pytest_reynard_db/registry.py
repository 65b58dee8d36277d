"""The registry: which databases a project has, and where their Alembic trees are.

Read from ``[tool.reynard-db.databases.<name>]`` in the project's pyproject.toml,
or discovered from ``alembic_<name>.ini`` files beside it. Everything here is
plain data and file reading; nothing connects to a database.
"""

from __future__ import annotations

import configparser
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy.engine import URL

from .errors import ConfigError, UnknownDatabaseError
from .lint_settings import LintSettings
from .logs import silent_ini
from .text import one_line
from .urls import MAINTENANCE_DATABASE, admin_url, parse_url, with_driver

DATABASE_KEYS = frozenset({"ini", "database", "url_env", "mirror_of", "description"})
TOP_LEVEL_KEYS = frozenset({"databases", "lint"})
INI_PREFIX = "alembic_"
#: Databases an admin URL may name: the server's own, holding no application's data.
MAINTENANCE_DATABASES = ("postgres", "template1")


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

    def alembic_config(
        self, *, url: str | URL | None = None, quiet: bool = False, **attributes: Any
    ) -> Config:
        """A fresh Alembic ``Config`` for this database's ini.

        ``url`` (when given) replaces ``sqlalchemy.url``; ``attributes`` land in
        ``config.attributes`` (``connection`` there is used by our ``env.py``).
        ``quiet``: the Config names ``logs.silent_ini`` instead of the ini, a copy
        whose logging sections log nothing. An ``env.py`` calls
        ``fileConfig(config.config_file_name)`` (often without checking for None),
        which would print every migration step and replace the process's handlers;
        the CLI's production verbs want those lines, a test run and the checks do not.
        """
        config = Config(str(self.ini))
        if quiet:
            config.file_config  # noqa: B018 -- read the real ini (and its %(here)s) now
            config.config_file_name = str(silent_ini(self.ini))
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
            return with_driver(parse_url(ini_url, origin=f"{self.ini.name}: sqlalchemy.url"))
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


def find_project_root(start: Path | None = None) -> Path:
    """The nearest directory upward from ``start`` (default: cwd) holding pyproject.toml."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    raise ConfigError(f"no pyproject.toml in {here} or above; pass --project DIR")


def load_registry(project: Path | str | None = None) -> Registry:
    """Read the registry of the project at ``project`` (default: found from cwd)."""
    root = Path(project).resolve() if project else find_project_root()
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise ConfigError(f"{pyproject}: no such file")
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        line = pyproject.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{pyproject}: not UTF-8: byte 0x{exc.object[exc.start]:02x} at line {line} "
            "(TOML files must be UTF-8)"
        ) from None
    table = data.get("tool", {}).get("reynard-db")
    if table is None:
        specs = _discover(root)
        lint = LintSettings()
    else:
        specs, lint = _read_table(pyproject, table)
    databases: dict[str, Database] = {}
    broken: dict[str, Broken] = {}
    warnings: list[str] = []
    for name, spec in specs.items():
        try:
            databases[name] = _build(root, pyproject, name, spec, warnings)
        except ConfigError as exc:
            broken[name] = _broken(name, spec, exc)
    for name, error in _mirror_errors(pyproject, databases, broken).items():
        broken[name] = _broken(name, specs[name], error)
        del databases[name]
    return Registry(
        root=root,
        source=pyproject,
        databases=databases,
        lint=lint,
        broken=broken,
        warnings=warnings,
    )


def _broken(name: str, spec: Mapping[str, Any], error: ConfigError) -> Broken:
    database = spec.get("database") if isinstance(spec.get("database"), str) else None
    url_env = spec.get("url_env") if isinstance(spec.get("url_env"), str) else None
    return Broken(name, database or name, url_env or f"{name.upper()}_DATABASE_URL", error)


def _read_table(pyproject: Path, table: Any) -> tuple[dict[str, dict[str, Any]], LintSettings]:
    where = "[tool.reynard-db]"
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: {where} must be a table")
    for key in table:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{pyproject}: {where}: unknown key {key!r}")
    databases = table.get("databases", {})
    if not isinstance(databases, dict) or not databases:
        raise ConfigError(f"{pyproject}: {where}: no [tool.reynard-db.databases.<name>] table")
    specs: dict[str, dict[str, Any]] = {}
    for name, spec in databases.items():
        here = f"[tool.reynard-db.databases.{name}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{pyproject}: {here} must be a table")
        specs[name] = spec
    return specs, LintSettings.from_table(table.get("lint", {}), pyproject)


def _check_spec(pyproject: Path, name: str, spec: Mapping[str, Any]) -> None:
    here = f"[tool.reynard-db.databases.{name}]"
    for key, value in spec.items():
        if key not in DATABASE_KEYS:
            raise ConfigError(f"{pyproject}: {here}: unknown key {key!r}")
        if not isinstance(value, str):
            raise ConfigError(f"{pyproject}: {here}: {key} must be a string")
    if "ini" not in spec:
        raise ConfigError(f"{pyproject}: {here}: missing key 'ini'")


def _discover(root: Path) -> dict[str, dict[str, Any]]:
    """Databases from ``alembic_<name>.ini`` files; ``<x>_e2e`` mirrors ``<x>``."""
    names = sorted(p.stem[len(INI_PREFIX) :] for p in root.glob(f"{INI_PREFIX}*.ini"))
    specs: dict[str, dict[str, Any]] = {}
    for name in names:
        spec: dict[str, Any] = {"ini": f"{INI_PREFIX}{name}.ini"}
        if name.endswith("_e2e") and name[: -len("_e2e")] in names:
            spec["mirror_of"] = name[: -len("_e2e")]
        specs[name] = spec
    return specs


def _build(
    root: Path, pyproject: Path, name: str, spec: Mapping[str, Any], warnings: list[str]
) -> Database:
    _check_spec(pyproject, name, spec)
    here = f"[tool.reynard-db.databases.{name}]"
    ini = (root / spec["ini"]).resolve()
    if not ini.is_file():
        raise ConfigError(f"{pyproject}: {here}: ini: no such file: {ini}")
    try:
        config = Config(str(ini))
        script_location = config.get_main_option("script_location")
        version_locations = config.get_version_locations_list()
        sys_paths = config.get_prepend_sys_paths_list()
        ini_url = config.get_main_option("sqlalchemy.url")
    except (configparser.Error, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{ini}: unreadable ini: {one_line(exc)}") from None
    if not script_location:
        raise ConfigError(f"{ini}: [alembic] script_location is missing")
    script_dir = _script_dir(ini, script_location)
    locations = tuple(_resolve(ini.parent, p) for p in version_locations or ())
    if not locations:
        locations = (script_dir / "versions",)
    for location in locations:
        if location.exists() and not location.is_dir():
            raise ConfigError(f"{ini}: version_locations: not a directory: {location}")
        if not location.exists():
            # git keeps no empty folder; Alembic accepts a missing one, and so do we
            warnings.append(f"{ini}: version_locations: no such directory (yet): {location}")
    database = spec.get("database") or _database_from_url(ini_url) or name
    return Database(
        name=name,
        ini=ini,
        database=database,
        url_env=spec.get("url_env") or f"{name.upper()}_DATABASE_URL",
        mirror_of=spec.get("mirror_of"),
        description=spec.get("description", ""),
        script_location=script_dir,
        version_locations=locations,
        sys_paths=tuple(_resolve(ini.parent, p) for p in sys_paths or ()),
    )


def _mirror_errors(
    pyproject: Path, databases: Mapping[str, Database], broken: Mapping[str, Broken]
) -> dict[str, ConfigError]:
    """Each database whose ``mirror_of`` names no database or closes a cycle.

    A mirror of a broken source stays usable for what needs only its own tree.
    """
    errors: dict[str, ConfigError] = {}
    for db in databases.values():
        if db.mirror_of is None:
            continue
        here = f"[tool.reynard-db.databases.{db.name}]"
        if db.mirror_of not in databases and db.mirror_of not in broken:
            errors[db.name] = ConfigError(
                f"{pyproject}: {here}: mirror_of: unknown database {db.mirror_of!r}"
            )
            continue
        seen = [db.name]
        current: str | None = db.mirror_of
        while current is not None and current in databases:
            if current in seen:
                cycle = " -> ".join([*seen, current])
                errors[db.name] = ConfigError(f"{pyproject}: {here}: mirror_of: cycle {cycle}")
                break
            seen.append(current)
            current = databases[current].mirror_of
    return errors


def _script_dir(ini: Path, script_location: str) -> Path:
    """``script_location`` relative to the ini's folder, else (as Alembic resolves it) to
    the current directory; neither existing is one error naming both."""
    beside_ini = _resolve(ini.parent, script_location)
    if beside_ini.is_dir():
        return beside_ini
    from_cwd = Path(script_location).resolve()
    if from_cwd.is_dir():
        return from_cwd
    tried = beside_ini if from_cwd == beside_ini else f"{beside_ini} nor {from_cwd}"
    raise ConfigError(f"{ini}: script_location: no such directory: {tried}")


def _resolve(base: Path, location: str) -> Path:
    """A path from an ini, relative to the ini's folder (Alembic's ``%(here)s``)."""
    path = Path(location)
    return (path if path.is_absolute() else base / path).resolve()


def _same_database(url: URL, other: str) -> bool:
    try:
        parsed = admin_url(other, origin="opt-in")
    except ConfigError:
        return False
    return (parsed.host, parsed.port, parsed.database) == (url.host, url.port, url.database)


def _database_from_url(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return parse_url(url).database or None
    except ConfigError:
        return None
