"""Templates on a server others use: what each records, and pruning the old ones.

A template's ``COMMENT`` (``RunPresence.mark_used``) records when it was last used,
the tree it was built from (its digest at heads) and the projects that used it.
Pruning drops, under the template's exclusive use lock (never one a run holds),
those unused for a while, or a project's templates of trees it no longer has.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from .names import comment_projects
from .server import Server
from .shared import TEMPLATE_COMMENT, USE_CLASS, template_key


@dataclass(frozen=True)
class TemplateInfo:
    """A template on a server: its name, when it was last used (epoch s) and by which run."""

    name: str
    used: float | None
    run: str | None
    ours: bool
    #: The digest at heads of the tree it was built from (None: not recorded).
    tree: str | None = None
    #: The projects (``resolve.project_identity``) that used it, the latest last.
    projects: tuple[str, ...] = ()

    def kind(self, project: str, current_trees: frozenset[str]) -> str:
        """What it is to ``project``, whose trees hash to ``current_trees`` now:
        ``current``, ``old digest`` (``server prune`` drops it) or ``another project``."""
        if self.tree in current_trees and project in self.projects:
            return "current"
        if self.projects == (project,):
            return "old digest"
        return "another project"


def templates(server: Server) -> list[TemplateInfo]:
    """Every ``test_tpl_*`` database, with what its comment records."""
    with server.admin() as conn:
        rows = conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database'), "
            "datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user) "
            "FROM pg_database "
            "WHERE datname LIKE 'test\\_tpl\\_%' AND datname NOT LIKE '%\\_building' "
            "ORDER BY datname"
        ).fetchall()
    found = []
    for name, comment, mine in rows:
        used = re.search(r"; used (\d+)", comment or "")
        run = re.search(r"; run ([0-9a-f]+)", comment or "")
        tree = re.search(r"; tree ([0-9a-f]+)", comment or "")
        found.append(
            TemplateInfo(
                name=name,
                used=float(used.group(1)) if used else None,
                run=run.group(1) if run else None,
                # Another role's template is that role's to prune, whatever we may drop.
                ours=bool(mine and comment and comment.startswith(TEMPLATE_COMMENT)),
                tree=tree.group(1) if tree else None,
                projects=tuple(comment_projects(comment)),
            )
        )
    return found


def prune_templates(
    server: Server,
    *,
    max_age: float | None = None,
    keep: frozenset[str] = frozenset(),
    everything_ours: bool = False,
    project: str | None = None,
    current_trees: frozenset[str] = frozenset(),
) -> list[str]:
    """Drop templates unused for ``max_age`` seconds (or, with ``max_age`` None, every one
    not in ``keep``) that no run holds; return their names.

    Only templates whose comment marks them as ours are dropped, unless
    ``everything_ours`` (a server this tool started, where every database is ours);
    with ``project``, only its old digests (``TemplateInfo.kind``): a server may hold
    other projects' current templates too, under the same database names.
    """
    now = time.time()
    dropped: list[str] = []
    for info in templates(server):
        if info.name in keep or not (info.ours or everything_ours):
            continue
        if project is not None and info.kind(project, current_trees) != "old digest":
            continue
        if max_age is not None and info.used is not None and now - info.used < max_age:
            continue
        key = (USE_CLASS, template_key(info.name))
        with server.admin() as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
            if not (row and row[0]):
                continue  # a run holds it
            try:
                server.adopt(info.name)
                server.drop_database(info.name)
                dropped.append(info.name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
    return dropped
