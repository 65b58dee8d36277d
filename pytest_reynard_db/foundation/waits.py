"""Waiting for a lock without waiting in silence or forever.

Every lock the harness waits on (the migration's advisory lock, the file lock
around a template build, the file lock of the reuse server) goes through here:
after ``SAY_AFTER`` seconds the wait is said once, with what is awaited and
who holds it; after ``timeout`` seconds it ends with ``LockTimeout`` (exit 1).
A file lock records its holder beside it (``<lock>.holder``: pid, command line,
since when) so that the waiting side can name it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import LockTimeout
from .urls import redact

#: How long a wait stays silent.
SAY_AFTER = 2.0
#: The default of ``--lock-timeout``: generous (a long migration holds the lock
#: that long), but finite.
DEFAULT_LOCK_TIMEOUT = 300.0

Say = Callable[[str], None]


def say_on_stderr(message: str) -> None:
    """Where waits are said by default: stderr (stdout carries results)."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def file_lock(
    path: Path | str,
    what: str,
    *,
    timeout: float = DEFAULT_LOCK_TIMEOUT,
    say: Say = say_on_stderr,
) -> Iterator[None]:
    """Hold the file lock ``path`` (``what`` says what it guards) for the block."""
    lock = FileLock(str(path))
    holder = Path(f"{path}.holder")
    try:
        lock.acquire(timeout=min(SAY_AFTER, timeout))
    except Timeout:
        say(f"reynard-db: waiting for {what} ({path}), held by {describe_holder(holder)}")
        try:
            lock.acquire(timeout=max(timeout - SAY_AFTER, 0.0))
        except Timeout:
            raise LockTimeout(
                f"gave up waiting for {what} after {timeout:g} s (--lock-timeout): "
                f"{path} is held by {describe_holder(holder)}"
            ) from None
    try:
        _write_holder(holder)
        yield
    finally:
        with suppress(OSError):
            holder.unlink()
        lock.release()


def describe_holder(holder: Path) -> str:
    """``pid N (command line), since HH:MM:SS`` from a holder record, as far as known."""
    try:
        record = json.loads(holder.read_text())
    except (OSError, ValueError):
        return "a process that left no record"
    since = time.strftime("%H:%M:%S", time.localtime(float(record.get("since", 0))))
    return f"pid {record.get('pid')} ({record.get('command', '?')}), since {since}"


def _write_holder(holder: Path) -> None:
    record = {"pid": os.getpid(), "command": _command_line(), "since": time.time()}
    with suppress(OSError):
        holder.write_text(json.dumps(record))


def _command_line(limit: int = 120) -> str:
    try:
        argv = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")
        line = " ".join(os.fsdecode(a) for a in argv if a)
    except OSError:
        line = " ".join(sys.argv)
    # One line; a --url on the command line may carry a password.
    line = " ".join(redact(line).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
