"""Files that several processes share: written whole or not at all, read only when
regular, and locked by one process at a time that says who it is.

Writing a file whole is the one way this package does it (``replace_file``,
``create_file``). The bytes go to a temp file beside the target (same filesystem, so the
last step is atomic), then ``os.replace`` puts it in place (a reader sees the old file or
the new one, never half of one), or ``os.link`` creates it (never over an existing file:
a revision file ``create`` writes). The temp file is this call's own (two processes
writing the same target at once each have theirs) and never outlives the call.
``refuse_non_regular``: a FIFO or a device named as a file is one line, not a hang.

Waiting for a lock is never silent nor endless. Every lock the harness waits on (the
migration's advisory lock, the file lock around a template build, the file lock of the
reuse server) goes through here: after ``SAY_AFTER`` seconds the wait is said once, with
what is awaited and who holds it; after ``timeout`` seconds it ends with ``LockTimeout``
(exit 1). A file lock records its holder beside it (``<lock>.holder``: pid, command line,
since when) so that the waiting side can name it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import ConfigError, LockTimeout
from .urls import redact, shown_path

#: What a path that is not a regular file is, by its mode's type.
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def replace_file(
    target: Path,
    data: bytes,
    *,
    prefix: str | None = None,
    mode_of: Path | None = None,
    durable: bool = False,
) -> None:
    """Put ``data`` at ``target``, whole or not at all.

    ``prefix``: how the temp file's name starts (default ``.<target's name>.``; it
    ends ``.tmp``); ``mode_of``: a file whose permission bits the new file takes;
    ``durable``: on disk (``fsync``) before it replaces ``target``.
    """
    scratch = _written(target, data, prefix=prefix, durable=durable)
    try:
        if mode_of is not None:
            shutil.copymode(mode_of, scratch)
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def create_file(target: Path, data: bytes, *, durable: bool = False) -> None:
    """Create ``target`` with ``data``, whole or not at all, and never over a file that
    exists (``FileExistsError``, nothing written): a link is atomic and never replaces."""
    scratch = _written(target, data, prefix=None, durable=durable)
    try:
        os.link(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)


def _written(target: Path, data: bytes, *, prefix: str | None, durable: bool) -> Path:
    """A temp file of this call's own beside ``target``, holding ``data`` (removed if the
    write fails)."""
    descriptor, name = tempfile.mkstemp(
        prefix=f".{target.name}." if prefix is None else prefix, suffix=".tmp", dir=target.parent
    )
    scratch = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    return scratch


def refuse_non_regular(path: Path, *, where: str = "") -> None:
    """A ``ConfigError`` naming ``path`` and its kind when it exists and is not a regular
    file (a symlink is followed), judged without opening it: reading a FIFO blocks until
    a writer comes (the CLI hung), a device such as ``/dev/zero`` never ends. ``where``:
    what to name first (the registry's file and key)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing: the caller's own error says so
    for test, kind in _KINDS:
        if test(mode):
            raise ConfigError(f"{where}{shown_path(path)} is {kind}, not a regular file")


# -- waiting for a lock ------------------------------------------------------------------


class LockBusy(Exception):
    """``FileLock.acquire`` gave up: another holder kept the lock until its timeout."""


class FileLock:
    """An exclusive ``flock(2)`` on a lock file, held by this object until ``release``:
    the lock filelock's ``UnixFileLock`` takes (the reaper's ``_unlink_if_free`` takes
    it to know a lock file free). The file is made if missing; its holder may remove it
    as it lets go (``release(remove=True)``): a lock taken on a file no longer at the
    path, by a process that opened it before, is dropped and taken again on the path's.
    The standard library's ``fcntl``: the filelock package cost ~17 ms to import at every
    run's first server, for this."""

    #: Between two tries while another holds it.
    POLL = 0.05

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._fd: int | None = None

    def acquire(self, timeout: float = -1) -> None:
        """Take the lock; ``timeout`` seconds at most (0: one try; negative: no limit),
        else ``LockBusy``. Taking it again while held is a no-op."""
        if self._fd is not None:
            return
        deadline = time.monotonic() + timeout
        while True:
            # Ours alone: anyone who can open a lock file (read-only will do) can flock it.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                taken = self._take(fd, deadline if timeout >= 0 else None)
            except BaseException:
                os.close(fd)
                raise
            if taken:
                self._fd = fd
                return
            os.close(fd)  # removed by its holder as it let go: the path's file, again

    def _take(self, fd: int, deadline: float | None) -> bool:
        """Lock ``fd``, waiting until ``deadline`` (None: no limit); whether it is still the
        file at the path (else a removed one, whose lock guards nothing)."""
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if deadline is not None and deadline <= time.monotonic():
                    raise LockBusy(self.path) from None
                time.sleep(self.POLL)
            else:
                break
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino)

    def fileno(self) -> int:
        """The held lock file's descriptor."""
        if self._fd is None:
            raise ValueError(f"{self.path} is not locked here")
        return self._fd

    def release(self, *, remove: bool = False) -> None:
        """Give the lock up (a forked child's copy of the descriptor with it). ``remove``:
        the lock file goes too, removed while still held (a waiter then takes a new one)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            if remove:
                with suppress(FileNotFoundError):
                    os.unlink(self.path)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


#: How long a wait stays silent.
SAY_AFTER = 2.0
#: The default of ``--lock-timeout``: generous (a long migration holds the lock
#: that long), but finite.
DEFAULT_LOCK_TIMEOUT = 300.0

Say = Callable[[str], None]
#: Where ``say_on_stderr`` says a wait instead, while a pytest run sets it (``say_through``):
#: past the capture that keeps what a fixture's set-up prints to that test's report.
_said_through: list[Say] = []


def say_on_stderr(message: str) -> None:
    """Where waits are said by default: stderr (stdout carries results)."""
    if _said_through:
        _said_through[-1](message)
    else:
        print(message, file=sys.stderr, flush=True)


@contextmanager
def say_through(say: Say) -> Iterator[None]:
    """``say_on_stderr`` calls ``say`` in the block."""
    _said_through.append(say)
    try:
        yield
    finally:
        _said_through.remove(say)


@contextmanager
def file_lock(
    path: Path | str,
    what: str,
    *,
    timeout: float = DEFAULT_LOCK_TIMEOUT,
    say: Say = say_on_stderr,
    remove: bool = False,
) -> Iterator[None]:
    """Hold the file lock ``path`` (``what`` says what it guards) for the block;
    ``remove``: its file goes as the lock is let go (``FileLock.release``), for a lock
    of something that will not be asked for again (a template's build on one server)."""
    lock = FileLock(path)
    holder = Path(f"{path}.holder")
    try:
        lock.acquire(timeout=min(SAY_AFTER, timeout))
    except LockBusy:
        say(f"reynard-db: waiting for {what} ({path}), held by {describe_holder(holder)}")
        try:
            lock.acquire(timeout=max(timeout - SAY_AFTER, 0.0))
        except LockBusy:
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
        lock.release(remove=remove)


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
    with suppress(OSError):  # whole, and ours alone (0600, as every file replace_file writes)
        replace_file(holder, json.dumps(record).encode())


def _command_line(limit: int = 120) -> str:
    try:
        argv = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")
        line = " ".join(os.fsdecode(a) for a in argv if a)
    except OSError:
        line = " ".join(sys.argv)
    # One line; a --url on the command line may carry a password.
    line = " ".join(redact(line).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
