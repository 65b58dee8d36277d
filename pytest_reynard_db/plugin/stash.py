"""What the plugin keeps in a run's ``config.stash``, and the helpers that read it.

Per config, never module globals: a pytest run nested in another (``pytester``) keeps
its own. Shared by the hooks, the fixtures and pytest-alembic's fixtures on our
databases; imports nothing heavy.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from typing import TYPE_CHECKING

import pytest

from .harness_errors import HarnessErrors

if TYPE_CHECKING:
    from ..checks.isolated import Spares
    from ..foundation.registry import Registry
    from ..postgres.initdb_cache import Prepared
    from ..provisioning.provision import Provisioner
    from .runstate import RunState

STATE = pytest.StashKey["RunState"]()
EARLY_GUARD = pytest.StashKey[ExitStack]()
#: The registry read to arm the guard early, so that the run does not read it again.
EARLY_REGISTRY: pytest.StashKey[Registry] = pytest.StashKey()
#: The ephemeral server's binaries and initdb cache, found and built in a thread from
#: the start of the run (``initdb_cache.prepared``).
EARLY_START: pytest.StashKey[Prepared] = pytest.StashKey()
#: The check items' children forked before any conftest was imported (``--reynard-db-checks``).
SPARES: pytest.StashKey[Spares] = pytest.StashKey()
#: SIGTERM/SIGHUP handled as Ctrl-C while the run has a server: the handlers' undo,
#: and the signals received.
SIGNALS = pytest.StashKey[tuple[ExitStack, list[int]]]()
#: The run's harness failures already reported (see ``harness_errors``): per config, so
#: that a pytest run nested in another (pytester) keeps its own.
ERRORS = pytest.StashKey[HarnessErrors]()


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
