"""The oracle's corpus, continued (``oracle_corpus`` has the format): branches, merges and
``depends_on``, and the state one process or one connection keeps between the steps of a
walk, where each plain ``alembic`` command starts afresh: a session ``SET``, a TEMP table,
a ``Table`` reflected into a module-level ``MetaData``."""

from __future__ import annotations

from oracle_corpus import Rev, case, changed, forgets
from oracle_corpus_objects import table

BRANCHES_AND_MERGE = (
    Rev("bm00", None, table("core"), "op.drop_table('core')"),
    Rev("bma1", "bm00", table("left_side"), "op.drop_table('left_side')"),
    Rev("bmb1", "bm00", table("right_side"), "op.drop_table('right_side')"),
    Rev("bmm1", ("bma1", "bmb1"), table("joined"), "op.drop_table('joined')"),
)

#: Two labelled branches; ``orders`` depends on ``users`` (a foreign key to it).
DEPENDS_ON = (
    Rev("do01", None, table("users"), "op.drop_table('users')", labels="users"),
    Rev(
        "do02",
        None,
        table("orders", "sa.Column('user_id', sa.Integer, sa.ForeignKey('users.id'))"),
        "op.drop_table('orders')",
        labels="orders",
        depends_on="do01",
    ),
    Rev(
        "do03",
        "do02",
        "op.add_column('orders', sa.Column('total', sa.Numeric))",
        "op.drop_column('orders', 'total')",
    ),
)

#: A session-level ``SET search_path``: it holds for the rest of that connection, so for
#: the later revisions of one ``alembic upgrade heads``, but not for a command of their own.
SEARCH_PATH = (
    Rev(
        "sp01",
        None,
        "op.execute('CREATE SCHEMA app')\n"
        "op.create_table('things', sa.Column('id', sa.Integer, primary_key=True), schema='app')\n"
        "op.execute('SET search_path TO app, public')",
        "op.drop_table('things', schema='app')\nop.execute('DROP SCHEMA app')",
    ),
    Rev(
        "sp02",
        "sp01",
        "op.create_table('notes', sa.Column('id', sa.Integer, primary_key=True), schema='public')",
        "op.drop_table('notes', schema='public')",
    ),
)

#: The later revision names its table unqualified: ``upgrade heads`` puts it in ``app``
#: (the SET still holds), ``downgrade base``, a new connection, looks for it in ``public``.
SEARCH_PATH_UNQUALIFIED = changed(
    SEARCH_PATH,
    "sp02",
    up="op.create_table('notes', sa.Column('id', sa.Integer, primary_key=True))",
    down="op.drop_table('notes')",
)

STATEMENT_TIMEOUT = (
    Rev(
        "st01",
        None,
        table("big") + "\nop.execute(\"SET statement_timeout = '60s'\")",
        "op.drop_table('big')",
    ),
    Rev(
        "st02",
        "st01",
        "op.execute('SELECT pg_sleep(0.3)')\nop.create_index('ix_big_id', 'big', ['id'])",
        "op.drop_index('ix_big_id', table_name='big')",
    ),
)

TEMP_FIX = (
    "op.execute('CREATE TEMP TABLE ids_to_fix AS SELECT id FROM acct WHERE score IS NULL')\n"
    "op.execute('UPDATE acct SET score = {score} WHERE id IN (SELECT id FROM ids_to_fix)')"
)

#: A data migration's TEMP table without ON COMMIT DROP: it lives as long as the session,
#: which for plain Alembic is the command.
TEMP_TABLE = (
    Rev(
        "tt01",
        None,
        "acct = op.create_table('acct', sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('score', sa.Integer))\n"
        "op.bulk_insert(acct, [{'id': 1, 'score': None}, {'id': 2, 'score': 5}])",
        "op.drop_table('acct')",
    ),
    Rev("tt02", "tt01", TEMP_FIX.format(score=0), "pass"),
)

#: Copied into a second data migration: the one ``upgrade heads`` session has it already.
TEMP_TABLE_TWICE = (
    *TEMP_TABLE,
    Rev("tt03", "tt02", TEMP_FIX.format(score=1), "pass"),
)

#: Reflects ``doc`` into a module-level MetaData and reads every column it found, then drops
#: a legacy column its downgrade does not bring back: the re-up's ``doc`` has one column less
#: than the up's. A new process reflects again; a Table kept in ``META`` still has it.
REFLECT = (
    Rev(
        "rf01",
        None,
        table("doc", "sa.Column('title', sa.Text)", "sa.Column('legacy', sa.Text)"),
        "op.drop_table('doc')",
    ),
    Rev(
        "rf02",
        "rf01",
        "bind = op.get_bind()\n"
        "doc = sa.Table('doc', META, autoload_with=bind)\n"
        "rows = [dict(r) for r in bind.execute(sa.select(doc)).mappings()]\n"
        "archive = op.create_table('doc_archive', sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('data', sa.JSON))\n"
        "op.bulk_insert(archive, [{'id': r['id'], 'data': r} for r in rows])\n"
        "op.execute('ALTER TABLE doc DROP COLUMN IF EXISTS legacy')",
        "op.drop_table('doc_archive')",
        header="META = sa.MetaData()",
    ),
)

STATE_CASES = [
    case(
        "branches_and_merge",
        BRANCHES_AND_MERGE,
        changed(BRANCHES_AND_MERGE, "bmm1", down="pass"),
        downgrade_clean=False,
        stairway=(("bmm1", "re-up"),),
    ),
    case(  # users cannot go while orders' foreign key holds on to it
        "depends_on",
        DEPENDS_ON,
        forgets(DEPENDS_ON, "do02", "op.drop_table('orders')"),
        downgrade_clean=False,
        blame="do01",
        stairway=(("do02", "re-up"),),
    ),
    case(
        "session_search_path",
        SEARCH_PATH,
        SEARCH_PATH_UNQUALIFIED,
        downgrade_clean=False,
        blame="sp02",
    ),
    case(  # the SET left at 0.1 s: the next revision's statement is cancelled in one command
        "session_statement_timeout",
        STATEMENT_TIMEOUT,
        changed(
            STATEMENT_TIMEOUT,
            "st01",
            up=STATEMENT_TIMEOUT[0].up.replace("'60s'", "'100ms'"),
        ),
        upgrade=False,
        downgrade_clean=False,
        blame="st02",
    ),
    case(
        "temp_table_without_on_commit_drop",
        TEMP_TABLE,
        TEMP_TABLE_TWICE,
        upgrade=False,
        downgrade_clean=False,
        blame="tt03",
    ),
    case(  # the archive table stays
        "reflected_table_in_module_metadata",
        REFLECT,
        forgets(REFLECT, "rf02", "op.drop_table('doc_archive')"),
        downgrade_clean=False,
        stairway=(("rf02", "re-up"),),
    ),
]
