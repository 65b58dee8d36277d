"""The README's CI recipe, tried as far as a machine without a container engine allows,
and the pre-commit hooks this repository ships.

The recipe's YAML block is parsed and what it refers to is checked (the service's
URL is what pytest reads, the cache path is where the initdb cache lives); then
every ``run:`` step but the install runs as written, in a user's project, with
``$REYNARD_DB_URL`` aimed at a PostgreSQL server started as the service container
would be: a cluster of its own (not marked as the harness's) whose ``postgres``
user needs a password over TCP.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from reynard_trees import clean_env, reynard_project, server_tmp

from pytest_reynard_db.postgres import EphemeralServer

REPO = Path(__file__).resolve().parents[1]
USER_TESTS = """
from sqlalchemy import text

def test_clone(reynard_db_fresh):
    with reynard_db_fresh.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM user_account")).scalar() is not None

def test_session(reynard_db):
    assert reynard_db.head
"""


def readme_block(heading: str, language: str) -> str:
    """The first ``language`` code block after ``heading`` in the README."""
    text = (REPO / "README.md").read_text()
    start = text.index(heading)
    match = re.compile(rf"^```{language}\n(.*?)^```", re.S | re.M).search(text, start)
    assert match, f"no {language} block after {heading!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    parsed = yaml.safe_load(readme_block("### In CI: GitHub Actions", "yaml"))
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture
def service() -> Iterator[EphemeralServer]:
    """PostgreSQL as the ``postgres:16`` service runs it: password auth over TCP."""
    with EphemeralServer.start(settings=["cluster_name=service"]) as server:
        assert server.process.base_dir is not None
        hba = server.process.base_dir / "data" / "pg_hba.conf"
        info = hba.stat()
        hba.write_text("host all all 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        shutil.chown(hba, info.st_uid, info.st_gid)
        with server.connect() as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute("ALTER ROLE postgres PASSWORD 'postgres'")
            conn.execute("SELECT pg_reload_conf()")
        yield server


def test_the_recipe_refers_to_what_the_harness_reads(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["test"]
    postgres = job["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert postgres["ports"] == ["5432:5432"]
    url = job["env"]["REYNARD_DB_URL"]
    password = postgres["env"]["POSTGRES_PASSWORD"]
    assert url == f"postgresql://postgres:{password}@localhost:5432/postgres"
    runtime = job["env"]["REYNARD_DB_RUNTIME_DIR"]
    [cache] = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/cache@")]
    assert cache["with"]["path"] == f"{runtime}/initdb-*"  # executor._cached_initdb's name
    runs = [s["run"] for s in job["steps"] if "run" in s]
    # the project's own test extra, pytest-reynard-db in it (README: Install)
    assert runs[0] == "python -m pip install -e '.[test]'"
    assert runs[-1].startswith("python -m pytest")
    assert any("check --only single_head,mirror_sync" in r for r in runs)
    assert any(r.startswith("reynard-migrate check --only history --base") for r in runs)
    # the scheduled drift job installs what has reynard-migrate in it too (a plain
    # `pip install -e .` of a user's project does not: the new user's trial, issue 24)
    drift_runs = [s["run"] for s in workflow["jobs"]["drift"]["steps"] if "run" in s]
    assert drift_runs[0] == "python -m pip install -e '.[test]'"
    assert drift_runs[-1].startswith("reynard-migrate drift ")


def test_the_recipe_runs_as_written_against_a_service_like_server(
    workflow: dict[str, Any], service: EphemeralServer, tmp_path: Path
) -> None:
    project = reynard_project(tmp_path / "project")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + 'reynard_db = "main"\n')
    (project / "test_user.py").write_text(USER_TESTS)
    pull_request_of(project)
    job = workflow["jobs"]["test"]
    runtime = server_tmp("reynard-ci-")
    runtime.chmod(0o711)
    env = dict(job["env"])
    env["REYNARD_DB_URL"] = env["REYNARD_DB_URL"].replace(
        "localhost:5432", f"127.0.0.1:{service.url.port}"
    )
    env["REYNARD_DB_RUNTIME_DIR"] = str(runtime / "reynard-db")
    env["GITHUB_BASE_REF"] = "main"  # the pull request's base branch, as GitHub sets it
    try:
        for step in job["steps"]:
            if "run" not in step or "pip install" in step["run"]:
                continue  # this checkout is installed already
            done = subprocess.run(
                ["bash", "-e", "-c", step["run"]],
                cwd=project,
                env=clean_env(**env),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, f"{step['name']}:\n{done.stdout}\n{done.stderr}"
            assert "::error" not in done.stdout
        assert list((runtime / "reynard-db").glob("initdb-*")), "the path actions/cache keeps"
        assert (project / "pytest.xml").exists()
        url = env["REYNARD_DB_URL"]
        with psycopg.connect(url) as conn:  # the password the service asks for
            rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test%'")
            left = {row[0] for row in rows}
        assert left and all(name.startswith("test_tpl_main_") for name in left), left
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def pull_request_of(project: Path) -> None:
    """``project`` as ``actions/checkout`` with ``fetch-depth: 0`` leaves a pull request:
    a git repository whose base branch is ``origin/main``."""
    for args in (
        ("init", "-q", "-b", "main"),
        ("add", "."),
        ("commit", "-q", "-m", "base"),
        ("update-ref", "refs/remotes/origin/main", "HEAD"),
    ):
        subprocess.run(
            ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com", *args],
            cwd=project,
            check=True,
            capture_output=True,
        )


def test_the_pre_commit_hooks_run_the_static_checks() -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    by_id = {hook["id"]: hook for hook in hooks}
    assert set(by_id) == {
        "reynard-db-static",
        "reynard-db-single-head",
        "reynard-db-mirror-sync",
        "reynard-db-history",
    }
    for hook in hooks:
        assert hook["language"] == "python" and hook["pass_filenames"] is False
        assert hook["entry"].startswith("reynard-migrate check --only ")
        assert re.search(hook["files"], "alembic/main/versions/3a1400000001_x.py")
    assert by_id["reynard-db-static"]["entry"].endswith("--only single_head,mirror_sync")
