"""``upgrade``: an empty database upgrades from base to heads.

The cheapest proof that the tree runs at all, on a database that has never
seen it (as a new developer's or a CI's would be).
"""

from __future__ import annotations

from .heads import all_heads, heads_text, moved_to
from .result import CheckResult
from .runner import CheckRunner

CHECK = "upgrade"


def upgrade(runner: CheckRunner) -> CheckResult:
    """Upgrade a throw-away database from base to heads, and read back where it is.

    Reading back is what makes "ok" mean something: an ``env.py`` that migrated
    some other database leaves the throw-away one at base.
    """
    expected = all_heads(runner.script)
    with runner.scratch_database(CHECK) as manager:
        manager.upgrade("heads")
        at = set(manager.current())
    why = moved_to(runner, "upgrade heads", at, expected)
    if why is not None:
        return runner.result(CHECK, False, why)
    return runner.result(CHECK, True, f"base -> {heads_text(at)}")
