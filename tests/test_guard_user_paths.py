"""Hostile tests, round 4: the production guard against what it did not look for, each an
attack that worked once, run as users run it against the decoy of ``test_guard_attacks``
(a "production" server logging every connection)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_fork import cli_argv
from reynard_trees import (
    clean_env,
    connections_received,
    ctrl_c_as_in_a_terminal,
    pytest_argv,
    reynard_project,
)
from test_guard_attacks import (  # the decoy and its fixtures, shared
    DECOY_DATABASES,
    TRIVIAL_TEST,
    Decoy,
    assert_no_traceback,
    assert_untouched,
    attack,
    decoy,
    production_env,
    refusal_lines,
    write_env_py,
)

from pytest_reynard_db.foundation.errors import ServerError
from pytest_reynard_db.guard import GUARD, GuardRefused
from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.runas import run_as, runtime_root

__all__ = ["DECOY_DATABASES", "decoy"]  # conftest's decoy_server and a fixture, by name

#: A variable of the application's own, which the harness cannot know to hide.
APP_VARIABLE = "MYAPP_DATABASE_URL"

# -- 1. child interpreters -----------------------------------------------------------------------
#: Python statements that connect to ``$MYAPP_DATABASE_URL`` from a child interpreter.
CHILDREN = {
    # a test running the application's CLI, as many projects' tests do
    "subprocess": """\
        import subprocess, sys
        code = "import os, psycopg; psycopg.connect(os.environ['MYAPP_DATABASE_URL']).close()"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        print(done.stderr)
        assert done.returncode == 0, done.stderr
        """,
    # a test that gives its child a PYTHONPATH of its own (the package's .pth arms it)
    "subprocess-own-pythonpath": """\
        import os, subprocess, sys
        code = "import os, psycopg; psycopg.connect(os.environ['MYAPP_DATABASE_URL']).close()"
        env = {**os.environ, "PYTHONPATH": "src"}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        print(done.stderr)
        assert done.returncode == 0, done.stderr
        """,
    # an isolated interpreter (-I: no PYTHON* variables, no user site; site-packages' .pth)
    "subprocess-isolated": """\
        import subprocess, sys
        code = "import os, psycopg; psycopg.connect(os.environ['MYAPP_DATABASE_URL']).close()"
        done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
        print(done.stderr)
        assert done.returncode == 0, done.stderr
        """,
    # a worker pool: with "spawn" (macOS' default; 3.14's "forkserver") a fresh interpreter
    "multiprocessing-spawn": """\
        import multiprocessing, os
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            # what the worker returns (a str) pickles back; a connection would not
            pool.apply(eval, ("str(__import__('psycopg').connect(__import__('os')"
                              ".environ['MYAPP_DATABASE_URL']))",))
        """,
}


def child_test(statements: str) -> str:
    body = textwrap.indent(textwrap.dedent(statements), "    ")
    return f"def test_child_connects():\n{body}\n"


@pytest.mark.parametrize("how", list(CHILDREN))
def test_a_child_interpreter_of_a_test_is_guarded_too(
    tmp_path: Path, decoy: Decoy, how: str
) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_child.py").write_text(child_test(CHILDREN[how]))
    env = production_env(decoy, **{APP_VARIABLE: decoy.libpq_url("prod")})

    outcome = attack(decoy, pytest_argv("--reynard-db=main", "-rA"), project, env)

    assert_untouched(decoy, outcome)
    assert "1 failed" in outcome.out, str(outcome)
    assert refusal_lines(decoy, outcome), str(outcome)


#: An env.py that hands the migration to a child interpreter (a project's own script).
ENV_PY_CHILD = """\
    import subprocess, sys
    code = "import os, psycopg; psycopg.connect(os.environ['MYAPP_DATABASE_URL']).close()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr.strip().splitlines()[-1])
    return os.environ["MYAPP_DATABASE_URL"]"""


def test_a_child_interpreter_of_env_py_is_guarded_too(tmp_path: Path, decoy: Decoy) -> None:
    project = reynard_project(tmp_path / "project")
    write_env_py(project, "main", ENV_PY_CHILD)
    env = production_env(decoy, **{APP_VARIABLE: decoy.libpq_url("prod")})

    outcome = attack(decoy, cli_argv(project, "check", "main", "--only", "upgrade"), project, env)

    assert_untouched(decoy, outcome)
    assert outcome.code == 1, str(outcome)
    assert refusal_lines(decoy, outcome), str(outcome)
    assert_no_traceback(outcome)


SAME_DRIVERS = """\
from pytest_reynard_db import child_guard
from pytest_reynard_db.guard import hooks
from pytest_reynard_db.guard.startup import sitecustomize

assert set(sitecustomize.DRIVERS) == set(child_guard.DRIVERS) == set(hooks.DRIVER_PATCHES)
"""


def test_the_child_start_up_waits_for_every_driver_the_hooks_guard() -> None:
    # in a child with a user's environment: imported here, it would arm this run's guard
    done = subprocess.run(
        [sys.executable, "-c", SAME_DRIVERS], env=clean_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


ENVIRONMENT_BACK = """\
import os
from pytest_reynard_db.guard import GUARD, inherit

with GUARD.armed_for(opt_in_hint="x"):
    assert os.environ["PYTHONPATH"] == os.pathsep.join([inherit.STARTUP, "/somewhere"])
    GUARD.allow_database("postgresql://u@h:1/postgres", "test_one")
    listed = inherit.load(os.environ[inherit.GUARD_VARIABLE])
    assert listed["hint"] == "x" and listed["databases"] == [["h", 1, "test_one"]], listed
    listed_at = os.environ[inherit.GUARD_VARIABLE]
assert os.environ["PYTHONPATH"] == "/somewhere", os.environ["PYTHONPATH"]
assert inherit.GUARD_VARIABLE not in os.environ
assert not os.path.exists(listed_at)
"""


def test_disarming_gives_children_the_environment_back() -> None:
    # in a child of its own: this (dogfooding) run's guard is armed, and exported
    env = clean_env(PYTHONPATH="/somewhere")
    done = subprocess.run(
        [sys.executable, "-c", ENVIRONMENT_BACK], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


# -- 2. the runtime directory --------------------------------------------------------------------
def _bad_runtime_dirs(tmp_path: Path, short: Path) -> dict[str, Path]:
    """``short``: a parent short enough that only its name makes an ``UNFIT_NAMES`` one."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    return {
        "a-file": tmp_path / "a-file",
        "under-a-file": tmp_path / "a-file" / "sub",
        "symlink-loop": tmp_path / "loop-a",
        "under-proc": Path("/proc/reynard-db-nowhere"),
        **{name: short / UNFIT_NAMES[name] / "reynard-db" for name in UNFIT_NAMES},
    }


#: Directories no server's socket path can go under (hostile25e): too long (107 bytes at
#: most), a comma (PostgreSQL's ``-k`` and libpq's ``host`` are comma-separated lists: every
#: start failed with the server's log), bytes that are not UTF-8 (no conninfo names them:
#: a traceback from initdb's output). Each is refused before anything is made.
UNFIT_NAMES = {"too-long": "x" * 70, "comma": "a,b", "not-utf8": os.fsdecode(b"\xff")}
#: What the one line says of each.
UNFIT_SAID = {"too-long": "too long (", "comma": "a comma", "not-utf8": "not UTF-8"}


@pytest.mark.parametrize("front", ["check", "pytest"])
@pytest.mark.parametrize(
    "bad", ["a-file", "under-a-file", "symlink-loop", "under-proc", *UNFIT_NAMES]
)
def test_a_runtime_directory_that_cannot_be_made_is_one_line(
    tmp_path: Path, reachable_tmp: Path, bad: str, front: str
) -> None:
    project = reynard_project(tmp_path / "project")
    (project / "test_trivial.py").write_text(TRIVIAL_TEST)
    runtime = _bad_runtime_dirs(tmp_path, reachable_tmp)[bad]
    argv = (
        cli_argv(project, "check", "main", "--only", "upgrade")
        if front == "check"
        else pytest_argv("--reynard-db=main")
    )

    done = subprocess.run(
        argv,
        cwd=project,
        env=clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime)),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
    )

    shown = f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode != 0, shown
    assert "Traceback" not in done.stdout + done.stderr, shown
    assert "REYNARD_DB_RUNTIME_DIR" in done.stdout + done.stderr, shown
    if bad in UNFIT_SAID:
        lines = [
            line for line in (done.stdout + done.stderr).splitlines() if UNFIT_SAID[bad] in line
        ]
        assert lines and "REYNARD_DB_RUNTIME_DIR" in lines[0], shown
        assert "LOG:" not in done.stdout + done.stderr, shown  # no server's log
        assert not runtime.parent.exists()  # refused before anything is made


def test_a_planted_symlink_or_file_is_never_taken_as_the_runtime_directory(
    reachable_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user of a shared /tmp plants ``reynard-db-<uid>``: a symlink to a directory
    of ours (followed, the servers would go where it points) or a file (mkdir fails)."""
    tmp_path = reachable_tmp
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    planted_link, planted_file, clean = (tmp_path / n for n in ("link", "file", "clean"))
    for parent in (planted_link, planted_file, clean):
        parent.mkdir(mode=0o1777)
        parent.chmod(0o1777)
    (planted_link / f"reynard-db-{os.geteuid()}").symlink_to(elsewhere)
    (planted_file / f"reynard-db-{os.geteuid()}").write_text("")
    monkeypatch.delenv("REYNARD_DB_RUNTIME_DIR", raising=False)  # the default places

    root = runtime_root(run_as(), candidates=(planted_link, planted_file, clean))

    assert root == clean / f"reynard-db-{os.geteuid()}"
    assert root.is_dir() and not root.is_symlink()


@pytest.mark.parametrize("unfit", sorted(UNFIT_NAMES))
def test_a_temp_directory_unfit_for_socket_paths_is_passed_over(
    reachable_tmp: Path, monkeypatch: pytest.MonkeyPatch, unfit: str
) -> None:
    """A ``$TMPDIR`` no server's socket path can go under (``UNFIT_NAMES``: every start
    failed there) is passed over for the next place."""
    deep = reachable_tmp / UNFIT_NAMES[unfit]
    deep.mkdir(mode=0o1777)
    deep.chmod(0o1777)
    clean = reachable_tmp / "clean"
    clean.mkdir(mode=0o1777)
    clean.chmod(0o1777)
    monkeypatch.delenv("REYNARD_DB_RUNTIME_DIR", raising=False)  # the default places

    assert runtime_root(run_as(), candidates=(deep, clean)) == clean / f"reynard-db-{os.geteuid()}"
    assert not list(deep.iterdir())
    with pytest.raises(ServerError, match="no directory"):
        runtime_root(run_as(), candidates=(deep,))


# -- 3. asyncpg's own reading of a service file --------------------------------------------------
@pytest.fixture
def armed_beside(decoy: Decoy) -> Iterator[EphemeralServer]:
    """The guard armed with a server of the harness's own; the decoy not allowed."""
    with GUARD.armed_for(opt_in_hint="--allow URL"):
        GUARD.forget_server(decoy.server.url)  # started by this (armed) run's code
        with EphemeralServer.start() as ours:
            yield ours
        GUARD.allow_server(decoy.server.url)  # this run's again, for the tests after


@pytest.mark.parametrize("where", ["query", "keyword"])
def test_asyncpg_is_judged_by_the_service_file_it_reads(
    tmp_path: Path,
    decoy: Decoy,
    armed_beside: EphemeralServer,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """asyncpg reads ``service`` (with a ``dsn``) from the service file before the ``PG*``
    variables: the guard must not judge it by ``$PGHOST``/``$PGPORT`` alone."""
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[prod]\nhost=127.0.0.1\nport={decoy.port}\ndbname=prod\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGHOST", "127.0.0.1")  # ... where the harness's own server is
    monkeypatch.setenv("PGPORT", str(armed_beside.url.port))
    monkeypatch.setenv("PGUSER", decoy.user)
    dsn = "postgresql:///?service=prod" if where == "query" else "postgresql://"
    extra = {"service": "prod"} if where == "keyword" else {}
    import asyncpg

    async def connect() -> None:
        connection = await asyncpg.connect(dsn=dsn, **extra)
        await connection.close()

    before = connections_received(decoy.server)
    with pytest.raises(GuardRefused, match=rf"refused a connection to .*:{decoy.port}/"):
        asyncio.run(connect())
    assert connections_received(decoy.server) == before


# -- 4. signals ----------------------------------------------------------------------------------
#: Seconds after start: within the imports, the argument parsing, the registry's reading.
EARLY = (0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4)


@pytest.mark.parametrize("delay", EARLY)
def test_ctrl_c_while_reynard_migrate_starts_is_one_line(tmp_path: Path, delay: float) -> None:
    project = reynard_project(tmp_path / "project")
    with ctrl_c_as_in_a_terminal():
        child = subprocess.Popen(
            cli_argv(project, "check", "main", "--only", "upgrade"),
            cwd=project,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    time.sleep(delay)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)

    shown = f"exit {child.returncode}\n{out[-2000:]}\n{err[-3000:]}"
    if "Fatal Python error: init_import_site" in err and "pytest_reynard_db/" not in err:
        # Python's own start-up interrupted (its site module), before any of our code (an
        # editable install's finder, __editable___pytest_reynard_db_..., runs in it)
        return
    assert "Traceback" not in out + err, shown
    if child.returncode == 0:  # done before the signal came (a quick machine): nothing to see
        assert "1 check, all passed" in out, shown
    elif child.returncode != -signal.SIGINT:  # (before Python's own handler: no output at all)
        assert child.returncode == 130, shown
        assert err.strip().splitlines()[-1] == "reynard-migrate: interrupted", shown


#: Seconds after start, within a whole ``check`` of the Reynard trees (four databases, each
#: in a check child), where a statement runs in a child most of the time.
WITHIN_THE_CHECKS = (2.5, 3.0, 3.5, 4.0)


def test_ctrl_c_to_a_check_of_every_database_is_one_line(tmp_path: Path) -> None:
    """A terminal's Ctrl-C (SIGINT to the process group) reaches the check children too,
    then their parent's SIGTERM (it ends them): psycopg, cancelling the statement the
    first cut short, logged the second, "query cancellation interrupted (Terminated):
    closing connection", above "reynard-migrate: interrupted" (hostile17's F4: 4 runs of
    10 at these moments). A race: each run here met it at about that rate."""
    project = reynard_project(tmp_path / "project")
    for delay in WITHIN_THE_CHECKS:
        with ctrl_c_as_in_a_terminal():
            child = subprocess.Popen(
                cli_argv(project, "check"),
                cwd=project,
                env=clean_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        time.sleep(delay)
        os.killpg(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=60)

        shown = f"Ctrl-C after {delay} s: exit {child.returncode}\n{out[-2000:]}\n{err[-3000:]}"
        if child.returncode == 0:  # done before the signal came (a quick machine)
            continue
        assert child.returncode == 130, shown
        assert err == "reynard-migrate: interrupted\n", shown


#: ``reynard-migrate`` (``cli.run``) with a ``main`` of a test's own (``MAINS``), run as
#: ``python -m``.
DRIVER = """\
import os, signal, sys, time, weakref
from pytest_reynard_db import cli
from pytest_reynard_db.cli import front

{main}
front.main = main
cli.run()
"""

#: A function's body whose connection pool (SQLAlchemy's) meets ``{signal}`` as it closes a
#: connection: the pool logs it on its way up, through the handler an env.py's
#: ``fileConfig`` puts on the root logger (``basicConfig`` here).
POOL_CLOSE = """\
    import logging
    from sqlalchemy.pool import QueuePool
    logging.basicConfig()
    class Connection:
        def rollback(self):
            pass
        def close(self):
            os.kill(os.getpid(), signal.{signal})
            for _ in range(1000):
                pass
    pool = QueuePool(Connection)
    pool.connect().close()
    pool.dispose()
    print("done")
"""


#: Mains that meet a Ctrl-C (a SIGINT sent to themselves) where it is hard to handle, and
#: what the command must then say on stdout and stderr.
MAINS = {
    # its handler runs inside a weakref callback (importlib's module locks have one; seen
    # under load at ``EARLY``'s 1.0 s): "Exception ignored in ..." and lost, before
    "in a callback": (
        """\
def main():
    class Lock:
        pass
    def callback(_):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
    lock = Lock()
    ref = weakref.ref(lock, callback)
    del lock
    time.sleep(0.5)
    print("done")
    return 0
""",
        "",
        "reynard-migrate: interrupted\n",
    ),
    # in code that ``exec`` runs from a string (dataclasses' and namedtuple's, at import):
    # CPython then ended ``python -m`` by SIGINT (exit -2), over the exit code 130
    "in exec": (
        """\
def main():
    exec("os.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(1000): pass")
    print("done")
    return 0
""",
        "",
        "reynard-migrate: interrupted\n",
    ),
    # a second Ctrl-C during the clean-up the first one began (closing connections,
    # dropping throw-away databases): it cut the clean-up short, with its traceback
    "twice": (
        """\
def main():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    finally:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100000):
            pass
        print("cleaned up", file=sys.stderr)
""",
        "",
        "cleaned up\nreynard-migrate: interrupted\n",
    ),
    # in a library that logs the interrupt on its way up: SQLAlchemy's pool, closing a
    # connection (``psycopg``'s ``pgconn.finish``; seen under load at ``EARLY``'s 0.7 s),
    # logged "Exception closing connection ..." with its traceback, through the handler an
    # env.py's ``fileConfig`` puts on the root logger
    "in a library that logs it": (
        "def main():\n" + POOL_CLOSE.format(signal="SIGINT") + "    return 0\n",
        "",
        "reynard-migrate: interrupted\n",
    ),
}


@pytest.mark.parametrize("where", list(MAINS))
def test_a_ctrl_c_where_it_is_hard_to_handle_is_one_line(tmp_path: Path, where: str) -> None:
    """A Ctrl-C the command meets in a callback, in ``exec``'d code, twice, or in a library
    that logs it, is its one line and exit code 130: not "Exception ignored in ...", a lost
    interrupt, a death by SIGINT, a clean-up cut short, or a logged traceback."""
    code, out, err = MAINS[where]
    (tmp_path / "driver.py").write_text(DRIVER.format(main=code))
    with ctrl_c_as_in_a_terminal():
        said = exit_and_output([sys.executable, "-m", "driver"], tmp_path, clean_env())
    assert said == (130, out, err)


#: ``reynard-migrate --project PROJECT history main`` whose verb meets SIGTERM in a library
#: that logs it on its way up (SQLAlchemy's pool, closing a connection).
TERMINATED_IN_A_POOL = (
    "import os, signal, sys\n"
    "from pytest_reynard_db import cli\n"
    "from pytest_reynard_db.cli import front\n"
    "def history(args, registry, out):\n" + POOL_CLOSE.format(signal="SIGTERM") + "    return 0\n"
    "front.cmd_history = history\n"
    'sys.argv = ["reynard-migrate", "--project", sys.argv[1], "history", "main"]\n'
    "cli.run()\n"
)


def test_a_sigterm_in_a_library_that_logs_it_is_one_line(tmp_path: Path) -> None:
    """SIGTERM where a library logs the interrupt on its way up (the Ctrl-C case of
    ``MAINS``, through ``front.main``'s own handler): its one line and exit 143, not
    "Exception closing connection" and a traceback."""
    project = reynard_project(tmp_path / "project")
    argv = [sys.executable, "-c", TERMINATED_IN_A_POOL, str(project)]
    said = exit_and_output(argv, tmp_path, clean_env())
    assert said == (143, "", "reynard-migrate: terminated by SIGTERM\n")


def exit_and_output(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """``argv`` run to its end: its exit code, stdout and stderr."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


#: A ``sitecustomize`` that makes the import of the command's own module raise as a
#: Ctrl-C arriving then would (the hostile tester's: tracebacks at 0.05 s under load).
CTRL_C_AT_IMPORT = """\
import importlib.abc, sys

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pytest_reynard_db.cli":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
"""


@pytest.mark.parametrize("entry", ["python -m", "reynard-migrate"])
def test_a_ctrl_c_while_the_command_itself_imports_is_one_line(tmp_path: Path, entry: str) -> None:
    """A Ctrl-C while ``reynard-migrate`` (or ``python -m pytest_reynard_db``) imports its
    own command module, before that module can take it, is the same one line and exit
    130, not a traceback through our modules."""
    (tmp_path / "sitecustomize.py").write_text(CTRL_C_AT_IMPORT)
    argv = (
        [sys.executable, "-m", "pytest_reynard_db", "list"]
        if entry == "python -m"
        else [str(Path(sys.executable).parent / "reynard-migrate"), "list"]
    )
    said = exit_and_output(argv, tmp_path, clean_env(PYTHONPATH=str(tmp_path)))
    assert said == (130, "", "reynard-migrate: interrupted\n")


#: A ``sitecustomize`` under which a Ctrl-C arrives while ``logging`` is half imported
#: (in ``sys.modules``, ``logging.disable`` not defined yet), once the command's module
#: is in: the command's handler silenced logging and met an ``AttributeError`` (the
#: hostile tester's round of session 18: exit 1, 1 run of 10 at 0.1 s).
CTRL_C_MID_LOGGING = """\
import importlib.abc, os, pathlib, signal, sys, types

class CtrlCMidLogging(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "logging" and "pytest_reynard_db.cli" in sys.modules:
            sys.meta_path.remove(self)
            sys.modules["logging"] = types.ModuleType("logging")
            pathlib.Path({fired!r}).write_text("fired")
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        return None

sys.meta_path.insert(0, CtrlCMidLogging())
"""


def test_a_ctrl_c_while_logging_is_half_imported_is_one_line(tmp_path: Path) -> None:
    fired = tmp_path / "fired"
    (tmp_path / "sitecustomize.py").write_text(CTRL_C_MID_LOGGING.format(fired=str(fired)))
    argv = [sys.executable, "-m", "pytest_reynard_db", "list"]
    with ctrl_c_as_in_a_terminal():  # a suite run in a shell's background ignores SIGINT
        said = exit_and_output(argv, tmp_path, clean_env(PYTHONPATH=str(tmp_path)))
    assert fired.exists(), said  # the Ctrl-C came while logging was half imported
    assert said == (130, "", "reynard-migrate: interrupted\n")


USER_SITECUSTOMIZE = """\
import json, os, subprocess, sys
from pytest_reynard_db.guard import GUARD

with GUARD.armed_for(opt_in_hint="x"):
    code = "import os, sys; print(os.environ.get('USER_SITE_RAN'), sys.path)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
print(done.stdout, done.stderr)
"""


def test_a_users_own_sitecustomize_still_runs_in_a_guarded_child(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("import os\nos.environ['USER_SITE_RAN'] = '1'\n")
    done = subprocess.run(
        [sys.executable, "-c", USER_SITECUSTOMIZE],
        env=clean_env(PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1 "), done.stdout
    assert "startup" not in done.stdout, done.stdout  # our folder is not left on sys.path


MANY_DATABASES = """\
import subprocess, sys
from pytest_reynard_db.guard import GUARD

with GUARD.armed_for(opt_in_hint="x"):
    for n in range(5000):  # a long run's fresh databases on an existing server
        GUARD.allow_database("postgresql://app@db.example:5432/postgres", f"test_run_{n:06d}")
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


def test_a_run_that_allowed_thousands_of_databases_still_starts_children() -> None:
    """The allow-list is not in the environment itself: one variable over 128 KiB makes
    every exec fail (E2BIG), the harness's own servers' included."""
    done = subprocess.run(
        [sys.executable, "-c", MANY_DATABASES],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


#: Armed until it exits, as a child interpreter that adopted its parent's guard is.
ARMED_TO_THE_END = """\
import os, sys, time
from pytest_reynard_db.guard import GUARD

GUARD.arm(opt_in_hint="x")
print(os.environ["REYNARD_DB_GUARD"], flush=True)
if sys.argv[1:] == ["wait"]:
    time.sleep(120)
"""


def test_the_allow_list_file_goes_at_exit_or_with_the_next_run_after_kill_9() -> None:
    victim = subprocess.Popen(
        [sys.executable, "-c", ARMED_TO_THE_END, "wait"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert victim.stdout is not None
    left = Path(victim.stdout.readline().strip())
    victim.kill()
    victim.wait(timeout=30)
    assert left.is_file(), left

    done = subprocess.run(
        [sys.executable, "-c", ARMED_TO_THE_END], env=clean_env(), capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    assert not left.exists(), left  # swept: its process is gone
    assert not Path(done.stdout.strip()).exists(), done.stdout  # removed at its exit


#: A clean-up left to the collector as the process ends (a generator's ``finally``, as a
#: ``contextmanager``'s is when its frame is abandoned), whose own step fails.
ABANDONED_CLEAN_UP = """\
import sys
from pytest_reynard_db.foundation.errors import silence_logging

def scratch():
    try:
        yield
    finally:
        raise RuntimeError("refusing to drop database: the server is gone")

held = scratch()
next(held)
if sys.argv[1:] == ["interrupted"]:
    silence_logging()
del held
"""


@pytest.mark.parametrize("ending", ["interrupted", "normal"])
def test_a_command_ending_on_an_interrupt_reports_no_abandoned_clean_up(ending: str) -> None:
    """CI's run of 657f198: Ctrl-C to ``check`` of every database printed "Exception ignored
    in: <generator object CheckRunner.scratch_database>" and a ServerError (a child's
    throw-away database dropped by the collector, on a server its parent was stopping)
    above "reynard-migrate: interrupted". ``silence_logging``, which every command calls on
    its first interrupt, now silences Python's unraisable reports as well; a command that
    was not interrupted still shows them."""
    done = subprocess.run(
        [sys.executable, "-c", ABANDONED_CLEAN_UP, ending],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if ending == "interrupted":
        assert done.stderr == "", done.stderr
    else:
        assert "Exception ignored in" in done.stderr and "RuntimeError" in done.stderr
