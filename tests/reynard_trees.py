"""Helpers the tests share: copies of the Reynard trees (to break on purpose), the
registry table, a role that must give a password, child processes' command lines, and
waits that poll for their event with a deadline."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from cli_fork import Process, run_pytest_argv
from sqlalchemy.engine import URL

from pytest_reynard_db.checks import CheckResult, run_check
from pytest_reynard_db.checks.runner import CheckRunner
from pytest_reynard_db.foundation.registry import load_registry
from pytest_reynard_db.guard import inherit
from pytest_reynard_db.migration.manager import MigrationManager
from pytest_reynard_db.postgres import EphemeralServer
from pytest_reynard_db.postgres.runas import default_parents

REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")
_markers = itertools.count()


def wait_until(
    predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05
) -> T:
    """Poll ``predicate`` until it returns a true value, and return that value; fail
    naming ``what`` (the event waited for) once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}: it did not happen")
        time.sleep(interval)
    return value


def wait_for(path: Path, proc: subprocess.Popen[Any], timeout: float = 120) -> str:
    """Wait until ``proc`` writes ``path`` and return its text; fail at once if ``proc``
    ends first (with its output, where piped), and kill it if the deadline passes.

    It returns once ``path`` exists: a writer whose text is read writes it beside and
    renames it (``os.replace``), or the text may be read half written."""

    def written() -> bool:
        if not path.exists() and proc.poll() is not None:
            out, err = proc.communicate()
            said = "\n".join(str(text) for text in (out, err) if text)
            pytest.fail(f"the process ended before {path.name} appeared:\n{said}")
        return path.exists()

    try:
        wait_until(written, timeout, f"{path.name} to appear")
    except pytest.fail.Exception:
        if proc.poll() is None:
            proc.kill()
        raise
    return path.read_text()


def server_tmp(prefix: str) -> Path:
    """A new directory (``tempfile.mkdtemp``) where a test's servers and runtime directory
    go: where the harness puts its own by default (``runas.default_parents``: tmpfs first,
    then ``/tmp``), beside a user's project on disk; outside pytest's private (0700)
    temp directory, so the server's user (postgres, when root runs the suite) reaches it."""
    for parent in default_parents():
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    raise RuntimeError(f"none of {default_parents()} is writable")


def copy_reynard_trees(dest: Path, *, pyproject: bool = True) -> Path:
    """Copy the trees, inis and models (and pyproject.toml) into ``dest``; return it."""
    for name in ("alembic", "reynard_models"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for ini in REPO.glob("alembic_*.ini"):
        shutil.copy(ini, dest / ini.name)
    if pyproject:
        shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def reynard_project(root: Path) -> Path:
    """A user's project at ``root``: the Reynard trees, models and registry, and pytest set
    up to import the models (``[tool.pytest.ini_options] pythonpath``)."""
    copy_reynard_trees(root, pyproject=False)
    (root / "pyproject.toml").write_text(
        registry_table() + '\n[tool.pytest.ini_options]\npythonpath = ["."]\n'
    )
    return root


def registry_table() -> str:
    """The ``[tool.reynard-db]`` tables of this repository's pyproject.toml."""
    body = (REPO / "pyproject.toml").read_text()
    start = body.index("[tool.reynard-db.databases.ecs]")
    end = body.index("[tool.pytest.ini_options]")
    return body[start:end]


def require_password(server: EphemeralServer, role: str, password: str) -> None:
    """Create ``role`` with ``password`` and make the server ask it for that password."""
    assert server.process.base_dir is not None
    hba = server.process.base_dir / "data" / "pg_hba.conf"
    stat = hba.stat()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    os.chown(hba, stat.st_uid, stat.st_gid)
    with server.connect() as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute("SELECT pg_reload_conf()")

    def refused_without_password() -> bool:
        try:
            psycopg.connect(
                host="127.0.0.1", port=server.url.port, user=role, dbname="postgres"
            ).close()
        except psycopg.OperationalError:
            return True  # no password given: refused, so the new rule is in force
        return False

    # The postmaster rereads pg_hba.conf when the signal arrives, later on a busy machine:
    # wait until the role is really asked for its password.
    wait_until(refused_without_password, 60, f"pg_hba.conf's reload ({role} asked for a password)")


def pytest_argv(*args: str) -> list[str]:
    """The command line of ``pytest ARGS`` in a child process (no cache written)."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def admin_url(server: EphemeralServer) -> str:
    """``--url`` for the checks' throw-away databases on ``server`` (the session's
    ``pg_server``: a check that is not about its server starts none of its own)."""
    return str(server.url.render_as_string(hide_password=False))


def break_main(project: Path) -> None:
    """A revision on ``main``'s head whose upgrade fails (``broken_on_purpose()`` does
    not exist): the template build, pytest-alembic's upgrade and the checks fail on it."""
    write_revision(
        project / "alembic/main/versions",
        "3a1400000005",
        "3a1400000004",
        'op.execute("SELECT broken_on_purpose()")',
        slug="broken",
    )


def alembic_init_project(root: Path, url: str, revision: str = "0a0000000001") -> Path:
    """``alembic init -t generic`` in ``root`` (made), the ini's URL ``url``, one revision
    (a table ``t``) and a registry entry ``app``: a project as a new user's is."""
    root.mkdir()
    ini = root / "alembic.ini"
    command.init(Config(str(ini)), str(root / "migrations"), template="generic")
    placeholder = "driver://user:pass@localhost/dbname"
    ini.write_text(ini.read_text().replace(placeholder, url.replace("%", "%%")))
    write_revision(
        root / "migrations" / "versions",
        revision,
        None,
        "op.create_table('t', sa.Column('id', sa.Integer, primary_key=True))",
        "op.drop_table('t')",
    )
    (root / "pyproject.toml").write_text(
        '[tool.reynard-db.databases.app]\nini = "alembic.ini"\ndatabase = "app"\n'
        'url_env = "APP_DATABASE_URL"\n'
    )
    return root


def write_revision(
    folder: Path,
    revision: str,
    down: str | tuple[str, ...] | None,
    upgrade: str = "pass",
    downgrade: str = "pass",
    *,
    labels: str | None = None,
    depends_on: str | None = None,
    slug: str = "test",
    header: str = "",
    message: str | None = None,
) -> Path:
    """A revision file ``<revision>_<slug>.py`` in ``folder`` (made if missing); bodies are
    indented for you. ``header``: module-level code after the imports (more imports, a
    ``MetaData``); ``message``: its docstring, which Alembic shows as its message."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{revision}_{slug}.py"
    lines = [
        f'"""{message or f"a revision written by the test (Revision ID: {revision})"}"""',
        "import sqlalchemy as sa",
        "from alembic import op",
        *([header] if header else []),
        f"revision = {revision!r}",
        f"down_revision = {down!r}",
        f"branch_labels = {labels!r}",
        f"depends_on = {depends_on!r}",
        "def upgrade() -> None:",
        textwrap.indent(upgrade, "    "),
        "def downgrade() -> None:",
        textwrap.indent(downgrade, "    "),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def ctrl_c_as_in_a_terminal() -> Iterator[None]:
    """Children started in the block get SIGINT's default action, as a terminal's job has.

    A suite started in the background of a non-interactive shell (``pytest ... &``,
    ``nohup``, some CI runners) has SIGINT ignored, and a child inherits that: its Python
    then never raises ``KeyboardInterrupt``, and a test of what Ctrl-C does waits for
    nothing. A signal handled here is reset to the default in the child by ``exec``.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: The suite installs pytest-asyncio (for the async fixtures' tests), which warns on stderr
#: at the start of every run of a project that does not set this: the users' projects of
#: the tests set it as a project that installs pytest-asyncio would.
QUIET_ASYNCIO = "-o asyncio_default_fixture_loop_scope=function"


#: A ``-p`` plugin with a thread: a process with threads forks no agent (``fork_agent``),
#: and does its server's work itself (as xdist's controller does, or another platform).
HAS_A_THREAD = """\
import threading, time

threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: none of the outer run's pytest or URL variables,
    and this interpreter's scripts (``reynard-migrate``, ``alembic``) first on PATH, as in a
    shell where its virtualenv is active (the suite may run as ``venv/bin/python -m pytest``)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "REYNARD_DB_URL", inherit.GUARD_VARIABLE))
        and not k.endswith("DATABASE_URL")
    }
    # nor the guard this (dogfooding, armed) run hands its own children
    paths = [p for p in env.pop("PYTHONPATH", "").split(os.pathsep) if p and p != inherit.STARTUP]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTEST_ADDOPTS"] = QUIET_ASYNCIO
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        [scripts, *(p for p in env.get("PATH", "").split(os.pathsep) if p and p != scripts)]
    )
    env.update(extra)
    return env


def run_pytest(
    project: Path, *args: str, umask: int = -1, process: Process = "fork", **env: str
) -> subprocess.CompletedProcess[str]:
    """``pytest ARGS`` in ``project``, in a user's shell with ``env`` exported (and its
    ``umask``, if given): forked by default (``cli_fork.run_pytest_argv``)."""
    argv = pytest_argv(*args)
    return run_pytest_argv(argv, project, clean_env(**env), umask=umask, process=process)


#: A child script: holds the file lock ``argv[1]`` (the harness's own ``file_lock``, its
#: holder recorded, described as ``argv[4]``) until ``argv[3]`` exists, having written
#: ``argv[2]`` once it holds it.
HOLD_FILE_LOCK = """\
import pathlib, sys, time
from pytest_reynard_db.foundation.filesystem import file_lock
lock, marker, release, what = sys.argv[1:5]
with file_lock(lock, what):
    pathlib.Path(marker).write_text("holding")
    deadline = time.monotonic() + 120
    while not pathlib.Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def hold_file_lock(
    lock: Path | str, marker: Path, release: Path, what: str
) -> subprocess.Popen[str]:
    """A child holding the file lock ``lock`` (``HOLD_FILE_LOCK``, described as ``what``)
    until ``release`` exists; returned once it holds it (``marker`` written)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE_LOCK, *map(str, (lock, marker, release)), what],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(marker, holder)
    return holder


def scalar(url: str, sql: str) -> object:
    """The first column of ``sql``'s first row (None if no row) at ``url`` (a SQLAlchemy
    URL with ``+psycopg``, or libpq's)."""
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


def databases(server: EphemeralServer, like: str = "%") -> set[str]:
    """The names of ``server``'s databases that match the LIKE pattern ``like``."""
    with server.connect() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [like])
        return {row[0] for row in rows}


def scratch_databases(server: EphemeralServer) -> list[str]:
    """The checks' throw-away databases (``test_check_*``) on ``server``, left or in use."""
    return sorted(databases(server, "test_check_%"))


def log_of(server: EphemeralServer) -> Path:
    """The file an ephemeral server's logging collector writes."""
    assert server.process.base_dir is not None
    return server.process.base_dir / "_TunedPostgresql.log"


def logged_since(server: EphemeralServer, offset: int) -> str:
    """What ``server`` (one logging every statement) logged from ``offset`` on, up to a
    marker statement sent now. A backend logs a statement before it answers, and every
    line goes through the collector's one pipe in order: once the marker is in the file,
    so is each statement a client has had its answer to."""
    marker = f"reynard-tests: logged up to here {os.getpid()}-{next(_markers)}"
    with server.connect() as conn:
        conn.execute(f"SELECT '{marker}'")

    def read() -> str:
        with log_of(server).open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return text if marker in text else ""

    text = wait_until(read, 30, f"the marker statement in {log_of(server)}")
    return text[: text.rfind("\n", 0, text.index(marker)) + 1]


def connections_received(server: EphemeralServer) -> int:
    """Connections a server started with ``log_connections=on`` ever received (its log)."""
    return log_of(server).read_text(errors="replace").count("connection received: ")


def log_connections(server: EphemeralServer) -> Callable[[], list[str]]:
    """Turn ``log_connections`` on in a running server (a kept one: no restart); the
    ``connection authorized`` lines its log gets from now on, each time it is called."""
    with server.connect() as conn:
        conn.execute("ALTER SYSTEM SET log_connections = on")
        conn.execute("SELECT pg_reload_conf()")

    def turned_on() -> bool:
        with server.connect() as conn:
            return conn.execute("SHOW log_connections").fetchone() == ("on",)

    # the postmaster reads its configuration again on its own time
    wait_until(turned_on, 10, "log_connections to be turned on")
    log = log_of(server)
    start = log.stat().st_size

    def authorized() -> list[str]:
        text = log.read_bytes()[start:].decode(errors="replace")
        return [line for line in text.splitlines() if "connection authorized" in line]

    return authorized


class CountingManager(MigrationManager):
    """A real manager that counts its ``env.py`` runs on the runner that made it."""

    counter: CountingRunner

    def _run_env(self, *args: Any, **kwargs: Any) -> None:
        self.counter.runs += 1
        super()._run_env(*args, **kwargs)


class CountingRunner(CheckRunner):
    """A real runner that counts what a check costs: the throw-away databases it makes
    (``made``) and its managers' ``env.py`` runs (``runs``)."""

    made = 0
    runs = 0

    @contextmanager
    def scratch_database(self, purpose: str) -> Iterator[MigrationManager]:
        self.made += 1
        with super().scratch_database(purpose) as manager:
            yield manager

    def manager(self, url: URL, *, stdout: TextIO | None = None) -> MigrationManager:
        manager = super().manager(url, stdout=stdout)
        manager.__class__ = CountingManager  # the same object, its env.py runs counted
        assert isinstance(manager, CountingManager)
        manager.counter = self
        return manager


def stairway_of(
    project: Path,
    server: EphemeralServer,
    db: str = "main",
    count: Literal["runs", "made"] = "runs",
) -> tuple[list[CheckResult], int]:
    """The stairway's results on ``db``, and what it cost: its ``env.py`` runs, or with
    ``count="made"`` the throw-away databases it made."""
    registry = load_registry(project)
    runner = CountingRunner(registry.get(db), registry, server)
    results = run_check(runner, "stairway")
    return results, runner.runs if count == "runs" else runner.made
