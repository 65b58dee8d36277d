"""The plugin's pytest options and ini keys, and the ``Settings`` they resolve to, once:
command line > ini > environment > default.

Which database each test runs against: ``--reynard-db``, the marker, pytest-alembic.

- ``@pytest.mark.reynard_db("x")`` parametrizes the session fixture ``reynard_db_name``
  with ``x``: the test's id gets ``[x]`` and, as for any session-scoped parameter,
  pytest groups the tests of one database together (the order changes).
- ``@pytest.mark.reynard_db("x", "y")`` parametrizes ``reynard_db_names`` (what
  ``reynard_dbs`` maps) with ``("x", "y")`` and ``reynard_db_name`` with the first, under
  one id, ``[x-y]``: the single-database fixtures give ``x``.
- With several ``--reynard-db`` databases, a test that uses pytest-alembic's fixtures
  and no marker runs once per database (``items``).
- With no ``--reynard-db`` (and no ``--reynard-db-checks``), the databases the markers
  name are the run's: the plugin becomes active at the end of collection
  (``from_markers``); an unmarked test that asks for a database then fails saying so.
"""

from __future__ import annotations

import inspect
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import pytest

from ..foundation.errors import ConfigError
from .items import uses_alembic

if TYPE_CHECKING:  # resolve is heavy: an inactive plugin imports none of it
    from ..provisioning.resolve import Source

SOURCES: tuple[Source, ...] = ("copy", "point")  # resolve.SOURCES, without its imports
URL_ENV = "REYNARD_DB_URL"
IniType = Literal["string", "bool"]


@dataclass(frozen=True)
class Settings:
    """What ``--reynard-db*`` (or the ini keys of the same names) asked for."""

    databases: tuple[str, ...] = ()
    url: str | None = None
    source: Source = "copy"
    checks: bool = False
    reuse: bool = False
    allow: tuple[str, ...] = ()
    #: No ``--reynard-db``: ``databases`` are those the tests' markers name.
    from_markers: bool = False

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
        type_: IniType = "bool" if extra.get("action") == "store_true" else "string"
        add_ini(parser, dest, flag.lstrip("-"), help_, type_)


def add_ini(parser: pytest.Parser, key: str, alias: str, help_: str, type_: IniType) -> None:
    """The ini key ``key`` (pytest's spelling, ``reynard_db``), also read as ``alias``
    (the option's own, ``reynard-db``); ``pytest --help`` lists ``key`` alone.

    pytest >= 9 knows aliases. Before it, the alias is entered in the parser's table of
    known keys (so it is read, and no "Unknown config option" warning) but not in the
    list ``--help`` prints: the one private attribute we touch, checked to exist.
    """
    help_ = f"{help_} (also spelt {alias})"
    if "aliases" in inspect.signature(parser.addini).parameters:
        parser.addini(key, help_, type=type_, default=None, aliases=[alias])
        return
    parser.addini(key, help_, type=type_, default=None)
    known = getattr(parser, "_inidict", None)
    if isinstance(known, dict) and key in known and hasattr(parser, "_ininames"):
        known[alias] = known[key]
        LEGACY_ALIASES[key] = alias
    else:  # an unforeseen pytest: both keys listed rather than one ignored
        parser.addini(alias, help_, type=type_, default=None)
        LEGACY_ALIASES[key] = alias


#: pytest < 9: the alias of each key, read separately (pytest >= 9 resolves aliases itself).
LEGACY_ALIASES: dict[str, str] = {}


def get_settings(config: pytest.Config, *, early: bool = False) -> Settings:
    """Resolve every setting in one place (pytest-postgresql's ``get_config`` pattern).

    ``early``: before ``pytest_configure``, when only the known arguments are parsed.
    """

    def option(name: str) -> Any:
        if early:
            return getattr(config.known_args_namespace, name, None)
        return config.getoption(name)

    def ini(name: str) -> Any:
        alias = LEGACY_ALIASES.get(name)
        for value in (config.getini(name), config.getini(alias) if alias else None):
            if value is not None and value != "":
                return value
        return None

    def pick(name: str) -> Any:
        value = option(name)
        return value if value is not None and value != "" else ini(name)

    names = pick("reynard_db") or ""
    source = pick("reynard_db_source") or "copy"
    if source not in SOURCES:
        raise pytest.UsageError(f"reynard_db_source: {source!r} is not one of {', '.join(SOURCES)}")
    return Settings(
        databases=tuple(n.strip() for n in str(names).split(",") if n.strip()),
        url=pick("reynard_db_url") or os.environ.get(URL_ENV) or None,
        source=source,
        checks=bool(option("reynard_db_checks"))
        or (bool(ini("reynard_db_checks")) and not narrowed(config)),
        reuse=bool(pick("reynard_db_reuse")),
        allow=tuple(u.strip() for u in str(pick("reynard_db_allow") or "").split(",") if u.strip()),
    )


def surely_starts_a_server(config: pytest.Config) -> bool:
    """Whether the run surely selects a database on a server of its own, read before
    pytest parses its arguments (the options are added, none parsed; ``plugin.early``
    then begins the initdb cache, ~280 ms before the first hook where the options are
    known): ``--reynard-db`` in the arguments, ``$PYTEST_ADDOPTS`` or the ini's
    ``addopts``, else the ini's ``reynard_db`` key; neither an existing server
    (``--reynard-db-url``, ``$REYNARD_DB_URL``, the ini's) nor an xdist worker (its
    controller's server). Check items may be added: what is begun here is a forked
    process or a thread, and their children are forked at the first hook only from a
    process of one thread (``checks.spares``). When unsure, False: the first hook begins
    it, as for any run."""
    args = _early_arguments(config)
    if args is None:
        return False
    named = {arg.split("=", 1)[0] for arg in args if arg.startswith("--reynard-db")}
    if "--reynard-db-url" in named:
        return False
    sources = _values(args, "--reynard-db-source")
    if not sources:
        sources = [str(_early_ini(config, _SOURCE_KEYS) or "copy")]
    given = _values(args, "--reynard-db")
    if any(source not in SOURCES for source in sources) or None in given:
        return False  # pytest's usage error, said at once: no initdb to wait for
    # The last one given wins (argparse's); none, or an empty one: the ini's key, as
    # ``get_settings`` reads it
    names = (given[-1] if given else "") or str(_early_ini(config, _DATABASE_KEYS) or "")
    return any(name.strip() for name in names.split(","))


def surely_runs_tests_here(config: pytest.Config) -> bool:
    """For a run that ``surely_starts_a_server``: whether it does so from this process to
    run tests, read as that is: neither distributed (``-n``, ``--dist``: the controller's
    server, its workers take its URL) nor one of ``NO_TESTS``' runs. When unsure, False."""
    args = _early_arguments(config) or []
    flags = {arg.split("=", 1)[0] for arg in args if arg.startswith("-")}
    spread = any(arg.startswith(("-n", "--numprocesses", "--dist", "--tx", "-d")) for arg in flags)
    return not spread and not flags & _NO_TESTS_FLAGS


def surely_reuses(config: pytest.Config) -> bool:
    """Whether ``--reynard-db-reuse`` (or the ini's) is given, read before pytest parses."""
    args = _early_arguments(config) or []
    return "--reynard-db-reuse" in args or _early_ini(config, _REUSE_KEYS) is True


#: The ini keys (both spellings) of ``--reynard-db`` and ``--reynard-db-source``.
_DATABASE_KEYS = ("reynard_db", "reynard-db")
_SOURCE_KEYS = ("reynard_db_source", "reynard-db-source")
#: The ini keys (both spellings) of ``--reynard-db-reuse``.
_REUSE_KEYS = ("reynard_db_reuse", "reynard-db-reuse")
#: ``NO_TESTS``, as spelt on a command line.
_NO_TESTS_FLAGS = {
    "--co",
    "--collect-only",
    "--collectonly",
    "-h",
    "--help",
    "-V",
    "--version",
    "--fixtures",
    "--funcargs",
    "--fixtures-per-test",
    "--markers",
    "--setup-plan",
    "--setupplan",
    "--cache-show",
}


def _early_arguments(config: pytest.Config) -> list[str] | None:
    """The run's arguments before pytest parses them, in pytest's order (the ini's
    ``addopts``, ``$PYTEST_ADDOPTS``, the command line); None where the run may use an
    existing server, or is an xdist worker."""
    if xdist_worker(config) or os.environ.get(URL_ENV):
        return None
    try:
        addopts = [str(arg) for arg in config.getini("addopts")]
        in_ini = [config.getini(key) for key in _SERVER_KEYS]
        from_env = shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    except (ValueError, TypeError):  # what pytest cannot read either: it says so itself
        return None
    if any(value not in (None, "", False) for value in in_ini):
        return None
    return [*addopts, *from_env, *(str(arg) for arg in config.invocation_params.args)]


def _values(args: list[str], option: str) -> list[str | None]:
    """Each value ``args`` give ``option``, in order, in either of argparse's forms
    (``--option=value``, ``--option value``); None for one that has none (followed by an
    option, or last: ``--reynard-db --co``), pytest's usage error."""
    values: list[str | None] = []
    for index, arg in enumerate(args):
        if arg == option:
            following = args[index + 1] if index + 1 < len(args) else None
            values.append(None if following is None or following.startswith("-") else following)
        elif arg.startswith(f"{option}="):
            values.append(arg.split("=", 1)[1])
    return values


def _early_ini(config: pytest.Config, keys: tuple[str, str]) -> object:
    """The ini's value of a key under either spelling (as ``get_settings`` reads it),
    None if neither is set; what pytest cannot read is None (it says so itself)."""
    for key in keys:
        try:
            value = config.getini(key)
        except (ValueError, TypeError):
            return None
        if value not in (None, ""):
            return value
    return None


#: The ini keys (both spellings) with which a run may use an existing server:
#: ``surely_starts_a_server`` is then unsure.
_SERVER_KEYS = ("reynard_db_url", "reynard-db-url")


def narrowed(config: pytest.Config) -> bool:
    """The run names files or node ids (``pytest tests/test_x.py``, ``...::test_y``), not
    the whole project (no argument: ``testpaths``; or directories only). The ini's
    ``reynard_db_checks`` adds the check items to whole runs only, as pytest collects
    only the tests of the files it is given; ``--reynard-db-checks`` adds them always."""
    here = config.invocation_params.dir
    for arg in getattr(config.known_args_namespace, "file_or_dir", None) or ():
        if arg.startswith("-"):
            continue
        if "::" in arg or not (here / arg).is_dir():
            return True
    return False


# -- selection ---------------------------------------------------------------------------

MARKER = "reynard_db"
NAME_FIXTURE = "reynard_db_name"
NAMES_FIXTURE = "reynard_db_names"


def marker_databases(node: pytest.Item) -> tuple[str, ...] | None:
    """The databases ``@pytest.mark.reynard_db(NAME, ...)`` names for ``node``, if marked
    (a name given twice counts once)."""
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return None
    if not marker.args or marker.kwargs or not all(isinstance(a, str) for a in marker.args):
        raise ConfigError(f"{node.nodeid}: use @pytest.mark.{MARKER}('name'[, 'name'...])")
    return tuple(dict.fromkeys(marker.args))


def parametrize(metafunc: pytest.Metafunc, settings: Settings | None) -> None:
    """The marker's databases, or (pytest-alembic's fixtures, several databases) each."""
    argnames = [a for a in (NAME_FIXTURE, NAMES_FIXTURE) if a in metafunc.fixturenames]
    if not argnames:
        return
    try:
        named = marker_databases(metafunc.definition)
    except ConfigError as exc:  # the module's collection error, in one line
        raise pytest.Collector.CollectError(f"reynard-db: {exc}") from None
    if named is not None:
        values = tuple(named[0] if a == NAME_FIXTURE else named for a in argnames)
        metafunc.parametrize(
            argnames, [values], indirect=True, scope="session", ids=["-".join(named)]
        )
    elif (
        NAME_FIXTURE in argnames
        and settings is not None
        and not settings.from_markers
        and len(settings.databases) > 1
        and uses_alembic(metafunc.fixturenames)
    ):
        names = list(settings.databases)
        metafunc.parametrize(NAME_FIXTURE, names, indirect=True, scope="session", ids=names)


def marker_not_applied(item: pytest.Item, default: Sequence[str] | None) -> str | None:
    """Why ``item``'s marker does not pick its database, if it does not. The marker is read
    as tests are generated, from the function, its class and module; one added later (by
    ``pytest.param(..., marks=...)``, or a conftest's ``pytest_collection_modifyitems``)
    is not, and the test got the run's default database without a word (hostile fixtures
    round 20). ``default``: the run's databases (None: markers alone choose them)."""
    try:
        named = marker_databases(item)
    except ConfigError:
        return None  # said at collection
    fixturenames = getattr(item, "fixturenames", ())
    if named is None or NAME_FIXTURE not in fixturenames:
        return None
    params = getattr(getattr(item, "callspec", None), "params", {})
    gets = params.get(NAME_FIXTURE) or (default[0] if default else None)
    if gets == named[0]:
        return None  # the database it names is the one it gets
    return (
        f"{item.nodeid}: @pytest.mark.{MARKER}({', '.join(map(repr, named))}) does not reach "
        "this test's database: a marker added after the tests were generated "
        "(pytest.param(..., marks=...), a conftest's pytest_collection_modifyitems) comes "
        f"after the database is chosen; parametrize {NAME_FIXTURE} instead: "
        f"@pytest.mark.parametrize({NAME_FIXTURE!r}, [...], indirect=True)"
    )


def from_markers(settings: Settings, items: Sequence[pytest.Item]) -> Settings | None:
    """The run's settings when markers alone select its databases (None: no marker)."""
    names = [name for item in items for name in marker_databases(item) or ()]
    if not names:
        return None
    return replace(settings, databases=tuple(dict.fromkeys(names)), from_markers=True)


# -- what kind of process this run is (read at the first hook) -----------------------------

#: pytest's options (``dest``) with which a run runs no test: ``--setup-plan`` shows the
#: fixtures it would set up and sets none; ``--cache-show`` lists the cache and ends.
NO_TESTS = (
    "collectonly",
    "help",
    "version",
    "showfixtures",
    "show_fixtures_per_test",
    "markers",
    "setupplan",
    "cacheshow",
)


def runs_tests(config: pytest.Config) -> bool:
    """Whether the run runs tests (none of ``NO_TESTS`` given)."""
    option = config.known_args_namespace
    return not any(getattr(option, name, False) for name in NO_TESTS)


def distributed(config: pytest.Config) -> bool:
    """Whether this process is xdist's controller (``-n N``, ``--dist``)."""
    option = config.known_args_namespace
    return getattr(option, "dist", "no") != "no" or bool(getattr(option, "numprocesses", None))


def runs_items_here(config: pytest.Config) -> bool:
    """Whether this process runs the tests itself: not an xdist worker (a thread of its
    own talks to the controller) nor the controller of workers."""
    return not hasattr(config, "workerinput") and not distributed(config) and runs_tests(config)


def xdist_worker(config: pytest.Config) -> bool:
    """Whether this process may be an xdist worker: ``workerinput`` is set after the first
    hook, ``$PYTEST_XDIST_WORKER`` before it (a worker then started a server of its own,
    which it never used, as its controller's is the run's). A pytest a test starts in a
    worker inherits the variable: it then begins nothing ahead (its first test starts
    its server), which is all this decides; the check items' children still fork there
    (``runs_items_here``: a worker's arguments hold ``-n``)."""
    return hasattr(config, "workerinput") or bool(os.environ.get("PYTEST_XDIST_WORKER"))
