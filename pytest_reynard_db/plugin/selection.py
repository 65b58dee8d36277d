"""Which database each test runs against: ``--reynard-db``, the marker, pytest-alembic.

- ``@pytest.mark.reynard_db("x")`` parametrizes the session fixture ``reynard_db_name``
  with ``x``: the test's id gets ``[x]`` and, as for any session-scoped parameter,
  pytest groups the tests of one database together (the order changes).
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

from .alembic_items import uses_alembic
from .options import Settings

MARKER = "reynard_db"
NAME_FIXTURE = "reynard_db_name"


def marker_database(node: pytest.Item) -> str | None:
    """The database ``@pytest.mark.reynard_db(NAME)`` names for ``node``, if marked."""
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return None
    if len(marker.args) != 1 or not isinstance(marker.args[0], str) or marker.kwargs:
        raise pytest.UsageError(f"{node.nodeid}: use @pytest.mark.{MARKER}('name')")
    return marker.args[0]


def parametrize(metafunc: pytest.Metafunc, settings: Settings | None) -> None:
    """The marker's database, or (pytest-alembic's fixtures, several databases) each."""
    if NAME_FIXTURE not in metafunc.fixturenames:
        return
    named = marker_database(metafunc.definition)
    if named is not None:
        names: Sequence[str] = [named]
    elif (
        settings is not None
        and not settings.from_markers
        and len(settings.databases) > 1
        and uses_alembic(metafunc.fixturenames)
    ):
        names = settings.databases
    else:
        return
    metafunc.parametrize(NAME_FIXTURE, list(names), indirect=True, scope="session", ids=names)


def from_markers(settings: Settings, items: Sequence[pytest.Item]) -> Settings | None:
    """The run's settings when markers alone select its databases (None: no marker)."""
    names = [name for item in items if (name := marker_database(item)) is not None]
    if not names:
        return None
    return replace(settings, databases=tuple(dict.fromkeys(names)), from_markers=True)
