"""Copy and drift between a source tree and its mirror.

A mirror (``mirror_of`` in the registry) keeps a byte-for-byte copy of its
source's revision files under its own versions folder. This module compares the
two trees (:func:`mirror_diff`) and brings the mirror up to date
(:func:`sync_mirror`). It is pure file work: no database, no printing; the CLI
and the ``mirror_sync`` check decide what to show.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .errors import RevisionError
from .registry import Database
from .text import shown_path


def versions_root(db: Database) -> Path:
    """The folder that holds all of ``db``'s version locations.

    Keys of a tree are relative to it, so ``versions/ecs/x.py`` in the source
    maps to ``versions/ecs/x.py`` in the mirror whatever the locations are named.
    """
    locations = db.version_locations or (db.script_location / "versions",)
    return Path(os.path.commonpath([str(p) for p in locations]))


def revision_files(root: Path) -> dict[PurePosixPath, Path]:
    """Every ``*.py`` file under ``root`` (recursive), keyed by its path relative to it.

    ``__pycache__`` folders are skipped: they are build output, never revisions.
    """
    files: dict[PurePosixPath, Path] = {}
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*.py")):
        key = PurePosixPath(path.relative_to(root).as_posix())
        if "__pycache__" in key.parts or not path.is_file():
            continue
        files[key] = path
    return files


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
class MirrorDiff:
    """How a mirror's revision files differ from its source's (keys relative to each root)."""

    source: Database
    mirror: Database
    missing: tuple[PurePosixPath, ...] = ()
    changed: tuple[PurePosixPath, ...] = ()
    extra: tuple[PurePosixPath, ...] = ()

    @property
    def source_root(self) -> Path:
        return versions_root(self.source)

    @property
    def mirror_root(self) -> Path:
        return versions_root(self.mirror)

    @property
    def in_sync(self) -> bool:
        """True when the mirror has exactly the source's files, with the same bytes."""
        return not (self.missing or self.changed or self.extra)

    def describe(self) -> str:
        """One line per differing file (missing, then changed, then extra)."""
        name = self.mirror.name
        if self.in_sync:
            return f"{name}: in sync with {self.source.name}"
        lines: list[str] = []
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
        for key in self.extra:
            lines.append(
                f"{name}: extra {shown_path(self.mirror_root / key)} (not in {self.source.name})"
            )
        return "\n".join(lines)


def mirror_diff(source: Database, mirror: Database) -> MirrorDiff:
    """Compare ``mirror``'s revision files with ``source``'s, path and bytes.

    The source tree is checked for duplicate revision ids first: copying a
    broken tree would only spread the problem, so it raises :class:`RevisionError`.
    """
    source_files = _tree_files(source)
    duplicates = duplicate_revisions(source_files.values())
    if duplicates:
        revision, paths = next(iter(duplicates.items()))
        shown = " and ".join(shown_path(p) for p in paths)
        more = f" (and {len(duplicates) - 1} more duplicate ids)" if len(duplicates) > 1 else ""
        raise RevisionError(f"{source.name}: revision {revision!r} is declared in {shown}{more}")
    mirror_files = _tree_files(mirror)
    missing = sorted(key for key in source_files if key not in mirror_files)
    extra = sorted(key for key in mirror_files if key not in source_files)
    changed = sorted(
        key
        for key in source_files
        if key in mirror_files and source_files[key].read_bytes() != mirror_files[key].read_bytes()
    )
    return MirrorDiff(source, mirror, tuple(missing), tuple(changed), tuple(extra))


@dataclass
class SyncReport:
    """What :func:`sync_mirror` wrote, removed and kept (mirror-side paths)."""

    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def sync_mirror(diff: MirrorDiff, *, dry_run: bool = False, prune: bool = False) -> SyncReport:
    """Copy missing and changed files from source to mirror; with ``prune``, remove extras.

    Each file is written atomically (a temp file beside it, then ``os.replace``)
    with the source file's mode, so a crash never leaves half a revision.
    Unchanged files are not touched. Mirror-only files are kept (and listed)
    unless ``prune``: a revision that exists only in the mirror may be someone's
    work. With ``dry_run`` the report says what would happen and nothing is written.
    """
    report = SyncReport()
    source_root, mirror_root = diff.source_root, diff.mirror_root
    for key in (*diff.missing, *diff.changed):
        target = mirror_root / key
        if not dry_run:
            _atomic_copy(source_root / key, target)
        report.written.append(target)
    for key in diff.extra:
        target = mirror_root / key
        if not prune:
            report.kept.append(target)
            continue
        if not dry_run:
            target.unlink(missing_ok=True)
        report.removed.append(target)
    return report


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
        for key, path in revision_files(location).items():
            files[prefix / key] = path
    return dict(sorted(files.items()))


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


def _atomic_copy(source: Path, target: Path) -> None:
    """Write ``source``'s bytes and mode to ``target`` via a temp file and ``os.replace``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(source.read_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        shutil.copymode(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
