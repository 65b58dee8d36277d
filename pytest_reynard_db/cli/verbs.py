"""The verbs of ``reynard-migrate``, one function each: ``(args, registry, out) -> exit code``.

Each is a few lines over the manager, the mirror code or the checks; what several
share (the manager they migrate with, the production guard around them, the lines they
print) is at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import TextIO

from ..checks import (
    SPECS,
    enabled_checks,
    isolated_by_default,
    needs_server,
    run_checks,
    select_checks,
)
from ..checks.drift import Timeouts, drift
from ..checks.files import resolve_base
from ..checks.report import progress_line, show_results
from ..checks.runner import CheckRunner, scratch_server
from ..checks.safety import safety_reports
from ..checks.safety.findings import render
from ..checks.spares import spares_while
from ..foundation.errors import CheckFailed, ConfigError, ReynardDBError
from ..foundation.registry import Registry
from ..foundation.urls import mask_url, print_table, redact
from ..foundation.urls import shown_path as relative
from ..guard import GUARD, redirect_note
from ..migration import mirror
from ..migration.env_run import NORMAL, QUIET
from ..migration.manager import MigrationManager
from ..migration.mirror import MirrorDiff
from ..migration.tree import parents
from . import PROG, graph


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
    print_table(rows, out)
    if len(rows) == 1:
        print(f"{PROG}: {nothing_registered(registry)}", file=sys.stderr)
    return status


def nothing_registered(registry: Registry) -> str:
    """What a registry naming no database lacks (a table names at least one, or fails)."""
    return (
        f"no databases in {relative(registry.root / 'pyproject.toml')} "
        "(no [tool.reynard-db] table, and no alembic_<name>.ini beside it)"
    )


def cmd_upgrade(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    manager = manager_for(registry, args.db, args.url, out, args.lock_timeout, args)
    manager.upgrade(args.to, sql=args.sql)
    return _migrated(args, manager, out)


def cmd_downgrade(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    manager = manager_for(registry, args.db, args.url, out, args.lock_timeout, args)
    manager.downgrade(args.to, sql=args.sql)
    return _migrated(args, manager, out)


def _migrated(args: argparse.Namespace, manager: MigrationManager, out: TextIO) -> int:
    """Where ``upgrade`` or ``downgrade`` left the database (nothing to say after --sql)."""
    if not args.sql:
        print(f"{args.db}: at {at(manager)} ({mask_url(manager.url)})", file=out)
    return 0


def cmd_create(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    manager = manager_for(registry, args.db, args.url, out, args.lock_timeout, args)
    # With --url the user named the database to compare with; else it is a throw-away one.
    with throwaway_only(args) if args.url is None else nullcontext():
        script = manager.create(
            args.message,
            branch=args.branch,
            new_branch=args.new_branch,
            from_rev=args.from_rev,
            head=args.head,
            empty=args.empty,
        )
    if script is None:  # as Django's makemigrations: a result, exit 0
        print(
            f"{args.db}: no changes detected between the models and heads; nothing written "
            "(--empty writes an empty revision)",
            file=out,
        )
        return 0
    label = f", branch {args.new_branch}" if args.new_branch else ""
    print(f"{args.db}: wrote {relative(script.path)} (revision {script.revision}{label})", file=out)
    return 0


def cmd_merge(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    manager = manager_for(registry, args.db, None, out, 0, args)
    script = manager.merge(args.revisions, message=args.message)
    merged = ", ".join(parents(script))
    print(
        f"{args.db}: wrote {relative(script.path)} (revision {script.revision}, merging {merged})",
        file=out,
    )
    return 0


def cmd_stamp(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    manager = manager_for(registry, args.db, args.url, out, args.lock_timeout, args)
    manager.stamp(args.revisions, sql=args.sql, purge=args.purge)
    if not args.sql:
        print(f"{args.db}: stamped, at {at(manager)} ({mask_url(manager.url)})", file=out)
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
    manager = MigrationManager(registry.get(args.db), args.url, x_arguments=args.x_arguments)
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
            print(in_sync(diff) if diff.in_sync else diff.describe(), file=out)
        if not all(diff.in_sync for diff in diffs):
            raise CheckFailed("mirrors out of sync; run `reynard-migrate copy` to sync them")
        return 0
    conflicted = [diff for diff in diffs if diff.conflicts]
    for diff in conflicted:
        print("\n".join(diff.describe_conflict(c) for c in diff.conflicts), file=out)
    if conflicted:
        raise mirror.conflict_error(conflicted)
    for diff in diffs:
        report = mirror.sync_mirror(diff, dry_run=args.dry_run, prune=args.prune)
        lines = mirror.describe_sync(diff, report, dry_run=args.dry_run)
        print("\n".join(lines or [in_sync(diff)]), file=out)
    return 0


def cmd_setup(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    databases = registry.select(args.dbs)
    for db in databases:
        url = args.url if len(databases) == 1 else same_server(args.url, db.database)
        manager = manager_for(registry, db.name, url, out, args.lock_timeout, args)
        if args.sql:
            manager.upgrade("heads", sql=True)
            continue
        print(f"{db.name}: {mask_url(manager.url)} ...", file=out, flush=True)
        created = manager.setup()
        print(f"{db.name}: {'created, ' if created else ''}at {at(manager)}", file=out)
    return 0


def cmd_check(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    """Run the checks on throw-away databases; exit 1 when any fails (the README's
    "Migration checks")."""
    only = args.only.split(",") if args.only else None
    if args.base:
        registry = replace(registry, base=args.base)
    enabled = enabled_checks(registry)
    # an unknown id, a base git does not know: an error before any server starts
    selected = select_checks(only, enabled)
    if "history" in selected and registry.base:
        resolve_base(registry.root, registry.base)
    databases = registry.select(args.dbs)
    if not databases and not registry.broken:
        # a CI gate over a project whose registry moved away: nothing checked is no pass
        raise ConfigError(f"nothing to check: {nothing_registered(registry)}")
    if databases and not any(SPECS[c].applies_to(db) for c in selected for db in databases):
        names = ", ".join(db.name for db in databases)
        raise ConfigError(
            f"nothing to check: {', '.join(selected)} applies to mirrors only, and none of "
            f"{names} is one (mirror_of)"
        )
    # Each database's checks in a child of its own (``isolated``), forked from here before
    # the server starts (with descriptor 1 already stderr, as a started one's would be):
    # SQLAlchemy and Alembic are imported already, and the children import the rest while
    # the server starts.
    isolate = isolated_by_default(selected, len(databases))
    with (
        stdout_to_stderr(),
        progress_line(sys.stderr) as progress,
        throwaway_only(args),
        spares_while(len(databases) if isolate else 0, registry.root) as spares,
        scratch_server(
            args.url,
            needed=bool(databases) and needs_server(only, enabled),  # all broken: none
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
            isolate=isolate,  # decided once, for the spares too
            spares=spares,
        )
    show_results(results, "json" if args.json else args.format, out, sys.stderr)
    broken = [] if args.dbs else list(registry.broken.values())
    for entry in broken:  # every database was asked for: a broken one is said, and counts
        print(f"{PROG}: error: {redact(entry.error)}", file=sys.stderr)
    if broken:
        return broken[0].error.exit_code
    return 1 if any(not r.ok for r in results) else 0


def cmd_drift(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    """The live database against its tree at the live revision: exit 1 on drift, 0 on a
    match (the README's "drift"). Production is reached read-only, and by drift alone:
    the guard allows it that one URL, and its env.py migrates the throw-away database."""
    db = registry.get(args.db)
    live = db.production_url(args.url)
    args.allow = [live.render_as_string(hide_password=False)]
    with (
        stdout_to_stderr(),
        throwaway_only(args),
        scratch_server(None, registry=registry) as server,
    ):
        assert server is not None
        timeouts = Timeouts(lock=args.lock_timeout, statement=args.statement_timeout)
        result = drift(registry, db, live, server, timeouts=timeouts)
    show_results([result], "table" if args.format == "text" else args.format, out, sys.stderr)
    return 0 if result.ok else 1


def cmd_lint(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    """Both safety checks on one database, one report per revision; exit 1 on a finding.

    A check that cannot run (its error on stderr, and its exit code) hides nothing the
    other found."""
    db = registry.get(args.db)
    with (
        stdout_to_stderr(),
        throwaway_only(args),
        scratch_server(
            args.url, needed=args.only != "lint", registry=registry, allow=tuple(args.allow)
        ) as server,
    ):
        reports, errors = safety_reports(CheckRunner(db, registry, server), args.only, args.timeout)
    if errors and not reports:
        raise errors[0]  # nothing to show: one line, as any error (--traceback: its chain)
    render(reports, args.format, out)
    for error in errors:  # what the other check found is shown above; this one could not run
        print(f"{PROG}: error: {redact(error)}", file=sys.stderr)
    return max([1 if any(not r.ok for r in reports) else 0, *(e.exit_code for e in errors)])


def cmd_server(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    """See, stop or prune the reuse server (or a shared server's templates with --url)."""
    from . import server_admin  # the server verbs only: keeps the other verbs' start fast

    return server_admin.run_verb(args.action, registry, out, args.url, args.older_than)


def cmd_graph(args: argparse.Namespace, registry: Registry, out: TextIO) -> int:
    db = registry.get(args.db)
    print(graph.render(MigrationManager(db).script, args.format, name=db.name), file=out)
    return 0


# -- common ------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace, Registry, TextIO], int]


def manager_for(
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
        alembic_messages=args.verbosity > NORMAL,
        x_arguments=args.x_arguments,
    )


@contextmanager
def throwaway_only(args: argparse.Namespace) -> Iterator[None]:
    """The production guard (see ``guard``): only throw-away databases and ``--allow``'s;
    where it sent a connection env.py opened elsewhere is said on stderr."""
    with GUARD.armed_for(opt_in_hint="--allow URL", allow=tuple(args.allow)):
        before = set(GUARD.redirects)
        try:
            yield
        finally:
            shown = args.verbosity > QUIET
            for redirect in (r for r in GUARD.redirects if r not in before and shown):
                print(f"{PROG}: note: {redirect_note(redirect)}", file=sys.stderr)


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Descriptor 1 is stderr meanwhile: what an ``env.py`` prints (``print``, ``os.write(1,
    ...)``, a subprocess, a child interpreter) never mixes into the report on stdout
    (``--format json`` or ``junit`` is read by a program)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1: nothing to keep apart
        yield
        return
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()  # what was printed meanwhile goes where it was meant to: stderr
        os.dup2(saved, 1)
        os.close(saved)


def in_sync(diff: MirrorDiff) -> str:
    return f"{diff.source.name} -> {diff.mirror.name}: in sync"


def at(manager: MigrationManager) -> str:
    return ", ".join(manager.current()) or "base"


def same_server(url: str | None, database: str) -> str | None:
    """Several databases and one --url: that server, each database by its own name."""
    if url is None:
        return None
    from ..foundation.urls import with_database

    return with_database(url, database).render_as_string(hide_password=False)
