"""Where a connection really goes, computed from its parameters as its driver would.

Pure functions over the parameters a driver is about to be called with (and
the environment and service files it would read): no I/O but reading those
files, no connection. Each driver family completes missing parameters its own
way, and the guard must agree with the driver, not with itself:

- libpq (psycopg, psycopg2): given keywords, then a ``service`` file's, then
  ``PG*`` variables, then compiled defaults; ``hostaddr`` is where it dials;
- asyncpg: keywords, then its ``dsn`` read as a URL whose host and path win
  over its query string, then ``PG*`` variables;
- pg8000: keywords only (``unix_sock`` names the socket file itself); no
  environment.

Where a driver could read a DSN two ways, every reading must be allowed.
"""

from __future__ import annotations

import configparser
import getpass
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy.engine import URL

from ..foundation.errors import GuardRefused
from ..foundation.urls import escaped, parse_url

DEFAULT_PORT = 5432
#: This machine's loopback names, one host (``Endpoint.local``); ``127.0.0.2`` is not.
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
DEFAULT_SOCKET = "(default socket)"
LIBPQ = "libpq"
ASYNCPG = "asyncpg"
PG8000 = "pg8000"
#: libpq's environment defaults, by connection keyword (asyncpg reads the same ones).
ENV_DEFAULTS = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "service": "PGSERVICE",
}
SOCKET_FILE = re.compile(r"^\.s\.PGSQL\.(\d+)$")
#: The keywords that say where a connection goes and as whom; a redirect replaces them all.
WHERE_AND_WHO = (
    "host",
    "hostaddr",
    "port",
    "service",
    "servicefile",
    "dbname",
    "database",
    "user",
    "password",
    "dsn",
    "unix_sock",
    "sock",
)


@dataclass(frozen=True, order=True)
class Endpoint:
    """Where a connection goes: a host name, an address or a socket directory, and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def local(self) -> Endpoint:
        """This endpoint with this machine's loopback names as one host."""
        return Endpoint("localhost", self.port) if self.host in LOOPBACK else self


@dataclass(frozen=True)
class Target:
    """What a connection reaches: its endpoints (tried in turn) and its database."""

    endpoints: tuple[Endpoint, ...]
    dbname: str
    user: str

    def shown(self) -> str:
        """The target as a URL-like line, without any password (control characters
        escaped: a name may hold any)."""
        hosts = ",".join(_shown_host(e) for e in self.endpoints)
        return escaped(f"postgresql://{self.user}@{hosts}/{self.dbname}")


def _shown_host(endpoint: Endpoint) -> str:
    """A host as a message shows it: what stands before an ``@`` in it masked (a URL
    whose password holds an unencoded ``@`` is read with the password's end as host)."""
    if "@" not in endpoint.host:
        return str(endpoint)
    return f"***@{endpoint.host.rpartition('@')[2]}:{endpoint.port}"


def driver_family(driver: str) -> str:
    """``asyncpg``, ``pg8000``, or ``libpq`` for every libpq-based driver (and unknown ones)."""
    if driver.startswith("asyncpg"):
        return ASYNCPG
    if driver.startswith("pg8000"):
        return PG8000
    return LIBPQ


def targets_of(
    params: Mapping[str, Any], environ: Mapping[str, str] | None = None, *, family: str = LIBPQ
) -> list[Target]:
    """Every target a connection with ``params`` could reach (each must be allowed)."""
    environ = os.environ if environ is None else environ
    given = {k: _text(v) for k, v in params.items() if v is not None and not callable(v)}
    if family == PG8000:
        return [_pg8000_target(given, params.get("sock"))]
    dsn = given.pop("dsn", None)
    if family == ASYNCPG:
        readings = [_dsn_as_url(dsn), _dsn_as_libpq(dsn)] if dsn else [{}]
        if any("hostaddr" in r for r in readings) or "hostaddr" in given:
            raise GuardRefused(  # asyncpg ignores hostaddr: the host is where it goes
                "refused an asyncpg connection naming hostaddr: asyncpg ignores it"
            )
        environ = _asyncpg_environ(given, environ)
        return [
            _libpq_target({**r, **given}, environ, services=bool(dsn), hostaddr=False)
            for r in readings
        ]
    return [_libpq_target({**_dsn_as_libpq(dsn), **given} if dsn else given, environ)]


def _text(value: Any) -> str:
    """A keyword's value as libpq text: asyncpg's lists of hosts and ports (and SQLAlchemy's
    of a multi-host URL) as libpq's comma-separated lists."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _asyncpg_environ(given: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The environment as asyncpg reads it: a service only when named (``service=`` or the
    DSN's ``?service=``; never ``$PGSERVICE``), from its ``servicefile=`` if given. It reads
    one only with a ``dsn``, and before the ``PG*`` variables, as libpq does."""
    adjusted = {k: v for k, v in environ.items() if k != "PGSERVICE"}
    if given.get("servicefile"):
        adjusted["PGSERVICEFILE"] = given["servicefile"]
    return adjusted


def target_of(params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Target:
    """The target of libpq keywords (psycopg's own connections)."""
    return targets_of(params, environ)[0]


def url_target(url: str | URL) -> Target:
    """The target of a SQLAlchemy URL, as its connection would compute it."""
    return target_of(url_params(parse_url(url)))


def url_params(url: URL) -> dict[str, Any]:
    """A SQLAlchemy URL as libpq's keywords (its password left out)."""
    params: dict[str, Any] = url.translate_connect_args(username="user", database="dbname")
    params.pop("password", None)
    params.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    return params


def redirected(
    params: Mapping[str, Any], into: Target, password: str | None, *, family: str
) -> dict[str, Any]:
    """``params`` aimed at ``into`` instead, every where-and-who keyword explicit (nothing
    left for the environment to fill in); the rest (``sslmode``, timeouts) kept."""
    out = {k: v for k, v in params.items() if k not in WHERE_AND_WHO}
    endpoint = into.endpoints[0]
    if family == PG8000:
        if endpoint.host.startswith("/"):
            out["unix_sock"] = f"{endpoint.host}/.s.PGSQL.{endpoint.port}"
        else:
            out.update(host=endpoint.host, port=endpoint.port)
        out.update(database=into.dbname, user=into.user)
    elif family == ASYNCPG:
        out.update(host=endpoint.host, port=endpoint.port, database=into.dbname, user=into.user)
    else:
        out.update(host=endpoint.host, port=str(endpoint.port), dbname=into.dbname, user=into.user)
        # explicit, so that neither $PGHOSTADDR nor a service file can supply one
        out["hostaddr"] = endpoint.host if _is_address(endpoint.host) else ""
    if password is not None:
        out["password"] = password
    return out


# -- libpq ----------------------------------------------------------------------------------
def _libpq_target(
    given: Mapping[str, str],
    environ: Mapping[str, str],
    *,
    services: bool = True,
    hostaddr: bool = True,
) -> Target:
    """libpq's completion (``services``, ``hostaddr`` false: asyncpg's, which has neither)."""
    if "database" in given and "dbname" not in given:
        given = {**given, "dbname": given["database"]}  # asyncpg and SQLAlchemy spell it so
    values = dict(given)
    service = values.get("service") or (environ.get("PGSERVICE") if services else None)
    if services and service:
        for key, value in _service(service, environ).items():
            values.setdefault(key, value)
    for key, variable in ENV_DEFAULTS.items():
        if key not in values and environ.get(variable) and key != "service":
            values[key] = environ[variable]
    if not hostaddr:
        values.pop("hostaddr", None)
    user = values.get("user") or _os_user()
    hosts = (values.get("hostaddr") or values.get("host") or "").split(",")
    ports = (values.get("port") or str(DEFAULT_PORT)).split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    endpoints = tuple(
        Endpoint(_host(host), _port(port)) for host, port in zip(hosts, ports, strict=False)
    )
    return Target(endpoints, values.get("dbname") or user, user)


def _dsn_as_libpq(dsn: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except Exception:
        raise GuardRefused("refused a connection with a DSN that libpq cannot read") from None


def _dsn_as_url(dsn: str) -> dict[str, str]:
    """A DSN read as asyncpg reads it: the URL's host, port and path win over its query."""
    if "://" not in dsn:
        return _dsn_as_libpq(dsn)
    parts = urlsplit(dsn)
    values = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # several hosts, or a port that is no number
        raise GuardRefused(
            "refused a connection with a DSN that asyncpg and libpq may read differently"
        ) from None
    if host:
        values["host"] = unquote(host)
    if port:
        values["port"] = str(port)
    if parts.path.strip("/"):
        values["dbname"] = unquote(parts.path.strip("/"))
    if parts.username:
        values["user"] = unquote(parts.username)
    values.pop("database", None)
    return values


def _service(name: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The keywords of service ``name`` from the service files libpq reads first.

    A service found in none of them (libpq might still find it in its compiled-in
    system folder) is refused: the guard cannot see where it points.
    """
    files = [Path(environ.get("PGSERVICEFILE") or Path.home() / ".pg_service.conf")]
    if environ.get("PGSYSCONFDIR"):
        files.append(Path(environ["PGSYSCONFDIR"]) / "pg_service.conf")
    for path in files:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if parser.has_section(name):
            return {k.lower(): v for k, v in parser.items(name)}
    raise GuardRefused(
        f"refused a connection through service {name!r}: not in "
        f"{', '.join(str(f) for f in files)}, so the guard cannot see where it points"
    )


# -- pg8000 ---------------------------------------------------------------------------------
def _pg8000_target(given: Mapping[str, str], sock: Any = None) -> Target:
    user = given.get("user") or _os_user()
    socket = given.get("unix_sock")
    if given.get("sock"):  # a connected socket of the caller's: where it is connected to
        endpoint = _peer(sock) or Endpoint("(a socket given by the caller)", 0)
    elif socket:
        path = Path(os.path.realpath(socket))
        found = SOCKET_FILE.match(path.name)
        endpoint = (
            Endpoint(str(path.parent), int(found.group(1))) if found else Endpoint(str(path), 0)
        )
    else:
        endpoint = Endpoint(_host(given.get("host") or "localhost"), _port(given.get("port", "")))
    return Target((endpoint,), given.get("database") or given.get("dbname") or user, user)


def _peer(sock: Any) -> Endpoint | None:
    """The far end of a connected socket, or None when it cannot say (then refused:
    nowhere the guard can see)."""
    try:
        return peer_endpoint(sock.getpeername())
    except (AttributeError, OSError, TypeError):
        return None


def peer_endpoint(address: Any) -> Endpoint | None:
    """A socket's peer address as a place: ``(host, port, ...)``, or a Unix socket's file
    path (its folder and the port in its name); None for anything else."""
    try:
        if isinstance(address, tuple) and len(address) >= 2:
            return Endpoint(_host(str(address[0])), int(address[1]))
        if isinstance(address, (str, bytes)) and address:
            folder, _, name = os.fsdecode(address).rpartition("/")
            found = SOCKET_FILE.match(name)
            return Endpoint(_host(folder or "/"), int(found.group(1))) if found else None
    except (TypeError, ValueError):
        return None
    return None


# -- shared ---------------------------------------------------------------------------------
def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def compared_host(host: str) -> str:
    """``host`` as the allow-list holds it (a driver's report of where it connected too)."""
    return _host(host)


def _host(host: str) -> str:
    host = host.strip()
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("/"):
        return os.path.realpath(host)  # symlinks resolved: the kernel's path, not the text
    return host.lower().rstrip(".")


def _port(port: str) -> int:
    try:
        return int(port.strip() or DEFAULT_PORT)
    except ValueError:
        raise GuardRefused(  # not shown: a URL's unencoded "/" in a password ends up here
            "refused a connection: its port is not a number (in a URL, a password holding "
            "'/' or '@' must be percent-encoded: %2F, %40)"
        ) from None


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
