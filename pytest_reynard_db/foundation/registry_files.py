"""Reading the registry's files: the ``[tool.reynard-db]`` table of pyproject.toml (or the
``alembic_<name>.ini`` files beside it, when there is none), and each ini's tree.

Every way a file can be wrong is one ``ConfigError`` line naming the file and the key;
an entry that cannot be read is kept as ``Broken`` (it fails alone, when used).
"""

from __future__ import annotations

import configparser
import os
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.util import CommandError, coerce_resource_to_filename

from .errors import ConfigError
from .filesystem import refuse_non_regular
from .registry import Broken, Database, LintSettings
from .urls import one_line, parse_url, refuse_control_characters

DATABASE_KEYS = frozenset({"ini", "database", "url_env", "mirror_of", "description"})
TOP_LEVEL_KEYS = frozenset({"databases", "lint", "base"})
INI_PREFIX = "alembic_"


def database_specs(
    root: Path, pyproject: Path
) -> tuple[dict[str, dict[str, Any]], LintSettings, str | None]:
    """Each database's table (``ini``, ``database``...) by name, the lint settings and the
    ``base`` git ref: from ``[tool.reynard-db]``, else discovered from the ini files in
    ``root``."""
    refuse_non_regular(pyproject)
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
        return _discover(root), LintSettings(), None
    return _read_table(pyproject, table)


def unreadable(name: str, spec: Mapping[str, Any], error: ConfigError) -> Broken:
    """What is known of an entry that could not be read (its database and url_env are
    still production names), and why."""
    database = spec.get("database") if isinstance(spec.get("database"), str) else None
    url_env = spec.get("url_env") if isinstance(spec.get("url_env"), str) else None
    return Broken(name, database or name, url_env or f"{name.upper()}_DATABASE_URL", error)


def _read_table(
    pyproject: Path, table: Any
) -> tuple[dict[str, dict[str, Any]], LintSettings, str | None]:
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
    base = table.get("base")
    if base is not None and (not isinstance(base, str) or not base.strip()):
        raise ConfigError(f'{pyproject}: {where}: base must be a git ref such as "origin/main"')
    if base is not None:
        refuse_control_characters(base, what=f"{pyproject}: {where}: base")
    return specs, LintSettings.from_table(table.get("lint", {}), pyproject), base


def _check_spec(pyproject: Path, name: str, spec: Mapping[str, Any]) -> None:
    here = f"[tool.reynard-db.databases.{name}]"
    for key, value in spec.items():
        if key not in DATABASE_KEYS:
            raise ConfigError(f"{pyproject}: {here}: unknown key {key!r}")
        if not isinstance(value, str):
            raise ConfigError(f"{pyproject}: {here}: {key} must be a string")
        if key != "description":  # names: a NUL would end libpq's conninfo there
            refuse_control_characters(value, what=f"{pyproject}: {here}: {key}")
    refuse_control_characters(name, what=f"{pyproject}: {here}")
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


def build_database(
    root: Path, pyproject: Path, name: str, spec: Mapping[str, Any], warnings: list[str]
) -> Database:
    _check_spec(pyproject, name, spec)
    here = f"[tool.reynard-db.databases.{name}]"
    ini = (root / spec["ini"]).resolve()
    refuse_non_regular(ini, where=f"{pyproject}: {here}: ini: ")
    if not ini.is_file():
        raise ConfigError(f"{pyproject}: {here}: ini: no such file: {ini}")
    if ini.suffix == ".toml":  # configparser would read TOML as a broken ini
        raise ConfigError(
            f"{pyproject}: {here}: ini: {ini.name} is TOML, not an Alembic ini; register "
            "the alembic.ini beside it (the [tool.alembic] of a pyproject.toml there is read "
            "with it)"
        )
    toml = alembic_toml(ini, pyproject)
    try:
        config = Config(str(ini), toml_file=str(toml) if toml else None)
        script_location = config.get_alembic_option("script_location")
        version_locations = config.get_version_locations_list()
        sys_paths = config.get_prepend_sys_paths_list()
        ini_url = config.get_main_option("sqlalchemy.url")
        engines = config.get_main_option("databases")
    except (configparser.Error, UnicodeDecodeError, ValueError, CommandError) as exc:
        raise ConfigError(f"{ini}: unreadable ini: {one_line(exc)}") from None
    if engines:
        _refuse_multidb(ini, engines)
    if not script_location:
        also = f" nor [tool.alembic] of {toml}" if toml else ""
        raise ConfigError(f"{ini}: [alembic] script_location is missing{also}")
    base = _origin(config, "prepend_sys_path", ini, toml).parent
    paths = _sys_paths(sys_paths or (), base, root)
    origin = _origin(config, "script_location", ini, toml)
    script_dir = _location(origin, "script_location", script_location, paths)
    if not script_dir.is_dir():
        raise ConfigError(f"{origin}: script_location: not a directory: {script_dir}")
    origin = _origin(config, "version_locations", ini, toml)
    locations = tuple(
        _location(origin, "version_locations", p, paths, missing_ok=True)
        for p in version_locations or ()
    )
    if not locations:
        locations = (script_dir / "versions",)
    for location in locations:
        if location.exists() and not location.is_dir():
            raise ConfigError(f"{origin}: version_locations: not a directory: {location}")
        if not location.exists():
            # git keeps no empty folder; Alembic accepts a missing one, and so do we
            warnings.append(f"{origin}: version_locations: no such directory (yet): {location}")
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
        sys_paths=paths,
        toml=toml,
    )


def _refuse_multidb(ini: Path, engines: str) -> None:
    """Alembic's ``multidb`` template: one env.py connecting to every engine its ini
    names, each URL in a section of its own. The harness gives a run one database (both
    engines would land in it, and wait on each other's version row), and ``--url`` names
    one; so it is refused, with the way out."""
    raise ConfigError(
        f"{ini}: [alembic] databases = {engines}: one env.py migrating several databases "
        "(Alembic's multidb template) is not supported; give each database an Alembic "
        "environment of its own (alembic init, one ini each) and register each"
    )


def alembic_toml(ini: Path, pyproject: Path) -> Path | None:
    """The pyproject.toml whose ``[tool.alembic]`` completes ``ini`` (Alembic's
    ``pyproject`` templates keep everything but the URL and logging there): the one
    beside the ini (where ``alembic`` run in that folder reads it), else the project's."""
    for candidate in dict.fromkeys((ini.parent / "pyproject.toml", pyproject)):
        if not candidate.is_file():
            continue
        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{candidate}: invalid TOML: {one_line(exc)}") from None
        if isinstance(data.get("tool", {}).get("alembic"), dict):
            return candidate
    return None


def _origin(config: Config, option: str, ini: Path, toml: Path | None) -> Path:
    """The file an option was read from: the ini wins (as in Alembic), else the toml.
    Relative paths are taken from that file's folder (Alembic's ``%(here)s``)."""
    if toml is None or config.file_config.has_option(config.config_ini_section, option):
        return ini
    return toml


def mirror_errors(
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


def _location(
    origin: Path, key: str, value: str, sys_paths: Sequence[Path], *, missing_ok: bool = False
) -> Path:
    """A ``script_location`` or ``version_locations`` entry read from ``origin`` (the ini
    or the pyproject.toml), as Alembic reads it: ``package:path`` a folder inside an
    importable package (see ``_package_folder``); else a path, taken from ``origin``'s
    folder (``%(here)s``) or, where that does not exist, from the current directory (as
    Alembic takes a relative path). Neither existing is one error naming both, unless
    ``missing_ok`` (a version location git dropped, being empty): then ``origin``'s."""
    if is_package_resource(value):
        found = _package_folder(origin, key, value, sys_paths)
        if found.exists() or missing_ok:
            return found
        raise ConfigError(f"{origin}: {key}: no such directory: {found} (from {value})")
    beside = _resolve(origin.parent, value)
    from_cwd = Path(value).resolve()
    for candidate in (beside, from_cwd):
        if candidate.exists():
            return candidate
    if missing_ok:
        return beside
    tried = beside if from_cwd == beside else f"{beside} nor {from_cwd}"
    raise ConfigError(f"{origin}: {key}: no such directory: {tried}")


def is_package_resource(value: str) -> bool:
    """Alembic's test (``coerce_resource_to_filename``): not an absolute path, and a colon."""
    return not os.path.isabs(value) and ":" in value


def _package_folder(origin: Path, key: str, value: str, sys_paths: Sequence[Path]) -> Path:
    """``package:path`` (Prefect: ``prefect.server.database:_migrations``) resolved by
    Alembic's own ``coerce_resource_to_filename``, which imports the package as every
    ``alembic`` command does; with ``prepend_sys_path``'s entries on ``sys.path``, as
    Alembic puts them there before. A package that cannot be imported is one line."""
    package = value.split(":", 1)[0]
    with _on_sys_path(sys_paths):
        try:
            return coerce_resource_to_filename(value).resolve()
        except ModuleNotFoundError as exc:
            missing = f"no module named {exc.name!r}" if exc.name else one_line(exc)
            raise ConfigError(
                f"{origin}: {key}: {value}: package {package!r} cannot be imported: {missing} "
                "(install it, or put its folder on PYTHONPATH or in prepend_sys_path)"
            ) from None
        except Exception as exc:  # the package's own import failed: its error, one line
            raise ConfigError(
                f"{origin}: {key}: {value}: importing package {package!r} failed: "
                f"{type(exc).__name__}: {one_line(exc)}"
            ) from None


@contextmanager
def _on_sys_path(paths: Sequence[Path]) -> Iterator[None]:
    """``paths`` first on ``sys.path`` meanwhile (what the import finds there stays
    imported, as after Alembic's own)."""
    added = [str(p) for p in paths if str(p) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


def _sys_paths(entries: Iterable[str], base: Path, root: Path) -> tuple[Path, ...]:
    """``prepend_sys_path``, each entry from the ini's folder and, when relative, from the
    project root too: Alembic reads ``.`` as the current directory, which for an ini in a
    subfolder (``alembic -c db/alembic.ini``) is the root, where the application is."""
    paths: list[Path] = []
    for entry in entries:
        paths.append(_resolve(base, entry))
        if not Path(entry).is_absolute():
            paths.append(_resolve(root, entry))
    return tuple(dict.fromkeys(paths))


def _resolve(base: Path, location: str) -> Path:
    """A path from an ini, relative to the ini's folder (Alembic's ``%(here)s``)."""
    path = Path(location)
    return (path if path.is_absolute() else base / path).resolve()


def _database_from_url(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return parse_url(url).database or None
    except ConfigError:
        return None
