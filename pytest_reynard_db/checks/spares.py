"""Check children forked ahead, from pytest before any conftest is imported, or from
``reynard-migrate check`` before its server starts.

``pytest --reynard-db-checks`` in a run that is not distributed forks one child per
database at the plugin's first hook (``fork_spares``), and ``check`` of several databases
one per database it isolates (``spares_while``), for ``isolated.IsolatedChild`` to use
instead of starting an interpreter: the child holds what pytest had imported
(pytest-alembic's SQLAlchemy and Alembic: a few hundred ms an interpreter would spend
again) and imports the checks' modules on its own core while pytest collects. It is
made an interpreter's equal (its standard streams, its own allow-list file; told the
parent's environment, working directory and allow-list with its checks), and it is
forked only while the process holds nothing an interpreter started for the checks
would not (``fork_spares``' rules); otherwise the checks start an interpreter.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import sysconfig
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from ..foundation.errors import TERMINATING
from ..foundation.forking import LINUX, ForkedProcess, flush_standard_streams, threads


class Spare:
    """A child forked from pytest before any conftest or test module was imported, for
    an ``IsolatedChild`` to use later.

    It has imported what pytest and its plugins imported (pytest-alembic: SQLAlchemy
    and Alembic) and nothing of the application, so it is as clean as an interpreter
    started for the checks, without paying a few hundred ms to import them again; it
    imports the checks' own modules at once, on its own core, while pytest collects.
    ``fork_spares`` makes them only while that holds.
    """

    def __init__(self, earlier: Sequence[Spare] = ()) -> None:
        """``earlier``: the spares forked before this one, whose ends of the pipes this
        child closes (a copy of a request pipe's end would keep its reader waiting)."""
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        flush_standard_streams()  # not written twice, by both processes
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its results are what the tests read
            # As CPython advises for a fork without exec (and as the run's agent does): the
            # collector leaves what pytest made alone, its pages stay shared with pytest.
            gc.freeze()
            code = 2
            try:
                os.close(requests_write)
                os.close(replies_read)
                for other in earlier:
                    other.forget()
                _as_a_new_interpreter()
                from .child import serve

                code = serve(
                    os.fdopen(requests_read, encoding="utf-8"),
                    os.fdopen(replies_write, "w", encoding="utf-8"),
                    forked=True,
                )
            finally:
                flush_standard_streams()
                with suppress(Exception):  # its own allow-list file, if it made one
                    from ..guard import inherit

                    inherit.withdraw()
                with suppress(Exception):  # its own folder, which the exit it skips removes
                    from ..postgres.runas import remove_process_scratch

                    remove_process_scratch()
                # pytest's clean-up, atexit and buffers are the parent's, not ours
                os._exit(code)
        os.close(requests_read)
        os.close(replies_write)
        self.process = ForkedProcess(pid, os.fdopen(requests_write, "w", encoding="utf-8"))
        self.replies = os.fdopen(replies_read, encoding="utf-8")

    def forget(self) -> None:
        """Close this process's ends of the spare's pipes, leaving the spare alone."""
        for stream in (self.process.stdin, self.replies):
            with suppress(OSError):
                if stream is not None:
                    os.close(stream.fileno())

    def close(self) -> None:
        """End a spare no database was given to: it holds nothing yet (no database, no
        connection), so it is killed, not kept waiting for its imports to end."""
        self.process.kill()
        self.process.wait()
        with suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        self.replies.close()


def _as_a_new_interpreter() -> None:  # pragma: no cover - in the forked child
    """What a forked child holds of pytest that an interpreter started for the checks
    would not: the standard streams pytest replaced (``--capture=sys`` keeps what is
    written to them in the parent's memory: the child writes to its descriptors, as an
    interpreter would), the guard's allow-list file (the parent's: ``inherit.forget``;
    the child adopts the parent's list when told its checks, ``child.serve``), and the
    parent's SIGTERM/SIGHUP handlers (``errors.die_after``'s would run the parent's
    clean-up here, its guard and its other children; ``child.serve`` sets the child's)
    and its Ctrl-C handler (``reynard-migrate``'s, which silences logging), and its
    stdin (``child.nothing_on_stdin``)."""
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    for number in TERMINATING:  # one ignored (``nohup``) stays so, as an interpreter's would
        if callable(signal.getsignal(number)):
            signal.signal(number, signal.SIG_DFL)
    if callable(signal.getsignal(signal.SIGINT)):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    from ..guard import inherit
    from .child import nothing_on_stdin

    nothing_on_stdin()
    inherit.forget()


class Spares:
    """Children forked ahead (``Spare``), taken one per database's checks; none left,
    an interpreter is started instead."""

    def __init__(self, spares: list[Spare]) -> None:
        self._spares = spares

    def take(self) -> Spare | None:
        return self._spares.pop(0) if self._spares else None

    def close(self) -> None:
        while self._spares:
            self._spares.pop().close()


@contextmanager
def spares_while(count: int, root: Path) -> Iterator[Spares]:
    """``fork_spares`` for the block: the ones no database was given to are ended after it
    (a command's; the plugin's live as long as its run)."""
    spares = fork_spares(count, root)
    try:
        yield spares
    finally:
        spares.close()


def fork_spares(count: int, root: Path) -> Spares:
    """``count`` spare children, forked now, if this process is still clean (else none:
    each database's checks start an interpreter):

    - Linux (``LINUX``);
    - one thread: a fork copies no other thread, nor releases the locks they held;
    - nothing imported but the standard library, installed libraries and this package:
      a plugin named with ``-p`` may be the application's, and an outer pytest running
      this one in-process has imported its tests;
    - none of those libraries is the application at ``root`` installed (a deployed
      image): no imported top-level name is also a module of ``root`` (or ``root/src``);
    - no ``MetaData`` of SQLAlchemy held by a module outside SQLAlchemy, Alembic and
      this package: models imported (by an entry-point plugin) before ``env.py`` runs
      are what an interpreter started for the checks would not have (issue 13).
    """
    if count <= 0 or not LINUX or threads() != 1 or not _only_libraries_imported(root):
        return Spares([])
    # Every check connects, and this process connects anyway (its server's start): imported
    # once here, not once per child on the checks' path (psycopg is no longer imported with
    # the servers' module, which this process had imported: the children then paid ~60 ms).
    import psycopg  # noqa: F401

    spares: list[Spare] = []
    for _ in range(count):
        spares.append(Spare(spares))
    return Spares(spares)


def _only_libraries_imported(root: Path) -> bool:
    """Whether ``sys.modules`` holds only what ``fork_spares`` allows."""
    paths = sysconfig.get_paths()
    places = [paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]
    places.append(str(Path(__file__).parent.parent))  # this package, installed or not
    libraries = _folders(places)
    # a console script's (``pytest``, ``reynard-migrate``): the entry point's wrapper
    scripts = _folders([paths["scripts"]] if "scripts" in paths else [])
    tops: set[str] = set()
    for name, module in list(sys.modules.items()):
        source = getattr(module, "__file__", None)
        allowed = libraries + scripts if name == "__main__" else libraries
        if source and not (
            source.startswith(allowed) or os.path.realpath(source).startswith(allowed)
        ):
            return False
        tops.add(name.partition(".")[0])
    project = [root, root / "src"]
    ours = __name__.partition(".")[0]  # this package: never the application (its own repo)
    for top in tops - set(sys.stdlib_module_names) - set(sys.builtin_module_names) - {ours}:
        if any(
            (where / f"{top}.py").exists() or (where / top / "__init__.py").exists()
            for where in project
        ):
            return False  # the application, installed
    return not _models_imported()


def _folders(places: Sequence[str]) -> tuple[str, ...]:
    """``places`` as prefixes of the files in them, as given and with links resolved."""
    return tuple(
        {os.path.join(path, "") for place in places for path in (place, os.path.realpath(place))}
    )


#: Values that hold no MetaData of their own (read past, for speed).
PLAIN = (
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    str,
    bytes,
    int,
    float,
    tuple,
    list,
    set,
    frozenset,
    type(None),
)
#: Modules whose ``MetaData`` are not an application's models.
OWN_METADATA = ("sqlalchemy", "alembic", "pytest_alembic", "pytest_reynard_db")


def _models_imported() -> bool:
    """Whether a module outside ``OWN_METADATA`` holds a SQLAlchemy ``MetaData`` at its
    top level: as a value, or in the attributes of a value (a declarative base class, an
    extension object such as Flask-SQLAlchemy's ``db``), directly or in a dict. Read with
    ``vars``: no property of the application runs (a proxy that raises is read past)."""
    sqlalchemy = sys.modules.get("sqlalchemy")
    if sqlalchemy is None:
        return False  # nothing could have made one
    metadata = sqlalchemy.MetaData

    def holds(value: object) -> bool:
        if isinstance(value, metadata):
            return True
        if isinstance(value, dict):
            return any(isinstance(item, metadata) for item in list(value.values()))
        return False

    skipped = {*OWN_METADATA, *sys.stdlib_module_names}
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in skipped or module is None:
            continue
        for value in list(getattr(module, "__dict__", {}).values()):
            if isinstance(value, metadata):
                return True
            if isinstance(value, PLAIN):
                continue
            try:
                attributes = list(vars(value).values())
            except Exception:
                continue
            if any(holds(attribute) for attribute in attributes):
                return True
    return False
