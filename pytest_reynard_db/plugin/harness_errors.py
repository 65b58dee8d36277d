"""How the plugin reports a harness failure: one line, not a traceback.

A ``HarnessErrors`` object lives in its run's ``config.stash`` (never in module
globals, so a pytest run nested in another, as with ``pytester``, keeps its own
"already reported" set). Fixtures wrap their harness work in ``errors.catch()``:
a ``ReynardDBError`` becomes one ``pytest.fail`` line naming database, file and
error, in full once, and a one-line pointer in every later test that needs it.

A ``ReynardDBError`` raised while a test body runs is left alone, as in plain
pytest (``pytest.raises``, ``xfail(raises=...)`` and ``except`` see it); only its
*rendering* is shortened to one line when it came out of this package
(``reynard_db_server.create_database`` on a server that went away), not when
the test raised it itself. With ``-v`` or ``--tb=long`` the full chain is shown.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import pytest

from ..errors import ReynardDBError

PREFIX = "reynard-db: "
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the whole package, not only plugin/


class HarnessErrors:
    """The run's harness failures: the ones already reported, and how to show them."""

    def __init__(self, *, show_chain: bool = False) -> None:
        #: Whether failures show their traceback chain (``-v`` or ``--tb=long``).
        self.show_chain = show_chain
        #: Messages already reported in full in this run.
        self.reported: set[str] = set()

    @classmethod
    def for_config(cls, config: pytest.Config) -> HarnessErrors:
        return cls(show_chain=config.option.tbstyle == "long" or config.option.verbose > 0)

    def message(self, exc: ReynardDBError) -> str:
        from ..urls import redact

        message = f"{PREFIX}{redact(exc)}"
        if self.show_chain:
            message += "\n" + redact("".join(traceback.format_exception(exc)))
        return message

    @contextmanager
    def catch(self, *, usage: bool = False) -> Iterator[None]:
        """A ``ReynardDBError`` inside becomes a one-line failure (``usage``: a usage error,
        which ends the run before any test)."""
        try:
            yield
        except ReynardDBError as exc:
            message = self.message(exc)
        else:
            return
        if message in self.reported:
            message = f"{PREFIX}failed as reported for an earlier test: {message[12:92]}..."
        elif not usage:
            self.reported.add(message)
        # from None: the cause is in the message; no "during handling of the above" chain
        if usage:
            raise pytest.UsageError(message) from None
        raise pytest.fail.Exception(message, pytrace=False) from None

    def shorten(self, report: pytest.TestReport, call: pytest.CallInfo[None]) -> None:
        """A test body's failure by a harness error raised in this package: one line."""
        if not report.failed or call.excinfo is None or self.show_chain:
            return
        exc = call.excinfo.value
        if isinstance(exc, ReynardDBError) and raised_here(exc.__traceback__):
            report.longrepr = self.message(exc)


def raised_here(tb: TracebackType | None) -> bool:
    """Whether the innermost frame of ``tb`` (where the error was raised) is this
    package's: a test that raises a ``ReynardDBError`` itself is shown as plain pytest
    shows it."""
    last: Path | None = None
    while tb is not None:
        last = Path(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return last is not None and last.resolve().is_relative_to(PACKAGE_DIR)
