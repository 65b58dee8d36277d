"""Children forked from this process: who may fork, and the child seen as a ``Popen``.

Forking skips an interpreter's start and the imports pytest has done (hundreds of ms);
the check items' spares (``checks.spares``) and a warm run's agent (``postgres.agent``)
are forked so. Only on Linux, and only from a process of one thread.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from typing import IO

#: Forked only on Linux: macOS's system libraries are not safe in a forked child (the
#: reason multiprocessing starts interpreters there), and Windows has no fork.
LINUX = sys.platform.startswith("linux")
#: How often a forked child's end is looked for while waiting with a deadline (seconds).
REAP_POLL = 0.01


class ForkedProcess:
    """A child forked from this process, seen as the part of ``subprocess.Popen`` that
    ``IsolatedChild`` uses."""

    def __init__(self, pid: int, stdin: IO[str]) -> None:
        self.pid = pid
        self.stdin: IO[str] | None = stdin
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            code = self._reap(0)  # blocks until the child ends
            assert code is not None
            return code
        deadline = time.monotonic() + timeout
        pause = REAP_POLL / 16  # a child told to end often ends within a millisecond or two
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked child {self.pid}", timeout)
            time.sleep(pause)
            pause = min(pause * 2, REAP_POLL)
        return code

    def _reap(self, options: int) -> int | None:
        """The exit code, once the child has ended (``os.waitpid`` with ``options``)."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, options)
            except ChildProcessError:  # reaped already: it is over
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, number: int) -> None:
        if self.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, number)


def flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):  # closed, or pytest's capture gone
            stream.flush()


def threads() -> int:
    """This process's threads, those a C library started too where the system says
    (Linux's ``/proc``; Python 3.12 warns on a fork with any)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()
