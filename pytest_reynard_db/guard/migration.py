"""What env.py may reach while the harness migrates a throw-away database (``Guard.migrating``).

Each connection env.py (or the application it imports, or a revision) opens then is
one of three:

- to the throw-away database being migrated: opened as asked;
- to the database's own registered target (its production URL as the registry
  resolves it: ``$url_env``, a mirror's sources' variables, the ini's
  ``sqlalchemy.url``; see ``registered_targets``): redirected into the throw-away
  database, and said (``Guard.redirects``);
- to anything else (another PostgreSQL database or server, a SQLite file, any other
  dialect): refused before the driver connects, in one line naming the line of
  env.py or of the revision file that opened it and the masked target. The refusal
  is kept (``Migration.refused``): the migration fails with it even when the
  application catches the exception (``Guard.migrating`` raises it on the way out).

Outside a check (``only`` false: the pytest plugin's template builds, pytest-alembic's
fixtures, ``create``), the other databases of the run stay reachable as anywhere in
a test run, and other dialects (an application's SQLite test engine) untouched.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..foundation.errors import ConfigError, GuardRefused
from ..foundation.urls import shown_path
from .target import Endpoint, Target, url_target

#: The registered targets of the URL variables hidden from a test run (``hidden_variables``):
#: JSON ``{variable: [[[host, port], ...], dbname, user]}``, inherited by the run's children
#: (xdist workers, check interpreters) so that they know them too. No password, no URL.
HIDDEN_TARGETS = "REYNARD_DB_HIDDEN_TARGETS"


@dataclass(frozen=True)
class Refusal:
    """One connection refused while migrating: where it was opened, and why refused."""

    path: str | None
    line: int | None
    reason: str

    def where(self, shown: Callable[[str], str] = shown_path) -> str:
        """``<file>:<line>`` of the tree (``shown`` makes the path readable), else env.py."""
        return f"{shown(self.path)}:{self.line}" if self.path else "env.py"

    @property
    def message(self) -> str:
        return f"{self.where()}: {self.reason}"


@dataclass
class Migration:
    """One ``Guard.migrating`` block: where env.py migrates and what else it may reach."""

    #: The throw-away database (None: offline, ``--sql``: nothing to connect to).
    into: Target | None
    password: str | None
    #: The database's own registered targets: redirected into ``into``.
    own: tuple[Target, ...]
    #: The tree's folders (script_location, version_locations), resolved.
    places: tuple[str, ...]
    #: Only ``into`` (a check): other allowed databases and other dialects refused too.
    only: bool
    #: ``--sql``: env.py runs offline, every connection refused (``only``, no ``into``).
    offline: bool = False
    refused: list[Refusal] = field(default_factory=list)

    def is_own(self, target: Target) -> bool:
        """``target`` is one of the database's own (its database, on its servers; this
        machine's loopback names are one host)."""
        return any(
            target.dbname == own.dbname
            and {e.local() for e in target.endpoints} <= {e.local() for e in own.endpoints}
            for own in self.own
        )

    def refuse(self, shown: str) -> GuardRefused:
        """The refusal of a connection to ``shown`` (a masked target), kept."""
        path, line = opener(self.places)
        refusal = Refusal(path, line, f"refused a connection to {shown}: {self._why()}")
        self.refused.append(refusal)
        return GuardRefused(refusal.message)

    def _why(self) -> str:
        if self.offline:
            return (
                "--sql runs env.py offline, and it connects (it has no "
                "context.is_offline_mode() branch); nothing was connected to"
            )
        if self.only:
            may = "a check may reach only its throw-away database"
        else:
            may = "while the harness migrates, env.py may reach only this run's databases"
        return f"{may} (its own production URL is sent there)"


def opener(places: Sequence[str]) -> tuple[str | None, int | None]:
    """The innermost frame of the stack in a file of the tree (env.py, a revision): the
    line that opened the connection, or that imported the code that did."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if _below(_resolved(filename), tuple(places)):
            return filename, frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return None, None


@lru_cache(maxsize=1024)
def _resolved(filename: str) -> str:
    return os.path.realpath(filename) if not filename.startswith("<") else filename


def _below(path: str, places: tuple[str, ...]) -> bool:
    return any(path.startswith(place + os.sep) for place in places)


def tree_places(folders: Sequence[str | Path]) -> tuple[str, ...]:
    """The tree's folders as ``Migration.places`` compares them."""
    return tuple(dict.fromkeys(os.path.realpath(folder) for folder in folders))


# -- the database's own targets -----------------------------------------------------------
def registered_targets(
    variables: Sequence[str], ini_url: str | None, environ: Mapping[str, str] | None = None
) -> tuple[Target, ...]:
    """The targets of a database's production URL as the registry resolves it: each of
    ``variables`` (set, or hidden from a test run), and the ini's ``sqlalchemy.url``.
    What is no PostgreSQL URL (``alembic init``'s ``driver://...``) names nothing."""
    environ = os.environ if environ is None else environ
    hidden = _hidden(environ)
    found: list[Target] = []
    for name in variables:
        if environ.get(name):
            found += _target(environ[name])
        elif name in hidden:
            found.append(hidden[name])
    if ini_url:
        found += _target(ini_url)
    return tuple(dict.fromkeys(found))


def _target(url: str) -> list[Target]:
    try:
        return [url_target(url)]
    except (ConfigError, GuardRefused):
        return []


def _hidden(environ: Mapping[str, str]) -> dict[str, Target]:
    try:
        listed = json.loads(environ.get(HIDDEN_TARGETS) or "{}")
        return {
            name: Target(tuple(Endpoint(h, int(p)) for h, p in ends), str(db), str(user))
            for name, (ends, db, user) in listed.items()
        }
    except (ValueError, TypeError, AttributeError):
        return {}


def hidden_targets_json(saved: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """``HIDDEN_TARGETS`` once ``saved`` (variable -> URL) are hidden, inherited ones kept."""
    targets = _hidden(environ)
    for name, url in saved.items():
        targets.update((name, target) for target in _target(url))
    listed = {
        name: [[[e.host, e.port] for e in t.endpoints], t.dbname, t.user]
        for name, t in targets.items()
    }
    return json.dumps(listed, sort_keys=True)


# -- other dialects ---------------------------------------------------------------------------
def sqlite_target(database: Any) -> str:
    """A SQLite database as a URL (a file's absolute path; nothing was opened)."""
    name = os.fsdecode(database) if isinstance(database, (str, bytes, os.PathLike)) else ""
    if name and name != ":memory:" and not name.startswith("file:"):
        name = os.path.abspath(name)
    return f"sqlite:///{name}"


def other_target(dialect: Any, cargs: Sequence[Any], cparams: Mapping[str, Any]) -> str:
    """Where a non-PostgreSQL dialect's connect would go, as a URL without password."""
    if dialect.name == "sqlite":
        return sqlite_target(cargs[0] if cargs else cparams.get("database", ""))
    user = _first(cparams, "user", "username")
    port = _first(cparams, "port")
    host = _first(cparams, "host", "server", "dsn") + (f":{port}" if port else "")
    database = _first(cparams, "database", "db", "dbname", "service_name")
    return f"{dialect.name}+{dialect.driver}://{user + '@' if user else ''}{host}/{database}"


def _first(cparams: Mapping[str, Any], *keys: str) -> str:
    return next((str(cparams[k]) for k in keys if cparams.get(k) not in (None, "")), "")
