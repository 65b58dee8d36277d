"""The seed hook: a project's data, written once into each template at heads.

``pytest_reynard_db_seed(name, connection)`` is a hook specification (added by
``hooks.pytest_addhooks``); a project implements it in a conftest (or a plugin module
named in ``pytest_plugins``). ``seed_of`` turns the implementations into a
``provision.Seed``: every implementation called on the template's connection, and a
digest of their code.

What counts as the seed's code: the whole source file of each implementation, not only
the function. A seed calls helpers and reads constants beside it; a stale seed gives
tests wrong data without a word, while a needless rebuild costs one migration. A seed
kept in a module of its own (``pytest_plugins = ["tests.seed"]``) is rebuilt only when
that module changes. Files the seed reads (a CSV) are not part of it.

A failing seed is one line naming the implementation's file and line (``SeedFailed``).
Imports nothing heavy: it is loaded with the plugin, active or not.
"""

from __future__ import annotations

import hashlib
import inspect
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ..provisioning.provision import Seed

HOOK = "pytest_reynard_db_seed"


@pytest.hookspec
def pytest_reynard_db_seed(name: str, connection: Connection) -> None:
    """Write a project's reference data into the template of database ``name`` (its
    registry name), once, after it is migrated to heads and before any test database
    is cloned from it: every fixture's database then has it.

    ``connection``: a SQLAlchemy Connection to the template, committed when every
    implementation has returned (``connection.commit()`` along the way works too). Its
    code (the file defining it) is part of the template's digest: changing it builds a
    new template.
    """


def seed_of(config: pytest.Config) -> Seed | None:
    """The run's seed, or None when no conftest implements the hook (templates then
    keep the names they had without one)."""
    from ..provisioning.provision import Seed

    implementations = config.pluginmanager.hook.pytest_reynard_db_seed.get_hookimpls()
    if not implementations:
        return None
    files = tuple(dict.fromkeys(_source_file(impl.function) for impl in implementations))
    root = config.rootpath.resolve()

    def fill(name: str, connection: Connection) -> None:
        try:
            config.hook.pytest_reynard_db_seed(name=name, connection=connection)
        except Exception as exc:
            raise _failure(name, exc, files, root) from exc

    return Seed(fill=fill, digest=_digest(files, root))


def _source_file(function: Any) -> Path:
    return Path(inspect.getsourcefile(function) or inspect.getfile(function)).resolve()


def _digest(files: tuple[Path, ...], root: Path) -> str:
    """Each file's path (relative to the rootdir: two checkouts share a template) and content."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(_shown(path, root)).encode())
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()[:12]


def _failure(name: str, exc: Exception, files: tuple[Path, ...], root: Path) -> Exception:
    """``SeedFailed`` naming the innermost line of the seed's own files in the traceback
    (where the seed called what failed, if it failed deeper)."""
    from ..foundation.errors import SeedFailed
    from ..foundation.text import one_line

    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).resolve() in files
    ]
    where = f"{_shown(Path(frames[-1].filename), root)}:{frames[-1].lineno}" if frames else HOOK
    reason = one_line(str(exc).strip().splitlines()[0] if str(exc).strip() else "", 300)
    return SeedFailed(
        f"seeding database {name!r} failed at {where}: {type(exc).__name__}"
        + (f": {reason}" if reason else "")
        + "; the template was not kept"
    )


def _shown(path: Path, root: Path) -> Path:
    resolved = path.resolve()
    return resolved.relative_to(root) if resolved.is_relative_to(root) else resolved
