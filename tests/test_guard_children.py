"""Children are guarded the way coverage reaches subprocesses: the package's ``.pth``
arms any interpreter of this environment whose environment names the run's allow-list,
whatever its ``$PYTHONPATH`` (``env={**os.environ, "PYTHONPATH": "src"}``, a common
test pattern) and even with ``-I``: those attacks run as users run them in
``test_guard_user_paths.py`` (``CHILDREN``). Here: the ``.pth`` is where Python reads it, and
costs nothing in an interpreter that is no guarded run's child."""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

from reynard_trees import clean_env

LOADED = "import sys; print(sorted(m for m in sys.modules if m.startswith('pytest_reynard_db')))"


def test_the_pth_is_installed_in_site_packages() -> None:
    installed = [Path(p) / "pytest_reynard_db_guard.pth" for p in site.getsitepackages()]
    assert any(p.is_file() for p in installed), installed


def test_a_child_of_no_run_loads_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOADED],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0 and done.stdout == "[]\n", done.stdout + done.stderr


def test_a_child_of_a_run_waits_for_a_driver(tmp_path: Path) -> None:
    """Armed only when it imports a driver: until then, nothing of the package stays
    imported (a pytest child imports it as a plugin later, see ``child_guard``), only
    the finder that waits for a driver."""
    env = clean_env(REYNARD_DB_GUARD=str(tmp_path / "listed.json"), PYTHONPATH="src")
    waiting = "import sys; print([type(f).__name__ for f in sys.meta_path][:1])"
    done = subprocess.run(
        [sys.executable, "-c", f"{LOADED}; {waiting}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    expected = "[]\n['_ArmOnDriverImport']\n"
    assert done.returncode == 0 and done.stdout == expected, done.stdout + done.stderr
