"""The plugin's fixtures: the server, the selected databases, connections and sessions
rolled back after each test, fresh databases and databases at any revision.

Each is a thin front over ``Provisioner`` (``provision``): every selected database is
migrated once into a template, and tests get clones of it or rolled-back
transactions on a session clone (one per registry name, shared by ``reynard_db`` and
``reynard_dbs``, dropped when the session ends).

A test asks for one database (``reynard_db``, ``reynard_db_connection``, ...) or
several (``reynard_dbs``, ``reynard_db_connections``): the single-database fixtures
give the first of several.

The mappings ``reynard_dbs``, ``reynard_db_connections`` and
``reynard_db_async_connections`` give: read-only, by registry name, and a name the test did
not ask for is a ``KeyError`` that says how to ask for it.

The seed hook: a project's data, written once into each template at heads.

``pytest_reynard_db_seed(name, connection)`` is a hook specification (added by
``hooks.pytest_addhooks``); a project implements it in a conftest (or a plugin module
named in ``pytest_plugins``). ``seed_of`` turns the implementations into a
``provision.Seed``: every implementation called on the template's connection, and a
digest of their code.

What counts as the seed's code: the whole source file of each implementation, not only
the function. A seed calls helpers and reads constants beside it; a stale seed gives
tests wrong data without a word, while a needless rebuild costs one migration. A seed
kept in a module of its own (``pytest_plugins = ["tests.seed"]``) is rebuilt only when
that module changes. Files the seed reads (a CSV) are not part of it.

A failing seed is one line naming the implementation's file and line (``SeedFailed``).
Imports nothing heavy: it is loaded with the plugin, active or not.
"""

from __future__ import annotations

import hashlib
import inspect
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from .stash import catch_harness_errors, provisioner_of, run_state

# Nothing heavy is imported here either: SQLAlchemy and the servers load in the fixtures.
if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from ..postgres import Server
    from ..provisioning.provision import TestDatabase


@pytest.fixture(scope="session")
def reynard_db_server(request: pytest.FixtureRequest) -> Server:
    """The run's PostgreSQL server: ``.url``, ``.create_database``, ``.drop_database``."""
    with catch_harness_errors(request):
        return run_state(request).server


@pytest.fixture(scope="session")
def reynard_db_name(request: pytest.FixtureRequest) -> str:
    """The registry name of the database a test runs against: the marker's (its first),
    else --reynard-db's first."""
    param = getattr(request, "param", None)
    return _selected(request, None if param is None else (param,))[0]


@pytest.fixture(scope="session")
def reynard_db_names(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The registry names of every database a test asks for: the marker's, else
    --reynard-db's."""
    return _selected(request, getattr(request, "param", None))


@pytest.fixture(scope="session")
def reynard_db(request: pytest.FixtureRequest, reynard_db_name: str) -> TestDatabase:
    """The selected database migrated to heads, for the whole session."""
    provisioner = provisioner_of(request)
    with catch_harness_errors(request):
        return provisioner.session_database(reynard_db_name)


@pytest.fixture(scope="session")
def reynard_dbs(
    request: pytest.FixtureRequest, reynard_db_names: tuple[str, ...]
) -> Mapping[str, TestDatabase]:
    """Registry name -> the database migrated to heads, for every database the test asks
    for. Session-scoped per set of names (a parameter, like the marker's database): each
    value is the session database ``reynard_db`` gives for that name."""
    provisioner = provisioner_of(request)
    with catch_harness_errors(request):
        return AskedFor(
            "reynard_dbs", {n: provisioner.session_database(n) for n in reynard_db_names}
        )


@pytest.fixture
def reynard_db_connection(
    request: pytest.FixtureRequest, reynard_db: TestDatabase
) -> Iterator[Connection]:
    """A connection in a transaction rolled back after the test, whatever the test commits.

    A test that ends that transaction itself (a raw ``COMMIT``, a DBAPI-level
    commit) fails at teardown, and the session database is replaced by a fresh
    clone: what it committed never reaches a later test. A server lost meanwhile is one
    line naming the database (see ``outer_transaction``).
    """
    from .outer_transaction import rolled_back

    with catch_harness_errors(request), rolled_back(reynard_db) as (connection, outcome):
        yield connection
    if not outcome.intact:
        replace_after_escape(request, "reynard_db_connection", [reynard_db])


@pytest.fixture
def reynard_db_connections(
    request: pytest.FixtureRequest,
    reynard_dbs: Mapping[str, TestDatabase],
    reynard_db: TestDatabase,
    reynard_db_connection: Connection,
) -> Iterator[Mapping[str, Connection]]:
    """Registry name -> a connection rolled back after the test, one per database the
    test asks for; the first database's is ``reynard_db_connection`` itself, so that
    ``reynard_db_session`` and the mapping see each other's writes."""
    from .outer_transaction import Outcome, rolled_back

    outcomes: list[tuple[TestDatabase, Outcome]] = []
    with catch_harness_errors(request), ExitStack() as stack:
        connections: dict[str, Connection] = {}
        for name, database in reynard_dbs.items():
            if database is reynard_db:
                connections[name] = reynard_db_connection
                continue
            connections[name], outcome = stack.enter_context(rolled_back(database))
            outcomes.append((database, outcome))
        yield AskedFor("reynard_db_connections", connections)
    escaped = [database for database, outcome in outcomes if not outcome.intact]
    if escaped:
        replace_after_escape(request, "reynard_db_connections", escaped)


@pytest.fixture
def reynard_db_session(
    request: pytest.FixtureRequest, reynard_db_connection: Connection, reynard_db: TestDatabase
) -> Iterator[Session]:
    """An ORM session on ``reynard_db_connection``; its commits become savepoints."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session

    from .outer_transaction import outer_transaction_intact, server_gone_as_error

    session = Session(bind=reynard_db_connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        with catch_harness_errors(request), server_gone_as_error(reynard_db):
            try:
                session.close()
            except DBAPIError:
                # Its savepoint went with an outer transaction the test ended: the
                # connection fixture says so; anything else is the session's own error.
                if outer_transaction_intact(reynard_db_connection):
                    raise


@pytest.fixture
def reynard_db_fresh(
    request: pytest.FixtureRequest, reynard_db_name: str
) -> Iterator[TestDatabase]:
    """A database of this test's own, cloned from the migrated template, dropped after."""
    provisioner = provisioner_of(request)
    with catch_harness_errors(request):
        database = provisioner.clone(reynard_db_name, purpose="fresh")
    yield database
    provisioner.drop(database)


@pytest.fixture(scope="session")
def reynard_db_factory(request: pytest.FixtureRequest) -> Callable[..., TestDatabase]:
    """``factory(name, revision="heads")``: a database at any revision (templates cached)."""
    provisioner = provisioner_of(request)

    def factory(name: str, revision: str = "heads") -> TestDatabase:
        with catch_harness_errors(request):
            return provisioner.clone(name, revision, purpose="rev")

    return factory


def _selected(request: pytest.FixtureRequest, param: tuple[str, ...] | None) -> tuple[str, ...]:
    """The databases a test asks for: its marker's (``param``), else --reynard-db's;
    each known to the registry (else one line)."""
    state = run_state(request)
    if param is None and state.settings.from_markers:
        pytest.fail(
            "no database selected: this test has no @pytest.mark.reynard_db(NAME) and no "
            "--reynard-db=NAME was given",
            pytrace=False,
        )
    names = param or state.settings.databases
    if not names:
        pytest.fail("no database selected: pass --reynard-db=NAME", pytrace=False)
    with catch_harness_errors(request):
        for name in names:
            state.registry.get(name)
    return tuple(names)


def replace_after_escape(
    request: pytest.FixtureRequest, fixture: str, databases: list[TestDatabase]
) -> None:
    """Replace the session databases with fresh clones, then fail the test saying why."""
    with catch_harness_errors(request):
        for database in databases:
            provisioner_of(request).replace(database)
    which = ", ".join(database.name for database in databases)
    pytest.fail(
        f"{fixture}: {request.node.name} ended the outer transaction itself "
        "(a raw COMMIT or ROLLBACK, or a commit on the DBAPI connection), so what it wrote "
        f"before may have been committed; the session database {which} was replaced "
        "by a fresh clone of its template. Use connection.commit() (a savepoint here), or "
        "reynard_db_fresh for code that must really commit.",
        pytrace=False,
    )


# -- asked -------------------------------------------------------------------------------

V = TypeVar("V")


class AskedFor(Mapping[str, V]):
    """The databases a test asked for, by name, in the order asked (read-only)."""

    def __init__(self, fixture: str, values: Mapping[str, V]) -> None:
        self._fixture = fixture
        self._values = dict(values)

    def __getitem__(self, name: str) -> V:
        try:
            return self._values[name]
        except KeyError:
            asked = ", ".join(repr(n) for n in self._values)
            wanted = ", ".join(repr(n) for n in [*self._values, name])
            raise KeyError(
                f"{self._fixture}[{name!r}]: this test asked for {asked} only; ask for "
                f"{name!r} too: @pytest.mark.reynard_db({wanted}), or "
                f"--reynard-db={','.join([*self._values, name])}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"{self._fixture}({self._values!r})"


# -- seeding -----------------------------------------------------------------------------

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ..provisioning.provision import Seed

HOOK = "pytest_reynard_db_seed"


@pytest.hookspec
def pytest_reynard_db_seed(name: str, connection: Connection) -> None:
    """Write a project's reference data into the template of database ``name`` (its
    registry name), once, after it is migrated to heads and before any test database
    is cloned from it: every fixture's database then has it.

    ``connection``: a SQLAlchemy Connection to the template, committed when every
    implementation has returned (``connection.commit()`` along the way works too). Its
    code (the file defining it) is part of the template's digest: changing it builds a
    new template.
    """


def seed_of(config: pytest.Config) -> Seed | None:
    """The run's seed, or None when no conftest implements the hook (templates then
    keep the names they had without one)."""
    from ..provisioning.provision import Seed

    implementations = config.pluginmanager.hook.pytest_reynard_db_seed.get_hookimpls()
    if not implementations:
        return None
    files = tuple(dict.fromkeys(_source_file(impl.function) for impl in implementations))
    root = config.rootpath.resolve()

    def fill(name: str, connection: Connection) -> None:
        try:
            config.hook.pytest_reynard_db_seed(name=name, connection=connection)
        except Exception as exc:
            raise _failure(name, exc, files, root) from exc

    return Seed(fill=fill, digest=_digest(files, root))


def _source_file(function: Any) -> Path:
    return Path(inspect.getsourcefile(function) or inspect.getfile(function)).resolve()


def _digest(files: tuple[Path, ...], root: Path) -> str:
    """Each file's path (relative to the rootdir: two checkouts share a template) and content."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(_shown(path, root)).encode())
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()[:12]


def _failure(name: str, exc: Exception, files: tuple[Path, ...], root: Path) -> Exception:
    """``SeedFailed`` naming the innermost line of the seed's own files in the traceback
    (where the seed called what failed, if it failed deeper)."""
    from ..foundation.errors import SeedFailed
    from ..foundation.urls import one_line

    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).resolve() in files
    ]
    where = f"{_shown(Path(frames[-1].filename), root)}:{frames[-1].lineno}" if frames else HOOK
    reason = one_line(str(exc).strip().splitlines()[0] if str(exc).strip() else "", 300)
    return SeedFailed(
        f"seeding database {name!r} failed at {where}: {type(exc).__name__}"
        + (f": {reason}" if reason else "")
        + "; the template was not kept"
    )


def _shown(path: Path, root: Path) -> Path:
    resolved = path.resolve()
    return resolved.relative_to(root) if resolved.is_relative_to(root) else resolved
