"""What several verbs of ``reynard-migrate`` share: the manager they migrate with, the
production guard around them, and the lines they print."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from ..foundation.registry import Registry
from ..guard import GUARD, redirect_note
from ..migration import logs
from ..migration.manager import MigrationManager
from ..migration.mirror import MirrorDiff
from . import PROG

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
        alembic_messages=args.verbosity > logs.NORMAL,
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
            shown = args.verbosity > logs.QUIET
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
