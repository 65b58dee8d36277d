"""Faults, with real processes and real servers: nothing lost, nothing leaked.

- ``kill -9`` of a pytest session while it builds a template: the next run reaps
  the orphan server and its directory, and passes;
- Ctrl-C (SIGINT to the process group) during a session: server stopped, directory
  removed, no postgres process left;
- two pytest sessions at once on one machine, with and without reuse;
- a failing ``autocommit_block`` step: the message says what may have been applied;
- no password from any URL in CLI output, pytest output or logs;
- the production guard: a server logging every connection proves that neither
  ``pytest --reynard-db=ecs_e2e`` nor ``reynard-migrate check`` connects to the
  production database named by ``$ECS_DATABASE_URL``.

Two ``upgrade``s at once and a migration failing halfway are in test_cli.py
(``test_two_upgrades_at_once_take_turns``,
``test_failing_migration_leaves_the_last_good_revision``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_fork import run_cli, run_pytest_argv
from reynard_trees import (
    clean_env,
    copy_reynard_trees,
    ctrl_c_as_in_a_terminal,
    pytest_argv,
    require_password,
    reynard_project,
    wait_for,
    wait_until,
    write_revision,
)
from sqlalchemy import create_engine, text

from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.reaper import postmaster_pid, process_start_time, read_owner
from pytest_reynard_db.postgres.runas import run_as, runtime_root

SECRET = "s3cr3t"
MAIN_HEAD = "3a1400000004"
MAIN = Path("alembic/main/versions")


# -- helpers -------------------------------------------------------------------------------------
def cli(project: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return run_cli(project, *argv, env=env or clean_env())


def servers_of(pid: int) -> list[Path]:
    """The server directories whose owner record names process ``pid``, or a child of it
    (a pytest run's agent, ``postgres.agent``, owns the run's server)."""
    found = []
    for base_dir in runtime_root(run_as()).glob("server-*"):
        record = read_owner(base_dir)
        if record and pid in (record.get("pid"), parent_of(record.get("pid"))):
            found.append(base_dir)
    return found


def parent_of(pid: object) -> int | None:
    """The parent of process ``pid`` (None: not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return int(stat.rpartition(") ")[2].split()[1])


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper counts as gone)."""
    if process_start_time(pid) is None:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def postgres_processes_in(base_dir: Path) -> list[int]:
    """Pids of postgres processes whose command line names ``base_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(base_dir) in cmdline and "postgres" in cmdline and not gone(int(proc.name)):
            pids.append(int(proc.name))
    return pids


# -- hard kills ----------------------------------------------------------------------------------
SLOW_REVISION = '''\
"""waits while a marker file says so"""
import os, pathlib, time
revision = "3a1400000005"
down_revision = "3a1400000004"
branch_labels = None
depends_on = None
def upgrade() -> None:
    marker = os.environ.get("SLOW_MARKER")
    if marker:
        pathlib.Path(marker).write_text("building")
        time.sleep(120)
def downgrade() -> None: ...
'''


@pytest.mark.parametrize("killed", ["the run", "its process group"])
def test_kill_9_while_building_then_the_next_run_reaps_and_passes(
    tmp_path: Path, killed: str
) -> None:
    """``kill -9`` of the run alone: its agent sees it go and stops and removes the run's
    server. Of its process group (the agent too): the server is an orphan, which the next
    run reaps. Either way the next run passes and nothing is left."""
    project = reynard_project(tmp_path / "project")
    (project / MAIN / "3a1400000005_slow.py").write_text(SLOW_REVISION)
    (project / "test_x.py").write_text(
        "def test_x(reynard_db):\n    assert reynard_db.head == ('3a1400000005',)\n"
    )
    marker = tmp_path / "building"
    victim = subprocess.Popen(
        pytest_argv("--reynard-db=main"),
        cwd=project,
        env=clean_env(SLOW_MARKER=str(marker)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(marker, victim)  # server up, the template half built
    (orphan,) = servers_of(victim.pid)
    postmaster = postmaster_pid(orphan / "data")
    assert postmaster is not None
    if killed == "the run":
        victim.send_signal(signal.SIGKILL)
    else:
        os.killpg(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    if killed == "the run":
        wait_until(lambda: gone(postmaster) and not orphan.exists(), 30, "the agent's clean-up")
    else:
        assert not gone(postmaster), "the killed session's server should be an orphan now"

    nxt = run_pytest_argv(pytest_argv("--reynard-db=main"), project, clean_env())
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    assert "1 passed" in nxt.stdout
    assert not orphan.exists(), "the orphan's directory must be removed"
    assert gone(postmaster), "the orphan server must be stopped"
    assert postgres_processes_in(orphan) == []


WAITING_TEST = """\
import json, pathlib, time

def test_wait(reynard_db, reynard_db_server):
    process = reynard_db_server.process
    scratch = pathlib.Path({facts!r} + ".tmp")
    scratch.write_text(json.dumps({{"dir": str(process.base_dir), "pid": process.pid}}))
    scratch.rename({facts!r})  # whole when it appears
    time.sleep(120)
"""


#: The same wait, in a test whose rolled-back connection and session are open.
WAITING_IN_A_TRANSACTION = WAITING_TEST.replace(
    "def test_wait(reynard_db, reynard_db_server):",
    "from sqlalchemy import text\n\n"
    "def test_wait(reynard_db, reynard_db_server, reynard_db_session):\n"
    "    reynard_db_session.execute(text('SELECT 1'))",
)


def waiting_session(
    tmp_path: Path, *, own_group: bool = False, test: str = WAITING_TEST
) -> tuple[subprocess.Popen[str], Path, int]:
    """A pytest run whose one test waits in its body, its server up: the run, the server's
    directory and its postmaster's pid. ``own_group``: a process group of its own, as a
    terminal's job."""
    project = reynard_project(tmp_path / "project")
    facts = tmp_path / "facts.json"
    (project / "test_wait.py").write_text(test.format(facts=str(facts)))
    with ctrl_c_as_in_a_terminal():  # whatever the suite was started from
        session = subprocess.Popen(
            pytest_argv("--reynard-db=main"),
            cwd=project,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=own_group,
        )
    wait_for(facts, session)
    info = json.loads(facts.read_text())
    base_dir, postmaster = Path(info["dir"]), int(info["pid"])
    assert base_dir.exists() and not gone(postmaster)
    return session, base_dir, postmaster


def test_ctrl_c_stops_the_server_and_removes_its_directory(tmp_path: Path) -> None:
    session, base_dir, postmaster = waiting_session(tmp_path, own_group=True)
    os.killpg(session.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = session.communicate(timeout=60)

    assert session.returncode == 2, out + err  # pytest's "interrupted"
    assert "KeyboardInterrupt" in out
    assert not base_dir.exists()
    assert gone(postmaster)
    assert postgres_processes_in(base_dir) == []


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_a_signal_to_the_group_during_a_test_in_a_transaction_is_one_line(
    tmp_path: Path, number: signal.Signals
) -> None:
    """Hostile fixtures round 20, F3: what ``timeout``, a CI job's cancel and a closed ssh
    session send reaches the server's backends too; the test's session, lost with them,
    was reported at teardown as a harness failure ("the server cannot be reached"), in a
    30-frame traceback, exit 1."""
    session, base_dir, postmaster = waiting_session(
        tmp_path, own_group=True, test=WAITING_IN_A_TRANSACTION
    )
    os.killpg(session.pid, number)
    out, err = session.communicate(timeout=60)
    assert session.returncode == 128 + number, out + err
    assert "Traceback" not in out + err and "cannot be reached" not in out + err, out + err
    assert not base_dir.exists()
    assert gone(postmaster)


# -- concurrency ---------------------------------------------------------------------------------
CONCURRENT_TESTS = """\
from sqlalchemy import text

def test_session_database(reynard_db):
    assert reynard_db.head == ("3a1400000004",)
    with reynard_db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM user_account")).scalar() == 1

def test_fresh(reynard_db_fresh):
    with reynard_db_fresh.engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_log"))
"""


@pytest.mark.parametrize("reuse", [False, True], ids=["own-servers", "reuse"])
def test_two_pytest_sessions_at_once(
    tmp_path: Path, reuse: bool, request: pytest.FixtureRequest
) -> None:
    if reuse:
        request.getfixturevalue("stop_reused_server")
    project = reynard_project(tmp_path / "project")
    (project / "test_concurrent.py").write_text(CONCURRENT_TESTS)
    args = pytest_argv("--reynard-db=main", *(["--reynard-db-reuse"] if reuse else []))
    sessions = [
        subprocess.Popen(
            args,
            cwd=project,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [s.communicate(timeout=300) for s in sessions]
    for session, (out, err) in zip(sessions, outputs, strict=True):
        assert session.returncode == 0, out + err
        assert "2 passed" in out


# -- a failing non-transactional step ------------------------------------------------------------
def failing_revision(autocommit: bool) -> str:
    body = (
        """\
    op.execute("CREATE TABLE before_block (id int)")
    with op.get_context().autocommit_block():
        op.execute("CREATE TABLE in_block (id int)")
        op.execute("SELECT no_such_function()")
"""
        if autocommit
        else """\
    op.execute("CREATE TABLE before_block (id int)")
    op.execute("SELECT no_such_function()")
"""
    )
    return (
        "from alembic import op\n"
        'revision = "3a1400000005"\ndown_revision = "3a1400000004"\n'
        "branch_labels = None\ndepends_on = None\n"
        f"def upgrade() -> None:\n{body}"
        "def downgrade() -> None: ...\n"
    )


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit_block", "transactional"])
def test_failing_step_says_what_may_have_been_applied(
    tmp_path: Path, pg_server: EphemeralServer, autocommit: bool
) -> None:
    project = copy_reynard_trees(tmp_path)
    (project / MAIN / "3a1400000005_half.py").write_text(failing_revision(autocommit))
    name = f"test_faults_autocommit_{autocommit}".lower()
    pg_server.drop_database(name)
    url = pg_server.create_database(name).render_as_string(hide_password=False)

    code, _, err = cli(project, "upgrade", "main", "--url", url)

    assert code == 1
    assert "Traceback" not in err
    assert re.search(r"3a1400000005_half\.py: upgrade 3a1400000004 -> 3a1400000005", err), err
    assert "no_such_function" in err and f"database left at {MAIN_HEAD}" in err
    caveat = (
        "this revision runs statements outside a transaction (autocommit_block); "
        "statements before the failure may have been applied"
    )
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == MAIN_HEAD
        applied = {
            table
            for table in ("before_block", "in_block")
            if conn.execute(text(f"SELECT to_regclass('{table}')")).scalar()
        }
    engine.dispose()
    if autocommit:
        assert caveat in err
        assert applied == {"before_block", "in_block"}, "the caveat is true: they were applied"
    else:
        assert "autocommit_block" not in err
        assert applied == set(), "a transactional failure leaves nothing behind"
    pg_server.drop_database(name)


# -- secrets -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secret_server() -> Iterator[EphemeralServer]:
    """A server where role ``app`` (allowed to create databases) needs password ``s3cr3t``."""
    with EphemeralServer.start() as server:
        require_password(server, "app", SECRET)
        with server.connect() as conn:
            conn.execute("ALTER ROLE app CREATEDB")
        yield server


def test_no_password_in_any_output(tmp_path: Path, secret_server: EphemeralServer) -> None:
    project = reynard_project(tmp_path / "project")
    port = secret_server.url.port
    admin = f"postgresql://app:{SECRET}@127.0.0.1:{port}/postgres"
    target = f"postgresql://app:{SECRET}@127.0.0.1:{port}/test_secret_main"
    outputs: list[str] = []

    for argv, env, expected in (
        (("setup", "main", "--url", target), {}, 0),
        (("current", "main"), {"DATABASE_URL": target}, 0),
        (("downgrade", "main", "--to", "base"), {"DATABASE_URL": target}, 0),
        (("upgrade", "main", "--url", target), {}, 0),
        (("check", "main", "--url", admin, "--only", "upgrade"), {}, 0),
        (("upgrade", "main", "--to", "nope", "--url", target), {}, 2),
        (("upgrade", "main", "--url", target.replace(SECRET, "wrong" + SECRET)), {}, 2),
    ):
        code, out, err = cli(project, *argv, env=clean_env(**env))
        assert code == expected, (argv, out, err)
        outputs.append(out + err)

    (project / MAIN / "3a1400000005_half.py").write_text(failing_revision(autocommit=True))
    code, out, err = cli(project, "upgrade", "main", "--url", target)
    assert code == 1, err
    outputs.append(out + err)
    (project / MAIN / "3a1400000005_half.py").unlink()

    (project / "test_secret.py").write_text(
        "import logging\n"
        "def test_x(reynard_db, reynard_db_server):\n"
        "    logging.getLogger('test').info('server %s db %s', reynard_db_server, reynard_db)\n"
        "    print(reynard_db_server.url, reynard_db.url, repr(reynard_db))\n"
    )
    for args, env in (
        ((f"--reynard-db-url={admin}",), {}),
        ((), {"REYNARD_DB_URL": admin}),
        # a URL that is refused, and one that cannot connect: errors, still masked
        ((f"--reynard-db-url={target.replace('test_secret_main', 'reynard')}",), {}),
        ((f"--reynard-db-url={admin.replace(SECRET, 'wrong' + SECRET)}",), {}),
    ):
        result = subprocess.run(
            pytest_argv(
                "--reynard-db=main",
                "-v",
                "-s",
                "-rA",
                "--log-level=DEBUG",
                "-o",
                "log_cli=true",
                *args,
            ),
            cwd=project,
            env=clean_env(**env),
            capture_output=True,
            text=True,
            timeout=300,
        )
        outputs.append(result.stdout + result.stderr)
        assert "app:***@" in result.stdout + result.stderr, result.stdout + result.stderr

    for output in outputs:
        assert SECRET not in output, output
    assert "1 passed" in outputs[-4] and "1 passed" in outputs[-3]


# -- production guard ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def production_server() -> Iterator[EphemeralServer]:
    """A 'production' server holding ``reynard_ecs``, logging every connection."""
    with EphemeralServer.start(settings=("log_connections=on",)) as server:
        server.create_database("reynard_ecs")
        yield server


def production_connections(server: EphemeralServer) -> list[str]:
    assert server.process.base_dir is not None
    log = (server.process.base_dir / "_TunedPostgresql.log").read_text(errors="replace")
    return re.findall(r"connection authorized: .*database=reynard_ecs\b.*", log)


def test_production_database_is_never_connected_to(
    tmp_path: Path, production_server: EphemeralServer
) -> None:
    project = reynard_project(tmp_path / "project")
    production = production_server.database_url("reynard_ecs").render_as_string(False)
    env = clean_env(ECS_DATABASE_URL=production, ECS_E2E_DATABASE_URL=production)
    (project / "test_guard.py").write_text(
        "def test_x(reynard_db, alembic_engine):\n    assert reynard_db.name != 'reynard_ecs'\n"
    )
    for source in ("copy", "point"):
        result = run_pytest_argv(
            pytest_argv("--reynard-db=ecs_e2e", f"--reynard-db-source={source}"), project, env
        )
        assert result.returncode == 0, result.stdout + result.stderr
    code, out, err = cli(project, "check", "ecs", "ecs_e2e", env=env)
    assert code == 0, out + err

    assert production_connections(production_server) == []

    # The log does record such connections: a verb aimed at production shows up in it.
    code, out, err = cli(project, "current", "ecs", env=env)
    assert code == 0, err
    wait_until(
        lambda: production_connections(production_server), 5, "the verb's connection in the log"
    )


def test_a_failing_merge_step_is_named_with_both_parents(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    """Alembic says a merge step as ``upgrade a, b -> m``: the whole of it, not ``upgrade a``."""
    project = copy_reynard_trees(tmp_path)
    versions = project / MAIN
    write_revision(versions, "b1000000001", MAIN_HEAD, labels="side")
    write_revision(versions, "a1000000001", MAIN_HEAD)
    write_revision(
        versions, "m1000000001", ("a1000000001", "b1000000001"), "op.execute('SELECT 1/0')"
    )
    name = "test_faults_merge_step"
    pg_server.drop_database(name)
    url = pg_server.create_database(name).render_as_string(hide_password=False)

    code, _, err = cli(project, "upgrade", "main", "--url", url)

    assert code == 1
    assert "m1000000001_test.py: upgrade a1000000001, b1000000001 -> m1000000001" in err, err
