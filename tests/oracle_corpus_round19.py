"""The oracle's corpus, continued (``oracle_corpus`` has the format): the hostile verdict
round of session 19. Session state set where no statement's text shows it (dynamic SQL in
a ``DO`` block; a ``set_config`` behind an escaped literal), and a transaction a walk in one
``env.py`` run must commit step by step (a deferred constraint), which ``test_oracle`` also
runs under env.py shapes that keep a transaction of their own (``TRANSACTION_SHAPES``).
"""

from __future__ import annotations

from oracle_corpus import Rev, case, changed
from oracle_corpus_objects import table

#: The first revision sets ``DateStyle`` for the session with dynamic SQL (no statement of
#: the revision's own is a ``SET``); the second writes a date in the day-first style, which a
#: new session (``ISO, MDY``) refuses: plain Alembic's ``upgrade ds02`` fails on its own.
DATESTYLE = (
    Rev(
        "ds01",
        None,
        table("ev", "sa.Column('d', sa.Date)")
        + "\nop.execute(\"DO $$ BEGIN EXECUTE 'SET datestyle TO ''ISO, DMY'''; END $$\")",
        "op.drop_table('ev')",
    ),
    Rev(
        "ds02",
        "ds01",
        "op.execute(\"INSERT INTO ev VALUES (1, '2020-01-13')\")",
        "op.execute('DELETE FROM ev WHERE id = 1')",
    ),
)

#: The tenant pattern (``oracle_corpus_hostile.TENANT``), the tenant set for the session by a
#: ``set_config`` that follows an escaped literal (``E'\\''``) in the same statement.
ESCAPED = (
    Rev(
        "te01",
        None,
        table(
            "doc",
            "sa.Column('tenant', sa.Text, nullable=False,"
            " server_default=sa.text(\"current_setting('app.tenant', true)\"))",
        ),
        "op.drop_table('doc')",
    ),
    Rev(
        "te02",
        "te01",
        "op.execute(\"SELECT E'\\\\'' AS note, set_config('app.tenant', 'seed', false)\")\n"
        "op.execute('INSERT INTO doc (id) VALUES (1)')",
        "op.execute('DELETE FROM doc WHERE id = 1')",
    ),
    Rev(
        "te03",
        "te02",
        "op.execute(\"SELECT set_config('app.tenant', 'seed', true)\")\n"
        "op.execute('INSERT INTO doc (id) VALUES (2)')",
        "op.execute('DELETE FROM doc WHERE id = 2')",
    ),
)

#: A foreign key checked at COMMIT: each plain command commits its revisions, so a revision
#: that leaves a child without its parent (the next revision adds it) fails on its own.
#: ``ON DELETE CASCADE``: a parent's delete leaves no check pending (a deferred one would
#: refuse the ``DROP TABLE`` of ``downgrade base``'s one transaction).
DEFERRED = (
    Rev(
        "df01",
        None,
        "op.execute('CREATE TABLE parent (id int PRIMARY KEY)')\n"
        "op.execute('CREATE TABLE child (id int PRIMARY KEY, parent_id int"
        " REFERENCES parent ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED)')",
        "op.execute('DROP TABLE child')\nop.execute('DROP TABLE parent')",
    ),
    Rev(
        "df02",
        "df01",
        "op.execute('INSERT INTO parent VALUES (1)')\n"
        "op.execute('INSERT INTO child VALUES (1, 1)')",
        "op.execute('DELETE FROM child WHERE id = 1')\n"
        "op.execute('DELETE FROM parent WHERE id = 1')",
    ),
    Rev(
        "df03",
        "df02",
        "op.execute('INSERT INTO parent VALUES (2)')",
        "op.execute('DELETE FROM parent WHERE id = 2')",
    ),
)
DEFERRED_SPLIT = changed(
    changed(
        DEFERRED,
        "df02",
        up="op.execute('INSERT INTO child VALUES (1, 1)')",
        down="op.execute('DELETE FROM child WHERE id = 1')",
    ),
    "df03",
    up="op.execute('INSERT INTO parent VALUES (1)')",
    down="op.execute('DELETE FROM parent WHERE id = 1')",
)


#: A revision leaves a note in the process for the next one (the run's config attributes,
#: its connection's ``info``, the environment); the next one needs it: in one ``upgrade
#: heads`` it is there, in a command of its own it is not.
def noted(where: str, prefix: str) -> tuple[Rev, ...]:
    """A sound tree whose first revision notes ``where`` (a mapping's source text) and whose
    second only reads it; ``needs_note`` makes the second need it."""
    return (
        Rev(
            f"{prefix}01",
            None,
            "import os\n" + table("noted") + f"\n{where}['REYNARD_ORACLE_NOTE'] = '1'",
            "op.drop_table('noted')",
        ),
        Rev(
            f"{prefix}02",
            f"{prefix}01",
            f"import os\nnote = {where}.get('REYNARD_ORACLE_NOTE')\n"
            "op.execute('INSERT INTO noted VALUES (1)')",
            "op.execute('DELETE FROM noted')",
        ),
    )


def needs_note(revisions: tuple[Rev, ...], where: str) -> tuple[Rev, ...]:
    second = revisions[1]
    return changed(
        revisions,
        second.id,
        up=f"import os\nif not {where}.get('REYNARD_ORACLE_NOTE'):\n"
        "    raise RuntimeError('the first revision ran in another command')\n"
        "op.execute('INSERT INTO noted VALUES (1)')",
    )


NOTES = {
    "note_in_the_config_attributes": ("op.get_context().config.attributes", "ca"),
    "note_in_the_connections_info": ("op.get_bind().info", "ci"),
    "note_in_the_environment": ("os.environ", "oe"),
}


#: ``ESCAPED`` with the apostrophe elsewhere: in a dollar-quoted string, in a quoted
#: identifier (hostile review of 0904ddc: each paired with the next quote and hid the
#: ``set_config``).
def tenant_after(note: str) -> tuple[Rev, ...]:
    return changed(
        ESCAPED,
        "te02",
        up=f"op.execute(\"SELECT {note}, set_config('app.tenant', 'seed', false)\")\n"
        "op.execute('INSERT INTO doc (id) VALUES (1)')",
    )


APOSTROPHES = {
    "session_setting_after_an_apostrophe_in_a_dollar_string": "$$don't$$ AS note",
    "session_setting_after_an_apostrophe_in_a_quoted_identifier": '1 AS \\"it\'s\\"',
}

ROUND19_CASES = [
    case(
        "datestyle_set_by_dynamic_sql_in_a_do_block",
        DATESTYLE,
        changed(DATESTYLE, "ds02", up="op.execute(\"INSERT INTO ev VALUES (1, '13/01/2020')\")"),
        stairway=(("ds02", "up"),),
    ),
    case(
        "session_setting_behind_an_escaped_literal",
        ESCAPED,
        changed(ESCAPED, "te03", up="op.execute('INSERT INTO doc (id) VALUES (2)')"),
        stairway=(("te03", "up"),),
    ),
    case(  # one `upgrade heads` commits once, after the parent came
        "deferred_foreign_key_checked_at_each_commit",
        DEFERRED,
        DEFERRED_SPLIT,
        stairway=(("df02", "up"),),
    ),
]

ROUND19_CASES += [
    case(
        name,
        tenant_after(note),
        changed(tenant_after(note), "te03", up="op.execute('INSERT INTO doc (id) VALUES (2)')"),
        stairway=(("te03", "up"),),
    )
    for name, note in APOSTROPHES.items()
]
ROUND19_CASES += [
    case(
        name,
        noted(where, prefix),
        needs_note(noted(where, prefix), where),
        stairway=((f"{prefix}02", "up"),),
    )
    for name, (where, prefix) in NOTES.items()
]

#: The cases ``test_oracle`` also runs under the env.py shapes that hold a transaction of
#: their own around ``run_migrations``.
TRANSACTION_CASES = ("deferred_foreign_key_checked_at_each_commit",)
