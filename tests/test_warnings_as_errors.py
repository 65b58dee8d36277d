"""A warning the run's filters raise as an error, said as such (hostile verdict round 20,
F10): under pytest's ``filterwarnings = ["error"]`` (or ``-W``, ``PYTHONWARNINGS``) a
revision's SQLAlchemy warning fails the migration where plain Alembic only warns; the
failure read as the tree's own."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cli_fork import cli_of
from reynard_trees import alembic_init_project, write_revision


def test_a_warning_raised_as_an_error_says_the_filter_did_it(tmp_path: Path) -> None:
    project = alembic_init_project(tmp_path / "app", "postgresql://nobody@127.0.0.1:1/x")
    write_revision(
        project / "migrations" / "versions",
        "0a0000000002",
        "0a0000000001",
        "import warnings\nwarnings.warn('this column will change', UserWarning)",
    )
    env = {**os.environ, "PYTHONWARNINGS": "error::UserWarning"}
    code, out, err = cli_of(project)("check", "app", "--only", "upgrade", "--json", env=env)
    [result] = json.loads(out)["results"]
    assert code == 1 and not result["ok"], out + err
    assert (
        "this column will change (a UserWarning, raised as an error by the warning "
        in (result["message"])
    ), result["message"]
    code, out, err = cli_of(project)("check", "app", "--only", "upgrade", "--json")
    assert code == 0, out + err  # without the filter: a warning, as under plain Alembic
    assert "Traceback" not in err and "error" not in err.lower(), err
