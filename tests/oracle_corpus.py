"""The oracle's corpus (``tests/test_oracle.py``): small Alembic trees of the patterns real
projects use, each in a sound and a broken form, with plain Alembic's verdict on each.

A ``Case`` is a sound tree and a broken one (the sound one with a revision or two changed);
``expected`` is what plain Alembic's commands give on the broken form (``bench.plain_alembic``:
each step a fresh ``alembic`` command) and the test checks that too, so a wrong expectation
here is caught, not copied into the verdicts. The sound form passes everything.

This module: named enums and the other objects a downgrade can forget. ``oracle_corpus_state``:
branches, merges, ``depends_on``, and state kept between the steps of one process or connection.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Imported by the revisions that name PostgreSQL's own types.
PG = "from sqlalchemy.dialects import postgresql"


@dataclass(frozen=True)
class Rev:
    """One revision file: ``up`` and ``down`` are the bodies of ``upgrade()``/``downgrade()``,
    ``header`` module-level code after the imports."""

    id: str
    parent: str | tuple[str, ...] | None
    up: str
    down: str
    labels: str | None = None
    depends_on: str | None = None
    header: str = ""


@dataclass(frozen=True)
class Expected:
    """Plain Alembic's verdict on a form: whether ``upgrade`` and ``downgrade_clean`` pass, the
    revision the failing command was running (``blame``, where its output names one), and
    the stairway's broken revisions as (revision, step)."""

    upgrade: bool = True
    downgrade_clean: bool = True
    stairway: tuple[tuple[str, str], ...] = ()
    blame: str | None = None


SOUND = Expected()


@dataclass(frozen=True)
class Case:
    """A pattern: its sound tree, its broken tree, and plain Alembic's verdict on the broken."""

    name: str
    sound: tuple[Rev, ...]
    broken: tuple[Rev, ...]
    expected: Expected

    def form(self, name: str) -> tuple[tuple[Rev, ...], Expected]:
        return (self.sound, SOUND) if name == "sound" else (self.broken, self.expected)


def changed(revisions: tuple[Rev, ...], rev: str, **fields: str) -> tuple[Rev, ...]:
    """``revisions`` with revision ``rev``'s ``fields`` replaced: the broken form of a tree."""
    assert any(r.id == rev for r in revisions), rev
    return tuple(replace(r, **fields) if r.id == rev else r for r in revisions)


def forgets(revisions: tuple[Rev, ...], rev: str, line: str) -> tuple[Rev, ...]:
    """``revisions`` with ``line`` taken out of revision ``rev``'s downgrade."""
    down = next(r.down for r in revisions if r.id == rev)
    assert line in down, (rev, line)
    kept = "\n".join(x for x in down.splitlines() if x != line) or "pass"
    return changed(revisions, rev, down=kept)


def case(
    name: str,
    sound: tuple[Rev, ...],
    broken: tuple[Rev, ...],
    *,
    upgrade: bool = True,
    downgrade_clean: bool = True,
    stairway: tuple[tuple[str, str], ...] = (),
    blame: str | None = None,
) -> Case:
    """A pattern; the keywords are plain Alembic's verdict on ``broken`` (``Expected``)."""
    return Case(name, sound, broken, Expected(upgrade, downgrade_clean, stairway, blame))


# -- named enums ------------------------------------------------------------------------------
ENUM_IN_CREATE_TABLE = (
    Rev(
        "en01",
        None,
        "op.create_table('ticket', sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('kind', sa.Enum('bug', 'feature', name='ticketkind')))",
        "op.drop_table('ticket')\nop.execute('DROP TYPE ticketkind')",
    ),
    Rev(
        "en02",
        "en01",
        "op.add_column('ticket', sa.Column('title', sa.Text))",
        "op.drop_column('ticket', 'title')",
    ),
)

#: One Enum object in two tables of one revision: the second CREATE TYPE is skipped by
#: the run's DDL memo, in plain Alembic as in any one command.
ENUM_TWO_TABLES = (
    Rev(
        "et01",
        None,
        "op.create_table('t_one', sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('k', SHARED))\n"
        "op.create_table('t_two', sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('k', SHARED))",
        "op.drop_table('t_two')\nop.drop_table('t_one')\nop.execute('DROP TYPE sharedkind')",
        header="SHARED = sa.Enum('a', 'b', name='sharedkind')",
    ),
)

#: The type made by the first revision, used (``create_type=False``) by the second.
ENUM_TWO_REVISIONS = (
    Rev(
        "er01",
        None,
        "op.create_table('order_a', sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('status', sa.Enum('new', 'done', name='statusenum')))",
        "op.drop_table('order_a')\nop.execute('DROP TYPE statusenum')",
    ),
    Rev(
        "er02",
        "er01",
        "op.create_table('order_b', sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('status', postgresql.ENUM(name='statusenum', create_type=False)))",
        "op.drop_table('order_b')",
        header=PG,
    ),
)

ENUM_EXPLICIT_DDL = (
    Rev(
        "ed01",
        None,
        "op.execute(\"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')\")\n"
        "op.create_table('person', sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('mood', postgresql.ENUM('sad', 'ok', 'happy', name='mood',"
        " create_type=False)))",
        "op.drop_table('person')\nop.execute('DROP TYPE mood')",
        header=PG,
    ),
    Rev(
        "ed02",
        "ed01",
        "op.add_column('person', sa.Column('was', postgresql.ENUM(name='mood',"
        " create_type=False)))",
        "op.drop_column('person', 'was')",
        header=PG,
    ),
)

ADD_VALUE = (
    "with op.get_context().autocommit_block():\n"
    "    op.execute(\"ALTER TYPE jobstate ADD VALUE IF NOT EXISTS 'failed'\")"
)

#: ``ADD VALUE`` cannot run in a transaction block before PostgreSQL 12 and its value
#: cannot be used in the one it was added in: hence the autocommit block. A value cannot be
#: dropped, so the downgrade leaves it and the upgrade says IF NOT EXISTS.
ENUM_ADD_VALUE = (
    Rev(
        "ev01",
        None,
        "op.create_table('job', sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('state', sa.Enum('queued', 'running', name='jobstate')))",
        "op.drop_table('job')\nop.execute('DROP TYPE jobstate')",
    ),
    Rev("ev02", "ev01", ADD_VALUE, "pass"),
    Rev(
        "ev03",
        "ev02",
        "op.add_column('job', sa.Column('last', postgresql.ENUM(name='jobstate',"
        " create_type=False), server_default='failed'))",
        "op.drop_column('job', 'last')",
        header=PG,
    ),
)

ENUM_CASES = [
    case(
        "enum_in_create_table",
        ENUM_IN_CREATE_TABLE,
        forgets(ENUM_IN_CREATE_TABLE, "en01", "op.execute('DROP TYPE ticketkind')"),
        downgrade_clean=False,
        stairway=(("en01", "re-up"),),
    ),
    case(
        "enum_shared_by_two_tables",
        ENUM_TWO_TABLES,
        forgets(ENUM_TWO_TABLES, "et01", "op.execute('DROP TYPE sharedkind')"),
        downgrade_clean=False,
        stairway=(("et01", "re-up"),),
    ),
    case(  # the second revision drops the type the first one owns (and still uses)
        "enum_shared_by_two_revisions",
        ENUM_TWO_REVISIONS,
        changed(
            ENUM_TWO_REVISIONS,
            "er02",
            down="op.drop_table('order_b')\nop.execute('DROP TYPE statusenum')",
        ),
        downgrade_clean=False,
        blame="er02",
        stairway=(("er02", "down"),),
    ),
    case(
        "enum_create_type_false_explicit_ddl",
        ENUM_EXPLICIT_DDL,
        forgets(ENUM_EXPLICIT_DDL, "ed01", "op.execute('DROP TYPE mood')"),
        downgrade_clean=False,
        stairway=(("ed01", "re-up"),),
    ),
    case(  # without IF NOT EXISTS the re-up adds a value that is there
        "enum_add_value_in_autocommit_block",
        ENUM_ADD_VALUE,
        changed(ENUM_ADD_VALUE, "ev02", up=ADD_VALUE.replace(" IF NOT EXISTS", "")),
        stairway=(("ev02", "re-up"),),
    ),
]
