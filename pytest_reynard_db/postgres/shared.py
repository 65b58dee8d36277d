"""Many runs on one server: template locks on the server, runs seen by their sessions.

Several pytest runs on different machines (different local lock directories) may
share one server (``--reynard-db-url``, a CI service container, a managed
PostgreSQL). Nothing local can coordinate them, so everything lives on the server,
in the maintenance database, without creating any table there:

- **A template is built once in total.** Templates are named by the digest of
  their tree (``test_tpl_<db>_<digest>``); a build holds the advisory lock
  ``(BUILD_CLASS, key(template))``, so a second run waits and then finds it made.
- **A template in use is never dropped.** Each run holds the shared advisory lock
  ``(USE_CLASS, key(template))`` of every template it uses, on its presence
  session, for as long as it runs; pruning drops a template only under the
  exclusive lock (``pg_try_advisory_lock``), i.e. when no run holds it.
- **A run is seen by its sessions.** Its presence session is named
  ``reynard-db run <run id> <worker>`` (``application_name``) and runs a query
  every ``heartbeat`` seconds. A run is alive while it has a session (the
  presence one, or any connection to one of its databases) that is running a
  query or was active within ``stale_after`` seconds. A process killed with
  ``-9`` loses its sessions at once; a machine that vanished leaves idle ones
  that go stale. The next run drops the databases of every run that is not alive
  (names ``test_<db>_<run id>_<worker>_<purpose><n>``, owned by the same role),
  and only those.
- **Old templates go.** A template records when it was last used, the tree it was
  built from (its digest at heads, whatever revision the template is at) and the
  projects that used it (its ``COMMENT``); one unused for ``max_age`` and held by no
  run is dropped, and ``server prune`` drops a project's templates of trees it no
  longer has, never one another project used (it may be that one's current tree).

  ``templates`` reads those records back and ``prune_templates`` drops, under each
  template's exclusive use lock, the old ones or a project's: what a run does at its
  start and what ``server templates`` and ``server prune`` show and do.

Settings: ``$REYNARD_DB_STALE_AFTER`` (seconds, default 120) and
``$REYNARD_DB_TEMPLATE_MAX_AGE`` (days, default 7).
"""

from __future__ import annotations

import os
import re
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..foundation.errors import ConfigError, LockTimeout, ServerError
from ..foundation.filesystem import DEFAULT_LOCK_TIMEOUT, SAY_AFTER, Say, say_on_stderr
from ..foundation.urls import first_line, mask_url
from .server import PROJECTS_KEPT, Server, comment_projects, connect_args, run_comment, run_of

#: Advisory lock classes (the first int4 of the two-key form; the migration lock
#: uses the one-bigint form, a separate space).
BUILD_CLASS = 0x5E7A_0001
USE_CLASS = 0x5E7A_0002
MARK_CLASS = 0x5E7A_0003
RUN_APP_PREFIX = "reynard-db run "
BUILD_APP_PREFIX = "reynard-db build "
TEMPLATE_COMMENT = "reynard-db template"
STALE_ENV = "REYNARD_DB_STALE_AFTER"
MAX_AGE_ENV = "REYNARD_DB_TEMPLATE_MAX_AGE"
DEFAULT_STALE_AFTER = 120.0
DEFAULT_MAX_AGE_DAYS = 7.0
#: A run is dead once this many of the heartbeats it announced were missed (at least).
HEARTBEATS_MISSED = 3


def stale_after() -> float:
    """Seconds without activity after which a run counts as dead (``$REYNARD_DB_STALE_AFTER``)."""
    return _positive(STALE_ENV, DEFAULT_STALE_AFTER)


def template_max_age() -> float:
    """Seconds a template may go unused before pruning (``$REYNARD_DB_TEMPLATE_MAX_AGE`` days)."""
    return _positive(MAX_AGE_ENV, DEFAULT_MAX_AGE_DAYS) * 86400.0


def _positive(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ConfigError(f"${name}={raw!r}: expected a number ≥ 0")
    return value


def template_key(template: str) -> int:
    """The second int4 of a template's advisory locks (signed, as PostgreSQL takes it)."""
    key = zlib.crc32(template.encode())
    return key - 2**32 if key >= 2**31 else key


def connect(server: Server, application_name: str) -> psycopg.Connection[Any]:
    """An autocommit session on the maintenance database, named for ``pg_stat_activity``."""
    try:
        # ours over the URL's own (``?application_name=ci``): the run's presence is found by it
        args = {**connect_args(server.url), "application_name": application_name[:63]}
        conn = psycopg.connect(**args, autocommit=True)
        if conn.info.server_version >= 140000:
            # A server's idle_session_timeout (managed services set one) shorter than the
            # heartbeat would end the session, and the run would look dead meanwhile.
            conn.execute("SET idle_session_timeout = 0")
        return conn
    except psycopg.Error as exc:
        raise ServerError(f"cannot connect to {mask_url(server.url)}: {first_line(exc)}") from None


class RunPresence:
    """This run's session on a shared server: its heartbeat and the templates it holds."""

    def __init__(
        self, server: Server, run_id: str, worker: str, *, heartbeat: float | None = None
    ) -> None:
        """``heartbeat``: seconds between two signs of life (default a sixth of ``stale_after``)."""
        self.server = server
        self.run_id = run_id
        self.heartbeat = heartbeat if heartbeat is not None else max(stale_after() / 6, 1.0)
        # The heartbeat is announced: a run with a shorter $REYNARD_DB_STALE_AFTER
        # never judges this one dead between two of its beats.
        self.name = f"{RUN_APP_PREFIX}{run_id} {worker} {self.heartbeat:g}"
        self.held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> RunPresence:
        self._conn = connect(self.server, self.name)
        self._thread = threading.Thread(target=self._beat, name="reynard-db-heartbeat", daemon=True)
        self._thread.start()
        return self

    def hold(self, template: str) -> None:
        """Hold ``template`` for the rest of the run (a shared lock: pruning waits for it)."""
        with self._lock:
            if template in self.held:
                return
            _hold_shared(self._session(), template)
            self.held.add(template)

    def mark_used(self, template: str, *, project: str, tree: str) -> None:
        """Record on the template when it was last used, from which tree (``tree``: its
        digest at heads) and by which projects (``project`` added): pruning reads them."""
        with self._lock, suppress(psycopg.Error):  # not the owner: another role built it
            session = self._session()
            with session.transaction():  # one read-and-write at a time per template
                session.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", (MARK_CLASS, template_key(template))
                )
                row = session.execute(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                    "WHERE datname = %s",
                    (template,),
                ).fetchone()
                users = [p for p in comment_projects(row[0] if row else None) if p != project]
                users = [*users, project][-PROJECTS_KEPT:]
                comment = (
                    f"{TEMPLATE_COMMENT}; used {int(time.time())}; run {self.run_id}; "
                    f"tree {tree}; projects {' '.join(users)}"
                )
                session.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(template), sql.Literal(comment)
                    )
                )

    def close(self) -> None:
        """End the session: its locks go with it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self._conn is not None:
                with suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    def _session(self) -> psycopg.Connection[Any]:
        """The presence session, made again (with its locks) if it was lost."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.server, self.name)
            for template in self.held:
                _hold_shared(self._conn, template)
        return self._conn

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock, suppress(psycopg.Error, ServerError):
                if not self._stop.is_set():
                    self._session().execute("SELECT 1")


@contextmanager
def build_lock(
    server: Server,
    template: str,
    run_id: str,
    *,
    timeout: float = DEFAULT_LOCK_TIMEOUT,
    say: Say = say_on_stderr,
) -> Iterator[None]:
    """Hold the server-side lock on building ``template``; a long wait says who builds it."""
    conn = connect(server, f"{BUILD_APP_PREFIX}{run_id} {template}")
    try:
        key = (BUILD_CLASS, template_key(template))
        if not _try_lock(conn, key, min(SAY_AFTER, timeout)):
            holder = _holder(conn, key)
            say(f"reynard-db: waiting for the build of template {template}, by {holder}")
            if not _try_lock(conn, key, max(timeout - SAY_AFTER, 0.0)):
                raise LockTimeout(
                    f"gave up waiting for the build of template {template} after {timeout:g} s; "
                    f"held by {_holder(conn, key)}"
                )
        yield
    finally:
        conn.close()  # the lock ends with the session


def _hold_shared(conn: psycopg.Connection[Any], template: str) -> None:
    """Hold ``template``'s use lock, shared, on ``conn`` (pruning takes it exclusively)."""
    conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", (USE_CLASS, template_key(template)))


def _try_lock(conn: psycopg.Connection[Any], key: tuple[int, int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
        if row and row[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _holder(conn: psycopg.Connection[Any], key: tuple[int, int]) -> str:
    row = conn.execute(
        "SELECT a.pid, a.application_name, a.client_addr FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
        "AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 2",
        (key[0], key[1] % 2**32),
    ).fetchone()
    if row is None:
        return "a session that just released it"
    return f"pid {row[0]} (application_name {row[1]!r}, from {row[2] or 'a local socket'})"


# -- runs that died ------------------------------------------------------------------
def live_runs(conn: psycopg.Connection[Any], *, stale: float) -> set[str]:
    """Run ids with a session that is running a query or was active within ``stale`` s."""
    rows = conn.execute(
        "SELECT application_name, datname, state, EXTRACT(EPOCH FROM now() - GREATEST("
        "backend_start, xact_start, query_start, state_change))::float8 "
        "FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    ).fetchall()
    alive: set[str] = set()
    for application, database, state, idle in rows:
        run = None
        limit = stale
        if application and application.startswith(RUN_APP_PREFIX):
            run, *rest = application[len(RUN_APP_PREFIX) :].split(" ")
            limit = max(stale, _announced_heartbeat(rest) * HEARTBEATS_MISSED)
        elif database:
            run = run_of(database)
        # state is None for another role's session: not ours to judge, so alive.
        if run and (state in (None, "active") or idle is None or idle < limit):
            alive.add(run)
    return alive


def _announced_heartbeat(words: list[str]) -> float:
    """The heartbeat a presence session announces after its worker (0 if none)."""
    try:
        return max(float(words[1]), 0.0) if len(words) > 1 else 0.0
    except ValueError:
        return 0.0


def drop_dead_runs(server: Server, own_run: str, *, stale: float | None = None) -> list[str]:
    """Drop the databases of every run that is not alive (never ``own_run``'s); return them.

    Only names of a run's databases (``server.RUN_DATABASE``) owned by the role we connect
    as are considered; the databases are listed before the sessions are read, so
    a run that makes a database after the listing is never mistaken for dead.
    """
    stale = stale_after() if stale is None else stale
    with server.admin() as conn:
        rows = conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname LIKE 'test\\_%' "
            "AND datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        ).fetchall()
        candidates = [
            (name, comment) for name, comment in rows if run_of(name) not in (None, own_run)
        ]
        # A run marks each database it makes; one killed during a CREATE DATABASE leaves
        # that database unmarked. It is taken as the run's only when another database
        # marked by the same (random) run id is there too: a user's database that merely
        # looks like ours never is.
        marked = {
            run_of(name)
            for name, comment in candidates
            if comment == run_comment(run_of(name) or "")
        }
        names = [name for name, _ in candidates if run_of(name) in marked]
        if not names:
            return []
        alive = live_runs(conn, stale=stale) | {own_run}
        dead = [name for name in names if run_of(name) not in alive]
        dead_runs = {run_of(name) for name in dead}
        for run in dead_runs:  # a vanished machine's idle session still holds templates
            with suppress(psycopg.Error):
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE %s",
                    (f"{RUN_APP_PREFIX}{run} %",),
                )
    for name in dead:
        server.adopt(name)  # a run's database, by its name and owner: ours to drop
        server.drop_database(name)
    return dead


def run_sessions(server: Server) -> list[tuple[str, int]]:
    """The run sessions on the server (``application_name``), each with the number of
    templates it holds."""
    with server.admin() as conn:
        rows = conn.execute(
            "SELECT a.application_name, count(l.pid) FROM pg_stat_activity a "
            "LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' "
            "AND l.classid::bigint = %s WHERE a.application_name LIKE %s "
            "GROUP BY a.application_name ORDER BY 1",
            (USE_CLASS, f"{RUN_APP_PREFIX}%"),
        ).fetchall()
    return [(str(row[0]), int(row[1])) for row in rows]


# -- templates ---------------------------------------------------------------------------


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
