"""The guard in the run's child interpreters: a test's ``subprocess`` running the
application's CLI, a ``multiprocessing`` worker started with ``spawn``, a script that
``env.py`` runs.

A child does not inherit the parent's hooks, only its environment. So while the
guard is armed, ``$REYNARD_DB_GUARD`` names a file holding the allow-list (a file,
not the list itself: one variable may not exceed 128 KiB on Linux, and a long run on
an existing server allows thousands of databases; and a child reads the list as it
is when it connects). Every interpreter of this environment reads that variable at
start-up (the package's ``pytest_reynard_db_guard.pth``, see ``child_guard``), whatever
its ``$PYTHONPATH`` and even with ``-I``; ``$PYTHONPATH`` also starts with
``startup/``, whose ``sitecustomize`` does the same in another interpreter (or refuses
its drivers, without this package). The guard is armed as soon as the child imports a
PostgreSQL driver (never before: a child that does not connect pays nothing). A child
started with an environment without the variable, or with ``-S``, and non-Python
clients (``psql``) are out of its reach.
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..foundation.filesystem import replace_file

#: The file of the allow-list, JSON: ``{"hint": ..., "servers": [[host, port]],
#: "databases": [[host, port, name]], "identities": [[host, port, system_identifier]]}``.
GUARD_VARIABLE = "REYNARD_DB_GUARD"
#: How every allow-list file's name starts (then the pid of the process it is of).
PREFIX = "reynard-db-guard-"
#: The folder of the ``sitecustomize`` that arms the guard of a child of another
#: interpreter (this environment's have the package's ``.pth``).
STARTUP = str(Path(__file__).resolve().with_name("startup"))
#: What the environment held before the first ``export`` (None: not exported).
_before: dict[str, str | None] | None = None
#: This process's allow-list file, while exported.
_file: Path | None = None


def export(snapshot: dict[str, Any]) -> None:
    """Children started from now on (and those started before that have not connected
    yet) are guarded with ``snapshot`` (written whole: a child may read it at any moment)."""
    global _before, _file
    if _before is None or _file is None:
        _before = {name: os.environ.get(name) for name in (GUARD_VARIABLE, "PYTHONPATH")}
        _file = _new_file()
        os.environ[GUARD_VARIABLE] = str(_file)
        os.environ["PYTHONPATH"] = os.pathsep.join([STARTUP, *_paths_but_ours()])
    replace_file(_file, _line(snapshot), prefix=f".{_prefix()}")


def forget() -> None:
    """In a child forked from an armed process: the allow-list file is the parent's, not
    this process's to write or remove; the next ``export`` makes one of its own."""
    global _before, _file
    _before = None
    _file = None


def append(addition: dict[str, list[list[Any]]]) -> None:
    """``addition`` (``servers`` or ``databases`` allowed since) at the file's end: one
    line, one write, so that a run allowing thousands of databases stays linear."""
    if _file is None:
        return
    descriptor = os.open(_file, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(descriptor, _line(addition))
    finally:
        os.close(descriptor)


def load(path: str) -> dict[str, Any]:
    """The allow-list a child adopts: the lines of ``path`` merged (a last line still
    being written, without its newline, is not read)."""
    merged: dict[str, Any] = {
        "hint": "--reynard-db-allow=URL",
        "servers": [],
        "databases": [],
        "identities": [],
    }
    with open(path, encoding="utf-8") as listed:
        for line in listed:
            if not line.endswith("\n"):
                break
            entry = json.loads(line)
            merged["hint"] = entry.get("hint", merged["hint"])
            merged["servers"] += entry.get("servers", [])
            merged["databases"] += entry.get("databases", [])
            merged["identities"] += entry.get("identities", [])
    return merged


def _prefix() -> str:
    return f"{PREFIX}{os.getpid()}-"


def _new_file() -> Path:
    """This process's allow-list file, named by its pid: removed when the process exits,
    or by the next run if it was killed (``_sweep_dead``)."""
    _sweep_dead()
    descriptor, name = tempfile.mkstemp(prefix=_prefix(), suffix=".json")
    os.close(descriptor)
    path = Path(name)
    # A child interpreter stays armed until it exits: its file goes then (not in a forked
    # child that exits through atexit: the file is its parent's).
    atexit.register(_remove_at_exit, path, os.getpid())
    return path


def _remove_at_exit(path: Path, owner: int) -> None:
    if os.getpid() == owner:
        path.unlink(missing_ok=True)


def _sweep_dead() -> None:
    """Remove the allow-list files (and scratch files) of our processes that are gone."""
    for path in Path(tempfile.gettempdir()).glob(f"*{PREFIX}*"):
        pid = path.name.lstrip(".").removeprefix(PREFIX).split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with suppress(OSError):  # another run's sweep may be quicker
            if path.lstat().st_uid == os.geteuid():
                path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's: alive
        return True
    return True


def _line(entry: dict[str, Any]) -> bytes:
    return (json.dumps(entry) + "\n").encode()


def withdraw() -> None:
    """Children started from now on are not guarded (the environment as before ``export``;
    a ``$PYTHONPATH`` changed meanwhile keeps its change, without our folder)."""
    global _before, _file
    if _before is None:
        return
    before, _before = _before, None
    if _file is not None:
        _file.unlink(missing_ok=True)
        _file = None
    rest = _paths_but_ours()
    if rest or before["PYTHONPATH"] is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(rest)
    else:
        os.environ.pop("PYTHONPATH", None)
    previous = before[GUARD_VARIABLE]
    if previous is None:
        os.environ.pop(GUARD_VARIABLE, None)
    else:
        os.environ[GUARD_VARIABLE] = previous


def _paths_but_ours() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != STARTUP]
