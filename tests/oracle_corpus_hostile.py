"""The oracle's corpus, continued (``oracle_corpus`` has the format): hostile trees (issue 22's
hostile test) whose revisions leave state in the session that no statement's text shows and
``migrating_connection.SESSION_STATE`` does not read back, where each plain ``alembic``
command starts on a new session.
"""

from __future__ import annotations

from oracle_corpus import Rev, case, changed
from oracle_corpus_objects import table

#: The row-level-security pattern: a column defaults to the session's tenant, which a function
#: (defined in the first revision) sets with ``set_config(..., false)`` for the session. The
#: third revision's insert relies on a tenant some earlier revision of the same command set.
TENANT = (
    Rev(
        "tn01",
        None,
        table(
            "doc",
            "sa.Column('tenant', sa.Text, nullable=False,\n"
            "    server_default=sa.text(\"current_setting('app.tenant', true)\"))",
        )
        + '\nop.execute("CREATE FUNCTION use_tenant(t text) RETURNS text LANGUAGE sql AS '
        "$$ SELECT set_config('app.tenant', t, false) $$\")",
        "op.execute('DROP FUNCTION use_tenant(text)')\nop.drop_table('doc')",
    ),
    Rev(
        "tn02",
        "tn01",
        "op.execute(\"SELECT use_tenant('seed')\")\nop.execute('INSERT INTO doc (id) VALUES (1)')",
        "op.execute('DELETE FROM doc WHERE id = 1')",
    ),
    Rev(
        "tn03",
        "tn02",
        "op.execute(\"SELECT use_tenant('seed')\")\nop.execute('INSERT INTO doc (id) VALUES (2)')",
        "op.execute('DELETE FROM doc WHERE id = 2')",
    ),
)

#: tn03 without its own ``use_tenant``: in ``upgrade heads`` tn02's tenant still holds; as a
#: command of its own (the stairway's ``upgrade tn03``) the default is NULL.
TENANT_FORGOTTEN = changed(TENANT, "tn03", up="op.execute('INSERT INTO doc (id) VALUES (2)')")

#: ``UPDATE pg_settings`` is ``set_config(..., false)``: no ``SET`` begins the statement.
READ_ONLY = (
    Rev("ro01", None, table("counter", "sa.Column('n', sa.Integer)"), "op.drop_table('counter')"),
    Rev(
        "ro02",
        "ro01",
        "op.execute('INSERT INTO counter VALUES (1, 0)')",
        "op.execute('DELETE FROM counter WHERE id = 1')",
    ),
)

#: A data migration that ends by making the rest of its session read-only (a safety net some
#: teams put at the end of a one-off fix); the command ends with its transaction.
READ_ONLY_AFTER = changed(
    READ_ONLY,
    "ro02",
    up=READ_ONLY[1].up + "\nop.execute(\"UPDATE pg_settings SET setting = 'on' "
    "WHERE name = 'default_transaction_read_only'\")",
)

#: A prepared statement made on the DBAPI cursor (no SQLAlchemy event sees it) and never
#: deallocated: it lives as long as the session, which for plain Alembic is the command.
PREPARE = (
    "cur = op.get_bind().connection.cursor()\n"
    "cur.execute('PREPARE bump AS UPDATE counter SET n = n + 1')\n"
    "cur.execute('EXECUTE bump')\n"
    "cur.close()"
)
PREPARED = (
    *READ_ONLY,
    Rev("pp03", "ro02", PREPARE, "op.execute('UPDATE counter SET n = n - 1')"),
)

#: The same statement prepared again by a later revision: one ``upgrade heads`` session.
PREPARED_TWICE = (
    *PREPARED,
    Rev("pp04", "pp03", PREPARE, "op.execute('UPDATE counter SET n = n - 1')"),
)

#: A session-level setting made with ``UPDATE pg_settings`` (no ``SET`` begins it), then hidden
#: for the rest of the step's transaction by a ``SET LOCAL`` back to the default: read inside
#: the transaction the session looks untouched; after the commit it has ``app`` first, and the
#: down step's unqualified ``side`` is ``app.side``, not the ``public.side`` the up created.
HIDDEN_PATH = (
    Rev(
        "hp01",
        None,
        "op.execute('CREATE SCHEMA app')\n"
        + table("base")
        + "\n"
        + table("side").replace("primary_key=True)", "primary_key=True), schema='app'"),
        "op.drop_table('side', schema='app')\nop.drop_table('base')\nop.execute('DROP SCHEMA app')",
    ),
    Rev(
        "hp02",
        "hp01",
        "op.execute(\"UPDATE pg_settings SET setting = 'app, public'\"\n"
        "    \" WHERE name = 'search_path'\")\n"
        "op.execute('SET LOCAL search_path TO \"$user\", public')\n" + table("side"),
        "op.drop_table('side')",
    ),
)

#: hp02's downgrade names its schema: sound on any session.
HIDDEN_PATH_SOUND = changed(HIDDEN_PATH, "hp02", down="op.drop_table('side', schema='public')")

#: A revision hooks its connection (a statement rewriter: ``CREATE TABLE`` made idempotent for
#: its own re-runs); the hook lives as long as the connection, for plain Alembic the command.
HOOK = (
    "def _idempotent(conn, cursor, statement, params, context, executemany):\n"
    "    if 'IF NOT EXISTS' not in statement:\n"
    "        statement = statement.replace('CREATE TABLE ', 'CREATE TABLE IF NOT EXISTS ', 1)\n"
    "    return statement, params\n"
    "sa.event.listen(op.get_bind(), 'before_cursor_execute', _idempotent, retval=True)\n"
)
HOOKED = (
    Rev("hk01", None, HOOK + table("hooked"), "op.drop_table('hooked')"),
    Rev("hk02", "hk01", table("later"), "op.drop_table('later')"),
)

#: A session-level advisory lock taken and not given back (the name quoted, as a tool that
#: quotes identifiers writes it); a later revision's second connection wants it.
TAKE_LOCK = "op.execute('SELECT \"pg_advisory_lock\"(4242)')"
GIVE_LOCK = "op.execute('SELECT pg_advisory_unlock(4242)')"
LOCKED = (
    Rev("al01", None, table("jobs") + "\n" + TAKE_LOCK + "\n" + GIVE_LOCK, "op.drop_table('jobs')"),
    Rev(
        "al02",
        "al01",
        "with op.get_bind().engine.connect() as other:\n"
        "    took = other.execute(sa.text('SELECT pg_try_advisory_lock(4242)')).scalar()\n"
        "    other.execute(sa.text('SELECT pg_advisory_unlock_all()'))\n"
        "if not took:\n"
        "    raise RuntimeError('the jobs lock is held')\n" + table("runs"),
        "op.drop_table('runs')",
    ),
)


HOSTILE_CASES = [
    case(
        "tenant_set_by_an_earlier_revisions_function",
        TENANT,
        TENANT_FORGOTTEN,
        stairway=(("tn03", "up"),),
    ),
    case(  # plain Alembic passes both forms: the setting ends with each command's session
        "read_only_session_via_pg_settings",
        READ_ONLY,
        READ_ONLY_AFTER,
    ),
    case(
        "prepared_statement_on_the_dbapi_cursor",
        PREPARED,
        PREPARED_TWICE,
        upgrade=False,
        downgrade_clean=False,
        blame="pp04",
    ),
    case(
        "search_path_set_for_the_session_hidden_by_set_local",
        HIDDEN_PATH_SOUND,
        HIDDEN_PATH,
    ),
    case(  # the re-up creates ``later`` again: its downgrade forgot it
        "statement_hook_on_the_connection",
        HOOKED,
        changed(HOOKED, "hk02", down="pass"),
        downgrade_clean=False,
        stairway=(("hk02", "re-up"),),
    ),
    case(
        "advisory_lock_left_by_an_earlier_revision",
        LOCKED,
        changed(LOCKED, "al01", up=table("jobs") + "\n" + TAKE_LOCK),
        upgrade=False,
        downgrade_clean=False,
        blame="al02",
    ),
]
