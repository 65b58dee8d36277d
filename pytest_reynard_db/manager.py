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
from argparse import Namespace
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
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

from .authoring import merge_heads, place, safe_writes
from .errors import ConfigError, RevisionError, ReynardDBError, ServerError
from .failures import StepTracker, alembic_errors, migration_failure
from .guard import GUARD
from .logs import preserved_logging
from .migration_lock import release_migration_lock, take_migration_lock
from .postgres.waits import DEFAULT_LOCK_TIMEOUT
from .registry import Database
from .text import first_line, one_line, shown_path
from .tree import load_tree
from .urls import mask_url, with_driver

#: Alembic's migration function: ``(current heads, MigrationContext) -> steps to run``.
StepsFn = Callable[[tuple[str, ...], Any], Iterable[Any]]

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
        alembic_messages: bool = True,
        script: ScriptDirectory | None = None,
    ) -> None:
        """``quiet``: leave the process's logging alone (see ``Database.alembic_config``).
        ``alembic_messages``: Alembic's own lines on stdout (``Generating ... done``);
        the CLI prints its own result line instead, unless ``-v``.
        ``url_envs``: variables exported to the target while migrating, besides the
        database's own ``url_env`` (a mirror's sources', ``Registry.url_envs``).
        ``lock_timeout``: seconds to wait for the migration lock before giving up.
        ``script``: the tree, already loaded (``tree.load_tree``); by default loaded on use."""
        self.db = db
        self.lock_timeout = lock_timeout
        self.url_envs = list(dict.fromkeys([db.url_env, *url_envs]))
        self._url = url
        self.quiet = quiet
        self.alembic_messages = alembic_messages
        self.stdout = stdout if stdout is not None else sys.stdout
        self._script = script

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

    def config(self, connection: Connection | None = None, *, aimed: bool = True) -> Config:
        """An Alembic Config for this database's ini, aimed at ``self.url``; not ``aimed``:
        the ini's own ``sqlalchemy.url`` left as it is (writing a file needs no database,
        and ``alembic init``'s placeholder URL is no error there)."""
        url = self.url if aimed else None
        config = self.db.alembic_config(url=url, quiet=self.quiet, connection=connection)
        config.stdout = self.stdout
        config.output_buffer = self.stdout  # where --sql goes (Alembic's default: sys.stdout)
        if not self.alembic_messages:  # Alembic's ``messaging_opts`` read ``cmd_opts.quiet``
            config.cmd_opts = Namespace(quiet=True)
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

    def stamp(
        self,
        revisions: Sequence[str],
        *,
        sql: bool = False,
        purge: bool = False,
        connection: Connection | None = None,
    ) -> None:
        """Set the version table to ``revisions`` without running any migration (as
        Alembic's ``stamp``), under the migration lock; ``purge`` empties the table first
        (for a table naming revisions this tree does not have)."""
        for revision in revisions:
            self.resolve(revision)
        self._migrate("stamp", tuple(revisions), sql=sql, connection=connection, purge=purge)

    def walk(self, steps: StepsFn, *, connection: Connection) -> None:
        """One ``env.py`` run on ``connection`` whose steps (Alembic ``RevisionStep``s, up and
        down mixed) ``steps(heads, context)`` yields; failures are said as by ``upgrade``."""
        self._migrate("walk", "heads", sql=False, connection=connection, steps=steps)

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

    def create(
        self,
        message: str,
        *,
        branch: str | None = None,
        new_branch: str | None = None,
        from_rev: str | None = None,
        head: str | None = None,
        empty: bool = False,
    ) -> Script:
        """Write a new revision file, autogenerated from the models unless ``empty``.

        Where it goes (see ``authoring.place``): after the only head (base on an empty
        tree); after the head of label ``branch``; as the first revision of a branch
        labelled ``new_branch``, from base or ``from_rev``; or after the head ``head``.
        Autogenerate compares the models with a throw-away database upgraded to heads,
        unless this manager was given a URL, which must then be at heads. An existing
        file is never overwritten and a file is never half-written (``safe_writes``):
        :class:`FileConflict`, and nothing is written.
        """
        where = place(
            self.script, self.db, branch=branch, new_branch=new_branch, from_rev=from_rev,
            head=head,
        )  # fmt: skip
        options: dict[str, Any] = {
            "message": message,
            "head": where.head,
            "splice": where.splice,
            "branch_label": where.branch_label,
            "version_path": str(where.folder),
        }
        with alembic_errors(self.db), safe_writes(self.db):
            if empty:
                written = command.revision(self.config(aimed=self._url is not None), **options)
            else:
                with (
                    self._autogenerate_target() as manager,
                    manager.locked() as connection,
                    GUARD.migrating(manager.url),
                ):
                    written = command.revision(
                        manager.config(connection), autogenerate=True, **options
                    )
        return self._written(written)

    def merge(self, revisions: Sequence[str] = (), *, message: str | None = None) -> Script:
        """Write a merge revision of ``revisions`` (heads), by default of the heads of the
        one branch that has several (see ``authoring.merge_heads``). No database is
        touched (as Alembic's ``merge``); the file is written as ``create``'s."""
        heads = merge_heads(self.script, self.db, revisions)
        with alembic_errors(self.db), safe_writes(self.db):
            written = command.merge(
                self.config(aimed=self._url is not None),
                [h.revision for h in heads],
                message=message if message is not None else "merge heads",
            )
        return self._written(written)

    def _written(self, written: Any) -> Script:
        self._script = None  # the tree changed
        scripts = written if isinstance(written, list) else [written]
        if not scripts or scripts[0] is None:
            raise RevisionError(f"database {self.db.name!r}: Alembic wrote no revision")
        script: Script = scripts[0]
        return script

    @contextmanager
    def _autogenerate_target(self) -> Iterator[MigrationManager]:
        if self._url is not None:
            yield self
            return
        from .postgres import EphemeralServer

        with EphemeralServer.start() as server:
            url = server.create_database(f"test_autogenerate_{self.db.name}")
            scratch = MigrationManager(
                self.db,
                url,
                stdout=self.stdout,
                url_envs=self.url_envs,
                quiet=self.quiet,
                alembic_messages=self.alembic_messages,
            )
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
        self,
        direction: str,
        target: str | tuple[str, ...],
        *,
        sql: bool,
        connection: Connection | None,
        purge: bool = False,
        steps: StepsFn | None = None,
    ) -> None:
        if connection is None and not sql:
            with self.locked() as locked:
                self._migrate(direction, target, sql=False, connection=locked, purge=purge)
            return
        step = StepTracker()
        with exported(self.url_envs, self.url), step, alembic_errors(self.db):
            try:
                if sql:  # offline: nothing to connect to, nothing for the guard to watch
                    self._run_env(direction, target, self.config(), step, sql=True, purge=purge)
                else:
                    with GUARD.migrating(self.url):
                        self._run_env(
                            direction,
                            target,
                            self.config(connection),
                            step,
                            purge=purge,
                            steps=steps,
                        )
            except (ReynardDBError, CommandError, AlembicRevisionError):
                raise
            except Exception as exc:
                if connection is not None:
                    connection.rollback()
                raise migration_failure(self.db, step, exc, connection) from exc

    def _run_env(
        self,
        direction: str,
        target: str | tuple[str, ...],
        config: Config,
        tracker: StepTracker,
        *,
        sql: bool = False,
        purge: bool = False,
        steps: StepsFn | None = None,
    ) -> None:
        """What ``alembic.command.upgrade``/``downgrade``/``stamp`` do, on our already-loaded
        tree; ``tracker`` notes each step as Alembic takes it. ``steps``, when given, chooses
        the steps instead of ``direction`` and ``target`` (see ``walk``)."""
        script = self.script
        env_py = Path(script.dir) / "env.py"
        if not env_py.is_file():  # Alembic: ImportError "Can't find Python file", a traceback
            raise ConfigError(
                f"database {self.db.name!r}: {shown_path(env_py)}: no such file (the tree's "
                f"environment, in script_location of {shown_path(self.db.ini)})"
            )
        start = None
        if isinstance(target, str) and ":" in target:
            start, target = target.split(":", 1)
        elif isinstance(target, tuple) and sql and len(target) == 1 and ":" in target[0]:
            start, only = target[0].split(":", 1)  # stamp --sql FROM:TO, as Alembic's
            target = (only,)

        def chosen(revision: Any, context: Any) -> Any:
            if steps is not None:
                return tracker.tracked(steps(revision, context))
            if isinstance(target, tuple):  # stamp's revisions
                return tracker.tracked(script._stamp_revs(target, revision))
            if direction == "upgrade":
                return tracker.tracked(script._upgrade_revs(target, revision))
            return tracker.tracked(script._downgrade_revs(target, revision))

        with (
            EnvironmentContext(
                config,
                script,
                fn=chosen,
                as_sql=sql,
                starting_rev=start,
                destination_rev=target,
                purge=purge,
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


def _sorted(scripts: Any) -> list[Script]:
    return sorted((s for s in scripts if s is not None), key=lambda s: s.revision)
