"""The production guard in-process, against a real decoy server, and URL masking.

The attacks run as users run them (child pytest and CLI processes against a decoy
logging every connection) are in ``test_guard_attacks.py``; here the guard's
decision itself is tested on every way a connection can name its target.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine, text

from pytest_reynard_db.errors import ConfigError
from pytest_reynard_db.guard import GUARD, GuardRefused, target_of, url_target
from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.urls import admin_url, mask_url, redact

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
@pytest.fixture(scope="module")
def decoy() -> Iterator[EphemeralServer]:
    """A 'production' server. Started with the harness's own code, so taken off the
    guard's list: for the guard it is somebody else's server."""
    with EphemeralServer.start(settings=("log_connections=on",)) as server:
        server.create_database("prod")
        yield server


@pytest.fixture
def armed(decoy: EphemeralServer) -> Iterator[EphemeralServer]:
    """The guard armed, with a server of the harness's own; the decoy not allowed."""
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.forget_server(decoy.url)
        with EphemeralServer.start() as ours:
            yield ours


def _decoy_prod(decoy: EphemeralServer) -> str:
    return decoy.database_url("prod").render_as_string(hide_password=False)


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
    before = _connections(decoy)
    with pytest.raises(GuardRefused, match=rf"refused a connection to .*:{port}/"):
        attempts[how]()
    assert _connections(decoy) == before


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


def _connections(server: EphemeralServer) -> int:
    """Connections the decoy ever received (its log records each)."""
    assert server.process.base_dir is not None
    log = (server.process.base_dir / "_TunedPostgresql.log").read_text(errors="replace")
    return len(re.findall(r"connection received: ", log))


def test_a_connection_opened_while_migrating_goes_to_the_migrated_database(
    armed: EphemeralServer, decoy: EphemeralServer
) -> None:
    """An env.py reading its own variable still migrates the throw-away database."""
    url = armed.create_database("test_migrated")
    before = _connections(decoy)
    with GUARD.migrating(url):
        with create_engine(_decoy_prod(decoy)).connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == "test_migrated"
        conninfo = f"host=127.0.0.1 port={decoy.url.port} dbname=prod user=postgres"
        with psycopg.connect(conninfo) as raw:
            row = raw.execute("SELECT current_database()").fetchone()
            assert row is not None and row[0] == "test_migrated"
    assert _connections(decoy) == before
    assert any(
        f":{decoy.url.port}/prod -> " in r and "/test_migrated" in r for r in GUARD.redirects
    )
    with pytest.raises(GuardRefused):  # outside a migration: refused again
        create_engine(_decoy_prod(decoy)).connect()
