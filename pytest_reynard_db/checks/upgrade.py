"""``upgrade``: an empty database upgrades from base to heads.

The cheapest proof that the tree runs at all, on a database that has never
seen it (as a new developer's or a CI's would be).
"""

from __future__ import annotations

from .result import CheckResult
from .runner import CheckRunner

CHECK = "upgrade"


def upgrade(runner: CheckRunner) -> CheckResult:
    """Upgrade a throw-away database from base to heads."""
    with runner.scratch_database(CHECK) as manager:
        manager.upgrade("heads")
        at = manager.current()
    return runner.result(CHECK, True, f"base -> {', '.join(at) or 'base'}")
