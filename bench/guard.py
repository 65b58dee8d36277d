"""What the production guard costs a connection: ``python bench/guard.py [--n 200]``.

Prints one table: the median time to open and close a connection (psycopg 3
directly, and a new SQLAlchemy engine's first connection, where the net's query
runs too), unguarded and guarded, measured alternately in the same process
against one ephemeral server, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import psycopg
from sqlalchemy import create_engine, pool

from pytest_reynard_db.guard import GUARD
from pytest_reynard_db.postgres import EphemeralServer


def medians_ms(action: Callable[[], None], n: int, url: str) -> tuple[float, float]:
    """Medians of ``n`` unguarded and ``n`` guarded runs of ``action``, alternating so that
    a busy machine slows both alike; guarded: armed with only ``url``'s server allowed
    (arming itself is outside the timing)."""
    plain: list[float] = []
    guarded: list[float] = []
    for _ in range(n):
        for armed, samples in ((False, plain), (True, guarded)):
            with GUARD.armed_for(opt_in_hint="-") if armed else nullcontext():
                if armed:
                    GUARD.allow_server(url)
                started = time.perf_counter()
                action()
                samples.append(time.perf_counter() - started)
    return statistics.median(plain) * 1000, statistics.median(guarded) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    n = parser.parse_args().n
    with EphemeralServer.start() as server:
        url = server.url.render_as_string(hide_password=False)
        conninfo = f"host=127.0.0.1 port={server.url.port} user=postgres dbname=postgres"

        def raw() -> None:
            psycopg.connect(conninfo).close()

        def engine_first_connection() -> None:
            engine = create_engine(url, poolclass=pool.NullPool)
            engine.connect().close()
            engine.dispose()

        rows = []
        cases = (
            ("psycopg connect+close", raw),
            ("new engine, first connection", engine_first_connection),
        )
        for name, action in cases:
            action()  # warm up
            plain, guarded = medians_ms(action, n, url)
            rows.append((name, plain, guarded, guarded / plain))
    print(f"{'case':32} {'unguarded ms':>13} {'guarded ms':>11} {'ratio':>6}   (n={n})")
    for name, plain, guarded, ratio in rows:
        print(f"{name:32} {plain:13.3f} {guarded:11.3f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
