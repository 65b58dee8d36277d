"""Processes are never lost or left behind: signals a CI runner sends, and pid reuse.

Real processes and real signals: ``SIGTERM``/``SIGHUP`` to ``pytest`` and to
``reynard-migrate`` stop the server they started and remove its directory, and
the reaper never signals a process that is not the orphan's postmaster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fork import cli_argv
from reynard_trees import (
    clean_env,
    copy_reynard_trees,
    scalar,
    wait_for,
    wait_until,
    write_revision,
)
from test_faults import gone, postgres_processes_in, servers_of, waiting_session

from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.executor import EphemeralPostgres
from pytest_reynard_db.postgres.reaper import postmaster_pid, process_start_time, reap_orphans

MAIN = Path("alembic/main/versions")


def test_reaper_never_signals_a_process_that_reused_the_postmasters_pid(tmp_path: Path) -> None:
    """An orphan whose ``postmaster.pid`` names a live, unrelated process (its pid
    recycled): the directory goes, the process is left alone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    unrelated = subprocess.Popen(["sleep", "300"])
    # Stopped, it keeps any signal sent to it pending, in sight at once (and SIGKILL ends
    # the stop): nothing to wait for, where a running one would take its time to die.
    os.kill(unrelated.pid, signal.SIGSTOP)
    wait_until(lambda: stopped_untouched(unrelated.pid), 10, "the unrelated process to stop")
    try:
        orphan = tmp_path / "server-recycled"
        (orphan / "data").mkdir(parents=True)
        (orphan / "owner.json").write_text(json.dumps({"pid": dead.pid, "start": "1"}))
        (orphan / "data" / "postmaster.pid").write_text(
            f"{unrelated.pid}\n{orphan / 'data'}\n1700000000\n5432\n"
        )
        assert reap_orphans(tmp_path) == [orphan]
        assert not orphan.exists()
        assert stopped_untouched(unrelated.pid), "the reaper signalled an unrelated process"
        assert unrelated.poll() is None
        assert process_start_time(unrelated.pid) is not None
    finally:
        unrelated.kill()
        unrelated.wait()


def stopped_untouched(pid: int) -> bool:
    """Process ``pid`` is stopped, with no signal pending (to it or to its thread)."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
    return status["State"].split()[0] == "T" and pending == 0


# -- shared memory a postmaster killed by SIGKILL left ---------------------------------------
def shared_memory_of(datadir: Path) -> tuple[int, int]:
    """The System V segment (key, id) ``datadir``'s server made: its pid file says."""
    key, shmid = (datadir / "postmaster.pid").read_text().splitlines()[6].split()
    return int(key), int(shmid)


def segment_exists(key: int, shmid: int) -> bool:
    rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    return any(row.split()[:2] == [str(key), str(shmid)] for row in rows)


def dynamic_shared_memory_of(postmaster: int) -> set[Path]:
    """The dynamic shared memory files (``dynamic_shared_memory_type``'s segments) that the
    postmaster and its children have mapped."""
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    files = set()
    for pid in (postmaster, *map(int, children)):
        try:
            maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            # a child that ended meanwhile, before its maps were opened or while they were
            # read (ESRCH: CI's run of 6b793ca); the postmaster's own are read
            continue
        for line in maps:
            name = line.split(maxsplit=5)[-1]
            if "/PostgreSQL." in name or "/pg_dynshmem/" in name:
                files.add(Path(name.removesuffix(" (deleted)")))
    return files


def test_a_server_killed_by_sigkill_leaves_no_shared_memory_behind() -> None:
    """A postmaster killed by SIGKILL (an OOM kill, ``kill -9``) removes nothing: its
    System V segment stayed until the reboot, one of the machine's ``kernel.shmmni``
    (4096), after which no server starts; its dynamic segments (``/dev/shm/PostgreSQL.*``,
    about 1 MB a server) stayed until the reboot too, in memory. Removing its directory
    removes them all."""
    with EphemeralPostgres() as process:
        postmaster = process.pid
        assert process.base_dir is not None and postmaster is not None
        segment = shared_memory_of(process.base_dir / "data")
        assert segment_exists(*segment)
        dynamic = dynamic_shared_memory_of(postmaster)
        assert dynamic and all(path.exists() for path in dynamic), dynamic
        os.kill(postmaster, signal.SIGKILL)
        wait_until(lambda: gone(postmaster), 10, "the postmaster to die")
    assert not segment_exists(*segment), segment
    assert not [path for path in dynamic if path.exists()], dynamic


ORPHAN_OWNER = """\
import sys, time
from pytest_reynard_db.postgres.executor import EphemeralPostgres
process = EphemeralPostgres().start()
print(process.base_dir, process.pid, flush=True)
time.sleep(300)
"""


def test_the_reaper_removes_the_shared_memory_of_an_orphan_killed_by_sigkill(
    runtime: Path,
) -> None:
    """Its owner and its postmaster both killed by SIGKILL: the next run's reaper removes
    the directory and the segment."""
    owner = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_OWNER],
        env=clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime)),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    base_dir, pid = owner.stdout.readline().split()
    datadir = Path(base_dir) / "data"
    segment = shared_memory_of(datadir)
    dynamic = dynamic_shared_memory_of(int(pid))
    owner.kill()
    owner.wait()
    os.kill(int(pid), signal.SIGKILL)
    wait_until(lambda: gone(int(pid)), 10, "the postmaster to die")

    assert reap_orphans(runtime) == [Path(base_dir)]
    assert not segment_exists(*segment), segment
    assert dynamic and not [path for path in dynamic if path.exists()], dynamic


# -- SIGTERM and SIGHUP ------------------------------------------------------------------------
TERMINATING = [signal.SIGTERM, signal.SIGHUP]
SLOW_UPGRADE = """\
import os, pathlib, time
pathlib.Path(os.environ["SLOW_MARKER"]).write_text("migrating")
time.sleep(120)
"""


@pytest.mark.parametrize("sig", TERMINATING, ids=lambda s: s.name)
def test_sigterm_or_sighup_to_pytest_stops_the_server_and_exits_128_plus_signal(
    tmp_path: Path, sig: signal.Signals
) -> None:
    session, base_dir, postmaster = waiting_session(tmp_path)

    session.send_signal(sig)  # what `timeout` and CI runners send: to the process, not its group
    out, err = session.communicate(timeout=60)

    assert session.returncode == 128 + sig, out + err
    assert not base_dir.exists()
    assert gone(postmaster)
    assert postgres_processes_in(base_dir) == []


@pytest.mark.parametrize("sig", TERMINATING, ids=lambda s: s.name)
def test_sigterm_or_sighup_to_reynard_migrate_check_stops_its_server(
    tmp_path: Path, sig: signal.Signals
) -> None:
    project = copy_reynard_trees(tmp_path / "project")
    write_revision(project / MAIN, "3a1400000005", "3a1400000004", SLOW_UPGRADE)
    marker = tmp_path / "marker"
    check = subprocess.Popen(
        cli_argv(project, "check", "main", "--only", "upgrade"),
        env=clean_env(SLOW_MARKER=str(marker)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(marker, check)  # its ephemeral server up, a migration running
    (base_dir,) = servers_of(check.pid)
    postmaster = postmaster_pid(base_dir / "data")
    assert postmaster is not None

    check.send_signal(sig)
    out, err = check.communicate(timeout=60)

    assert check.returncode == 128 + sig, out + err
    assert err.strip().splitlines()[-1] == f"reynard-migrate: terminated by {sig.name}", err
    assert "Traceback" not in err
    assert not base_dir.exists()
    assert gone(postmaster)
    assert postgres_processes_in(base_dir) == []


def test_a_sigtermed_upgrade_leaves_no_backend_holding_the_lock(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    """The migration's statement is cancelled and its session ends: the next
    upgrade does not wait for a lock nobody will release."""
    project = copy_reynard_trees(tmp_path / "project")
    write_revision(
        project / MAIN,
        "3a1400000005",
        "3a1400000004",
        'import os, pathlib\npathlib.Path(os.environ["SLOW_MARKER"]).write_text("x")\n'
        'op.execute("SELECT pg_sleep(120)")',
    )
    pg_server.drop_database("test_sigterm_upgrade")
    url = pg_server.create_database("test_sigterm_upgrade").render_as_string(False)
    marker = tmp_path / "marker"
    upgrade = subprocess.Popen(
        cli_argv(project, "upgrade", "main", "--url", url),
        env=clean_env(SLOW_MARKER=str(marker)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(marker, upgrade)
    # into pg_sleep: the hard case, a statement running when the signal comes
    running = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'"
    wait_until(lambda: scalar(url, running), 30, "the upgrade's pg_sleep to run")
    upgrade.send_signal(signal.SIGTERM)
    out, err = upgrade.communicate(timeout=60)
    assert upgrade.returncode == 128 + signal.SIGTERM, out + err

    wait_until(
        lambda: scalar(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0,
        30,
        "the terminated upgrade's backend to release the migration lock",
    )
    version = scalar(url, "SELECT version_num FROM alembic_version")
    assert version == "3a1400000004", "the failed revision is rolled back"
