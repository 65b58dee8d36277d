"""Hostile re-attack of the rebuilt guard (issue 23): attacks that still reach a decoy
"production" server (``test_guard_truth``'s on 127.0.0.2 at the harness's port, logging
every statement; ``test_guard_attacks``' decoy with its precious tables). Each test
fails while its attack works (all worked once; each was fixed after its test failed):

- the net (``hooks._verify_connected``) asks only connections whose class lives in a
  driver's module: an application's own subclass made by a ``creator=`` is never judged
  (in a test, in ``check``/``lint``/``create``'s env.py, under ``upgrade --sql``);
- the net learns a place's server from the first connection the driver says reached it:
  an xdist worker on a shared server has made none, so ``host=`` naming the run's server
  with production's address (a ``creator=``, or a service file libpq reads otherwise)
  teaches it production's identity (now the guard asks each place itself, with the URL
  that allowed it, and children inherit what it was told);
- psycopg2's answer to the net's question went through the process's typecasters (now
  read as ``COPY ... TO STDOUT`` text);
- a refusal writes a database name's control characters raw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from cli_fork import run_cli
from reynard_trees import clean_env, reynard_project, run_pytest
from sqlalchemy import create_engine, text
from test_guard_attacks import DECOY_DATABASES, Decoy, decoy, decoy_state, pristine
from test_guard_truth import PRODUCTION_HOST, _statements, harness, production

from pytest_reynard_db.guard import GUARD, GuardRefused
from pytest_reynard_db.guard.reached import TRUTH_QUERY
from pytest_reynard_db.postgres import EphemeralServer

__all__ = ["DECOY_DATABASES", "decoy", "harness", "production"]  # used by name


@pytest.fixture
def shared(harness: EphemeralServer) -> Iterator[str]:
    """A run on a shared server: its maintenance database allowed; the harness's own
    connection made first (so its identity is known). Yields production's conninfo."""
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.allow_database(harness.url)
        admin = f"host=127.0.0.1 port={harness.url.port} user=postgres dbname=postgres"
        with psycopg.connect(admin) as conn:
            conn.execute("SELECT 1")
        yield f"host={PRODUCTION_HOST} port={harness.url.port} user=postgres dbname=postgres"


class AppConnection(psycopg.Connection):  # type: ignore[type-arg,unused-ignore]
    """An application's own connection class (defined outside psycopg's modules)."""


def test_a_creator_with_a_connection_subclass_of_the_application_is_judged(
    harness: EphemeralServer, production: EphemeralServer, shared: str
) -> None:
    """The README: a connection opened at libpq's lowest level inside SQLAlchemy (a
    ``creator=``) is stopped by the net before any statement. With the application's
    own subclass of ``psycopg.Connection`` the net does not ask it at all."""
    before = _statements(production)
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: AppConnection(psycopg.pq.PGconn.connect(shared.encode())),
    )
    with suppress(GuardRefused), engine.connect() as conn:
        conn.execute(text("SELECT 'stolen by a subclass'"))
    assert [s for s in _statements(production) if s not in before] == []
    with pytest.raises(GuardRefused, match="closed before any statement"):
        engine.connect()


def test_a_creator_with_a_psycopg2_connection_subclass_is_judged(
    harness: EphemeralServer, production: EphemeralServer, shared: str
) -> None:
    """psycopg2's ``connection`` class called directly inside SQLAlchemy (README: the net
    stops it), through the application's own subclass (as ``LoggingConnection`` is one)."""
    import psycopg2.extensions

    class AppConnection2(psycopg2.extensions.connection):  # type: ignore[misc]
        pass

    before = _statements(production)
    engine = create_engine("postgresql+psycopg2://", creator=lambda: AppConnection2(shared))
    with suppress(GuardRefused), engine.connect() as conn:
        conn.execute(text("SELECT 'stolen by a psycopg2 subclass'"))
    assert [s for s in _statements(production) if s not in before] == []
    with pytest.raises(GuardRefused, match="closed before any statement"):
        engine.connect()


#: The first connection of an xdist worker's test, to the run's shared server by name
#: (127.0.0.1), dialled at production's address (127.0.0.2).
TOFU_TESTS = {
    # an engine's creator= at libpq's lowest level
    "creator": """
import os

import psycopg
from sqlalchemy import create_engine, text

def test_first_connection_of_the_worker():
    port = os.environ["PROD_PORT"]
    conninfo = f"host=127.0.0.1 hostaddr=127.0.0.2 port={port} user=postgres dbname=postgres"
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.Connection(psycopg.pq.PGconn.connect(conninfo.encode())),
    )
    with engine.connect() as conn:
        conn.execute(text("SELECT 'stolen by the first connection'"))
""",
    # plain psycopg.connect through a service file libpq reads otherwise than the guard:
    # configparser gives [app] the [DEFAULT] section's hostaddr; libpq takes $PGHOSTADDR
    "service-file": """
import os

import psycopg

def test_first_connection_of_the_worker(tmp_path):
    port = os.environ["PROD_PORT"]
    services = tmp_path / "pg_service.conf"
    services.write_text(
        "[DEFAULT]\\nhostaddr=127.0.0.1\\n\\n[app]\\nhost=127.0.0.1\\n"
        f"port={port}\\nuser=postgres\\ndbname=postgres\\n"
    )
    os.environ["PGSERVICEFILE"] = str(services)
    os.environ["PGHOSTADDR"] = "127.0.0.2"
    with psycopg.connect("service=app") as conn:
        conn.execute("SELECT 'stolen through a service file'")
""",
}


@pytest.mark.parametrize("how", sorted(TOFU_TESTS))
def test_the_first_connection_of_an_xdist_worker_does_not_name_the_server(
    harness: EphemeralServer,
    production: EphemeralServer,
    tmp_path: Path,
    how: str,
) -> None:
    """On a shared server (``--reynard-db-url``), the net learns the server's identity from
    the first connection the driver says reached its place. ``host=`` names the run's
    server, ``hostaddr=`` dials production: when that is the process's first connection
    there (a test before any fixture has connected, an xdist worker's first test), its
    identity is taken as the run's server's and its statement runs."""
    root = reynard_project(tmp_path / "project")
    (root / "test_tofu.py").write_text(TOFU_TESTS[how])
    url = f"postgresql+psycopg://postgres@127.0.0.1:{harness.url.port}/postgres"
    before = _statements(production)
    result = run_pytest(
        root,
        f"--reynard-db-url={url}",
        "--reynard-db=main",
        "-n",
        "1",
        "test_tofu.py",
        PROD_PORT=str(harness.url.port),
        REYNARD_DB_RUNTIME_DIR=str(tmp_path / "runtime"),
    )
    stolen = [s for s in _statements(production) if s not in before]
    assert stolen == [], result.stdout + result.stderr
    assert "refused a connection that reached database 'postgres'" in result.stdout, result.stdout


#: env.py whose engine's ``creator=`` makes the application's own connection class at
#: libpq's lowest level (as a driver wrapper or an IAM-token plug-in may), on production.
SUBCLASS_ENV_PY = """\
import psycopg
from alembic import context
from sqlalchemy import create_engine, pool, text


class AppConnection(psycopg.Connection):
    pass


PRODUCTION = "host=127.0.0.1 port={port} user={user} dbname=reynard"
engine = create_engine(
    "postgresql+psycopg://",
    creator=lambda: AppConnection(psycopg.pq.PGconn.connect(PRODUCTION.encode())),
    poolclass=pool.NullPool,
)
with engine.connect() as connection:
    connection.execute(text("CREATE TABLE IF NOT EXISTS stolen_by_env_py (id int)"))
    connection.commit()
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


@pytest.mark.parametrize(
    "argv",
    [("check", "main", "--only", "upgrade"), ("lint", "main"), ("create", "main", "-m", "x")],
    ids=lambda argv: argv[0],
)
def test_an_env_py_whose_creator_makes_a_connection_subclass(
    tmp_path: Path, decoy: Decoy, argv: tuple[str, ...]
) -> None:
    """``reynard-migrate check``, ``lint``, ``create``: env.py's connection to
    production's ``reynard`` through a ``creator=`` of the application's own
    ``psycopg.Connection`` subclass is never judged: its CREATE TABLE runs on production
    (and, under ``check`` and ``create``, the whole migration)."""
    project = reynard_project(tmp_path / "project")
    env_py = SUBCLASS_ENV_PY.format(port=decoy.port, user=decoy.user)
    (project / "alembic" / "main" / "env.py").write_text(env_py)
    code, out, err = run_cli(project, *argv, env=clean_env())
    after = decoy_state(decoy.server)
    assert [name for name, _ in after["reynard"]["relations"]] == ["precious"], (out, err)
    assert pristine(after), (code, out, err)


#: Put first in a stock env.py: an application module it imports, whose engine makes the
#: application's own connection class (the offline branch itself connects to nothing).
SUBCLASS_AT_IMPORT = """\
import psycopg as _psycopg
from sqlalchemy import create_engine as _create_engine, text as _text


class AppConnection(_psycopg.Connection):
    pass


_conninfo = b"host=127.0.0.1 port={port} user={user} dbname=reynard"
_engine = _create_engine(
    "postgresql+psycopg://",
    creator=lambda: AppConnection(_psycopg.pq.PGconn.connect(_conninfo)),
)
with _engine.begin() as _connection:
    _connection.execute(_text("CREATE TABLE stolen_under_sql (id int)"))
"""


def test_upgrade_sql_with_an_application_connection_subclass_connects_nowhere(
    tmp_path: Path, decoy: Decoy
) -> None:
    """README: with ``--sql`` the production verbs connect to nothing at all (a connection
    env.py opens anyway is refused). One made by a ``creator=`` of the application's own
    connection class is not: its CREATE TABLE runs on production."""
    root = tmp_path / "app"
    root.mkdir()
    command.init(Config(str(root / "alembic.ini")), str(root / "migrations"), template="generic")
    env_py = root / "migrations" / "env.py"
    hostile = SUBCLASS_AT_IMPORT.format(port=decoy.port, user=decoy.user)
    env_py.write_text(hostile + env_py.read_text())
    (root / "pyproject.toml").write_text(
        '[tool.reynard-db.databases.app]\nini = "alembic.ini"\ndatabase = "reynard"\n'
        'url_env = "APP_DATABASE_URL"\n'
    )
    production = decoy.url("reynard")
    code, out, err = run_cli(
        root, "upgrade", "app", "--sql", env=clean_env(APP_DATABASE_URL=production)
    )
    after = decoy_state(decoy.server)
    assert [name for name, _ in after["reynard"]["relations"]] == ["precious"], (code, out, err)
    assert pristine(after)


def test_the_net_s_question_is_not_answered_by_the_application_s_typecasters(
    harness: EphemeralServer, production: EphemeralServer, shared: str
) -> None:
    """psycopg2's answer to the net's question goes through the process's global
    typecasters, which any imported module may register: one for ``name`` and ``text``
    answers "the run's server, database postgres" for production (a deliberate attack:
    the server's identity is readable from the run's own server)."""
    import psycopg2
    import psycopg2.extensions

    admin = f"host=127.0.0.1 port={harness.url.port} user=postgres dbname=postgres"
    with psycopg.connect(admin) as harness_conn:
        row = harness_conn.execute(TRUTH_QUERY).fetchone()
    assert row is not None
    told = {19: [row[0]], 25: [row[1]]}  # name: current_database(); text: the identity

    def answer(oid: int) -> Callable[[str | None, object], str | None]:
        # told once (the net's question), then as the server said (SQLAlchemy's version())
        return lambda value, _cursor: told[oid].pop() if told[oid] else value

    for oid in told:
        caster = psycopg2.extensions.new_type((oid,), f"TOLD{oid}", answer(oid))
        psycopg2.extensions.register_type(caster)
    before = _statements(production)
    engine = create_engine(
        "postgresql+psycopg2://", creator=lambda: psycopg2.extensions.connection(shared)
    )
    try:
        with suppress(GuardRefused), engine.connect() as conn:
            conn.execute(text("SELECT 'stolen with told answers'"))
    finally:
        psycopg2.extensions.register_type(psycopg2.extensions.UNICODE)  # its own back
    assert [s for s in _statements(production) if s not in before] == []


def test_a_refusal_shows_a_control_character_in_a_database_name_escaped(
    harness: EphemeralServer, shared: str
) -> None:
    """A NUL in a database name passed straight to ``psycopg.connect`` is refused (good),
    but the refusal writes the NUL itself into the message, and so into pytest's report
    and the terminal (issue 23: control characters are shown escaped)."""
    with pytest.raises(GuardRefused) as refused:
        psycopg.connect(
            host=PRODUCTION_HOST,
            port=harness.url.port,
            user="postgres",
            dbname="postgres\x00 host=127.0.0.1\x1b[2J",
        )
    message = str(refused.value)
    assert "refused a connection" in message
    assert not any(ord(c) < 32 for c in message), repr(message)
