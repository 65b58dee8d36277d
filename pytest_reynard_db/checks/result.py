"""The outcome of one check on one database, as the CLI, the plugin and ``--json`` show it.

Results are data: every output format (the table, the JSON, GitHub annotations,
JUnit, the pytest items) renders from these fields; none parses a message back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

#: ``ok`` passed; ``failed``; ``skipped``: does not apply (the message says why);
#: ``not_run``: a step it needs first failed (the message names it).
Status = Literal["ok", "failed", "skipped", "not_run"]
STATUSES: tuple[Status, ...] = ("ok", "failed", "skipped", "not_run")


@dataclass(frozen=True)
class Place:
    """Where in the code a result points: a file (relative to the project root), the line
    of the function or statement at fault, the function's name (``upgrade``,
    ``downgrade``); ``message``: what to say there, when it is part of the result's
    message only (one revision of a ``lint`` failure), None for the whole message."""

    file: str
    line: int | None = None
    function: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class CheckResult:
    """One database, one check: its status, why, and where in the code.

    ``revision``, ``file``, ``line`` and ``function`` name the one revision (and its
    function) a result is about; None where no single one is. ``places``: every place
    a result points at (each revision of a ``lint`` failure, each differing file of a
    mirror, each revision that created an object ``downgrade_clean`` found left); the
    one place ``file`` names when it is the only one.

    ``status`` is given, or follows from ``ok`` and ``skipped``. ``ok`` is false for a
    failure only: a skipped or not-run check fails no run. ``skipped`` is true for both
    kinds that did not run (kept for the ``--json`` readers that know only it).
    """

    database: str
    check: str
    ok: bool
    message: str
    revision: str | None = None
    file: str | None = None
    line: int | None = None
    function: str | None = None
    status: Status | None = None
    places: tuple[Place, ...] = ()
    skipped: bool = False

    def __post_init__(self) -> None:
        status = self.status or ("skipped" if self.skipped else "ok" if self.ok else "failed")
        if status not in STATUSES:
            raise ValueError(f"unknown check status {status!r}")
        fixed: dict[str, object] = {
            "status": status,
            "ok": status != "failed",
            "skipped": status in ("skipped", "not_run"),
        }
        if not self.places and self.file:
            fixed["places"] = (Place(self.file, self.line, self.function),)
        for name, value in fixed.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` entry (the README's "Migration checks"): every field, None where it
        does not apply; ``"skipped": true`` added to a skipped or not-run check's entry
        only, so the documented shape is kept."""
        entry = asdict(self)
        entry["places"] = [asdict(place) for place in self.places]
        if not self.skipped:
            del entry["skipped"]
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> CheckResult:
        """The result an ``as_json`` entry describes (the child interpreter's answer)."""
        places = tuple(Place(**place) for place in entry.get("places", ()))
        return cls(**{**entry, "places": places})

    @property
    def summary(self) -> str:
        """The first line of the message (the rest are details)."""
        lines = self.message.strip().splitlines()
        return lines[0] if lines else ""
