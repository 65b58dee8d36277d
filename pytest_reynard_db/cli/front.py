"""``reynard-migrate``'s front: ``main`` and the argument parser, a thin layer over the
registry, the manager and the mirror code.

Each verb parses its arguments and calls one function (``verbs``): ``build_parser``
makes one sub-parser per verb, each bound to its function, and adds the options several
verbs share with one helper each. Errors raised below as ``ReynardDBError`` are caught
here, once, and printed as one line with the exit code the error carries (0 success,
1 a problem found, 2 bad usage or input).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn, TextIO

from ..checks.drift import DEFAULT_DRIFT_LOCK_TIMEOUT, DEFAULT_DRIFT_STATEMENT_TIMEOUT
from ..checks.report import CHECK_FORMATS
from ..checks.safety.findings import FORMATS
from ..foundation.errors import (
    DEFAULT_CHECK_TIMEOUT,
    ReynardDBError,
    Terminated,
    terminate_as_interrupt,
)
from ..foundation.filesystem import DEFAULT_LOCK_TIMEOUT
from ..foundation.registry import load_registry
from ..foundation.urls import redact, refuse_control_characters, remember_secrets
from ..migration.env_run import NORMAL, QUIET, VERBOSE, verbosity
from . import PROG
from .verbs import (
    Handler,
    cmd_check,
    cmd_copy,
    cmd_create,
    cmd_current,
    cmd_downgrade,
    cmd_drift,
    cmd_graph,
    cmd_heads,
    cmd_history,
    cmd_lint,
    cmd_list,
    cmd_merge,
    cmd_server,
    cmd_setup,
    cmd_stamp,
    cmd_upgrade,
)

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
        with terminate_as_interrupt(silence=True), verbosity(args.verbosity):
            _refuse_control_characters(args)
            registry = load_registry(args.project)
            for warning in registry.warnings if args.verbosity > QUIET else ():
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


# -- the parser: one sub-parser per verb -----------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse quotes a bad argument back (``unrecognized arguments: --ulr=postgresql://u:pw@``):
    its usage errors go through the same masking as every other message."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact(message)}\n")


def _x_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-x",
        action="append",
        dest="x_arguments",
        default=default,
        metavar="ARG",
        help="an argument for env.py, as alembic's -x (context.get_x_argument(); repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Manage the Alembic trees of a project's databases.")
    parser.add_argument("--project", metavar="DIR", help="project root (default: found upward)")
    parser.add_argument(
        "--traceback", action="store_true", help="on error, the full chain after the message"
    )
    _verbosity_options(parser, default=NORMAL)
    _x_option(parser, default=[])
    verbs = parser.add_subparsers(title="verbs", metavar="VERB")

    def verb(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_, description=help_)
        sub.set_defaults(handler=handler)
        # Also after the verb (`reynard-migrate list --project DIR`); SUPPRESS keeps a
        # value given before the verb when it is not repeated after it.
        sub.add_argument("--project", metavar="DIR", default=argparse.SUPPRESS, help="project root")
        sub.add_argument(
            "--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        _verbosity_options(sub, default=argparse.SUPPRESS)
        _x_option(sub, default=argparse.SUPPRESS)
        return sub

    def guarded(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--allow",
            action="append",
            default=[],
            metavar="URL",
            help="a database env.py may connect to besides the throw-away ones (repeatable)",
        )

    def bounded(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_CHECK_TIMEOUT,
            metavar="SECONDS",
            help="a check running longer fails with that reason "
            f"(default {DEFAULT_CHECK_TIMEOUT:g})",
        )

    def waits_for_locks(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--lock-timeout",
            type=float,
            default=DEFAULT_LOCK_TIMEOUT,
            metavar="SECONDS",
            help="give up waiting for a lock after SECONDS "
            f"(exit 1; default {DEFAULT_LOCK_TIMEOUT:g})",
        )

    def changes_a_database(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--url", help="target database URL (default: $<url_env>, then the ini)")
        sub.add_argument("--sql", action="store_true", help="print the SQL, touch nothing")
        waits_for_locks(sub)

    verb("list", cmd_list, "the registry: databases, trees, mirrors and heads")

    sub = verb("upgrade", cmd_upgrade, "upgrade a database (default: to heads)")
    sub.add_argument("db")
    sub.add_argument("--to", default="heads", metavar="REV")
    changes_a_database(sub)

    sub = verb("downgrade", cmd_downgrade, "downgrade a database")
    sub.add_argument("db")
    sub.add_argument("--to", required=True, metavar="REV")
    changes_a_database(sub)

    sub = verb("create", cmd_create, "write a new revision (autogenerated unless --empty)")
    sub.add_argument("db")
    sub.add_argument("-m", "--message", required=True)
    where = sub.add_mutually_exclusive_group()
    where.add_argument("--branch", metavar="LABEL", help="extend the head of this branch")
    where.add_argument(
        "--new-branch", metavar="LABEL", help="start a branch with this label (from base)"
    )
    where.add_argument("--head", metavar="REV", help="extend this head (labelled or not)")
    sub.add_argument(
        "--from", dest="from_rev", metavar="REV", help="with --new-branch: start it from REV"
    )
    sub.add_argument("--empty", action="store_true", help="an empty revision, no autogenerate")
    sub.add_argument("--url", help="autogenerate against this database (default: a throw-away one)")
    guarded(sub)
    waits_for_locks(sub)

    sub = verb("merge", cmd_merge, "write a merge revision of heads")
    sub.add_argument("db")
    sub.add_argument(
        "revisions",
        nargs="*",
        metavar="REV",
        help="the heads to merge (default: the heads of the one branch that has several)",
    )
    # argparse gives an optional list after `db` nothing when an option comes between
    # them (`merge app -m msg A B`): what follows the option is taken here (see main).
    sub.set_defaults(trailing_positionals="revisions")
    sub.add_argument("-m", "--message", help='the message (default: "merge heads")')

    sub = verb("stamp", cmd_stamp, "set the version table to REV without migrating")
    sub.add_argument("db")
    sub.add_argument("revisions", nargs="+", metavar="REV", help="a revision, heads or base")
    sub.add_argument(
        "--purge", action="store_true", help="empty the version table first (unknown revisions)"
    )
    changes_a_database(sub)

    for name, handler, summary in (
        ("history", cmd_history, "the revisions, newest first"),
        ("heads", cmd_heads, "the head revisions"),
    ):
        verb(name, handler, summary).add_argument("db")
    sub = verb("current", cmd_current, "the revisions a database is at")
    sub.add_argument("db")
    sub.add_argument("--url")

    sub = verb("copy", cmd_copy, "sync each mirror's tree from its source")
    sub.add_argument("dbs", nargs="*", metavar="DB", help="a mirror, or a source (all its mirrors)")
    sub.add_argument("--check", action="store_true", help="write nothing; exit 1 on a difference")
    sub.add_argument("--dry-run", action="store_true", help="say what would be written")
    sub.add_argument("--prune", action="store_true", help="delete revisions only in the mirror")

    sub = verb("setup", cmd_setup, "create each missing database, then upgrade it to heads")
    sub.add_argument("dbs", nargs="*", metavar="DB")
    changes_a_database(sub)

    sub = verb("check", cmd_check, "run the migration checks on throw-away databases")
    sub.add_argument("dbs", nargs="*", metavar="DB")
    sub.add_argument("--url", help="admin URL of a server for the throw-away (test_*) databases")
    sub.add_argument(
        "--only",
        metavar="ID,...",
        help="comma-separated check ids (default: all but the opt-in lint and locks, "
        "unless [tool.reynard-db.lint] enabled lists them)",
    )
    sub.add_argument(
        "--format",
        choices=CHECK_FORMATS,
        default="table",
        help="table; json (one results object); github (workflow annotations); junit (XML)",
    )
    sub.add_argument("--json", action="store_true", help="the same as --format json")
    sub.add_argument(
        "--base",
        metavar="REF",
        help="git ref the history check compares with (default: base in [tool.reynard-db])",
    )
    guarded(sub)
    bounded(sub)

    sub = verb("drift", cmd_drift, "read-only: a live database's schema against its tree")
    sub.add_argument("db")
    sub.add_argument("--url", help="the live database (default: $<url_env>, then the ini)")
    sub.add_argument("--format", choices=("text", *CHECK_FORMATS), default="text")
    sub.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_DRIFT_LOCK_TIMEOUT,
        metavar="SECONDS",
        help="give up a catalog read waiting this long for a lock "
        f"(exit 2; default {DEFAULT_DRIFT_LOCK_TIMEOUT:g})",
    )
    sub.add_argument(
        "--statement-timeout",
        type=float,
        default=DEFAULT_DRIFT_STATEMENT_TIMEOUT,
        metavar="SECONDS",
        help="give up a catalog read running this long "
        f"(exit 2; default {DEFAULT_DRIFT_STATEMENT_TIMEOUT:g})",
    )

    sub = verb("lint", cmd_lint, "per-revision migration safety: Squawk findings, measured locks")
    sub.add_argument("db")
    sub.add_argument("--format", choices=FORMATS, default="table")
    sub.add_argument("--only", choices=("lint", "locks"), help="one of the two checks")
    sub.add_argument("--url", help="admin URL of a server for the throw-away (test_*) databases")
    guarded(sub)
    bounded(sub)

    sub = verb("server", cmd_server, "the reuse server kept between runs, and old templates")
    sub.add_argument("action", choices=("status", "stop", "prune"))
    sub.add_argument(
        "--url", help="a shared server's admin URL (--reynard-db-url) instead of the reuse server"
    )
    sub.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="prune: templates unused this long (default: those of old tree digests)",
    )

    sub = verb("graph", cmd_graph, "the revision graph")
    sub.add_argument("db")
    sub.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    return parser


def _verbosity_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    """``-v``/``-q``, before or after the verb (SUPPRESS there, as ``--project``)."""
    parser.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=VERBOSE,
        default=default,
        help="also Alembic's own INFO lines and messages",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=QUIET,
        default=default,
        help="nothing but results (and errors)",
    )
