"""Migration verbs over one registered database, as in Alembic's ``command.py``.

``MigrationManager`` is what the CLI and the pytest plugin share: one public
method per verb, each a few lines over Alembic's ``command`` functions. It adds
what a team with several databases needs around them: the target URL resolved
once (and exported to the tree's ``url_env`` and ``sqlalchemy.url`` so that an
``env.py`` reading either can only reach it), a PostgreSQL advisory lock so
that two upgrades of one database do not interleave, and failures that name
the revision file instead of a traceback.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from .errors import ConfigError, FileConflict, RevisionError, ReynardDBError, ServerError
from .failures import StepTracker, alembic_errors, migration_failure
from .guard import GUARD
from .logs import preserved_logging
from .migration_lock import release_migration_lock, take_migration_lock
from .postgres.waits import DEFAULT_LOCK_TIMEOUT
from .registry import Database
from .text import first_line, one_line, shown_path
from .tree import load_tree
from .urls import mask_url, with_driver

MAINTENANCE_DATABASE = "postgres"
RELATIVE = re.compile(r"[+-]\d+$")


class MigrationManager:
    """The migration verbs of one database, against one URL."""

    def __init__(
        self,
        db: Database,
        url: str | URL | None = None,
        *,
        stdout: TextIO | None = None,
        quiet: bool = False,
        url_envs: Sequence[str] = (),
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        """``quiet``: leave the process's logging alone (see ``Database.alembic_config``).
        ``url_envs``: variables exported to the target while migrating, besides the
        database's own ``url_env`` (a mirror's sources', ``Registry.url_envs``).
        ``lock_timeout``: seconds to wait for the migration lock before giving up."""
        self.db = db
        self.lock_timeout = lock_timeout
        self.url_envs = list(dict.fromkeys([db.url_env, *url_envs]))
        self._url = url
        self.quiet = quiet
        self.stdout = stdout if stdout is not None else sys.stdout
        self._script: ScriptDirectory | None = None

    # -- what the verbs work on ----------------------------------------------------------
    @property
    def url(self) -> URL:
        """The target: the URL given, else the database's production URL."""
        if isinstance(self._url, URL):
            return with_driver(self._url)
        return self.db.production_url(self._url)

    @property
    def script(self) -> ScriptDirectory:
        """The tree, loaded and checked once (see ``tree.load_tree``)."""
        if self._script is None:
            self._script = load_tree(self.db)
        return self._script

    def config(self, connection: Connection | None = None) -> Config:
        """An Alembic Config for this database's ini, aimed at ``self.url``."""
        config = self.db.alembic_config(url=self.url, quiet=self.quiet, connection=connection)
        config.stdout = self.stdout
        config.output_buffer = self.stdout  # where --sql goes (Alembic's default: sys.stdout)
        return config

    # -- read-only verbs ------------------------------------------------------------------
    def heads(self) -> list[Script]:
        return _sorted(self.script.get_revisions("heads"))

    def history(self) -> list[Script]:
        """Every revision, newest first (as ``alembic history``)."""
        return list(self.script.walk_revisions())

    def current(self) -> tuple[str, ...]:
        """The revisions the database is at (empty at base)."""
        from alembic.runtime.migration import MigrationContext

        with self.connect() as connection:
            return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))

    def resolve(self, target: str) -> None:
        """Check that ``target`` names revisions of this tree (relative steps are Alembic's)."""
        for part in target.split(":"):
            if not part or RELATIVE.search(part):
                continue
            try:
                self.script.get_revisions(part)
            except (AlembicRevisionError, CommandError) as exc:
                raise RevisionError(
                    f"database {self.db.name!r}: unknown revision {part!r} ({one_line(exc)})"
                ) from None

    # -- verbs that change a database ------------------------------------------------------
    def upgrade(
        self, to: str = "heads", *, sql: bool = False, connection: Connection | None = None
    ) -> None:
        """Upgrade to ``to``; with ``sql``, print the SQL and touch nothing.

        With ``connection`` (already holding the lock, see ``locked``), run on it:
        a caller doing many steps then pays for one connection, not one a step.
        """
        self.resolve(to)
        self._migrate("upgrade", to, sql=sql, connection=connection)

    def downgrade(
        self, to: str, *, sql: bool = False, connection: Connection | None = None
    ) -> None:
        """Downgrade to ``to``; with ``sql`` it takes ``FROM:TO`` and prints the SQL."""
        self.resolve(to)
        if sql and ":" not in to:
            raise RevisionError(
                f"database {self.db.name!r}: downgrade --sql needs --to FROM:TO "
                "(there is no database to read the current revision from)"
            )
        self._migrate("downgrade", to, sql=sql, connection=connection)

    def setup(self) -> bool:
        """Create the database on its server if missing, then upgrade it to heads.

        Returns whether the database was created.
        """
        url = self.url
        if not url.database:
            raise RevisionError(f"database {self.db.name!r}: the URL names no database")
        from .postgres import Server

        server = Server(url.set(database=MAINTENANCE_DATABASE))
        try:
            created = False
            if not server.exists(url.database):
                try:
                    server.create_database(url.database)
                    created = True
                except ServerError:
                    # Another `setup` created it between our look and our CREATE
                    # (PostgreSQL then says "duplicate key"): it is made, go on.
                    if not server.exists(url.database):
                        raise
        finally:
            server.close()
        self.upgrade("heads")
        return created

    def create(self, message: str, *, branch: str | None = None, empty: bool = False) -> Script:
        """Write a new revision file, autogenerated from the models unless ``empty``.

        On a tree with several heads ``branch`` (a branch label) is required; the
        file goes into the folder of that branch's head. Autogenerate compares the
        models with a throw-away database upgraded to heads, unless this manager
        was given a URL, which must then be at heads. An existing file is never
        overwritten (an ini ``file_template`` without ``%(rev)s`` can name one):
        :class:`FileConflict`, and nothing is written.
        """
        head, folder = self._new_revision_place(branch)
        options: dict[str, Any] = {"message": message, "head": head, "version_path": folder}
        with alembic_errors(self.db), never_overwrite(self.db):
            if empty:
                written = command.revision(self.config(), **options)
            else:
                with (
                    self._autogenerate_target() as manager,
                    manager.locked() as connection,
                    GUARD.migrating(manager.url),
                ):
                    written = command.revision(
                        manager.config(connection), autogenerate=True, **options
                    )
        self._script = None  # the tree changed
        scripts = written if isinstance(written, list) else [written]
        if not scripts or scripts[0] is None:
            raise RevisionError(f"database {self.db.name!r}: Alembic wrote no revision")
        return scripts[0]

    def _new_revision_place(self, branch: str | None) -> tuple[str, str]:
        heads = self.heads()
        if branch is not None:
            labels = sorted({label for s in self.history() for label in s.branch_labels})
            if branch not in labels:
                raise RevisionError(
                    f"database {self.db.name!r}: no branch labelled {branch!r} "
                    f"(labels: {', '.join(labels) or 'none'})"
                )
            # Alembic's ``label@head`` on a forked branch is a MultipleHeads traceback.
            on_branch = [h for h in heads if branch in h.branch_labels]
            if len(on_branch) > 1:
                listed = ", ".join(f"{h.revision} ({shown_path(h.path)})" for h in on_branch)
                raise RevisionError(
                    f"database {self.db.name!r}: branch {branch!r} has {len(on_branch)} heads: "
                    f"{listed}; merge them first (alembic merge), then create"
                )
            found = _sorted(self.script.get_revisions(f"{branch}@head"))
            return f"{branch}@head", str(Path(found[0].path).parent)
        if len(heads) > 1:
            listed = ", ".join(
                f"{h.revision} ({', '.join(sorted(h.branch_labels)) or 'no label'})" for h in heads
            )
            raise RevisionError(
                f"database {self.db.name!r} has {len(heads)} heads: {listed}; pass --branch LABEL"
            )
        folder = Path(heads[0].path).parent if heads else self.db.version_locations[0]
        return "head", str(folder)

    @contextmanager
    def _autogenerate_target(self) -> Iterator[MigrationManager]:
        if self._url is not None:
            yield self
            return
        from .postgres import EphemeralServer

        with EphemeralServer.start() as server:
            url = server.create_database(f"test_autogenerate_{self.db.name}")
            scratch = MigrationManager(self.db, url, stdout=self.stdout, url_envs=self.url_envs)
            scratch._script = self._script
            scratch.upgrade("heads")
            yield scratch

    # -- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection to the target, with a clear error if it cannot be reached."""
        # The application_name is what a waiting migration shows of the lock's holder.
        connect_args = {"connect_timeout": 10, "application_name": f"reynard-db {self.db.name}"}
        engine = create_engine(self.url, poolclass=NullPool, connect_args=connect_args)
        try:
            try:
                connection = engine.connect()
            except OperationalError as exc:
                raise ServerError(
                    f"database {self.db.name!r}: cannot connect to {mask_url(self.url)}: "
                    f"{first_line(exc.orig)}"
                ) from None
            with connection:
                yield connection
        finally:
            engine.dispose()

    @contextmanager
    def locked(self) -> Iterator[Connection]:
        """A connection holding this database's migration lock (two upgrades take turns).

        A wait longer than 2 s is said on stderr with the holder; one longer than
        ``lock_timeout`` raises ``LockTimeout`` (see ``migration_lock``).
        """
        with self.connect() as connection:
            where = f"database {self.db.name!r} ({mask_url(self.url)})"
            take_migration_lock(connection, where=where, timeout=self.lock_timeout)
            try:
                yield connection
            finally:
                if not connection.closed and not connection.invalidated:
                    release_migration_lock(connection)

    def _migrate(
        self, direction: str, target: str, *, sql: bool, connection: Connection | None
    ) -> None:
        if connection is None and not sql:
            with self.locked() as locked:
                self._migrate(direction, target, sql=False, connection=locked)
            return
        step = StepTracker()
        with exported(self.url_envs, self.url), step, alembic_errors(self.db):
            try:
                if sql:  # offline: nothing to connect to, nothing for the guard to watch
                    self._run_env(direction, target, self.config(), step, sql=True)
                else:
                    with GUARD.migrating(self.url):
                        self._run_env(direction, target, self.config(connection), step)
            except (ReynardDBError, CommandError, AlembicRevisionError):
                raise
            except Exception as exc:
                if connection is not None:
                    connection.rollback()
                raise migration_failure(self.db, step, exc, connection) from exc

    def _run_env(
        self,
        direction: str,
        target: str,
        config: Config,
        tracker: StepTracker,
        *,
        sql: bool = False,
    ) -> None:
        """What ``alembic.command.upgrade``/``downgrade`` do, on our already-loaded tree;
        ``tracker`` notes each step as Alembic takes it."""
        script = self.script
        env_py = Path(script.dir) / "env.py"
        if not env_py.is_file():  # Alembic: ImportError "Can't find Python file", a traceback
            raise ConfigError(
                f"database {self.db.name!r}: {shown_path(env_py)}: no such file (the tree's "
                f"environment, in script_location of {shown_path(self.db.ini)})"
            )
        start = None
        if ":" in target:
            start, target = target.split(":", 1)

        def steps(revision: Any, context: Any) -> Any:
            if direction == "upgrade":
                return tracker.tracked(script._upgrade_revs(target, revision))
            return tracker.tracked(script._downgrade_revs(target, revision))

        with (
            EnvironmentContext(
                config, script, fn=steps, as_sql=sql, starting_rev=start, destination_rev=target
            ),
            preserved_logging() if self.quiet else nullcontext(),
        ):
            script.run_env()


@contextmanager
def exported(names: Sequence[str], url: URL) -> Iterator[None]:
    """Each ``$name`` points at ``url`` while migrations run, whatever the shell had set."""
    previous = {name: os.environ.get(name) for name in names}
    rendered = url.render_as_string(hide_password=False)
    os.environ.update(dict.fromkeys(names, rendered))
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def never_overwrite(db: Database) -> Iterator[None]:
    """Alembic writes a new revision over any file at its name: while this is active, a
    name that is taken raises :class:`FileConflict` instead, before anything is written.

    Alembic has no option for it, so its one place that names the file
    (``ScriptDirectory._rev_path``) is wrapped for the duration.
    """
    original = ScriptDirectory._rev_path

    def free_path(
        script: ScriptDirectory,
        folder: str | os.PathLike[str],
        rev_id: str,
        message: str | None,
        create_date: datetime,
    ) -> Path:
        path = original(script, folder, rev_id, message, create_date)
        if path.exists():
            template = script.file_template
            why = (
                ""
                if "%(rev)" in template
                else f" (the ini's file_template {template!r} has no %(rev)s)"
            )
            raise FileConflict(
                f"database {db.name!r}: {shown_path(path)} already exists{why}; nothing"
                " written: use another message, or put %%(rev)s in file_template"
            )
        return path

    ScriptDirectory._rev_path = free_path  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        ScriptDirectory._rev_path = original  # type: ignore[method-assign]


def _sorted(scripts: Any) -> list[Script]:
    return sorted((s for s in scripts if s is not None), key=lambda s: s.revision)
