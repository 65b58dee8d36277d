"""One run of a tree's ``env.py``, on steps its caller chooses, and what it may do to the
process's logging.

What ``alembic.command.upgrade``/``downgrade``/``stamp`` do, on an already-loaded
tree: an ``EnvironmentContext`` whose migration function yields the steps the verb
chose (``tree.upgrade_steps`` and the like, or a check's own walk), each noted by a
``StepTracker`` just before Alembic runs it. ``exported`` aims the tree's URL
variables at the target for the duration.

And what went wrong while migrating, said so a user can act on it:
``StepTracker`` remembers the revision Alembic announced last, so a failure
names the revision file and the step; ``migration_failure`` turns the exception
into one ``MigrationFailed`` line; ``alembic_errors`` turns Alembic's own usage
errors (an unknown target, several heads) into one ``RevisionError`` line.

And env.py's logging. Almost every ``env.py`` starts with
``fileConfig(config.config_file_name)``, many without checking for ``None``. That call
replaces the root logger's handlers (pytest's log capture among them), disables every
logger that existed before it (the application's), and prints each migration step. So
a Config made for quiet use (tests, checks) names ``silent_ini``: a real file, a copy of
the project's ini whose logging sections log nothing (``silenced``); and every
``env.py`` run of ours is wrapped in ``preserved_logging``, which puts back what
``fileConfig`` changed. The CLI's ``-v``/``-q`` is ``verbosity``: Alembic's ``INFO``
lines ("Context impl PostgresqlImpl", "Running upgrade", "setting up autogenerate
plugin") are hidden by default, shown with ``-v``; with ``-q`` no log line is.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import logging
import os
import re
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError, format_as_comma
from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from ..foundation.errors import (
    SILENCED,
    ConfigError,
    EnvPyFailed,
    EnvPyNeedsConfig,
    FilesystemError,
    MigrationFailed,
    RevisionError,
)
from ..foundation.filesystem import refuse_non_regular, replace_file
from ..foundation.registry import Database
from ..foundation.urls import first_line, one_line, shown_path
from .first_models import note_models
from .tree import as_first_run, current_heads, note_version_table

#: Alembic's migration function: ``(current heads, MigrationContext) -> steps to run``.
StepsFn = Callable[[tuple[str, ...], Any], Iterable[Any]]


def split_range(target: str) -> tuple[str | None, str]:
    """``FROM:TO`` as (``FROM``, ``TO``); a plain target has no start (``--sql`` only)."""
    if ":" in target:
        start, end = target.split(":", 1)
        return start, end
    return None, target


#: Called with the migration context at the start of each env.py run's steps, after env.py
#: set its session up and before any revision ran (``before_steps``).
_BEFORE_STEPS: ContextVar[Callable[[Any], None] | None] = ContextVar("before_steps", default=None)


@contextmanager
def before_steps(hook: Callable[[Any], None]) -> Iterator[None]:
    """While active, ``hook(context)`` runs as each env.py run's steps begin: what env.py
    itself made by then (a schema, an extension it creates before every run) is not the
    revisions' (``downgrade_clean``)."""
    token = _BEFORE_STEPS.set(hook)
    try:
        yield
    finally:
        _BEFORE_STEPS.reset(token)


def run_env(
    db: Database,
    script: ScriptDirectory,
    config: Config,
    steps: StepsFn,
    tracker: StepTracker,
    *,
    destination: str | tuple[str, ...] | None,
    start: str | None = None,
    sql: bool = False,
    purge: bool = False,
    quiet: bool = False,
    read_only: bool = False,
) -> None:
    """Run ``db``'s ``env.py`` once; Alembic takes its steps from ``steps``.

    ``destination`` and ``start`` are what ``env.py`` sees as ``get_context()``'s
    destination and (``--sql``) starting revisions; ``quiet``: the process's logging
    is put back afterwards (``env.py``'s ``fileConfig`` changes it); ``read_only``:
    Alembic's ``dont_mutate``, as ``alembic current`` runs it (no version table made).
    """
    env_py = Path(script.dir) / "env.py"
    refuse_non_regular(env_py, where=f"database {db.name!r}: ")
    if not env_py.is_file():  # Alembic: ImportError "Can't find Python file", a traceback
        raise ConfigError(
            f"database {db.name!r}: {shown_path(env_py)}: no such file (the tree's "
            f"environment, in script_location of {shown_path(db.ini)})"
        )

    def chosen(heads: Any, context: Any) -> Any:
        note_version_table(script, context)
        note_models(context)
        hook = _BEFORE_STEPS.get()
        if hook is not None:
            hook(context)
        return tracker.tracked(steps(heads, context))

    with (
        EnvironmentContext(
            config,
            script,
            fn=chosen,
            as_sql=sql,
            starting_rev=start,
            destination_rev=destination,
            purge=purge,
            dont_mutate=read_only,
        ),
        preserved_logging() if quiet else nullcontext(),
    ):
        script.run_env()


@contextmanager
def exported(names: Sequence[str], url: URL) -> Iterator[None]:
    """Each ``$name`` points at ``url`` while migrations run, whatever the shell had set."""
    previous = {name: os.environ.get(name) for name in names}
    rendered = url.render_as_string(hide_password=False)
    os.environ.update(dict.fromkeys(names, rendered))
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- migration_errors --------------------------------------------------------------------

ALEMBIC_MIGRATION_LOGGER = "alembic.runtime.migration"
AUTOCOMMIT = re.compile(r"\bautocommit_block\s*\(")
#: What an environment variable's name looks like (``MYAPP_DB_URL``).
ENVIRONMENT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


class StepTracker(logging.Filter):
    """Remembers the step Alembic announced last ("Running upgrade a -> b")."""

    def __init__(self) -> None:
        super().__init__()
        self._step: object = None
        self._logger = logging.getLogger(ALEMBIC_MIGRATION_LOGGER)
        self._level = self._logger.level

    def saw(self, step: object) -> None:
        """Alembic is about to run ``step`` (a ``RevisionStep``).

        Only the step is kept: what is said of it is worked out when a step fails,
        not at each of a stairway's hundreds of steps.
        """
        self._step = step

    @property
    def revision(self) -> str | None:
        """The revision id of the step seen last."""
        return getattr(getattr(self._step, "revision", None), "revision", None)

    @property
    def path(self) -> str | None:
        """The revision file of the step seen last."""
        return getattr(getattr(self._step, "revision", None), "path", None)

    @property
    def function(self) -> str | None:
        """The revision's function the step seen last ran: ``upgrade`` or ``downgrade``."""
        if self._step is None:
            return None
        return "downgrade" if getattr(self._step, "is_downgrade", False) else "upgrade"

    @property
    def description(self) -> str:
        """The step seen last as Alembic says it, ``upgrade a -> b``, with ``base`` where
        Alembic leaves the side empty (``upgrade base -> a``, ``downgrade a -> base``)."""
        if self._step is None:
            return ""
        # Alembic's ``short_log``, without the revision's message (str() appends it after
        # a comma; a merge step's own commas, "upgrade a, b -> m", are part of it).
        sides = (
            format_as_comma(getattr(self._step, side, ())) or "base"
            for side in ("from_revisions_no_deps", "to_revisions_no_deps")
        )
        name = getattr(self._step, "name", "")
        return f"{name} {' -> '.join(sides)}" if name else str(self._step)

    def tracked(self, steps: Iterable[Any]) -> Iterator[Any]:
        """``steps`` as Alembic pulls them, each noted just before it runs. This is what
        knows the step: an env.py's ``fileConfig`` may disable Alembic's loggers."""
        for step in steps:
            self.saw(step)
            yield as_first_run(step)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Running %s" and record.args:
            self.saw(record.args[0] if isinstance(record.args, tuple) else record.args)
        # Shown only where the user's logging (the ini, read by env.py during the run)
        # says so: the parent's level is asked now, not when the run started.
        parent = self._logger.parent
        return parent is None or parent.getEffectiveLevel() <= logging.INFO

    def __enter__(self) -> StepTracker:
        self._logger.addFilter(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._logger.removeFilter(self)
        self._logger.setLevel(self._level)


@contextmanager
def alembic_errors(db: Database) -> Iterator[None]:
    """Alembic's own usage errors (unknown target, multiple heads) as one line, exit 2."""
    try:
        yield
    except (CommandError, AlembicRevisionError) as exc:
        said, fix = one_line(exc), _fix_for(exc)
        said = said.rstrip(".") if fix else said
        raise RevisionError(f"database {db.name!r}: {said}{fix}") from None


#: Alembic's words for an autogenerate whose env.py sets no ``target_metadata``.
NO_METADATA = "does not provide a MetaData object"


def _fix_for(exc: BaseException) -> str:
    """What to do about an Alembic usage error, where we know (else nothing)."""
    if NO_METADATA in str(exc):
        return (
            "; set target_metadata in env.py to your models' MetaData to autogenerate, "
            "or pass --empty for a revision written by hand"
        )
    return ""


def migration_failure(
    db: Database,
    step: StepTracker,
    exc: BaseException,
    connection: Connection | None,
    script: ScriptDirectory,
) -> MigrationFailed:
    """The error for a migration that raised: the file, the step, the database error, and
    the revision the database was left at (each migration has its own transaction).
    Without ``connection`` (``--sql``) nothing was applied, so no revision is said."""
    if step.path is None:
        return env_py_failure(db, exc)
    try:
        at = current_heads(connection, script) if connection else ()
        now = ", ".join(sorted(at)) or "base"
    except Exception:
        now = "unknown"
    error = first_line(exc.orig if isinstance(exc, DBAPIError) else exc)
    where = f"{step.path}: {step.description}"
    caveat = ""
    if runs_outside_a_transaction(step.path):
        caveat = (
            "; this revision runs statements outside a transaction (autocommit_block); "
            "statements before the failure may have been applied"
        )
    left = f"database left at {now}{caveat}" if connection else "no SQL was run: --sql"
    reason = f"{error} ({left})"
    return MigrationFailed(
        f"database {db.name!r}: {where} failed: {reason}",
        revision=step.revision,
        path=step.path,
        function=step.function,
        where=where,
        reason=reason,
    )


def env_py_failure(db: Database, exc: BaseException) -> EnvPyFailed:
    """An error raised before Alembic announced any step: ``env.py``'s, or the
    application's it imports. Named by the deepest ``env.py`` line on the way, and the
    chain of modules below it (``--traceback`` shows the whole traceback)."""
    env_py = db.script_location / "env.py"
    frames = traceback.extract_tb(exc.__traceback__)
    at = [i for i, frame in enumerate(frames) if Path(frame.filename) == env_py]
    if at:
        line = frames[at[-1]].lineno
        below = [
            Path(f.filename).stem for f in frames[at[-1] + 1 :] if "importlib" not in f.filename
        ]
        chain = f" (in {' -> '.join(dict.fromkeys(below))})" if below else ""
        where = f"{shown_path(env_py)}:{line}{chain}"
    else:
        where = shown_path(env_py)
    missing = _missing_logging_section(exc, frames)
    if missing:
        return EnvPyNeedsConfig(
            f"{shown_path(db.ini)}: no [{missing}] section for the logging set-up that "
            f"{where} asks for (logging.config.fileConfig): add the ini's logging sections, "
            "or call fileConfig only when it has them",
            path=str(env_py),
            where=where,
        )
    return EnvPyFailed(
        f"database {db.name!r}: {where}: {type(exc).__name__}: {first_line(exc)} "
        f"(before any migration ran){_variable_hint(db, exc)}",
        path=str(env_py),
        where=where,
    )


def _variable_hint(db: Database, exc: BaseException) -> str:
    """For a ``KeyError`` on a name that looks like an environment variable: env.py
    reading its own URL variable (``os.environ["MYAPP_DB_URL"]``) that is not the
    database's ``url_env``, so nothing set it to the database being migrated."""
    key = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
    if not isinstance(key, str) or not ENVIRONMENT_NAME.fullmatch(key):
        return ""
    return (
        f"; if env.py reads the database's URL from ${key}, register it as "
        f'url_env = "{key}" under [tool.reynard-db.databases.{db.name}]: it then names '
        "the database being migrated"
    )


def _missing_logging_section(exc: BaseException, frames: traceback.StackSummary) -> str | None:
    """The section ``logging.config.fileConfig`` missed: it raises a bare ``KeyError``
    ('formatters') on an ini with no logging sections, as stock ``env.py``s call it."""
    in_file_config = any(Path(f.filename).parts[-2:] == ("logging", "config.py") for f in frames)
    if isinstance(exc, KeyError) and in_file_config and exc.args:
        return str(exc.args[0])
    return None


def runs_outside_a_transaction(path: str | None) -> bool:
    """Whether a revision file uses ``autocommit_block``: its statements there commit
    one by one, so a failure after them cannot roll them back."""
    if not path:
        return False
    try:
        source = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return AUTOCOMMIT.search(source) is not None


# -- env.py's logging --------------------------------------------------------------------

LOGGING_SECTIONS = ("loggers", "handlers", "formatters")
LOGGING_PREFIXES = ("logger_", "handler_", "formatter_")
SILENT = {
    "loggers": {"keys": "root"},
    "handlers": {"keys": "silent"},
    "formatters": {"keys": ""},
    "logger_root": {"level": "WARNING", "handlers": "silent"},
    "handler_silent": {"class": "NullHandler", "args": "()"},
}


def silenced(config: Config, ini: Path) -> Config:
    """``config`` naming ``silent_ini(ini)`` instead of ``ini``. An ``env.py`` calls
    ``fileConfig(config.config_file_name)`` (often without checking for None), which
    would print every migration step and replace the process's handlers; the CLI's
    production verbs want those lines, a test run and the checks do not."""
    config.file_config  # noqa: B018 -- read the real ini (and its %(here)s) now
    config.config_file_name = str(silent_ini(ini))
    return config


def silent_ini(ini: Path) -> Path:
    """A copy of ``ini`` with logging sections that log nothing (made once per content
    and process, in the process's folder under the runtime directory: it goes with it).

    Every other section is kept, so an ``env.py`` reading one through the file
    name still finds it.
    """
    # Imported here: the servers' package loads when a server is needed.
    from ..postgres.runas import process_scratch

    source = ini.read_bytes()
    digest = hashlib.sha256(str(ini).encode() + b"\0" + source).hexdigest()[:16]
    target = process_scratch() / f"silent-{digest}.ini"
    if target.exists():
        return target
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(source.decode("utf-8", errors="replace"), source=str(ini))
    for section in parser.sections():
        if section in LOGGING_SECTIONS or section.startswith(LOGGING_PREFIXES):
            parser.remove_section(section)
    parser.read_dict(SILENT)
    text = io.StringIO()
    parser.write(text)
    # Threads making it together each write a temp file of their own.
    try:
        replace_file(target, text.getvalue().encode("utf-8"))
    except OSError as exc:  # a full runtime directory
        raise FilesystemError(f"cannot write {target}: {exc.strerror}") from None
    return target


#: ``-q``, the default, ``-v``.
QUIET, NORMAL, VERBOSE = -1, 0, 1


@contextmanager
def verbosity(level: int) -> Iterator[None]:
    """Log records hidden while the block runs: ``INFO`` and below by default (Alembic's
    progress lines, which an ``env.py``'s ``fileConfig`` sends to stderr), every record
    with ``QUIET``, none with ``VERBOSE`` (as the ini's logging section says).

    ``logging.disable`` is the one switch ``fileConfig`` leaves alone: whatever handlers
    and levels ``env.py`` installs, a hidden record is never made. Warnings and errors
    still reach the ini's handlers by default.
    """
    hidden = {QUIET: logging.CRITICAL, NORMAL: logging.INFO}.get(level)
    previous = logging.root.manager.disable
    if hidden is not None:
        logging.disable(max(hidden, previous))
    try:
        yield
    finally:
        if logging.root.manager.disable != SILENCED:  # an interrupt's, for good
            logging.disable(previous)


@contextmanager
def preserved_logging() -> Iterator[None]:
    """Put the logging configuration back as it was when the block began.

    Restores the root logger's handlers and level, and each existing logger's
    level, handlers, ``propagate`` and ``disabled`` flag (``fileConfig`` disables
    every logger it does not name).
    """
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = [
        (logger, logger.handlers[:], logger.level, logger.propagate, logger.disabled)
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]
    try:
        yield
    finally:
        # Only what changed: setLevel clears every logger's cache, once per call.
        if root.handlers != saved_root[0]:
            root.handlers[:] = saved_root[0]
        if root.level != saved_root[1]:
            root.setLevel(saved_root[1])
        for logger, handlers, level, propagate, disabled in saved:
            if logger.handlers != handlers:
                logger.handlers[:] = handlers
            if logger.level != level:
                logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled
