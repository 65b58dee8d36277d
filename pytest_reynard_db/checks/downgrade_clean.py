"""``downgrade_clean``: heads to base leaves nothing but ``alembic_version``.

A downgrade that forgets an enum type, a sequence or a function makes the next
upgrade of that database fail ("type already exists"), long after the
revision was merged. The throw-away database starts as the server's
``template1`` made it (empty, unless a user's server keeps a schema or an
extension there): anything found in a user schema after the downgrade that the
new database did not already hold was left by the tree.
"""

from __future__ import annotations

from typing import Any

from alembic.script import Script
from sqlalchemy import Connection, text

from ..foundation.errors import ReynardDBError
from ..foundation.urls import counted
from ..migration.env_run import before_steps
from ..migration.tree import version_table_of
from . import CheckResult
from .heads import all_heads, moved_to, walk_order
from .runner import USER_SCHEMA, CheckRunner, upgrade_first
from .walk import read_heads

CHECK = "downgrade_clean"
VERSION_TABLE = "alembic_version"


def _not_from_extension(catalog: str, alias: str) -> str:
    """Objects an extension created go with the extension (listed once, as the extension)."""
    return (
        "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = "
        f"'{catalog}'::regclass AND d.objid = {alias}.oid AND d.deptype = 'e')"
    )


#: (kind, schema, name) of everything a migration could leave behind.
LEFTOVERS = f"""
SELECT CASE c.relkind
         WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
         WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
         WHEN 'f' THEN 'foreign table' END,
       n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {USER_SCHEMA}
  AND NOT (c.relname = :version_table AND c.relkind IN ('r', 'p'))
  AND {_not_from_extension("pg_class", "c")}
UNION ALL
SELECT CASE t.typtype
         WHEN 'e' THEN 'enum type' WHEN 'd' THEN 'domain'
         WHEN 'c' THEN 'composite type' WHEN 'r' THEN 'range type' END,
       n.nspname, t.typname
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE {USER_SCHEMA}
  AND (t.typtype IN ('e', 'd', 'r')
       -- a composite type of its own, not the row type of a table or view
       OR (t.typtype = 'c'
           AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
  AND {_not_from_extension("pg_type", "t")}
UNION ALL
SELECT CASE p.prokind
         WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
       n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {USER_SCHEMA} AND {_not_from_extension("pg_proc", "p")}
UNION ALL
SELECT 'extension', n.nspname, e.extname
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname <> 'plpgsql'
UNION ALL
SELECT 'schema', n.nspname, n.nspname
FROM pg_namespace n
WHERE {USER_SCHEMA} AND n.nspname <> 'public'
  AND NOT EXISTS (SELECT 1 FROM pg_class c
                  WHERE c.relnamespace = n.oid AND c.relname = :version_table)
ORDER BY 1, 2, 3
"""


def downgrade_clean(runner: CheckRunner) -> CheckResult:
    """Upgrade a throw-away database to heads, downgrade it to base, list what is left,
    each object with the revision that created it (the ``downgrade()`` that forgot it).

    Each of the two is a run on a connection of its own, as two ``alembic`` commands
    would be: a temporary table or a ``SET`` the upgrade left in its session must not
    reach the downgrade. Where the database is is read back after each: an ``env.py``
    that migrated another database leaves this one empty, and nothing left behind
    would mean nothing.
    """
    heads = all_heads(runner.script)
    script = runner.script
    version_table = version_table_of(script)[0]
    already: set[str] = set()
    taken = False

    def before_the_revisions(context: Any) -> None:
        # in env.py's session, as it set it up; once: an env.py that runs its migrations
        # once per tenant has the first tenant's objects made before the second's start
        nonlocal taken
        if context.connection is not None and not taken:
            taken = True
            already.update(leftovers_in_transaction(context.connection, version_table))

    with runner.scratch_database(CHECK) as manager:
        with manager.connect() as connection:  # what the server's template1 gave it
            already.update(leftovers(connection, version_table))
        with before_steps(before_the_revisions):  # and what env.py makes before every run
            upgrade_first(manager)
        with manager.connect() as connection:
            why = moved_to(runner, "upgrade heads", read_heads(connection, script), heads)
        if why is None:
            manager.downgrade("base")
            with manager.connect() as connection:
                why = moved_to(
                    runner, "downgrade base", read_heads(connection, runner.script), set(), heads
                )
                left = [x for x in leftovers(connection, version_table) if x not in already]
        if why is not None:
            return runner.result(CHECK, False, why)
    if not left:
        return runner.result(
            CHECK, True, f"heads -> base leaves only {version_table_of(runner.script)[0]}"
        )
    creators = created_by(runner, set(left))
    listed = "\n".join(f"  {item}{_by(runner, creators.get(item))}" for item in left)
    message = f"downgrade to base left {counted(len(left), 'object')} behind:\n{listed}"
    by_revision: dict[str, list[str]] = {}
    for item in left:
        if item in creators:
            by_revision.setdefault(creators[item].revision, []).append(item)
    places = tuple(
        place
        for revision, items in by_revision.items()
        if (place := runner.place(revision, "downgrade", _left_by(revision, items))) is not None
    )
    # one revision at fault: the result is about its downgrade(); several: each is a place
    at_fault = creators[left[0]] if len(by_revision) == 1 and len(creators) == len(left) else None
    return runner.result(
        CHECK,
        False,
        message,
        revision=at_fault.revision if at_fault else None,
        file=at_fault.path if at_fault else None,
        function="downgrade",
        places=places,
    )


def created_by(runner: CheckRunner, left: set[str]) -> dict[str, Script]:
    """The revision that created each object of ``left``, found by replaying the tree on
    a fresh database one revision at a time, bases first, the objects listed after each:
    an object that appears after a revision's upgrade was created by it (by the last
    one, for an object dropped and created again).

    Replayed rather than read from the revision files: what a revision creates is not
    all in its source (an enum type ``create_table`` makes for a column, a serial's
    sequence, a function an ``op.execute`` string or an imported helper defines). It
    costs one ``env.py`` run per revision, on the failure path only. A replay that
    fails (an ``env.py`` whose runs differ) names what it found so far.
    """
    found: dict[str, Script] = {}
    try:
        with runner.scratch_database(CHECK) as manager:
            before: set[str] = set()
            for script in walk_order(runner.script):
                manager.upgrade(script.revision)  # a command of its own, as in the check
                with manager.connect() as connection:
                    now = set(leftovers(connection, version_table_of(runner.script)[0]))
                found.update((item, script) for item in (now - before) & left)
                before = now
    except ReynardDBError:
        pass  # the objects not found yet are listed without their revision
    return found


def _by(runner: CheckRunner, script: Script | None) -> str:
    """`` (created by <rev>, <file>)`` after a leftover whose creator is known."""
    if script is None:
        return ""
    return f" (created by {script.revision}, {runner.relative(script.path)})"


def _left_by(revision: str, items: list[str]) -> str:
    """What the annotation on a revision's ``downgrade()`` says."""
    listed = "\n".join(f"  {item}" for item in items)
    return f"downgrade of {revision} left {counted(len(items), 'object')} behind:\n{listed}"


def leftovers(connection: Connection, version_table: str = VERSION_TABLE) -> list[str]:
    """Everything in the database's user schemas but the version table (``env.py``'s
    ``version_table``), as ``kind schema.name``; the read's transaction rolled back."""
    found = leftovers_in_transaction(connection, version_table)
    connection.rollback()
    return found


def leftovers_in_transaction(connection: Connection, version_table: str) -> list[str]:
    """``leftovers``, read in the connection's transaction and leaving it open (env.py's,
    while it migrates)."""
    rows = connection.execute(text(LEFTOVERS), {"version_table": version_table}).all()
    return [
        f"{kind} {name}" if kind == "schema" else f"{kind} {schema}.{name}"
        for kind, schema, name in rows
    ]
