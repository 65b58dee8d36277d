"""The items this plugin adds to a run: pytest-alembic's tests on our databases (the
migration checks as items are ``check_items``').

pytest-alembic's tests, once per selected database. With ``--reynard-db=a,b`` a test
that uses pytest-alembic's fixtures (``alembic_runner``, ``alembic_engine``,
``alembic_config``) and no ``@pytest.mark.reynard_db`` runs once per database: a test
of the user's own is parametrized (``test_upgrade[a]``, ``test_upgrade[b]``, like the
marker's ids), and each built-in test that ``--test-alembic`` collects is made once per
database under the same ids, the database kept in the item's stash (``DATABASE``), read
by our ``alembic_engine`` and ``alembic_config``.

The built-in ``test_single_head_revision`` wants one head for the whole tree; under
this plugin it is our ``single_head`` check instead (one head per declared branch
label), so that both say the same of a branch-labelled tree. A direct call of
``pytest_alembic.tests.test_single_head_revision(alembic_runner)`` in a test of your
own is pytest-alembic's and still counts every head.

And pytest-alembic's collector made to work on pytest 9. pytest-alembic 0.13.1 binds
its built-in tests to ``tests/conftest.py`` with a collector whose ``__init__`` does
``self._nodeid += "::pytest-alembic"``; pytest 9 replaced ``Node._nodeid`` with a
structured ``Node._id``, so every session that has a ``tests/conftest.py`` fails at
collection (``AttributeError: 'TestCollector' object has no attribute '_nodeid'``),
with or without ``--test-alembic``. We do not patch the installed package: after
pytest-alembic registers its collection plugin (``pytest_sessionstart``), we swap it
for a subclass whose collector gives ``_nodeid`` a property backed by pytest 9's node
id. The same subclass makes the built-in tests once per selected database when this
plugin is active (``per_database``), on every pytest version; on pytest < 9 with this
plugin inactive nothing is changed.

pytest-alembic binds its built-in tests to one file, ``tests/conftest.py`` (or
``pytest_alembic_tests_path``): in a project without it, ``--test-alembic`` collects
nothing and says nothing. With this plugin active, they are then collected under
``pytest-alembic::`` at the session's root (``anchorless``).

The check items (``--reynard-db-checks``) are ``check_items``'.

Imported at every pytest start (``hooks``, ``options``): what it needs of the checks,
SQLAlchemy or the servers is imported where it is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Engine

#: The database a built-in pytest-alembic item runs against (one item per database).
DATABASE = pytest.StashKey[str]()
#: The fixtures through which a test uses pytest-alembic.
ALEMBIC_FIXTURES = frozenset({"alembic_runner", "alembic_engine", "alembic_config"})
SINGLE_HEAD = "test_single_head_revision"


def item_database(request: pytest.FixtureRequest, default: str) -> str:
    """The database of this test's pytest-alembic fixtures: its item's, else ``default``."""
    return str(request.node.stash.get(DATABASE, default))


def uses_alembic(fixturenames: Sequence[str]) -> bool:
    return not ALEMBIC_FIXTURES.isdisjoint(fixturenames)


def per_database(
    collector: pytest.Collector, items: list[pytest.Item], databases: Sequence[str]
) -> list[pytest.Item]:
    """``items`` (pytest-alembic's built-in tests) once per database, ``name[db]`` when
    there are several; ``test_single_head_revision`` replaced by our ``single_head``."""
    result: list[pytest.Item] = []
    for item in items:
        assert isinstance(item, pytest.Function)
        function = REPLACED.get(item.name, item.obj)
        for database in databases:
            name = f"{item.name}[{database}]" if len(databases) > 1 else item.name
            # No callspec (no parametrize): the id is the name, "[db]" and all.
            made = type(item).from_parent(collector, name=name, callobj=function)
            made.originalname = item.name
            made.stash[DATABASE] = database
            result.append(made)
    return result


def single_head_revision(alembic_runner: Any, request: pytest.FixtureRequest) -> None:
    """Our ``single_head`` (one head per declared branch label) as pytest-alembic's
    ``test_single_head_revision``; a failure names the heads and the merge command."""
    from ..checks import CheckRunner
    from ..checks.files import single_head
    from .stash import STATE

    state = request.config.stash[STATE]
    database = request.node.stash.get(DATABASE, None) or state.settings.databases[0]
    result = single_head(CheckRunner(state.registry.get(database), state.registry, None))
    if not result.ok:
        pytest.fail(result.message, pytrace=False)


def model_definitions_match_ddl(alembic_runner: Any) -> None:
    """pytest-alembic's ``test_model_definitions_match_ddl``, skipped (not failed) where
    ``env.py`` sets no ``target_metadata`` (the stock ``alembic init`` one): no models
    to match, as our ``models_match`` says."""
    from pytest_alembic.tests.default import test_model_definitions_match_ddl

    from ..migration.env_run import NO_METADATA

    try:
        test_model_definitions_match_ddl(alembic_runner)
    except Exception as exc:
        if NO_METADATA not in _words(exc):
            raise
        pytest.skip("no target_metadata in env.py: no models to match (as check's models_match)")


def _words(exc: BaseException) -> str:
    """``exc``'s message and those of the exceptions it was raised from."""
    seen: list[str] = []
    while exc is not None and len(seen) < 10:
        seen.append(str(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return " ".join(seen)


#: pytest-alembic's built-in tests replaced by ours, by name.
REPLACED: dict[str, Any] = {
    SINGLE_HEAD: single_head_revision,
    "test_model_definitions_match_ddl": model_definitions_match_ddl,
}


class AlembicFixtures:
    """pytest-alembic's ``alembic_config`` and ``alembic_engine``, on our databases."""

    @pytest.fixture
    def alembic_engine(
        self, request: pytest.FixtureRequest, reynard_db_name: str
    ) -> Iterator[Engine]:
        """An engine on an empty database of this test's own (pytest-alembic migrates it)."""
        from .stash import catch_harness_errors, provisioner_of

        name = item_database(request, reynard_db_name)
        provisioner = provisioner_of(request)
        with catch_harness_errors(request):
            database = provisioner.empty(name, purpose="alembic")
        # pytest-alembic's tests are migration runs: an env.py reaching for its own
        # production URL is sent to this database, as during the harness's own migrations
        # (computed before ``guarded`` exports the URL variables at it).
        watched = provisioner.resolve(name).manager(database.url).watched()
        with watched, provisioner.guarded(name, database.url):
            yield database.engine
        provisioner.drop(database)

    @pytest.fixture
    def alembic_config(
        self, request: pytest.FixtureRequest, reynard_db_name: str, alembic_engine: Engine
    ) -> Any:
        """The Alembic config of the selected database's tree, aimed at ``alembic_engine``."""
        from ..migration.env_run import silenced
        from .stash import provisioner_of

        tree = provisioner_of(request).tree(item_database(request, reynard_db_name))
        return silenced(tree.alembic_config(url=alembic_engine.url), tree.ini)


# -- pytest-alembic's collector ----------------------------------------------------------

PLUGIN_NAME = "pytest-alembic"
#: The node id of the built-in tests in a project without pytest-alembic's anchor file.
ANCHORLESS_ID = "pytest-alembic"
DEFAULT_ANCHOR = "tests/conftest.py"


def needs_fix() -> bool:
    return pytest.version_tuple >= (9,)


def install(config: pytest.Config, databases: Sequence[str] = ()) -> None:
    """Replace pytest-alembic's registered collection plugin with the fixed one;
    ``databases``: the run's, each built-in test made once per database."""
    if not needs_fix() and not databases:
        return
    try:
        from pytest_alembic.plugin.plugin import PytestAlembicPlugin, TestCollector
    except ImportError:
        return
    registered = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if not isinstance(registered, PytestAlembicPlugin) or isinstance(registered, _FixedPlugin):
        return
    config.pluginmanager.unregister(registered, PLUGIN_NAME)
    config.pluginmanager.register(
        _fixed_plugin(PytestAlembicPlugin, TestCollector, tuple(databases))(config), PLUGIN_NAME
    )


class _FixedPlugin:
    """Marker base so that the swap happens once."""

    registered: bool
    #: Makes the built-in tests' collector where the project has no anchor file.
    anchorless_collector: Any


def anchorless(session: pytest.Session) -> pytest.Collector | None:
    """The built-in tests' collector, when ``--test-alembic`` is given and the project has
    no anchor file (so pytest-alembic bound them nowhere); None otherwise, and when the
    anchor exists but this run did not collect it (pytest-alembic's own choice then)."""
    config = session.config
    plugin = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if not isinstance(plugin, _FixedPlugin) or plugin.registered:
        return None
    if not getattr(config.option, "pytest_alembic_registration_enabled", False):
        return None
    anchor = (
        config.option.pytest_alembic_tests_path
        or config.getini("pytest_alembic_tests_path")
        or DEFAULT_ANCHOR
    )
    if (config.rootpath / anchor).exists():
        return None
    collector: pytest.Collector = plugin.anchorless_collector.from_parent(
        session, path=config.rootpath, name=ANCHORLESS_ID
    )
    return collector


def _fixed_plugin(plugin_cls: Any, collector_cls: Any, databases: tuple[str, ...]) -> Any:
    class FixedCollector(collector_cls):  # type: ignore[misc]
        def collect(self) -> list[pytest.Item]:
            items = super().collect()
            return per_database(self, items, databases) if databases else items

    if needs_fix():
        from _pytest.nodeid import NodeId

        def get_nodeid(self: Any) -> str:
            return str(self.nodeid)

        def set_nodeid(self: Any, value: str) -> None:
            self._id = NodeId.parse(value)

        FixedCollector._nodeid = property(get_nodeid, set_nodeid)

    class AnchorlessCollector(FixedCollector):
        """At the session's root, with no file of its own behind it: ``pytest-alembic::``."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._nodeid = ANCHORLESS_ID  # not "<root>::pytest-alembic"

        def _getobj(self) -> Any:
            import pytest_alembic.tests  # a module for hooks that ask (no file to import)

            return pytest_alembic.tests

    class FixedPlugin(plugin_cls, _FixedPlugin):  # type: ignore[misc]
        anchorless_collector = AnchorlessCollector

        def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> Any:
            if self.should_register(file_path):
                return FixedCollector.from_parent(parent, path=file_path)
            return None

    return FixedPlugin
