"""Processes are never lost or left behind: signals a CI runner sends, and pid reuse.

Real processes and real signals: ``SIGTERM``/``SIGHUP`` to ``pytest`` and to
``reynard-migrate`` stop the server they started and remove its directory, and
the reaper never signals a process that is not the orphan's postmaster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pytest_reynard_db.postgres.reaper import process_start_time, reap_orphans


def test_reaper_never_signals_a_process_that_reused_the_postmasters_pid(tmp_path: Path) -> None:
    """An orphan whose ``postmaster.pid`` names a live, unrelated process (its pid
    recycled): the directory goes, the process is left alone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    unrelated = subprocess.Popen(["sleep", "300"])
    try:
        orphan = tmp_path / "server-recycled"
        (orphan / "data").mkdir(parents=True)
        (orphan / "owner.json").write_text(json.dumps({"pid": dead.pid, "start": "1"}))
        (orphan / "data" / "postmaster.pid").write_text(
            f"{unrelated.pid}\n{orphan / 'data'}\n1700000000\n5432\n"
        )
        assert reap_orphans(tmp_path) == [orphan]
        assert not orphan.exists()
        time.sleep(0.5)  # a signal, had one been sent, would have been delivered by now
        assert unrelated.poll() is None, "the reaper signalled an unrelated process"
        assert process_start_time(unrelated.pid) is not None
    finally:
        unrelated.kill()
        unrelated.wait()
