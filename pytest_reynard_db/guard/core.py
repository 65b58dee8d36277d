"""The guard's state and decision: the allow-list, the run it is armed for, redirects.

Allowed: every database of a server the harness started itself
(``allow_server``), each database the harness created on a server it did not
start (``allow_database``, ``postgres.server`` calls it), that server's maintenance
database, and what the user opted in to (``--reynard-db-allow`` / ``--allow``).
While the harness migrates a database (``migrating``, see ``migration``), a
connection to that database's own registered target is redirected into it and one
to anything else refused, in a line naming env.py's line; otherwise a connection
not allowed is refused with ``GuardRefused``.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

from sqlalchemy.engine import URL

from ..foundation.errors import GuardRefused
from ..foundation.urls import parse_url, remember_secrets
from . import hooks, inherit
from .migration import HIDDEN_TARGETS, Migration, Refusal, hidden_targets_json, tree_places
from .reached import Reached, identity_at
from .target import LIBPQ, Endpoint, Target, redirected, targets_of, url_target

#: ``cluster_name`` of every server the harness starts (``postgres.executor``).
HARNESS_CLUSTER_NAME = "reynard-db"


class Guard:
    """The allow-list and the hooks; one per process (``GUARD``), armed while a run lasts."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._servers: set[Endpoint] = set()
        self._databases: set[tuple[Endpoint, str]] = set()
        #: One set of opted-in databases per ``arm``: a nested run's opt-ins end with it.
        self._opt_ins: list[set[tuple[Endpoint, str]]] = []
        #: ``_databases`` and every opt-in, as one set: read on every connection, so made
        #: again (``_allow_changed``) only when one of them changes.
        self._allowed: frozenset[tuple[Endpoint, str]] = frozenset()
        #: Each allowed place's server, by identity (``reached.TRUTH_QUERY``), as the first
        #: connection the driver says reached that place found it (``allows_reached``).
        self._identities: dict[Endpoint, str] = {}
        #: The URL that allowed each place (with its password: never exported), with which
        #: the guard asks a place's identity itself (``reached.identity_at``).
        self._askers: dict[Endpoint, URL] = {}
        self._opt_in_hint = "--reynard-db-allow=URL"
        self._migrating: ContextVar[Migration | None] = ContextVar(
            "reynard_db_migrating", default=None
        )
        self._redirects: dict[str, None] = {}
        #: A child's parent allow-list file and its size when last read (``adopt``).
        self._source: tuple[str, int] | None = None
        #: Every connection refused while migrating, in order (cleared when disarmed).
        self.refusals: list[Refusal] = []
        #: How many ``migrating`` blocks began (a check that ran env.py began one).
        self.migrations = 0

    @property
    def armed(self) -> bool:
        return self._depth > 0

    @contextmanager
    def armed_for(self, *, opt_in_hint: str, allow: tuple[str, ...] = ()) -> Iterator[None]:
        """Refuse every connection not allowed while the block runs (nests)."""
        self.arm(opt_in_hint=opt_in_hint, allow=allow)
        try:
            yield
        finally:
            self.disarm()

    def arm(self, *, opt_in_hint: str, allow: tuple[str, ...] = ()) -> None:
        """Start refusing; ``allow``: URLs of databases opted in (a bad one: ``ConfigError``,
        and nothing is armed)."""
        opted_in = [url_target(url) for url in allow]
        with self._lock:
            if self._depth == 0:
                self._opt_in_hint = opt_in_hint
                hooks.install(self)
            self._depth += 1
            self._opt_ins.append({(e, t.dbname) for t in opted_in for e in t.endpoints})
            self._allow_changed()
            self._export()

    def disarm(self) -> None:
        with self._lock:
            self._depth = max(0, self._depth - 1)
            if self._opt_ins:
                self._opt_ins.pop()
            if self._depth == 0:
                hooks.remove()
                inherit.withdraw()
                self._servers.clear()
                self._databases.clear()
                self._identities.clear()
                self._askers.clear()
                self._source = None
                self._redirects.clear()
                self.refusals.clear()
            self._allow_changed()
            if self._depth > 0:
                self._export()

    def adopt(self, snapshot: Mapping[str, Any], source: str | None = None) -> None:
        """Armed for good with a parent's allow-list (``snapshot``, from ``inherit``): in a
        child interpreter the run started, which has no run of its own to end. ``source``:
        the parent's file, read again before a refusal (the parent may have made the
        database since: a worker a session fixture started before the test's clone)."""
        if source is not None:
            self._source = (source, -1)  # read again at the first refusal, whatever its size
        self.arm(opt_in_hint=snapshot["hint"])
        self._merge(snapshot)

    def _caught_up(self) -> bool:
        """The parent's allow-list read again when it grew since (a child's); whether it had."""
        if self._source is None:
            return False
        path, size = self._source
        try:
            now = os.stat(path).st_size
            if now == size:
                return False
            self._source = (path, now)
            snapshot = inherit.load(path)
        except (OSError, ValueError):
            return False
        self._merge(snapshot)
        return True

    def _merge(self, snapshot: Mapping[str, Any]) -> None:
        with self._lock:
            self._servers.update(Endpoint(host, port) for host, port in snapshot["servers"])
            self._databases.update(
                (Endpoint(host, port), name) for host, port, name in snapshot["databases"]
            )
            self._identities.update(
                (Endpoint(host, port), identity)
                for host, port, identity in snapshot.get("identities", [])
            )
            self._allow_changed()
            self._export()

    def _export(self) -> None:
        """The allow-list as children inherit it (``inherit``); call with the lock held."""
        inherit.export(
            {
                "hint": self._opt_in_hint,
                "servers": sorted([e.host, e.port] for e in self._servers),
                "databases": sorted([e.host, e.port, n] for e, n in self._allowed),
                "identities": sorted([e.host, e.port, i] for e, i in self._identities.items()),
            }
        )

    # -- the allow-list -------------------------------------------------------------------
    def allow_server(self, url: str | URL, *, identity: str | None = None) -> None:
        """Every database of this server: one the harness started (its every database is ours).

        Like every ``allow_*``, a no-op while disarmed: nothing allowed outside a run
        carries over into the next one. ``identity``: the server's, as the caller has just
        asked it with ``url`` (``reached.server_identity``): not asked again.
        """
        if not self.armed:
            return
        target = url_target(url)
        endpoints = target.endpoints
        with self._lock:
            self._servers.update(endpoints)
            for endpoint in endpoints:  # a server started there now: not the one before
                self._identities.pop(endpoint, None)
                self._askers.pop(endpoint, None)
                if identity is not None:
                    self._askers[endpoint] = parse_url(url)
                    self._note_identity(endpoint, identity)
            self._ask(parse_url(url), target)
            inherit.append({"servers": [[e.host, e.port] for e in endpoints]})

    def keep_server(self, url: str | URL) -> None:
        """``url``'s server as it was allowed when it was started or attached to
        (``allow_server``, which whoever starts a server calls): its identity is not asked
        again, since a server started there since would have been announced the same way.
        One not on the list (started while disarmed) is allowed now."""
        with self._lock:
            if all(e in self._servers for e in url_target(url).endpoints):
                return
        self.allow_server(url)

    def forget_server(self, url: str | URL) -> None:
        """Take a server off the list (a test's decoy started with the harness's code)."""
        endpoints = set(url_target(url).endpoints)
        with self._lock:
            self._servers -= endpoints
            self._databases = {(e, n) for e, n in self._databases if e not in endpoints}
            self._identities = {e: i for e, i in self._identities.items() if e not in endpoints}
            self._askers = {e: u for e, u in self._askers.items() if e not in endpoints}
            for opted in self._opt_ins:
                opted -= {(e, n) for e, n in opted if e in endpoints}
            self._allow_changed()
            if self.armed:
                self._export()

    def allow_database(self, url: str | URL, name: str | None = None) -> None:
        """One database (``url``'s, or ``name`` on ``url``'s server)."""
        if not self.armed:
            return
        target = url_target(url)
        with self._lock:
            added = [(endpoint, name or target.dbname) for endpoint in target.endpoints]
            self._databases.update(added)
            self._ask(parse_url(url), target)
            self._allow_changed()
            inherit.append({"databases": [[e.host, e.port, n] for e, n in added]})

    def _ask(self, url: URL, target: Target) -> None:
        """``url`` as the way to ask its places who they are (the first URL wins: a
        database's name changes nothing of its server), and each asked at once, so that
        the identity is in the list children inherit before any of them connects (a child
        has no URL to ask with); lock held."""
        for endpoint in target.endpoints:
            if endpoint in self._askers:
                continue  # asked once already (a failure: asked again at a connection there)
            self._askers[endpoint] = url
            if endpoint not in self._identities:
                with suppress(OSError):
                    self._note_identity(endpoint, identity_at(endpoint, url))

    def allows(self, target: Target) -> bool:
        """Every endpoint of ``target`` is an allowed server, or holds an allowed database."""
        with self._lock:
            return all(
                endpoint in self._servers or (endpoint, target.dbname) in self._allowed
                for endpoint in target.endpoints
            )

    def _allow_changed(self) -> None:
        """Remake ``_allowed``; every change to ``_databases`` or ``_opt_ins`` calls it,
        under the lock, before the lock is released."""
        self._allowed = frozenset(self._databases.union(*self._opt_ins))

    @contextmanager
    def migrating(
        self,
        url: str | URL | None,
        *,
        own: Sequence[Target] = (),
        tree: Sequence[str] = (),
        only: bool = False,
        offline: bool = False,
    ) -> Iterator[None]:
        """While the harness migrates ``url`` (None: offline, nothing to connect to), what
        ``env.py`` may reach (see ``migration``): ``url``; ``own`` (the database's registered
        targets), redirected into ``url``; with ``only`` (a check) nothing else, without it
        also what the run allows and other dialects. ``tree``: its folders, where the line
        that opened a refused connection is looked for. ``offline``: see ``offline``.

        A connection refused meanwhile fails the block with its line, even when the
        application caught the exception (an import that swallows a failed ``create_all``).
        """
        into, password = None, None
        if url is not None:
            parsed = parse_url(url)
            # Computed now, every keyword explicit: a redirect must not let the environment
            # (a PGHOST that env.py changes) pick the host afterwards.
            into, password = url_target(parsed), parsed.password
        migration = Migration(into, password, tuple(own), tree_places(tree), only, offline)
        with self._lock:
            self.migrations += 1
        token = self._migrating.set(migration)
        try:
            yield
        except Exception as exc:
            first = migration.refused[0].message if migration.refused else None
            if first is not None and str(exc) != first:
                raise GuardRefused(first) from exc
            raise
        finally:
            self._migrating.reset(token)
            with self._lock:
                self.refusals += migration.refused
        if migration.refused:
            raise GuardRefused(migration.refused[0].message)

    @contextmanager
    def offline(self, *, tree: Sequence[str] = ()) -> Iterator[None]:
        """While env.py runs offline (``--sql``, which touches nothing): every connection
        refused, whatever the dialect, armed by a run or not (a production verb's too)."""
        with (
            self.armed_for(opt_in_hint=self._opt_in_hint),
            self.migrating(None, tree=tree, only=True, offline=True),
        ):
            yield

    @property
    def redirects(self) -> list[str]:
        """Each redirected target, once: ``<asked> -> <migrated instead>`` (masked)."""
        with self._lock:
            return list(self._redirects)

    # -- the decision ---------------------------------------------------------------------
    def check(self, params: Mapping[str, Any], *, family: str = LIBPQ) -> dict[str, Any] | None:
        """How a connection with ``params`` (for a driver of ``family``) may be opened:
        as asked (None), redirected (the parameters to use instead), or not at all
        (``GuardRefused``)."""
        __tracebackhide__ = True  # pytest --showlocals: params may hold a password
        if not self.armed:
            return None
        targets = targets_of(params, family=family)
        migration = self._migrating.get()
        if migration is not None:
            return self._while_migrating(migration, params, targets, family)
        refused = [t for t in targets if not self.allows(t)]
        if refused and self._caught_up():
            refused = [t for t in targets if not self.allows(t)]
        if not refused:
            return None
        raise GuardRefused(
            f"refused a connection to {refused[0].shown()}: not a database this run created "
            f"(expected {self._describe_allowed()}); to allow it on purpose, "
            f"pass {self._opt_in_hint}"
        )

    def _while_migrating(
        self, migration: Migration, params: Mapping[str, Any], targets: list[Target], family: str
    ) -> dict[str, Any] | None:
        """``check`` while the harness migrates: as asked, redirected, or refused (kept)."""
        __tracebackhide__ = True
        into = migration.into
        inside = [t for t in targets if into is not None and self._is_into(t, into)]
        if len(inside) == len(targets):
            return None
        if not migration.only and all(self.allows(t) for t in targets):
            return None
        others = [t for t in targets if t not in inside and not migration.is_own(t)]
        if into is None or others:
            raise migration.refuse((others or targets)[0].shown())
        asked = next(t for t in targets if t not in inside)
        with self._lock:
            self._redirects.setdefault(f"{asked.shown()} -> {into.shown()}")
        instead = redirected(params, into, migration.password, family=family)
        if not all(self.allows(t) for t in targets_of(instead, family=family)):
            raise GuardRefused(  # the environment would still pick another server
                f"refused a connection to {asked.shown()}: could not aim it at "
                f"{into.shown()} with nothing left to the environment"
            )
        return instead

    def _is_into(self, target: Target, into: Target) -> bool:
        """``target`` is the throw-away database: its (random) name, on an allowed server."""
        return target.dbname == into.dbname and self.allows(target)

    @property
    def current_migration(self) -> Migration | None:
        """The migration under way in this context (``migrating``), if any."""
        return self._migrating.get()

    def check_other(self, shown: Callable[[], str]) -> None:
        """A connection of another dialect (SQLite, MySQL...) to ``shown()``: refused while
        a check migrates, else left alone (an application's SQLite test engine)."""
        __tracebackhide__ = True
        migration = self._migrating.get()
        if self.armed and migration is not None and migration.only:
            raise migration.refuse(shown())

    def judge(self, reached: Reached) -> None:
        """The net (``hooks``): refuse a new connection unless what it ``reached`` is allowed
        (``allows_reached``) and, while a check migrates, is the throw-away database."""
        __tracebackhide__ = True
        if not self.allows_reached(reached) and not (
            self._caught_up() and self.allows_reached(reached)
        ):
            raise GuardRefused(
                f"refused a connection that reached {reached.shown()}: not a database this "
                f"run created (expected {self._describe_allowed()}, on the server first "
                "found there: a server restarted since is another one); closed before any "
                f"statement; to allow it on purpose, pass {self._opt_in_hint}"
            )
        migration = self._migrating.get()
        if migration is None or not migration.only:
            return
        if migration.into is None or reached.dbname != migration.into.dbname:
            raise migration.refuse(reached.shown())

    def allows_reached(self, reached: Reached) -> bool:
        """``reached``, as the driver and the server say it, is allowed: its database, at a
        place (host and port) that allows it, on the server known there by its identity;
        or, reached another way (a socket, another name), on a server known by its
        identity. A place's server is the one the guard asked there itself (``_askers``:
        the run's own servers), else the one the first connection there found (an opted-in
        place; a place it could not ask). A host name counts only if the address the
        driver dialled is one of its addresses. Whatever the checks before connecting
        misread, this holds."""
        with self._lock:
            for place in dict.fromkeys(reached.places):
                if not self._allowed_at(place, reached.dbname):
                    continue
                if not _dialled_at(place, reached.dialled):
                    continue
                if reached.identity is None:
                    return True  # (a test's own Reached) the place decides
                known = self._identities.get(place) or self._learn_identity(place, reached)
                # Not asked again on a difference: a proxy at the place that switched
                # servers would answer for the new one (a restart is another server too).
                return known == reached.identity
            return reached.identity is not None and any(
                identity == reached.identity and self._allowed_at(place, reached.dbname)
                for place, identity in self._identities.items()
            )

    def _learn_identity(self, place: Endpoint, reached: Reached) -> str | None:
        """The identity of the server at ``place``, asked of it with the URL that allowed
        it; lock held. Without one (an opted-in place; a child adopting its parent's list,
        who had not met the place), or when it cannot be asked (a role's connection limit,
        a pooler serving one client), as the first connection there says (trust on first
        use; the dialled address still has to be the place's)."""
        asker = self._askers.get(place)
        identity = reached.identity
        if asker is not None:
            with suppress(OSError):
                identity = identity_at(place, asker)
        self._note_identity(place, identity)
        return identity

    def _note_identity(self, place: Endpoint, identity: str | None) -> None:
        """``place``'s server is ``identity``, here and in the children; lock held."""
        if identity is not None:
            self._identities[place] = identity
            inherit.append({"identities": [[place.host, place.port, identity]]})

    def _allowed_at(self, place: Endpoint, dbname: str) -> bool:
        """``dbname`` at ``place`` is allowed; lock held. Exactly: ``localhost`` may reach
        ``::1``, where another server can listen at the same port as on ``127.0.0.1``."""
        return place in self._servers or (place, dbname) in self._allowed

    def _describe_allowed(self) -> str:
        with self._lock:
            servers = sorted(str(e) for e in self._servers)
            names = sorted(f"{e}/{n}" for e, n in self._allowed if e not in self._servers)
        shown = [f"any database on {s}" for s in servers] + names
        if len(shown) > 3:
            shown[3:] = ["..."]
        return "; ".join(shown) or "no database yet"


GUARD = Guard()

#: Read by countless applications and ``env.py`` files for the production URL.
COMMON_URL_VARIABLES = ("DATABASE_URL",)


@contextmanager
def hidden_variables(names: tuple[str, ...]) -> Iterator[None]:
    """Remove ``names`` from the environment while the block runs, then put them back.

    Inside a test run the production URLs have no business being readable: code
    under test that reads one then fails to find it, instead of finding production.
    The harness still knows where they pointed (``$REYNARD_DB_HIDDEN_TARGETS``: hosts,
    ports, database names and users, no URL, no password; the run's child interpreters
    inherit it): a connection env.py opens to its database's own production URL while
    the harness migrates is redirected, not refused (``migration``).
    """
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    remember_secrets(*saved.values())  # out of the environment, still out of every message
    before = os.environ.get(HIDDEN_TARGETS)
    os.environ[HIDDEN_TARGETS] = hidden_targets_json(saved, os.environ)
    try:
        yield
    finally:
        for name in names:
            os.environ.pop(name, None)
        os.environ.update(saved)
        if before is None:
            os.environ.pop(HIDDEN_TARGETS, None)
        else:
            os.environ[HIDDEN_TARGETS] = before


def redirect_note(redirect: str) -> str:
    """What every front (CLI, check children, pytest summary) says of one redirect."""
    return f"env.py connected to {redirect} (redirected by the production guard)"


@functools.cache
def _addresses(host: str) -> frozenset[str]:
    """The addresses ``host`` resolves to (none: it does not resolve)."""
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except (OSError, UnicodeError):
        return frozenset()


def _dialled_at(place: Endpoint, dialled: Endpoint | None) -> bool:
    """``place`` stands for a connection that dialled ``dialled``: the same, a socket
    folder, or a host name with that address (``host=localhost hostaddr=10.0.0.9`` is
    not ``localhost``)."""
    if dialled is None or place == dialled or place.host.startswith("/"):
        return True
    return place.port == dialled.port and dialled.host in _addresses(place.host)
