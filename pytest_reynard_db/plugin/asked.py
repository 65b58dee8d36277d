"""The mappings ``reynard_dbs``, ``reynard_db_connections`` and
``reynard_db_async_connections`` give: read-only, by registry name, and a name the test did
not ask for is a ``KeyError`` that says how to ask for it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

V = TypeVar("V")


class AskedFor(Mapping[str, V]):
    """The databases a test asked for, by name, in the order asked (read-only)."""

    def __init__(self, fixture: str, values: Mapping[str, V]) -> None:
        self._fixture = fixture
        self._values = dict(values)

    def __getitem__(self, name: str) -> V:
        try:
            return self._values[name]
        except KeyError:
            asked = ", ".join(repr(n) for n in self._values)
            wanted = ", ".join(repr(n) for n in [*self._values, name])
            raise KeyError(
                f"{self._fixture}[{name!r}]: this test asked for {asked} only; ask for "
                f"{name!r} too: @pytest.mark.reynard_db({wanted}), or "
                f"--reynard-db={','.join([*self._values, name])}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"{self._fixture}({self._values!r})"
