"""The outcome of one check on one database, as the CLI, the plugin and ``--json`` show it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CheckResult:
    """One database, one check: passed or not, and why.

    ``revision`` and ``file`` name the revision a failure is about (``file``
    relative to the project root); both are None where no single revision is.
    ``skipped``: the check found nothing to check (``models_match`` without
    ``target_metadata``).
    """

    database: str
    check: str
    ok: bool
    message: str
    revision: str | None = None
    file: str | None = None
    #: The check does not apply to this tree (``ok`` stays true; the message says why).
    skipped: bool = False

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` entry (the README's "Migration checks"): every field, None where it
        does not apply; ``"skipped": true`` added to a skipped check's entry only, so the
        documented shape is kept."""
        entry = asdict(self)
        if not self.skipped:
            del entry["skipped"]
        return entry

    @property
    def summary(self) -> str:
        """The first line of the message (the rest are details)."""
        lines = self.message.strip().splitlines()
        return lines[0] if lines else ""
