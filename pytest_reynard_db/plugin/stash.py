"""What the plugin keeps in a run's ``config.stash``, and the helpers that read it.

Per config, never module globals: a pytest run nested in another (``pytester``) keeps
its own. Shared by the hooks, the fixtures and pytest-alembic's fixtures on our
databases; imports nothing heavy.

And how the plugin reports a harness failure: one line, not a traceback.
A ``HarnessErrors`` object lives in its run's ``config.stash`` (never in module
globals, so a pytest run nested in another, as with ``pytester``, keeps its own
"already reported" set). Fixtures wrap their harness work in ``errors.catch()``:
a ``ReynardDBError`` becomes one ``pytest.fail`` line naming database, file and
error, its line kept on the exception (``LINE_KEY``).

Reported in full once, and as "failed as reported above" in one line in every later
test that needs it. That is decided on the reports, not when raising: a session
fixture that failed is not set up again, pytest raises its first error again in every
later test. Each report of such a failure carries its line (``LINE_KEY`` again, which
xdist sends along with the report), and the process that shows the reports (the only
one, or xdist's controller) shortens every report after the first of a line: once per
run, workers or not.

A ``ReynardDBError`` raised while a test body runs is left alone, as in plain
pytest (``pytest.raises``, ``xfail(raises=...)`` and ``except`` see it); only its
*rendering* is shortened to one line when it came out of this package
(``reynard_db_server.create_database`` on a server that went away), not when
the test raised it itself. With ``-v`` or ``--tb=long`` the full chain is shown.
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import pytest

from ..foundation.errors import ReynardDBError, ServerError

if TYPE_CHECKING:
    from ..checks.spares import Spares
    from ..foundation.registry import Registry
    from ..postgres.agent import Agent
    from ..postgres.initdb_cache import Prepared
    from ..provisioning.provision import Provisioner
    from .runstate import RunState

STATE = pytest.StashKey["RunState"]()
EARLY_GUARD = pytest.StashKey[ExitStack]()
#: The registry read to arm the guard early, so that the run does not read it again.
EARLY_REGISTRY: pytest.StashKey[Registry] = pytest.StashKey()
#: The ephemeral server's binaries and initdb cache, found and built in a thread from
#: the start of the run (``initdb_cache.begin_preparing``).
EARLY_START: pytest.StashKey[Prepared] = pytest.StashKey()
#: A warm run's agent, forked as the plugin registered (``postgres.agent``).
AGENT: pytest.StashKey[Agent] = pytest.StashKey()


def new_run_id() -> str:
    """A run's id, in its databases' names and its records: made once, by its agent (forked
    before the run's state) or its ``RunState``; an xdist worker takes its controller's."""
    return uuid.uuid4().hex[:8]


#: The check items' children forked before any conftest was imported (``--reynard-db-checks``).
SPARES: pytest.StashKey[Spares] = pytest.StashKey()
#: The run's SIGTERM/SIGHUP handlers, put back last (``signals.signal_handlers``).
HANDLERS = pytest.StashKey[ExitStack]()
#: What the run began from its first hook on: stopped at its end, or by a terminating
#: signal before pytest_configure, which then ends the process (``signals.die_by_signals``).
DYING = pytest.StashKey[ExitStack]()
#: The terminating signals received from pytest_configure on, raised as Ctrl-C then.
SIGNALS = pytest.StashKey[list[int]]()
#: Set once the run's end holds SIGTERM/SIGHUP (``signals.hold_signals_at_the_end``).
HELD_AT_THE_END = pytest.StashKey[bool]()
#: Before the first hook, while the initdb begun at the plugin's registration runs: a
#: terminating signal waits for it, then ends the process (``errors.die_after``).
EARLY_SIGNALS = pytest.StashKey[ExitStack]()
#: The run's harness failures already reported (``HarnessErrors`` below): per config, so
#: that a pytest run nested in another (pytester) keeps its own.
ERRORS = pytest.StashKey["HarnessErrors"]()


def run_state(request: pytest.FixtureRequest) -> RunState:
    """The run's state; a test that needs a database in a run without one fails, saying so."""
    state = request.config.stash.get(STATE, None)
    if state is None:
        pytest.fail(
            "no database selected: run pytest with --reynard-db=NAME "
            "(or set reynard_db in [tool.pytest.ini_options])",
            pytrace=False,
        )
    return state


def errors_of(config: pytest.Config) -> HarnessErrors:
    if ERRORS not in config.stash:  # a fixture used in a run this plugin did not configure
        config.stash[ERRORS] = HarnessErrors.for_config(config)
    return config.stash[ERRORS]


def catch_harness_errors(
    where: pytest.Config | pytest.FixtureRequest, *, usage: bool = False
) -> AbstractContextManager[None]:
    """A harness failure is one line naming database, file and error, not a traceback;
    reported in full once, and by a one-line pointer in every later test that needs it."""
    config = where if isinstance(where, pytest.Config) else where.config
    return errors_of(config).catch(usage=usage)


def provisioner_of(request: pytest.FixtureRequest) -> Provisioner:
    with catch_harness_errors(request):
        return run_state(request).provisioner


# -- harness_errors ----------------------------------------------------------------------

PREFIX = "reynard-db: "
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the whole package, not only plugin/
#: The attribute holding a harness failure's one-line message, the same however many
#: times it is raised (``-v``'s chain aside): on the exception, then on its report (plain
#: data: xdist sends it). A plain ``pytest.fail`` exception, so that pytest's short
#: summary still says "Failed: reynard-db: ...".
LINE_KEY = "reynard_db_failure"
POINTER = f"{PREFIX}failed as reported above: "


class HarnessErrors:
    """The run's harness failures: the ones already reported, and how to show them."""

    def __init__(self, *, show_chain: bool = False) -> None:
        #: Whether failures show their traceback chain (``-v`` or ``--tb=long``).
        self.show_chain = show_chain
        #: Lines already reported in full in this run.
        self.reported: set[str] = set()
        #: The run was interrupted (Ctrl-C, or SIGTERM/SIGHUP raised as it): pytest then
        #: tears down what is set up, and a connection lost with the interrupt (a signal to
        #: the process group reaches the server's backends too) is not a harness failure.
        self.interrupted = False

    def interrupt_seen(self) -> object:
        """A plugin that sets ``interrupted`` when pytest says the run was interrupted
        (before it tears down what is set up), in every process of the run."""
        errors = self

        class InterruptSeen:
            def pytest_keyboard_interrupt(self, excinfo: object) -> None:
                errors.interrupted = True

        return InterruptSeen()

    @classmethod
    def for_config(cls, config: pytest.Config) -> HarnessErrors:
        # Both are the terminal plugin's options: gone with ``-p no:terminal``
        long = config.getoption("tbstyle", "auto") == "long"
        return cls(show_chain=long or (config.getoption("verbose", 0) or 0) > 0)

    @staticmethod
    def line(exc: ReynardDBError) -> str:
        from ..foundation.urls import redact

        return f"{PREFIX}{redact(exc)}"

    def message(self, exc: ReynardDBError) -> str:
        """Its line, and with ``-v`` its chain."""
        from ..foundation.urls import redact

        if self.show_chain:
            return self.line(exc) + "\n" + redact("".join(traceback.format_exception(exc)))
        return self.line(exc)

    @contextmanager
    def catch(self, *, usage: bool = False) -> Iterator[None]:
        """A ``ReynardDBError`` inside becomes a one-line failure (``usage``: a usage error,
        which ends the run before any test)."""
        try:
            yield
        except ReynardDBError as exc:
            if self.interrupted and isinstance(exc, ServerError):
                return  # the run ends as interrupted; the lost session ended its transaction
            message, line = self.message(exc), self.line(exc)
        else:
            return
        # from None: the cause is in the message; no "during handling of the above" chain
        if usage:
            raise pytest.UsageError(message) from None
        failure = pytest.fail.Exception(message, pytrace=False)
        setattr(failure, LINE_KEY, line)
        raise failure from None

    @staticmethod
    def label(report: pytest.TestReport, call: pytest.CallInfo[None]) -> None:
        """Where the test ran: a report of a harness failure carries its line."""
        line = getattr(call.excinfo.value, LINE_KEY, None) if call.excinfo else None
        if isinstance(line, str):
            setattr(report, LINE_KEY, line)

    @pytest.hookimpl(tryfirst=True)  # before the terminal and junitxml keep the report
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Where reports are shown: a harness failure in full once, then a pointer."""
        line = getattr(report, LINE_KEY, None)
        if not report.failed or not isinstance(line, str):
            return
        if line in self.reported:
            excerpt = line.removeprefix(PREFIX)
            report.longrepr = POINTER + (excerpt if len(excerpt) <= 80 else excerpt[:80] + "...")
        else:
            self.reported.add(line)

    def shorten(self, report: pytest.TestReport, call: pytest.CallInfo[None]) -> None:
        """A test body's failure by a harness error raised in this package: one line."""
        if not report.failed or call.excinfo is None or self.show_chain:
            return
        exc = call.excinfo.value
        if isinstance(exc, ReynardDBError) and raised_here(exc.__traceback__):
            report.longrepr = self.message(exc)


def raised_here(tb: TracebackType | None) -> bool:
    """Whether the innermost frame of ``tb`` (where the error was raised) is this
    package's: a test that raises a ``ReynardDBError`` itself is shown as plain pytest
    shows it."""
    last: Path | None = None
    while tb is not None:
        last = Path(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return last is not None and last.resolve().is_relative_to(PACKAGE_DIR)
