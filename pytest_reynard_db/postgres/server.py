"""Servers as the rest of the package sees them: create, clone and drop databases.

``Server`` talks to any PostgreSQL server through one admin connection (kept open:
a clone or a drop then costs one round trip, not a connection set-up).
``EphemeralServer`` also owns the process; ``ExistingServer`` is a server someone
else runs, where we create only ``test_`` databases and drop only our own.

Also here, the names of the databases the harness makes, and how it knows them again.
PostgreSQL keeps the first 63 bytes of an identifier and drops the rest without a
word: two long names would then be one database. Every name made here goes through
``pg_name``, the one rule for it. The names:

- a run's database: ``test_<db>_<run id>_<worker>_<purpose><n>`` (``run_database``;
  ``run_of`` reads the run back, to drop a dead run's databases);
- a template: ``test_tpl_<db>_<digest>`` (``template_name``), built under
  ``<template>_building`` (``building_name``) and renamed once complete;
- a check's scratch database: ``test_check_<db>_<purpose>_[<run id>_]<random>``
  (``scratch_name``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL

from ..foundation.errors import ServerError
from ..foundation.urls import admin_url, first_line, mask_url
from ..guard import GUARD
from .binaries import Binaries
from .executor import EphemeralPostgres, reusable_server, run_owners, run_record

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

# psycopg is imported where a connection is made, not with this module: a warm run whose
# admin work is done by its agent (``agent``) never imports it unless a test connects.

CONNECT_TIMEOUT = 10


class Server:
    """A PostgreSQL server reached through an admin URL."""

    def __init__(self, url: str | URL, *, guarded: bool = False) -> None:
        """``url``: the admin URL; its database is the maintenance database. Making a
        ``Server`` allows nothing (``setup`` makes one for production): the harness's
        own servers are allowed where they are chosen (``ExistingServer``, ``EphemeralServer``)."""
        self.url: URL = admin_url(url, origin="server URL")
        self.guarded = guarded
        #: Whether a connection ever succeeded (an unreachable server has nothing to clean).
        self.reached = False
        self._created: set[str] = set()
        #: Each template's own settings (``_carry_settings``), read once.
        self._template_settings: dict[str, list[str]] = {}
        self._admin: psycopg.Connection[Any] | None = None
        self._lock = threading.RLock()
        self._version: int | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {mask_url(self.url)}>"

    # -- connections ---------------------------------------------------------------
    def connect(self, database: str | None = None) -> psycopg.Connection[Any]:
        """A new autocommit psycopg connection (a clear ``ServerError`` if unreachable)."""
        import psycopg

        url = self.url if database is None else self.url.set(database=database)
        try:
            connection = psycopg.connect(**connect_args(url), autocommit=True)
        except psycopg.Error as exc:
            raise ServerError(f"cannot connect to {mask_url(url)}: {first_line(exc)}") from None
        self.reached = True
        return connection

    @contextmanager
    def admin(self) -> Iterator[psycopg.Connection[Any]]:
        """The admin connection; a database error in the block is one ``ServerError``
        (a role without CREATEDB, a server that went away: a line, not a traceback)."""
        import psycopg

        with self._lock:
            if self._admin is None or self._admin.closed:
                self._admin = self.connect()
            try:
                yield self._admin
            except psycopg.Error as exc:
                raise ServerError(f"{mask_url(self.url)}: {first_line(exc)}") from None

    def close(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    @property
    def version(self) -> int:
        if self._version is None:
            with self.admin() as conn:
                self._version = int(conn.info.server_version) // 10000
        return self._version

    def database_url(self, name: str) -> URL:
        return self.url.set(database=name)

    def sibling(self) -> Server:
        """Another ``Server`` on this one's URL, with an admin connection of its own (for a
        thread), guarded as this one is."""
        return Server(self.url, guarded=self.guarded)

    # -- which databases are ours ---------------------------------------------------------
    @property
    def created(self) -> frozenset[str]:
        """The databases ours to drop: created here, or adopted (a guarded server drops no
        other)."""
        return frozenset(self._created)

    def adopt(self, name: str) -> None:
        """Count ``name`` as ours to drop though this object did not create it: a dead
        run's database, a template no run holds, a build a killed run left, a clone made
        on another connection of this run."""
        self._created.add(name)

    def disown(self, name: str) -> None:
        """Let ``name`` outlive us (``ExistingServer.stop`` leaves it): a template other
        workers and runs clone."""
        self._created.discard(name)

    # -- databases ----------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        with self.admin() as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            return row is not None

    def create_database(
        self, name: str, template: str | None = None, *, end_sessions: bool = True
    ) -> URL:
        """Create ``name`` (a copy of ``template`` if given; sessions on the template
        are ended first) and return its URL."""
        if self.guarded and not name.startswith(TEST_PREFIX):
            raise ServerError(
                f"refusing to create database {name!r} on {mask_url(self.url)}: "
                f"on an existing server only {TEST_PREFIX}* databases are created"
            )
        self._make(name, template, end_sessions=end_sessions)
        run = run_of(name)
        if self.guarded and run is not None:
            # On a server others use, a dead run's databases are dropped by the next
            # run: only those marked so, never someone's database of a similar name.
            from psycopg import sql

            with self.admin() as conn:
                conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(name), sql.Literal(run_comment(run))
                    )
                )
        GUARD.allow_database(self.url, name)  # ours once made: a name someone else has is not
        self._created.add(name)
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending its connections first; a missing one is not an error."""
        if self.guarded and name not in self._created:
            raise ServerError(
                f"refusing to drop database {name!r} on {mask_url(self.url)}: "
                "this run did not create it"
            )
        self._remove(name)
        self._created.discard(name)

    def drop_run(self, run_id: str) -> list[str]:
        """Drop every ``test_*`` database whose name carries ``run_id`` (this run's own,
        whichever worker or check child created it)."""
        with self.admin() as conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s",
                    (f"{like_literal(TEST_PREFIX)}%{like_literal(f'_{run_id}_')}%",),
                )
            ]
        for name in names:
            self.adopt(name)
            self.drop_database(name)
        return names

    def rename_database(self, old: str, new: str) -> None:
        """Rename ``old`` (no one may be connected to it) to ``new``."""
        self._rename(old, new)
        GUARD.allow_database(self.url, new)
        if old in self._created:
            self._created.discard(old)
            self._created.add(new)

    # -- the statements (what a ``Server`` whose agent makes them overrides) ---------------
    def _make(self, name: str, template: str | None, *, end_sessions: bool) -> None:
        """``CREATE DATABASE name [TEMPLATE template]``, cheapest strategy."""
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        if self.version >= 15:
            # WAL_LOG (the default since 15) writes the whole template to WAL;
            # FILE_COPY is a checkpoint and a directory copy: far cheaper here.
            statement += sql.SQL(" STRATEGY FILE_COPY")
        self._execute_with_retry(statement, template, end_sessions=end_sessions)
        if template is not None:
            self._carry_settings(template, name)

    def _carry_settings(self, template: str, name: str) -> None:
        """The template's own ``ALTER DATABASE ... SET`` defaults, which ``CREATE DATABASE``
        does not copy (``database_settings``); read once per template."""
        from .database_settings import alter_statements, settings_of

        settings = self._template_settings.get(template)
        if settings == []:
            return  # the usual case: no connection for it
        with self.admin() as conn:
            if settings is None:
                settings = self._template_settings[template] = settings_of(conn, template)
            for statement in alter_statements(name, settings):
                conn.execute(statement)

    def _remove(self, name: str) -> None:
        """``DROP DATABASE IF EXISTS name``, its connections ended."""
        from psycopg import sql

        with self.admin() as conn:
            if self.version >= 13:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            else:
                _terminate(conn, name)
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    def _rename(self, old: str, new: str) -> None:
        """``ALTER DATABASE old RENAME TO new``, its connections ended."""
        from psycopg import sql

        with self.admin() as conn:
            _terminate(conn, old)
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(old), sql.Identifier(new)
                )
            )

    def _execute_with_retry(
        self, statement: sql.Composed, template: str | None, *, end_sessions: bool
    ) -> None:
        """CREATE DATABASE fails while anyone is connected to the template, after
        waiting 5 s: so end those sessions first (a template is not for use), and
        again if one slipped in."""
        import psycopg

        for attempt in range(5):
            with self.admin() as conn:
                if template is not None and (end_sessions or attempt > 0):
                    _terminate(conn, template)
                try:
                    conn.execute(statement)
                    return
                except psycopg.errors.ObjectInUse:
                    if template is None or attempt == 4:
                        raise
                except psycopg.errors.DuplicateDatabase:
                    raise ServerError(
                        f"database already exists: {statement.as_string(conn)}"
                    ) from None
            time.sleep(0.05 * (attempt + 1))


class ExistingServer(Server):
    """A server we did not start: only ``test_*`` databases are created, only ours dropped."""

    def __init__(self, url: str | URL) -> None:
        super().__init__(url, guarded=True)
        # the server the harness provisions on: its maintenance database, for admin work
        GUARD.allow_database(self.url)

    def stop(self) -> None:
        """Drop what this run created; the server itself keeps running."""
        for name in sorted(self._created):
            self.drop_database(name)
        self.close()


class EphemeralServer(Server):
    """A server this process started (see ``EphemeralPostgres``) and stops."""

    def __init__(self, process: EphemeralPostgres) -> None:
        self.process = process
        super().__init__(process.url)
        # Started by us: every database on it is throw-away. Allowed when it was started
        # or attached to, its identity asked then: not asked twice (a warm start's round trip).
        GUARD.keep_server(self.url)

    @classmethod
    def start(
        cls,
        *,
        binaries: Binaries | None = None,
        boot_timeout: float = 30.0,
        settings: Sequence[str] = (),
        abandon: threading.Event | None = None,
    ) -> EphemeralServer:
        """Start a server; ``settings`` are extra ``name=value`` server settings;
        ``abandon``: see ``EphemeralPostgres``."""
        process = EphemeralPostgres(
            binaries=binaries, boot_timeout=boot_timeout, settings=settings, abandon=abandon
        )
        return cls(process.start())

    @classmethod
    def reusable(
        cls, *, binaries: Binaries | None = None, run_id: str | None = None
    ) -> EphemeralServer:
        """The server kept running between runs (see ``reuse.reusable_server``)."""
        return cls(reusable_server(binaries, run_id=run_id))

    def enrol(self, run_id: str) -> Path:
        """The kept server outlives runs, and a killed run cannot drop its databases: each
        run leaves a record beside the server (written on attaching, under the reuse
        server's lock: ``reusable_server``), and drops the databases of every run whose
        process has died. The run's record, to remove at its end."""
        base_dir = self.process.base_dir
        assert base_dir is not None
        ours = run_record(base_dir, run_id)
        for record, owner in run_owners(base_dir).items():
            if record != ours and owner is None:
                self.drop_run(record.stem)
                record.unlink(missing_ok=True)
        return ours

    def leave(self, run_id: str, record: Path) -> None:
        """The end of ``enrol``: what the run left dropped, then its record removed. A drop
        that fails (the kept server killed mid-run) raises and keeps the record: the next
        run, finding its owner dead, drops them; without it they were no run's to drop."""
        try:
            self.drop_run(run_id)
        except ServerError as exc:  # said so by the agent and the test process alike
            raise ServerError(
                f"could not drop the run's databases ({exc}); the next run drops them"
            ) from None
        record.unlink(missing_ok=True)

    def stop(self) -> None:
        self.close()
        self.process.stop()

    def __enter__(self) -> EphemeralServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _terminate(conn: psycopg.Connection[Any], database: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )


def connect_args(url: URL) -> dict[str, Any]:
    """libpq keywords for ``url``; what it leaves out libpq fills in, as for SQLAlchemy's
    engines on the same URL (one URL, one target, whoever connects)."""
    args: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        "connect_timeout": CONNECT_TIMEOUT,
    }
    args.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    return {k: v for k, v in args.items() if v is not None}


# -- names -------------------------------------------------------------------------------

#: PostgreSQL's identifier length (``NAMEDATALEN - 1``), in bytes.
MAX_IDENTIFIER = 63
#: On a server we did not start, only databases named so are created.
TEST_PREFIX = "test_"
TEMPLATE_PREFIX = f"{TEST_PREFIX}tpl_"
BUILDING_SUFFIX = "_building"
SCRATCH_PREFIX = f"{TEST_PREFIX}check_"
#: A run's database (``run_database``).
RUN_DATABASE = re.compile(r"test_[a-z0-9_]+?_(?P<run>[0-9a-f]{8})_(?:main|gw[0-9]+)_[a-z]+[0-9]+")


def like_literal(text: str) -> str:
    """``text`` matched as is by ``LIKE`` (its ``_`` and ``%`` no wildcards)."""
    return re.sub(r"([\\_%])", r"\\\1", text)


def pg_name(stem: str, suffix: str = "") -> str:
    """``stem`` + ``suffix`` as a name PostgreSQL keeps as is: lower case, ``[a-z0-9_]``,
    at most 63 bytes. A longer stem is cut and ends with a hash of itself (two long
    stems stay two names); ``suffix`` (already clean) is always kept whole."""
    clean = re.sub(r"[^a-z0-9_]", "_", stem.lower())
    room = MAX_IDENTIFIER - len(suffix)
    if len(clean) > room:
        clean = clean[: room - 9] + "_" + hashlib.sha1(clean.encode()).hexdigest()[:8]
    return clean + suffix


def template_name(database: str, digest: str) -> str:
    """The template of registry database ``database`` whose tree hashes to ``digest``."""
    return pg_name(f"{TEMPLATE_PREFIX}{database}_{digest}")


def building_name(template: str) -> str:
    """The name ``template`` is migrated under until it is complete."""
    return pg_name(template, BUILDING_SUFFIX)


def run_database(database: str, run_id: str, worker: str, purpose: str, number: int) -> str:
    """A run's database: the run, worker and purpose kept whole (``run_of`` reads them)."""
    return pg_name(f"{TEST_PREFIX}{database}", f"_{run_id}_{worker}_{purpose}{number}")


def run_of(database: str) -> str | None:
    """The run id a database name carries, if it is one of a run's databases."""
    match = RUN_DATABASE.fullmatch(database)
    return match.group("run") if match else None


#: How many projects a template's comment names (the latest users).
PROJECTS_KEPT = 8


def comment_projects(comment: str | None) -> list[str]:
    """The projects a template's ``COMMENT`` names (``shared.RunPresence.mark_used``)."""
    found = re.search(r"; projects ([0-9a-f ]+)", comment or "")
    return found.group(1).split() if found else []


def run_comment(run_id: str) -> str:
    """The ``COMMENT`` a run's database carries on a server others use: what marks it
    as made by the harness (a name alone could be anyone's)."""
    return f"reynard-db run {run_id}"


def scratch_name(database: str, purpose: str, run_id: str | None = None) -> str:
    """A check's throw-away database, ``test_check_<database>_<purpose>_<random>``; of a
    pytest run's check items, ``..._<purpose>_<run id>_<random>``: the run's own, which
    ``drop_run`` drops (its check child killed, on a kept server, by the run's end or
    the next run's start)."""
    run = f"_{run_id}" if run_id else ""
    return pg_name(f"{SCRATCH_PREFIX}{database}_{purpose}", f"{run}_{secrets.token_hex(4)}")
