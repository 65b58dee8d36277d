"""Migrated template databases and the test databases cloned from them.

A plain class, usable without pytest: ``Provisioner`` migrates each database
once into a template and clones it for every test that needs a database of its
own. Cloning a template costs a directory copy; migrating costs every revision.
Templates are named by the digest of their tree. On a server of this machine a
file lock makes xdist workers and concurrent runs build each once; on a server
shared with other machines (``presence``) the lock is an advisory lock on the
server itself, and the run holds each template it uses (``postgres.shared``).

A ``Seed`` (the plugin's ``pytest_reynard_db_seed`` hook) fills each template at heads
once, after migrating and before it is renamed into place: every clone has its data,
and the hash of its code is part of the template's name (a changed seed, a new template).

Each build is said on the logger ``pytest_reynard_db.provisioning.provision`` (INFO), with the
record attributes ``template``, ``database`` and ``revision``.

Clones are made one ahead, and dropped behind, on two background threads (``ClonePool``,
here since the clone verb reads in one place: 437 lines). A test that gets a database
of its own (``reynard_db_fresh``) should wait for
neither ``CREATE DATABASE`` nor ``DROP DATABASE``. ``ClonePool`` hands out the clone
it made while the previous test ran, starts the next one, and drops in the
background; ``close`` waits for all of it and says which drops failed. Clones and
drops have a thread each (while a test runs, the next clone and the last test's drop
take the longer of the two, not their sum: with reflinks both are a few ms, and a
short test would otherwise wait for the rest), each with an admin connection of its
own (a ``Server`` on the same URL): no connection is shared across threads.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, Protocol

from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from ..foundation.errors import ReynardDBError, ServerError
from ..foundation.filesystem import file_lock
from ..foundation.registry import Database, Registry
from ..migration.env_run import exported, silenced
from ..postgres import Server
from ..postgres.server import building_name, run_database, template_name
from .resolve import Resolved, Source, heads_at, project_identity, tree_digest

#: What a database is for; part of its name (``postgres.server.run_database``).
Purpose = Literal["session", "fresh", "rev", "empty", "alembic"]

log = logging.getLogger(__name__)


class Presence(Protocol):
    """A run's session on a server other runs use (``shared.RunPresence``, or the one its
    agent holds: ``agent.AgentPresence``)."""

    def hold(self, template: str) -> None: ...

    def mark_used(self, template: str, *, project: str, tree: str) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Seed:
    """What fills a template at heads after migrating: ``fill(name, connection)`` (registry
    name; a connection whose transaction is committed after it), and ``digest``, a hash
    of its code that goes into the template's name."""

    fill: Callable[[str, Connection], None]
    digest: str


@dataclass
class TestDatabase:
    """One database for tests.

    ``name``: its name on the PostgreSQL server; ``url``, ``engine``: how to reach it;
    ``head``: the revisions it was migrated to. ``entry``: the registry's entry it was
    made for (``entry.name`` is the name in ``pyproject.toml``, as ``--reynard-db``
    takes it); ``tree``: the entry whose tree migrated it (a mirror's source, with
    ``--reynard-db-source=point``). ``db`` is the older name of ``entry``, kept for
    code written against it.
    """

    __test__ = False  # not a test class, whatever pytest's name matching thinks

    name: str
    url: URL
    head: tuple[str, ...]
    entry: Database
    tree: Database = field(repr=False)
    _engine: Engine | None = field(default=None, repr=False)
    _config: Config | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        """One short line (it shows in every failure that involves the fixture)."""
        heads = ",".join(self.head) or "base"
        return f"<TestDatabase {self.entry.name}: {self.name} at {heads}>"

    @property
    def db(self) -> Database:
        """Deprecated: ``entry`` (the registry entry; not the PostgreSQL database)."""
        return self.entry

    @property
    def config(self) -> Config:
        """The Alembic Config of the tree it was migrated with, aimed at it (built on use)."""
        if self._config is None:
            self._config = silenced(self.tree.alembic_config(url=self.url), self.tree.ini)
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
        source: Source = "copy",
        presence: Presence | None = None,
        lock_dir: Path,
        seed: Seed | None = None,
        heads_cache: Path | None = None,
    ) -> None:
        """``presence``: this run's session on a server other runs (other machines)
        use too: template builds are then serialized on the server, and each
        template used is held until the run ends. Without it, a file lock in
        ``lock_dir`` serializes builds on this machine. ``seed``: fills each template
        at heads (a template at another revision is left as migrated: the seed is
        written for the heads' schema). ``heads_cache``: a folder where each template's
        heads are remembered by its tree's digest (``resolve.heads_at``)."""
        self.registry = registry
        self.server = server
        self.run_id = run_id
        self.worker = worker
        self.source: Source = source
        self.presence = presence
        self.lock_dir = lock_dir
        self.seed = seed
        self.heads_cache = heads_cache
        self._resolved: dict[str, Resolved] = {}
        self._templates: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
        self._counter = itertools.count(1)
        self._owned: list[TestDatabase] = []
        self._sessions: dict[str, TestDatabase] = {}
        self._failed: dict[tuple[str, str], ReynardDBError] = {}
        # Clones made ahead, and drops: the pool only ever drops names this provisioner
        # made (``_made``), on any server.
        self._pool = ClonePool(server)
        self._made: set[str] = set()

    # -- which tree migrates which database -----------------------------------------------
    def resolve(self, name: str) -> Resolved:
        """Registry name ``name``, looked up once: its entry, tree and URL variables."""
        if name not in self._resolved:
            self._resolved[name] = Resolved.of(self.registry, name, self.source)
        return self._resolved[name]

    def tree(self, name: str) -> Database:
        """The tree a database is migrated with: a mirror's own, or with ``point`` its source's."""
        return self.resolve(name).tree

    # -- templates -----------------------------------------------------------------------
    def template(self, name: str, revision: str = "heads") -> tuple[str, tuple[str, ...]]:
        """The template of ``name`` at ``revision`` (built on first use): its name and heads."""
        key = (name, revision)
        if key in self._failed:  # a broken migration fails once, not once per test
            raise self._failed[key]
        if key not in self._templates:
            try:
                self._templates[key] = self._build_template(self.resolve(name), revision)
            except ReynardDBError as exc:
                self._failed[key] = exc
                raise
        return self._templates[key]

    def _build_template(self, target: Resolved, revision: str) -> tuple[str, tuple[str, ...]]:
        name = target.entry.name
        digest = tree_digest(target.tree, revision, self.source)
        template = template_name(name, self._digest(digest, revision))
        if self.presence is not None:
            self.presence.hold(template)  # from now on no one prunes it under us
        # A template that exists is complete (built under a scratch name, then renamed):
        # no lock to take, nor its session to open. Else another worker or run may be
        # building it: a long wait says who builds it.
        if not self.server.exists(template):
            with self._build_lock(template, name):
                if not self.server.exists(template):
                    self._migrate_into(target, template, revision)
                    log.info(
                        "built template %s (%s at %s)",
                        template,
                        name,
                        revision,
                        extra={"template": template, "database": name, "revision": revision},
                    )
        if self.presence is not None:  # whose it is, and of which tree at any revision
            at_heads = digest if revision == "heads" else None  # hashed once
            self.presence.mark_used(
                template,
                project=project_identity(self.registry),
                tree=at_heads or tree_digest(target.tree, "heads", self.source),
            )
        return template, heads_at(target, revision, digest, self.heads_cache)

    def _build_lock(self, template: str, name: str) -> AbstractContextManager[None]:
        """Who builds ``template``: on a server others use, a lock on the server (its
        presence's), else a file lock on this machine."""
        if self.presence is not None:
            from ..postgres.shared import build_lock  # psycopg: a build connects anyway

            return build_lock(self.server, template, self.run_id)
        path = self.lock_dir / f"{self.server.url.port}-{template}.lock"
        return file_lock(path, f"the build of template {template} ({name})", remove=True)

    def _seed_at(self, revision: str) -> Seed | None:
        """The seed, for a template at heads only."""
        return self.seed if revision in ("heads", "head") else None

    def _digest(self, digest: str, revision: str) -> str:
        """The tree's ``digest``, and the seed's where it fills this template: a seeded
        template and an unseeded one are two templates."""
        seed = self._seed_at(revision)
        if seed is None:
            return digest
        return hashlib.sha256(f"{digest}|seed {seed.digest}".encode()).hexdigest()[:12]

    def _migrate_into(self, target: Resolved, template: str, revision: str) -> None:
        """Migrate (and seed) under a scratch name, then rename: a template that exists
        is complete."""
        scratch = building_name(template)
        if self.server.exists(scratch):  # left by a build that was killed; we hold the lock
            self.server.adopt(scratch)
            self.server.drop_database(scratch)
        url = self.server.create_database(scratch)
        target.manager(url).upgrade(revision)
        seed = self._seed_at(revision)
        if seed is not None:
            _fill(seed, target, url)
        self.server.rename_database(scratch, template)
        # A template outlives this process (other xdist workers and runs clone it):
        # an ephemeral server goes with it; elsewhere it is pruned when unused.
        self.server.disown(template)

    # -- test databases ------------------------------------------------------------------
    def clone(
        self, name: str, revision: str = "heads", *, purpose: Purpose = "fresh"
    ) -> TestDatabase:
        """A new database cloned from the template of ``name`` at ``revision``.

        For ``fresh`` databases (one per test) the next clone is made ahead, in the
        background, while the test runs, and dropping happens there too
        (``ClonePool``): a test then waits for neither ``CREATE DATABASE`` nor
        ``DROP DATABASE``.
        """
        target = self.resolve(name)
        template, head = self.template(name, revision)
        if purpose == "fresh":
            make = partial(self._create, target, template, purpose="fresh")
            new, url = self._pool.take((name, revision), make)
        else:
            new, url = self._create(target, template, self.server, purpose=purpose)
        return self._describe(target, new, url, head)

    def session_database(self, name: str) -> TestDatabase:
        """The session database of ``name``: cloned on first use, then the same one for
        every test that asks for ``name`` (alone or with others), dropped by ``close``."""
        if name not in self._sessions:
            self._sessions[name] = self.clone(name, purpose="session")
        return self._sessions[name]

    def empty(self, name: str, *, purpose: Purpose = "empty") -> TestDatabase:
        """A new empty database (pytest-alembic migrates it itself)."""
        target = self.resolve(name)
        new = self.new_name(name, purpose)
        return self._describe(target, new, self.server.create_database(new), ())

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
        template, _ = self.template(database.entry.name, revision)
        database.dispose()
        self.server.drop_database(database.name)
        self.server.create_database(database.name, template=template, end_sessions=False)

    def new_name(self, name: str, purpose: Purpose) -> str:
        new = run_database(name, self.run_id, self.worker, purpose, next(self._counter))
        self._made.add(new)
        return new

    def close(self, *, drop: bool = True) -> None:
        """Drop every database this provisioner made and still owns; wait for the drops.

        A drop that failed is reported here (on an existing server it would leak).
        ``drop`` False: the server goes next with every database on it (the run's own):
        connections closed, nothing dropped (each drop was a round trip for nothing).
        """
        self._sessions.clear()
        if not drop:
            for database in self._owned:
                database.dispose()
            self._pool.close(drop=False)
            return
        failed: list[str] = []
        try:  # the clones made ahead dropped, every drop in the background waited for
            self._pool.close()
        except ServerError as exc:
            failed.append(str(exc))
        # Then the rest, on the admin connection already open: the drops' own connection
        # would be opened for these alone (a warm run with one session database).
        for database in list(self._owned):
            try:
                self.drop(database)
            except ServerError as exc:
                failed.append(f"could not drop {database.name} ({exc})")
        if failed:
            raise ServerError("; ".join(failed))

    def _drop(self, name: str) -> None:
        if name not in self._made:
            raise ServerError(f"refusing to drop database {name!r}: not made by this run")
        self._pool.drop(name)

    def _create(
        self, target: Resolved, template: str, server: Server, *, purpose: Purpose
    ) -> tuple[str, URL]:
        new = self.new_name(target.entry.name, purpose)
        # Our templates have no sessions: skip ending them (a round trip per clone).
        return new, server.create_database(new, template=template, end_sessions=False)

    def _describe(
        self, target: Resolved, pg_name: str, url: URL, head: tuple[str, ...]
    ) -> TestDatabase:
        database = TestDatabase(
            name=pg_name, url=url, head=head, entry=target.entry, tree=target.tree
        )
        self._owned.append(database)
        return database

    @contextmanager
    def guarded(self, name: str, url: URL) -> Iterator[None]:
        """Every URL variable the database's migrations could read points at ``url``
        (``Registry.url_envs``)."""
        with exported(self.resolve(name).url_envs, url):
            yield


def _fill(seed: Seed, target: Resolved, url: URL) -> None:
    """Run the seed on the migrated scratch database, committed after it returns (it may
    commit as it goes, as SQLAlchemy 2 connections do); a seed that reads the
    application's URL variables finds the scratch database there too."""
    engine = create_engine(url, poolclass=NullPool)  # nothing left connected: it is renamed
    try:
        with exported(target.url_envs, url), engine.connect() as connection:
            seed.fill(target.entry.name, connection)
            connection.commit()
    finally:
        engine.dispose()


# -- clone_pool --------------------------------------------------------------------------

#: Makes one clone on the server given: its name and URL.
MakeClone = Callable[[Server], tuple[str, URL]]


class ClonePool:
    """One clone kept ready per key, and background drops, for databases on ``server``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reynard-db")
        self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reynard-db-drop")
        # Guarded as ``server`` is: on a shared server its clones are marked as a run's too.
        self._background = server.sibling()
        self._dropping = server.sibling()
        self._ahead: dict[Hashable, Future[tuple[str, URL]]] = {}
        self._drops: list[tuple[str, Future[None]]] = []
        self._closed = False

    def take(self, key: Hashable, make: MakeClone) -> tuple[str, URL]:
        """The clone made ahead for ``key`` (else one made now), and the next one started.

        ``make`` must make the same kind of clone each time for one ``key``.
        """
        ahead = self._ahead.pop(key, None)
        made = ahead.result() if ahead else make(self.server)
        self._ahead[key] = self._thread.submit(make, self._background)
        return made

    def drop(self, name: str) -> None:
        """Drop ``name`` in the background (now, once closed). The caller checks it is
        one of its own: the pool drops what it is told to."""
        if self._closed:
            self.server.adopt(name)  # it may have been made on the background connection
            self.server.drop_database(name)
            return
        self._drops.append((name, self._dropper.submit(self._drop_behind, name)))

    def _drop_behind(self, name: str) -> None:
        """On the drops' connection, which on an existing server drops only what it
        created: every name (made by the foreground or the clones' thread) is adopted."""
        self._dropping.adopt(name)
        self._dropping.drop_database(name)

    def close(self, *, drop: bool = True) -> None:
        """Drop the clones made ahead (``drop``), wait for every drop; a failed one is a
        ``ServerError`` (on an existing server it would leak)."""
        for ahead in self._ahead.values():
            with suppress(Exception):  # a clone that failed to be made has nothing to drop
                name = ahead.result()[0]
                if drop:
                    self.drop(name)
        self._ahead.clear()
        self._closed = True
        self._thread.shutdown(wait=True)
        self._dropper.shutdown(wait=True)
        self._background.close()
        self._dropping.close()
        failed = [
            f"{name} ({future.exception()})"
            for name, future in self._drops
            if future.exception() is not None
        ]
        if failed:
            raise ServerError(f"could not drop {', '.join(failed)}")
