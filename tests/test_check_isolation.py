"""One database's checks do not depend on what another's ``env.py`` imports (issue 13).

Two databases, ``app`` and ``auth``, whose models share one ``MetaData`` (a module
``shared``), as an application with one declarative base does. Importing
``app_models`` registers ``app``'s table in it, and also replaces a module in
``sys.modules`` (``auth``'s ``naming``), both at import, as an application's models
module with a ``create_all``-style side effect would. In one interpreter, ``auth``'s
``models_match`` would then see ``app``'s table, and its ``upgrade`` would name its
table after the replaced module, depending on whether ``app`` ran first. Each database's
checks run in a clean interpreter, so ``auth``'s results are the same whatever runs
with it, in whatever order, with ``--only`` or not, from the CLI or as pytest items
in a run whose test modules imported ``app_models``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_fork import run_cli
from reynard_trees import (
    REPO,
    admin_url,
    clean_env,
    reynard_project,
    scratch_databases,
    wait_until,
    write_revision,
)

from pytest_reynard_db.checks.isolated import CHILD
from pytest_reynard_db.postgres import EphemeralServer

ENV_PY = """
import json
import os
import sys

from alembic import context
from sqlalchemy import engine_from_config, pool

if os.environ.get("ISOLATION_PROBE"):  # what the interpreter running the checks holds
    with open(os.environ["ISOLATION_PROBE"], "a") as probe:
        seen = {{"pytest": "_pytest" in sys.modules, "app_models": "app_models" in sys.modules,
                "conftest_env": os.environ.get("SET_BY_CONFTEST"),
                "command": "pytest_reynard_db.cli.front" in sys.modules, "env_py": "{models}"}}
        probe.write(json.dumps(seen) + "\\n")
if os.environ.get("ISOLATION_PIDS"):  # which interpreter ran this env.py, for which database
    with open(os.environ["ISOLATION_PIDS"], "a") as pids:
        pids.write(f"{{os.getpid()}} {models}\\n")
once = os.environ.get("ISOLATION_SLEEP_ONCE")
if once and not os.path.exists(once):
    open(once, "w").close()  # the first env.py run only
    import time

    time.sleep(600)
if os.environ.get("ISOLATION_SLEEP"):  # a check that takes its time, to be interrupted
    import time

    time.sleep(float(os.environ["ISOLATION_SLEEP"]))

import {models}
import shared

config = context.config
target_metadata = shared.metadata


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {{}}), prefix="sqlalchemy.",
        poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
"""

INI = """
[alembic]
script_location = {name}_migrations
prepend_sys_path = .
sqlalchemy.url = postgresql://nobody@127.0.0.1:1/{name}
"""

FILES = {
    "shared.py": "from sqlalchemy import MetaData\nmetadata = MetaData()\n",
    "naming.py": 'USERS = "users"\n',
    "auth_models.py": """
        import sqlalchemy as sa
        import naming
        import shared

        users = sa.Table(
            naming.USERS, shared.metadata, sa.Column("id", sa.Integer, primary_key=True)
        )
        """,
    "app_models.py": """
        import sys
        import types

        import sqlalchemy as sa
        import shared

        # side effects at import: a table in the shared MetaData, a module replaced
        items = sa.Table("items", shared.metadata, sa.Column("id", sa.Integer, primary_key=True))
        sys.modules["naming"] = types.SimpleNamespace(USERS="app_users")
        """,
}


def make_project(root: Path) -> Path:
    root.mkdir()
    for name, body in FILES.items():
        (root / name).write_text(textwrap.dedent(body).lstrip())
    for name, table in (("app", "items"), ("auth", "users")):
        (root / f"alembic_{name}.ini").write_text(INI.format(name=name))
        folder = root / f"{name}_migrations"
        (folder / "versions").mkdir(parents=True)
        (folder / "env.py").write_text(ENV_PY.format(models=f"{name}_models"))
        write_revision(
            folder / "versions",
            f"{name}00000001",
            None,
            f"op.create_table({table!r}, sa.Column('id', sa.Integer, primary_key=True))",
            f"op.drop_table({table!r})",
        )
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "two")


def auth_results(project: Path, server: EphemeralServer, *argv: str) -> list[dict[str, object]]:
    url = admin_url(server)
    code, out, err = run_cli(project, "check", *argv, "--json", "--url", url, env=clean_env())
    assert code in (0, 1), err
    results = json.loads(out)["results"]
    return [r for r in results if r["database"] == "auth"]


def test_cli_results_of_one_database_do_not_depend_on_another(
    project: Path, pg_server: EphemeralServer
) -> None:
    alone = auth_results(project, pg_server, "auth")
    assert [(r["check"], r["ok"]) for r in alone] == [
        ("single_head", True),
        ("upgrade", True),
        ("stairway", True),
        ("downgrade_clean", True),
        ("models_match", True),
    ], alone
    assert auth_results(project, pg_server, "app", "auth") == alone
    assert auth_results(project, pg_server) == alone  # every database, app first
    only = auth_results(project, pg_server, "app", "auth", "--only", "models_match,upgrade")
    assert only == [r for r in alone if r["check"] in ("upgrade", "models_match")]


def test_cli_checks_use_children_forked_from_the_command(
    project: Path, pg_server: EphemeralServer
) -> None:
    """``check`` of several databases runs each one's checks in a child forked from the
    command (no interpreter to start, SQLAlchemy and Alembic already imported), before its
    server starts: ``auth``'s child has not imported ``app_models``, and its checks pass
    as alone."""
    probe = project / "probe.jsonl"
    env = {**clean_env(), "ISOLATION_PROBE": str(probe)}
    url = admin_url(pg_server)
    argv = ("check", "app", "auth", "--only", "upgrade,models_match", "--json", "--url", url)
    code, out, err = run_cli(project, *argv, env=env)
    assert code == 0, out + err
    assert [(r["database"], r["check"], r["ok"]) for r in json.loads(out)["results"]] == [
        ("app", "upgrade", True),
        ("app", "models_match", True),
        ("auth", "upgrade", True),
        ("auth", "models_match", True),
    ]
    seen = [json.loads(line) for line in probe.read_text().splitlines()]
    assert {s["env_py"] for s in seen} == {"app_models", "auth_models"}, seen
    assert all(s["command"] and not s["pytest"] for s in seen), seen
    assert not any(s["app_models"] for s in seen if s["env_py"] == "auth_models"), seen
    assert "Traceback" not in err, err


def test_this_repository_is_not_taken_for_an_installed_application() -> None:
    """Its root holds this package's folder, which every process of the checks imports: a
    process that imported nothing else is still clean, and forks its checks' children
    (it started an interpreter per database: ``reynard-migrate check`` here took 6.5 s,
    4.1 s with them forked)."""
    code = (
        "from pathlib import Path\n"
        "from pytest_reynard_db.checks.spares import _only_libraries_imported\n"
        f"print(_only_libraries_imported(Path({str(REPO)!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert (done.stdout, done.stderr) == ("True\n", "")


def test_check_items_do_not_depend_on_what_tests_imported(
    project: Path, pytester: pytest.Pytester
) -> None:
    """The run's test modules imported ``app_models`` (as an application's tests do):
    ``auth``'s items pass as they do alone."""
    (project / "tests").mkdir()
    (project / "tests" / "test_app.py").write_text(
        "import app_models\n\ndef test_app():\n    assert app_models.items is not None\n"
    )
    for args in (("--reynard-db=app,auth",), ("--reynard-db=auth,app",), ("--reynard-db=auth",)):
        result = check_items(project, pytester, *args)
        result.stdout.fnmatch_lines(["*reynard-db::auth::models_match PASSED*"])
        result.stdout.fnmatch_lines(["*reynard-db::auth::upgrade PASSED*"])
        result.stdout.no_fnmatch_line("*FAILED*")


def check_items(project: Path, pytester: pytest.Pytester, *argv: str) -> pytest.RunResult:
    """The project's check items (``--reynard-db-checks``), run with ``argv``, verbose."""
    pytester.chdir()
    return pytester.runpytest_subprocess(
        str(project), f"--rootdir={project}", "-p", "no:cacheprovider", "-v",
        "--reynard-db-checks", *argv,
    )  # fmt: skip


def probed_items(
    project: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[pytest.RunResult, list[dict[str, bool]]]:
    """``auth``'s check items, run with ``argv``; what each ``env.py`` run saw."""
    probe = project / "probe.jsonl"
    monkeypatch.setenv("ISOLATION_PROBE", str(probe))
    result = check_items(project, pytester, "--reynard-db=auth", *argv)
    seen = [json.loads(line) for line in probe.read_text().splitlines()]
    return result, seen


def test_check_items_use_children_forked_before_the_conftests(
    project: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The items' children are forked from pytest before any conftest is imported (no
    interpreter to start, SQLAlchemy and Alembic already imported): a conftest that
    imports ``app_models`` is not in them, and ``auth``'s items pass. What the conftest
    set in the environment after the fork is seen, as by an interpreter started then."""
    (project / "conftest.py").write_text(
        "import os\n\nimport app_models  # noqa: F401\n\nos.environ['SET_BY_CONFTEST'] = 'yes'\n"
    )
    result, seen = probed_items(project, pytester, monkeypatch)
    result.stdout.fnmatch_lines(["*reynard-db::auth::models_match PASSED*"])
    result.stdout.no_fnmatch_line("*FAILED*")
    expected = {"pytest": True, "app_models": False, "conftest_env": "yes"}
    expected |= {"command": False, "env_py": "auth_models"}
    assert seen and all(s == expected for s in seen), seen
    assert "Traceback" not in result.stderr.str() and "reynard-db" not in result.stderr.str()


def test_the_pytest_commands_check_items_use_forked_children_too(
    project: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run by the ``pytest`` command (a console script: ``__main__`` is its wrapper, in the
    environment's scripts folder, not a library's file), not ``python -m pytest``: the
    items' children are forked all the same (they were interpreters started for them)."""
    probe = project / "probe.jsonl"
    monkeypatch.setenv("ISOLATION_PROBE", str(probe))
    pytester.chdir()
    command = Path(sys.executable).with_name("pytest")
    result = pytester.run(
        command, str(project), f"--rootdir={project}", "-p", "no:cacheprovider", "-v",
        "--reynard-db-checks", "--reynard-db=auth",
    )  # fmt: skip
    result.stdout.fnmatch_lines(["*reynard-db::auth::models_match PASSED*"])
    seen = [json.loads(line) for line in probe.read_text().splitlines()]
    assert seen and all(s["pytest"] and not s["app_models"] for s in seen), seen


def test_under_xdist_each_worker_keeps_one_child_per_database(
    project: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under pytest-xdist a worker may be sent any of a database's items: it runs them in
    one child per database, kept until the run ends (one interpreter per item started
    ~8 here, each importing SQLAlchemy and Alembic again), never one child for two."""
    pids = project / "pids.txt"
    monkeypatch.setenv("ISOLATION_PIDS", str(pids))
    result = check_items(project, pytester, "--reynard-db=app,auth", "-n", "2")
    result.assert_outcomes(passed=10)
    runs = [line.split() for line in pids.read_text().splitlines()]
    children = {pid: {models for p, models in runs if p == pid} for pid, _ in runs}
    assert all(len(models) == 1 for models in children.values()), children  # one database
    assert len(children) <= 4, children  # 2 workers x 2 databases at most
    assert "Traceback" not in result.stderr.str(), result.stderr.str()


def test_a_plugin_of_the_project_gets_an_interpreter_of_its_own(
    project: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-p app_models`` imports the application before the plugin's first hook: a child
    forked then would see ``app``'s table in ``auth``'s MetaData (models_match would
    fail), so the children are interpreters started for the checks, as without fork."""
    monkeypatch.setenv("PYTHONPATH", str(project))
    result, seen = probed_items(project, pytester, monkeypatch, "-p", "app_models")
    result.stdout.fnmatch_lines(["*reynard-db::auth::models_match PASSED*"])
    result.stdout.no_fnmatch_line("*FAILED*")
    expected = {"pytest": False, "app_models": False, "conftest_env": None}
    expected |= {"command": False, "env_py": "auth_models"}
    assert seen and all(s == expected for s in seen), seen


def test_a_terminated_check_leaves_no_database_nor_child(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    """SIGTERM to ``check`` while a child runs a stairway on an existing server: the
    child ends too and drops its ``test_check_*`` database."""
    root = reynard_project(tmp_path)
    url = pg_server.url.render_as_string(hide_password=False)
    argv = [sys.executable, "-m", "pytest_reynard_db", "--project", str(root), "check"]
    argv += ["ecs", "ecs_e2e", "--url", url, "--only", "stairway"]
    # Output to files, not pipes: a child still holding a pipe would make us wait for it.
    err_file = tmp_path / "stderr.txt"
    with err_file.open("w") as err_out:
        process = subprocess.Popen(
            argv, cwd=root, env=clean_env(), stdout=subprocess.DEVNULL, stderr=err_out
        )
    wait_until(lambda: scratch_databases(pg_server), 120, "the stairway's throw-away database")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err_file.read_text()
    assert scratch_databases(pg_server) == []
    found = subprocess.run(["pgrep", "-f", CHILD], capture_output=True, text=True).stdout.split()
    assert [pid for pid in found if cwd_of(pid) == root.resolve()] == []


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_pytest_run_ended_during_a_check_item_leaves_no_database_nor_child(
    project: Path, pg_server: EphemeralServer, how: signal.Signals
) -> None:
    """pytest ended while a check item's child (forked before the conftests) migrates: the
    child ends too (told by the parent on SIGTERM; on SIGKILL, seeing its parent gone) and
    drops its ``test_check_*`` database; no process of the run is left."""
    url = pg_server.url.render_as_string(hide_password=False)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reynard-db-checks"]
    argv += ["--reynard-db=auth", f"--reynard-db-url={url}", "-k", "upgrade"]
    env = clean_env(ISOLATION_SLEEP="600")  # longer than the waits below
    err_file = project / "stderr.txt"
    with err_file.open("w") as err_out:  # files, not pipes: a child left would hold a pipe
        process = subprocess.Popen(
            argv, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=err_out
        )
    wait_until(
        lambda: scratch_databases(pg_server) or process.poll() is not None,
        120,
        "the check item's throw-away database",
    )
    assert scratch_databases(pg_server), err_file.read_text()
    process.send_signal(how)
    process.wait(timeout=120)
    if how == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM, err_file.read_text()
        assert "Traceback" not in err_file.read_text()
    wait_until(
        lambda: not (scratch_databases(pg_server) or processes_in(project)),
        30,
        "the check's throw-away database dropped and its processes gone",
    )


def kill_the_check_child(
    process: subprocess.Popen[bytes],
    project: Path,
    out_file: Path,
    ready: Callable[[], object],
    what: str,
) -> str:
    """Once ``ready()`` (``what``: the child is at work), ``kill -9`` of the run's check
    child, the one process of the run (working in ``project``) with no child (an xdist
    worker has it); the run's output (``out_file``) once it has ended."""
    try:
        wait_until(lambda: ready() or process.poll() is not None, 120, what)
        others = [int(pid) for pid in processes_in(project) if int(pid) != process.pid]
        children = [pid for pid in others if pid not in map(parent_of, others)]
        assert len(children) == 1, (others, out_file.read_text())
        os.kill(children[0], signal.SIGKILL)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return out_file.read_text()


def processes_in(root: Path) -> list[str]:
    """The processes whose working directory is ``root``."""
    return [pid for pid in os.listdir("/proc") if pid.isdigit() and cwd_of(pid) == root.resolve()]


def cwd_of(pid: str) -> Path | None:
    """A process's working directory (None once it has gone)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).resolve()
    except OSError:
        return None


def parent_of(pid: int) -> int | None:
    """A process's parent (None once it has gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("how", [[], ["-q"], ["-q", "-n", "1"]], ids=["header", "quiet", "xdist"])
def test_a_check_child_killed_mid_check_leaves_no_database(
    project: Path, pg_server: EphemeralServer, how: list[str]
) -> None:
    """A check item's child killed alone (``kill -9``: the OOM killer) while it migrates
    its throw-away database: its items fail, saying so, and the run's end drops that
    database, which carries the run's id (``scratch_name``): nameless, it was no run's
    to drop, left on the server for good (hostile13). With ``-q`` too, and under xdist:
    no header asks the server, so the test process itself never connects to it
    (review13)."""
    url = pg_server.url.render_as_string(hide_password=False)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reynard-db-checks", *how]
    argv += ["--reynard-db=auth", f"--reynard-db-url={url}", "-k", "upgrade"]
    env = clean_env(ISOLATION_SLEEP="600")  # longer than the waits below
    out_file = project / "output.txt"
    with out_file.open("w") as out:  # a file, not a pipe: a child left would hold a pipe
        process = subprocess.Popen(argv, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    said = kill_the_check_child(
        process, project, out_file, lambda: scratch_databases(pg_server), "its throw-away database"
    )
    assert process.returncode == pytest.ExitCode.TESTS_FAILED, said
    assert "was killed by signal 9" in said and "Traceback" not in said, said
    assert scratch_databases(pg_server) == [], said


def test_under_xdist_a_kept_child_killed_is_replaced_for_the_next_item(
    project: Path, pg_server: EphemeralServer
) -> None:
    """A worker's child of a database, killed during one item (the OOM killer): that item
    fails saying so, and the database's next item in that worker runs in a new child."""
    url = pg_server.url.render_as_string(hide_password=False)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reynard-db-checks"]
    argv += ["-n", "1", "--reynard-db=auth", f"--reynard-db-url={url}"]
    argv += ["-k", "upgrade or models_match", "-v"]
    slept = project / "slept"
    out_file = project / "output.txt"
    with out_file.open("w") as out:  # a file, not a pipe: a child left would hold a pipe
        process = subprocess.Popen(
            argv,
            cwd=project,
            env=clean_env(ISOLATION_SLEEP_ONCE=str(slept)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    said = kill_the_check_child(process, project, out_file, slept.exists, "the first env.py")
    assert "FAILED reynard-db::auth::upgrade" in said, said
    assert "was killed by signal 9" in said, said
    assert "PASSED reynard-db::auth::models_match" in said, said
    assert scratch_databases(pg_server) == [], said
