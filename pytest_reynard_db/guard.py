"""The production guard: while armed, no connection reaches a database the harness did not create.

A convention (export the right variable, set ``sqlalchemy.url``) holds only as
long as every ``env.py`` honours it; many read their own variable or build
their own engine. So the guard sits where every connection passes and decides
on the *final* parameters, after the URL's query string, a conninfo string and
libpq's ``PG*`` environment defaults:

- SQLAlchemy's ``do_connect`` event, for every PostgreSQL engine in the process
  (psycopg, psycopg2, asyncpg, pg8000 alike);
- psycopg's ``Connection._get_connection_params``, its documented hook for
  "manipulate connection parameters before connecting", for code that connects
  without SQLAlchemy (our own admin connections among it).

Allowed: every database of a server the harness started itself
(``allow_server``), each database the harness created on a server it did not
start (``allow_database``, the janitor calls it), that server's maintenance
database, and what the user opted in to (``--reynard-db-allow`` / ``--allow``).
Anything else raises ``GuardRefused`` before a socket is opened.

Non-PostgreSQL dialects (an application's SQLite test engine) are not the
harness's business and pass untouched.
"""

from __future__ import annotations

import getpass
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL

from .errors import ReynardDBError
from .urls import parse_url, remember_secrets

DEFAULT_PORT = 5432
DEFAULT_SOCKET = "(default socket)"
#: libpq's environment defaults, by connection keyword.
ENV_DEFAULTS = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "service": "PGSERVICE",
}


class GuardRefused(ReynardDBError):
    """A connection to a database the harness did not create (exit 2)."""


@dataclass(frozen=True, order=True)
class Endpoint:
    """Where a connection goes: a host name, an address or a socket directory, and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Target:
    """What a connection reaches: its endpoints (libpq tries each in turn) and database."""

    endpoints: tuple[Endpoint, ...]
    dbname: str
    user: str

    def shown(self) -> str:
        """The target as a URL without any password."""
        hosts = ",".join(str(e) for e in self.endpoints)
        return f"postgresql://{self.user}@{hosts}/{self.dbname}"


def target_of(params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Target:
    """The target of a connection from its libpq keywords, completed as libpq would.

    A ``service`` supplies whatever the parameters leave out from a file the guard
    does not read; such a connection must name host, port and database itself.
    """
    environ = os.environ if environ is None else environ
    given = {k: str(v) for k, v in params.items() if v is not None and str(v) != ""}
    if "database" in given and "dbname" not in given:
        given["dbname"] = given["database"]  # asyncpg and pg8000 spell it so
    values = dict(given)
    for key, variable in ENV_DEFAULTS.items():
        if key not in values and environ.get(variable):
            values[key] = environ[variable]
    if values.get("service") and not {"host", "port", "dbname"} <= given.keys():
        raise GuardRefused(
            f"refused a connection through service {values['service']!r}: "
            "the guard cannot see where a service file points; give host, port and dbname"
        )
    user = values.get("user") or _os_user()
    hosts = (values.get("hostaddr") or values.get("host") or "").split(",")
    ports = (values.get("port") or str(DEFAULT_PORT)).split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    endpoints = tuple(
        Endpoint(_host(host), _port(port)) for host, port in zip(hosts, ports, strict=False)
    )
    return Target(endpoints, values.get("dbname") or user, user)


def url_target(url: str | URL) -> Target:
    """The target of a SQLAlchemy URL, as its connection would compute it."""
    parsed = parse_url(url)
    params: dict[str, Any] = parsed.translate_connect_args(username="user", database="dbname")
    params.update({k: v for k, v in parsed.query.items() if isinstance(v, str)})
    return target_of(params)


class Guard:
    """The allow-list and the hooks; one per process (``GUARD``), armed while a run lasts."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._servers: set[Endpoint] = set()
        self._databases: set[tuple[Endpoint, str]] = set()
        self._opt_in_hint = "--reynard-db-allow=URL"
        self._migrating: ContextVar[URL | None] = ContextVar("reynard_db_migrating", default=None)
        self._redirects: dict[str, None] = {}

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
                _install_hooks()
            self._depth += 1
            for target in opted_in:
                self._databases.update((e, target.dbname) for e in target.endpoints)

    def disarm(self) -> None:
        with self._lock:
            self._depth = max(0, self._depth - 1)
            if self._depth == 0:
                _remove_hooks()
                self._servers.clear()
                self._databases.clear()
                self._redirects.clear()

    # -- the allow-list -------------------------------------------------------------------
    def allow_server(self, url: str | URL) -> None:
        """Every database of this server: one the harness started (its every database is ours).

        Like every ``allow_*``, a no-op while disarmed: nothing allowed outside a run
        carries over into the next one.
        """
        if not self.armed:
            return
        with self._lock:
            self._servers.update(url_target(url).endpoints)

    def forget_server(self, url: str | URL) -> None:
        """Take a server off the list (a test's decoy started with the harness's code)."""
        endpoints = set(url_target(url).endpoints)
        with self._lock:
            self._servers -= endpoints
            self._databases = {(e, n) for e, n in self._databases if e not in endpoints}

    def allow_database(self, url: str | URL, name: str | None = None) -> None:
        """One database (``url``'s, or ``name`` on ``url``'s server)."""
        if not self.armed:
            return
        target = url_target(url)
        with self._lock:
            for endpoint in target.endpoints:
                self._databases.add((endpoint, name or target.dbname))

    def allows(self, target: Target) -> bool:
        with self._lock:
            return all(
                endpoint in self._servers or (endpoint, target.dbname) in self._databases
                for endpoint in target.endpoints
            )

    @contextmanager
    def migrating(self, url: str | URL) -> Iterator[None]:
        """While the harness migrates ``url``: a connection that ``env.py`` opens to a
        database not allowed goes to ``url`` instead.

        An ``env.py`` that reads its own variable (``APP_DATABASE_URL``, a ``.env``
        file) then still migrates the throw-away database, and the check checks it.
        """
        token = self._migrating.set(parse_url(url))
        try:
            yield
        finally:
            self._migrating.reset(token)

    @property
    def redirects(self) -> list[str]:
        """Each redirected target, once: ``<asked> -> <migrated instead>`` (masked)."""
        with self._lock:
            return list(self._redirects)

    # -- the decision ---------------------------------------------------------------------
    def check(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """How a connection with ``params`` may be opened: as asked (None), redirected
        (the parameters to use instead), or not at all (``GuardRefused``)."""
        if not self.armed:
            return None
        target = target_of(params)
        if self.allows(target):
            return None
        migrating = self._migrating.get()
        if migrating is not None:
            into = url_target(migrating)
            with self._lock:
                self._redirects.setdefault(f"{target.shown()} -> {into.shown()}")
            return redirected(params, migrating)
        raise GuardRefused(
            f"refused a connection to {target.shown()}: not a database this run created "
            f"(expected {self._describe_allowed()}); to allow it on purpose, "
            f"pass {self._opt_in_hint}"
        )

    def _describe_allowed(self) -> str:
        with self._lock:
            servers = sorted(str(e) for e in self._servers)
            names = sorted(f"{e}/{n}" for e, n in self._databases if e not in self._servers)
        shown = [f"any database on {s}" for s in servers] + names[:3]
        if len(names) > 3:
            shown.append("...")
        return "; ".join(shown) or "no database yet"


GUARD = Guard()


# -- the hooks ------------------------------------------------------------------------------
_installed: dict[str, Any] = {}


def _install_hooks() -> None:
    from sqlalchemy import Engine, event

    if "sqlalchemy" not in _installed:
        event.listen(Engine, "do_connect", _on_sqlalchemy_connect)
        _installed["sqlalchemy"] = True
    import psycopg

    for cls in (psycopg.Connection, psycopg.AsyncConnection):
        original = cls.__dict__.get("_get_connection_params")
        if original is None or cls in _installed.get("psycopg", {}):
            continue  # an old psycopg without the hook: SQLAlchemy's event still guards
        _installed.setdefault("psycopg", {})[cls] = original
        cls._get_connection_params = _guarded_params(cls, original)  # type: ignore[method-assign]


def _remove_hooks() -> None:
    from sqlalchemy import Engine, event

    if _installed.pop("sqlalchemy", None):
        event.remove(Engine, "do_connect", _on_sqlalchemy_connect)
    for cls, original in _installed.pop("psycopg", {}).items():
        cls._get_connection_params = original


def _on_sqlalchemy_connect(
    dialect: Any, conn_rec: Any, cargs: list[Any], cparams: dict[str, Any]
) -> None:
    if dialect.name != "postgresql":
        return
    params = dict(cparams)
    dsn = params.pop("dsn", None) or next((a for a in cargs if isinstance(a, str)), None)
    if dsn:
        from psycopg.conninfo import conninfo_to_dict

        params = {**conninfo_to_dict(dsn), **params}
    replacement = GUARD.check(params)
    if replacement is not None:  # the event's documented way: change the arguments in place
        cargs[:] = []
        cparams.clear()
        cparams.update(replacement)


def _guarded_params(cls: type, original: Any) -> Any:
    """``original`` (a classmethod, sync or async) followed by the guard's check."""
    import inspect

    function = original.__func__
    if inspect.iscoroutinefunction(function):

        async def checked_async(klass: type, /, conninfo: str, **kwargs: Any) -> Any:
            params = await function(klass, conninfo, **kwargs)
            return GUARD.check(params) or params

        return classmethod(checked_async)

    def checked(klass: type, /, conninfo: str, **kwargs: Any) -> Any:
        params = function(klass, conninfo, **kwargs)
        return GUARD.check(params) or params

    return classmethod(checked)


#: The keywords that say where a connection goes and as whom; a redirect replaces them all.
_WHERE_AND_WHO = ("host", "hostaddr", "port", "service", "dbname", "database", "user", "password")


def redirected(params: Mapping[str, Any], url: URL) -> dict[str, Any]:
    """``params`` aimed at ``url`` instead; the rest (``sslmode``, timeouts) kept."""
    out = {k: v for k, v in params.items() if k not in _WHERE_AND_WHO}
    database_key = "database" if "database" in params and "dbname" not in params else "dbname"
    where = {
        "host": url.host,
        "port": str(url.port) if url.port else None,
        database_key: url.database,
        "user": url.username,
        "password": url.password,
    }
    out.update({k: v for k, v in where.items() if v is not None})
    return out


def _host(host: str) -> str:
    host = host.strip()
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("/"):
        return os.path.normpath(host)
    return host.lower()


def _port(port: str) -> int:
    try:
        return int(port.strip() or DEFAULT_PORT)
    except ValueError:
        raise GuardRefused(f"refused a connection to port {port!r}: not a number") from None


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


#: Read by countless applications and ``env.py`` files for the production URL.
COMMON_URL_VARIABLES = ("DATABASE_URL",)


@contextmanager
def hidden_variables(names: tuple[str, ...]) -> Iterator[None]:
    """Remove ``names`` from the environment while the block runs, then put them back.

    Inside a test run the production URLs have no business being readable: code
    under test that reads one then fails to find it, instead of finding production.
    """
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    remember_secrets(*saved.values())  # out of the environment, still out of every message
    try:
        yield
    finally:
        for name in names:
            os.environ.pop(name, None)
        os.environ.update(saved)
