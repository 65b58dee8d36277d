"""Test databases from Alembic trees: each tree resolved once (its files, URL variables,
template digest), a template built once per tree and server, and the test databases
cloned from it, one ahead, on a thread (``Provisioner``: the plugin's fixtures stand on
it). Beside ``postgres/``, which it uses for servers; above ``migration/``, which builds
the templates.
"""
