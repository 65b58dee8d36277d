"""Writing a mirror: :func:`sync_mirror` applies a :class:`~.mirror.MirrorDiff`.

Nothing is lost on the way. A conflict (a revision only the mirror has, where
the source has a file) stops the sync before anything is written; each file is
written atomically (a temp file beside it, then ``os.replace``), and the temp
files a killed copy left are removed by the next one; a folder in the way, a
read-only folder or any other operating-system error is one
:class:`~.errors.FilesystemError` line (exit 2), never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..foundation.errors import FileConflict, FilesystemError
from ..foundation.filesystem import replace_file
from ..foundation.registry import Database
from ..foundation.urls import shown_path
from ..migration.mirror import MirrorDiff, os_errors, versions_root

# How ``filesystem.replace_file`` names :func:`_atomic_copy`'s temp files:
# ``.<name>.py.<8 chars>.tmp``.
LEFTOVER = re.compile(r"^\..+\.py\.[A-Za-z0-9_]{8}\.tmp$")


@dataclass
class SyncReport:
    """What :func:`sync_mirror` wrote, removed and kept (mirror-side paths).

    ``moved``: (removed file, the file that now holds its revision), for revisions
    renamed in the source; ``helpers``: mirror-only files that declare no revision,
    kept even with ``prune``; ``leftovers``: temp files of an interrupted copy.
    """

    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    moved: list[tuple[Path, Path]] = field(default_factory=list)
    helpers: list[Path] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)


def sync_mirror(diff: MirrorDiff, *, dry_run: bool = False, prune: bool = False) -> SyncReport:
    """Copy missing and changed files from source to mirror; with ``prune``, remove extras.

    Unchanged files are not touched. A revision renamed in the source is renamed
    in the mirror (written at its new path, then the old file removed).
    Mirror-only revisions are kept (and listed) unless ``prune``; files that
    declare no revision are always kept. A conflict raises :class:`FileConflict`
    and a folder in the way :class:`FilesystemError`, both before anything is
    written. With ``dry_run`` the report says what would happen, nothing is written.
    """
    if diff.conflicts:
        raise conflict_error([diff])
    report = _plan(diff, prune=prune)
    _check_writable(diff.mirror, report.written)
    if not dry_run:
        _apply(diff, report)
    return report


def _plan(diff: MirrorDiff, *, prune: bool) -> SyncReport:
    """What a sync of ``diff`` does, as mirror-side paths."""
    root = diff.mirror_root
    report = SyncReport(leftovers=leftover_files(diff.mirror))
    report.written = [root / key for key in (*diff.missing, *diff.changed)]
    report.moved = [(root / old, root / new) for old, new in diff.renamed]
    for key in diff.extra:
        if key in diff.helpers:
            report.helpers.append(root / key)
        else:
            (report.removed if prune else report.kept).append(root / key)
    return report


def _apply(diff: MirrorDiff, report: SyncReport) -> None:
    """Leftovers out, then every write, then the removals: an interruption loses nothing."""
    _remove(diff.mirror, report.leftovers)
    for target in report.written:
        source = diff.source_root / target.relative_to(diff.mirror_root)
        _atomic_copy(diff.mirror, source, target)
    _remove(diff.mirror, [old for old, _ in report.moved])
    _remove(diff.mirror, report.removed)


def conflict_error(diffs: Iterable[MirrorDiff]) -> FileConflict:
    """One line for every conflict of ``diffs``: the first named in full, the others counted."""
    lines = [diff.describe_conflict(c) for diff in diffs for c in diff.conflicts]
    more = f" (and {len(lines) - 1} more conflicts)" if len(lines) > 1 else ""
    return FileConflict(f"{lines[0]}{more}; nothing written")


def leftover_files(db: Database) -> list[Path]:
    """Temp files an interrupted copy left in ``db``'s version locations (hidden, ``.tmp``)."""
    found: list[Path] = []
    for location in db.version_locations or (versions_root(db),):
        if location.is_dir():
            found.extend(p for p in sorted(location.rglob(".*.tmp")) if LEFTOVER.match(p.name))
    return found


def _check_writable(db: Database, targets: Iterable[Path]) -> None:
    """Refuse, before anything is written, a target that exists and is not a file."""
    for target in targets:
        if target.exists() and not target.is_file():
            raise FilesystemError(
                f"{db.name}: cannot write {shown_path(target)}: a folder is in the way"
                " (move it, then copy again)"
            )


def _remove(db: Database, paths: Iterable[Path]) -> None:
    for path in paths:
        with os_errors("remove", path, db):
            path.unlink(missing_ok=True)


def _atomic_copy(db: Database, source: Path, target: Path) -> None:
    """Write ``source``'s bytes and mode to ``target`` via a temp file and ``os.replace``."""
    with os_errors("write", target, db):
        target.parent.mkdir(parents=True, exist_ok=True)
        replace_file(target, source.read_bytes(), mode_of=source, durable=True)


def describe_sync(diff: MirrorDiff, report: SyncReport, *, dry_run: bool) -> list[str]:
    """One line per file a sync wrote, moved, removed or kept (what it would do, dry)."""
    name, source = diff.mirror.name, diff.source.name

    def did(done: str, would: str) -> str:
        return f"{name}: {would if dry_run else done}"

    lines = [
        f"{did('removed', 'would remove')} leftover {shown_path(p)} (from an interrupted copy)"
        for p in report.leftovers
    ]
    lines += [f"{did('wrote', 'would write')} {shown_path(p)}" for p in report.written]
    lines += [
        f"{did('removed', 'would remove')} {shown_path(old)}"
        f" (renamed in {source}: its revision is {shown_path(new)})"
        for old, new in report.moved
    ]
    lines += [f"{did('removed', 'would remove')} {shown_path(p)}" for p in report.removed]
    lines += [
        f"{name}: kept {shown_path(p)} (only in the mirror; --prune removes it)"
        for p in report.kept
    ]
    lines += [
        f"{name}: kept {shown_path(p)} (not a revision file; --prune never removes it)"
        for p in report.helpers
    ]
    return lines
