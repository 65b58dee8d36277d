"""The run's handlers of SIGTERM and SIGHUP, stacked as the run goes on: until
pytest_configure a signal stops what the run began and ends the process by it
(``die_by_signals``); from then on it is raised as Ctrl-C (``handle_signals``); once the
tests are over it waits for the clean-up list (``hold_signals_at_the_end``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager

import pytest

from ..foundation.errors import die_after, held_until_over, terminate_as_interrupt
from .stash import DYING, HANDLERS, HELD_AT_THE_END, SIGNALS


def die_by_signals(config: pytest.Config) -> ExitStack:
    """What the run begins from its first hook on (the stack returned, which that hook
    fills: the guard, the check items' children, the server's start), stopped at the end
    of the run; or, until pytest_configure (``handle_signals``), by a terminating signal,
    which then ends the process, as it ends pytest alone (exit 128 + signal, no traceback):
    pytest makes no clean exit of a Ctrl-C before pytest_configure (``Terminated`` raised
    there was a traceback and exit 1)."""
    if DYING not in config.stash:
        dying = config.stash[DYING] = ExitStack()
        signal_handlers(config).enter_context(die_after(dying.close))
        config.add_cleanup(dying.close)  # before the handlers are put back
    return config.stash[DYING]


def handle_signals(config: pytest.Config) -> None:
    """SIGTERM and SIGHUP raised as ``signals.Terminated`` (Ctrl-C) until the run ends,
    from pytest_configure on (pytest ends the session as interrupted); once per run."""
    if SIGNALS not in config.stash:
        config.stash[SIGNALS] = signal_handlers(config).enter_context(terminate_as_interrupt())


@contextmanager
def ended_by_a_signal_while(
    config: pytest.Config, doing: str, finish: Callable[[], object]
) -> Iterator[None]:
    """A wait inside pytest_configure (xdist's controller, for the run's server): pytest's
    reporter is not registered yet, and ``Terminated`` raised there ended the run with
    exit 2 and not a word (hostile17, F3); nor does pytest say a Ctrl-C there. In the
    block, SIGTERM and SIGHUP stop what the run began (``die_by_signals``' list, then
    ``finish``) and end the run by the signal, as before pytest_configure; Ctrl-C is said
    in one line, then ends the run as pytest ends it (exit 2)."""
    dying = config.stash.get(DYING, None)

    def stop() -> None:
        try:
            if dying is not None:
                dying.close()
        finally:
            finish()

    try:
        with die_after(stop):
            yield
    except KeyboardInterrupt:
        sys.stderr.write(f"reynard-db: interrupted while {doing}\n")
        raise


def signal_handlers(config: pytest.Config) -> ExitStack:
    """The run's handlers of SIGTERM and SIGHUP (each over the one before it), put back
    last: a signal while the run's end stops its server and children is still handled."""
    if HANDLERS not in config.stash:
        handlers = config.stash[HANDLERS] = ExitStack()
        config.add_cleanup(handlers.close)  # also when a conftest fails to import
    return config.stash[HANDLERS]


def hold_signals_at_the_end(config: pytest.Config) -> None:
    """A first SIGTERM/SIGHUP from the run's end on waits for the clean-up list (the
    agent's stop), then ends the run by it: raised as ``Terminated`` out of that list, it
    was pytest's traceback and exit 1. A run a signal has ended keeps its exit (a second
    is ignored)."""
    if HELD_AT_THE_END in config.stash:  # once: from pytest_sessionfinish, or unconfigure
        return
    if HANDLERS in config.stash and not config.stash.get(SIGNALS, None):
        config.stash[HELD_AT_THE_END] = True
        config.stash[HANDLERS].enter_context(held_until_over())


class HeldOnceTheTestsAreOver:
    """A plugin an active run registers: once its tests are over (its pytest_runtestloop
    returned; the first pytest_sessionfinish hook if none ran), SIGTERM and SIGHUP are
    held until the run's end (``hold_signals_at_the_end``). Raised as ``Terminated`` in
    pytest_sessionfinish (xdist's controller waits there for its workers to end), one was
    pytest's traceback and exit 1, which pytest does not handle there, and the run's server
    was stopped while the workers still dropped their databases. Until the loop returns,
    it is raised, and pytest ends the session as interrupted."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self) -> Generator[None, object, object]:
        try:
            return (yield)
        finally:
            hold_signals_at_the_end(self.config)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        hold_signals_at_the_end(self.config)
