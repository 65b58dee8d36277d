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


def __getattr__(name: str) -> Any:
    if name in ("build_parser", "main"):
        from . import front

        return getattr(front, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run() -> None:
    """Console-script entry point."""
    sys.unraisablehook = _interrupt_again(sys.unraisablehook)
    try:
        from .front import main

        freeze_what_lives_on()
        code = main()
    except KeyboardInterrupt:  # before main's own handling, or after it (its clean-up)
        print(f"{PROG}: interrupted", file=sys.stderr)
        code = 130
    # The work is done and said: a Ctrl-C now would only interrupt the interpreter's own
    # clean-up (a lock file's finaliser), with a traceback ("Exception ignored in ...").
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


def _interrupt_again(
    hook: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], object]:
    """``hook``, but for a Ctrl-C that landed in code Python runs on the side (a weakref
    callback, a finaliser: importlib's module locks have one), where it would be printed
    as "Exception ignored in ..." with a traceback, and lost: delivered again to the
    command's own flow, which says "interrupted" in one line."""

    def unraisable(args: sys.UnraisableHookArgs) -> object:
        if issubclass(args.exc_type, KeyboardInterrupt):
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
