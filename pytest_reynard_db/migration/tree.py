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

This is also the one module that touches Alembic's private names
(``Script._from_path``, ``ScriptDirectory._upgrade_revs`` and the like, stable
across 1.x, hence the ``<2`` cap): each behind a function named for what it does,
so that an Alembic release that moves one breaks here only. And it holds the
few rules of the revision graph that several places need: which files a version
location holds (``revision_files``), a revision's parents and first parent.
"""

from __future__ import annotations

import os
import re
import traceback
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any

from alembic import util
from alembic.runtime.migration import RevisionStep
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.script.revision import RevisionMap
from alembic.util import CommandError

from ..foundation.errors import RevisionError
from ..foundation.filesystem import refuse_non_regular
from ..foundation.registry import Database
from ..foundation.urls import one_line

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext, MigrationStep
    from sqlalchemy import Connection, Table

#: Ids Alembic reads as symbols wherever a revision is named (``heads``, ``head``,
#: ``base``; ``current`` in ``show``, ``history`` and ``edit``): a file with one can
#: never be targeted.
RESERVED_IDS = frozenset({"heads", "head", "base", "current"})
#: A relative step (``+1``, ``ae10-2``): Alembic resolves it against the database.
RELATIVE = re.compile(r"[+-]\d+$")


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


def check_target(script: ScriptDirectory, db: Database, target: str) -> None:
    """Check that ``target`` (``REV``, ``FROM:TO``) names revisions of ``db``'s tree: an
    unknown one is a ``RevisionError`` before any database is reached. Relative steps
    are left to Alembic."""
    for part in target.split(":"):
        if not part or RELATIVE.search(part):
            continue
        try:
            script.get_revisions(part)
        except (AlembicRevisionError, CommandError) as exc:
            raise RevisionError(
                f"database {db.name!r}: unknown revision {part!r} ({one_line(exc)})"
            ) from None


# -- the files of a tree --------------------------------------------------------------------
def _files_below(folder: Path, *, recursive: bool, keep: Callable[[str], bool]) -> list[Path]:
    """The files below ``folder`` whose names ``keep`` takes, in Alembic's order: a folder's
    files sorted, then (``recursive``) its subfolders, sorted; ``__pycache__`` is build
    output."""
    found: list[Path] = []
    if not folder.is_dir():
        return found
    for where, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__") if recursive else []
        found.extend(Path(where, name) for name in sorted(names) if keep(name))
    return found


def every_file(folder: Path) -> list[Path]:
    """Every regular file below ``folder``, revisions and what they read (a ``.sql`` file
    beside them), in ``revision_files``' order; bytecode and hidden files (an editor's swap
    file, a copy's temp file) are not the tree's, and a revision file that is not a regular
    file is refused, as ``revision_files`` refuses it. What a template's digest hashes and a
    mirror copies."""
    found = _files_below(
        folder,
        recursive=True,
        keep=lambda name: not name.startswith(".") and not name.endswith((".pyc", ".pyo")),
    )
    for path in found:
        if path.suffix == ".py":  # read as a revision: a FIFO would block
            refuse_non_regular(path)
    return [path for path in found if path.is_file()]


def revision_files(location: Path, *, recursive: bool = True) -> list[Path]:
    """The ``*.py`` files of a version location, in Alembic's order (``_files_below``). What
    a tree is loaded from (recursive as the ini's ``recursive_version_locations`` says)."""
    files = _files_below(location, recursive=recursive, keep=lambda name: name.endswith(".py"))
    for path in files:  # each is read (loaded, parsed): a FIFO would block
        refuse_non_regular(path)
    return files


def loaded_files(db: Database) -> list[Path]:
    """The ``*.py`` files Alembic loads for ``db``: those of its version locations, their
    subfolders only where the ini's ``recursive_version_locations`` says so; found without
    loading the tree (``history``, ``mirror_sync``)."""
    recursive = db.alembic_config().get_alembic_boolean_option("recursive_version_locations")
    return [
        path
        for location in db.version_locations
        for path in revision_files(location, recursive=recursive)
    ]


def _py_files(script: ScriptDirectory) -> Iterable[Path]:
    for location in script._version_locations:
        if not location.exists():
            continue
        if script.sourceless:  # compiled revisions (.pyc): Alembic's own listing finds them
            yield from Script._list_py_dir(script, location)
        else:
            yield from revision_files(location, recursive=script.recursive_version_locations)


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
        for down in parents(script):
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
    line = last_line(exc, path)
    return "" if line is None else f" (line {line})"


def last_line(exc: BaseException, path: Path) -> int | None:
    """The last (deepest) line of ``path`` in the exception's traceback, if it is there."""
    wanted = path.resolve()
    found = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).resolve() == wanted
    ]
    return found[-1] if found else None


# -- the graph, as Alembic knows it ------------------------------------------------------------
def parents(revision: Script) -> tuple[str, ...]:
    """The revisions ``revision``'s ``down_revision`` names (two or more for a merge)."""
    return tuple(util.to_tuple(revision.down_revision, default=()))


def first_parent(revision: Script) -> str:
    """The parent a step of ``revision`` alone is scoped to: its only parent, the first
    (by id) of a merge's, ``base`` for a base. ``<rev>@<first parent>`` downgrades exactly
    ``rev``; ``<first parent>:<rev>`` is the offline range of its step."""
    found = sorted(parents(revision))
    return found[0] if found else "base"


def needs(revision: Script) -> tuple[str, ...]:
    """Every revision ``revision`` is applied after: its parents and its ``depends_on``
    (labels resolved to revisions)."""
    return tuple(revision._all_down_revisions)


def declared_labels(revision: Script) -> set[str]:
    """The branch labels written in the file (``branch_labels`` also holds inherited ones)."""
    return set(revision._orig_branch_labels)


# -- the steps Alembic takes -------------------------------------------------------------------
class WalkStep(RevisionStep):
    """Alembic's step on exactly one revision (up or down), as the stairway and
    ``downgrade`` take them.

    Identical to Alembic's ``RevisionStep`` but for one answer computed without a
    graph walk: a downgrade step asks which of the revision's parents become heads,
    and Alembic finds out by collecting every ancestor of every parent, to drop a
    parent that is another's ancestor (O(n) a step, so a stairway was O(n²)). With
    one parent and no other head there is nothing to drop: the answer is that parent,
    exactly what Alembic's walk would return. Every other case is Alembic's.
    """

    def _unmerge_to_revisions(self, heads: set[str]) -> tuple[str, ...]:
        to_revisions: tuple[str, ...] = self.to_revisions
        if len(to_revisions) == 1 and not set(heads) - {self.revision.revision}:
            return to_revisions
        answer: tuple[str, ...] = super()._unmerge_to_revisions(heads)
        return answer


#: Revision modules whose ``upgrade()`` or ``downgrade()`` has run in this process.
_RAN: weakref.WeakSet[ModuleType] = weakref.WeakSet()


def as_first_run(step: Any) -> Any:
    """``step``, its function taken from its revision's module as a new ``alembic``
    process would have it.

    Plain Alembic loads each revision file once per command, and a command runs each
    revision's function at most once. Here one loaded tree serves many steps (the
    stairway runs every revision three times, after the ``upgrade`` check ran it once),
    so what a revision keeps at module level (a ``MetaData`` it reflects a table into, a
    cache) would carry from one step into the next. A module whose functions already
    ran is therefore loaded again from its file first. A file that cannot be loaded
    twice (it adds a table to the application's ``MetaData`` at import) keeps the
    module it has: that is all one process can do.
    """
    if not isinstance(step, RevisionStep):
        return step  # a stamp or a merge's version-table change: no module runs
    script: Script = step.revision
    if script.module in _RAN and script.path:
        with suppress(Exception):  # it keeps the module it has (see above)
            script.module = _load_again(script.path)
    _RAN.add(script.module)
    step.migration_fn = script.module.upgrade if step.is_upgrade else script.module.downgrade
    return step


#: A revision file's code, compiled once: (path) -> ((mtime, size), code).
_CODE: dict[str, tuple[tuple[int, int], CodeType]] = {}


def _load_again(path: str) -> ModuleType:
    """The revision module at ``path`` as a new load would make it, its code compiled
    once per file (a stairway loads each file three times)."""
    if not path.endswith(".py"):  # a sourceless tree: Alembic's own loading
        return util.load_python_file(os.path.dirname(path), os.path.basename(path))
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _CODE.get(path)
    if cached is None or cached[0] != key:
        cached = (key, compile(Path(path).read_bytes(), path, "exec", dont_inherit=True))
        _CODE[path] = cached
    module = ModuleType(re.sub(r"\W", "_", os.path.basename(path)))
    module.__file__ = path
    exec(cached[1], module.__dict__)
    return module


#: The version table each tree's ``env.py`` was seen configuring: (name, schema).
_VERSION_TABLES: weakref.WeakKeyDictionary[ScriptDirectory, tuple[str, str | None]] = (
    weakref.WeakKeyDictionary()
)


def note_version_table(script: ScriptDirectory, context: MigrationContext) -> None:
    """Remember the version table ``env.py`` configured for ``script`` (``version_table``,
    ``version_table_schema``: mlflow's auth tree keeps ``alembic_version_auth``), so that
    what reads a database's revision back reads the table env.py writes."""
    schema = context.version_table_schema
    if schema is None:
        schema = _unqualified_schema(context)
    _VERSION_TABLES[script] = (context.version_table, schema)


#: Where env.py's session finds (or Alembic will create) the version table it names without
#: a schema: its ``search_path``'s, which env.py may have set (``options=-c search_path=app``).
_WHERE_UNQUALIFIED = (
    "SELECT coalesce((SELECT n.nspname FROM pg_catalog.pg_class c"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.oid = pg_catalog.to_regclass(pg_catalog.quote_ident(:name))),"
    " pg_catalog.current_schema())"
)


def _unqualified_schema(context: MigrationContext) -> str | None:
    """The schema of an unqualified version table as env.py's session resolves it, where that
    is not ``public`` (None: read it back unqualified, as before). A session env.py put in a
    schema of its own (``search_path=app,public``) keeps ``alembic_version`` there; read
    unqualified on another connection, it was not found, and a sound tree was said to have
    migrated another database (hostile verdict round 20)."""
    connection = context.connection
    if context.as_sql or connection is None or connection.dialect.name != "postgresql":
        return None
    from sqlalchemy import text

    found = connection.execute(text(_WHERE_UNQUALIFIED), {"name": context.version_table})
    schema = found.scalar()
    return None if schema in (None, "public") else str(schema)


def version_table_seen(script: ScriptDirectory) -> bool:
    """Whether ``script``'s ``env.py`` has run in this process (``version_table_of`` is its)."""
    return script in _VERSION_TABLES


def version_table_of(script: ScriptDirectory) -> tuple[str, str | None]:
    """The version table of ``script``'s ``env.py`` as last seen; Alembic's default before."""
    return _VERSION_TABLES.get(script, ("alembic_version", None))


def current_heads(
    connection: Connection,
    script: ScriptDirectory,
    *,
    version_table: tuple[str, str | None] | None = None,
) -> tuple[str, ...]:
    """The revisions ``connection``'s database is at, read from ``script``'s version table
    (or ``version_table``: its name and schema, where the caller found it)."""
    from alembic.runtime.migration import MigrationContext

    name, schema = version_table or version_table_of(script)
    opts = {"version_table": name, "version_table_schema": schema}
    return tuple(MigrationContext.configure(connection, opts=opts).get_current_heads())


def forget_created_types(context: MigrationContext) -> None:
    """Start the next step with nothing noted by Alembic's DDL runner, as a new command does.

    SQLAlchemy's named types (a PostgreSQL ``ENUM``) note in the runner's ``memo`` that
    they were created, and are not created again while the same runner lives: one
    ``alembic upgrade`` command's whole run. A walk that takes many commands' steps in
    one run must forget them between steps, or an enum dropped by a downgrade is not
    created again by the next upgrade (and a ``DROP TYPE`` forgotten goes unseen).
    """
    context.impl.memo = {}


def upgrade_steps(script: ScriptDirectory, target: str, heads: Any) -> list[MigrationStep]:
    """The steps from ``heads`` up to ``target``, as ``alembic upgrade`` takes them."""
    return list(script._upgrade_revs(target, heads))


def downgrade_steps(script: ScriptDirectory, target: str, heads: Any) -> list[MigrationStep]:
    """The steps from ``heads`` down to ``target``, as ``alembic downgrade`` takes them
    (as ``WalkStep``s: the same answers, without a graph walk for each linear step)."""
    return [
        WalkStep(step.revision_map, step.revision, False) if type(step) is RevisionStep else step
        for step in script._downgrade_revs(target, heads)
    ]


def stamp_steps(
    script: ScriptDirectory, revisions: Sequence[str], heads: Any
) -> list[MigrationStep]:
    """The version-table changes from ``heads`` to ``revisions``, as ``alembic stamp``'s."""
    return list(script._stamp_revs(tuple(revisions), heads))


def same_heads(script: ScriptDirectory, actual: set[str], expected: set[str]) -> bool:
    """Whether the version table's rows ``actual`` mean the heads ``expected``.

    Downgrading a merge while a head of another branch is there, Alembic puts
    both parents back even when one needs the other (``depends_on``): a row for
    a revision that another row's revision needs anyway. Such a row changes
    nothing Alembic does next, so it is read past, and only it.
    """
    if actual == expected:
        return True
    revision_map = script.revision_map
    if not all(head in revision_map._revision_map for head in actual):
        return False  # a row naming no revision of the tree: never the same
    needed = {
        ancestor.revision
        for head in actual
        for ancestor in revision_map._get_ancestor_nodes(
            revision_map.get_revisions([head]), check=False
        )
        if ancestor.revision != head
    }
    return actual - needed == expected


def in_external_transaction(context: MigrationContext) -> bool:
    """Whether env.py handed Alembic a connection already in a transaction (its own
    ``connection.begin()``, or one SQLAlchemy began for a statement it ran before
    ``configure``): Alembic then commits nothing, the transaction is env.py's."""
    return bool(context._in_external_transaction)


def steps_committed_apart(context: MigrationContext) -> bool:
    """Whether Alembic commits a run's steps, so that ``commit_between_steps`` can end each
    as a command of its own would: it holds the run's transaction (env.py's
    ``begin_transaction``), or one per migration. Else the transaction is env.py's own,
    begun after ``configure`` (``with connection.begin():``) or by SQLAlchemy's autobegin
    and committed by env.py at its end: every step of the run is in that one. Nor where
    env.py holds a savepoint inside Alembic's transaction (``connection.begin_nested()``):
    committing Alembic's would close it under env.py's feet."""
    connection = context.connection
    if connection is not None and connection.in_nested_transaction():
        return False
    return context._transaction is not None or bool(context._transaction_per_migration)


def commit_between_steps(context: MigrationContext) -> None:
    """Commit what the steps so far did and go on in a new transaction, as Alembic's own
    ``autocommit_block`` does, when Alembic holds one transaction for the whole run
    (``begin_transaction`` without ``transaction_per_migration``); else nothing."""
    transaction = context._transaction
    if transaction is None or context._in_external_transaction or context.connection is None:
        return
    transaction.commit()
    context._transaction = context.connection.begin()


def version_table(context: MigrationContext) -> Table:
    """The version table (``alembic_version``) of a running migration context."""
    table: Table = context._version
    return table


# -- writing a revision file -------------------------------------------------------------------
#: ``(script, path)``: Alembic chose ``path`` for a new revision file (raise to refuse it).
PathCheck = Callable[[ScriptDirectory, Path], None]
#: ``(script, template, path, **variables)``: write the rendered file (instead of Alembic).
FileWriter = Callable[..., None]


@contextmanager
def revision_writes(check_path: PathCheck, write: FileWriter) -> Iterator[None]:
    """While active, Alembic's ``revision`` and ``merge`` name a new file through
    ``check_path`` (before any work, autogenerate included) and write it with ``write``.

    Alembic has no option for either, so its two places that name and write the file
    (``ScriptDirectory._rev_path``, ``ScriptDirectory._generate_template``) are wrapped
    for the duration.
    """
    rev_path = ScriptDirectory._rev_path
    generate = ScriptDirectory._generate_template

    def checked_path(
        script: ScriptDirectory,
        folder: str | os.PathLike[str],
        rev_id: str,
        message: str | None,
        create_date: datetime,
    ) -> Path:
        path = rev_path(script, folder, rev_id, message, create_date)
        check_path(script, path)
        return path

    ScriptDirectory._rev_path = checked_path  # type: ignore[method-assign,assignment]
    ScriptDirectory._generate_template = write  # type: ignore[method-assign]
    try:
        yield
    finally:
        ScriptDirectory._rev_path = rev_path  # type: ignore[method-assign]
        ScriptDirectory._generate_template = generate  # type: ignore[method-assign]
