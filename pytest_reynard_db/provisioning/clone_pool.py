"""Clones made one ahead, and drops done behind, on two background threads.

A test that gets a database of its own (``reynard_db_fresh``) should wait for
neither ``CREATE DATABASE`` nor ``DROP DATABASE``. ``ClonePool`` hands out the clone
it made while the previous test ran, starts the next one, and drops in the
background; ``close`` waits for all of it and says which drops failed. Clones and
drops have a thread each (while a test runs, the next clone and the last test's drop
take the longer of the two, not their sum: with reflinks both are a few ms, and a
short test would otherwise wait for the rest), each with an admin connection of its
own (a ``Server`` on the same URL): no connection is shared across threads.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress

from sqlalchemy.engine import URL

from ..foundation.errors import ServerError
from ..postgres import Server

#: Makes one clone on the server given: its name and URL.
MakeClone = Callable[[Server], tuple[str, URL]]


class ClonePool:
    """One clone kept ready per key, and background drops, for databases on ``server``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reynard-db")
        self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reynard-db-drop")
        # Guarded as ``server`` is: on a shared server its clones are marked as a run's too.
        self._background = Server(server.url, guarded=server.guarded)
        self._dropping = Server(server.url, guarded=server.guarded)
        self._ahead: dict[Hashable, Future[tuple[str, URL]]] = {}
        self._drops: list[tuple[str, Future[None]]] = []
        self._closed = False

    def take(self, key: Hashable, make: MakeClone) -> tuple[str, URL]:
        """The clone made ahead for ``key`` (else one made now), and the next one started.

        ``make`` must make the same kind of clone each time for one ``key``.
        """
        ahead = self._ahead.pop(key, None)
        made = ahead.result() if ahead else make(self.server)
        self._ahead[key] = self._thread.submit(make, self._background)
        return made

    def drop(self, name: str) -> None:
        """Drop ``name`` in the background (now, once closed). The caller checks it is
        one of its own: the pool drops what it is told to."""
        if self._closed:
            self.server.adopt(name)  # it may have been made on the background connection
            self.server.drop_database(name)
            return
        self._drops.append((name, self._dropper.submit(self._drop_behind, name)))

    def _drop_behind(self, name: str) -> None:
        """On the drops' connection, which on an existing server drops only what it
        created: every name (made by the foreground or the clones' thread) is adopted."""
        self._dropping.adopt(name)
        self._dropping.drop_database(name)

    def close(self) -> None:
        """Drop the clones made ahead, wait for every drop; a failed one is a ``ServerError``
        (on an existing server it would leak)."""
        for ahead in self._ahead.values():
            with suppress(Exception):  # a clone that failed to be made has nothing to drop
                self.drop(ahead.result()[0])
        self._ahead.clear()
        self._closed = True
        self._thread.shutdown(wait=True)
        self._dropper.shutdown(wait=True)
        self._background.close()
        self._dropping.close()
        failed = [
            f"{name} ({future.exception()})"
            for name, future in self._drops
            if future.exception() is not None
        ]
        if failed:
            raise ServerError(f"could not drop {', '.join(failed)}")
