"""Attacks on how a run starts and stops its server (issues 25 and 27): the data
directory copied from the initdb cache, the runtime directory under a user's umask,
and a wait for the reuse server's lock inside a pytest run.

Real pytest runs in child processes (the user's shell: its umask, its environment),
real servers, real file locks held by another process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from cli_fork import run_cli
from reynard_trees import (
    clean_env,
    hold_file_lock,
    pytest_argv,
    reynard_project,
    run_pytest,
    server_tmp,
    wait_for,
    wait_until,
    write_revision,
)
from test_early_initdb import launches_logged

from pytest_reynard_db.foundation.filesystem import SAY_AFTER, file_lock
from pytest_reynard_db.postgres import EphemeralPostgres, EphemeralServer
from pytest_reynard_db.postgres.executor import reuse_dir

#: A test that lists every file of its server's data directory that its owner does not
#: keep to itself (any group or other permission bit).
SHARED_DATA_FILES = """\
import os, stat


def test_data_files(reynard_db_server):
    data = reynard_db_server.process.base_dir / "data"
    shared = []
    for folder, _, files in os.walk(data):
        for name in files:
            mode = stat.S_IMODE(os.lstat(os.path.join(folder, name)).st_mode)
            if mode & 0o077:
                shared.append(f"{name}:{mode:o}")
    assert not shared, f"{len(shared)} shared: {shared[:5]}"
"""

#: A test that says it is about to ask for its database (a marker file), then asks.
ASKS_AFTER_A_MARKER = """\
import os, pathlib


def test_one(request):
    pathlib.Path(os.environ["ASKING"]).write_text("asking")
    assert request.getfixturevalue("reynard_db").head
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: the Reynard registry, no database selected in its ini."""
    return reynard_project(tmp_path / "project")


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_a_test_databases_files_are_its_owners_alone_whatever_the_umask(
    project: Path, umask: int
) -> None:
    """Attack on 4a20829 (the data directory copied with ``shutil.copyfile``): initdb
    makes each data file 0600, and ``copy2`` kept that; ``copyfile`` creates each copy
    with the user's umask, so a shell's usual umask 022 made every data file 0644 (every
    user's to read, were the directory opened) and umask 000 made them 0666 (writable);
    each copy is now created 0600 (``tuned._copy_private``)."""
    (project / "test_data_files.py").write_text(SHARED_DATA_FILES)

    done = run_pytest(project, "--reynard-db=ecs", "test_data_files.py", umask=umask)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr


#: A test that records the runtime directory's lock files and their modes as it runs.
LOCK_MODES_WHILE_RUNNING = """\
import json, os, pathlib

def test_one(reynard_db):
    assert reynard_db.head
    runtime = pathlib.Path(os.environ["REYNARD_DB_RUNTIME_DIR"])
    modes = {
        str(p.relative_to(runtime)): oct(p.stat().st_mode & 0o777)
        for p in [*runtime.rglob("*.lock"), *runtime.rglob("*.holder")]
        if not p.name.startswith(".s.PGSQL.")
    }
    pathlib.Path("modes.json").write_text(json.dumps(modes))
"""


def test_the_runtime_directorys_lock_files_are_ours_alone_whatever_the_umask(
    project: Path, runtime: Path
) -> None:
    """The lock files (ports, the initdb cache, the reuse server) were 0644 and their
    holders' records 0666 under umask 000: another local user who knows a path (the
    runtime directory is 0711: reachable) could open a lock, read-only will do, and hold
    its flock, and every run would wait on it. Each is now created 0600 (a port's lock
    lives as long as its server's start: the test records the modes while it runs)."""
    (project / "test_one.py").write_text(LOCK_MODES_WHILE_RUNNING)

    done = run_pytest(
        project,
        "--reynard-db=ecs",
        "--reynard-db-reuse",
        "test_one.py",
        umask=0o000,
        REYNARD_DB_RUNTIME_DIR=str(runtime),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    made = [*runtime.rglob("*.lock"), *runtime.rglob("*.holder")]
    ours = [p for p in made if not p.name.startswith(".s.PGSQL.")]  # the server's own
    modes = {str(p.relative_to(runtime)): oct(p.stat().st_mode & 0o777) for p in ours}
    modes |= json.loads((project / "modes.json").read_text())
    assert any(path.startswith("ports/") for path in modes), modes
    assert set(modes.values()) == {"0o600"}, modes
    # a holder's record lives while its lock is held
    umask = os.umask(0)
    try:
        with file_lock(runtime / "held.lock", "the test's lock"):
            holder = runtime / "held.lock.holder"
            assert oct(holder.stat().st_mode & 0o777) == "0o600"
    finally:
        os.umask(umask)


def test_a_runtime_directory_made_under_umask_077_is_reachable_by_the_servers_user(
    project: Path,
) -> None:
    """A careful user's shell (umask 077) and a runtime directory not made yet (a CI
    cache's first job): the harness makes the directory, and its own server's user
    (postgres, when root runs the tests) must be able to reach it. It was made 0711
    minus the umask, 0700: the run failed, blaming "a private (0700) home"."""
    if os.geteuid() != 0:
        pytest.skip("the server runs as another user only when root runs the tests")
    # Outside pytest's private (0700) temp directory, reachable by the server's user:
    # what is tested is the directories the harness makes below.
    parent = server_tmp("reynard-umask-")
    parent.chmod(0o711)
    (project / "test_one.py").write_text("def test_one(reynard_db):\n    assert reynard_db.head\n")

    try:
        done = run_pytest(
            project,
            "--reynard-db=ecs",
            "test_one.py",
            umask=0o077,
            REYNARD_DB_RUNTIME_DIR=str(parent / "cache" / "reynard-db"),
        )
    finally:
        shutil.rmtree(parent, ignore_errors=True)  # the run stopped its own server

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout
    assert "cannot reach" not in done.stdout + done.stderr


#: The default runtime directory, made in the directory ``argv[1]`` (as in ``/dev/shm``):
#: its mode, and whether the server's user reaches it.
DEFAULT_ROOT = """\
import sys
from pathlib import Path
from pytest_reynard_db.postgres.runas import run_as, runtime_root
user = run_as()
root = runtime_root(user, candidates=(Path(sys.argv[1]),))
print(oct(root.stat().st_mode & 0o777), user.can_traverse(root))
"""


def test_the_default_runtime_directory_made_under_umask_077_is_reachable(tmp_path: Path) -> None:
    """``reynard-db-<uid>`` in ``/dev/shm`` (or the temp directory), made by a shell with
    umask 077: 0711 as asked, not 0700 (which the server's user, when root runs the
    tests, could not reach)."""
    parent = server_tmp("reynard-umask-")
    parent.chmod(0o711)  # as /dev/shm: the server's user goes through
    try:
        done = subprocess.run(
            [sys.executable, "-c", DEFAULT_ROOT, str(parent)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
            umask=0o077,
        )
    finally:
        shutil.rmtree(parent, ignore_errors=True)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0o711", "True"], done.stdout + done.stderr
    assert done.stderr == ""


@pytest.mark.usefixtures("stop_reused_server")
def test_a_pytest_run_waiting_for_the_reuse_servers_lock_says_so(
    project: Path, tmp_path: Path
) -> None:
    """Another process holds the reuse server's lock (a ``reynard-migrate server stop``,
    another run attaching): the run waits, and after ``SAY_AFTER`` s says for what and
    who holds it, as the module promises ("waiting for a lock is never silent"). The
    wait happens in a fixture's set-up: said to stderr there, pytest captured it (the run
    stood still in silence); it is said past the capture (``hooks._say_waits_past_capture``)."""
    (project / "test_one.py").write_text(ASKS_AFTER_A_MARKER)
    lock = Path(f"{reuse_dir(EphemeralPostgres(persistent=True))}.lock")
    lock.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    marker, release, asking = tmp_path / "holding", tmp_path / "release", tmp_path / "asking"
    holder = hold_file_lock(lock, marker, release, "a lock held on purpose")
    try:
        err_file = tmp_path / "stderr.txt"
        with err_file.open("w") as err_out:  # a file, read while the run waits
            run = subprocess.Popen(
                pytest_argv("--reynard-db=ecs", "--reynard-db-reuse", "test_one.py"),
                cwd=project,
                env=clean_env(ASKING=str(asking)),
                stdout=subprocess.PIPE,
                stderr=err_out,
                text=True,
            )
        try:
            wait_for(asking, run)  # its test asks for the server (the lock) now
            said_waiting(err_file, run)
        finally:
            release.write_text("go")
            out, _ = run.communicate(timeout=300)
            err = err_file.read_text()
    finally:
        release.write_text("go")
        holder.communicate(timeout=60)

    assert run.returncode == 0, out + err
    assert "1 passed" in out, out
    assert f"reynard-db: waiting for the reuse server {lock.with_suffix('')}" in err, err
    assert f"held by pid {holder.pid}" in err, err


def said_waiting(err_file: Path, run: subprocess.Popen[str]) -> None:
    """Until ``run`` says on stderr (``err_file``) that it waits for a lock: after
    ``SAY_AFTER`` s of waiting, or never (the deadline), or it ended."""
    wait_until(
        lambda: "reynard-db: waiting for" in err_file.read_text() or run.poll() is not None,
        SAY_AFTER + 60,
        "the run to say it waits",
    )


def test_check_of_a_multidb_alembic_init_project_does_not_say_all_passed(
    tmp_path: Path, runtime: Path
) -> None:
    """``alembic init -t multidb`` (one env.py, several databases) is refused, one line,
    exit 2, as the README says; stdout, which a CI job may read alone, must not claim
    that everything passed; and no server starts for a registry whose every entry is
    broken (one was started, for nothing)."""
    root = tmp_path / "app"
    root.mkdir()
    command.init(Config(str(root / "alembic.ini")), str(root / "migrations"), template="multidb")
    (root / "pyproject.toml").write_text(
        '[tool.reynard-db.databases.app]\nini = "alembic.ini"\ndatabase = "app"\n'
    )
    launches = launches_logged(runtime.parent / "bin")
    env = clean_env(REYNARD_DB_RUNTIME_DIR=str(runtime), REYNARD_DB_PG_BIN=str(launches.parent))

    code, out, err = run_cli(root, "check", env=env)

    assert code == 2, out + err
    assert err.count("\n") == 1 and "(Alembic's multidb template) is not supported" in err, err
    assert "all passed" not in out and "0 checks run" in out, out
    assert launches.read_text() == ""


#: A revision that says it is being applied (a marker file), then waits for a release file.
SLOW_UPGRADE = """\
import os, pathlib, time
pathlib.Path(os.environ["SLOW_MARKER"]).write_text("migrating")
deadline = time.monotonic() + 120
while not pathlib.Path(os.environ["SLOW_RELEASE"]).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def test_a_run_waiting_for_another_runs_template_build_says_so(tmp_path: Path) -> None:
    """Two runs on one shared server (two CI jobs, two terminals) build the same template:
    the second waits for the first, and after ``SAY_AFTER`` s says so and for whom (it
    was silent, as the reuse server's lock above, for the same reason)."""
    project = reynard_project(tmp_path / "project")
    write_revision(project / "alembic/main/versions", "3a1400000005", "3a1400000004", SLOW_UPGRADE)
    (project / "test_one.py").write_text(ASKS_AFTER_A_MARKER)
    migrating, release, asking = tmp_path / "migrating", tmp_path / "release", tmp_path / "asking"
    with EphemeralServer.start() as server:
        url = server.url.render_as_string(hide_password=False)
        argv = pytest_argv("--reynard-db=main", f"--reynard-db-url={url}", "test_one.py")
        env = {"SLOW_MARKER": str(migrating), "SLOW_RELEASE": str(release)}
        first = subprocess.Popen(
            argv,
            cwd=project,
            env=clean_env(**env, ASKING=str(tmp_path / "first-asking")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        second: subprocess.Popen[str] | None = None
        err_file = tmp_path / "stderr.txt"
        try:
            wait_for(migrating, first)  # the first builds the template, its lock held
            with err_file.open("w") as err_out:  # a file, read while the run waits
                second = subprocess.Popen(
                    argv,
                    cwd=project,
                    env=clean_env(**env, ASKING=str(asking)),
                    stdout=subprocess.PIPE,
                    stderr=err_out,
                    text=True,
                )
            wait_for(asking, second)  # its test asks for the database (the lock) now
            said_waiting(err_file, second)
        finally:
            release.write_text("go")
            first_out, first_err = first.communicate(timeout=300)
            out = second.communicate(timeout=300)[0] if second is not None else ""
            err = err_file.read_text()

    assert first.returncode == 0, first_out + first_err
    assert second is not None and second.returncode == 0, out + err
    assert "1 passed" in out, out
    assert "reynard-db: waiting for the build of template test_tpl_main_" in err, err
