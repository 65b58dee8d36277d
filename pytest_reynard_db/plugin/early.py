"""What a run begins as the plugin registers, before its first hook (``begin_early``):
its agent forked, or its initdb thread begun (``preparing``, also from the first hook)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING

import pytest

from ..foundation.errors import die_after
from . import options as selection
from .signals import die_by_signals
from .stash import AGENT, EARLY_SIGNALS, EARLY_START, new_run_id

if TYPE_CHECKING:
    from ..postgres.initdb_cache import Prepared


def begin_early(pluginmanager: pytest.PytestPluginManager) -> None:
    """A run that surely starts a server of its own (``selection.surely_starts_a_server``)
    begins here, as the plugin registers, beside the imports of the plugins registered
    after it (pytest-alembic's, with SQLAlchemy and Alembic: ~250 ms), not from the first
    hook: a run of tests from this process forks its agent (``postgres.agent``), which
    starts its server or attaches to the kept one; another (xdist's controller, or where
    no fork is made) begins its initdb cache, and whether its server starts ahead is
    decided at the first hook, where the options are known."""
    config = pluginmanager.get_plugin("pytestconfig")
    if not isinstance(config, pytest.Config) or EARLY_START in config.stash:
        return
    if not selection.surely_starts_a_server(config):
        return
    if selection.surely_runs_tests_here(config) and fork_run_agent(config):
        return  # the agent starts the server (or attaches to the kept one): no initdb here
    # A run ended before its first hook waits for this initdb (no half-made cache), then
    # ends by its signal (pytest cannot yet turn one into a clean exit). Put back last
    # (registered first): the run's end waits for the initdb under these handlers.
    dying = config.stash[EARLY_SIGNALS] = ExitStack()
    config.add_cleanup(dying.close)
    early = preparing(config)
    dying.enter_context(die_after(early.stop_untaken))


def fork_run_agent(config: pytest.Config) -> bool:
    """Fork the run's agent (``postgres.agent``), if this process may fork; whether it did."""
    from ..postgres.agent import fork_agent

    agent = fork_agent(new_run_id(), reuse=selection.surely_reuses(config))
    if agent is None:
        return False
    config.stash[AGENT] = agent
    # Waited for at the run's end, and if a signal ends it before pytest_configure (the
    # run's server is the agent's to stop, and the run says "nothing left" only after it)
    die_by_signals(config).callback(agent.end)
    return True


def preparing(config: pytest.Config) -> Prepared:
    """The run's initdb thread (``initdb_cache.begin_preparing``): begun as the plugin
    registered, or now; waited for (and its server stopped, if untaken) at the end."""
    early = config.stash.get(EARLY_START, None)
    if early is None:
        from ..postgres.initdb_cache import begin_preparing

        early = config.stash[EARLY_START] = begin_preparing()
        config.add_cleanup(early.stop_untaken)
    return early
