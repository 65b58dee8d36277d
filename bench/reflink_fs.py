"""A reflink file system made on the spot: an XFS (``reflink=1``) in a sparse file,
loop-mounted, for the bench and the tests of the clone method.

Needs Linux, root (``mount``) and ``mkfs.xfs`` (``apt-get install -y xfsprogs``);
otherwise ``Unavailable`` says which is missing, and the caller skips with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Unavailable(Exception):
    """No reflink file system can be made here; the message says why."""


def unavailable() -> str | None:
    """Why no reflink file system can be made here (None: it can be tried)."""
    if not sys.platform.startswith("linux"):
        return f"a loop-mounted XFS needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "mounting a loop device needs root"
    if shutil.which("mkfs.xfs") is None:
        return "no mkfs.xfs (apt-get install -y xfsprogs)"
    return None


@contextmanager
def reflink_file_system(size_mb: int = 2048) -> Iterator[Path]:
    """A mounted XFS with reflinks, its root mode 0755 (the server's user reaches it);
    unmounted and its file removed after. ``Unavailable`` before anything is yielded."""
    reason = unavailable()
    if reason is not None:
        raise Unavailable(reason)
    work = Path(tempfile.mkdtemp(prefix="reynard-reflink-"))
    try:
        os.chmod(work, 0o755)
        image, mount = work / "xfs.img", work / "mnt"
        mount.mkdir()
        with image.open("wb") as sparse:
            sparse.truncate(size_mb * 2**20)
        _run("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
        _run("mount", "-o", "loop", str(image), str(mount))
    except Unavailable:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        os.chmod(mount, 0o755)
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise Unavailable(f"{argv[0]} failed: {said[0] if said else result.returncode}")
