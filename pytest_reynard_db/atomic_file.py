"""Replacing a file whole or not at all: the one way this package does it.

The bytes go to a temp file beside the target (same filesystem, so the rename is
atomic), then ``os.replace`` puts it in place: a reader sees the old file or the new
one, never half of one. The temp file is this call's own (two processes writing the
same target at once each have theirs) and is removed if anything fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


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
        if mode_of is not None:
            shutil.copymode(mode_of, scratch)
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
