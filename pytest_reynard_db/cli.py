"""``reynard-migrate``: a thin front over the registry, the manager and the mirror code.

Each verb parses its arguments and calls one function; errors raised below as
``ReynardDBError`` are caught here, once, and printed as one line with the exit
code the error carries (0 success, 1 a problem found, 2 bad usage or input).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import NoReturn, TextIO

from . import graph, logs, mirror, mirror_write, text
from .checks import enabled_checks, needs_server, run_checks, select_checks
from .checks.bounded import DEFAULT_CHECK_TIMEOUT
from .checks.report import CHECK_FORMATS, progress_line, show_results
from .checks.runner import CheckRunner, scratch_server
from .checks.safety import safety_reports
from .checks.safety.report import FORMATS, render
from .errors import CheckFailed, ReynardDBError
from .guard import GUARD
from .manager import MigrationManager
from .postgres.waits import DEFAULT_LOCK_TIMEOUT
from .registry import Registry, load_registry
from .signals import Terminated, terminate_as_interrupt
from .text import shown_path as relative
from .urls import mask_url, redact, remember_secrets

PROG = "reynard-migrate"
Handler = Callable[[argparse.Namespace, Registry, TextIO], int]


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


class _Parser(argparse.ArgumentParser):
    """argparse quotes a bad argument back (``unrecognized arguments: --ulr=postgresql://u:pw@``):
    its usage errors go through the same masking as every other message."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Manage the Alembic trees of a project's databases.")
    parser.add_argument("--project", metavar="DIR", help="project root (default: found upward)")
    parser.add_argument(
        "--traceback", action="store_true", help="on error, the full chain after the message"
    )
    _verbosity_options(parser, default=logs.NORMAL)
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
        help="table; json (SPEC's results object); github (workflow annotations); junit (XML)",
    )
    sub.add_argument("--json", action="store_true", help="the same as --format json")
    guarded(sub)
    bounded(sub)

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


# -- verbs ------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    rows = [("name", "database", "ini", "tree", "mirror_of", "heads")]
    status = 0
    for db in registry.select():
        try:
            heads = " ".join(s.revision for s in MigrationManager(db).heads()) or "(empty)"
        except ReynardDBError as exc:
            heads, status = f"error: {exc}", exc.exit_code
        rows.append(
            (
                db.name,
                db.database,
                relative(db.ini),
                relative(db.script_location),
                db.mirror_of or "-",
                heads,
            )
        )
    for broken in registry.broken.values():
        rows.append((broken.name, broken.database, "-", "-", "-", f"error: {broken.error}"))
        status = broken.error.exit_code
    text.print_table(rows, out)
    return status


def cmd_upgrade(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    return _migrate(args, registry, out, "upgrade")


def cmd_downgrade(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    return _migrate(args, registry, out, "downgrade")


def _migrate(args: argparse.Namespace, registry: Registry, out: TextIO, direction: str) -> int:
    manager = _manager(registry, args.db, args.url, out, args.lock_timeout, args)
    getattr(manager, direction)(args.to, sql=args.sql)
    if not args.sql:
        print(f"{args.db}: at {_at(manager)} ({mask_url(manager.url)})", file=out)
    return 0


def cmd_create(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    manager = _manager(registry, args.db, args.url, out, args.lock_timeout, args)
    # With --url the user named the database to compare with; else it is a throw-away one.
    with _throwaway_only(args) if args.url is None else nullcontext():
        script = manager.create(
            args.message,
            branch=args.branch,
            new_branch=args.new_branch,
            from_rev=args.from_rev,
            head=args.head,
            empty=args.empty,
        )
    label = f", branch {args.new_branch}" if args.new_branch else ""
    print(f"{args.db}: wrote {relative(script.path)} (revision {script.revision}{label})", file=out)
    return 0


def cmd_merge(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    manager = _manager(registry, args.db, None, out, 0, args)
    script = manager.merge(args.revisions, message=args.message)
    merged = ", ".join(script._versioned_down_revisions)
    print(
        f"{args.db}: wrote {relative(script.path)} (revision {script.revision}, merging {merged})",
        file=out,
    )
    return 0


def cmd_stamp(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    manager = _manager(registry, args.db, args.url, out, args.lock_timeout, args)
    manager.stamp(args.revisions, sql=args.sql, purge=args.purge)
    if not args.sql:
        print(f"{args.db}: stamped, at {_at(manager)} ({mask_url(manager.url)})", file=out)
    return 0


def cmd_history(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    for script in MigrationManager(registry.get(args.db)).history():
        print(
            script.cmd_format(
                False,
                include_branches=True,
                include_doc=True,
                include_parents=True,
                tree_indicators=True,
            ),
            file=out,
        )
    return 0


def cmd_heads(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    for script in MigrationManager(registry.get(args.db)).heads():
        print(script.cmd_format(False, include_branches=True, tree_indicators=False), file=out)
    return 0


def cmd_current(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    manager = MigrationManager(registry.get(args.db), args.url)
    current = manager.current()
    if not current:
        print(f"{args.db}: base (no revision applied)", file=out)
    for revision in current:
        script = manager.script.get_revision(revision)
        line = script.cmd_format(False, include_branches=True) if script else revision
        print(line, file=out)
    return 0


def cmd_copy(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    """Sync each mirror; a conflict anywhere stops them all before anything is written."""
    pairs = registry.mirror_pairs(args.dbs)
    if not pairs:
        print("no mirrors in the registry", file=out)
        return 0
    diffs = [mirror.mirror_diff(source, target) for source, target in pairs]
    if args.check:
        for diff in diffs:
            print(_in_sync(diff) if diff.in_sync else diff.describe(), file=out)
        if not all(diff.in_sync for diff in diffs):
            raise CheckFailed("mirrors out of sync; run `reynard-migrate copy` to sync them")
        return 0
    conflicted = [diff for diff in diffs if diff.conflicts]
    for diff in conflicted:
        print("\n".join(diff.describe_conflict(c) for c in diff.conflicts), file=out)
    if conflicted:
        raise mirror_write.conflict_error(conflicted)
    for diff in diffs:
        report = mirror_write.sync_mirror(diff, dry_run=args.dry_run, prune=args.prune)
        lines = mirror_write.describe_sync(diff, report, dry_run=args.dry_run)
        print("\n".join(lines or [_in_sync(diff)]), file=out)
    return 0


def _in_sync(diff: mirror.MirrorDiff) -> str:
    return f"{diff.source.name} -> {diff.mirror.name}: in sync"


def cmd_setup(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    databases = registry.select(args.dbs)
    for db in databases:
        url = args.url if len(databases) == 1 else _same_server(args.url, db.database)
        manager = _manager(registry, db.name, url, out, args.lock_timeout, args)
        if args.sql:
            manager.upgrade("heads", sql=True)
            continue
        print(f"{db.name}: {mask_url(manager.url)} ...", file=out, flush=True)
        created = manager.setup()
        print(f"{db.name}: {'created, ' if created else ''}at {_at(manager)}", file=out)
    return 0


def cmd_check(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    """Run the checks on throw-away databases; exit 1 when any fails (SPEC section 5)."""
    only = args.only.split(",") if args.only else None
    enabled = enabled_checks(registry)
    select_checks(only, enabled)  # an unknown id is an error before any server starts
    databases = registry.select(args.dbs)
    with (
        progress_line(sys.stderr) as progress,
        _throwaway_only(args),
        scratch_server(
            args.url,
            needed=needs_server(only, enabled),
            registry=registry,
            allow=tuple(args.allow),
        ) as server,
    ):
        results = run_checks(
            registry,
            databases,
            server,
            only=only,
            progress=progress,
            timeout=args.timeout,
            allow=tuple(args.allow),
        )
    show_results(results, "json" if args.json else args.format, out, root=registry.root)
    broken = [] if args.dbs else list(registry.broken.values())
    for entry in broken:  # every database was asked for: a broken one is said, and counts
        print(f"{PROG}: error: {redact(entry.error)}", file=sys.stderr)
    if broken:
        return broken[0].error.exit_code
    return 1 if any(not r.ok for r in results) else 0


def cmd_lint(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    """Both safety checks on one database, one report per revision; exit 1 on a finding."""
    db = registry.get(args.db)
    with (
        _throwaway_only(args),
        scratch_server(
            args.url, needed=args.only != "lint", registry=registry, allow=tuple(args.allow)
        ) as server,
    ):
        reports = safety_reports(CheckRunner(db, registry, server), args.only, args.timeout)
    render(reports, args.format, out)
    return 1 if any(not r.ok for r in reports) else 0


def cmd_server(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    """See, stop or prune the reuse server (or a shared server's templates with --url)."""
    from . import server_admin  # the server verbs only: keeps the other verbs' start fast

    return server_admin.run_verb(args.action, registry, out, args.url, args.older_than)


def cmd_graph(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    db = registry.get(args.db)
    print(graph.render(MigrationManager(db).script, args.format, name=db.name), file=out)
    return 0


# -- helpers ----------------------------------------------------------------------------
def _manager(
    registry: Registry,
    name: str,
    url: str | None,
    out: TextIO,
    lock_timeout: float,
    args: argparse.Namespace,
) -> MigrationManager:
    """A manager that migrates ``name``, every variable its env.py may read aimed at the target;
    Alembic's own messages (``Generating ... done``) only with ``-v``."""
    return MigrationManager(
        registry.get(name),
        url,
        stdout=out,
        url_envs=registry.url_envs(name),
        lock_timeout=lock_timeout,
        alembic_messages=args.verbosity > logs.NORMAL,
    )


@contextmanager
def _throwaway_only(args: argparse.Namespace) -> Iterator[None]:
    """The production guard (see ``guard``): only throw-away databases and ``--allow``'s;
    where it sent a connection env.py opened elsewhere is said on stderr."""
    with GUARD.armed_for(opt_in_hint="--allow URL", allow=tuple(args.allow)):
        before = set(GUARD.redirects)
        try:
            yield
        finally:
            shown = args.verbosity > logs.QUIET
            for redirect in (r for r in GUARD.redirects if r not in before and shown):
                print(
                    f"{PROG}: note: env.py connected to {redirect} "
                    "(redirected by the production guard)",
                    file=sys.stderr,
                )


def _verbosity_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    """``-v``/``-q``, before or after the verb (SUPPRESS there, as ``--project``)."""
    parser.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=logs.VERBOSE,
        default=default,
        help="also Alembic's own INFO lines and messages",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=logs.QUIET,
        default=default,
        help="nothing but results (and errors)",
    )


def _at(manager: MigrationManager) -> str:
    return ", ".join(manager.current()) or "base"


def _same_server(url: str | None, database: str) -> str | None:
    """Several databases and one --url: that server, each database by its own name."""
    if url is None:
        return None
    from .urls import with_database

    return with_database(url, database).render_as_string(hide_password=False)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
