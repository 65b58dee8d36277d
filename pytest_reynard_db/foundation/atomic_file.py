"""Writing a file whole or not at all: the one way this package does it (``replace_file``,
``create_file``); and reading only regular files (``refuse_non_regular``).

The bytes go to a temp file beside the target (same filesystem, so the last step is
atomic), then ``os.replace`` puts it in place (a reader sees the old file or the new
one, never half of one), or ``os.link`` creates it (never over an existing file: a
revision file ``create`` writes). The temp file is this call's own (two processes
writing the same target at once each have theirs) and never outlives the call.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import ConfigError
from .urls import shown_path

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
