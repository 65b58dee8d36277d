"""The pytest plugin (entry point ``pytest11: reynard_db``): pytest registers the hooks
and fixtures this module holds, gathered from ``hooks`` and ``fixtures``.

The package is pytest's side only; nothing outside it imports pytest:

- ``hooks``: options, activating a run, collection, reporting, the run's end
- ``fixtures``: ``reynard_db*``, thin fronts over ``Provisioner``
- ``async_fixtures``: ``reynard_db_async_*``, and how pytest-asyncio or anyio runs them
- ``stash``: what hooks and fixtures keep in a run's ``config.stash``
- ``options``: the plugin's options and ini keys, resolved once into ``Settings``; which
  database each test runs against (option, marker, pytest-alembic)
- ``runstate``: the run's server, registry and provisioner, one per pytest process
- ``items``: the items a run gets besides its own tests: pytest-alembic's tests on our
  databases (and its collector on pytest 9), the migration checks (``--reynard-db-checks``)
- ``outer_transaction``: the transaction ``reynard_db_connection`` (and each of
  ``reynard_db_connections``) rolls back

In ``hooks``, ``options`` is named ``selection``, ``fixtures`` ``seeding`` (the
``pytest_reynard_db_seed`` hook) and ``items`` ``pytest_alembic_compat`` where they
serve those ends; ``stash`` also turns a harness failure into one line.

An inactive plugin (no database selected) imports only ``hooks``, ``fixtures``,
``async_fixtures``, ``stash``, ``options`` and ``items``: SQLAlchemy, psycopg, the
checks and the servers load when a run selects a database.
"""

from .async_fixtures import (
    pytest_fixture_setup,
    reynard_db_async_connection,
    reynard_db_async_connections,
    reynard_db_async_engine,
    reynard_db_async_session,
)
from .fixtures import (
    reynard_db,
    reynard_db_connection,
    reynard_db_connections,
    reynard_db_factory,
    reynard_db_fresh,
    reynard_db_name,
    reynard_db_names,
    reynard_db_server,
    reynard_db_session,
    reynard_dbs,
)
from .hooks import (
    pytest_addhooks,
    pytest_addoption,
    pytest_collection_finish,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_configure_node,
    pytest_generate_tests,
    pytest_load_initial_conftests,
    pytest_report_collectionfinish,
    pytest_report_header,
    pytest_runtest_makereport,
    pytest_runtest_protocol,
    pytest_runtest_setup,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_terminal_summary,
    pytest_testnodedown,
    pytest_unconfigure,
)

__all__ = [
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_collection_finish",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_configure_node",
    "pytest_fixture_setup",
    "pytest_generate_tests",
    "pytest_load_initial_conftests",
    "pytest_report_collectionfinish",
    "pytest_report_header",
    "pytest_runtest_makereport",
    "pytest_runtest_protocol",
    "pytest_runtest_setup",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "pytest_terminal_summary",
    "pytest_testnodedown",
    "pytest_unconfigure",
    "reynard_db",
    "reynard_db_async_connection",
    "reynard_db_async_connections",
    "reynard_db_async_engine",
    "reynard_db_async_session",
    "reynard_db_connection",
    "reynard_db_connections",
    "reynard_db_factory",
    "reynard_db_fresh",
    "reynard_db_name",
    "reynard_db_names",
    "reynard_db_server",
    "reynard_db_session",
    "reynard_dbs",
]
