"""Alembic trees and the databases they migrate: the migration manager (a method per
verb, as Alembic's ``command.py``), one ``env.py`` run, the tree and what Alembic keeps
private about it, new revision files, mirrors, and the git base of ``history``.

Below ``checks/``, ``cli/`` and ``plugin/``; above ``postgres/`` and ``guard/``.
"""
