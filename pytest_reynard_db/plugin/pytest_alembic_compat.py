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

pytest-alembic binds its built-in tests to one file, ``tests/conftest.py`` (or
``pytest_alembic_tests_path``): in a project without it, ``--test-alembic`` collects
nothing and says nothing. With this plugin active, they are then collected under
``pytest-alembic::`` at the session's root (``anchorless``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

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
