"""``reynard-migrate``: the command line (``front``), imported on first use.

The entry point imports nothing heavy before it is ready for Ctrl-C: an interrupt
while the interpreter loads SQLAlchemy, Alembic and the verbs is the same one line
as an interrupt later, never a traceback.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Any

from ..foundation.long_lived import freeze_what_lives_on

if TYPE_CHECKING:
    from .front import build_parser, main

__all__ = ["PROG", "build_parser", "main", "run"]
#: The command's name, in its usage and its messages (here: ``run`` imports nothing else).
PROG = "reynard-migrate"


def __getattr__(name: str) -> Any:
    if name in ("build_parser", "main"):
        from . import front

        return getattr(front, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run() -> None:
    """Console-script entry point."""
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
