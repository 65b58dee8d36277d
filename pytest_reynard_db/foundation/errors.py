"""How a run ends: the exception types, each carrying the exit code the CLI returns for
it; SIGTERM/SIGHUP handled as Ctrl-C is (``Terminated``, exit ``128 + signal``); and a
check's time limit, SIGALRM raised as an interrupt too (``CheckTimedOut``).

Like Alembic's ``CommandError``, every error a user can cause is raised as one of
these with a one-line message that names the file, database or revision; the
CLI and the pytest plugin catch them once, at their edge, and print only the
message.

``timeout``, CI runners and a closed terminal send SIGTERM or SIGHUP, whose
default action kills the process at once: an ephemeral server it started
would keep running until the next run reaped it, and a statement it was
running would go on in the server (holding the migration lock). While
``terminate_as_interrupt`` is active the first such signal raises
``Terminated``, a ``KeyboardInterrupt``: context managers and ``finally``
blocks stop servers and drop databases, psycopg cancels the running statement
(it does so on any ``KeyboardInterrupt``), pytest ends the session as
interrupted. The front then exits with ``128 + signal`` (``Terminated.exit_code``).

No check runs unbounded: ``time_limit`` (``--timeout SECONDS`` of ``check`` and ``lint``)
raises ``CheckTimedOut`` in the main thread when a check outlives its limit. It is a
``KeyboardInterrupt`` for the same reason as ``Terminated``: psycopg then cancels the
statement the check was waiting on, so the connection can be rolled back and the scratch
database dropped; ``run_check`` catches it and fails the check with that reason.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


class ReynardDBError(Exception):
    """Base class; ``exit_code`` is what ``reynard-migrate`` exits with."""

    exit_code: int = 2


class ConfigError(ReynardDBError):
    """The registry, an ini file or a tree is malformed (exit 2)."""


class UnknownDatabaseError(ConfigError):
    """A database name that the registry does not know (exit 2)."""


class RevisionError(ReynardDBError):
    """An unknown revision, a broken revision file or a broken graph (exit 2)."""


class MigrationFailed(ReynardDBError):
    """A migration raised while running; the database is at the last good revision.

    Besides the one-line message, the parts a caller shows on their own: ``revision``
    and ``path`` (the revision file; ``env.py`` for its own failures), ``function``
    (the revision's function the step ran, ``upgrade`` or ``downgrade``; None without
    a step), ``where`` (the file and the step, "<path>: upgrade a -> b") and ``reason``
    (the error and where the database was left; the whole message when there is no step).
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        revision: str | None = None,
        path: str | None = None,
        function: str | None = None,
        where: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.revision = revision
        self.path = path
        self.function = function
        self.where = where
        self.reason = message if reason is None else reason


class EnvPyFailed(MigrationFailed):
    """``env.py`` (or the application it imports) raised before any migration ran: the
    tree's environment is broken, not a revision (exit 1)."""


class EnvPyNeedsConfig(EnvPyFailed):
    """``env.py`` asked the ini for something it lacks (the logging sections its
    ``fileConfig`` reads): the ini is at fault, so bad config (exit 2), though it shows
    up, like any ``env.py`` failure, only once the environment runs."""

    exit_code = 2


class ServerError(ReynardDBError):
    """PostgreSQL could not be found, started or reached (exit 2)."""


class CheckFailed(ReynardDBError):
    """A check or ``copy --check`` found a problem (exit 1)."""

    exit_code = 1


class FileConflict(ReynardDBError):
    """Writing would overwrite or lose a file someone may have made by hand (exit 1);
    nothing was written."""

    exit_code = 1


class LockTimeout(ReynardDBError):
    """Waiting for a lock (migration, template, reuse server) took longer than
    ``--lock-timeout`` allows (exit 1); the message names the lock and its holder."""

    exit_code = 1


class FilesystemError(ReynardDBError):
    """A file or folder could not be read or written: permissions, a read-only folder,
    a folder where a file should go (exit 2: the environment, not the trees)."""


class GuardRefused(ReynardDBError):
    """A connection to a database the harness did not create (exit 2); see ``guard``."""


class SeedFailed(ReynardDBError):
    """A project's ``pytest_reynard_db_seed`` raised while filling a template (exit 1);
    the message names the conftest and line. The template is not kept."""

    exit_code = 1


# -- terminating signals, as Ctrl-C ----------------------------------------------------

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


#: Above ``logging.CRITICAL``: what ``silence_logging`` sets, told from what a
#: verbosity sets (``env_run.verbosity`` leaves it in place).
SILENCED = 51


def silence_logging() -> None:
    """No log record from now on, for a command that is ending on an interrupt: a library
    that logs the interrupt on its way up (SQLAlchemy's pool, closing a connection) would
    print it with a traceback, through the handler an env.py's ``fileConfig`` installed,
    over the one line that says the command was interrupted. Nor Python's "Exception
    ignored in" reports: a clean-up left to the collector as the process ends (a
    throw-away database's drop, on a server its parent is stopping) printed one."""
    if not getattr(sys.unraisablehook, "quiet", False):
        sys.unraisablehook = _but_interrupts(sys.unraisablehook)
    logging = sys.modules.get("logging")
    # not imported, or half imported (a Ctrl-C during its import): no logger exists yet
    disable = getattr(logging, "disable", None)
    if disable is not None:
        disable(SILENCED)


def _but_interrupts(
    hook: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], object]:
    """``hook`` for an interrupt lost where Python reports it as unraisable (the CLI sends
    it again: ``cli._interrupt_again``); nothing for anything else."""

    def unraisable(args: sys.UnraisableHookArgs) -> object:
        return hook(args) if issubclass(args.exc_type, KeyboardInterrupt) else None

    unraisable.quiet = True  # type: ignore[attr-defined]
    return unraisable


@contextmanager
def terminate_as_interrupt(*, silence: bool = False) -> Iterator[list[int]]:
    """While active, SIGTERM/SIGHUP raise ``Terminated``; yields the signals received.

    Only the first signal raises: a second one, arriving while the first one's
    clean-up runs, must not cut that clean-up short. ``silence``: the first also
    ``silence_logging``s (a command; pytest shows a test's logging in its report).
    Outside the main thread (where Python cannot install handlers) nothing changes.
    """
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            if silence:
                silence_logging()
            raise Terminated(signum)

    with _terminating_handled_by(handler):
        yield received


@contextmanager
def ctrl_c_silenced() -> Iterator[None]:
    """While active, Ctrl-C (SIGINT, where Python's own handler has it) also
    ``silence_logging``s as it raises ``KeyboardInterrupt``: what ``terminate_as_interrupt``'s
    ``silence`` does for SIGTERM, for a process that ends on either (a check child, given
    a terminal's Ctrl-C and then its parent's SIGTERM). Main thread only, as above."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        silence_logging()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def die_after(finish: Callable[[], object]) -> Iterator[None]:
    """While active, SIGTERM/SIGHUP run ``finish``, then end the process by that signal,
    as if no handler had been there (exit 128 + signal, no traceback): for work begun
    before pytest can turn a signal into a clean exit (``Terminated`` raised among the
    plugins' imports would be a traceback and exit 1). A second signal while ``finish``
    runs does not cut it short; if ``finish`` fails, the process still ends by the
    signal. Main thread only, as above."""
    finishing: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if finishing:
            return
        finishing.append(signum)
        try:
            finish()
        finally:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    with _terminating_handled_by(handler):
        yield


@contextmanager
def held_until_over(on_signal: Callable[[], object] = lambda: None) -> Iterator[None]:
    """While active, SIGTERM/SIGHUP are held, not acted on: for an end that waits for what
    it began (a run's clean-up list, its agent's stop), or a start that must not be cut
    short (the agent's start of a server: a postmaster no one stops), which neither
    ``Terminated`` (a traceback out of pytest's clean-up, exit 1) nor the default action
    (what is waited for left behind) may cut short. ``on_signal`` runs as one arrives (the
    start told to give up). Once the block is over, however it ended, the first one held
    ends the process as the shell expects (``SystemExit``: exit 128 + signal, no
    traceback). Main thread only, as above."""
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)
        on_signal()

    try:
        with _terminating_handled_by(hold):
            yield
    finally:
        if held:
            raise SystemExit(128 + held[0])


@contextmanager
def _terminating_handled_by(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` for SIGTERM and SIGHUP in the block, the previous handlers put back
    after it. Outside the main thread (where Python cannot install handlers) nothing;
    nor for a signal the process ignores (``nohup``'s SIGHUP): a run without us would go
    on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = [sig for sig in TERMINATING if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, handler) for sig in handled}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- a check's time limit, as Ctrl-C -----------------------------------------------------

#: The default of ``--timeout``: far beyond any sane check, but finite.
DEFAULT_CHECK_TIMEOUT = 1800.0


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
