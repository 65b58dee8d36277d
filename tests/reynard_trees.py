"""Helpers the tests share: copies of the Reynard trees (to break on purpose), the
registry table, and a role that must give a password."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import psycopg

from pytest_reynard_db.guard import inherit
from pytest_reynard_db.postgres import EphemeralServer

REPO = Path(__file__).resolve().parents[1]


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
    # The postmaster rereads pg_hba.conf when the signal arrives, later on a busy machine:
    # wait until the role is really asked for its password.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            psycopg.connect(
                host="127.0.0.1", port=server.url.port, user=role, dbname="postgres"
            ).close()
        except psycopg.OperationalError:
            return  # no password given: refused, so the new rule is in force
        time.sleep(0.05)
    raise AssertionError(f"pg_hba.conf was not reloaded: {role} still connects without one")


class Cli(Protocol):
    """The ``cli`` fixture: ``run_cli`` on the test's ``project``."""

    def __call__(self, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]: ...


def run_cli(project: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``reynard-migrate --project PROJECT ARGV...`` in a child process, as a user runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest_reynard_db", "--project", str(project), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=project,
        env=env,
    )
    return result.returncode, result.stdout, result.stderr


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
) -> Path:
    """A revision file ``<revision>_<slug>.py`` in ``folder``; bodies are indented for you.
    ``header``: module-level code after the imports (more imports, a ``MetaData``)."""
    path = folder / f"{revision}_{slug}.py"
    lines = [
        f'"""a revision written by the test (Revision ID: {revision})"""',
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


def run_pytest(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``pytest ARGS`` in ``project``, in a user's shell with ``env`` exported."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def connections_received(server: EphemeralServer) -> int:
    """Connections a server started with ``log_connections=on`` ever received (its log)."""
    assert server.process.base_dir is not None
    log = (server.process.base_dir / "_TunedPostgresql.log").read_text(errors="replace")
    return log.count("connection received: ")


def log_connections(server: EphemeralServer) -> Callable[[], list[str]]:
    """Turn ``log_connections`` on in a running server (a kept one: no restart); the
    ``connection authorized`` lines its log gets from now on, each time it is called."""
    with server.connect() as conn:
        conn.execute("ALTER SYSTEM SET log_connections = on")
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while True:  # the postmaster reads its configuration again on its own time
        with server.connect() as conn:
            if conn.execute("SHOW log_connections").fetchone() == ("on",):
                break
        assert time.monotonic() < deadline, "log_connections was not turned on"
        time.sleep(0.05)
    assert server.process.base_dir is not None
    log = server.process.base_dir / "_TunedPostgresql.log"
    start = log.stat().st_size

    def authorized() -> list[str]:
        text = log.read_bytes()[start:].decode(errors="replace")
        return [line for line in text.splitlines() if "connection authorized" in line]

    return authorized
