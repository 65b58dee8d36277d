"""What an ``env.py``'s ``fileConfig`` may do to the process's logging, and how it is undone.

Almost every ``env.py`` starts with ``fileConfig(config.config_file_name)``, many
without checking for ``None``. That call replaces the root logger's handlers
(pytest's log capture among them), disables every logger that existed before
it (the application's), and prints each migration step. So a Config made for
quiet use (tests, checks) names ``silent_ini``: a real file, a copy of the
project's ini whose logging sections log nothing; and every ``env.py`` run of
ours is wrapped in ``preserved_logging``, which puts back what ``fileConfig``
changed.

The CLI's ``-v``/``-q`` is ``verbosity``: Alembic's ``INFO`` lines ("Context impl
PostgresqlImpl", "Running upgrade", "setting up autogenerate plugin") are hidden by
default, shown with ``-v``; with ``-q`` no log line is.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.config import Config

from ..foundation.errors import FilesystemError
from ..foundation.filesystem import replace_file

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
    # Imported here: the registry imports this module, and the servers' package the registry.
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
