"""Where the guard sits: the places every PostgreSQL connection of the process passes.

Before a connection is opened, on its final parameters:

- SQLAlchemy: ``DefaultDialect.connect``, the one call every engine's pool makes
  after every ``do_connect`` listener has had its say (a listener added to an
  engine later, such as one that injects a token, may still change the
  parameters: so the check comes after all of them);
- psycopg 3: ``Connection._get_connection_params``, its documented hook for
  "manipulate connection parameters before connecting", for code that connects
  without SQLAlchemy (our own admin connections among it).

While a check migrates, other dialects too: the same ``DefaultDialect.connect``
for every dialect (SQLite, MySQL...), and the standard library's
``sqlite3.connect`` for code that uses it directly, both before the driver is
called (no SQLite file is created); see ``migration``.

After it is opened, as the net for whatever the checks before misread (a service
file libpq reads otherwise, an engine's ``creator=`` or ``async_creator=``, a
``do_connect`` listener that connects by itself): each driver's connection, as
soon as it is made (and, for what no driver hook made, SQLAlchemy's pool
``connect`` event), is judged by what it really reached (``reached``) and closed,
before any statement of the caller's, unless it is allowed. A pooled connection
made before the guard was armed is judged the first time it is checked out.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import inspect
import sys
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ..foundation.errors import GuardRefused
from ..foundation.urls import escaped
from .migration import other_target, sqlite_target
from .reached import (
    Reached,
    asyncpg_reached,
    cursor_reached,
    pg8000_reached,
    psycopg2_reached,
    psycopg_reached,
)
from .target import driver_family

if TYPE_CHECKING:
    from .core import Guard

#: The guard the hooks consult while installed.
_guard: Guard | None = None
#: How to undo each hook, in the order put in place (``remove`` runs them backwards).
_undo: list[Callable[[], None]] = []
#: Connections a driver's hook judged already (the pool's net does not ask them again).
_judged: weakref.WeakSet[Any] = weakref.WeakSet()
POSTGRESQL_MODULES = ("psycopg", "psycopg2", "pg8000", "asyncpg")


def install(guard: Guard) -> None:
    """Put the hooks in place (once; ``remove`` takes them out)."""
    global _guard
    if _undo:
        return
    _guard = guard
    from sqlalchemy import event
    from sqlalchemy.engine.default import DefaultDialect
    from sqlalchemy.pool import Pool

    _replace(DefaultDialect, "connect", _checked_dialect_connect(DefaultDialect.connect))
    event.listen(Pool, "connect", _verify_connected)
    _undo.append(lambda: event.remove(Pool, "connect", _verify_connected))
    # A connection pooled before the guard was armed (markers-only runs arm it when
    # collection ends, after an application imported then may have connected): judged
    # the first time it is handed out.
    event.listen(Pool, "checkout", _verify_checked_out)
    _undo.append(lambda: event.remove(Pool, "checkout", _verify_checked_out))
    event.listen(Pool, "connect", _note_run)
    _undo.append(lambda: event.remove(Pool, "connect", _note_run))
    event.listen(Pool, "checkout", _connected_in_this_run)
    _undo.append(lambda: event.remove(Pool, "checkout", _connected_in_this_run))
    _patch_drivers()


def remove() -> None:
    while _undo:
        _undo.pop()()


def _replace(owner: Any, name: str, replacement: Any) -> None:
    """``owner.name = replacement`` until ``remove`` (the attribute as the owner holds it:
    a classmethod stays a classmethod)."""
    original = vars(owner)[name]
    setattr(owner, name, replacement)
    _undo.append(lambda: setattr(owner, name, original))


def _check(params: dict[str, Any], family: str) -> dict[str, Any] | None:
    __tracebackhide__ = True
    if _guard is None or _asking.get():
        return None
    return _guard.check(params, family=family)


#: Set while the guard itself asks a place which server it is (``reached.identity_at``):
#: its own connection, aimed with every keyword explicit, is neither checked nor judged.
_asking: ContextVar[bool] = ContextVar("reynard_db_guard_asking", default=False)


@contextmanager
def guard_asking() -> Iterator[None]:
    """The guard's own connection, opened inside the block, passes its hooks."""
    token = _asking.set(True)
    try:
        yield
    finally:
        _asking.reset(token)


# -- psycopg ------------------------------------------------------------------------------
def _checked_params(original: Any) -> Any:
    """``original`` (a classmethod, sync or async) followed by the guard's check."""
    function = original.__func__
    if inspect.iscoroutinefunction(function):

        async def checked_async(klass: type, /, conninfo: str, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            params = await function(klass, conninfo, **kwargs)
            return _check(params, "libpq") or params

        return classmethod(checked_async)

    def checked(klass: type, /, conninfo: str, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        params = function(klass, conninfo, **kwargs)
        return _check(params, "libpq") or params

    return classmethod(checked)


# -- the other drivers, called directly ------------------------------------------------------
def _patch_drivers() -> None:
    """psycopg 3, psycopg2, asyncpg and pg8000, at the call every connect of theirs makes (so a
    ``connect`` imported by name is guarded too): now if imported, else when they are
    (importing them all up front would cost an active run tens of milliseconds)."""
    for name, patch in ON_IMPORT.items():
        if name in sys.modules:
            patch(sys.modules[name])
    finder = _PatchOnImport()
    sys.meta_path.insert(0, finder)

    def take_out() -> None:
        if finder in (sys.meta_path or ()):
            sys.meta_path.remove(finder)

    _undo.append(take_out)


def _patch_psycopg(psycopg: Any) -> None:
    for cls in (psycopg.Connection, psycopg.AsyncConnection):
        original = vars(cls).get("_get_connection_params")
        if original is not None:  # an older psycopg: SQLAlchemy's hooks still guard
            _replace(cls, "_get_connection_params", _checked_params(original))
    # Each connect (sync or async, ``psycopg.connect`` bound at import among them) makes
    # its connection in this generator: the net judges it there, once connected.
    owner = next((c for c in psycopg.Connection.__mro__ if "_connect_gen" in vars(c)), None)
    if owner is not None:  # (else SQLAlchemy's pool net still judges its connections)
        _replace(owner, "_connect_gen", _judged_connect_gen(vars(owner)["_connect_gen"]))


def _judged_connect_gen(original: Any) -> Any:
    function = original.__func__

    def connect_gen(klass: type, /, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        conn = yield from function(klass, *args, **kwargs)
        try:
            _judge(conn, psycopg_reached)
        except BaseException:
            conn.pgconn.finish()  # (an async connection's ``close`` is a coroutine)
            raise
        return conn

    return classmethod(connect_gen)


def _patch_psycopg2(psycopg2: Any) -> None:
    _replace(psycopg2, "_connect", _psycopg2_connect(psycopg2._connect))


def _patch_pg8000(core: Any) -> None:
    connection = core.CoreConnection
    _replace(connection, "__init__", _pg8000_init(connection.__init__))


def _patch_asyncpg(connect_utils: Any) -> None:
    _replace(connect_utils, "_connect", _asyncpg_connect(connect_utils._connect))


def _patch_sqlite3(sqlite3: Any) -> None:
    # ``sqlite3.connect`` and ``sqlite3.dbapi2.connect`` (what SQLAlchemy calls) are two names
    for module in (sqlite3, sqlite3.dbapi2):
        _replace(module, "connect", _sqlite3_connect(module.connect))


#: The module whose import completes a driver, and how to guard it.
DRIVER_PATCHES: dict[str, Callable[[Any], None]] = {
    "psycopg": _patch_psycopg,  # psycopg 3: not imported by a verb that never connects
    "psycopg2": _patch_psycopg2,
    "pg8000.core": _patch_pg8000,
    "asyncpg.connect_utils": _patch_asyncpg,
}
#: What is guarded when imported: the PostgreSQL drivers, and the standard library's
#: SQLite (refused only while a check migrates; no reason to arm a child's guard).
ON_IMPORT: dict[str, Callable[[Any], None]] = {**DRIVER_PATCHES, "sqlite3": _patch_sqlite3}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Guards a driver right after it is first imported while the guard is armed."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in ON_IMPORT or _guard is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            if _undo:  # still installed
                ON_IMPORT[name](module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _psycopg2_connect(original: Any) -> Any:
    def connect(dsn: str, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        replacement = _check({"dsn": dsn}, "libpq")
        if replacement is not None:
            from psycopg.conninfo import make_conninfo

            dsn = make_conninfo("", **replacement)
        conn = original(dsn, *args, **kwargs)
        if not (kwargs.get("async_") or kwargs.get("async")):  # not connected yet: see README
            _judge_or_close(conn, psycopg2_reached)
        return conn

    return connect


def _pg8000_init(original: Any) -> Any:
    def init(self: Any, user: Any, *args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True
        names = ("host", "database", "port", "password", "source_address", "unix_sock")
        kwargs.update(zip(names, args, strict=False))  # positional as pg8000 declares them
        params = {"host": "localhost", "port": 5432, **kwargs, "user": user}
        replacement = _check(params, "pg8000")
        if replacement is not None:
            kwargs = {k: v for k, v in kwargs.items() if k not in ("host", "unix_sock", "sock")}
            kwargs.update(replacement)
            user = kwargs.pop("user")
        original(self, user, **kwargs)
        _judge_or_close(self, pg8000_reached)

    return init


#: What asyncpg's connect takes that says where it goes (``service``: with a ``dsn`` only).
ASYNCPG_WHERE = ("dsn", "host", "port", "user", "database", "service", "servicefile")


def _asyncpg_connect(original: Any) -> Any:
    async def connect(**kwargs: Any) -> Any:
        __tracebackhide__ = True
        params = {k: kwargs.get(k) for k in ASYNCPG_WHERE}
        params["password"] = kwargs.get("password")
        replacement = _check({k: v for k, v in params.items() if v is not None}, "asyncpg")
        if replacement is not None:
            kwargs.update({k: None for k in ASYNCPG_WHERE if k in kwargs})  # (older: no service)
            kwargs.update(replacement)
        conn = await original(**kwargs)
        try:
            _judge(conn, await asyncpg_reached(conn))
        except BaseException:
            conn.terminate()
            raise
        return conn

    return connect


def _sqlite3_connect(original: Any) -> Any:
    def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if _guard is not None:
            _guard.check_other(lambda: sqlite_target(database))
        return original(database, *args, **kwargs)

    return connect


# -- SQLAlchemy -----------------------------------------------------------------------------
def _checked_dialect_connect(original: Any) -> Any:
    def connect(dialect: Any, *cargs: Any, **cparams: Any) -> Any:
        __tracebackhide__ = True
        if dialect.name != "postgresql":
            if _guard is not None:
                _guard.check_other(lambda: other_target(dialect, cargs, cparams))
        else:
            extra = {k: cparams.pop(k) for k in ("async_creator_fn",) if k in cparams}
            params = dict(cparams)
            positional = [a for a in cargs if isinstance(a, str)]
            if positional:
                params.setdefault("dsn", positional[0])
            replacement = _check(params, driver_family(dialect.driver))
            if replacement is not None:
                cargs, cparams = (), replacement
            cparams.update(extra)
        return original(dialect, *cargs, **cparams)

    return connect


#: Where a pooled connection notes the check's migration (env.py run) it was opened in.
RUN_KEY = "reynard_db_migration"


def _connected_in_this_run(dbapi_connection: Any, connection_record: Any, _proxy: Any) -> None:
    """While a check migrates, a pooled connection opened before this ``env.py`` run (an
    application's engine, kept in a module across runs and checks) is replaced by a new
    one, SQLAlchemy's way (``DisconnectionError`` in ``checkout``): each run starts on a
    session as new as a fresh ``alembic`` command's, on the current throw-away database."""
    guard = _guard
    migration = guard.current_migration if guard is not None and guard.armed else None
    if migration is None or not migration.only:
        return
    if connection_record.info.get(RUN_KEY) is not migration:
        from sqlalchemy.exc import DisconnectionError

        raise DisconnectionError("opened before this env.py run: a new connection instead")


def _note_run(_dbapi_connection: Any, connection_record: Any) -> None:
    """SQLAlchemy's pool ``connect`` event: the check's migration (if any) a new
    connection is opened in (see ``_connected_in_this_run``)."""
    guard = _guard
    if guard is not None and guard.current_migration is not None:
        connection_record.info[RUN_KEY] = guard.current_migration


# -- the net ----------------------------------------------------------------------------
def _judge(conn: Any, reached: Reached | Callable[[Any], Reached]) -> None:
    """What ``conn`` reached (or how to ask it) judged by the guard, while armed."""
    __tracebackhide__ = True
    guard = _guard
    if guard is None or not guard.armed or _asking.get():
        return
    if callable(reached):
        try:
            reached = reached(conn)
        except Exception as exc:  # a server that cannot say (not PostgreSQL, a pooler's console)
            raise GuardRefused(
                "refused a connection: could not ask the server what it reached "
                f"({escaped(str(exc))})"
            ) from None
    guard.judge(reached)
    with suppress(TypeError):  # not weakly referable: the pool's net asks again
        _judged.add(conn)


def _judge_or_close(conn: Any, reached: Callable[[Any], Reached]) -> None:
    __tracebackhide__ = True
    try:
        _judge(conn, reached)
    except BaseException:
        conn.close()
        raise


#: Each driver's connection base class, as ``(module, attribute)``: an application's
#: subclass (a ``creator=`` returning ``AppConnection(...)``) is a driver's connection too.
_DRIVER_BASES = (
    ("psycopg", "BaseConnection"),
    ("psycopg2.extensions", "connection"),
    ("pg8000.core", "CoreConnection"),
    ("asyncpg.connection", "Connection"),
)


def _is_postgresql(connection: Any) -> bool:
    """Whether ``connection`` is a PostgreSQL driver's, by its class's module or by the
    driver classes it derives from (of the drivers imported: one not imported made none)."""
    module = type(connection).__module__
    if module.split(".")[0] in POSTGRESQL_MODULES or module.startswith(
        "sqlalchemy.dialects.postgresql"
    ):
        return True
    return any(_derives_from(connection, name, attribute) for name, attribute in _DRIVER_BASES)


def _derives_from(connection: Any, module: str, name: str) -> bool:
    """``connection`` is an instance of ``module.name`` (False when it is not imported)."""
    base = getattr(sys.modules.get(module), name, None)
    return isinstance(base, type) and isinstance(connection, base)


def _verify_connected(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLAlchemy's pool ``connect`` event: the net for a connection no driver hook judged
    (one a ``creator=`` opened at a driver's lowest level)."""
    __tracebackhide__ = True
    if not _is_postgresql(dbapi_connection):
        return
    driver_connection = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    if driver_connection in _judged:
        return
    if hasattr(driver_connection, "pgconn"):  # psycopg 3's, made at libpq's level
        _judge_or_close(driver_connection, psycopg_reached)
    elif _derives_from(driver_connection, "psycopg2.extensions", "connection"):
        _judge_or_close(driver_connection, psycopg2_reached)  # read raw, not typecast
    elif _derives_from(driver_connection, "pg8000.core", "CoreConnection"):
        _judge_or_close(driver_connection, pg8000_reached)
    else:
        _judge_or_close(dbapi_connection, cursor_reached)
        with suppress(TypeError):
            _judged.add(driver_connection)


def _verify_checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    __tracebackhide__ = True
    _verify_connected(dbapi_connection, record)
