"""Make pytest-alembic's collector work on pytest 9.

pytest-alembic 0.13.1 binds its built-in tests to ``tests/conftest.py`` with a
collector whose ``__init__`` does ``self._nodeid += "::pytest-alembic"``; pytest 9
replaced ``Node._nodeid`` with a structured ``Node._id``, so every session that
has a ``tests/conftest.py`` fails at collection (``AttributeError: 'TestCollector'
object has no attribute '_nodeid'``), with or without ``--test-alembic``.

We do not patch the installed package: after pytest-alembic registers its
collection plugin (``pytest_sessionstart``), we swap it for a subclass whose
collector gives ``_nodeid`` a property backed by pytest 9's node id. On pytest
< 9 nothing is changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

PLUGIN_NAME = "pytest-alembic"


def needs_fix() -> bool:
    return pytest.version_tuple >= (9,)


def install(config: pytest.Config) -> None:
    """Replace pytest-alembic's registered collection plugin with the fixed one."""
    if not needs_fix():
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
        _fixed_plugin(PytestAlembicPlugin, TestCollector)(config), PLUGIN_NAME
    )


class _FixedPlugin:
    """Marker base so that the swap happens once."""


def _fixed_plugin(plugin_cls: Any, collector_cls: Any) -> Any:
    from _pytest.nodeid import NodeId

    class FixedCollector(collector_cls):  # type: ignore[misc]
        @property
        def _nodeid(self) -> str:
            return str(self.nodeid)

        @_nodeid.setter
        def _nodeid(self, value: str) -> None:
            self._id = NodeId.parse(value)

    class FixedPlugin(plugin_cls, _FixedPlugin):  # type: ignore[misc]
        def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> Any:
            if self.should_register(file_path):
                return FixedCollector.from_parent(parent, path=file_path)
            return None

    return FixedPlugin
