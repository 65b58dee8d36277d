"""The guard judges a connection by what it reached, whatever its parameters said.

A decoy "production" server listens on 127.0.0.2 at the very port of the harness's
server (127.0.0.1): the usual case of a CI server and a production server both on
5432, on one machine. It logs every connection and statement. Each attack reaches it
past the checks before connecting (an engine's ``creator=`` at libpq's lowest level,
service files libpq reads otherwise than ``configparser``); the net must close the
connection before any statement of the caller's, for every driver.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest
from reynard_trees import log_connections, wait_until
from sqlalchemy import create_engine, text

from pytest_reynard_db.guard import GUARD, GuardRefused
from pytest_reynard_db.postgres import EphemeralServer

PRODUCTION_HOST = "127.0.0.2"
LOGGING = ("log_connections=on", "log_statement=all")


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _ready(host: str, port: int) -> bool:
    """Answers as a server does (libpq's lowest level: no guard is asked)."""
    pgconn = psycopg.pq.PGconn.connect(f"host={host} port={port} user=postgres".encode())
    try:
        return pgconn.status == psycopg.pq.ConnStatus.OK
    finally:
        pgconn.finish()


@pytest.fixture(scope="module")
def harness() -> Iterator[EphemeralServer]:
    """The server the run was given (a shared CI server): 127.0.0.1, its own port."""
    with GUARD.armed_for(opt_in_hint="--allow URL"), EphemeralServer.start() as server:
        GUARD.forget_server(server.url)
        yield server


@pytest.fixture(scope="module")
def production(harness: EphemeralServer) -> Iterator[EphemeralServer]:
    """Somebody else's server on 127.0.0.2, at the harness's port; it logs everything."""
    with EphemeralServer.start(settings=LOGGING) as server:
        server.create_database("prod")
        GUARD.forget_server(server.url)
        pg = server.process._pg
        assert pg is not None
        pg.stop()  # started again where production listens (same data, same log file)
        pg.settings["port"] = harness.url.port
        pg.extra += (f"listen_addresses={PRODUCTION_HOST}",)
        GUARD.allow_database(harness.url)  # its readiness probe, on 127.0.0.1, is answered
        pg.start()  # by the harness's server
        GUARD.forget_server(harness.url)
        wait_until(
            lambda: (
                _listening(PRODUCTION_HOST, harness.url.port)
                and _ready(PRODUCTION_HOST, harness.url.port)
            ),
            30,
            f"production to start on {PRODUCTION_HOST}",
        )
        yield server


def _log(server: EphemeralServer) -> str:
    assert server.process.base_dir is not None
    return (server.process.base_dir / "_TunedPostgresql.log").read_text(errors="replace")


def _statements(server: EphemeralServer) -> list[str]:
    """What the server ran, but the net's own question (in a transaction of its own for
    psycopg2)."""
    net = ("current_database()", "statement: BEGIN", "statement: ROLLBACK")
    return [
        line
        for line in _log(server).splitlines()
        if "statement: " in line and not any(n in line for n in net)
    ]


@pytest.fixture
def shared(harness: EphemeralServer) -> Iterator[str]:
    """The run as on a shared server (``--reynard-db-url``): its maintenance database
    allowed, nothing else of that server. Yields the production conninfo."""
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_database(harness.url)
        yield f"host={PRODUCTION_HOST} port={harness.url.port} user=postgres dbname=postgres"


def test_the_net_compares_servers_not_ports(
    harness: EphemeralServer, production: EphemeralServer, shared: str
) -> None:
    """A ``creator=`` at libpq's lowest level reaches production's ``postgres`` at the
    shared server's port: closed before its CREATE DATABASE."""
    before = _statements(production)
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.Connection(psycopg.pq.PGconn.connect(shared.encode())),
    )
    refused_here = rf"'postgres' at .*{harness.url.port}"
    with pytest.raises(GuardRefused, match=refused_here) as refused, engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("CREATE DATABASE stolen"))
    assert "closed before any statement" in str(refused.value)
    assert _statements(production) == before
    # the harness's own maintenance database, the same way: allowed
    admin = f"host=127.0.0.1 port={harness.url.port} user=postgres dbname=postgres"
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.Connection(psycopg.pq.PGconn.connect(admin.encode())),
    )
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar() == "postgres"


SERVICES = {
    # configparser gives every section [DEFAULT]'s keys; libpq reads it as any section
    "default_section": "[DEFAULT]\nhost=127.0.0.1\n\n[app]\nport={port}\nuser=postgres\n"
    "dbname=prod\n",
    # configparser: a continuation of user's value; libpq: a line of its own (first wins)
    "continuation": "[app]\nuser=postgres\n host={production}\nhost=127.0.0.1\nport={port}\n"
    "dbname=prod\n",
    # libpq: the first value wins
    "duplicate": "[app]\nhost={production}\nhost=127.0.0.1\nport={port}\nuser=postgres\n"
    "dbname=prod\n",
}


@pytest.mark.parametrize("shape", sorted(SERVICES))
def test_service_files_read_otherwise_reach_nothing(
    harness: EphemeralServer,
    production: EphemeralServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
) -> None:
    """Whatever the guard's reading of a service file, what libpq reached decides."""
    services = tmp_path / "pg_service.conf"
    port = harness.url.port
    services.write_text(SERVICES[shape].format(port=port, production=PRODUCTION_HOST))
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGHOST", PRODUCTION_HOST)  # where libpq goes without a host
    before = _statements(production)
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_server(harness.url)  # every database of the harness's server
        with (
            pytest.raises(GuardRefused, match="refused a connection"),
            psycopg.connect("service=app") as conn,
        ):
            conn.execute("CREATE TABLE stolen (id int)")
        with pytest.raises(GuardRefused, match="refused a connection"):
            create_engine("postgresql+psycopg:///?service=app").connect()
    assert _statements(production) == before


class Forwarder:
    """A TCP proxy on 127.0.0.1 (a pooler, a port forward) to ``target``, which may change:
    the server at a place the run allows is not always the one first found there."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            self._serve(client, socket.create_connection(self.target))

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions pumped, each on a thread of its own (clients served at once)."""
        for one, other in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(one, other), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _psycopg(port: int, dbname: str) -> None:
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS stolen (id int)")


def _psycopg2(port: int, dbname: str) -> None:
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname) as conn:
        conn.cursor().execute("CREATE TABLE IF NOT EXISTS stolen (id int)")


def _pg8000(port: int, dbname: str) -> None:
    import pg8000

    conn = pg8000.connect(host="127.0.0.1", port=port, user="postgres", database=dbname)
    conn.run("CREATE TABLE IF NOT EXISTS stolen (id int)")
    conn.close()


def _asyncpg(port: int, dbname: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database=dbname)
        await conn.execute("CREATE TABLE IF NOT EXISTS stolen (id int)")
        await conn.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    "connect", [_psycopg, _psycopg2, _pg8000, _asyncpg], ids=lambda f: f.__name__.strip("_")
)
def test_every_driver_is_judged_once_connected(
    harness: EphemeralServer, production: EphemeralServer, connect: Callable[[int, str], None]
) -> None:
    """Each driver's own connect, judged after connecting by the server's identity: a
    place the run allows (a forward to the harness's server) re-pointed to production."""
    forward = Forwarder(("127.0.0.1", harness.url.port))
    before = _statements(production)
    try:
        with GUARD.armed_for(opt_in_hint="--allow URL"):
            GUARD.allow_server(f"postgresql://postgres@127.0.0.1:{forward.port}/postgres")
            connect(forward.port, "postgres")  # the harness's server: allowed, now known
            forward.target = (PRODUCTION_HOST, harness.url.port)
            with pytest.raises(GuardRefused, match="reached database 'prod'"):
                connect(forward.port, "prod")
    finally:
        forward.listener.close()
    assert _statements(production) == before


def test_a_socket_folder_named_by_a_symlink_is_the_place_it_points_to(
    harness: EphemeralServer, tmp_path: Path
) -> None:
    """The driver says the folder as given, the allow-list holds it resolved: one place."""
    assert harness.process.base_dir is not None
    link = tmp_path / "sockets"
    link.symlink_to(harness.process.base_dir / "tmp")
    port = harness.url.port
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_database(f"postgresql://postgres@/postgres?host={link}&port={port}")
        with psycopg.connect(host=str(link), port=port, user="postgres", dbname="postgres") as conn:
            assert conn.info.host == str(link)
            assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)


def test_a_psycopg2_connection_factory_of_its_own_is_judged_not_refused(
    harness: EphemeralServer,
) -> None:
    """The net asks with psycopg2's plain cursor: a LoggingConnection's ``cursor()``
    refuses until the caller ``initialize()``s it, a RealDictCursor returns dicts."""
    import logging

    import psycopg2
    import psycopg2.extras

    where = {"host": "127.0.0.1", "port": harness.url.port, "user": "postgres"}
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_database(harness.url)
        conn = psycopg2.connect(
            **where, dbname="postgres", connection_factory=psycopg2.extras.LoggingConnection
        )
        conn.initialize(logging.getLogger("app"))
        with conn.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            assert cursor.fetchone() == ("postgres",)
        conn.close()
        conn = psycopg2.connect(
            **where, dbname="postgres", cursor_factory=psycopg2.extras.RealDictCursor
        )
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 AS one")
            assert cursor.fetchone() == {"one": 1}
        conn.close()


@pytest.mark.usefixtures("stop_reused_server")
def test_a_warm_start_asks_the_kept_server_who_it_is_once() -> None:
    """Attaching to the kept server (``--reynard-db-reuse``) connected three times before
    the run's first statement: the guard's ask, a readiness probe, and the guard's ask
    again when ``EphemeralServer`` wrapped the process. The second ask is not needed: the
    probe is the ask (pinned as the guard pins it), made under the reuse server's lock, and
    the process wrapped is the server just asked; one started at that port since would have
    been announced by whoever started it with ``allow_server``, which forgets the old
    identity and asks again (test_guard_identity's restart). The identity noted is the server's:
    the run's own connection is let through."""
    kept = EphemeralServer.reusable()
    authorized = log_connections(kept)
    kept.close()
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        server = EphemeralServer.reusable()
        with server.connect() as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)
        server.close()
    asks = [line for line in authorized() if "application_name=reynard-db guard" in line]
    assert len(asks) == 1, authorized()
    assert len(authorized()) == 2, authorized()  # the ask, and the test's own connection


def test_a_server_started_is_asked_who_it_is_once() -> None:
    """The boot probe that finds the server up is the guard's ask; the guard is given its
    answer (a probe, then the guard's ask at its first judged connection, then another
    when ``EphemeralServer`` wrapped it, before). The run's own connection is let through:
    the identity noted is the server's."""
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        server = EphemeralServer.start(settings=("log_connections=on",))
        try:
            with server.admin() as conn:
                assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)
            assert server.process.base_dir is not None
            log = (server.process.base_dir / "_TunedPostgresql.log").read_text()
        finally:
            server.stop()
    authorized = [line for line in log.splitlines() if "connection authorized" in line]
    assert len(authorized) == 2, authorized  # the probe that asked, and the admin connection
    assert "application_name=reynard-db guard" in authorized[0], authorized
