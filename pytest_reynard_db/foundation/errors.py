"""Exception types, each carrying the exit code the CLI returns for it.

Like Alembic's ``CommandError``, every error a user can cause is raised as one of
these with a one-line message that names the file, database or revision; the
CLI and the pytest plugin catch them once, at their edge, and print only the
message.
"""

from __future__ import annotations


class ReynardDBError(Exception):
    """Base class; ``exit_code`` is what ``reynard-migrate`` exits with."""

    exit_code: int = 2


class ConfigError(ReynardDBError):
    """The registry, an ini file or a tree is malformed (exit 2)."""


class UnknownDatabaseError(ConfigError):
    """A database name that the registry does not know (exit 2)."""


class RevisionError(ReynardDBError):
    """An unknown revision, a broken revision file or a broken graph (exit 2)."""


class MigrationFailed(ReynardDBError):
    """A migration raised while running; the database is at the last good revision.

    Besides the one-line message, the parts a caller shows on their own: ``revision``
    and ``path`` (the revision file; ``env.py`` for its own failures), ``function``
    (the revision's function the step ran, ``upgrade`` or ``downgrade``; None without
    a step), ``where`` (the file and the step, "<path>: upgrade a -> b") and ``reason``
    (the error and where the database was left; the whole message when there is no step).
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        revision: str | None = None,
        path: str | None = None,
        function: str | None = None,
        where: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.revision = revision
        self.path = path
        self.function = function
        self.where = where
        self.reason = message if reason is None else reason


class EnvPyFailed(MigrationFailed):
    """``env.py`` (or the application it imports) raised before any migration ran: the
    tree's environment is broken, not a revision (exit 1)."""


class EnvPyNeedsConfig(EnvPyFailed):
    """``env.py`` asked the ini for something it lacks (the logging sections its
    ``fileConfig`` reads): the ini is at fault, so bad config (exit 2), though it shows
    up, like any ``env.py`` failure, only once the environment runs."""

    exit_code = 2


class ServerError(ReynardDBError):
    """PostgreSQL could not be found, started or reached (exit 2)."""


class CheckFailed(ReynardDBError):
    """A check or ``copy --check`` found a problem (exit 1)."""

    exit_code = 1


class FileConflict(ReynardDBError):
    """Writing would overwrite or lose a file someone may have made by hand (exit 1);
    nothing was written."""

    exit_code = 1


class LockTimeout(ReynardDBError):
    """Waiting for a lock (migration, template, reuse server) took longer than
    ``--lock-timeout`` allows (exit 1); the message names the lock and its holder."""

    exit_code = 1


class FilesystemError(ReynardDBError):
    """A file or folder could not be read or written: permissions, a read-only folder,
    a folder where a file should go (exit 2: the environment, not the trees)."""


class GuardRefused(ReynardDBError):
    """A connection to a database the harness did not create (exit 2); see ``guard``."""


class SeedFailed(ReynardDBError):
    """A project's ``pytest_reynard_db_seed`` raised while filling a template (exit 1);
    the message names the conftest and line. The template is not kept."""

    exit_code = 1
