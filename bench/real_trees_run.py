"""One real tree through three judges, inside the project's own virtualenv:
``python bench/real_trees_run.py PROJECT SCRATCH`` prints one JSON object (see ``run``).

- ours: ``reynard-migrate check <db> --format json`` on a ``[tool.reynard-db]`` scratch
  project registering the shipped ini (it starts its own ephemeral server);
- plain Alembic: ``bench.plain_alembic`` (every step a fresh ``alembic`` command), plus
  ``alembic heads`` and ``alembic upgrade heads`` + ``alembic check`` for the file check
  and autogenerate;
- pytest-alembic: its four default tests, run by pytest with a conftest giving
  ``alembic_config``/``alembic_engine`` (our plugin disabled: ``-p no:reynard_db``).

Plain Alembic and pytest-alembic share one ephemeral server started here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.engine import URL

from bench.plain_alembic import ForkServer, Tree, plain_checks
from bench.plain_database import Session
from bench.real_trees_projects import Project, by_name
from pytest_reynard_db.postgres import EphemeralServer

#: pytest-alembic's default tests, by the check each stands beside.
PYTEST_ALEMBIC = {
    "single_head": "test_single_head_revision",
    "upgrade": "test_upgrade",
    "models_match": "test_model_definitions_match_ddl",
    "downgrade_clean": "test_up_down_consistency",
}

CONFTEST = '''\
"""pytest-alembic's fixtures for one real tree (written by bench/real_trees_run.py).

Each test gets the database REAL_TREES_DB dropped and created anew: one name for the
whole session, since an application may read its URL once at import (open-webui does)."""

import os

import psycopg
import pytest
import sqlalchemy as sa
from alembic.config import Config

URL = os.environ["REAL_TREES_DB_URL"]


@pytest.fixture
def database_url(monkeypatch):
    name = sa.make_url(URL).database
    with psycopg.connect(os.environ["REAL_TREES_ADMIN"], autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    for var in filter(None, os.environ.get("REAL_TREES_URL_ENV", "").split(",")):
        monkeypatch.setenv(var, URL)
    return URL


@pytest.fixture
def alembic_config(database_url):
    config = Config(os.environ["REAL_TREES_INI"])
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@pytest.fixture
def alembic_engine(database_url):
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    yield engine
    engine.dispose()
'''

_names = itertools.count(1)


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def app_env(project: Project, scratch: Path) -> dict[str, str]:
    """This shell's environment and the application settings ``project`` needs."""
    settings = {k: v.format(scratch=scratch) for k, v in project.env.items()}
    for key in ("DATA_DIR", "AIRFLOW_HOME"):
        if key in settings:
            Path(settings[key]).mkdir(parents=True, exist_ok=True)
    return {**os.environ, **settings}


def write_registry(project: Project, scratch: Path, ini: Path) -> None:
    """The scratch project: a pyproject registering the shipped ini, unchanged."""
    lines = [f'[tool.reynard-db.databases."{project.name}"]', f'ini = "{ini}"']
    lines.append(f'database = "{project.name.replace("-", "_")}"')
    if project.url_env:
        lines.append(f'url_env = "{project.url_env[0]}"')
    (scratch / "pyproject.toml").write_text("\n".join(lines) + "\n")


# -- ours -----------------------------------------------------------------------------------
def run_ours(project: Project, scratch: Path, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """``reynard-migrate check`` as a user types it; its results by check."""
    cli = Path(sys.executable).with_name("reynard-migrate")
    argv = [str(cli), "--project", str(scratch), "check", project.name, "--format", "json"]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    try:
        entries = json.loads(done.stdout)["results"]
    except (ValueError, KeyError):
        line = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return {"error": line}
    results: dict[str, Any] = {}
    for entry in entries:
        status = entry.get("status") or (
            "ok" if entry["ok"] else "skipped" if entry.get("skipped") else "failed"
        )
        found = results.setdefault(
            entry["check"], {"status": "ok", "revisions": [], "messages": []}
        )
        if status != "ok":
            found["status"] = status
            found["revisions"] += [entry["revision"]] if entry.get("revision") else []
            found["messages"].append(entry["message"])
    return results


# -- plain Alembic --------------------------------------------------------------------------
@contextlib.contextmanager
def fresh_database(server: EphemeralServer, driver: str) -> Iterator[URL]:
    name = f"test_plain_{os.getpid()}_{next(_names)}"
    url = server.create_database(name)
    try:
        yield url.set(drivername=driver)
    finally:
        server.drop_database(name)


def run_plain(tree: Tree, server: EphemeralServer, run: ForkServer, driver: str) -> dict[str, Any]:
    """The oracle's verdicts, and ``alembic heads`` / ``alembic check``."""
    verdicts = plain_checks(tree, lambda: fresh_database(server, driver), run)
    heads = tree.script().get_heads()
    results: dict[str, Any] = {
        "single_head": _plain("ok" if len(heads) == 1 else "failed", [], [f"heads: {heads}"]),
        "upgrade": _verdict(verdicts.upgrade),
        "downgrade_clean": _verdict(verdicts.downgrade_clean),
        "stairway": _plain(
            "ok" if verdicts.stairway.ok else "failed",
            [b.revision for b in verdicts.stairway.broken],
            [f"{b.revision}, {b.step} step: {b.reason}" for b in verdicts.stairway.broken]
            + (
                [f"not reached: {', '.join(verdicts.stairway.not_reached)}"]
                if verdicts.stairway.not_reached
                else []
            ),
        ),
    }
    with fresh_database(server, driver) as url, Session(tree, url, run) as session:
        up = session.command("upgrade", "heads")
        done = session.command("check") if up.ok else up
        results["models_match"] = _plain(
            "ok" if done.ok else "failed",
            [],
            [] if done.ok else [f"{' '.join(done.argv)}: {done.error}"],
        )
    return results


def _plain(status: str, revisions: list[str], messages: list[str]) -> dict[str, Any]:
    return {"status": status, "revisions": revisions, "messages": messages}


def _verdict(verdict: Any) -> dict[str, Any]:
    return _plain(
        "ok" if verdict.ok else "failed",
        [verdict.revision] if verdict.revision else [],
        [verdict.reason] if verdict.reason else [],
    )


# -- pytest-alembic -------------------------------------------------------------------------
def run_pytest_alembic(
    project: Project,
    scratch: Path,
    ini: Path,
    cwd: Path,
    env: dict[str, str],
    server: EphemeralServer,
) -> dict[str, Any]:
    """pytest-alembic's default tests; each one's outcome and failure's first lines."""
    folder = scratch / "pytest-alembic"
    (folder / "tests").mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "tests" / "conftest.py").write_text(CONFTEST)
    junit = folder / "junit.xml"
    junit.unlink(missing_ok=True)
    admin = server.url.set(database="postgres")
    database = server.url.set(database=f"test_pa_{os.getpid()}", drivername=project.driver)
    env = {
        **env,
        "REAL_TREES_ADMIN": admin.set(drivername="postgresql").render_as_string(False),
        "REAL_TREES_DB_URL": database.render_as_string(hide_password=False),
        "REAL_TREES_INI": str(ini),
        "REAL_TREES_URL_ENV": ",".join(project.url_env),
    }
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:reynard_db",
        "-p",
        "no:cacheprovider",
        "--test-alembic",
        "--rootdir",
        str(folder),
        "-c",
        str(folder / "pytest.ini"),
        str(folder / "tests"),
        f"--junitxml={junit}",
        "-q",
    ]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if not junit.is_file():
        return {"error": (done.stdout + done.stderr).strip().splitlines()[-1:]}
    outcomes = _junit(junit)
    results: dict[str, Any] = {}
    for check, test in PYTEST_ALEMBIC.items():
        status, message = outcomes.get(test, ("missing", "not collected"))
        results[check] = _plain(status, [], [message] if message else [])
    return results


def _junit(path: Path) -> dict[str, tuple[str, str]]:
    """Each test case's outcome (``ok``, ``failed``, ``skipped``) and its message."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(path).iter("testcase"):
        status, message = "ok", ""
        for kind, word in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            node = case.find(kind)
            if node is not None:
                status = word
                message = (node.get("message") or node.text or "").strip()
                break
        found[case.get("name", "").split("[")[0]] = (status, message[:2000])
    return found


# -- one project ----------------------------------------------------------------------------
def first_revisions(ini: Path, tree: Tree, first: int, scratch: Path) -> Path:
    """A copy of the tree holding its first ``first`` revisions (bases first), files
    unchanged, and of the ini with ``script_location`` aimed at it: a tree too long to
    walk in minutes by fresh commands. Its ini; commands still run where the tree's do."""
    script = tree.script()
    keep = [s for s in reversed(list(script.walk_revisions())) if s is not None][:first]
    copy = scratch / "first" / Path(script.dir).name
    shutil.rmtree(copy.parent, ignore_errors=True)
    shutil.copytree(script.dir, copy, ignore=shutil.ignore_patterns("versions", "__pycache__"))
    (copy / "versions").mkdir()
    for revision in keep:
        shutil.copy2(revision.path, copy / "versions" / Path(revision.path).name)
    text = ini.read_text()
    if re.search(r"^version_locations\s*=", text, re.M):
        raise SystemExit(f"{ini}: --first does not handle version_locations")
    text = re.sub(
        r"^script_location\s*=.*$", f"script_location = {copy}", text, count=1, flags=re.M
    )
    (copy.parent / ini.name).write_text(text)
    return copy.parent / ini.name


def run(project: Project, scratch: Path, first: int | None = None) -> dict[str, Any]:
    """``{"project", "version", "revisions", "ours", "plain", "pytest_alembic", "seconds"}``."""
    scratch.mkdir(parents=True, exist_ok=True)
    ini = site_packages() / project.ini
    cwd = site_packages() if project.cwd == "site" else ini.parent
    env = app_env(project, scratch)
    os.environ.update(env)  # loading the tree here imports the application too (open-webui)
    os.chdir(cwd)  # where Alembic resolves a relative script_location, as the commands do
    if first:
        ini = first_revisions(ini, Tree(ini=ini, cwd=cwd), first, scratch)
    write_registry(project, scratch, ini)
    tree = Tree(
        ini=ini, env=env, url_env=project.url_env, cwd=cwd, version_table=project.version_table
    )
    revisions = sum(1 for _ in tree.script().walk_revisions())
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    ours = run_ours(project, scratch, cwd, env)
    seconds["ours"] = time.perf_counter() - started
    with EphemeralServer.start() as server, ForkServer(env=env) as fork:
        started = time.perf_counter()
        plain = run_plain(tree, server, fork, project.driver)
        seconds["plain"] = time.perf_counter() - started
        started = time.perf_counter()
        pytest_alembic = run_pytest_alembic(project, scratch, ini, cwd, env, server)
        seconds["pytest_alembic"] = time.perf_counter() - started
    return {
        "project": project.name,
        "version": version(project.distribution),
        "alembic": version("alembic"),
        "revisions": revisions,
        "first": first,
        "driver": project.driver,
        "ours": ours,
        "plain": plain,
        "pytest_alembic": pytest_alembic,
        "seconds": seconds,
    }


if __name__ == "__main__":
    [chosen] = by_name([sys.argv[1]])
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(run(chosen, Path(sys.argv[2]), limit)))
