"""Migrated template databases and the test databases cloned from them.

A plain class, usable without pytest: ``Provisioner`` migrates each database
once into a template and clones it for every test that needs a database of its
own. Cloning a template costs a directory copy; migrating costs every revision.
Templates are named by the digest of their tree. On a server of this machine a
file lock makes xdist workers and concurrent runs build each once; on a server
shared with other machines (``presence``) the lock is an advisory lock on the
server itself, and the run holds each template it uses (``postgres.shared``).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from alembic.config import Config
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from .errors import ReynardDBError, ServerError
from .manager import MigrationManager, exported
from .postgres import Server
from .postgres.shared import RunPresence, build_lock
from .postgres.waits import file_lock
from .registry import Database, Registry
from .tree import revision_files

TEMPLATE_MARK = "tpl"


@dataclass
class TestDatabase:
    """One database for tests: its PostgreSQL ``name``, ``url``, ``engine``, ``head``."""

    __test__ = False  # not a test class, whatever pytest's name matching thinks

    name: str
    url: URL
    head: tuple[str, ...]
    db: Database
    tree: Database = field(repr=False)
    _engine: Engine | None = field(default=None, repr=False)
    _config: Config | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        """One short line (it shows in every failure that involves the fixture)."""
        heads = ",".join(self.head) or "base"
        return f"<TestDatabase {self.db.name}: {self.name} at {heads}>"

    @property
    def config(self) -> Config:
        """The Alembic Config of the tree it was migrated with, aimed at it (built on use)."""
        if self._config is None:
            self._config = self.tree.alembic_config(url=self.url, quiet=True)
        return self._config

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.url, pool_size=2, max_overflow=8)
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class Provisioner:
    """Builds templates once and hands out clones of them, on one server."""

    def __init__(
        self,
        registry: Registry,
        server: Server,
        *,
        run_id: str,
        worker: str = "main",
        source: str = "copy",
        presence: RunPresence | None = None,
        lock_dir: Path,
    ) -> None:
        """``presence``: this run's session on a server other runs (other machines)
        use too: template builds are then serialized on the server, and each
        template used is held until the run ends. Without it, a file lock in
        ``lock_dir`` serializes builds on this machine."""
        self.registry = registry
        self.server = server
        self.run_id = run_id
        self.worker = worker
        self.source = source
        self.presence = presence
        self.lock_dir = lock_dir
        self._templates: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
        self._counter = itertools.count(1)
        self._owned: list[TestDatabase] = []
        self._failed: dict[tuple[str, str], ReynardDBError] = {}
        # One thread with its own admin connection: clones made ahead, and drops. It
        # only ever drops names this provisioner made (``_made``), on any server.
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reynard-db")
        self._background_server = Server(server.url)
        self._ahead: dict[tuple[str, str], Future[tuple[str, URL]]] = {}
        self._drops: list[tuple[str, Future[None]]] = []
        self._made: set[str] = set()
        self._closed = False

    # -- which tree migrates which database -----------------------------------------------
    def tree(self, name: str) -> Database:
        """The tree a database is migrated with: a mirror's own, or with ``point`` its source's."""
        db = self.registry.get(name)
        if self.source == "point" and db.mirror_of:
            return self.registry.get(db.mirror_of)
        return db

    def manager(self, name: str, url: URL) -> MigrationManager:
        return MigrationManager(
            self.tree(name), url, quiet=True, url_envs=self.registry.url_envs(name)
        )

    # -- templates -----------------------------------------------------------------------
    def template(self, name: str, revision: str = "heads") -> tuple[str, tuple[str, ...]]:
        """The template of ``name`` at ``revision`` (built on first use): its name and heads."""
        key = (name, revision)
        if key in self._failed:  # a broken migration fails once, not once per test
            raise self._failed[key]
        if key not in self._templates:
            try:
                self._templates[key] = self._build_template(name, revision)
            except ReynardDBError as exc:
                self._failed[key] = exc
                raise
        return self._templates[key]

    def _build_template(self, name: str, revision: str) -> tuple[str, tuple[str, ...]]:
        tree = self.tree(name)
        digest = tree_digest(tree, revision, self.source)
        template = _pg_name(f"test_{TEMPLATE_MARK}_{name}_{digest}")
        manager = self.manager(name, self.server.database_url(template))
        if self.presence is not None:
            self.presence.hold(template)  # from now on no one prunes it under us
            lock = build_lock(self.server, template, self.run_id)
        else:
            path = self.lock_dir / f"{self.server.url.port}-{template}.lock"
            lock = file_lock(path, f"the build of template {template} ({name})")
        # Another worker or run may be building it: a long wait says who builds it.
        with lock:
            if not self.server.exists(template):
                self._migrate_into(name, manager, template, revision)
        if self.presence is not None:
            self.presence.mark_used(template)
        return template, _heads_of(manager, revision)

    def _migrate_into(
        self, name: str, manager: MigrationManager, template: str, revision: str
    ) -> None:
        """Migrate under a scratch name, then rename: a template that exists is complete."""
        scratch = _pg_name(f"{template}_building")
        if self.server.exists(scratch):  # left by a build that was killed; we hold the lock
            self.server.created.add(scratch)
            self.server.drop_database(scratch)
        url = self.server.create_database(scratch)
        builder = MigrationManager(
            manager.db, url, script=manager.script, quiet=True, url_envs=manager.url_envs
        )
        builder.upgrade(revision)
        self.server.rename_database(scratch, template)
        # A template outlives this process (other xdist workers and runs clone it):
        # an ephemeral server goes with it; elsewhere it is pruned when unused.
        self.server.created.discard(template)

    # -- test databases ------------------------------------------------------------------
    def clone(self, name: str, revision: str = "heads", *, purpose: str = "fresh") -> TestDatabase:
        """A new database cloned from the template of ``name`` at ``revision``.

        For ``fresh`` databases (one per test) the next clone is made ahead, in the
        background, while the test runs, and dropping happens there too: a test
        then waits for neither ``CREATE DATABASE`` nor ``DROP DATABASE``.
        """
        template, head = self.template(name, revision)
        if purpose != "fresh":
            return self._describe(name, *self._create(name, template, self.server, purpose), head)
        key = (name, revision)
        ahead = self._ahead.pop(key, None)
        new, url = ahead.result() if ahead else self._create(name, template, self.server)
        self._ahead[key] = self._background.submit(
            self._create, name, template, self._background_server
        )
        return self._describe(name, new, url, head)

    def empty(self, name: str, *, purpose: str = "empty") -> TestDatabase:
        """A new empty database (pytest-alembic migrates it itself)."""
        new = self.new_name(name, purpose)
        url = self.server.create_database(new)
        return self._describe(name, new, url, ())

    def drop(self, database: TestDatabase) -> None:
        """Drop a database handed out here (in the background; ``close`` waits)."""
        database.dispose()
        if database in self._owned:
            self._owned.remove(database)
        self._drop(database.name)

    def replace(self, database: TestDatabase, revision: str = "heads") -> None:
        """Clone ``database`` again from its template, under the same name.

        For a database a test committed into: every engine on its URL then sees
        the template's state again (its connections are ended by the drop).
        """
        template, _ = self.template(database.db.name, revision)
        database.dispose()
        self.server.drop_database(database.name)
        self.server.create_database(database.name, template=template, end_sessions=False)

    def new_name(self, name: str, purpose: str) -> str:
        new = _pg_name(f"test_{name}_{self.run_id}_{self.worker}_{purpose}{next(self._counter)}")
        self._made.add(new)
        return new

    def close(self) -> None:
        """Drop every database this provisioner made and still owns; wait for the drops.

        A drop that failed is reported here (on an existing server it would leak).
        """
        for database in list(self._owned):
            self.drop(database)
        for ahead in self._ahead.values():
            with suppress(Exception):
                self._drop(ahead.result()[0])
        self._ahead.clear()
        self._closed = True
        self._background.shutdown(wait=True)
        self._background_server.close()
        failed = [
            f"{name} ({future.exception()})"
            for name, future in self._drops
            if future.exception() is not None
        ]
        if failed:
            raise ServerError(f"could not drop {', '.join(failed)}")

    def _drop(self, name: str) -> None:
        if name not in self._made:
            raise ServerError(f"refusing to drop database {name!r}: not made by this run")
        if self._closed:
            self.server.created.add(name)
            self.server.drop_database(name)
            return
        future = self._background.submit(self._background_server.drop_database, name)
        self._drops.append((name, future))

    def _create(
        self, name: str, template: str, server: Server, purpose: str = "fresh"
    ) -> tuple[str, URL]:
        new = self.new_name(name, purpose)
        # Our templates have no sessions: skip ending them (a round trip per clone).
        return new, server.create_database(new, template=template, end_sessions=False)

    def _describe(self, name: str, pg_name: str, url: URL, head: tuple[str, ...]) -> TestDatabase:
        tree = self.tree(name)
        database = TestDatabase(
            name=pg_name, url=url, head=head, db=self.registry.get(name), tree=tree
        )
        self._owned.append(database)
        return database

    @contextmanager
    def guarded(self, name: str, url: URL) -> Iterator[None]:
        """Every URL variable the database's migrations could read points at ``url``
        (``Registry.url_envs``)."""
        with exported(self.registry.url_envs(name), url):
            yield


def tree_digest(tree: Database, revision: str, source: str) -> str:
    """A hash of everything that decides a template's content: revision files, env.py, target."""
    digest = hashlib.sha256(f"{revision}|{source}|{tree.name}".encode())
    base = tree.script_location
    files = [tree.script_location / "env.py"]
    for location in tree.version_locations:
        files.extend(sorted(revision_files(location)))
    for path in files:
        # Relative where possible: two checkouts of one tree share a reused template.
        shown = path.relative_to(base) if path.is_relative_to(base) else path
        digest.update(str(shown).encode())
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:12]


def _heads_of(manager: MigrationManager, revision: str) -> tuple[str, ...]:
    if revision in ("heads", "head"):
        return tuple(s.revision for s in manager.heads())
    return tuple(s.revision for s in manager.script.get_revisions(revision) if s is not None)


def _pg_name(name: str) -> str:
    """A database name PostgreSQL keeps as is: lower case, safe characters, ≤ 63 bytes."""
    clean = re.sub(r"[^a-z0-9_]", "_", name.lower())
    if len(clean) > 63:
        clean = clean[:54] + "_" + hashlib.sha1(clean.encode()).hexdigest()[:8]
    return clean
