"""The production guard in-process, against a real decoy server, and URL masking.

The attacks run as users run them (child pytest and CLI processes against a decoy
logging every connection) are in ``test_guard_attacks.py``; here the guard's
decision itself is tested on every way a connection can name its target.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from reynard_trees import connections_received
from sqlalchemy import create_engine, text

from pytest_reynard_db.foundation.errors import ConfigError
from pytest_reynard_db.foundation.urls import admin_url, mask_url, redact
from pytest_reynard_db.guard import (
    GUARD,
    Endpoint,
    GuardRefused,
    Target,
    target_of,
    targets_of,
    url_target,
)
from pytest_reynard_db.guard.reached import Reached
from pytest_reynard_db.postgres import EphemeralServer

SECRET = "S3cr3tPw"

#: Every form a URL holding a password has been seen in (issue 11).
URL_FORMS = (
    f"postgresql://app:{SECRET}@h/db",
    f"postgresql+psycopg://app:{SECRET}@h:5432/db?sslmode=require",
    f"postgresql://app@h/db?password={SECRET}",
    f"postgresql://app@h/db?sslmode=require&password={SECRET}&x=1",
    "postgresql://app:S3c@r3tPw@h/db",  # a password holding '@'
    "postgresql://app:S3c/r3tPw@h/db",  # ... and '/'
    f"postgresql:/app:{SECRET}@h/db",  # one slash
    f"app:{SECRET}@h/db",  # no scheme
    f"mysql://app:{SECRET}@h/db",  # a wrong scheme
    f"postgresql://app:{SECRET}",  # no host
    f"host=h password={SECRET} dbname=db",  # conninfo
    f"host=h password='{SECRET} x' dbname=db",  # quoted conninfo value
)


@pytest.mark.parametrize("url", URL_FORMS)
def test_mask_url_hides_the_password_of_every_form(url: str) -> None:
    masked = mask_url(url)
    assert SECRET not in masked and "r3tPw" not in masked, masked
    assert "***" in masked


@pytest.mark.parametrize("url", URL_FORMS)
def test_redact_masks_urls_inside_free_text(url: str) -> None:
    message = f"Could not parse SQLAlchemy URL from string '{url}' (see the docs)"
    assert "r3tPw" not in redact(message)


def test_redact_removes_known_secrets_wherever_they_are() -> None:
    assert redact(f"auth failed for {SECRET}!", (SECRET,)) == "auth failed for ***!"


def test_mask_keeps_what_is_safe_to_show() -> None:
    assert mask_url("postgresql://app@db.example:5433/reynard") == (
        "postgresql://app@db.example:5433/reynard"
    )
    assert mask_url(f"postgresql://app:{SECRET}@h/db") == "postgresql://app:***@h/db"


@pytest.mark.parametrize(
    ("url", "host", "port", "database"),
    [
        ("postgresql://u@h:1/postgres?dbname=prod", "h", 1, "prod"),
        ("postgresql://u@h:1/postgres?database=prod", "h", 1, "prod"),
        ("postgresql://u@h:1/postgres?host=other&port=2", "other", 2, "postgres"),
        ("postgresql://u@/x?host=/var/run/postgresql", "/var/run/postgresql", None, "x"),
        ("postgresql://u@h", "h", None, "postgres"),
    ],
)
def test_admin_url_folds_the_query_into_the_url(
    url: str, host: str, port: int | None, database: str
) -> None:
    folded = admin_url(url, origin="--url")
    assert (folded.host, folded.port, folded.database) == (host, port, database)
    assert not {"dbname", "database", "host", "port"} & set(folded.query)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h/postgres?hostaddr=10.0.0.1",
        "postgresql://u@h/postgres?service=prod",
        "postgresql://u@h/postgres?port=x",
        "postgresql://u@h/postgres?host=a&host=b",
    ],
)
def test_admin_url_refuses_what_it_cannot_fold(url: str) -> None:
    with pytest.raises(ConfigError, match="--url"):
        admin_url(url, origin="--url")


def test_target_follows_libpq_defaults_and_overrides() -> None:
    env = {"PGHOST": "envhost", "PGPORT": "6000", "PGDATABASE": "envdb", "PGUSER": "envuser"}
    target = target_of({}, env)
    assert (str(target.endpoints[0]), target.dbname, target.user) == (
        "envhost:6000",
        "envdb",
        "envuser",
    )
    given = target_of({"host": "h", "hostaddr": "10.1.1.1", "port": "7", "dbname": "d"}, env)
    assert str(given.endpoints[0]) == "10.1.1.1:7"  # hostaddr is where libpq goes
    assert target_of({"user": "bob"}, {}).dbname == "bob"  # no dbname: the user's name
    multi = target_of({"host": "a,b", "port": "1,2", "dbname": "d"}, {})
    assert [str(e) for e in multi.endpoints] == ["a:1", "b:2"]
    with pytest.raises(GuardRefused, match="service"):
        target_of({"dbname": "d"}, {"PGSERVICE": "prod"})


# -- against real servers --------------------------------------------------------------------
#: conftest's ``decoy``: production, and somebody else's test database.
DECOY_DATABASES = ("prod", "test_taken")


@pytest.fixture
def armed(decoy: EphemeralServer) -> Iterator[EphemeralServer]:
    """The guard armed, with a server of the harness's own; the decoy not allowed."""
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.forget_server(decoy.url)
        with EphemeralServer.start() as ours:
            yield ours


def _decoy_prod(decoy: EphemeralServer) -> str:
    return decoy.database_url("prod").render_as_string(hide_password=False)


def _own(decoy: EphemeralServer) -> Target:
    """The decoy's ``prod``, as a database's own registered target (redirected)."""
    return url_target(_decoy_prod(decoy))


def test_the_harness_servers_databases_are_allowed(armed: EphemeralServer) -> None:
    url = armed.create_database("test_ours")
    with create_engine(url).connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar() == "test_ours"


@pytest.mark.parametrize(
    "how",
    [
        "sqlalchemy",
        "sqlalchemy_query_dbname",
        "sqlalchemy_query_port",
        "sqlalchemy_dsn",
        "psycopg_kwargs",
        "psycopg_conninfo",
        "psycopg_uri",
        "psycopg_async",
        "libpq_environment",
    ],
)
def test_every_way_to_reach_another_database_is_refused(
    armed: EphemeralServer,
    decoy: EphemeralServer,
    how: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, prod = decoy.url.port, _decoy_prod(decoy)
    ours = armed.url.set(database="postgres")
    attempts = {
        "sqlalchemy": lambda: create_engine(prod).connect(),
        "sqlalchemy_query_dbname": lambda: create_engine(
            ours.set(host="127.0.0.1", port=port, query={"dbname": "prod"})
        ).connect(),
        "sqlalchemy_query_port": lambda: create_engine(
            ours.set(query={"port": str(port)})
        ).connect(),
        "sqlalchemy_dsn": lambda: create_engine(
            "postgresql+psycopg://",
            connect_args={"dsn": f"host=127.0.0.1 port={port} dbname=prod user=postgres"},
        ).connect(),
        "psycopg_kwargs": lambda: psycopg.connect(
            host="127.0.0.1", port=port, dbname="prod", user="postgres"
        ),
        "psycopg_conninfo": lambda: psycopg.connect(
            f"host=127.0.0.1 port={port} dbname=prod user=postgres"
        ),
        "psycopg_uri": lambda: psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{armed.url.port}/postgres?port={port}&dbname=prod"
        ),
        "psycopg_async": lambda: asyncio.run(
            psycopg.AsyncConnection.connect(prod.replace("+psycopg", ""))
        ),
        "libpq_environment": lambda: create_engine("postgresql+psycopg:///").connect(),
    }
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(port))
    monkeypatch.setenv("PGDATABASE", "prod")
    monkeypatch.setenv("PGUSER", "postgres")
    before = connections_received(decoy)
    with pytest.raises(GuardRefused, match=rf"refused a connection to .*:{port}/"):
        attempts[how]()
    assert connections_received(decoy) == before


def test_the_opt_in_allows_one_database(decoy: EphemeralServer) -> None:
    prod = _decoy_prod(decoy)
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.forget_server(decoy.url)
        with GUARD.armed_for(opt_in_hint="--allow URL", allow=(prod,)):
            with create_engine(prod).connect() as conn:
                assert conn.execute(text("SELECT current_database()")).scalar() == "prod"
            with pytest.raises(GuardRefused, match="to allow it on purpose, pass"):
                create_engine(decoy.database_url("postgres")).connect()


def test_a_bad_opt_in_url_arms_nothing() -> None:
    armed = GUARD.armed
    with pytest.raises(ConfigError), GUARD.armed_for(opt_in_hint="x", allow=("nonsense://",)):
        pass
    assert GUARD.armed == armed


def test_url_target_of_a_url_and_its_connection_agree(decoy: EphemeralServer) -> None:
    url = decoy.database_url("prod").set(query={"port": "1", "dbname": "other"})
    assert url_target(url).dbname == "other"
    assert str(url_target(url).endpoints[0]) == "127.0.0.1:1"


def test_a_connection_opened_while_migrating_goes_to_the_migrated_database(
    armed: EphemeralServer, decoy: EphemeralServer
) -> None:
    """An env.py reading its own variable still migrates the throw-away database; a
    connection to any other database is refused, with the line that opened it."""
    url = armed.create_database("test_migrated")
    before = connections_received(decoy)
    other = _decoy_prod(decoy).replace("/prod", "/other")
    here = [str(Path(__file__).parent)]
    with (
        pytest.raises(GuardRefused, match=r"test_production_guard\.py:\d+: refused .*/other"),
        GUARD.migrating(url, own=[_own(decoy)], tree=here),
        pytest.raises(GuardRefused),  # caught: the migration fails all the same
    ):
        create_engine(other).connect()
    assert not any("/other" in r for r in GUARD.redirects)
    with GUARD.migrating(url, own=[_own(decoy)]):
        with create_engine(_decoy_prod(decoy)).connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == "test_migrated"
        conninfo = f"host=127.0.0.1 port={decoy.url.port} dbname=prod user=postgres"
        with psycopg.connect(conninfo) as raw:
            row = raw.execute("SELECT current_database()").fetchone()
            assert row is not None and row[0] == "test_migrated"
    assert connections_received(decoy) == before
    assert any(
        f":{decoy.url.port}/prod -> " in r and "/test_migrated" in r for r in GUARD.redirects
    )
    with pytest.raises(GuardRefused):  # outside a migration: refused again
        create_engine(_decoy_prod(decoy)).connect()


# -- what a hostile tester found (each failed before its fix) ----------------------------------
def _precious(decoy: EphemeralServer) -> list[tuple[int]]:
    """The decoy's rows, read by the test itself (allowed for the read, then forgotten)."""
    GUARD.allow_database(decoy.database_url("prod"))
    try:
        with decoy.connect("prod") as conn:
            return [tuple(row) for row in conn.execute("SELECT id FROM precious ORDER BY id")]
    finally:
        GUARD.forget_server(decoy.url)


def test_a_listener_added_to_an_engine_later_cannot_redirect_it(
    armed: EphemeralServer, decoy: EphemeralServer
) -> None:
    """A per-engine ``do_connect`` listener (a token injector) runs after the class-level
    ones: the check sits after all of them, in the dialect's connect."""
    from sqlalchemy import event

    before = connections_received(decoy)
    for driver, key in (("psycopg2", "dbname"), ("pg8000", "database"), ("psycopg", "dbname")):
        url = armed.create_database(f"test_listener_{driver}")
        engine = create_engine(url.set(drivername=f"postgresql+{driver}"))

        @event.listens_for(engine, "do_connect")
        def to_production(dialect, conn_rec, cargs, cparams, key=key):  # type: ignore[no-untyped-def]
            cparams.update({"port": decoy.url.port, key: "prod"})

        with pytest.raises(GuardRefused, match=rf":{decoy.url.port}/prod"):
            engine.connect()
    assert connections_received(decoy) == before


def test_a_creator_is_caught_before_connecting_or_by_the_net(
    armed: EphemeralServer, decoy: EphemeralServer
) -> None:
    """``creator=`` skips SQLAlchemy's checks: the drivers' own hooks refuse it before it
    connects, and what even those miss (libpq's lowest level) the pool's connect event
    stops: it asks the server where it is and closes the connection before any SQL."""
    import pg8000
    import psycopg2

    port = decoy.url.port
    conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=prod"
    creators = {
        "refused a connection to": (
            lambda: psycopg2.connect(conninfo),
            lambda: pg8000.connect(host="127.0.0.1", port=port, user="postgres", database="prod"),
        ),
        "reached database 'prod'": (
            lambda: psycopg.Connection(psycopg.pq.PGconn.connect(conninfo.encode())),
        ),
    }
    for message, makers in creators.items():
        for creator in makers:
            engine = create_engine("postgresql+psycopg://", creator=creator)
            with (
                pytest.raises(GuardRefused, match=message),
                engine.begin() as conn,
            ):
                conn.execute(text("DELETE FROM precious"))
    assert _precious(decoy) == [(1,)]


def test_asyncpg_reads_a_dsn_its_own_way(armed: EphemeralServer, decoy: EphemeralServer) -> None:
    """asyncpg lets the DSN's host and path win over its query string; libpq the reverse.
    Both readings must be allowed."""
    from sqlalchemy.ext.asyncio import create_async_engine

    ours = armed.url
    dsn = (
        f"postgresql://postgres@127.0.0.1:{decoy.url.port}/prod"
        f"?host={ours.host}&port={ours.port}&dbname=postgres"
    )

    async def attempt() -> None:
        engine = create_async_engine("postgresql+asyncpg://", connect_args={"dsn": dsn})
        try:
            async with engine.connect():
                pass
        finally:
            await engine.dispose()

    before = connections_received(decoy)
    with pytest.raises(GuardRefused):
        asyncio.run(attempt())
    assert connections_received(decoy) == before


def test_pg8000_is_judged_as_pg8000_connects(
    armed: EphemeralServer, decoy: EphemeralServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg8000 ignores ``PG*`` variables and dials ``unix_sock`` itself."""
    assert decoy.process.base_dir is not None
    ours = armed.url
    socket = decoy.process.base_dir / "tmp" / f".s.PGSQL.{decoy.url.port}"
    before = connections_received(decoy)
    with pytest.raises(GuardRefused):
        create_engine(
            f"postgresql+pg8000://postgres@{ours.host}:{ours.port}/prod",
            connect_args={"unix_sock": str(socket)},
        ).connect()
    monkeypatch.setenv("PGHOST", str(ours.host))  # libpq would go there; pg8000 does not
    monkeypatch.setenv("PGPORT", str(ours.port))
    with pytest.raises(GuardRefused):
        create_engine(
            "postgresql+pg8000://postgres@/prod", connect_args={"port": decoy.url.port}
        ).connect()
    assert connections_received(decoy) == before


def test_a_service_file_is_read_as_libpq_reads_it(
    armed: EphemeralServer, decoy: EphemeralServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service can add ``hostaddr``, which beats the given host."""
    ours = armed.url
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[evil]\nhostaddr=127.0.0.1\nport={decoy.url.port}\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    before = connections_received(decoy)
    with pytest.raises(GuardRefused):  # the service's port wins over nothing given
        psycopg.connect(host=str(ours.host), dbname="prod", user="postgres", service="evil")
    with pytest.raises(GuardRefused, match="service 'missing'"):
        psycopg.connect(host=str(ours.host), port=ours.port, dbname="x", service="missing")
    assert connections_received(decoy) == before


def test_a_socket_path_is_judged_after_its_symlinks(
    armed: EphemeralServer, decoy: EphemeralServer, tmp_path: Path
) -> None:
    """``L/../sockD`` reads as ``sockD``, but the kernel follows ``L`` first."""
    assert decoy.process.base_dir is not None
    port = decoy.url.port
    allowed, fake = tmp_path / "sockD", tmp_path / "fake"
    allowed.mkdir()
    (fake / "x").mkdir(parents=True)
    (fake / "sockD").mkdir()
    (fake / "sockD" / f".s.PGSQL.{port}").symlink_to(
        decoy.process.base_dir / "tmp" / f".s.PGSQL.{port}"
    )
    (tmp_path / "L").symlink_to(fake / "x")
    GUARD.allow_database(f"postgresql://postgres@/prod?host={allowed}&port={port}")
    before = connections_received(decoy)
    with pytest.raises(GuardRefused):
        psycopg.connect(host=f"{tmp_path}/L/../sockD", port=port, dbname="prod", user="postgres")
    assert connections_received(decoy) == before


def test_a_redirect_leaves_nothing_for_the_environment_to_decide(
    armed: EphemeralServer, decoy: EphemeralServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env.py changing ``PGHOST``/``PGPORT`` after the redirect was decided changes nothing."""
    url = armed.create_database("test_redirect_explicit")
    before = connections_received(decoy)
    with GUARD.migrating(url, own=[_own(decoy)]):
        monkeypatch.setenv("PGHOST", "127.0.0.1")
        monkeypatch.setenv("PGPORT", str(decoy.url.port))
        with create_engine("postgresql+psycopg:///prod").connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == url.database
    assert connections_received(decoy) == before


@pytest.mark.parametrize(
    "argv",
    [
        ("check", f"--ulr=postgresql://postgres:{SECRET}@h/postgres"),
        ("current", "main", f"postgresql://postgres:{SECRET}@h/reynard"),
        ("lint", "main", "--format", f"postgresql://postgres:{SECRET}@h/reynard"),
    ],
)
def test_a_mistyped_command_line_does_not_echo_a_password(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse quotes a bad argument back; the quote is masked like any message."""
    from pytest_reynard_db.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and SECRET not in err and "r3tPw" not in err, err


@pytest.mark.parametrize(
    "text_",
    [
        f"params = {{'host': 'h', 'password': '{SECRET}', 'port': 5}}",
        f"password: {SECRET}",
        f"PGPASSWORD={SECRET} psql",
        f'password="{SECRET} x"',
    ],
)
def test_redact_masks_password_assignments_of_every_shape(text_: str) -> None:
    assert "r3tPw" not in redact(text_, ())


def test_the_other_drivers_called_directly_are_guarded(
    armed: EphemeralServer, decoy: EphemeralServer
) -> None:
    """psycopg2, pg8000 and asyncpg without SQLAlchemy: refused before connecting, and
    redirected while the harness migrates, like every other connection."""
    import asyncpg
    import pg8000.native
    import psycopg2

    port = decoy.url.port
    attempts = {
        "psycopg2": lambda: psycopg2.connect(f"host=127.0.0.1 port={port} dbname=prod"),
        "psycopg2_kwargs": lambda: psycopg2.connect(host="127.0.0.1", port=port, dbname="prod"),
        "pg8000": lambda: pg8000.native.Connection("postgres", port=port, database="prod"),
        "asyncpg": lambda: asyncio.run(
            asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/prod")
        ),
    }
    before = connections_received(decoy)
    for name, attempt in attempts.items():
        with pytest.raises(GuardRefused, match=rf":{port}/prod"):
            attempt()
            pytest.fail(f"{name} connected")
    url = armed.create_database("test_direct_redirect")
    with GUARD.migrating(url, own=[_own(decoy)]):
        raw = psycopg2.connect(host="127.0.0.1", port=port, dbname="prod", user="postgres")
        with raw, raw.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            assert cursor.fetchone() == ("test_direct_redirect",)
        raw.close()
        native = pg8000.native.Connection("postgres", port=port, database="prod")
        assert native.run("SELECT current_database()") == [["test_direct_redirect"]]
        native.close()
    assert connections_received(decoy) == before


# -- what a reviewer of the merged branches found ------------------------------------------------
def test_a_redirect_leaves_no_hostaddr_to_the_environment(
    armed: EphemeralServer, decoy: EphemeralServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$PGHOSTADDR`` would beat the redirect's host: the redirect names one itself."""
    url = armed.create_database("test_redirect_hostaddr")
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(decoy.url.port))
    before = connections_received(decoy)
    elsewhere = f"postgresql+psycopg://postgres@db.invalid:{decoy.url.port}/prod"
    with GUARD.migrating(url, own=[_own(decoy)]), create_engine(elsewhere).connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar() == url.database
    assert connections_received(decoy) == before
    # and as computed: the environment's hostaddr no longer decides where it goes
    from pytest_reynard_db.guard.target import redirected

    instead = redirected({"host": "prod"}, url_target(url), None, family="libpq")
    [target] = targets_of(instead, {"PGHOSTADDR": "10.9.9.9", "PGSERVICE": ""})
    assert target == url_target(url)


def test_a_nested_runs_opt_in_ends_with_it(decoy: EphemeralServer) -> None:
    prod = _decoy_prod(decoy)
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.forget_server(decoy.url)
        with GUARD.armed_for(opt_in_hint="--allow URL", allow=(prod,)):
            assert GUARD.allows(url_target(prod))
        assert not GUARD.allows(url_target(prod))


def test_a_database_allowed_mid_run_is_allowed_until_its_server_is_forgotten(
    decoy: EphemeralServer,
) -> None:
    """The allow-list changes while a run lasts: a database added is allowed from then on
    (it alone, not its neighbours), and refused again once taken off, both before
    connecting and by the net on what a connection reached."""
    port = decoy.url.port
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        # A name no other test allows (the net matches names on any port): made, then
        # taken off the list with the rest of the decoy.
        made = decoy.create_database("test_mid_run")
        url = made.render_as_string(hide_password=False)
        GUARD.forget_server(decoy.url)
        assert not GUARD.allows(url_target(url))
        reached = Reached("test_mid_run", None, (Endpoint("127.0.0.1", port),))
        assert not GUARD.allows_reached(reached)
        try:
            GUARD.allow_database(made)
            assert GUARD.allows(url_target(url))
            assert GUARD.allows_reached(reached)
            with create_engine(url).connect() as conn:
                assert conn.execute(text("SELECT current_database()")).scalar() == "test_mid_run"
            assert not GUARD.allows(url_target(_decoy_prod(decoy)))
        finally:
            GUARD.forget_server(decoy.url)
        assert not GUARD.allows(url_target(url))
        assert not GUARD.allows_reached(reached)
        with pytest.raises(GuardRefused):
            create_engine(url).connect()


def test_a_name_someone_else_has_is_not_allowed_by_a_failed_create(
    armed: EphemeralServer, decoy: EphemeralServer
) -> None:
    """``create_database`` on an existing server, a name already taken: not ours, so not
    allowed (the allow comes after the CREATE succeeds)."""
    from pytest_reynard_db.foundation.errors import ServerError
    from pytest_reynard_db.postgres import ExistingServer

    GUARD.allow_database(decoy.database_url("postgres"))
    existing = ExistingServer(decoy.url)
    try:
        with pytest.raises(ServerError, match="already exists"):
            existing.create_database("test_taken")
        with pytest.raises(GuardRefused):
            create_engine(decoy.database_url("test_taken")).connect()
    finally:
        existing.close()
        GUARD.forget_server(decoy.url)


def test_asyncpg_is_not_judged_by_a_hostaddr_it_ignores(monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = "postgresql://app@prod.example:5432/postgres?hostaddr=127.0.0.1"
    with pytest.raises(GuardRefused, match="asyncpg ignores it"):
        targets_of({"dsn": dsn}, family="asyncpg")
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    for target in targets_of({"host": "prod.example", "port": 5432}, family="asyncpg"):
        assert str(target.endpoints[0]) == "prod.example:5432"


def test_a_conftest_that_fails_to_import_leaves_nothing_armed(pytester: pytest.Pytester) -> None:
    """The guard is armed before conftests import; a conftest that fails ends the run
    before pytest_unconfigure, and still nothing stays armed or hidden."""
    pytester.makepyfile(conftest="raise RuntimeError('broken conftest')")
    (pytester.path / "alembic_app.ini").write_text("[alembic]\\nscript_location = mig\\n")
    (pytester.path / "mig" / "versions").mkdir(parents=True)
    pytester.makepyprojecttoml(
        '[tool.reynard-db.databases.app]\\nini = "alembic_app.ini"\\nurl_env = "APP_URL"\\n'
    )
    depth = GUARD._depth
    os.environ["APP_URL"] = "postgresql://x@h/app"
    try:
        pytester.runpytest("--reynard-db=app", "-p", "no:cacheprovider")
        assert GUARD._depth == depth
        assert os.environ.get("APP_URL") == "postgresql://x@h/app"
    finally:
        os.environ.pop("APP_URL", None)


def test_making_a_server_object_allows_nothing(
    armed: EphemeralServer, decoy: EphemeralServer
) -> None:
    """``MigrationManager.setup`` makes a ``Server`` for production: that must not allow
    production's maintenance database while a run is guarded."""
    from pytest_reynard_db.postgres import Server

    server = Server(decoy.url)
    try:
        with pytest.raises(GuardRefused):
            server.exists("prod")
    finally:
        server.close()
