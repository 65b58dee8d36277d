"""``reynard-migrate server status|stop|prune``: the servers templates outlive runs on.

Two kinds: the **reuse server** (``--reynard-db-reuse``) this machine keeps running
between runs, in ``<runtime root>/reuse-<key>``, as the harness's unprivileged user
(so ``pg_ctl -D ... stop`` as root fails: PostgreSQL refuses root); and a **shared
server** (``--url``, what ``--reynard-db-url`` names) whose templates other runs
use. ``status`` shows either; ``stop`` stops the reuse server and removes its
directory (refused while a run uses it); ``prune`` drops templates of tree digests
that are no longer current (or, with ``--older-than``, unused that long), never one
a run holds.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import time
from typing import TextIO

from ..foundation.errors import CheckFailed, ConfigError, ServerError
from ..foundation.filesystem import file_lock
from ..foundation.registry import Registry
from ..foundation.urls import admin_url, counted, mask_url, print_table
from ..postgres import EphemeralServer, ExistingServer, Server
from ..postgres.binaries import describe
from ..postgres.executor import EphemeralPostgres, Kept, kept_at, reuse_dir
from ..postgres.reaper import postmaster_pid, stop_postmaster
from ..postgres.shared import TemplateInfo, drop_dead_runs, prune_templates, run_sessions, templates
from ..provisioning.resolve import SOURCES, migrated_with, project_identity, tree_digest

#: How long a fast shutdown (SIGINT) may take before the immediate one.
STOP_WAIT = 10.0


def kept_server() -> Kept:
    """This machine's reuse server (for the binaries found now), running or not."""
    return kept_at(reuse_dir(EphemeralPostgres(persistent=True)))


def admin_view(kept: Kept) -> EphemeralServer:
    """An admin view of the kept server (nothing is started; it must be running)."""
    return EphemeralServer(kept.attach(EphemeralPostgres(persistent=True)))


def current_trees(registry: Registry) -> frozenset[str]:
    """The digests at heads of the registry's trees now (``copy`` and ``point``): a
    template built from one of them is current, at whatever revision it is."""
    return frozenset(
        tree_digest(migrated_with(registry, db, source), "heads", source)
        for db in registry.select()
        for source in SOURCES
    )


def status(registry: Registry, url: str | None) -> list[str]:
    """Lines that describe the reuse server, or the shared server at ``url``."""
    if url is not None:
        shared = _shared(url)
        try:
            lines = [f"shared server {mask_url(shared.url)}: PostgreSQL {shared.version}"]
            sessions = run_sessions(shared)
            lines.append(f"runs: {len(sessions) or 'none'}")
            lines += [f"  {name}: {counted(held, 'template')} held" for name, held in sessions]
            lines += _template_lines(templates(shared), registry)
        finally:
            shared.close()
        return lines
    process = EphemeralPostgres(persistent=True)
    kept = kept_at(reuse_dir(process))
    # The kept server's binaries: its directory is named by them (reuse_dir).
    binaries = [f"binaries: {line}" for line in describe(process.binaries)]
    if not kept.running:
        return [f"reuse server: not running ({kept.base_dir})", *binaries]
    runs = kept.runs()
    lines = [
        f"reuse server: running, pid {kept.pid}, port {kept.port} ({kept.base_dir})",
        *binaries,
        f"runs: {', '.join(f'pid {pid}' for pid in runs) or 'none'}",
    ]
    server = admin_view(kept)
    try:
        lines += _template_lines(templates(server), registry)
    finally:
        server.close()
    return lines


def _template_lines(found: list[TemplateInfo], registry: Registry) -> list[str]:
    if not found:
        return ["templates: none"]
    project, trees = project_identity(registry), current_trees(registry)
    rows = [["template", "last used", "tree"]]
    for info in found:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.used)) if info.used else "-"
        rows.append([info.name, used, info.kind(project, trees)])
    table = io.StringIO()
    print_table(rows, table)
    return [f"templates: {len(found)}", *table.getvalue().splitlines()]


def stop() -> str:
    """Stop the reuse server and remove its directory; refused while a run uses it."""
    kept = kept_server()
    with file_lock(f"{kept.base_dir}.lock", f"the reuse server {kept.base_dir}"):
        if not kept.base_dir.exists():
            return f"reuse server: not running ({kept.base_dir}); nothing to stop"
        runs = kept.runs()
        if runs:
            raise CheckFailed(
                f"reuse server {kept.base_dir} is in use by the run(s) of pid "
                f"{', '.join(map(str, runs))}; stop it when they end"
            )
        data = kept.base_dir / "data"
        pid = postmaster_pid(data)
        if pid is not None:
            os.kill(pid, signal.SIGINT)  # fast shutdown: sessions ended, clean stop
            deadline = time.monotonic() + STOP_WAIT
            while postmaster_pid(data) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            stop_postmaster(data)  # still there: immediate shutdown
        shutil.rmtree(kept.base_dir, ignore_errors=True)
    said = f"pid {pid}, port {kept.port}" if pid else "it was not running"
    return f"reuse server: stopped ({said}); removed {kept.base_dir}"


def prune(registry: Registry, url: str | None, older_than_days: float | None) -> list[str]:
    """Drop old templates no run holds (and, on a shared server, dead runs' databases)."""
    max_age = None if older_than_days is None else older_than_days * 86400.0
    # By digest: this project's templates of trees it no longer has, never another's.
    project = project_identity(registry) if max_age is None else None
    trees = current_trees(registry) if max_age is None else frozenset()
    if url is not None:
        server: Server = _shared(url)
        try:
            dropped = drop_dead_runs(server, own_run="-")
            dropped += prune_templates(
                server, max_age=max_age, project=project, current_trees=trees
            )
        finally:
            server.close()
        return dropped
    kept = kept_server()
    if not kept.running:
        return []
    server = admin_view(kept)
    try:
        return prune_templates(
            server, max_age=max_age, everything_ours=True, project=project, current_trees=trees
        )
    finally:
        server.close()


def run_verb(
    action: str, registry: Registry, out: TextIO, url: str | None, older_than: float | None
) -> int:
    """``reynard-migrate server ACTION``: print what was found or done; the exit code."""
    if older_than is not None and (older_than < 0 or action != "prune"):
        raise ConfigError(f"server {action} --older-than {older_than:g}: prune takes DAYS ≥ 0")
    if action == "status":
        print("\n".join(status(registry, url)), file=out)
    elif action == "stop":
        if url is not None:
            raise ConfigError("server stop --url: a shared server is not ours to stop")
        print(stop(), file=out)
    else:
        dropped = prune(registry, url, older_than)
        for name in dropped:
            print(f"dropped {name}", file=out)
        print(f"pruned {counted(len(dropped), 'database')}", file=out)
    return 0


def _shared(url: str) -> ExistingServer:
    server = ExistingServer(admin_url(url, origin="--url"))
    try:
        server.version  # noqa: B018 - reach it now: an unreachable server is one line
    except ServerError:
        server.close()
        raise
    return server
