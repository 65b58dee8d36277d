"""The plugin's hooks: options, the run's activation and end, collection, reporting.

One server per run: the xdist controller (or the only process) owns it; workers
get its URL through ``workerinput``. The fixtures are in ``fixtures``; what both
keep in ``config.stash`` is in ``stash``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Generator
from contextlib import ExitStack, suppress
from typing import Any

import pytest

from ..foundation.errors import ReynardDBError
from ..foundation.long_lived import freeze_what_lives_on
from . import items as pytest_alembic_compat
from . import options as selection
from .check_items import check_collector
from .early import begin_early, preparing
from .items import AlembicFixtures
from .options import Settings, add_options, get_settings
from .signals import (
    HeldOnceTheTestsAreOver,
    die_by_signals,
    ended_by_a_signal_while,
    handle_signals,
    hold_signals_at_the_end,
)
from .stash import (
    AGENT,
    EARLY_GUARD,
    EARLY_REGISTRY,
    ERRORS,
    SIGNALS,
    SPARES,
    STATE,
    HarnessErrors,
    catch_harness_errors,
    errors_of,
)

# Only what an inactive plugin needs is imported above: SQLAlchemy, psycopg and
# the servers load when a run selects a database (pytest_configure), not before.

REDIRECTS_KEY = "reynard_db_redirects"
MARKER = selection.MARKER


# -- hooks -----------------------------------------------------------------------------------
def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """``pytest_reynard_db_seed``, for conftests to implement (``seeding``)."""
    from . import fixtures as seeding

    pluginmanager.add_hookspecs(seeding)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    add_options(parser)
    begin_early(pluginmanager)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Arm the guard before any conftest is imported: an application a conftest imports
    may connect at import time, and a pooled connection made then would serve tests.
    Then fork the check items' children, while nothing of the application is imported
    (``checks.spares``), and begin the server's initdb."""
    try:
        settings = get_settings(early_config, early=True)
    except pytest.UsageError:
        return  # pytest_configure says it
    if not settings.active:
        return
    # From now on the run starts things (a server, children): a terminating signal stops
    # them, then ends the run (``die_by_signals``; from pytest_configure, as Ctrl-C does).
    dying = die_by_signals(early_config)
    from ..postgres.runas import pin_runtime_dir
    from .runstate import guard_the_run, project_registry

    pin_runtime_dir()  # before any conftest, which may change directory

    try:
        registry = project_registry(early_config.rootpath)
        early_config.stash[EARLY_REGISTRY] = registry
        stack = guard_the_run(registry, settings)
        early_config.stash[EARLY_GUARD] = stack
        # A conftest that fails to import ends the run before pytest_configure (and so
        # before pytest_unconfigure): the clean-up list still runs. Closing twice is fine.
        dying.callback(stack.close)
        if settings.checks and selection.runs_items_here(early_config):
            # before the initdb thread (begun early only without check items): a process
            # with threads is not forked
            from ..checks.spares import fork_spares

            count = len(settings.databases or registry.databases)
            spares = fork_spares(count, registry.root)
            early_config.stash[SPARES] = spares
            dying.callback(spares.close)
    except ReynardDBError:
        pass  # a bad registry: pytest_configure reports it, once
    if (
        not settings.url
        and not selection.xdist_worker(early_config)
        and AGENT not in early_config.stash
    ):
        # This process will start (or attach to) a server: initdb, if needed, runs now,
        # beside the imports and the collection, not after them.
        # The run's own server is started too, while pytest collects, by a run sure to
        # need it: its check items, or xdist's controller (its workers get its URL); or
        # when initdb had to run (the run waits for it anyway). A run of tests alone with
        # the cache starts it when the first test asks (its tests may take no database:
        # `pytest tests/test_x.py` paid ~150 ms for a server it never used); one kept
        # between runs is attached to when asked (a connection, not a start).
        ours = not settings.reuse and selection.runs_tests(early_config)
        needed = settings.checks or selection.distributed(early_config)
        prepared = preparing(early_config)
        dying.callback(prepared.stop_untaken)  # also on the clean-up list: twice is harmless
        prepared.decide(start=ours and needed, start_if_cold=ours)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(name): run this test against the registered database NAME"
    )
    errors = config.stash[ERRORS] = HarnessErrors.for_config(config)
    config.pluginmanager.register(errors.interrupt_seen(), "reynard-db-interrupt-seen")
    if not hasattr(config, "workerinput"):  # where reports are shown: xdist's controller
        config.pluginmanager.register(errors, "reynard-db-harness-errors")
    settings = get_settings(config)
    if settings.active:
        _activate(config, settings)


def _activate(config: pytest.Config, settings: Settings) -> None:
    """From now on the run has databases: its state, the guard, the server (xdist
    controller), and pytest-alembic's fixtures on our databases."""
    from .runstate import RunState

    handle_signals(config)
    config.pluginmanager.register(HeldOnceTheTestsAreOver(config), "reynard-db-held-at-the-end")
    _say_waits_past_capture(config)
    state = RunState(config, settings, config.stash.get(EARLY_REGISTRY, None))
    # A bad registry or name: one error, not one per test.
    with catch_harness_errors(config, usage=True):
        for name in settings.databases:
            state.registry.get(name)
        state.arm(config.stash.get(EARLY_GUARD, None))
    config.stash[STATE] = state
    if not settings.from_markers:  # at collection's end, too late to take fixtures over
        # Registered now, after every entry-point plugin: these definitions of
        # pytest-alembic's fixtures are the later ones, so they win whatever the load order.
        config.pluginmanager.register(AlembicFixtures(), "reynard-db-alembic-fixtures")
    if state.is_controller and selection.runs_tests(config):  # not for --setup-plan -n 2
        waiting = ended_by_a_signal_while(config, "the run's server started", state.close)
        with catch_harness_errors(config, usage=True), waiting:
            _ = state.server  # one server for all workers, started before they are
    # pytest, its plugins, the conftests and what they import live until the run ends:
    # collections (and the interpreter's exit) no longer walk them (~150 ms a run)
    freeze_what_lives_on()


def _say_waits_past_capture(config: pytest.Config) -> None:
    """A wait for a lock (the reuse server's, another run's template build) happens in a
    fixture's set-up, whose stderr pytest captures: said there, the run stood still in
    silence. Said past the capture: the main thread suspends it, a thread writes past it."""
    from ..foundation.filesystem import say_through

    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:  # -p no:capture: stderr is the terminal already
        return

    def say(message: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            _past_capture_from_a_thread(capture, message)
            return
        with capture.global_and_fixture_disabled():
            print(f"\n{message}", file=sys.stderr, flush=True)

    stack = ExitStack()
    stack.enter_context(say_through(say))
    config.add_cleanup(stack.close)


def _past_capture_from_a_thread(capture: Any, message: str) -> None:
    """A thread (the initdb one, waiting for another run's build) cannot suspend the
    capture: it writes to the stderr pytest saved before capturing (``writeorg``, what
    ``--capture=tee-sys`` writes through). Where that is not there, into the capture."""
    try:
        capture._global_capturing.err.writeorg(f"\n{message}\n")
    except (AttributeError, AssertionError, OSError):
        print(message, file=sys.stderr, flush=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: hand each worker the run's server and run id. Not in a run that runs no
    test (``--setup-plan``): the server would be started for nothing; its workers start
    one, as any process, only if a fixture asks."""
    state = node.config.stash.get(STATE, None)
    if state is not None and selection.runs_tests(node.config):
        url = state.server.url.render_as_string(hide_password=False)
        from .runstate import WORKER_KEY

        node.workerinput[WORKER_KEY] = {
            "url": url,
            "run_id": state.run_id,
            "ephemeral": state.own_server is not None,
        }


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.pluginmanager.get_plugin("session")
    if isinstance(session, pytest.Session):
        # pytest calls no pytest_sessionfinish for a session its start did not finish (a
        # SIGTERM while xdist's controller starts its workers); pytest returns the session's
        # exit status after this hook
        _exit_by_the_signal(session)
    hold_signals_at_the_end(config)
    state = config.stash.get(STATE, None)
    try:
        if state is not None:
            state.close()
        elif EARLY_GUARD in config.stash:  # armed early, then the run never started
            config.stash[EARLY_GUARD].close()
    except ReynardDBError as exc:  # the run is over: say it in one line, no traceback
        from ..foundation.urls import redact

        sys.stderr.write(f"reynard-db: clean-up failed: {redact(exc)}\n")
    # The signal handlers stay until the clean-up list has run (``handle_signals``): the
    # early start's server is stopped there, and a SIGTERM then must not kill us first.


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """A run ended by SIGTERM or SIGHUP (raised as ``signals.Terminated``, which pytest
    handles as Ctrl-C) exits with the shell's code for it, 128 + the signal; the
    server is stopped in ``pytest_unconfigure``, which runs after this. An xdist
    worker hands the guard's redirects to the controller, which reports them."""
    _exit_by_the_signal(session)
    state = session.config.stash.get(STATE, None)
    if state is not None and state.agent is not None:
        # The tests and their fixtures are over: the agent drops the run's databases (or
        # stops its server) while pytest reports, not after.
        state.agent.let_end()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and STATE in session.config.stash:
        from ..guard import GUARD

        workeroutput[REDIRECTS_KEY] = GUARD.redirects


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A marker that cannot pick the test's database fails the test, never the default
    database silently (``options.marker_not_applied``)."""
    state = item.config.stash.get(STATE, None)
    settings = state.settings if state is not None else None
    default = None if settings is None or settings.from_markers else settings.databases
    problem = selection.marker_not_applied(item, default)
    if problem is not None:
        pytest.fail(f"reynard-db: {problem}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """A test that runs Alembic on a config of ours (``reynard_db_fresh.config``) lets
    ``env.py`` call ``fileConfig``: the logging it changed is put back after the test,
    so pytest's capture and the application's loggers serve the next test intact."""
    if STATE not in item.config.stash:
        return (yield)
    from ..migration.env_run import preserved_logging

    with preserved_logging():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A harness error met in a test's own body (``reynard_db_server.create_database`` on
    a server that cannot be reached) is shown in one line; the exception itself is left
    as it was raised, so ``pytest.raises`` and ``xfail(raises=...)`` see it. A harness
    failure is labelled, to be reported in full once (``harness_errors``)."""
    report = yield
    HarnessErrors.label(report, call)
    if call.when == "call" and STATE in item.config.stash:
        errors_of(item.config).shorten(report, call)
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    pytest_alembic_compat.install(session.config, state.settings.databases if state else ())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    state = node.config.stash.get(STATE, None)
    if state is not None:
        state.worker_redirects.extend(getattr(node, "workeroutput", {}).get(REDIRECTS_KEY, ()))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say where the guard sent a connection env.py opened elsewhere (see ``guard``)."""
    state = config.stash.get(STATE, None)
    if state is None:
        return
    from ..guard import GUARD, redirect_note

    for redirect in dict.fromkeys([*GUARD.redirects, *state.worker_redirects]):
        terminalreporter.write_line(f"reynard-db: {redirect_note(redirect)}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(STATE, None)
    if state is None or state.settings.from_markers:
        return []
    return state.header()


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """Markers alone chose the databases: said once they are known. Else the databases
    markers use beyond the selected ones (the header, before collection, named only those)."""
    state = config.stash.get(STATE, None)
    if state is None:
        return []
    if state.settings.from_markers:
        return state.header()
    named: dict[str, None] = {}
    for item in items:
        with suppress(ReynardDBError):  # a malformed marker is its test's error
            named.update(dict.fromkeys(selection.marker_databases(item) or ()))
    more = [name for name in named if name not in state.settings.databases]
    return [f"reynard-db: markers also use {', '.join(more)}"] if more else []


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    """Add the check items first, and pytest-alembic's built-in tests where it bound them
    nowhere, so that ``-k`` and ``-m`` select among them too."""
    config = session.config
    state = config.stash.get(STATE, None)
    if state is not None and state.settings.checks:
        with catch_harness_errors(session.config, usage=True):
            items[:0] = _collected(session, check_collector(session, state))
    if state is not None and state.settings.databases:
        alembic_tests = pytest_alembic_compat.anchorless(session)
        if alembic_tests is not None:
            items.extend(_collected(session, alembic_tests))


def _collected(session: pytest.Session, collector: pytest.Collector) -> list[pytest.Item]:
    """The items of a collector made after collection, reported as collected, so that
    the header's "collected N items", ``--co`` and xdist's counts include them."""
    items = [item for item in collector.collect() if isinstance(item, pytest.Item)]
    session.ihook.pytest_collectreport(
        report=pytest.CollectReport(collector.nodeid, "passed", None, [*items])
    )
    return items


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Markers alone select the databases when no option does: those of the selected
    tests (after ``-k`` and ``-m``)."""
    config = session.config
    if STATE not in config.stash:
        with catch_harness_errors(config, usage=True):
            settings = selection.from_markers(get_settings(config), session.items)
        if settings is not None:
            _activate(config, settings)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.reynard_db("ecs")``: this test's databases are ``ecs``'s; with
    ``--reynard-db=a,b``, a pytest-alembic test runs once per database (``selection``)."""
    state = metafunc.config.stash.get(STATE, None)
    selection.parametrize(metafunc, state.settings if state is not None else None)


def _exit_by_the_signal(session: pytest.Session) -> None:
    """A run ended by SIGTERM or SIGHUP (``signals.Terminated``, which pytest handles as
    Ctrl-C: exit 2) exits with the shell's code for it, 128 + the signal."""
    received = session.config.stash.get(SIGNALS, None)
    if received:
        session.exitstatus = 128 + received[0]
