"""Loading a database's Alembic tree, with a clear error for every way it can be broken.

Alembic reads revision files lazily and reports a broken one with a traceback
(a syntax error), a warning and a ``KeyError`` (a missing ``down_revision``), a
bare ``KeyError`` (an unknown ``depends_on``), only a warning (a duplicate revision
id, where the last file read wins), or not at all (an id such as ``heads`` or
``""``, which every later command then reads as the symbol, not the file). Here
each file is loaded once, every problem becomes a one-line ``RevisionError``
that names the file, and the resulting ``ScriptDirectory`` is reused by every
verb and check (reading the files again at each step would make a stairway
quadratic).
"""

from __future__ import annotations

import traceback
import warnings
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from alembic import util
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.script.revision import RevisionMap
from alembic.util import CommandError

from .errors import RevisionError
from .registry import Database
from .text import one_line

#: Ids Alembic reads as symbols wherever a revision is named (``heads``, ``head``,
#: ``base``; ``current`` in ``show``, ``history`` and ``edit``): a file with one can
#: never be targeted.
RESERVED_IDS = frozenset({"heads", "head", "base", "current"})


def load_tree(db: Database) -> ScriptDirectory:
    """The database's ``ScriptDirectory`` with every revision file loaded and checked."""
    config = db.alembic_config()
    try:
        script = ScriptDirectory.from_config(config)
    except CommandError as exc:
        raise RevisionError(f"{db.ini}: {exc}") from None
    scripts = list(_load_files(script))  # none: an empty tree, as `alembic init` leaves it
    _check_ids(scripts)
    script.revision_map = RevisionMap(lambda: iter(scripts))
    by_id = {s.revision: s for s in scripts}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            script.revision_map.get_revisions("heads")
    except AlembicRevisionError as exc:
        raise RevisionError(f"database {db.name!r}: {_name_files(str(exc), by_id)}") from None
    return script


def _py_files(script: ScriptDirectory) -> Iterable[Path]:
    for location in script._version_locations:
        if location.exists():
            yield from Script._list_py_dir(script, location)


def _load_files(script: ScriptDirectory) -> Iterable[Script]:
    for path in _py_files(script):
        try:
            loaded = Script._from_path(script, path.resolve())
        except SyntaxError as exc:
            raise RevisionError(
                f"{exc.filename or path}:{exc.lineno}: syntax error: {exc.msg}"
            ) from None
        except SystemExit as exc:
            # Not an error to Python, so not an ``Exception``: unhandled, it would end
            # the CLI (or a pytest session) silently with the file's exit code.
            raise RevisionError(
                f"{path}: cannot load: it calls sys.exit({exc.code!r}){_line(exc, path)}"
            ) from None
        except Exception as exc:
            raise RevisionError(f"{path}: cannot load: {_describe(exc, path)}") from None
        if loaded is not None:
            yield loaded


def _check_ids(scripts: list[Script]) -> None:
    paths: dict[str, list[str]] = defaultdict(list)
    for script in scripts:
        _check_id(script)
        paths[script.revision].append(script.path)
    for revision, files in paths.items():
        if len(files) > 1:
            raise RevisionError(f"revision {revision} is defined twice: {files[0]} and {files[1]}")
    for script in scripts:
        for down in script._versioned_down_revisions:
            if down not in paths:
                raise RevisionError(
                    f"{script.path}: down_revision {down!r} is not a revision of this tree"
                )
    # depends_on may name a revision or a branch label (Alembic resolves both).
    labels = {label for script in scripts for label in script.branch_labels}
    for script in scripts:
        for dependency in util.to_tuple(script.dependencies, default=()):
            if dependency not in paths and dependency not in labels:
                raise RevisionError(
                    f"{script.path}: depends_on {dependency!r} is not a revision or branch "
                    "label of this tree"
                )


def _check_id(script: Script) -> None:
    """An id Alembic would read as a symbol (or as nothing) names no file it can find."""
    revision = script.revision
    why = ""
    if not revision.strip():
        why = "it is empty"
    elif revision in RESERVED_IDS:
        why = f"it is reserved by Alembic ({', '.join(sorted(RESERVED_IDS))})"
    if why:
        raise RevisionError(
            f"{script.path}: revision {revision!r} is not a valid revision id: {why}"
        )


def _name_files(message: str, by_id: dict[str, Script]) -> str:
    """Append the files of the revisions an Alembic message names."""
    named = [s.path for rev, s in by_id.items() if rev in message]
    return f"{message} ({', '.join(named)})" if named else message


def _describe(exc: BaseException, path: Path) -> str:
    """The exception, and the line of ``path`` it came from."""
    return f"{type(exc).__name__}: {one_line(exc)}{_line(exc, path)}"


def _line(exc: BaseException, path: Path) -> str:
    """`` (line N)``: the last line of ``path`` in the exception's traceback, if any."""
    line = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = f" (line {frame.lineno})"
    return line
