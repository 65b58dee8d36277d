"""What the version table should hold, and why it does not: shared by the checks that
migrate (``upgrade``, ``stairway``, ``downgrade_clean``, ``models_match``), which all read
the throw-away database's ``alembic_version`` back.

Pure functions of the revision graph (no database), like Alembic's ``revision.py``; and
the simplest check that reads the version table back, ``upgrade``: an empty database
upgrades from base to heads, the cheapest proof that the tree runs at all, on a database
that has never seen it (as a new developer's or a CI's would be).
"""

from __future__ import annotations

from alembic.script import Script, ScriptDirectory

from ..migration.tree import first_parent, needs
from . import CheckResult
from .runner import CheckRunner


def walk_order(script: ScriptDirectory) -> list[Script]:
    """Every revision, bases first (a revision after all it needs, ``depends_on`` too)."""
    return [s for s in reversed(list(script.walk_revisions())) if s is not None]


def down_target(revision: Script) -> str:
    """A downgrade target that removes ``revision`` and nothing else.

    ``-1`` is ambiguous with several heads and ``<rev>-1`` may move sibling
    branches; a target scoped to the revision's own branch (``<rev>@<parent>``,
    ``<rev>@base`` for a base, ``<merge>@<one parent>`` for a merge) is exact.
    """
    return f"{revision.revision}@{first_parent(revision)}"


def expected_heads(script: ScriptDirectory, applied: set[str]) -> set[str]:
    """What ``alembic_version`` holds when exactly ``applied`` are applied.

    Alembic stores the applied revisions nothing applied builds on, where
    ``depends_on`` counts as building on.
    """
    below: set[str] = set()
    for rev in applied:
        found = script.get_revision(rev)
        if found is not None:
            below.update(needs(found))
    return applied - below


def all_heads(script: ScriptDirectory) -> set[str]:
    """What ``alembic_version`` holds once every revision is applied."""
    return expected_heads(script, {s.revision for s in walk_order(script)})


def moved_to(
    runner: CheckRunner,
    what: str,
    actual: set[str],
    expected: set[str],
    before: set[str] | None = None,
) -> str | None:
    """None when a migration left the throw-away database at ``expected``, else why not:
    a check that reads back where its own database is never says "ok" about migrations
    env.py ran somewhere else."""
    if actual == expected:
        return None
    return unchanged_or_wrong(runner, what, actual, expected, before)


def heads_text(heads: set[str]) -> str:
    return ", ".join(sorted(heads)) or "base"


def unchanged_or_wrong(
    runner: CheckRunner | None,
    what: str,
    actual: set[str],
    expected: set[str],
    before: set[str] | None = None,
) -> str:
    """Why the version table is not where a step should have left it.

    Unchanged means the migrations ran somewhere else: an ``env.py`` that builds its
    own connection from a variable or file instead of the one it is given.
    """
    before = set() if before is None else before
    prefix = f"database {runner.db.name!r}: " if runner is not None else ""
    if actual == before:
        return (
            f"{prefix}{what} did not change the throw-away database (still at "
            f"{heads_text(actual)}): env.py connected to another database; it must use "
            'config.attributes["connection"] or sqlalchemy.url'
        )
    return (
        f"{prefix}{what} left the database at {heads_text(actual)}, expected {heads_text(expected)}"
    )


# -- the upgrade check -------------------------------------------------------------------

UPGRADE = "upgrade"


def upgrade(runner: CheckRunner) -> CheckResult:
    """Upgrade a throw-away database from base to heads, and read back where it is.

    Reading back is what makes "ok" mean something: an ``env.py`` that migrated
    some other database leaves the throw-away one at base.
    """
    expected = all_heads(runner.script)
    with runner.scratch_database(UPGRADE) as manager:
        manager.upgrade("heads")
        at = set(manager.current())
    why = moved_to(runner, "upgrade heads", at, expected)
    if why is not None:
        return runner.result(UPGRADE, False, why)
    return runner.result(UPGRADE, True, f"base -> {heads_text(at)}")
