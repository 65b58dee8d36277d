"""Make pytest-alembic's collector work on pytest 9.

pytest-alembic 0.13.1 binds its built-in tests to ``tests/conftest.py`` with a
collector whose ``__init__`` does ``self._nodeid += "::pytest-alembic"``; pytest 9
replaced ``Node._nodeid`` with a structured ``Node._id``, so every session that
has a ``tests/conftest.py`` fails at collection (``AttributeError: 'TestCollector'
object has no attribute '_nodeid'``), with or without ``--test-alembic``.

We do not patch the installed package: after pytest-alembic registers its
collection plugin (``pytest_sessionstart``), we swap it for a subclass whose
collector gives ``_nodeid`` a property backed by pytest 9's node id.

The same subclass makes the built-in tests once per selected database when this
plugin is active (``alembic_items.per_database``), on every pytest version; on
pytest < 9 with this plugin inactive nothing is changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

PLUGIN_NAME = "pytest-alembic"


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


def _fixed_plugin(plugin_cls: Any, collector_cls: Any, databases: tuple[str, ...]) -> Any:
    from .alembic_items import per_database

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

    class FixedPlugin(plugin_cls, _FixedPlugin):  # type: ignore[misc]
        def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> Any:
            if self.should_register(file_path):
                return FixedCollector.from_parent(parent, path=file_path)
            return None

    return FixedPlugin
