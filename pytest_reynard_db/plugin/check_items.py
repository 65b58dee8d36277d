"""The check items, ``reynard-db::<db>::<check>`` (``--reynard-db-checks``).

They run the same functions as ``reynard-migrate check`` (``checks.run_check``), in a
clean interpreter (``checks.isolated``: nothing the test modules imported can change a
result), on the run's server (the opt-in ``lint`` and ``locks`` only when
``[tool.reynard-db.lint] enabled`` lists them): one interpreter per database for all its
items, or under pytest-xdist one per database in each worker, kept for the items it is
sent; a failure shows the same message, without a traceback. This process only names the
checks (``checks``' names), never imports them.

Imported at every pytest start (``hooks``): what it needs of the checks, SQLAlchemy or the
servers is imported where it is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ..foundation.errors import ReynardDBError
from .stash import SPARES

if TYPE_CHECKING:
    from ..checks import CheckResult
    from ..checks.isolated import IsolatedChild
    from ..foundation.registry import Database
    from ..postgres import Server
    from .runstate import RunState

PREFIX = "reynard-db"


class CheckFailure(Exception):
    """A check's failed result; rendered as its message alone."""


class ReynardChecks(pytest.Collector):
    """The collector of every check item: ``reynard-db`` in node ids."""

    def __init__(self, *, state: RunState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state
        #: Each database's entry, once looked up, and its server once started.
        self._targets: dict[str, tuple[Database, Server | None]] = {}
        #: Results run ahead, in the batch of an earlier item: (database, check) -> results.
        self._ahead: dict[tuple[str, str], list[CheckResult]] = {}
        #: Under xdist, each database's child, kept for the next of its items this worker runs.
        self._kept: dict[str, IsolatedChild] = {}

    def collect(self) -> Iterator[pytest.Item]:
        # The names of the checks only: the checks themselves run in the child
        # interpreter, and this process never imports them (``checks.suite``).
        from ..checks import SPECS, enabled_checks, select_checks

        registry = self.state.registry
        # every database, a broken one too: its items fail with its one-line error
        names = self.state.settings.databases or (*registry.databases, *registry.broken)
        # lint and locks are opt-in: collected only when [tool.reynard-db.lint] enables them
        checks = select_checks(None, enabled_checks(registry))
        for name in names:
            db = registry.databases.get(name)
            for check in checks:
                if not SPECS[check].applies_to(db):
                    continue  # no item, as no JSON entry
                yield CheckItem.from_parent(
                    self, name=f"{name}::{check}", database=name, check=check
                )

    def target(self, name: str, *, needs_server: bool) -> tuple[Database, Server | None]:
        """The database and the server its checks run on: started only for a check that
        migrates, so file checks pass or fail on their own."""
        if name not in self._targets:
            self._targets[name] = (self.state.registry.get(name), None)
        db, server = self._targets[name]
        if needs_server and server is None:
            server = self.state.server
            self._targets[name] = (db, server)
        return db, server

    def results(self, item: CheckItem) -> list[CheckResult]:
        """``item``'s results, from a clean interpreter (``checks.isolated``): what the
        test modules or another database's ``env.py`` imported cannot change them
        (``checks.isolated_by_default``: beside tests, always).

        One interpreter per database runs every selected item of it, as ``reynard-migrate
        check`` does, when the first of them runs (so that item's duration includes the
        others'); under xdist, where another worker may run the others, each worker keeps
        one per database, which runs that database's items as the worker is sent them.
        A server that cannot start fails the checks that migrate; the file checks of the
        batch still run, in an interpreter of their own.
        """
        from ..checks import CHECK_ORDER, OFFLINE_CHECKS
        from ..checks.isolated import IsolatedChild

        key = (item.database, item.check)
        if key in self._ahead:
            return self._ahead.pop(key)
        if self.state.is_worker:
            return self._kept_results(item)
        batch = [item.check]
        if not self.state.is_worker:
            batch += [
                other.check
                for other in self.session.items
                if isinstance(other, CheckItem)
                and other.database == item.database
                and other.check != item.check
                and (other.database, other.check) not in self._ahead
            ]
        migrating = [c for c in batch if c not in OFFLINE_CHECKS]
        db, server = self.target(item.database, needs_server=False)

        # Started first: it imports the package while the server starts.
        spares = self.config.stash.get(SPARES, None)
        child = IsolatedChild(
            self.state.registry,
            db,
            allow=self.state.settings.allow,
            note_prefix="reynard-db: ",
            spare=spares.take() if spares is not None else None,
            run_id=self.state.run_id,  # its throw-away databases are the run's
        )
        try:
            if migrating:
                db, server = self.target(item.database, needs_server=True)
        except ReynardDBError:
            if item.check not in OFFLINE_CHECKS:
                child.close()
                raise
            batch = [c for c in batch if c in OFFLINE_CHECKS]  # the others fail on their own
        except BaseException:  # interrupted while the server starts: the child ends too
            child.close()
            raise
        results = child.run(server, [c for c in CHECK_ORDER if c in batch])
        for check in batch:
            self._ahead[(item.database, check)] = [r for r in results if r.check == check]
        return self._ahead.pop(key)

    def _kept_results(self, item: CheckItem) -> list[CheckResult]:
        """``item``'s results from its database's child in this worker, started for its
        first item and kept (``IsolatedChild.run(keep=True)``) while the worker runs check
        items (``teardown``); one that died (killed mid-check: its item failed) is replaced
        by a new one."""
        from ..checks import OFFLINE_CHECKS
        from ..checks.isolated import IsolatedChild

        child = self._kept.get(item.database)
        if child is None or not child.alive:
            if not self._kept:
                self.config.add_cleanup(self._close_kept)
            db, _ = self.target(item.database, needs_server=False)
            child = IsolatedChild(
                self.state.registry,
                db,
                allow=self.state.settings.allow,
                note_prefix="reynard-db: ",
                run_id=self.state.run_id,
            )
            self._kept[item.database] = child
        try:
            _, server = self.target(item.database, needs_server=item.check not in OFFLINE_CHECKS)
        except ReynardDBError:
            self._kept.pop(item.database).close()
            raise
        return child.run(server, [item.check], keep=True)

    def _close_kept(self) -> None:
        while self._kept:
            self._kept.popitem()[1].close(done=True)

    def teardown(self) -> None:
        """The worker's next item is not a check item (or there is none): the kept children
        end now, not idle (~70 MB each) until the run ends; a later item starts another."""
        self._close_kept()


class CheckItem(pytest.Item):
    """One database and one check."""

    def __init__(self, *, database: str, check: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.database = database
        self.check = check

    def runtest(self) -> None:
        assert isinstance(self.parent, ReynardChecks)
        try:
            results = self.parent.results(self)
        except ReynardDBError as exc:  # the server did not start: one line, not a traceback
            raise CheckFailure(f"reynard-db: {exc}") from None
        failed = [r for r in results if r.status == "failed"]
        if failed:
            raise CheckFailure("\n".join(r.message for r in failed))
        # skipped (does not apply) and not_run ("not run: upgrade failed at R"): a skip
        if results and all(r.status in ("skipped", "not_run") for r in results):
            # located at the item (reynard-db::db::check), not at this line of the plugin
            raise pytest.skip.Exception(
                "; ".join(r.message for r in results), _use_item_location=True
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[str, int, str]:
        # a line for pytest's item-located skips ("reynard-db::main::models_match:1")
        return f"{PREFIX}::{self.database}::{self.check}", 0, self.nodeid


def check_collector(session: pytest.Session, state: RunState) -> ReynardChecks:
    """The collector of the check items, made after collection (``hooks``)."""
    return ReynardChecks.from_parent(session, name=PREFIX, nodeid=PREFIX, state=state)
