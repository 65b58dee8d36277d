"""What the checks that read PostgreSQL's catalog agree on."""

from __future__ import annotations

#: A ``pg_namespace n`` row of the application's, not PostgreSQL's own: not the
#: catalog, information_schema, toast or temporary schemas. SQL text for a WHERE clause.
USER_SCHEMA = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)
