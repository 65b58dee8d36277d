"""SIGTERM and SIGHUP handled as Ctrl-C is: every clean-up runs, then the conventional exit.

``timeout``, CI runners and a closed terminal send SIGTERM or SIGHUP, whose
default action kills the process at once: an ephemeral server it started
would keep running until the next run reaped it, and a statement it was
running would go on in the server (holding the migration lock). While
``terminate_as_interrupt`` is active the first such signal raises
``Terminated``, a ``KeyboardInterrupt``: context managers and ``finally``
blocks stop servers and drop databases, psycopg cancels the running statement
(it does so on any ``KeyboardInterrupt``), pytest ends the session as
interrupted. The front then exits with ``128 + signal`` (``Terminated.exit_code``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: The signals that end a run politely (SIGINT already raises KeyboardInterrupt).
TERMINATING = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A terminating signal, raised where the main thread was, like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"terminated by {self.name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum


@contextmanager
def terminate_as_interrupt() -> Iterator[list[int]]:
    """While active, SIGTERM/SIGHUP raise ``Terminated``; yields the signals received.

    Only the first signal raises: a second one, arriving while the first one's
    clean-up runs, must not cut that clean-up short. Outside the main thread
    (where Python cannot install handlers) nothing changes.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in TERMINATING}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
