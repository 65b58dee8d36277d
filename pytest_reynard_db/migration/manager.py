"""Migration verbs over one registered database, as in Alembic's ``command.py``.

``MigrationManager`` is what the CLI and the pytest plugin share: one public
method per verb, each a few lines over the tree (``tree``: the steps Alembic would
take), one ``env.py`` run (``env_run``) and the files Alembic writes
(``new_revisions``). It adds what a team with several databases needs around
them: the target URL resolved
once (and exported to the tree's ``url_env`` and ``sqlalchemy.url`` so that an
``env.py`` reading either can only reach it), a PostgreSQL advisory lock so
that two upgrades of one database do not interleave, and failures that name
the revision file instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TextIO

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.engine import URL

from ..foundation.errors import RevisionError, ReynardDBError
from ..foundation.filesystem import DEFAULT_LOCK_TIMEOUT
from ..foundation.registry import Database
from ..foundation.urls import mask_url, with_driver
from ..guard import GUARD, Target
from ..guard.migration import registered_targets
from ..guard.target import url_target
from .authoring import merge_heads, place
from .command_line import alembic_cmd_opts
from .env_run import (
    StepsFn,
    StepTracker,
    alembic_errors,
    exported,
    migration_failure,
    run_env,
    silenced,
    split_range,
)
from .new_revisions import write_merge, write_revision
from .target import connect, create_if_missing, migration_lock_held
from .tree import (
    check_target,
    current_heads,
    downgrade_steps,
    load_tree,
    stamp_steps,
    upgrade_steps,
    version_table_seen,
)

__all__ = ["MigrationManager", "StepsFn", "exported"]


class MigrationManager:
    """The migration verbs of one database, against one URL."""

    def __init__(
        self,
        db: Database,
        url: str | URL | None = None,
        *,
        stdout: TextIO | None = None,
        script: ScriptDirectory | None = None,
        quiet: bool = False,
        url_envs: Sequence[str] = (),
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        alembic_messages: bool = True,
        throwaway_only: bool = False,
        earlier: Sequence[URL] = (),
        x_arguments: Sequence[str] = (),
    ) -> None:
        """``stdout``: where Alembic's messages and ``--sql`` go (default: sys.stdout).
        ``script``: the tree, already loaded (``tree.load_tree``) and shared; default:
        loaded on first use.
        ``quiet``: leave the process's logging alone (see ``Database.alembic_config``).
        ``alembic_messages``: Alembic's own lines on stdout (``Generating ... done``);
        the CLI prints its own result line instead, unless ``-v``.
        ``url_envs``: variables exported to the target while migrating, besides the
        database's own ``url_env`` (a mirror's sources', ``Registry.url_envs``).
        ``lock_timeout``: seconds to wait for the migration lock before giving up.
        ``throwaway_only``: a check's manager: while it migrates, env.py may reach its
        database and nothing else (``guard.migration``).
        ``earlier``: the throw-away databases of the same check run before this one: an
        application that read its URL once, at import, during an earlier check, still
        migrates this database (they are redirected here, as the production URL is).
        ``x_arguments``: ``-x`` arguments for env.py (``context.get_x_argument()``)."""
        self.db = db
        self.lock_timeout = lock_timeout
        self.url_envs = list(dict.fromkeys([db.url_env, *url_envs]))
        self._url = url
        self.quiet = quiet
        self.alembic_messages = alembic_messages
        self.stdout = stdout if stdout is not None else sys.stdout
        self._script = script
        self.throwaway_only = throwaway_only
        self.earlier = tuple(earlier)
        self.x_arguments = tuple(x_arguments)
        self._registered: tuple[Target, ...] | None = None

    # -- what the verbs work on ----------------------------------------------------------
    @property
    def url(self) -> URL:
        """The target: the URL given, else the database's production URL."""
        if isinstance(self._url, URL):
            return with_driver(self._url)
        return self.db.production_url(self._url)

    @property
    def url_given(self) -> bool:
        """Whether this manager was aimed at a URL (else: the production URL)."""
        return self._url is not None

    def aimed_at(self, url: str | URL) -> MigrationManager:
        """A manager of the same database, tree and options, aimed at ``url``."""
        return MigrationManager(
            self.db,
            url,
            stdout=self.stdout,
            script=self._script,
            url_envs=self.url_envs,
            lock_timeout=self.lock_timeout,
            quiet=self.quiet,
            alembic_messages=self.alembic_messages,
            throwaway_only=self.throwaway_only,
            x_arguments=self.x_arguments,
        )

    @property
    def script(self) -> ScriptDirectory:
        """The tree, loaded and checked once (see ``tree.load_tree``)."""
        if self._script is None:
            self._script = load_tree(self.db)
        return self._script

    def config(
        self,
        connection: Connection | None = None,
        *,
        aimed: bool = True,
        command: Sequence[str] = ("upgrade", "heads"),
    ) -> Config:
        """An Alembic Config for this database's ini, aimed at ``self.url``; not ``aimed``:
        the ini's own ``sqlalchemy.url`` left as it is (writing a file needs no database,
        and ``alembic init``'s placeholder URL is no error there). ``command``: the
        ``alembic`` command this stands for, which env.py reads as ``config.cmd_opts``
        (``command_line``)."""
        url = self.url if aimed else None
        config = self.db.alembic_config(url=url, connection=connection)
        if self.quiet:
            silenced(config, self.db.ini)
        config.stdout = self.stdout
        config.output_buffer = self.stdout  # where --sql goes (Alembic's default: sys.stdout)
        # Alembic's ``messaging_opts`` read ``cmd_opts.quiet``
        config.cmd_opts = alembic_cmd_opts(
            command, self.x_arguments, ini=str(self.db.ini), quiet=not self.alembic_messages
        )
        return config

    # -- read-only verbs ------------------------------------------------------------------
    def heads(self) -> list[Script]:
        return _sorted(self.script.get_revisions("heads"))

    def history(self) -> list[Script]:
        """Every revision, newest first (as ``alembic history``)."""
        return list(self.script.walk_revisions())

    def current(self) -> tuple[str, ...]:
        """The revisions the database is at (empty at base), as ``alembic current`` reads
        them: from the version table ``env.py`` configures (mlflow's auth tree keeps
        ``alembic_version_auth``), so ``env.py`` runs once, taking no step and writing
        nothing; once it has run in this process, its table is read directly."""
        with self.connect() as connection:
            if version_table_seen(self.script):
                return tuple(sorted(current_heads(connection, self.script)))
            found: list[str] = []

            def read(heads: Any, _context: Any) -> list[Any]:
                found.extend(heads)
                return []

            self._migrate(
                read, None, sql=False, connection=connection, read_only=True, command=("current",)
            )
            return tuple(sorted(found))

    def resolve(self, target: str) -> None:
        """Check that ``target`` names revisions of this tree (relative steps are Alembic's)."""
        check_target(self.script, self.db, target)

    # -- verbs that change a database ------------------------------------------------------
    def upgrade(
        self, to: str = "heads", *, sql: bool = False, connection: Connection | None = None
    ) -> None:
        """Upgrade to ``to``; with ``sql``, print the SQL and touch nothing.

        With ``connection`` (already holding the lock, see ``locked``), run on it:
        a caller doing many steps then pays for one connection, not one a step.
        """
        self.resolve(to)
        start, end = split_range(to)
        self._migrate(
            lambda heads, _: upgrade_steps(self.script, end, heads),
            end,
            start=start,
            sql=sql,
            connection=connection,
            command=("upgrade", to, *_sql(sql)),
        )

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
        start, end = split_range(to)
        self._migrate(
            lambda heads, _: downgrade_steps(self.script, end, heads),
            end,
            start=start,
            sql=sql,
            connection=connection,
            command=("downgrade", to, *_sql(sql)),
        )

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
        start, targets = None, tuple(revisions)
        if sql and len(targets) == 1:  # stamp --sql FROM:TO, as Alembic's
            start, only = split_range(targets[0])
            targets = (only,)
        self._migrate(
            lambda heads, _: stamp_steps(self.script, targets, heads),
            targets,
            start=start,
            sql=sql,
            connection=connection,
            purge=purge,
            command=("stamp", *revisions, *_sql(sql), *(("--purge",) if purge else ())),
        )

    def walk(self, steps: StepsFn, *, connection: Connection) -> None:
        """One ``env.py`` run on ``connection`` whose steps (Alembic ``RevisionStep``s, up and
        down mixed) ``steps(heads, context)`` yields; failures are said as by ``upgrade``."""
        self._migrate(steps, "heads", sql=False, connection=connection)

    def setup(self) -> bool:
        """Create the database on its server if missing, then upgrade it to heads.

        Returns whether the database was created.
        """
        created = create_if_missing(self.db.name, self.url)
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
    ) -> Script | None:
        """Write a new revision file, autogenerated from the models unless ``empty``; None
        when autogenerate finds no change (nothing is written).

        Where it goes (see ``authoring.place``): after the only head (base on an empty
        tree); after the head of label ``branch``; as the first revision of a branch
        labelled ``new_branch``, from base or ``from_rev``; or after the head ``head``.
        Autogenerate compares the models with a throw-away database upgraded to heads,
        unless this manager was given a URL, which must then be at heads. An existing
        file is never overwritten and a file is never half-written
        (``new_revisions.safe_writes``): :class:`FileConflict`, and nothing is written.
        """
        where = place(
            self.script, self.db, branch=branch, new_branch=new_branch, from_rev=from_rev,
            head=head,
        )  # fmt: skip
        written = write_revision(self, message, where, empty=empty)
        if written is not None:
            self._script = None  # the tree changed
        return written

    def merge(self, revisions: Sequence[str] = (), *, message: str | None = None) -> Script:
        """Write a merge revision of ``revisions`` (heads), by default of the heads of the
        one branch that has several (see ``authoring.merge_heads``). No database is
        touched (as Alembic's ``merge``); the file is written as ``create``'s."""
        heads = merge_heads(self.script, self.db, revisions)
        written = write_merge(self, heads, message if message is not None else "merge heads")
        self._script = None  # the tree changed
        return written

    # -- plumbing ---------------------------------------------------------------------------
    def watched(self, *, sql: bool = False) -> AbstractContextManager[None]:
        """The guard told that env.py migrates this manager's URL (``sql``: nothing, and
        no connection at all, see ``Guard.offline``), that
        its own production URL goes there too, and, for a check, that nothing else may be
        reached (``guard.migration``). Call it outside ``exported``: the production URL is
        read from the variables as they were."""
        if self._registered is None:
            earlier = tuple(url_target(url) for url in self.earlier)
            self._registered = (*registered_targets(self.url_envs, self.db.ini_url()), *earlier)
        tree = (str(self.db.script_location), *map(str, self.db.version_locations))
        if sql:
            return GUARD.offline(tree=tree)
        return GUARD.migrating(self.url, own=self._registered, tree=tree, only=self.throwaway_only)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection to the target, with a clear error if it cannot be reached."""
        with connect(self.db.name, self.url, url_given=self.url_given) as connection:
            yield connection

    @contextmanager
    def locked(self) -> Iterator[Connection]:
        """A connection holding this database's migration lock (two upgrades take turns).

        A wait longer than 2 s is said on stderr with the holder; one longer than
        ``lock_timeout`` raises ``LockTimeout`` (see ``migration_lock``).
        """
        where = f"database {self.db.name!r} ({mask_url(self.url)})"
        with (
            self.connect() as connection,
            migration_lock_held(connection, where=where, timeout=self.lock_timeout),
        ):
            yield connection

    def _migrate(
        self,
        steps: StepsFn,
        destination: str | tuple[str, ...] | None,
        *,
        start: str | None = None,
        sql: bool,
        connection: Connection | None,
        purge: bool = False,
        read_only: bool = False,
        command: Sequence[str] = ("upgrade", "heads"),
    ) -> None:
        """One ``env.py`` run taking ``steps``, under the migration lock unless ``connection``
        (already holding it) or ``sql``; a failure names the step's file (``MigrationFailed``).
        ``read_only``: Alembic makes no version table (``current``'s run); ``command``: the
        ``alembic`` command it stands for (``config``)."""
        if connection is None and not sql:
            with self.locked() as locked:
                self._migrate(
                    steps,
                    destination,
                    start=start,
                    sql=False,
                    connection=locked,
                    purge=purge,
                    read_only=read_only,
                    command=command,
                )
            return
        tracker = StepTracker()
        options = {
            "destination": destination,
            "start": start,
            "sql": sql,
            "purge": purge,
            "read_only": read_only,
        }
        watched = self.watched(sql=sql)  # offline: nothing env.py may connect to
        with watched, exported(self.url_envs, self.url), tracker, alembic_errors(self.db):
            try:
                config = self.config(connection, command=command)
                self._run_env(steps, config, tracker, **options)
            except (ReynardDBError, CommandError, AlembicRevisionError):
                raise
            except Exception as exc:
                if connection is not None:
                    connection.rollback()
                raise migration_failure(self.db, tracker, exc, connection, self.script) from exc

    def _run_env(
        self, steps: StepsFn, config: Config, tracker: StepTracker, **options: Any
    ) -> None:
        """One ``env.py`` run on this manager's tree (see ``env_run.run_env``)."""
        run_env(self.db, self.script, config, steps, tracker, quiet=self.quiet, **options)


def _sorted(scripts: Any) -> list[Script]:
    return sorted((s for s in scripts if s is not None), key=lambda s: s.revision)


def _sql(sql: bool) -> tuple[str, ...]:
    return ("--sql",) if sql else ()
