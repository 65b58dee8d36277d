"""testing.postgresql's ``Postgresql`` as the harness runs it (``executor``): imported when
a server starts, not before (testing.postgresql imports pg8000: a run on a kept or
existing server needs neither)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import testing.postgresql

from .executor import HOST, SUPERUSER, TUNING, _initdb
from .runas import RunAs


class _TunedPostgresql(testing.postgresql.Postgresql):  # type: ignore[misc]
    """testing.postgresql with our user, tuning, socket directory and readiness probe."""

    def __init__(self, *, user: RunAs, extra: Sequence[str] = (), **settings: Any) -> None:
        self.run_as = user
        self.extra = tuple(extra)
        super().__init__(**settings)

    def initialize_database(self) -> None:
        # testing.common made these as us; the server's user must own them.
        self.run_as.give(Path(self.base_dir))
        if not os.path.exists(os.path.join(self.base_dir, "data", "PG_VERSION")):
            _initdb(self.initdb, Path(self.base_dir) / "data", self.run_as)

    def get_server_commandline(self) -> list[str]:
        argv = [
            self.postgres,
            "-p",
            str(self.settings["port"]),
            "-D",
            os.path.join(self.base_dir, "data"),
            "-k",
            os.path.join(self.base_dir, "tmp"),
            "-h",
            HOST,
            "-F",
        ]
        for setting in (*TUNING, *self.extra):
            argv += ["-c", setting]
        return list(self.run_as.command(argv))

    def is_server_available(self) -> bool:
        try:
            with psycopg.connect(
                host=HOST,
                port=self.settings["port"],
                user=SUPERUSER,
                dbname="postgres",
                connect_timeout=2,
            ):
                return True
        except psycopg.OperationalError:
            return False

    def poststart(self) -> None:
        """testing.postgresql creates a ``test`` database here; we need none."""
