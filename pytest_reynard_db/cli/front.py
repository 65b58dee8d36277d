"""``reynard-migrate``'s front: a thin layer over the registry, the manager and the mirror code.

Each verb parses its arguments and calls one function (``verbs``; the parser is
``parser.build_parser``); errors raised below as ``ReynardDBError`` are caught
here, once, and printed as one line with the exit code the error carries (0
success, 1 a problem found, 2 bad usage or input).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TextIO

from ..foundation.errors import ReynardDBError, Terminated, terminate_as_interrupt
from ..foundation.registry import load_registry
from ..foundation.urls import redact, refuse_control_characters, remember_secrets
from ..migration import logs
from . import PROG
from .parser import build_parser

__all__ = ["PROG", "build_parser", "main"]


def _refuse_control_characters(args: argparse.Namespace) -> None:
    """Every name, message, revision and path given: none holds a control character
    (a message or branch label would carry it into a revision file, an escape
    sequence would reach a terminal in our own error line)."""
    for dest, value in vars(args).items():
        for one in value if isinstance(value, list) else [value]:
            if isinstance(one, str):
                refuse_control_characters(one, what=dest.replace("_", "-"))


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code (``console_scripts`` exits with it)."""
    out = stdout if stdout is not None else sys.stdout
    parser = build_parser()
    remember_secrets(*(sys.argv[1:] if argv is None else argv))
    args, extras = parser.parse_known_args(argv)
    trailing = getattr(args, "trailing_positionals", None)
    if extras and trailing and not any(e.startswith("-") for e in extras):
        setattr(args, trailing, [*getattr(args, trailing), *extras])
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if not getattr(args, "handler", None):
        parser.print_help(out)
        return 2
    try:
        # SIGTERM/SIGHUP unwind like Ctrl-C: the servers started below are stopped.
        with terminate_as_interrupt(), logs.verbosity(args.verbosity):
            _refuse_control_characters(args)
            registry = load_registry(args.project)
            for warning in registry.warnings if args.verbosity > logs.QUIET else ():
                print(f"{PROG}: warning: {warning}", file=sys.stderr)
            return int(args.handler(args, registry, out))
    except ReynardDBError as exc:
        print(f"{PROG}: error: {redact(exc)}", file=sys.stderr)
        if args.traceback:  # the whole chain, for a bug report or an env.py to debug
            print(redact("".join(traceback.format_exception(exc))), end="", file=sys.stderr)
        return exc.exit_code
    except Terminated as exc:
        print(f"{PROG}: terminated by {exc.name}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `reynard-migrate history ecs | head`: the reader left; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
