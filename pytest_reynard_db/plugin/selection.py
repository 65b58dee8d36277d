"""Which database each test runs against: ``--reynard-db``, the marker, pytest-alembic.

- ``@pytest.mark.reynard_db("x")`` parametrizes the session fixture ``reynard_db_name``
  with ``x``: the test's id gets ``[x]`` and, as for any session-scoped parameter,
  pytest groups the tests of one database together (the order changes).
- ``@pytest.mark.reynard_db("x", "y")`` parametrizes ``reynard_db_names`` (what
  ``reynard_dbs`` maps) with ``("x", "y")`` and ``reynard_db_name`` with the first, under
  one id, ``[x-y]``: the single-database fixtures give ``x``.
- With several ``--reynard-db`` databases, a test that uses pytest-alembic's fixtures
  and no marker runs once per database (``alembic_items``).
- With no ``--reynard-db`` (and no ``--reynard-db-checks``), the databases the markers
  name are the run's: the plugin becomes active at the end of collection
  (``from_markers``); an unmarked test that asks for a database then fails saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from ..errors import ConfigError
from .alembic_items import uses_alembic
from .options import Settings

MARKER = "reynard_db"
NAME_FIXTURE = "reynard_db_name"
NAMES_FIXTURE = "reynard_db_names"


def marker_databases(node: pytest.Item) -> tuple[str, ...] | None:
    """The databases ``@pytest.mark.reynard_db(NAME, ...)`` names for ``node``, if marked
    (a name given twice counts once)."""
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return None
    if not marker.args or marker.kwargs or not all(isinstance(a, str) for a in marker.args):
        raise ConfigError(f"{node.nodeid}: use @pytest.mark.{MARKER}('name'[, 'name'...])")
    return tuple(dict.fromkeys(marker.args))


def parametrize(metafunc: pytest.Metafunc, settings: Settings | None) -> None:
    """The marker's databases, or (pytest-alembic's fixtures, several databases) each."""
    argnames = [a for a in (NAME_FIXTURE, NAMES_FIXTURE) if a in metafunc.fixturenames]
    if not argnames:
        return
    try:
        named = marker_databases(metafunc.definition)
    except ConfigError as exc:  # the module's collection error, in one line
        raise pytest.Collector.CollectError(f"reynard-db: {exc}") from None
    if named is not None:
        values = tuple(named[0] if a == NAME_FIXTURE else named for a in argnames)
        metafunc.parametrize(
            argnames, [values], indirect=True, scope="session", ids=["-".join(named)]
        )
    elif (
        NAME_FIXTURE in argnames
        and settings is not None
        and not settings.from_markers
        and len(settings.databases) > 1
        and uses_alembic(metafunc.fixturenames)
    ):
        names = list(settings.databases)
        metafunc.parametrize(NAME_FIXTURE, names, indirect=True, scope="session", ids=names)


def from_markers(settings: Settings, items: Sequence[pytest.Item]) -> Settings | None:
    """The run's settings when markers alone select its databases (None: no marker)."""
    names = [name for item in items for name in marker_databases(item) or ()]
    if not names:
        return None
    return replace(settings, databases=tuple(dict.fromkeys(names)), from_markers=True)
