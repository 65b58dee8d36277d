"""What ``drift`` reads from ``pg_catalog`` on both sides, beyond Alembic's comparison.

Each kind is one query of ``(name, definition)`` rows, every object as PostgreSQL itself
prints it (``pg_get_*def``, ``format_type``); the sessions' ``search_path`` is
``pg_catalog`` alone, so every name is schema-qualified and no function, operator or
cast of the application's can answer (a role is printed with ``pg_get_userbyid``, not a
cast). Objects an extension owns are the extension's (listed once, as the extension).

``COLUMNS`` is read apart: a column's default, identity, generation expression,
collation and (for a type of an extension's: ``citext``, ``hstore``, which SQLAlchemy
does not know) its type, said in ``models_match``'s words per column.
"""

from __future__ import annotations

from dataclasses import dataclass

from .runner import USER_SCHEMA

_NOT_EXTENSIONS = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_catalog.{table}'::regclass "
    "AND d.objid = {oid} AND d.deptype = 'e')"
)


@dataclass(frozen=True)
class Kind:
    """One kind of object: its query; ``shown``: a change shows both definitions (short
    ones); ``changes_only``: whether it exists is Alembic's comparison (a table's index,
    unique or foreign key), so only a changed definition is said here."""

    query: str
    shown: bool = False
    changes_only: bool = False


_ON_TABLE = "format('%I on %I.%I', {name}, n.nspname, c.relname)"
_INDEX = f"""
    SELECT {_ON_TABLE.format(name="ic.relname")},
           pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END
    FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN {{relkinds}} AND {USER_SCHEMA}
      AND NOT EXISTS (SELECT 1 FROM pg_constraint k  -- a constraint's own: said as the constraint
                      WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))"""
_CONSTRAINT = f"""
    SELECT {_ON_TABLE.format(name="k.conname")}, pg_get_constraintdef(k.oid)
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE k.contype IN {{contypes}} AND {USER_SCHEMA}"""

KINDS: dict[str, Kind] = {
    "enum": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, t.typname),
               '(' || string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder) || ')'
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE {USER_SCHEMA} AND {_NOT_EXTENSIONS.format(table="pg_type", oid="t.oid")}
        GROUP BY 1""",
        shown=True,
    ),
    "sequence": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, c.relname),
               format('%s start %s increment %s min %s max %s cache %s%s%s', s.seqtypid::regtype,
                      s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
                      CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END,
                      (SELECT format(' owned by %I.%I.%I', tn.nspname, tc.relname, ta.attname)
                       FROM pg_depend d JOIN pg_class tc ON tc.oid = d.refobjid
                       JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                       JOIN pg_attribute ta ON ta.attrelid = tc.oid AND ta.attnum = d.refobjsubid
                       WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                         AND d.refclassid = 'pg_catalog.pg_class'::regclass
                         AND d.deptype IN ('a', 'i')))
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMA} AND {_NOT_EXTENSIONS.format(table="pg_class", oid="c.oid")}""",
        shown=True,
    ),
    "function": Kind(
        f"""
        SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
               pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.prokind <> 'a' AND {USER_SCHEMA}
          AND {_NOT_EXTENSIONS.format(table="pg_proc", oid="p.oid")}"""
    ),
    "aggregate": Kind(
        f"""
        SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
               format('sfunc %s stype %s finalfunc %s initcond %s', a.aggtransfn,
                      format_type(a.aggtranstype, NULL), a.aggfinalfn, a.agginitval)
        FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {USER_SCHEMA} AND {_NOT_EXTENSIONS.format(table="pg_proc", oid="p.oid")}""",
        shown=True,
    ),
    "composite type": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, t.typname),
               '(' || string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)),
                                 ', ' ORDER BY a.attnum) || ')'
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        JOIN pg_class c ON c.oid = t.typrelid AND c.relkind = 'c'
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE {USER_SCHEMA} AND {_NOT_EXTENSIONS.format(table="pg_type", oid="t.oid")}
        GROUP BY 1""",
        shown=True,
    ),
    "trigger": Kind(
        f"""
        SELECT {_ON_TABLE.format(name="t.tgname")},
               pg_get_triggerdef(t.oid) || CASE t.tgenabled WHEN 'D' THEN ' (disabled)'
                   WHEN 'R' THEN ' (enabled on replica only)' WHEN 'A' THEN ' (enabled always)'
                   ELSE '' END
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {USER_SCHEMA}""",
        shown=True,
    ),
    "view": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, c.relname),
               CASE c.relkind WHEN 'm' THEN 'materialized: ' ELSE '' END || pg_get_viewdef(c.oid)
               || coalesce(' WITH (' || array_to_string(c.reloptions, ', ') || ')', '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {USER_SCHEMA}
          AND {_NOT_EXTENSIONS.format(table="pg_class", oid="c.oid")}"""
    ),
    "index": Kind(_INDEX.format(relkinds="('r', 'p')"), shown=True, changes_only=True),
    "materialized view index": Kind(_INDEX.format(relkinds="('m')"), shown=True),
    "constraint": Kind(
        _CONSTRAINT.format(contypes="('p', 'u', 'f')"), shown=True, changes_only=True
    ),
    "check constraint": Kind(_CONSTRAINT.format(contypes="('c')"), shown=True),
    "exclusion constraint": Kind(_CONSTRAINT.format(contypes="('x')"), shown=True),
    "partition": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, c.relname),
               format('of %I.%I %s', pn.nspname, p.relname, pg_get_expr(c.relpartbound, c.oid))
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
        WHERE c.relispartition AND {USER_SCHEMA}""",
        shown=True,
    ),
    "table option": Kind(
        f"""
        SELECT format('%I.%I %s', n.nspname, c.relname, o), ''
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
             unnest(coalesce(c.reloptions, '{{}}')
                    || CASE WHEN c.relpersistence = 'u' THEN '{{unlogged}}'::text[]
                            ELSE '{{}}' END) o
        WHERE c.relkind IN ('r', 'p', 'm') AND {USER_SCHEMA}"""
    ),
    "domain": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, t.typname),
               concat_ws(' ', format_type(t.typbasetype, t.typtypmod),
                         CASE WHEN t.typnotnull THEN 'NOT NULL' END,
                         'DEFAULT ' || t.typdefault,
                         (SELECT string_agg(format('CONSTRAINT %I %s', k.conname,
                                                   pg_get_constraintdef(k.oid)), ' '
                                            ORDER BY k.conname)
                          FROM pg_constraint k WHERE k.contypid = t.oid))
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype = 'd' AND {USER_SCHEMA}
          AND {_NOT_EXTENSIONS.format(table="pg_type", oid="t.oid")}""",
        shown=True,
    ),
    "rule": Kind(
        f"""
        SELECT {_ON_TABLE.format(name="r.rulename")},
               pg_get_ruledef(r.oid) || CASE r.ev_enabled WHEN 'D' THEN ' (disabled)'
                   WHEN 'R' THEN ' (enabled on replica only)' WHEN 'A' THEN ' (enabled always)'
                   ELSE '' END
        FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE r.rulename <> '_RETURN' AND {USER_SCHEMA}"""
    ),
    "row level security": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, c.relname),
               CASE WHEN c.relforcerowsecurity THEN 'enabled, forced' ELSE 'enabled' END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relrowsecurity AND {USER_SCHEMA}""",
        shown=True,
    ),
    "policy": Kind(
        f"""
        SELECT {_ON_TABLE.format(name="p.polname")},
               concat_ws(' ', CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
                         CASE p.polcmd WHEN 'r' THEN 'for select' WHEN 'a' THEN 'for insert'
                             WHEN 'w' THEN 'for update' WHEN 'd' THEN 'for delete'
                             ELSE 'for all' END,
                         'to ' || (SELECT string_agg(CASE WHEN r = 0 THEN 'public'
                                                          ELSE pg_get_userbyid(r) END, ', '
                                                     ORDER BY 1)
                                   FROM unnest(p.polroles) r),
                         'using ' || pg_get_expr(p.polqual, p.polrelid),
                         'with check ' || pg_get_expr(p.polwithcheck, p.polrelid))
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMA}""",
        shown=True,
    ),
    "inheritance": Kind(
        f"""
        SELECT format('%I.%I inherits %I.%I', n.nspname, c.relname, pn.nspname, p.relname), ''
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
        WHERE NOT c.relispartition AND c.relkind <> 'I' AND {USER_SCHEMA}"""
    ),
    "foreign table": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, c.relname),
               format('server %I options %s columns (%s)', s.srvname, ft.ftoptions,
                      (SELECT string_agg(format('%I %s', a.attname,
                                                format_type(a.atttypid, a.atttypmod)),
                                         ', ' ORDER BY a.attnum)
                       FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
        FROM pg_foreign_table ft JOIN pg_class c ON c.oid = ft.ftrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_foreign_server s ON s.oid = ft.ftserver
        WHERE {USER_SCHEMA}""",
        shown=True,
    ),
    "foreign server": Kind(
        f"""
        SELECT s.srvname, format('wrapper %I type %s version %s options %s', w.fdwname,
                                 s.srvtype, s.srvversion, s.srvoptions)
        FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
        WHERE {_NOT_EXTENSIONS.format(table="pg_foreign_server", oid="s.oid")}""",
        shown=True,
    ),
    "statistics": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, x.stxname), pg_get_statisticsobjdef(x.oid)
        FROM pg_statistic_ext x JOIN pg_namespace n ON n.oid = x.stxnamespace
        WHERE {USER_SCHEMA}""",
        shown=True,
    ),
    "publication": Kind(
        """
        SELECT p.pubname,
               format('all tables %s insert %s update %s delete %s truncate %s tables (%s)',
                      p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
                      (SELECT string_agg(format('%I.%I', pt.schemaname, pt.tablename), ', '
                                         ORDER BY 1)
                       FROM pg_publication_tables pt WHERE pt.pubname = p.pubname))
        FROM pg_publication p""",
        shown=True,
    ),
    "replica identity": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, c.relname),
               CASE c.relreplident WHEN 'n' THEN 'nothing' WHEN 'f' THEN 'full'
                   WHEN 'i' THEN 'index' END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND c.relreplident <> 'd' AND {USER_SCHEMA}""",
        shown=True,
    ),
    "text search configuration": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, c.cfgname),
               format('parser %s mappings %s', c.cfgparser::regproc,
                      (SELECT string_agg(format('%s:%s', m.maptokentype, m.mapdict::regdictionary),
                                         ', ' ORDER BY m.maptokentype, m.mapseqno)
                       FROM pg_ts_config_map m WHERE m.mapcfg = c.oid))
        FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace
        WHERE {USER_SCHEMA} AND {_NOT_EXTENSIONS.format(table="pg_ts_config", oid="c.oid")}""",
        shown=True,
    ),
    "operator": Kind(
        f"""
        SELECT format('%I.%s(%s, %s)', n.nspname, o.oprname, format_type(o.oprleft, NULL),
                      format_type(o.oprright, NULL)),
               format('function %s returns %s', o.oprcode, format_type(o.oprresult, NULL))
        FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
        WHERE {USER_SCHEMA} AND {_NOT_EXTENSIONS.format(table="pg_operator", oid="o.oid")}""",
        shown=True,
    ),
    "cast": Kind(
        f"""
        SELECT format('(%s AS %s)', format_type(c.castsource, NULL),
                      format_type(c.casttarget, NULL)),
               format('function %s context %s method %s', c.castfunc::regprocedure,
                      c.castcontext, c.castmethod)
        FROM pg_cast c
        WHERE c.oid >= 16384 AND {_NOT_EXTENSIONS.format(table="pg_cast", oid="c.oid")}""",
        shown=True,
    ),
    "collation": Kind(
        f"""
        SELECT format('%I.%I', n.nspname, c.collname),
               format('provider %s deterministic %s collate %s ctype %s', c.collprovider,
                      c.collisdeterministic, c.collcollate, c.collctype)
        FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
        WHERE {USER_SCHEMA} AND {_NOT_EXTENSIONS.format(table="pg_collation", oid="c.oid")}""",
        shown=True,
    ),
    # present or not: the server's own version of an extension is not the tree's business
    "extension": Kind("SELECT extname, '' FROM pg_extension WHERE extname <> 'plpgsql'"),
}

#: Per column of every table: schema, table, column, default, identity, generation
#: expression, collation and storage (when not its type's), type, and whether the type is an
#: extension's base type (which SQLAlchemy reflects as NullType and Alembic skips).
COLUMNS = f"""
    SELECT n.nspname, c.relname, a.attname,
           CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
           CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
           CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
           (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co
            JOIN pg_namespace cn ON cn.oid = co.collnamespace
            WHERE co.oid = a.attcollation AND a.attcollation <> t.typcollation),
           CASE WHEN a.attstorage <> t.typstorage THEN CASE a.attstorage WHEN 'p' THEN 'plain'
               WHEN 'e' THEN 'external' WHEN 'm' THEN 'main' WHEN 'x' THEN 'extended' END END,
           format_type(a.atttypid, a.atttypmod),
           t.typtype = 'b' AND t.typnamespace <> 'pg_catalog'::regnamespace
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND {USER_SCHEMA}"""
