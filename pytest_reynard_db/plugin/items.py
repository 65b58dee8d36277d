"""The items this plugin adds to a run: pytest-alembic's tests on our databases, and the
migration checks as items (``--reynard-db-checks``).

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

The check items, ``reynard-db::<db>::<check>``, run the same functions as
``reynard-migrate check`` (``checks.run_check``), each in a clean interpreter
(``checks.isolated``: nothing the test modules imported can change a result), on the
run's server (the opt-in ``lint`` and ``locks`` only when ``[tool.reynard-db.lint]
enabled`` lists them), one interpreter per database for all its items; a failure shows
the same message, without a traceback. This process only names the checks
(``checks``' names), never imports them.

Imported at every pytest start (``hooks``, ``options``): what it needs of the checks,
SQLAlchemy or the servers is imported where it is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..foundation.errors import ReynardDBError
from .stash import SPARES

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ..checks import CheckResult
    from ..foundation.registry import Database
    from ..postgres import Server
    from .runstate import RunState

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


# -- the check items ----------------------------------------------------------------------

PREFIX = "reynard-db"


class CheckFailure(Exception):
    """A check's failed result; rendered as its message alone."""


class ReynardChecks(pytest.Collector):
    """The collector of every check item: ``reynard-db`` in node ids."""

    def __init__(self, *, state: RunState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state
        #: Each database's entry, once looked up, and its server once started.
        self._targets: dict[str, tuple[Database, Server | None]] = {}
        #: Results run ahead, in the batch of an earlier item: (database, check) -> results.
        self._ahead: dict[tuple[str, str], list[CheckResult]] = {}

    def collect(self) -> Iterator[pytest.Item]:
        # The names of the checks only: the checks themselves run in the child
        # interpreter, and this process never imports them (``checks.suite``).
        from ..checks import SPECS, enabled_checks, select_checks

        registry = self.state.registry
        # every database, a broken one too: its items fail with its one-line error
        names = self.state.settings.databases or (*registry.databases, *registry.broken)
        # lint and locks are opt-in: collected only when [tool.reynard-db.lint] enables them
        checks = select_checks(None, enabled_checks(registry))
        for name in names:
            db = registry.databases.get(name)
            for check in checks:
                if not SPECS[check].applies_to(db):
                    continue  # no item, as no JSON entry
                yield CheckItem.from_parent(
                    self, name=f"{name}::{check}", database=name, check=check
                )

    def target(self, name: str, *, needs_server: bool) -> tuple[Database, Server | None]:
        """The database and the server its checks run on: started only for a check that
        migrates, so file checks pass or fail on their own."""
        if name not in self._targets:
            self._targets[name] = (self.state.registry.get(name), None)
        db, server = self._targets[name]
        if needs_server and server is None:
            server = self.state.server
            self._targets[name] = (db, server)
        return db, server

    def results(self, item: CheckItem) -> list[CheckResult]:
        """``item``'s results, from a clean interpreter (``checks.isolated``): what the
        test modules or another database's ``env.py`` imported cannot change them
        (``checks.isolated_by_default``: beside tests, always).

        One interpreter per database runs every selected item of it, as ``reynard-migrate
        check`` does, when the first of them runs (so that item's duration includes the
        others'); under xdist, where another worker may run the others, one per item.
        A server that cannot start fails the checks that migrate; the file checks of the
        batch still run, in an interpreter of their own.
        """
        from ..checks import CHECK_ORDER, OFFLINE_CHECKS
        from ..checks.isolated import IsolatedChild

        key = (item.database, item.check)
        if key in self._ahead:
            return self._ahead.pop(key)
        batch = [item.check]
        if not self.state.is_worker:
            batch += [
                other.check
                for other in self.session.items
                if isinstance(other, CheckItem)
                and other.database == item.database
                and other.check != item.check
                and (other.database, other.check) not in self._ahead
            ]
        migrating = [c for c in batch if c not in OFFLINE_CHECKS]
        db, server = self.target(item.database, needs_server=False)
        # Started first: it imports the package while the server starts.
        spares = self.config.stash.get(SPARES, None)
        child = IsolatedChild(
            self.state.registry,
            db,
            allow=self.state.settings.allow,
            note_prefix="reynard-db: ",
            spare=spares.take() if spares is not None else None,
            run_id=self.state.run_id,  # its throw-away databases are the run's
        )
        try:
            if migrating:
                db, server = self.target(item.database, needs_server=True)
        except ReynardDBError:
            if item.check not in OFFLINE_CHECKS:
                child.close()
                raise
            batch = [c for c in batch if c in OFFLINE_CHECKS]  # the others fail on their own
        results = child.run(server, [c for c in CHECK_ORDER if c in batch])
        for check in batch:
            self._ahead[(item.database, check)] = [r for r in results if r.check == check]
        return self._ahead.pop(key)


class CheckItem(pytest.Item):
    """One database and one check."""

    def __init__(self, *, database: str, check: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.database = database
        self.check = check

    def runtest(self) -> None:
        assert isinstance(self.parent, ReynardChecks)
        try:
            results = self.parent.results(self)
        except ReynardDBError as exc:  # the server did not start: one line, not a traceback
            raise CheckFailure(f"reynard-db: {exc}") from None
        failed = [r for r in results if r.status == "failed"]
        if failed:
            raise CheckFailure("\n".join(r.message for r in failed))
        # skipped (does not apply) and not_run ("not run: upgrade failed at R"): a skip
        if results and all(r.status in ("skipped", "not_run") for r in results):
            # located at the item (reynard-db::db::check), not at this line of the plugin
            raise pytest.skip.Exception(
                "; ".join(r.message for r in results), _use_item_location=True
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[str, int, str]:
        # a line for pytest's item-located skips ("reynard-db::main::models_match:1")
        return f"{PREFIX}::{self.database}::{self.check}", 0, self.nodeid


def check_collector(session: pytest.Session, state: RunState) -> ReynardChecks:
    """The collector of the check items, made after collection (``hooks``)."""
    return ReynardChecks.from_parent(session, name=PREFIX, nodeid=PREFIX, state=state)
