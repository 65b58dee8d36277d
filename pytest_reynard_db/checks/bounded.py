"""No check runs unbounded: a time limit per check, and a watch for a self-deadlock.

``time_limit`` (``--timeout SECONDS`` of ``check`` and ``lint``) raises
``CheckTimedOut`` in the main thread when a check outlives its limit. It is a
``KeyboardInterrupt``, as SIGINT is, for one reason: psycopg then cancels the
statement the check was waiting on, so the connection can be rolled back and
the scratch database dropped; ``run_check`` catches it and fails the check with
that reason.

``SelfDeadlockWatch`` serves the ``locks`` check, which runs a revision on a
connection that already holds locks (an outer transaction over filled tables).
A second connection doing the migration's work (a revision that opens one of
its own) would wait for the check's own locks, forever: PostgreSQL cannot see a
deadlock that runs through a client. The watch polls ``pg_blocking_pids`` from
a connection of its own and cancels a backend blocked by the check's backend;
the check then says that revision was not measured, and why. (An ``env.py``
that migrates on a connection of its own is seen before anything runs: see
``safety.locks``.)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

#: The default of ``--timeout``: far beyond any sane check, but finite.
DEFAULT_CHECK_TIMEOUT = 1800.0
WATCH_INTERVAL = 0.2

BLOCKED_BY = text(
    "SELECT pid, pg_cancel_backend(pid) FROM pg_stat_activity "
    "WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"
)


class CheckTimedOut(KeyboardInterrupt):
    """A check ran longer than ``--timeout`` allows."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"timed out after {seconds:g} s (--timeout)")


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``CheckTimedOut`` in the block after ``seconds`` (None or 0: no limit).

    Only in the main thread (Python delivers signals there); elsewhere no limit.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise CheckTimedOut(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class SelfDeadlockWatch:
    """While active, cancel any backend that waits on ``connection``'s locks."""

    def __init__(self, connection: Connection, url: URL) -> None:
        self.backend = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
        self.url = url
        self.cancelled: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SelfDeadlockWatch:
        self._thread = threading.Thread(target=self._watch, name="reynard-db-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as watcher:
                watcher.execution_options(isolation_level="AUTOCOMMIT")
                while not self._stop.wait(WATCH_INTERVAL):
                    rows = watcher.execute(BLOCKED_BY, {"pid": self.backend}).all()
                    self.cancelled += [int(row[0]) for row in rows]
        except Exception:  # a watch that cannot watch must not fail the check
            return
        finally:
            engine.dispose()
