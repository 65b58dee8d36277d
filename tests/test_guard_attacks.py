"""Issue 11's attacks on the guard (the README's "The production guard"), against a real
decoy "production" server.

The decoy is a PostgreSQL server that logs every connection and holds databases named
like the registry's production databases (``reynard_ecs``, ``reynard_ecs_e2e``,
``reynard``, ``reynard_e2e``) plus ``prod``, each with a table ``precious``. Every
attack runs in a child process (a user's ``pytest`` or ``reynard-migrate``) with the
production URL variables exported at the decoy; then the decoy's log must show no
connection at all, and its databases, relations (by oid) and rows must be as before.

The invariant: while the plugin runs (template builds, tests, check items,
pytest-alembic's fixtures), and while ``check``, ``lint`` and ``create``'s throw-away
database run, no connection is opened to a database the harness did not create
(the maintenance database of the server it provisions on excepted). A refusal is
one line with the word "refused" and the masked target; the opt-in is
``--reynard-db-allow=URL[,URL]`` (ini ``reynard_db_allow``) and ``--allow URL``.
Where an env.py's own connection is concerned, the tests also accept that it be sent
to the throw-away database instead, provided a line names the target it asked for.

1. a test driving ``reynard_db_fresh.config`` with ``alembic.command``; the URL
   variables seen inside tests;
2. ``--reynard-db-url`` / ``check --url`` whose query string redirects the connection;
3. ``env.py`` files that read their own variable (or a ``.env`` file) and ignore what
   the harness hands them: ``check``, ``lint``, ``create``, ``pytest [-n 2] --reynard-db-checks``;
4. the opt-in;
5. a test connecting by itself: psycopg, SQLAlchemy, a conninfo string, libpq's ``PG*``;
6. an ``env.py`` migrating another allowed place: the check must notice;
7. passwords, in every URL form, through every output path.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cli_fork import cli_argv, run_cli_in, run_pytest_argv
from psycopg import sql
from reynard_trees import clean_env, log_of, pytest_argv, reynard_project, write_revision

from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.reaper import postmaster_pid

PRODUCTION = ("reynard_ecs", "reynard_ecs_e2e", "reynard", "reynard_e2e", "prod")
DECOY_DATABASES = PRODUCTION  # conftest's decoy_server, each with its precious row
#: The registry's url_env variables (and the common DATABASE_URL) and the decoy
#: database each is exported at.
URL_ENVS = {
    "ECS_DATABASE_URL": "reynard_ecs",
    "ECS_E2E_DATABASE_URL": "reynard_ecs_e2e",
    "DATABASE_URL": "reynard",
    "E2E_DATABASE_URL": "reynard_e2e",
}
MAIN_HEAD = "3a1400000004"
TIMEOUT = 180
TRACEBACK = "Traceback (most recent call last)"
REFUSED = re.compile(r"(?<!Connection )\brefused\b")
REFUSAL = re.compile(r"\brefus(ed|ing)\b")

TRIVIAL_TEST = "def test_trivial(reynard_db):\n    assert reynard_db.head\n"


# -- the decoy -----------------------------------------------------------------------------------
def _set_up(conn: psycopg.Connection[Any], mode: str) -> None:
    if mode == "reset":
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'"
        )
        for (name,) in rows.fetchall():
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        for name in PRODUCTION:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@dataclass(frozen=True)
class Decoy:
    server: EphemeralServer
    baseline: dict[str, Any]

    @property
    def port(self) -> int:
        port = self.server.url.port
        assert port is not None
        return port

    @property
    def user(self) -> str:
        return self.server.url.username or "postgres"

    @property
    def log(self) -> Path:
        return log_of(self.server)

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def libpq_url(self, database: str) -> str:
        return self.url(database, driver="postgresql")


def decoy_state(server: EphemeralServer, mode: str = "read") -> dict[str, Any]:
    """The decoy's databases, and each production database's relations and rows
    (``mode``: ``read``, or ``reset``: the databases recreated first).
    Read from this process (started by it, the decoy is this run's to reach), before an
    attack's log offset is taken or after its log is read: never seen as the attack's."""
    with server.connect() as conn:
        _set_up(conn, mode)
        rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")
        state: dict[str, Any] = {"databases": sorted(row[0] for row in rows)}
    for name in PRODUCTION:
        with server.connect(name) as conn:
            if mode == "reset":
                conn.execute("CREATE TABLE precious (id int)")
                conn.execute("INSERT INTO precious VALUES (1)")
            relations = conn.execute(
                "SELECT relname, oid::int FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace ORDER BY relname"
            ).fetchall()
            [(precious,)] = conn.execute(
                "SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM precious"
            ).fetchall()
            state[name] = {"relations": relations, "precious": precious}
    return state


def pristine(state: dict[str, Any]) -> bool:
    """The decoy as set up: its databases, each holding ``precious`` with its one row."""
    return state["databases"] == sorted(("postgres", *PRODUCTION)) and all(
        [name for name, _ in state[db]["relations"]] == ["precious"]
        and state[db]["precious"] == [1]
        for db in PRODUCTION
    )


@pytest.fixture
def decoy(decoy_server: EphemeralServer) -> Decoy:
    """conftest's ``decoy_server`` (its databases ``PRODUCTION``) as production looks:
    recreated if an earlier attack got through to it, so one successful attack does not
    fail the tests after it. (Not conftest's ``decoy``: the guard keeps this server on its
    list, since its state is read from this process.)"""
    state = decoy_state(decoy_server)
    if not pristine(state):
        state = decoy_state(decoy_server, "reset")
    return Decoy(decoy_server, state)


def production_env(decoy: Decoy, **extra: str) -> dict[str, str]:
    """A user's shell with every production URL variable exported at the decoy."""
    urls = {variable: decoy.url(database) for variable, database in URL_ENVS.items()}
    return clean_env(**urls, **extra)


# -- the decoy's log -----------------------------------------------------------------------------
def log_since(decoy: Decoy, offset: int) -> str:
    with decoy.log.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def connections_in(log: str) -> list[str]:
    """Every connection ``log`` (the decoy's) says was received, to any database."""
    return [line for line in log.splitlines() if "connection received" in line]


def databases_in(log: str) -> list[str]:
    """The database of every connection ``log`` (the decoy's) says was authorized."""
    return re.findall(r"connection authorized: user=\S+ database=(\S+)", log)


# -- child processes -----------------------------------------------------------------------------
def run_child(argv: list[str], cwd: Path, env: Mapping[str, str]) -> tuple[int, str, str]:
    """``argv`` (a user's ``pytest``, or ``reynard-migrate``: ``cli_argv``, each run as the
    other tests run it, forked: ``cli_fork``) in ``cwd`` with ``env``."""
    cli = cli_argv(cwd)[:3]
    try:
        if argv[:3] == cli:
            return run_cli_in(cwd, *argv[3:], env=dict(env), timeout=TIMEOUT)
        result = run_pytest_argv(argv, cwd, env, timeout=TIMEOUT)  # forked, as run_cli_in
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung: {' '.join(argv[1:])} did not finish within {TIMEOUT} s\n{exc.stderr!r}")
    return result.returncode, result.stdout, result.stderr


@dataclass(frozen=True)
class Outcome:
    """A child process's exit and output, and what the decoy saw meanwhile."""

    code: int
    out: str
    err: str
    connections: list[str]
    databases: list[str]

    @property
    def output(self) -> str:
        return self.out + self.err

    def __str__(self) -> str:
        seen = "\n".join([*self.connections[:5], f"databases: {self.databases[:10]}"])
        return (
            f"exit {self.code}; {len(self.connections)} connection(s) to the decoy\n{seen}\n"
            f"--- stdout ---\n{self.out[-4000:]}\n--- stderr ---\n{self.err[-4000:]}"
        )


def attack(decoy: Decoy, argv: list[str], cwd: Path, env: Mapping[str, str]) -> Outcome:
    """Run ``argv`` in a child process and collect the decoy's connections meanwhile."""
    offset = decoy.log.stat().st_size
    before = backends(decoy)
    code, out, err = run_child(argv, cwd, env)
    probe = settled(decoy, before)
    text = "".join(line for line in log_since(decoy, offset).splitlines(True) if probe not in line)
    return Outcome(code, out, err, connections_in(text), databases_in(text))


def backends(decoy: Decoy) -> set[int]:
    """The pids of the decoy's postmaster's children: its own processes and backends."""
    assert decoy.server.process.base_dir is not None
    postmaster = postmaster_pid(decoy.server.process.base_dir / "data")
    assert postmaster is not None, "the decoy is not running"
    return set(map(int, Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()))


def settled(decoy: Decoy, before: set[int]) -> str:
    """Wait until every connection a finished child made is in the decoy's log (``before``:
    ``backends`` before it started); return the log prefix of the probe used for that (its
    lines are not the child's).

    Each backend writes its "connection received" line itself, as it starts (no logging
    collector): a backend forked before another may log after it, so neither a fixed sleep
    nor the probe's own line says the child's are all there. The probe is accepted after
    every connection queued before it (one listening socket, accepted in order, each
    forked as accepted); once every backend forked since ``before`` has exited, each has
    written its line."""
    with decoy.server.connect() as probe:
        [(pid,)] = probe.execute("SELECT pg_backend_pid()").fetchall()
    deadline = time.monotonic() + TIMEOUT
    while backends(decoy) - before:
        assert time.monotonic() < deadline, f"a backend of the decoy's outlived {TIMEOUT} s"
        time.sleep(0.01)
    return f" [{pid}] "


# -- assertions ----------------------------------------------------------------------------------
def assert_untouched(decoy: Decoy, outcome: Outcome) -> None:
    """No connection at all reached the decoy, and its data is as it was."""
    assert outcome.connections == [], str(outcome)
    assert decoy_state(decoy.server) == decoy.baseline, str(outcome)


def assert_reached_only(decoy: Decoy, outcome: Outcome, allowed: Callable[[str], bool]) -> None:
    """Every connection the decoy received went to an ``allowed`` database; data intact."""
    assert len(outcome.databases) == len(outcome.connections), str(outcome)
    assert [db for db in outcome.databases if not allowed(db)] == [], str(outcome)
    state = decoy_state(decoy.server)
    # Used as a run's server, the decoy keeps that run's template (test_tpl_<db>_<digest>,
    # for the next run on it, by design): the harness's own; dropped for the next test.
    kept = [name for name in state["databases"] if name.startswith("test_tpl_")]
    for name in kept:
        decoy.server.drop_database(name)
    state["databases"] = [name for name in state["databases"] if name not in kept]
    assert state == decoy.baseline, str(outcome)


def assert_no_traceback(outcome: Outcome) -> None:
    assert TRACEBACK not in outcome.output, str(outcome)
    assert "INTERNALERROR" not in outcome.output, str(outcome)


def assert_refused(decoy: Decoy, outcome: Outcome, *, traceback_ok: bool = False) -> None:
    """A non-zero exit whose output has a refusal line naming the decoy (by its port)."""
    assert outcome.code != 0, str(outcome)
    assert refusal_lines(decoy, outcome), f"no 'refused' line names the target\n{outcome}"
    if not traceback_ok:
        assert_no_traceback(outcome)


def refusal_lines(decoy: Decoy, outcome: Outcome) -> list[str]:
    """Lines saying a connection was refused that name the decoy (by its port)."""
    return [
        line
        for line in outcome.output.splitlines()
        if REFUSED.search(line) and str(decoy.port) in line
    ]


def assert_refused_or_redirected(decoy: Decoy, outcome: Outcome, command: str) -> None:
    """env.py's own connection was stopped: refused (the command fails, and says so), or
    sent to the throw-away database with a line naming the target it asked for."""
    if refusal_lines(decoy, outcome):
        assert outcome.code != 0, str(outcome)
        if command == "check":
            assert outcome.code == 1, str(outcome)
        if command == "create":
            assert REFUSED.search(outcome.err), str(outcome)
        return
    redirected = [
        line
        for line in outcome.output.splitlines()
        if "redirect" in line.lower() and str(decoy.port) in line
    ]
    assert redirected, f"neither refused nor an announced redirect\n{outcome}"


def is_throw_away(database: str) -> bool:
    return database == "postgres" or database.startswith("test_")


# -- the sanity check: the log does record connections -------------------------------------------
def test_the_decoy_log_records_a_production_verb(tmp_path: Path, decoy: Decoy) -> None:
    project = reynard_project(tmp_path / "project")
    outcome = attack(decoy, cli_argv(project, "current", "ecs"), project, production_env(decoy))

    assert outcome.code == 0, str(outcome)
    assert outcome.connections, f"the decoy's log shows no connection:\n{outcome}"
    assert "reynard_ecs" in outcome.databases, str(outcome)
    assert decoy_state(decoy.server) == decoy.baseline


# -- 1. a test driving alembic on reynard_db_fresh.config; the variables inside tests ------------
ALEMBIC_IN_A_TEST = f"""\
from alembic import command
from pytest_alembic import tests


def versions(database):
    with database.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version")
        return [row[0] for row in rows]


def test_downgrade_then_upgrade_the_fresh_database(reynard_db_fresh):
    command.downgrade(reynard_db_fresh.config, "base")
    assert versions(reynard_db_fresh) == [], "the downgrade went somewhere else"
    command.upgrade(reynard_db_fresh.config, "heads")
    assert versions(reynard_db_fresh) == [{MAIN_HEAD!r}], "the upgrade went somewhere else"


def test_pytest_alembic_upgrade(alembic_runner):
    tests.test_upgrade(alembic_runner)
"""


def test_alembic_commands_on_the_fresh_config_stay_on_the_test_database(
    tmp_path: Path, decoy: Decoy
) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_alembic_commands.py").write_text(ALEMBIC_IN_A_TEST)

    outcome = attack(decoy, pytest_argv("--reynard-db=main"), project, production_env(decoy))

    assert outcome.code == 0 and "2 passed" in outcome.out, str(outcome)
    assert_untouched(decoy, outcome)


def url_variables_test(decoy: Decoy) -> str:
    variables = sorted(URL_ENVS)
    return textwrap.dedent(f"""\
        import os

        import pytest

        VARIABLES = {variables!r}
        DECOY = ":{decoy.port}/"


        def production_variables():
            return {{
                name: os.environ[name]
                for name in VARIABLES
                if name in os.environ and DECOY in os.environ[name]
            }}


        def test_without_a_fixture():
            assert production_variables() == {{}}


        def test_with_the_database(reynard_db):
            assert production_variables() == {{}}


        def test_with_a_fresh_database(reynard_db_fresh):
            assert production_variables() == {{}}
        """)


def test_url_variables_never_point_at_production_inside_tests(tmp_path: Path, decoy: Decoy) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_variables.py").write_text(url_variables_test(decoy))

    outcome = attack(decoy, pytest_argv("--reynard-db=main"), project, production_env(decoy))

    assert outcome.code == 0 and "3 passed" in outcome.out, str(outcome)
    assert_untouched(decoy, outcome)


# -- 2. a server URL whose query string redirects the connection ---------------------------------
REDIRECTS = {
    # the harness's own server, but ?dbname= names a production database
    "dbname-on-a-test-server": "postgresql://{user}@127.0.0.1:{harness}/postgres?dbname=reynard",
    # the netloc names the test server; ?host=&port= send the connection to the decoy
    "host-port-to-the-decoy": (
        "postgresql://{user}@127.0.0.1:{harness}/postgres?host=127.0.0.1&port={decoy}"
    ),
    # the netloc names a server that does not even exist
    "host-port-from-nowhere": (
        "postgresql://{user}@elsewhere.invalid:5432/postgres?host=127.0.0.1&port={decoy}"
    ),
    "host-port-dbname": (
        "postgresql://{user}@127.0.0.1:{harness}/postgres"
        "?host=127.0.0.1&port={decoy}&dbname=reynard"
    ),
    # the decoy's own admin URL, with ?dbname= naming a production database
    "decoy-admin-dbname-prod": "postgresql://{user}@127.0.0.1:{decoy}/postgres?dbname=prod",
}


def redirect_argv(front: str, project: Path, url: str) -> list[str]:
    if front == "pytest":
        return pytest_argv("--reynard-db=main", f"--reynard-db-url={url}")
    return cli_argv(project, "check", "main", "--url", url, "--only", "upgrade")


@pytest.mark.parametrize("front", ["pytest", "check"])
@pytest.mark.parametrize("redirect", list(REDIRECTS))
def test_a_query_string_does_not_redirect_the_server_url(
    tmp_path: Path, decoy: Decoy, pg_server: EphemeralServer, redirect: str, front: str
) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_trivial.py").write_text(TRIVIAL_TEST)
    url = REDIRECTS[redirect].format(user=decoy.user, harness=pg_server.url.port, decoy=decoy.port)

    outcome = attack(decoy, redirect_argv(front, project, url), project, production_env(decoy))

    if "{decoy}" in REDIRECTS[redirect]:
        # The URL does name the decoy as the server (libpq lets the query string win):
        # its maintenance database and the run's own test_* databases are the
        # harness's to use; `reynard` and `prod` never are.
        assert_reached_only(decoy, outcome, is_throw_away)
    else:
        assert_untouched(decoy, outcome)
    if outcome.code == 0:
        assert front == "check" or "1 passed" in outcome.out, str(outcome)
    else:
        assert REFUSAL.search(outcome.output), str(outcome)
        assert_no_traceback(outcome)


# -- 3. env.py files that read their own URL -----------------------------------------------------
#: env.py as ``alembic init`` writes it, except that the URL comes from somewhere of its
#: own: config.attributes and sqlalchemy.url are ignored.
STOCK_ENV_PY = '''\
"""A stock env.py that finds its own URL."""
import os
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool


def database_url() -> str:
{reader}


url = database_url().replace("postgresql://", "postgresql+psycopg://", 1)
if context.is_offline_mode():
    context.configure(url=url, target_metadata=None, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
'''

FROM_DOTENV = """\
    root = Path(__file__).resolve().parents[2]
    lines = (root / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)["DATABASE_URL"]"""

FROM_SQLITE = """\
    return "sqlite:///" + str(Path(__file__).resolve().parents[2] / "other.db")"""

FROM_MAINTENANCE_DATABASE = """\
    from sqlalchemy.engine import make_url

    passed = context.config.attributes.get("connection")
    if passed is not None:
        url = getattr(passed, "engine", passed).url
    else:
        url = make_url(context.config.get_main_option("sqlalchemy.url"))
    return url.set(database="postgres").render_as_string(hide_password=False)"""


def from_variable(name: str) -> str:
    return f'    return os.environ["{name}"]'


def write_env_py(project: Path, tree: str, reader: str) -> None:
    (project / "alembic" / tree / "env.py").write_text(STOCK_ENV_PY.format(reader=reader))


@dataclass(frozen=True)
class EnvShape:
    """How main's env.py and its mirror's find their URL, and what the user exported."""

    main: str
    e2e: str
    exported: tuple[tuple[str, str], ...] = ()  # (variable, decoy database)
    dotenv: bool = False
    #: Reads a variable of its own: only a refusal keeps it off the decoy. (A registered
    #: variable may instead be pointed at the throw-away database by the harness.)
    must_refuse: bool = True


ENV_SHAPES = {
    "reads-DATABASE_URL": EnvShape(
        from_variable("DATABASE_URL"), from_variable("E2E_DATABASE_URL"), must_refuse=False
    ),
    "reads-APP_DATABASE_URL": EnvShape(
        from_variable("APP_DATABASE_URL"),
        from_variable("APP_DATABASE_URL"),
        exported=(("APP_DATABASE_URL", "reynard"),),
    ),
    "mirror-reads-its-sources-variable": EnvShape(
        from_variable("DATABASE_URL"), from_variable("DATABASE_URL"), must_refuse=False
    ),
    "reads-dotenv": EnvShape(FROM_DOTENV, FROM_DOTENV, dotenv=True),
}


def env_shape_project(tmp_path: Path, decoy: Decoy, shape: EnvShape) -> Path:
    project = reynard_project(tmp_path / "project")
    write_env_py(project, "main", shape.main)
    write_env_py(project, "e2e", shape.e2e)
    if shape.dotenv:
        (project / ".env").write_text(f"DATABASE_URL={decoy.url('reynard')}\n")
    (project / "test_trivial.py").write_text(TRIVIAL_TEST)
    return project


ENV_SHAPE_COMMANDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # command id: (reynard-migrate argv, pytest argv); exactly one is non-empty
    "check": (("check", "main", "e2e"), ()),
    "lint-locks": (("lint", "main", "--only", "locks"), ()),
    "create": (("create", "main", "-m", "x"), ()),
    "pytest-checks": ((), ("--reynard-db=main", "--reynard-db-checks")),
    "pytest-xdist-checks": ((), ("--reynard-db=main", "-n", "2", "--reynard-db-checks")),
}
ENV_SHAPE_CASES = [
    pytest.param(shape, command, id=f"{shape}-{command}")
    for shape in ENV_SHAPES
    for command in ENV_SHAPE_COMMANDS
    # the mirror's env.py matters only where the mirror is migrated
    if shape != "mirror-reads-its-sources-variable" or command == "check"
    # an env.py reaching the locks check's database through a connection of its own waits
    # on the check's locks: the check notices, stops it, and names env.py (see
    # test_nothing_hangs.py); here only the guard is under test
]


def revision_files(project: Path) -> set[Path]:
    return set((project / "alembic" / "main" / "versions").rglob("*.py"))


@pytest.mark.parametrize(("shape_id", "command"), ENV_SHAPE_CASES)
def test_an_env_py_reading_its_own_url_never_reaches_production(
    tmp_path: Path, decoy: Decoy, shape_id: str, command: str
) -> None:
    shape = ENV_SHAPES[shape_id]
    project = env_shape_project(tmp_path, decoy, shape)
    before = revision_files(project)
    migrate, pytest_args = ENV_SHAPE_COMMANDS[command]
    argv = cli_argv(project, *migrate) if migrate else pytest_argv(*pytest_args)
    env = production_env(decoy, **{var: decoy.url(db) for var, db in shape.exported})

    outcome = attack(decoy, argv, project, env)

    assert_untouched(decoy, outcome)
    assert_no_traceback(outcome)
    if command == "create":
        assert revision_files(project) == before or outcome.code == 0, str(outcome)
    if shape.must_refuse:
        assert_refused_or_redirected(decoy, outcome, command)


# -- 4. the opt-in -------------------------------------------------------------------------------
def reaching_tests(decoy: Decoy) -> str:
    """A control test on the run's own database, one reaching the decoy's `reynard`
    (allowed by the opt-in) and one reaching its `prod` (never allowed here)."""
    return textwrap.dedent(f"""\
        from sqlalchemy import create_engine, text


        def count_precious(url):
            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    return conn.execute(text("SELECT count(*) FROM precious")).scalar()
            finally:
                engine.dispose()


        def test_own_database(reynard_db):
            with reynard_db.engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM user_account")).scalar() >= 0


        def test_reach_the_allowed_database():
            assert count_precious({decoy.url("reynard")!r}) == 1


        def test_reach_another_database():
            assert count_precious({decoy.url("prod")!r}) == 1
        """)


@pytest.mark.parametrize("opt_in", ["none", "option", "ini"])
def test_the_opt_in_lets_a_test_reach_only_what_it_names(
    tmp_path: Path, decoy: Decoy, opt_in: str
) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_reach.py").write_text(reaching_tests(decoy))
    args = ["--reynard-db=main", "-rA"]
    if opt_in == "option":  # a list, in the libpq spelling: matched on the final parameters
        allowed = f"{decoy.libpq_url('reynard')},{decoy.libpq_url('reynard_e2e')}"
        args.append(f"--reynard-db-allow={allowed}")
    elif opt_in == "ini":
        with (project / "pyproject.toml").open("a") as pyproject:
            pyproject.write(f'reynard_db_allow = "{decoy.url("reynard")}"\n')

    outcome = attack(decoy, pytest_argv(*args), project, production_env(decoy))

    assert_refused(decoy, outcome, traceback_ok=True)  # the test's own frames are shown
    if opt_in == "none":
        assert "2 failed, 1 passed" in outcome.out, str(outcome)
        assert_untouched(decoy, outcome)
    else:
        assert "1 failed, 2 passed" in outcome.out, str(outcome)
        assert re.search(r"FAILED \S*test_reach_another_database", outcome.out), str(outcome)
        assert outcome.databases, f"the opted-in test never reached the decoy:\n{outcome}"
        assert_reached_only(decoy, outcome, lambda db: db == "reynard")


# -- 5. a test that connects by itself -----------------------------------------------------------
DIRECT_CONNECTIONS = {
    "psycopg-url": "psycopg.connect({libpq_url!r}).close()",
    "psycopg-conninfo": (
        "psycopg.connect('host=127.0.0.1 port={port} dbname=reynard user={user}').close()"
    ),
    "psycopg-keywords": (
        "psycopg.connect(host='127.0.0.1', port={port}, dbname='reynard', user={user!r}).close()"
    ),
    "sqlalchemy-url": "create_engine({sa_url!r}).connect().close()",
    "libpq-environment": "create_engine('postgresql+psycopg:///').connect().close()",
}


def direct_connection_tests(decoy: Decoy, how: str) -> str:
    body = DIRECT_CONNECTIONS[how].format(
        libpq_url=decoy.libpq_url("reynard"),
        sa_url=decoy.url("reynard"),
        port=decoy.port,
        user=decoy.user,
    )
    return textwrap.dedent(f"""\
        import psycopg
        from sqlalchemy import create_engine


        def test_own_database(reynard_db):
            own = reynard_db.url.set(drivername="postgresql").render_as_string(False)
            with psycopg.connect(own) as conn:
                assert conn.execute("SELECT count(*) FROM user_account").fetchone()[0] >= 0


        def test_reach_production():
            {body}
        """)


@pytest.mark.parametrize("how", list(DIRECT_CONNECTIONS))
def test_a_test_connecting_by_itself_is_refused(tmp_path: Path, decoy: Decoy, how: str) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_direct.py").write_text(direct_connection_tests(decoy, how))
    libpq = {"PGHOST": "127.0.0.1", "PGPORT": str(decoy.port), "PGDATABASE": "reynard"}
    env = production_env(decoy, PGUSER=decoy.user, **(libpq if how == "libpq-environment" else {}))

    outcome = attack(decoy, pytest_argv("--reynard-db=main", "-rA"), project, env)

    assert "1 failed, 1 passed" in outcome.out, str(outcome)
    assert re.search(r"FAILED \S*test_reach_production", outcome.out), str(outcome)
    assert_refused(decoy, outcome, traceback_ok=True)  # the test's own frames are shown
    assert_untouched(decoy, outcome)


# -- 6. an env.py that migrates another allowed place --------------------------------------------
def trivial_tree(project: Path) -> None:
    """main's tree replaced by two revisions any database can run (SQLite included)."""
    versions = project / "alembic" / "main" / "versions"
    for path in versions.glob("*.py"):
        path.unlink()
    for revision, down, table in (
        ("a10000000001", None, "one"),
        ("a10000000002", "a10000000001", "two"),
    ):
        upgrade = f'op.create_table("{table}", sa.Column("id", sa.Integer))'
        write_revision(versions, revision, down, upgrade, f'op.drop_table("{table}")')


ELSEWHERE = {"sqlite-file": FROM_SQLITE, "maintenance-database": FROM_MAINTENANCE_DATABASE}
SAID_ELSEWHERE = re.compile(
    r"another database|other database|different database|not the throw-away"
    r"|did not (change|move)|unchanged|left the database at|refused",
    re.IGNORECASE,
)


@pytest.mark.parametrize("elsewhere", list(ELSEWHERE))
def test_a_check_notices_migrations_that_went_elsewhere(tmp_path: Path, elsewhere: str) -> None:
    project = reynard_project(tmp_path / "project")
    trivial_tree(project)
    write_env_py(project, "main", ELSEWHERE[elsewhere])

    code, out, err = run_child(
        cli_argv(project, "check", "main", "--only", "upgrade,stairway", "--json"),
        project,
        clean_env(),
    )

    shown = f"exit {code}\n{out}\n{err}"
    assert code == 1, shown
    assert TRACEBACK not in out + err, shown
    results = json.loads(out)["results"]
    assert {r["check"] for r in results} == {"upgrade", "stairway"}, shown
    assert [r for r in results if r["ok"]] == [], shown
    assert "base -> base" not in out, shown
    assert all(SAID_ELSEWHERE.search(r["message"]) for r in results), shown


# -- 7. passwords, in every URL form, through every output path ----------------------------------
SECRET_PIECES = ("S3c", "r3tPw")  # the head and the tail: a password cut at '@' leaks either
SECRET_FORMS = {
    "userinfo": "postgresql://app:S3cr3tPw@h/db",
    "query": "postgresql://app@h/db?password=S3cr3tPw",
    "at-sign": "postgresql://app:S3c@r3tPw@h/db",
    "one-slash": "postgresql:/app:S3cr3tPw@h/db",
    "no-scheme": "app:S3cr3tPw@h/db",
    "wrong-scheme": "mysql://app:S3cr3tPw@h/db",
    "conninfo": "host=h password=S3cr3tPw dbname=db",
}
PYTEST_VERBOSE = ("--reynard-db=main", "-v", "-rA", "--log-level=DEBUG", "-o", "log_cli=true")


def secret_run(path: str, project: Path, form: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that feed ``form`` through output ``path``."""
    if path == "pytest-url":
        return pytest_argv(*PYTEST_VERBOSE, f"--reynard-db-url={form}"), clean_env()
    if path == "pytest-env-py":
        write_env_py(project, "main", from_variable("APP_DATABASE_URL"))
        return pytest_argv(*PYTEST_VERBOSE), clean_env(APP_DATABASE_URL=form)
    if path == "check-json":
        return cli_argv(project, "check", "main", "--url", form, "--json"), clean_env()
    if path == "check-table":
        return cli_argv(project, "check", "main", "--url", form), clean_env()
    if path == "upgrade":
        return cli_argv(project, "upgrade", "main", "--url", form), clean_env()
    assert path == "current-env"
    return cli_argv(project, "current", "main"), clean_env(DATABASE_URL=form)


def error_lines(stderr: str) -> list[str]:
    """stderr without blank lines and Alembic's own INFO lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("INFO")]


@pytest.mark.parametrize(
    "path",
    ["pytest-url", "pytest-env-py", "check-json", "check-table", "upgrade", "current-env"],
)
@pytest.mark.parametrize("form", list(SECRET_FORMS))
def test_no_password_in_any_output(tmp_path: Path, form: str, path: str) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_trivial.py").write_text(TRIVIAL_TEST)
    argv, env = secret_run(path, project, SECRET_FORMS[form])

    code, out, err = run_child(argv, project, env)

    shown = f"exit {code}\n--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}"
    for piece in SECRET_PIECES:
        assert piece not in out + err, shown
    # (an env.py's connection may be refused, or redirected to the test database: then
    # the run passes; every other path must fail on such a URL)
    assert code != 0 or path == "pytest-env-py", shown
    assert "INTERNALERROR" not in out + err, shown
    # pytest -v shows a harness failure's chain on purpose (issue 13); the default run's
    # one line is test_plugin.py::test_a_harness_failure_is_reported_once_in_full
    assert path.startswith("pytest") or TRACEBACK not in out + err, shown
    assert "unrecognized arguments" not in err, shown  # the URL must be what failed
    if path in ("upgrade", "current-env"):
        assert len(error_lines(err)) == 1, shown
