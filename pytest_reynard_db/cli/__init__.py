"""``reynard-migrate``: the command line (``front``), imported on first use.

The entry point imports nothing heavy before it is ready for Ctrl-C: an interrupt
while the interpreter loads SQLAlchemy, Alembic and the verbs is the same one line
as an interrupt later, never a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..foundation.long_lived import freeze_what_lives_on

if TYPE_CHECKING:
    from .front import build_parser, main

__all__ = ["PROG", "build_parser", "main", "run"]
#: The command's name, in its usage and its messages (here: ``run`` imports nothing else).
PROG = "reynard-migrate"
#: Seconds after a Ctrl-C lost in a callback that it is sent again (``_interrupt_again``).
RESEND_AFTER = 0.01
#: Whether ``run``'s work is done (``_work_done``).
_done = False


def __getattr__(name: str) -> Any:
    if name in ("build_parser", "main"):
        from . import front

        return getattr(front, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run() -> None:
    """Console-script entry point."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not ignored (nohup)
        signal.signal(signal.SIGINT, _interrupted_once)
    sys.unraisablehook = _interrupt_again(sys.unraisablehook)
    try:
        from .front import main

        freeze_what_lives_on()
        code = main()
    except KeyboardInterrupt:  # before main's own handling, or after it (its clean-up)
        _work_done()  # before it is said: a Ctrl-C then would cut the line short
        print(f"{PROG}: interrupted", file=sys.stderr)
        code = 130
    else:
        _work_done()
    # A KeyboardInterrupt that left code ``exec`` ran from a string (dataclasses' and
    # namedtuple's, at import), even if caught since, makes CPython end ``python -m`` by
    # SIGINT, over this exit code; running a string again clears its note of it.
    exec("pass")
    sys.exit(code)


def _work_done() -> None:
    """The work is done (or interrupted) and about to be said: a Ctrl-C now would only
    interrupt the interpreter's own clean-up (a lock file's finaliser), with a traceback
    ("Exception ignored in ..."); one lost before is not sent again."""
    global _done
    _done = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupted_once(signum: int, frame: object) -> None:
    """Python's own Ctrl-C (``KeyboardInterrupt``), once: the clean-up the first one
    begins (connections closed, throw-away databases dropped) is not cut short by a
    second, with its traceback; nor told again, with a traceback, by a library that logs
    it on its way up (``silence_logging``). SIGTERM still ends a clean-up that hangs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ..foundation.errors import silence_logging

    silence_logging()
    raise KeyboardInterrupt


def _interrupt_again(
    hook: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], object]:
    """``hook``, but for a Ctrl-C that landed in code Python runs on the side (a weakref
    callback, a finaliser: importlib's module locks have one), where it would be printed
    as "Exception ignored in ..." with a traceback, and lost: delivered again to the
    command's own flow, which says "interrupted" in one line."""

    def unraisable(args: sys.UnraisableHookArgs) -> object:
        if issubclass(args.exc_type, KeyboardInterrupt):
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN and not _done:
                signal.signal(signal.SIGINT, _interrupted_once)  # ignored by the lost one
            # Sent from a thread once this hook has returned (sent from here, its handler
            # would raise in this hook), to the main thread (a blocking call there is
            # woken); a signal ignored by then (the work is done, ``run``) is nothing
            main = threading.main_thread().ident
            again = threading.Timer(RESEND_AFTER, _send_sigint, args=(main,))
            again.daemon = True
            again.start()
            return None
        return hook(args)

    return unraisable


def _send_sigint(thread: int | None) -> None:
    if thread is not None:
        signal.pthread_kill(thread, signal.SIGINT)
