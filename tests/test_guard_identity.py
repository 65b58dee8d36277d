"""Second hostile re-attack of the guard (issue 23, after the guard asks each place's
identity itself). Each test fails while its attack works (no xfail: the fixes are to
come). The servers are ``test_guard_truth``'s: the harness's (a shared CI server, on
127.0.0.1) and a decoy "production" on 127.0.0.2 at the very same port, logging every
statement.

Reaching production (a statement of the caller's ran there):

- a child interpreter adopts the allow-list without the identity of an opted-in place
  (the parent asks it only when a connection of its own gets there) and believes its
  first connection there: in a test's child (``--reynard-db-allow``) and in a script an
  env.py runs under ``reynard-migrate check --allow``;
- markers alone: a connection a driver's own pool (``psycopg2.pool``) made while a
  conftest imported the application is handed to the test unjudged (the README says a
  pooled connection is judged when a test takes it: only SQLAlchemy's pools are).

False refusals (a legit connection closed by the net or refused before it):

- a role that may not read ``pg_control_system()`` (a hardened or managed server
  revokes it) cannot answer the net's question at all (EXECUTE is checked for the whole
  plan, whatever its ``CASE``): every connection of that role is refused;
- a server restarted during the run (same cluster, same port, same databases) has a
  new start time: every later connection to it is refused, the harness's own too;
- an opted-in place's identity is asked with the opt-in URL: written without its
  password (as a URL on a command line is), with a query option of the driver it names
  (``?prepared_statement_cache_size=`` for asyncpg), for a role limited to one
  connection, or behind a pooler serving one client at a time, the guard cannot ask,
  and the connection the test made is closed; an opt-in on the shared server's own
  place becomes that place's asker and the whole run fails;
- a child that imported its driver before the run made a database (a worker a session
  fixture started) is refused that database: the allow-list file is read once;
- asyncpg's host and port lists (and SQLAlchemy's asyncpg multi-host URL) are read as
  ``str(list)``; pg8000's ``sock=`` is refused even to the run's own server.

Messages: the refusal for a server that could not answer writes the server's error raw
(control characters); a refused URL whose password holds an unencoded ``/`` or ``@``
shows part of the password.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from cli_fork import run_cli
from reynard_trees import clean_env, require_password, reynard_project, run_pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from test_guard_truth import PRODUCTION_HOST, Forwarder, _statements, harness, production

from pytest_reynard_db.guard import GUARD, GuardRefused
from pytest_reynard_db.guard.hooks import guard_asking
from pytest_reynard_db.postgres import EphemeralServer

__all__ = ["harness", "production"]

#: Attacks that still work: strict xfails until fixed (issue 23, second hostile round).
OPEN = "open (issue 23, second hostile round): "


def _admin(server: EphemeralServer, **extra: str) -> str:
    port = server.url.port
    words = {"host": "127.0.0.1", "port": str(port), "user": "postgres", "dbname": "postgres"}
    words.update(extra)
    return " ".join(f"{k}={v}" for k, v in words.items())


@pytest.fixture
def shared(harness: EphemeralServer) -> Iterator[EphemeralServer]:
    """A run on the harness's server as on a shared one (``--reynard-db-url``): its
    maintenance database allowed (the guard asks its identity at once, as postgres).
    What earlier tests taught the guard of that place is forgotten first."""
    GUARD.forget_server(harness.url)
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_database(harness.url)
        yield harness
    GUARD.forget_server(harness.url)


def test_a_role_that_cannot_read_the_control_data_is_not_refused(
    shared: EphemeralServer,
) -> None:
    """A hardened server revokes ``pg_control_system()`` from PUBLIC (managed services do).
    The net's question is meant to give such a role the start time alone (README, and
    ``reached.TRUTH_QUERY``'s ``CASE WHEN has_function_privilege``), but PostgreSQL checks
    EXECUTE on every function of the plan before running it: the question fails ("permission
    denied for function pg_control_system") and the role's connection to the run's own
    maintenance database is refused. (Were it answered, ``start`` alone would still differ
    from the ``sysid@start`` the guard got as ``postgres``.)"""
    with psycopg.connect(_admin(shared), autocommit=True) as admin:
        admin.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
        admin.execute("DROP ROLE IF EXISTS app_reader")
        admin.execute("CREATE ROLE app_reader LOGIN")
    try:
        with psycopg.connect(_admin(shared, user="app_reader")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("app_reader",)
    finally:
        with psycopg.connect(_admin(shared), autocommit=True) as admin:
            admin.execute("GRANT EXECUTE ON FUNCTION pg_control_system() TO PUBLIC")
            admin.execute("DROP ROLE app_reader")


def test_a_shared_server_restarted_during_the_run_is_said_to_be_another_server() -> None:
    """The CI service container restarted mid-run (or a test of the application's
    reconnect logic restarting it): the same cluster, port and databases, a new start
    time. Decided: a server is known by its start time, and the guard does not ask the
    place again on a difference (a proxy there that switched to another server would
    answer for that one), so later connections are refused; the refusal says why (it
    named the very place it expected, with no word of a restart)."""
    stopped = None
    try:
        with GUARD.armed_for(opt_in_hint="--allow URL"), EphemeralServer.start() as server:
            stopped = server.url
            try:
                _restart_then_connect(server)
            finally:
                GUARD.allow_server(server.url)  # its own clean-up, whatever the outcome
    finally:
        if stopped is not None:  # then nothing of it left on the list
            GUARD.forget_server(stopped)


def _restart_then_connect(server: EphemeralServer) -> None:
    GUARD.forget_server(server.url)
    GUARD.allow_database(server.url)  # a shared server: asked at once, as the run does
    with psycopg.connect(_admin(server)) as conn:
        conn.execute("SELECT 1")
    pg = server.process._pg
    assert pg is not None
    port = server.url.port
    pg.stop()  # (its identity, the start time to the microsecond, changes: nothing to wait for)
    pg.settings["port"] = port
    with guard_asking():  # the restart (the CI service's doing) is no connection of the run
        pg.start()
    with pytest.raises(GuardRefused, match="a server restarted since is another one"):
        psycopg.connect(_admin(server)).close()


@contextmanager
def _opted_in(server: EphemeralServer, url: str) -> Iterator[None]:
    """The run with ``url`` opted in (``--reynard-db-allow``), the server otherwise not
    the run's (nothing known of its place)."""
    GUARD.forget_server(server.url)
    try:
        with GUARD.armed_for(opt_in_hint="--allow URL", allow=(url,)):
            yield
    finally:
        GUARD.forget_server(server.url)


def test_an_opt_in_url_without_its_password_lets_the_test_connect_with_it(
    harness: EphemeralServer,
) -> None:
    """``--reynard-db-allow=postgresql://reporter@host:port/postgres``: nobody writes a
    password on a command line or in an ini. The test connects with the password
    (from its secrets); the guard asks the place with the opt-in URL, has no password,
    and refuses the connection ("could not ask ... which server it is")."""
    GUARD.forget_server(harness.url)
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_server(harness.url)
        require_password(harness, "reporter", "s3cret word")
    port = harness.url.port
    opt_in = f"postgresql://reporter@127.0.0.1:{port}/postgres"
    with _opted_in(harness, opt_in):
        conninfo = _admin(harness, user="reporter", password="'s3cret word'")
        with psycopg.connect(conninfo) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("reporter",)


def test_an_opt_in_url_with_its_driver_s_own_query_option_lets_the_test_connect(
    harness: EphemeralServer,
) -> None:
    """The opt-in URL is the application's engine URL, with an option of its driver in
    the query string (SQLAlchemy's documented ``?prepared_statement_cache_size=`` for
    asyncpg). The guard asks the place with those words as libpq keywords, libpq calls
    them invalid, and the engine's connection is refused."""
    port = harness.url.port
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres?prepared_statement_cache_size=0"
    with _opted_in(harness, url):
        assert asyncio.run(select_one(url)) == 1


async def select_one(url: str) -> object:
    """``SELECT 1`` through an async engine on ``url``, disposed after."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT 1"))).scalar()
    finally:
        await engine.dispose()


#: A script whose engine's ``creator=`` names the opted-in place by its host and dials
#: production's address (``hostaddr=``), as the TOFU attacks of test_guard_net.
DIALS_PRODUCTION = """
import os

import psycopg
from sqlalchemy import create_engine, text

port = os.environ["PROD_PORT"]
conninfo = f"host=localhost hostaddr=127.0.0.2 port={{port}} user=postgres dbname=postgres"
engine = create_engine(
    "postgresql+psycopg://",
    creator=lambda: psycopg.Connection(psycopg.pq.PGconn.connect(conninfo.encode())),
)
with engine.connect() as conn:
    conn.execute(text("SELECT 'stolen by {who}'"))
"""

#: A test running the application's own script in a child interpreter (guarded by the
#: package's ``.pth``).
CHILD_OF_AN_OPT_IN = f"""
import subprocess
import sys

SCRIPT = {DIALS_PRODUCTION.format(who="a child of the run")!r}


def test_the_application_s_script(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    print("CHILD EXIT", done.returncode, done.stderr[-300:])
"""


def test_a_child_of_the_run_judges_an_opted_in_place_as_its_parent_would(
    harness: EphemeralServer, production: EphemeralServer, tmp_path: Path
) -> None:
    """``--reynard-db-allow=postgresql://postgres@localhost:PORT/postgres`` (a reporting
    server on this machine). The parent asks an opted-in place's identity only when a
    connection of its own gets there; a child adopts the list with no identity for it
    and believes the first connection there (trust on first use). ``host=localhost``
    with ``hostaddr=`` production's address reaches production's ``postgres`` and runs
    its statement; in the parent the same connection is refused."""
    root = reynard_project(tmp_path / "project")
    (root / "test_child.py").write_text(CHILD_OF_AN_OPT_IN)
    port = harness.url.port
    before = _statements(production)
    result = run_pytest(
        root,
        "--reynard-db=main",
        f"--reynard-db-allow=postgresql://postgres@localhost:{port}/postgres",
        "-s",
        "test_child.py",
        PROD_PORT=str(port),
        REYNARD_DB_RUNTIME_DIR=str(tmp_path / "runtime"),
    )
    assert "CHILD EXIT" in result.stdout, result.stdout + result.stderr
    stolen = [s for s in _statements(production) if s not in before]
    assert stolen == [], result.stdout


#: A session fixture starting the application's worker (a queue consumer, an app
#: server) before the test's database exists; the worker imports its driver at start-up
#: and connects when told to, to the URL it is told.
WORKER_STARTED_FIRST = '''
import subprocess
import sys

import pytest

SCRIPT = """
import sys

import psycopg  # at start-up, as an application imports it: the child's guard is armed

print("ready", flush=True)
for line in sys.stdin:
    try:
        with psycopg.connect(line.strip()) as conn:
            conn.execute("SELECT 1")
        print("connected", flush=True)
    except Exception as exc:
        print("failed:", exc, flush=True)
"""


@pytest.fixture(scope="session")
def worker(tmp_path_factory):
    script = tmp_path_factory.mktemp("worker") / "worker.py"
    script.write_text(SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "ready\\n"
    yield process
    process.stdin.close()
    process.wait(timeout=30)


def test_the_worker_reaches_the_test_s_database(worker, reynard_db_fresh):
    url = reynard_db_fresh.engine.url.set(drivername="postgresql")
    worker.stdin.write(url.render_as_string(hide_password=False) + "\\n")
    worker.stdin.flush()
    answer = worker.stdout.readline()
    print("WORKER", answer)
    assert answer == "connected\\n", answer
'''


def test_a_child_started_before_a_database_was_made_may_reach_it(
    harness: EphemeralServer, tmp_path: Path
) -> None:
    """On a shared server, each database the run makes is allowed when made (and added to
    the allow-list file: "children started before that have not connected yet are
    guarded with it", ``guard.inherit``). A child reads the file once, when it imports
    its driver: a worker a session fixture started before the test's database existed
    is refused that database, the run's own."""
    GUARD.forget_server(harness.url)
    root = reynard_project(tmp_path / "project")
    (root / "test_worker.py").write_text(WORKER_STARTED_FIRST)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{harness.url.port}/postgres"
    result = run_pytest(
        root,
        f"--reynard-db-url={url}",
        "--reynard-db=main",
        "test_worker.py",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_opted_in_role_with_a_connection_limit_of_one_may_use_its_one(
    harness: EphemeralServer,
) -> None:
    """A role limited to one connection (``CONNECTION LIMIT 1``, as a reporting or a
    read-only role often is), opted in. The test's one connection is open when the net
    asks the place who it is, as that role, on a second connection: "too many connections
    for role", and the test's connection is refused."""
    GUARD.forget_server(harness.url)
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_server(harness.url)
        with psycopg.connect(_admin(harness), autocommit=True) as admin:
            admin.execute("DROP ROLE IF EXISTS one_at_a_time")
            admin.execute("CREATE ROLE one_at_a_time LOGIN CONNECTION LIMIT 1")
    opt_in = f"postgresql://one_at_a_time@127.0.0.1:{harness.url.port}/postgres"
    with _opted_in(harness, opt_in), psycopg.connect(_admin(harness, user="one_at_a_time")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("one_at_a_time",)


def test_pg8000_given_a_socket_to_the_run_s_own_server_is_not_refused(
    harness: EphemeralServer,
) -> None:
    """README, "Not covered": "a pg8000 ``sock=`` of the caller's, outside SQLAlchemy". It
    is not let through: every ``sock=`` is refused before connecting, one to the run's own
    server too (an SSH tunnel, a connector's TLS socket), though the net could judge it by
    its peer and the server's answer as it judges every pg8000 connection."""
    import pg8000.native

    GUARD.forget_server(harness.url)
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_server(harness.url)
        with socket.create_connection(("127.0.0.1", harness.url.port)) as sock:
            conn = pg8000.native.Connection("postgres", sock=sock, database="postgres")
            try:
                assert conn.run("SELECT 1") == [[1]]
            finally:
                conn.close()
    GUARD.forget_server(harness.url)


def test_pg8000_given_a_socket_to_production_is_refused_before_any_statement(
    harness: EphemeralServer, production: EphemeralServer
) -> None:
    """The counterpart: a ``sock=`` connected to production (at the very port of the run's
    server) is judged by where it is connected to, and refused."""
    import pg8000.native

    before = _statements(production)
    GUARD.forget_server(harness.url)
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_server(harness.url)
        refused = pytest.raises(GuardRefused, match=f"refused a connection to .*{PRODUCTION_HOST}")
        with socket.create_connection((PRODUCTION_HOST, harness.url.port)) as sock, refused:
            pg8000.native.Connection("postgres", sock=sock, database="postgres")
    GUARD.forget_server(harness.url)
    assert _statements(production) == before


def test_a_schema_on_the_search_path_cannot_answer_the_net_s_question(
    shared: EphemeralServer,
) -> None:
    """The net's question named its functions without ``pg_catalog``: a role whose
    ``search_path`` names ``pg_catalog`` last found a schema's own ``current_database()``
    first (here one raising an escape sequence that clears the terminal; it could as well
    answer with any name). Every function is now ``pg_catalog``'s: the role's connection to
    the run's own maintenance database is answered truly and allowed."""
    setup = [
        "DROP SCHEMA IF EXISTS lookalike CASCADE",
        "DROP ROLE IF EXISTS lookalike",
        "CREATE ROLE lookalike LOGIN",
        "CREATE SCHEMA lookalike AUTHORIZATION lookalike",
        "CREATE FUNCTION lookalike.current_database() RETURNS name LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION E'\\x1b[2J\\x1b[31mcleared'; END $$",
        "ALTER ROLE lookalike SET search_path = lookalike, pg_catalog",
    ]
    with psycopg.connect(_admin(shared), autocommit=True) as admin:
        for statement in setup:
            admin.execute(statement)
    try:
        with psycopg.connect(_admin(shared, user="lookalike")) as conn:
            assert conn.execute("SELECT pg_catalog.current_database()").fetchone() == ("postgres",)
    finally:
        with psycopg.connect(_admin(shared), autocommit=True) as admin:
            admin.execute("DROP SCHEMA lookalike CASCADE")
            admin.execute("DROP ROLE lookalike")


def test_a_refusal_because_the_server_could_not_answer_shows_its_words_escaped(
    shared: EphemeralServer,
) -> None:
    """The server's own words in "could not ask the server" were written raw: an escape
    sequence in an error (a pooler's console, a server's extension, a schema's function
    as above) reached the terminal. The net's reader failing with such words, as the
    lookalike's did:"""
    from pytest_reynard_db.guard import hooks

    def failing(_conn: object) -> hooks.Reached:
        raise OSError("ERROR:  \x1b[2J\x1b[31mcleared")

    with pytest.raises(GuardRefused) as refused:
        hooks._judge(object(), failing)
    message = str(refused.value)
    assert "could not ask the server what it reached" in message
    assert "\\x1b[2J" in message
    assert not any(ord(c) < 32 for c in message), repr(message)


class OneClientAtATime(Forwarder):
    """A pooler with one server connection in session mode (pgbouncer's
    ``default_pool_size = 1``, a single-connection tunnel): a second client waits until
    the first leaves."""

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        """Until this client leaves: the next one waits in the listener's backlog."""
        pumps = [
            threading.Thread(target=self._pump, args=pair, daemon=True)
            for pair in ((client, upstream), (upstream, client))
        ]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join()
        client.close()
        upstream.close()


def test_an_opted_in_pooler_serving_one_client_at_a_time_is_usable(
    harness: EphemeralServer,
) -> None:
    """The net asks the place of the test's new connection who it is, on a connection of
    its own, while the test's is open: behind a pooler that serves one client at a time
    the ask waits for the test's connection, which waits for the ask. After ten seconds
    (spent polling: ``wait_conn`` without an interval spins a CPU) the test's connection
    is refused."""
    port = harness.url.port
    assert port is not None
    proxy = OneClientAtATime(("127.0.0.1", port))
    opt_in = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
    started = time.monotonic()
    try:
        conninfo = _admin(harness, port=str(proxy.port))
        with _opted_in(harness, opt_in), psycopg.connect(conninfo) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        proxy.listener.close()
    assert time.monotonic() - started < 5


@pytest.mark.xfail(
    strict=True,
    reason=OPEN + "a driver's own pool filled at import in a markers-only run is not judged",
)
def test_markers_only_a_connection_of_a_driver_s_own_pool_made_at_import_is_judged(
    harness: EphemeralServer, production: EphemeralServer, tmp_path: Path
) -> None:
    """README (Not covered): in a run selected by markers alone, "a connection pooled
    [while conftests are imported] is judged the first time a test takes it from its pool,
    and refused before any statement of the test's". Only SQLAlchemy's pools are: the
    application's ``psycopg2.pool`` (a driver's own pool, as common as SQLAlchemy's in
    older code) hands the test its production connection, and the statement runs."""
    root = reynard_project(tmp_path / "project")
    (root / "myapp_pool.py").write_text(
        "import os\n"
        "from psycopg2.pool import SimpleConnectionPool\n"
        "pool = SimpleConnectionPool(1, 2, os.environ['MYAPP_DSN'])\n"
    )
    (root / "conftest.py").write_text("import myapp_pool  # noqa: F401\n")
    (root / "test_app.py").write_text(
        "import pytest\n"
        "import myapp_pool\n\n"
        "@pytest.mark.reynard_db('main')\n"
        "def test_create(reynard_db):\n"
        "    conn = myapp_pool.pool.getconn()\n"
        "    conn.cursor().execute(\"SELECT 'stolen from a driver pool'\")\n"
        "    myapp_pool.pool.putconn(conn)\n"
    )
    port = harness.url.port
    before = _statements(production)
    result = run_pytest(
        root,
        "test_app.py",
        MYAPP_DSN=f"host={PRODUCTION_HOST} port={port} user=postgres dbname=prod",
    )
    stolen = [s for s in _statements(production) if s not in before]
    assert stolen == [], result.stdout + result.stderr


def test_an_opt_in_on_the_shared_server_does_not_take_over_asking_it(
    harness: EphemeralServer, tmp_path: Path
) -> None:
    """``--reynard-db-url`` names the shared server as ``postgres``; ``--reynard-db-allow``
    opts in a database of that same server as the application's role, without its password.
    The opt-ins are remembered first and "the first URL wins" as the place's asker, so the
    shared server is never asked at once (``ask_now`` skips a place with an asker): the
    harness's own first admin connection is judged, the guard asks as the opted-in role,
    has no password, and the run fails before any test."""
    GUARD.forget_server(harness.url)
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_server(harness.url)
        require_password(harness, "auditor", "audit pw")
    GUARD.forget_server(harness.url)
    root = reynard_project(tmp_path / "project")
    (root / "test_plain.py").write_text(
        "def test_at_head(reynard_db):\n    assert reynard_db.head\n"
    )
    port = harness.url.port
    result = run_pytest(
        root,
        f"--reynard-db-url=postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
        f"--reynard-db-allow=postgresql://auditor@127.0.0.1:{port}/postgres",
        "--reynard-db=main",
        "test_plain.py",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "refused" not in result.stdout + result.stderr


#: Put first in env.py: the application's own script run in a child interpreter (a data
#: fix-up, a cache warm-up), connecting as the script in ``CHILD_OF_AN_OPT_IN`` does.
ENV_PY_RUNS_A_SCRIPT = f"""\
import subprocess as _subprocess
import sys as _sys

_SCRIPT = {DIALS_PRODUCTION.format(who="a script env.py ran")!r}
_subprocess.run([_sys.executable, "-c", _SCRIPT], check=False)
"""


def test_a_script_env_py_runs_under_check_judges_an_opted_in_place_as_check_would(
    harness: EphemeralServer, production: EphemeralServer, tmp_path: Path
) -> None:
    """``reynard-migrate check --allow URL``: the check's interpreter would refuse the
    connection (it asks the opted-in place itself), but a script env.py runs adopts the
    list without that place's identity and believes its first connection there: its
    statement runs on production."""
    project = reynard_project(tmp_path / "project")
    env_py = project / "alembic" / "main" / "env.py"
    env_py.write_text(ENV_PY_RUNS_A_SCRIPT + env_py.read_text())
    port = harness.url.port
    before = _statements(production)
    code, out, err = run_cli(
        project,
        "check",
        "main",
        "--only",
        "upgrade",
        "--allow",
        f"postgresql://postgres@localhost:{port}/postgres",
        env=clean_env(PROD_PORT=str(port)),
    )
    stolen = [s for s in _statements(production) if s not in before]
    assert stolen == [], (code, out, err)


@pytest.mark.parametrize("form", ["asyncpg-lists", "sqlalchemy-multihost"])
def test_asyncpg_given_its_hosts_as_a_list_reaches_the_run_s_server(
    shared: EphemeralServer, form: str
) -> None:
    """asyncpg takes ``host`` and ``port`` as lists (its documented form for several
    servers), and SQLAlchemy's asyncpg dialect makes lists of its documented multi-host URL
    (``?host=HostA:portA&host=HostB:portB``). The guard reads ``str(list)`` as libpq text:
    "refused a connection to port '[5432]': not a number", for the run's own server."""
    port = shared.url.port

    async def run() -> object:
        if form == "asyncpg-lists":
            import asyncpg

            conn = await asyncpg.connect(
                host=["127.0.0.1"], port=[port], user="postgres", database="postgres"
            )
            try:
                return await conn.fetchval("SELECT 1")
            finally:
                await conn.close()
        hosts = f"host=127.0.0.1:{port}&host=127.0.0.1:{port}"
        return await select_one(f"postgresql+asyncpg://postgres@/postgres?{hosts}")

    assert asyncio.run(run()) == 1


#: A test connecting with a URL whose password holds ``@`` or ``/`` unencoded (generated
#: passwords often do; the README's masking handles both in URLs the tool is given).
LEAKY_URL_TEST = """
import psycopg
import pytest


@pytest.mark.parametrize("url", [
    "postgresql://app:Sl4sh/Rest0fSecret@db.example:5432/prod",
    "postgresql://app:At4t@Rest0fSecret@db.example:5432/prod",
], ids=["slash", "at"])
def test_production_url(url):
    psycopg.connect(url)
"""


def test_a_refused_url_whose_password_holds_a_separator_shows_none_of_it(
    tmp_path: Path,
) -> None:
    """libpq cuts such a URL at the password's separator: the guard's refusal then names
    the password's first part as the port ("refused a connection to port 'Sl4sh'") or its
    rest as the host ("postgresql://app@rest0fsecret@db.example..."), in pytest's report."""
    root = reynard_project(tmp_path / "project")
    (root / "test_leaky.py").write_text(LEAKY_URL_TEST)
    result = run_pytest(root, "--reynard-db=main", "test_leaky.py")
    output = result.stdout + result.stderr
    assert "2 failed" in output and "refused a connection" in output, output
    for secret in ("sl4sh", "rest0fsecret", "at4t"):
        assert secret not in output.lower(), output


def test_a_shared_server_url_naming_its_application_name_runs(
    harness: EphemeralServer, tmp_path: Path
) -> None:
    """A CI URL often names its client (``?application_name=ci``, for
    ``pg_stat_activity``); with ``sslmode``, ``options``, ``target_session_attrs`` and
    ``connect_timeout`` the shared-server run passes, with ``application_name`` it ends in
    a ``TypeError`` traceback ("got multiple values for keyword argument
    'application_name'": the run names its own sessions too, ``postgres.shared.connect``)."""
    GUARD.forget_server(harness.url)
    root = reynard_project(tmp_path / "project")
    (root / "test_plain.py").write_text(
        "def test_fresh(reynard_db_fresh):\n"
        "    with reynard_db_fresh.engine.connect():\n"
        "        pass\n"
    )
    port = harness.url.port
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres?application_name=ci"
    result = run_pytest(root, f"--reynard-db-url={url}", "--reynard-db=main", "test_plain.py")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output and "TypeError" not in output, output
