"""The oracle's corpus, continued (``oracle_corpus`` has the format): sequences, extensions,
functions and triggers, views, schemas, constraints and comments, ``batch_alter_table``,
data migrations and concurrent indexes."""

from __future__ import annotations

from oracle_corpus import Rev, case, changed, forgets


def table(name: str, *columns: str) -> str:
    """``op.create_table(name, id, *columns)``, as a revision body line; ``columns`` are
    its further arguments (columns, constraints, keywords), as source text."""
    listed = "".join(f", {c}" for c in columns)
    return f"op.create_table({name!r}, sa.Column('id', sa.Integer, primary_key=True){listed})"


SEQUENCE = (
    Rev(
        "sq01",
        None,
        "op.execute(sa.schema.CreateSequence(sa.Sequence('invoice_no_seq', start=1000)))\n"
        + table(
            "invoice",
            "sa.Column('no', sa.BigInteger, server_default=sa.text(\"nextval('invoice_no_seq')\"))",
        ),
        "op.drop_table('invoice')\nop.execute(sa.schema.DropSequence(sa.Sequence('invoice_no_seq')))",
    ),
)

EXTENSION = (
    Rev(
        "ex01",
        None,
        "op.execute('CREATE EXTENSION citext')\n"
        "op.execute('CREATE TABLE account (id serial PRIMARY KEY, email citext UNIQUE)')",
        "op.drop_table('account')\nop.execute('DROP EXTENSION citext')",
    ),
)

#: ``IF NOT EXISTS``: a forgotten ``DROP EXTENSION`` passes the stairway; only the catalog
#: after ``downgrade base`` shows it.
EXTENSION_IF_NOT_EXISTS = (
    Rev(
        "ei01",
        None,
        "op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')\n"
        + table("doc", "sa.Column('body', sa.Text)")
        + "\nop.execute('CREATE INDEX ix_doc_body_trgm ON doc USING gin (body gin_trgm_ops)')",
        "op.drop_table('doc')\nop.execute('DROP EXTENSION pg_trgm')",
    ),
)

TOUCH = (
    "op.execute('''CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN NEW.updated_at := now(); RETURN NEW; END $$''')\n"
    "op.execute('CREATE TRIGGER post_touch BEFORE UPDATE ON post FOR EACH ROW'\n"
    "           ' EXECUTE FUNCTION touch_updated_at()')"
)

FUNCTION_TRIGGER = (
    Rev(
        "fn01",
        None,
        table("post", "sa.Column('body', sa.Text)", "sa.Column('updated_at', sa.DateTime(True))"),
        "op.drop_table('post')",
    ),
    Rev(
        "fn02",
        "fn01",
        TOUCH,
        "op.execute('DROP TRIGGER post_touch ON post')\n"
        "op.execute('DROP FUNCTION touch_updated_at()')",
    ),
)

VIEWS = (
    Rev("vw01", None, table("sale", "sa.Column('amount', sa.Numeric)"), "op.drop_table('sale')"),
    Rev(
        "vw02",
        "vw01",
        "op.execute('CREATE VIEW big_sale AS SELECT * FROM sale WHERE amount > 100')\n"
        "op.execute('CREATE MATERIALIZED VIEW sale_total AS SELECT sum(amount) AS total"
        " FROM sale')",
        "op.execute('DROP MATERIALIZED VIEW sale_total')\nop.execute('DROP VIEW big_sale')",
    ),
)

SCHEMA = (
    Rev(
        "sc01",
        None,
        "op.execute('CREATE SCHEMA billing')\n"
        "op.create_table('charge', sa.Column('id', sa.Integer, primary_key=True),"
        " schema='billing')",
        "op.drop_table('charge', schema='billing')\nop.execute('DROP SCHEMA billing')",
    ),
)

CHECK_AND_COMMENT = (
    Rev(
        "ck01",
        None,
        table(
            "item",
            "sa.Column('qty', sa.Integer)",
            "sa.CheckConstraint('qty >= 0', name='ck_qty')",
            "comment='stock items'",
        ),
        "op.drop_table('item')",
    ),
    Rev(
        "ck02",
        "ck01",
        "op.create_check_constraint('ck_qty_max', 'item', 'qty < 1000000')\n"
        "op.alter_column('item', 'qty', comment='units in stock', existing_type=sa.Integer)\n"
        "op.create_table_comment('item', 'stock items, counted')",
        "op.drop_constraint('ck_qty_max', 'item', type_='check')\n"
        "op.alter_column('item', 'qty', comment=None, existing_type=sa.Integer)\n"
        "op.create_table_comment('item', 'stock items')",
    ),
)

BATCH = (
    Rev(
        "bt01",
        None,
        table("profile", "sa.Column('name', sa.String(50))"),
        "op.drop_table('profile')",
    ),
    Rev(
        "bt02",
        "bt01",
        "with op.batch_alter_table('profile') as batch:\n"
        "    batch.add_column(sa.Column('bio', sa.Text))\n"
        "    batch.alter_column('name', existing_type=sa.String(50), type_=sa.String(100))\n"
        "    batch.create_index('ix_profile_name', ['name'])",
        "with op.batch_alter_table('profile') as batch:\n"
        "    batch.drop_index('ix_profile_name')\n"
        "    batch.alter_column('name', existing_type=sa.String(100), type_=sa.String(50))\n"
        "    batch.drop_column('bio')",
    ),
)

DATA = (
    Rev(
        "dm01",
        None,
        "status = op.create_table('status', sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('name', sa.Text, unique=True))\n"
        "op.bulk_insert(status, [{'id': 1, 'name': 'open'}, {'id': 2, 'name': 'closed'}])",
        "op.drop_table('status')",
    ),
    Rev(
        "dm02",
        "dm01",
        "bind = op.get_bind()\n"
        "count = bind.execute(sa.text('SELECT count(*) FROM status')).scalar()\n"
        "bind.execute(sa.text(\"INSERT INTO status VALUES (:id, 'archived')\"), {'id': count + 1})",
        "op.get_bind().execute(sa.text(\"DELETE FROM status WHERE name = 'archived'\"))",
    ),
)

CONCURRENT_INDEX = (
    Rev("ci01", None, table("event", "sa.Column('at', sa.DateTime)"), "op.drop_table('event')"),
    Rev(
        "ci02",
        "ci01",
        "with op.get_context().autocommit_block():\n"
        "    op.create_index('ix_event_at', 'event', ['at'], postgresql_concurrently=True)",
        "with op.get_context().autocommit_block():\n"
        "    op.drop_index('ix_event_at', table_name='event', postgresql_concurrently=True)",
    ),
)

OBJECT_CASES = [
    case(
        "sequence",
        SEQUENCE,
        forgets(SEQUENCE, "sq01", SEQUENCE[0].down.splitlines()[1]),
        downgrade_clean=False,
        stairway=(("sq01", "re-up"),),
    ),
    case(
        "extension",
        EXTENSION,
        forgets(EXTENSION, "ex01", "op.execute('DROP EXTENSION citext')"),
        downgrade_clean=False,
        stairway=(("ex01", "re-up"),),
    ),
    case(
        "extension_if_not_exists",
        EXTENSION_IF_NOT_EXISTS,
        forgets(EXTENSION_IF_NOT_EXISTS, "ei01", "op.execute('DROP EXTENSION pg_trgm')"),
        downgrade_clean=False,
    ),
    case(
        "function_and_trigger",
        FUNCTION_TRIGGER,
        forgets(FUNCTION_TRIGGER, "fn02", "op.execute('DROP FUNCTION touch_updated_at()')"),
        downgrade_clean=False,
        stairway=(("fn02", "re-up"),),
    ),
    case(  # the materialized view stays, and then holds on to its table
        "view_and_materialized_view",
        VIEWS,
        forgets(VIEWS, "vw02", "op.execute('DROP MATERIALIZED VIEW sale_total')"),
        downgrade_clean=False,
        blame="vw01",
        stairway=(("vw02", "re-up"),),
    ),
    case(
        "schema",
        SCHEMA,
        forgets(SCHEMA, "sc01", "op.execute('DROP SCHEMA billing')"),
        downgrade_clean=False,
        stairway=(("sc01", "re-up"),),
    ),
    case(
        "check_constraint_and_comments",
        CHECK_AND_COMMENT,
        forgets(CHECK_AND_COMMENT, "ck02", CHECK_AND_COMMENT[1].down.splitlines()[0]),
        stairway=(("ck02", "re-up"),),
    ),
    case(
        "batch_alter_table",
        BATCH,
        forgets(BATCH, "bt02", "    batch.drop_index('ix_profile_name')"),
        stairway=(("bt02", "re-up"),),
    ),
    case(  # the downgrade leaves the row the upgrade inserted: the re-up's insert collides
        "bulk_insert_and_get_bind_data",
        DATA,
        changed(DATA, "dm02", down="pass"),
        stairway=(("dm02", "re-up"),),
    ),
    case(
        "create_index_concurrently",
        CONCURRENT_INDEX,
        changed(CONCURRENT_INDEX, "ci02", down="pass"),
        stairway=(("ci02", "re-up"),),
    ),
]
