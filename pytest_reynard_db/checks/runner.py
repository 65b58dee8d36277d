"""The small object every check runs over, as pytest-alembic's runner.

A ``CheckRunner`` knows one database of a registry and a server for
throw-away databases. It hides how migrations run: checks ask it for a
``MigrationManager`` aimed at a scratch database and never build URLs,
read the environment or load the tree themselves. The tree is loaded once per
database and shared by every manager the runner makes, so a stairway never
re-reads the revision files.

Also here, what the checks share besides the runner: where in a revision file a
finding points (the line of its ``upgrade()`` or ``downgrade()``, or of the statement
in ``upgrade()`` that touches a table; found once, when a result is made: the output
formats render ``line`` and never read a file or a message again), and what the checks
that read PostgreSQL's catalog agree on (``USER_SCHEMA``).
"""

from __future__ import annotations

import ast
import io
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError as AlembicRevisionError
from sqlalchemy import Connection
from sqlalchemy.engine import URL

from ..foundation.errors import EnvPyFailed, MigrationFailed, ReynardDBError, ServerError
from ..foundation.registry import Database, Registry
from ..foundation.urls import admin_url as canonical_admin_url
from ..foundation.urls import redact
from ..guard import GUARD
from ..guard.migration import Refusal
from ..migration.manager import MigrationManager
from ..migration.tree import load_tree
from . import CheckResult, Place, Status

if TYPE_CHECKING:  # the servers load on use: file checks need none
    from ..postgres import Server


class NotRun(Exception):
    """A step a check needs first failed, and another check owns that failure: the check
    is ``not_run`` (``run_check`` makes the result), not failed a second time."""

    def __init__(self, step: str, failed: MigrationFailed) -> None:
        super().__init__(f"{step} failed at {failed.revision}")
        self.step = step
        self.failed = failed


def upgrade_first(manager: MigrationManager, *, connection: Connection | None = None) -> None:
    """Upgrade to heads, the step ``downgrade_clean`` and ``models_match`` take before
    their own: a revision that fails there is the ``upgrade`` check's failure (``NotRun``).

    Decided on this check's own upgrade, not on whether ``upgrade`` ran or failed, so
    ``--only`` gives the same verdict as all checks. A broken ``env.py`` fails every
    check that runs it: that one is raised as it is.
    """
    try:
        manager.upgrade("heads", connection=connection)
    except EnvPyFailed:
        raise
    except MigrationFailed as exc:
        if exc.revision is None:
            raise
        raise NotRun("upgrade", exc) from exc


class Progress(Protocol):
    """What a check is doing: ``(database, check)`` when it starts, ``(database, check,
    done, total)`` as a long one advances (the stairway: revision ``done`` of ``total``)."""

    def __call__(
        self, database: str, check: str, done: int | None = None, total: int | None = None, /
    ) -> None: ...


class CheckRunner:
    """One database of ``registry`` and a ``server`` for its throw-away databases.

    ``progress``, if given, hears how far a long check is (``advance``); ``check``
    is the id of the check running, set by ``run_check``.
    """

    def __init__(
        self,
        db: Database,
        registry: Registry,
        server: Server | None,
        *,
        progress: Progress | None = None,
        run_id: str | None = None,
    ) -> None:
        """``run_id``: the pytest run whose check items these are, named in the throw-away
        databases (``scratch_name``)."""
        self.db = db
        self.registry = registry
        self.server = server
        self.progress = progress
        self.run_id = run_id
        self.check = ""
        self._script: ScriptDirectory | None = None
        #: Every throw-away database this runner made, in order (see ``manager``).
        self._scratch_urls: list[URL] = []
        self._load_error: ReynardDBError | None = None
        #: The first connection this database's env.py runs reached for beyond their
        #: throw-away database (refused), in this process: see ``same_env_verdict``.
        self.env_refusal: Refusal | None = None

    def advance(self, done: int, total: int) -> None:
        """The running check is at step ``done`` of ``total``; one call when nobody listens."""
        if self.progress is not None:
            self.progress(self.db.name, self.check, done, total)

    def env_mark(self) -> tuple[int, int]:
        """Where the guard's count of refusals and of migrations is, before a check."""
        return len(GUARD.refusals), GUARD.migrations

    def same_env_verdict(
        self, check: str, results: list[CheckResult], mark: tuple[int, int]
    ) -> list[CheckResult]:
        """``results``, unless the check ran env.py and an env.py run of this database
        (this check's or an earlier one's) opened a connection beyond its throw-away
        database: then that refusal, whichever check met it first.

        What env.py imports runs once per process (a module stays in ``sys.modules``):
        an application whose import calls ``create_all`` on another database, or opens a
        connection and swallows the error, does it in the first check only. Without
        this, ``--only stairway`` and ``--only upgrade,stairway`` could disagree.
        """
        refusals, migrations = mark
        if self.env_refusal is None and len(GUARD.refusals) > refusals:
            self.env_refusal = GUARD.refusals[refusals]
        if self.env_refusal is None or GUARD.migrations == migrations:
            return results
        refusal = self.env_refusal
        message = f"database {self.db.name!r}: {refusal.where(self._shown)}: {refusal.reason}"
        return [self.result(check, False, message, file=refusal.path)]

    def _shown(self, path: str) -> str:
        return self.relative(path) or path

    @property
    def script(self) -> ScriptDirectory:
        """The database's tree, loaded and checked once (a broken tree raises each time)."""
        if self._load_error is not None:
            raise self._load_error
        if self._script is None:
            try:
                self._script = load_tree(self.db)
            except ReynardDBError as exc:
                self._load_error = exc
                raise
        return self._script

    def manager(self, url: URL, *, stdout: TextIO | None = None) -> MigrationManager:
        """A manager aimed at ``url``, on the runner's already-loaded tree.

        Given a URL, the manager exports it to the database's ``url_env`` and
        sets ``sqlalchemy.url`` while migrations run, so an ``env.py`` reading
        either reaches only ``url``. Alembic's stdout goes to ``stdout``, by default
        nowhere: the CLI's stdout belongs to the summary (or the JSON).
        """
        return MigrationManager(
            self.db,
            url,
            stdout=io.StringIO() if stdout is None else stdout,
            script=self.script,
            quiet=True,
            url_envs=self.registry.url_envs(self.db.name),
            throwaway_only=True,
            earlier=tuple(u for u in self._scratch_urls if u != url),
        )

    @contextmanager
    def scratch_database(self, purpose: str) -> Iterator[MigrationManager]:
        """An empty database (``scratch_name``: with the run id of check items), dropped
        afterwards."""
        if self.server is None:
            raise ServerError(f"check {purpose!r} needs a PostgreSQL server and none was given")
        from ..postgres.server import scratch_name

        name = scratch_name(self.db.name, purpose, self.run_id)
        made = False
        # Inside the try from before CREATE: a signal landing once the database exists
        # but before create_database returns must not leave it on a shared server.
        try:
            url = self.server.create_database(name)
            made = True
            self._scratch_urls.append(url)
            yield self.manager(url)
        except BaseException as exc:
            if not made and not isinstance(exc, Exception):
                self._drop_half_made(name)  # interrupted: the CREATE may be done
            raise  # a CREATE that failed made nothing of ours: the name is not dropped
        finally:
            if made:
                self.server.drop_database(name)

    def _drop_half_made(self, name: str) -> None:
        """Drop ``name``, which a CREATE cut short by a signal may have made: the name is
        new to this run (a fresh suffix), so it is ours though not noted as such. Its own
        failure is not raised over the signal's exit."""
        assert self.server is not None
        with suppress(Exception):
            self.server.adopt(name)
            self.server.drop_database(name)

    def result(
        self,
        check: str,
        ok: bool,
        message: str,
        *,
        revision: str | None = None,
        file: str | None = None,
        function: str | None = None,
        line: int | None = None,
        status: Status | None = None,
        places: tuple[Place, ...] = (),
        skipped: bool = False,
    ) -> CheckResult:
        """A result for this database, with ``file`` relative to the project root, and
        ``line`` in it: by default, that of ``function`` (``upgrade``, ``downgrade``) in
        ``revision``'s file."""
        shown = redact(message)  # it may quote an exception from env.py or a revision
        if line is None:
            line = self.function_line(revision, function)
        return CheckResult(
            self.db.name,
            check,
            ok,
            shown,
            revision,
            self.relative(file),
            line,
            function if line is not None else None,
            status=status,
            places=places,
            skipped=skipped,
        )

    def not_run(self, check: str, why: NotRun) -> CheckResult:
        """``check`` was not run: ``why`` names the step that failed first, where."""
        failed = why.failed
        file = self.relative(failed.path)
        return self.result(
            check,
            True,
            f"not run: {why} ({file})",
            revision=failed.revision,
            file=file,
            function=failed.function,
            status="not_run",
        )

    def place(self, revision: str, function: str, message: str | None = None) -> Place | None:
        """``revision``'s ``function`` (``upgrade``, ``downgrade``) as a result's place."""
        script = self._revision(revision)
        line = function_line(script, function) if script is not None else None
        file = self.relative(script.path) if script is not None else None
        return Place(file, line, function, message) if file and line is not None else None

    def function_line(self, revision: str | None, function: str | None) -> int | None:
        """The line of ``def <function>`` in ``revision``'s file (None: not known)."""
        script = self._revision(revision) if function is not None else None
        return function_line(script, function) if script and function else None

    def _revision(self, revision: str | None) -> Script | None:
        """The tree's revision ``revision`` (None when the tree has no such one)."""
        if revision is None:
            return None
        try:
            return self.script.get_revision(revision)
        except (ReynardDBError, AlembicRevisionError):  # unknown here: a result without a line
            return None

    def relative(self, path: str | Path | None) -> str | None:
        """``path`` relative to the project root when it is below it (as --json shows it)."""
        if not path:
            return None
        if not Path(path).is_absolute():
            return Path(path).as_posix()  # already relative (to the root, by this method)
        resolved = Path(path).resolve()
        try:
            return resolved.relative_to(self.registry.root).as_posix()
        except ValueError:
            return str(resolved)

    @property
    def env_py(self) -> str:
        """The tree's ``env.py`` as every check names it to a user (from the project root)."""
        path = self.db.script_location / "env.py"
        return self.relative(path) or str(path)


@contextmanager
def scratch_server(
    admin_url: str | URL | None,
    *,
    needed: bool = True,
    registry: Registry | None = None,
    allow: tuple[str, ...] = (),
) -> Iterator[Server | None]:
    """The server for throw-away databases: ours (ephemeral) unless ``admin_url`` names one.

    On a server given by URL only ``test_*`` databases are created and only
    ours dropped (``ExistingServer``), so a production server stays untouched.
    With ``needed`` false (file checks only) no server is started at all.
    """
    if not needed:
        yield None
        return
    from ..postgres import EphemeralServer, ExistingServer

    if admin_url is not None:
        url = canonical_admin_url(admin_url, origin="--url")  # what libpq would reach
        if registry is not None:
            registry.refuse_as_admin_url(url, option="--url", allow=allow, allow_option="--allow")
        existing = ExistingServer(url)
        _ = existing.version  # unreachable: one ServerError now (exit 2), not a failed check each
        try:
            yield existing
        finally:
            existing.stop()
        return
    with EphemeralServer.start() as ephemeral:
        yield ephemeral


#: A ``pg_namespace n`` row of the application's, not PostgreSQL's own: not the
#: catalog, information_schema, toast or temporary schemas. SQL text for a WHERE clause.
USER_SCHEMA = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)


# -- where a finding points in a revision file ------------------------------
#: A quoted identifier in a line of Python: what ``op.create_index("ix", "table", ...)`` names.
QUOTED_NAME = re.compile(r"[\"']([A-Za-z_]\w*)[\"']")
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def function_line(script: Script, function: str) -> int | None:
    """The line of ``def <function>`` in ``script``'s file.

    The module Alembic loaded has the function, and its code object knows the line; a
    function defined elsewhere (imported into the revision) or replaced is looked up in
    the file's syntax tree instead.
    """
    code = getattr(getattr(script.module, function, None), "__code__", None)
    if code is not None and _same_file(code.co_filename, script.path):
        line: int = code.co_firstlineno
        return line
    return function_line_in(Path(script.path), function)


def function_line_in(path: Path, function: str) -> int | None:
    """The line of the module-level ``def <function>`` in the Python file ``path``."""
    tree = _parse(path)
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            return node.lineno
    return None


def statement_line(path: Path, names: Iterable[str]) -> int | None:
    """The line, in ``upgrade()``, of the statement naming most of ``names`` (a table, an
    index, the identifiers of a finding's SQL) in quotes; else ``upgrade()``'s own line."""
    tree = _parse(path)
    if tree is None:
        return None
    upgrade = next(
        (
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "upgrade"
        ),
        None,
    )
    if upgrade is None:
        return None
    wanted = set(names)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    end = upgrade.end_lineno or len(lines)
    best, best_score = upgrade.lineno, 0
    for number in range(upgrade.lineno, end + 1):
        score = len(wanted & set(QUOTED_NAME.findall(lines[number - 1])))
        if score > best_score:
            best, best_score = number, score
    return best


def identifiers(text: str) -> set[str]:
    """The words of ``text`` that could name a table, an index or a column."""
    return set(IDENTIFIER.findall(text))


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8", errors="replace"), str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def _same_file(one: str, other: str) -> bool:
    try:
        return Path(one).resolve() == Path(other).resolve()
    except OSError:
        return False
