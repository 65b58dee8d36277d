"""Drift between a source tree and its mirror, and the copy that ends it.

A mirror (``mirror_of`` in the registry) keeps a byte-for-byte copy of its source's
revision files under its own versions folder. :func:`mirror_diff` compares the two trees
(the ``mirror_sync`` check), :func:`sync_mirror` brings the mirror up to date (``copy``):
pure file work, no database, no printing; the CLI and the check decide what to show.

Nothing in the mirror is lost: files are matched by revision id as well as by path (a
revision renamed in the source moves in the mirror, leaving no duplicate id); a revision
only the mirror has is never overwritten (a conflict stops the sync before any write) nor
removed without ``prune``; a file that declares no revision is never removed. Each file
is written whole, and the temp files a killed copy left are removed by the next one. An
operating-system error is one :class:`FilesystemError` line (exit 2), never a traceback.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..foundation.errors import FileConflict, FilesystemError, RevisionError
from ..foundation.filesystem import replace_file
from ..foundation.registry import Database
from ..foundation.urls import shown_path
from .tree import every_file, loaded_files


def versions_root(db: Database) -> Path:
    """The folder that holds all of ``db``'s version locations.

    Keys of a tree are relative to it, so ``versions/ecs/x.py`` in the source
    maps to ``versions/ecs/x.py`` in the mirror whatever the locations are named.
    """
    locations = db.version_locations or (db.script_location / "versions",)
    return Path(os.path.commonpath([str(p) for p in locations]))


def keyed_files(root: Path) -> dict[PurePosixPath, Path]:
    """The files under ``root`` (``tree.every_file``: the revisions and what they read, a
    ``.sql`` file beside them; no ``__pycache__``), keyed by their path relative to it."""
    return {PurePosixPath(path.relative_to(root).as_posix()): path for path in every_file(root)}


def duplicate_revisions(files: Iterable[Path]) -> dict[str, list[Path]]:
    """Revision ids declared by more than one of ``files``, with the files declaring them.

    The id is read from a module-level ``revision = "..."`` (or
    ``revision: str = "..."``) with :mod:`ast`, so a file is never executed.
    A file that does not parse raises :class:`RevisionError` naming file and line.
    """
    by_id: dict[str, list[Path]] = {}
    for path in files:
        revision = _declared_revision(path)
        if revision is not None:
            by_id.setdefault(revision, []).append(path)
    return {rev: paths for rev, paths in sorted(by_id.items()) if len(paths) > 1}


@dataclass(frozen=True)
class Conflict:
    """A file the source would write over a mirror-only revision (``key`` in both trees)."""

    key: PurePosixPath
    mirror_revision: str
    source_revision: str | None


@dataclass(frozen=True)
class MirrorDiff:
    """How a mirror's revision files differ from its source's (keys relative to each root).

    ``missing``: in the source only; ``changed``: at the same path, other bytes;
    ``renamed``: a mirror file whose revision the source has at another path, as
    (mirror key, source key); ``extra``: only in the mirror (a revision the source
    does not have, or a file that declares none); ``conflicts``: a revision only
    the mirror has, at a path where the source has another file.
    """

    source: Database
    mirror: Database
    missing: tuple[PurePosixPath, ...] = ()
    changed: tuple[PurePosixPath, ...] = ()
    extra: tuple[PurePosixPath, ...] = ()
    renamed: tuple[tuple[PurePosixPath, PurePosixPath], ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    helpers: tuple[PurePosixPath, ...] = ()  # the keys of ``extra`` that declare no revision

    @property
    def source_root(self) -> Path:
        return versions_root(self.source)

    @property
    def mirror_root(self) -> Path:
        return versions_root(self.mirror)

    @property
    def in_sync(self) -> bool:
        """True when the mirror has exactly the source's files, with the same bytes."""
        return not (self.missing or self.changed or self.extra or self.renamed or self.conflicts)

    def describe(self) -> str:
        """One line per differing file (conflicts, missing, changed, renamed, then extra)."""
        name = self.mirror.name
        if self.in_sync:
            return f"{name}: in sync with {self.source.name}"
        lines = [self.describe_conflict(conflict) for conflict in self.conflicts]
        for key in self.missing:
            lines.append(
                f"{name}: missing {shown_path(self.mirror_root / key)}"
                f" (in {shown_path(self.source_root / key)})"
            )
        for key in self.changed:
            lines.append(
                f"{name}: differs {shown_path(self.mirror_root / key)}"
                f" (from {shown_path(self.source_root / key)})"
            )
        for old, new in self.renamed:
            lines.append(
                f"{name}: renamed {shown_path(self.mirror_root / old)}"
                f" (its revision is {shown_path(self.source_root / new)} in {self.source.name})"
            )
        for key in self.extra:
            lines.append(
                f"{name}: extra {shown_path(self.mirror_root / key)} (not in {self.source.name})"
            )
        return "\n".join(lines)

    def describe_conflict(self, conflict: Conflict) -> str:
        """One line naming both files of a conflict and the two revisions."""
        theirs = conflict.source_revision or "no revision"
        return (
            f"{self.mirror.name}: conflict {shown_path(self.mirror_root / conflict.key)}"
            f" (revision {conflict.mirror_revision}, only in the mirror) would be overwritten"
            f" by {shown_path(self.source_root / conflict.key)} ({theirs}); rename or remove"
            " the mirror's file"
        )


def mirror_diff(source: Database, mirror: Database) -> MirrorDiff:
    """Compare ``mirror``'s revision files with ``source``'s, by path, bytes and revision id.

    The source tree is checked for duplicate revision ids first: copying a
    broken tree would only spread the problem, so it raises :class:`RevisionError`.
    """
    source_files = _tree_files(source)
    duplicates = duplicate_revisions(p for p in source_files.values() if p.suffix == ".py")
    if duplicates:
        revision, paths = next(iter(duplicates.items()))
        shown = " and ".join(shown_path(p) for p in paths)
        more = f" (and {len(duplicates) - 1} more duplicate ids)" if len(duplicates) > 1 else ""
        raise RevisionError(f"{source.name}: revision {revision!r} is declared in {shown}{more}")
    source_ids = {
        key: _declared_revision(path) if path.suffix == ".py" else None
        for key, path in source_files.items()
    }
    where = {rev: key for key, rev in source_ids.items() if rev is not None}
    mirror_files = _tree_files(mirror)
    mirror_ids = {
        key: _mirror_revision(path) if path.suffix == ".py" else None
        for key, path in mirror_files.items()
    }
    conflicts = tuple(
        Conflict(key, rev, source_ids[key])
        for key, rev in mirror_ids.items()
        if key in source_files and rev is not None and rev != source_ids[key] and rev not in where
    )
    clashing = {c.key for c in conflicts}
    shared = [key for key in source_files if key in mirror_files and key not in clashing]
    only_mirror = [key for key in mirror_files if key not in source_files]
    return MirrorDiff(
        source,
        mirror,
        missing=tuple(key for key in source_files if key not in mirror_files),
        changed=tuple(k for k in shared if not _same_bytes(source_files[k], mirror_files[k])),
        extra=tuple(k for k in only_mirror if mirror_ids[k] not in where),
        renamed=tuple(_renamed(only_mirror, mirror_ids, where)),
        conflicts=conflicts,
        helpers=tuple(k for k in only_mirror if mirror_ids[k] is None),
    )


def _tree_files(db: Database) -> dict[PurePosixPath, Path]:
    """``db``'s revision files, keyed relative to :func:`versions_root`.

    Only the version locations are walked (not the whole root), so a root that
    happens to be the script folder never drags ``env.py`` into the mirror.
    """
    root = versions_root(db)
    locations = db.version_locations or (root,)
    files: dict[PurePosixPath, Path] = {}
    for location in locations:
        prefix = PurePosixPath(location.relative_to(root).as_posix())
        for key, path in keyed_files(location).items():
            files[prefix / key] = path
    return dict(sorted(files.items()))


def loaded_revisions(db: Database) -> set[str]:
    """The revision ids Alembic loads for ``db``: the ``*.py`` files of its ini's version
    locations (their subfolders only with ``recursive_version_locations``), read, not run."""
    found = (_mirror_revision(path) for path in loaded_files(db))
    return {revision for revision in found if revision is not None}


def _declared_revision(path: Path) -> str | None:
    """The string assigned to module-level ``revision`` in ``path``, if any."""
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise RevisionError(f"{shown_path(path)}: unreadable: {exc.strerror or exc}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        message = " ".join((exc.msg or "invalid syntax").split())
        raise RevisionError(
            f"{shown_path(path)}:{exc.lineno or 0}: syntax error: {message}"
        ) from None
    except ValueError as exc:  # e.g. null bytes, on Python < 3.12
        raise RevisionError(f"{shown_path(path)}: syntax error: {exc}") from None
    for node in tree.body:
        targets: list[ast.expr]
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "revision" for t in targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    return None


def _renamed(
    keys: Iterable[PurePosixPath],
    mirror_ids: dict[PurePosixPath, str | None],
    where: dict[str, PurePosixPath],
) -> Iterator[tuple[PurePosixPath, PurePosixPath]]:
    """(mirror key, source key) for each mirror-only file whose revision the source has
    elsewhere: the source renamed it (or an older copy was left behind)."""
    for key in keys:
        revision = mirror_ids[key]
        if revision is not None and revision in where:
            yield key, where[revision]


def _mirror_revision(path: Path) -> str | None:
    """The revision a mirror file declares; ``None`` when it declares none or does not
    parse (a broken copy is repaired from the source, never taken for someone's work)."""
    try:
        return _declared_revision(path)
    except RevisionError:
        return None


def _same_bytes(source: Path, target: Path) -> bool:
    with os_errors("read", target):
        return source.read_bytes() == target.read_bytes()


@contextmanager
def os_errors(action: str, path: Path, db: Database | None = None) -> Iterator[None]:
    """An ``OSError`` on ``path`` as one :class:`FilesystemError` line (exit 2)."""
    try:
        yield
    except OSError as exc:
        prefix = f"{db.name}: " if db is not None else ""
        reason = exc.strerror or type(exc).__name__
        raise FilesystemError(f"{prefix}cannot {action} {shown_path(path)}: {reason}") from None


# -- the copy: a diff applied -----------------------------------------------------------

# What a killed copy leaves: ``filesystem.replace_file``'s ``.<name>.py.<8 chars>.tmp``.
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
