"""A registry name resolved once for provisioning, and the digest that names its template.

``Resolved``: a database's registry entry, the tree that migrates it (a mirror's
own copy, or with ``source`` ``point`` its source's: ``migrated_with``), the URL
variables its migrations may read, and the tree loaded once for every manager.
``tree_digest``: what decides a template's content, hashed into its name; ``heads_at``:
the revisions a template is at, remembered by that digest.
``project_identity``: which project a template on a shared server belongs to.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from ..foundation.filesystem import refuse_non_regular, replace_file
from ..foundation.registry import Database, Registry
from ..migration.tree import every_file, load_tree

if TYPE_CHECKING:  # imported when a tree is migrated, not to name a template
    from ..migration.manager import MigrationManager

#: Which tree migrates a mirror: its own copied tree, or its source's.
Source = Literal["copy", "point"]
SOURCES: tuple[Source, ...] = get_args(Source)


def migrated_with(registry: Registry, entry: Database, source: Source) -> Database:
    """The tree ``entry`` is migrated with: a mirror's own, or with ``point`` its source's."""
    if source == "point" and entry.mirror_of:
        return registry.get(entry.mirror_of)
    return entry


@dataclass(eq=False)
class Resolved:
    """A registry name looked up once: its entry, the tree that migrates it (loaded on
    first use, then shared by every manager), and the URL variables its migrations may
    read (``Registry.url_envs``)."""

    entry: Database
    tree: Database
    url_envs: tuple[str, ...]
    _script: ScriptDirectory | None = field(default=None, repr=False)

    @classmethod
    def of(cls, registry: Registry, name: str, source: Source) -> Resolved:
        """Registry name ``name`` resolved (``source``: which tree migrates a mirror)."""
        entry = registry.get(name)
        tree = migrated_with(registry, entry, source)
        return cls(entry=entry, tree=tree, url_envs=tuple(registry.url_envs(name)))

    @property
    def script(self) -> ScriptDirectory:
        if self._script is None:
            self._script = load_tree(self.tree)
        return self._script

    def manager(self, url: URL) -> MigrationManager:
        """A quiet manager of the tree, aimed at ``url``."""
        from ..migration.manager import MigrationManager

        return MigrationManager(
            self.tree, url, quiet=True, url_envs=self.url_envs, script=self.script
        )


def tree_digest(tree: Database, revision: str, source: Source) -> str:
    """A hash of everything in the tree that decides a template's content: env.py, revision
    files, and every other file of the tree's folders (a ``.sql`` file a revision reads),
    and the target. Not what lies outside them (a module of the application a revision
    imports): README's "Reuse" says so."""
    digest = hashlib.sha256(f"{revision}|{source}|{tree.name}".encode())
    base = tree.script_location
    files = [tree.script_location / "env.py"]
    refuse_non_regular(files[0], where=f"database {tree.name!r}: ")  # env.py
    files.extend(p for p in every_file(base) if p != files[0])
    for location in tree.version_locations:
        if not location.is_relative_to(base):
            files.extend(every_file(location))
    for path in files:
        # Relative where possible: two checkouts of one tree share a reused template.
        shown = path.relative_to(base) if path.is_relative_to(base) else path
        digest.update(str(shown).encode())
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:12]


#: Entries the heads cache keeps (one per tree location and revision), the last written.
HEADS_KEPT = 200


def heads_at(target: Resolved, revision: str, digest: str, cache: Path | None) -> tuple[str, ...]:
    """The revisions a template at ``revision`` is at (sorted, as ``MigrationManager.heads``),
    read from the tree with no manager (a kept template is used as it is); with ``cache`` (a
    folder), remembered there beside ``digest`` (``tree_digest`` at ``revision``): a warm
    start whose tree has not changed loads none of it (7 ms for ECS's, more for a big tree).
    A revision file edited, added or removed changes the digest, and the tree is read again."""
    if cache is None:
        return _heads_of(target.script, revision)
    place = f"{target.tree.script_location}|{target.tree.name}|{revision}"
    path = cache / f"heads-{hashlib.sha256(place.encode()).hexdigest()[:16]}.json"
    try:
        known = json.loads(path.read_bytes())
        if known["digest"] == digest and all(isinstance(h, str) for h in known["heads"]):
            return tuple(known["heads"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, another tree's, or unreadable: read from the tree
    heads = _heads_of(target.script, revision)
    try:
        cache.mkdir(mode=0o700, exist_ok=True)
        replace_file(path, json.dumps({"digest": digest, "heads": heads}).encode())
        _prune(cache)
    except OSError:
        pass  # a cache: the next start reads the tree again
    return heads


def _prune(cache: Path, keep: int = HEADS_KEPT) -> None:
    """Past ``keep`` entries, the oldest written go: every tree location a machine ran
    (each test project of a suite) left one, and the runtime directory is tmpfs. Only on a
    write (a warm start reads its entry and nothing else); one removed is read again."""
    written: list[tuple[int, str]] = []
    for entry in os.scandir(cache):
        if entry.name.startswith("heads-") and entry.name.endswith(".json"):
            with suppress(FileNotFoundError):  # another run pruned it first
                written.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.path))
    written.sort()
    for _, path in written[: max(0, len(written) - keep)]:
        with suppress(FileNotFoundError):
            os.unlink(path)


def _heads_of(script: ScriptDirectory, revision: str) -> tuple[str, ...]:
    found = script.get_revisions("heads" if revision in ("heads", "head") else revision)
    return tuple(sorted(s.revision for s in found if s is not None))


def project_identity(registry: Registry) -> str:
    """The project templates are marked with on a server others use: its root's path,
    hashed. Two projects may register a database of one name (``app``), and a project's
    tree is current only to itself; two checkouts of one project count as two, so that
    neither prunes a template the other may still need."""
    return hashlib.sha256(str(registry.root).encode()).hexdigest()[:12]
