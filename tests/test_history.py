"""The ``history`` check: revisions a base (a git ref) shipped are unchanged and still
there, and new revisions are built on the base's heads; on real git repositories made here.

The project is ``alembic init``'s, with three revisions committed on ``main``; each test
then changes the work tree (or commits on a branch) as a pull request would.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from alembic import command
from alembic.config import Config
from cli_fork import Cli
from reynard_trees import REPO, clean_env, run_pytest, write_revision

from pytest_reynard_db.checks import enabled_checks, select_checks
from pytest_reynard_db.checks.isolated import run_isolated
from pytest_reynard_db.foundation.registry import load_registry

REGISTRY = '[tool.reynard-db.databases.app]\nini = "alembic.ini"\ndatabase = "app"\n'
CREATE_T = "op.create_table('t', sa.Column('id', sa.Integer, primary_key=True))"


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Revisions a1 <- a2 <- a3 committed on ``main`` (a3 the head), in a git repository."""
    root = tmp_path / "app"
    root.mkdir()
    command.init(Config(str(root / "alembic.ini")), str(root / "migrations"), template="generic")
    (root / "pyproject.toml").write_text(REGISTRY)
    versions = root / "migrations" / "versions"
    write_revision(versions, "a1", None, CREATE_T, "op.drop_table('t')")
    write_revision(versions, "a2", "a1", "op.add_column('t', sa.Column('x', sa.Integer))")
    write_revision(versions, "a3", "a2", "op.create_index('ix_t_x', 't', ['x'])")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "shipped")
    return root


def history(cli: Cli, *extra: str) -> tuple[int, dict[str, object], str]:
    code, out, err = cli("check", "--only", "history", "--format", "json", *extra)
    [result] = json.loads(out)["results"]
    return code, result, err


def test_an_unchanged_tree_passes(project: Path, cli: Cli) -> None:
    code, result, err = history(cli, "--base", "main")
    assert code == 0 and result["status"] == "ok", result
    assert result["message"].startswith("3 revisions as at main (")  # type: ignore[union-attr]
    assert err == ""


def test_an_edited_shipped_revision_fails_with_file_base_and_diff(project: Path, cli: Cli) -> None:
    path = project / "migrations" / "versions" / "a2_test.py"
    path.write_text(path.read_text().replace("sa.Integer", "sa.BigInteger"))
    code, result, err = history(cli, "--base", "main")
    assert code == 1 and result["status"] == "failed", result
    message = str(result["message"])
    assert "against base main (" in message
    assert "edited: migrations/versions/a2_test.py: revision a2 changed since main" in message
    assert "-    op.add_column('t', sa.Column('x', sa.Integer))" in message
    assert "+    op.add_column('t', sa.Column('x', sa.BigInteger))" in message
    assert result["file"] == "migrations/versions/a2_test.py"
    assert result["line"] == 9  # in upgrade(): the statement that changed
    assert err == ""


def test_comments_docstrings_formatting_and_import_order_are_allowed(
    project: Path, cli: Cli
) -> None:
    path = project / "migrations" / "versions" / "a3_test.py"
    text = path.read_text().replace('"""a revision', '"""A better docstring for a revision')
    text = text.replace(  # isort's order: alembic before sqlalchemy
        "import sqlalchemy as sa\nfrom alembic import op",
        "from alembic import op\nimport sqlalchemy as sa",
    )
    assert text.count("from alembic import op\nimport sqlalchemy as sa") == 1
    text = text.replace(
        "op.create_index('ix_t_x', 't', ['x'])",
        "# the index the lookups need\n    op.create_index(\n        'ix_t_x', 't', ['x'],\n    )",
    )
    path.write_text(text)
    code, result, err = history(cli, "--base", "main")
    assert code == 0 and result["status"] == "ok", result
    assert err == ""


def test_a_removed_shipped_revision_fails(project: Path, cli: Cli) -> None:
    (project / "migrations" / "versions" / "a3_test.py").unlink()
    code, result, _ = history(cli, "--base", "main")
    assert code == 1, result
    assert "removed: migrations/versions/a3_test.py: revision a3 is in main and gone here" in str(
        result["message"]
    )


def test_a_revision_inserted_below_a_shipped_one_fails(project: Path, cli: Cli) -> None:
    """b1 on a2 (which a3 builds on), labelled so that single_head would pass it."""
    versions = project / "migrations" / "versions"
    write_revision(versions, "b1", "a2", labels="side", slug="sneaky")
    code, result, err = history(cli, "--base", "main")
    assert code == 1, result
    assert (
        "inserted: migrations/versions/b1_sneaky.py: new revision b1 builds on a2, which main "
        "already builds on; build on a head of main (a3)"
    ) in str(result["message"])
    assert result["line"] == 5  # down_revision = 'a2'
    assert err == ""


def test_new_revisions_on_top_and_a_merge_of_new_branches_pass(project: Path, cli: Cli) -> None:
    git(project, "checkout", "-q", "-b", "feature")
    versions = project / "migrations" / "versions"
    write_revision(versions, "c1", "a3", labels="one", slug="one")
    write_revision(versions, "c2", "a3", labels="two", slug="two")
    write_revision(versions, "c3", ("c1", "c2"), slug="merge")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "new work")
    code, result, err = history(cli, "--base", "main")
    assert code == 0, result
    assert (
        result["message"]
        == f"3 revisions as at main ({git_short(project)}), 3 new revisions on top"
    )
    assert err == ""


def test_a_new_branch_from_base_passes(project: Path, cli: Cli) -> None:
    """A branch of its own (``create --new-branch``) is below no shipped revision."""
    write_revision(project / "migrations" / "versions", "d1", None, labels="audit", slug="d")
    code, result, _ = history(cli, "--base", "main")
    assert code == 0, result


def test_without_a_base_it_is_skipped_with_the_reason(project: Path, cli: Cli) -> None:
    code, result, err = history(cli)
    assert code == 0 and result["status"] == "skipped", result
    assert "no base to compare with (check --base REF" in str(result["message"])
    assert err == ""


def test_the_base_comes_from_the_registry_and_selects_the_check(project: Path, cli: Cli) -> None:
    (project / "pyproject.toml").write_text('[tool.reynard-db]\nbase = "main"\n' + REGISTRY)
    registry = load_registry(project)
    assert registry.base == "main"
    assert "history" in select_checks(None, enabled_checks(registry))
    (project / "migrations" / "versions" / "a1_test.py").unlink()
    code, result, _ = history(cli)
    assert code == 1 and "revision a1 is in main and gone here" in str(result["message"])
    code, result, _ = history(cli, "--base", "HEAD")  # --base wins
    assert "revision a1 is in HEAD and gone here" in str(result["message"])


def test_a_base_git_does_not_know_is_one_line(project: Path, cli: Cli) -> None:
    code, out, err = cli("check", "--only", "history", "--base", "origin/nope")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"reynard-migrate: error: base 'origin/nope' is not a commit of the git repository at "
        f"{project} (a branch, tag or commit; in CI, fetch it first: git fetch origin main, or "
        "actions/checkout with fetch-depth: 0)"
    ]


def test_a_project_outside_git_is_one_line(project: Path, cli: Cli) -> None:
    subprocess.run(["rm", "-rf", str(project / ".git")], check=True)
    code, out, err = cli("check", "--only", "history", "--base", "main")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"reynard-migrate: error: base 'main': {project} is not in a git repository "
        "(the history check compares the revisions with a git ref)"
    ]


def test_github_annotations_point_at_each_file(project: Path, cli: Cli) -> None:
    versions = project / "migrations" / "versions"
    path = versions / "a2_test.py"
    path.write_text(path.read_text().replace("'x'", "'y'"))
    write_revision(versions, "b1", "a1", labels="side", slug="sneaky")
    code, out, err = cli("check", "--only", "history", "--base", "main", "--format", "github")
    assert code == 1, out + err
    errors = [line for line in out.splitlines() if line.startswith("::error")]
    assert len(errors) == 2, out
    assert errors[0].startswith("::error file=migrations/versions/a2_test.py,line=9,")
    assert errors[1].startswith("::error file=migrations/versions/b1_sneaky.py,line=5,")
    assert all("2 revisions rewrite history against base main (" in line for line in errors)
    assert "edited: migrations/versions/a2_test.py" in errors[0]
    assert "inserted: migrations/versions/b1_sneaky.py" in errors[1]


def git_short(root: Path) -> str:
    return git(root, "rev-parse", "main").strip()[:8]


def test_the_pre_commit_hook_runs_as_shipped(project: Path) -> None:
    """``reynard-db-history`` from ``.pre-commit-hooks.yaml``, with the README's ``args``."""
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    [hook] = [h for h in hooks if h["id"] == "reynard-db-history"]
    argv = [*shlex.split(hook["entry"]), "--base", "main"]
    assert re.search(hook["files"], "migrations/versions/a2_test.py")
    passed = subprocess.run(argv, cwd=project, env=clean_env(), capture_output=True, text=True)
    assert passed.returncode == 0 and "history  ok" in passed.stdout, passed.stderr
    path = project / "migrations" / "versions" / "a2_test.py"
    path.write_text(path.read_text().replace("'x'", "'y'"))
    failed = subprocess.run(argv, cwd=project, env=clean_env(), capture_output=True, text=True)
    assert failed.returncode == 1 and "edited: migrations/versions/a2_test.py" in failed.stdout
    assert failed.stderr == ""


def test_the_pytest_items_run_it_with_a_base(project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.reynard-db]\nbase = "main"\n' + REGISTRY)
    (project / "migrations" / "versions" / "a3_test.py").unlink()
    result = run_pytest(project, "--reynard-db-checks", "-k", "history", "-rA")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "reynard-db::app::history FAILED" in result.stdout or (
        "FAILED reynard-db::app::history" in result.stdout
    ), result.stdout
    assert "removed: migrations/versions/a3_test.py: revision a3 is in main" in result.stdout


def test_a_child_interpreter_compares_with_the_base_it_was_given(project: Path) -> None:
    """``check --base`` with several databases runs each database's checks in a child
    (``checks.isolated``): the base given on the command line goes with them."""
    (project / "migrations" / "versions" / "a3_test.py").unlink()
    registry = replace(load_registry(project), base="main")
    [result] = run_isolated(registry, registry.get("app"), None, ["history"])
    assert result.status == "failed", result
    assert "removed: migrations/versions/a3_test.py: revision a3 is in main" in result.message


@pytest.mark.parametrize("value", ["3", '""', '["origin/main"]'])
def test_a_base_that_is_not_a_ref_is_one_line(project: Path, cli: Cli, value: str) -> None:
    (project / "pyproject.toml").write_text(f"[tool.reynard-db]\nbase = {value}\n" + REGISTRY)
    code, out, err = cli("check", "--only", "history")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"reynard-migrate: error: {project / 'pyproject.toml'}: [tool.reynard-db]: base must be "
        'a git ref such as "origin/main"'
    ]


def test_a_project_in_a_subfolder_of_the_repository(project: Path, cli: Cli) -> None:
    """A monorepo: the repository's top is above the project (paths are the top's)."""
    subprocess.run(["rm", "-rf", str(project / ".git")], check=True)
    top = project.parent
    git(top, "init", "-q", "-b", "main")
    git(top, "add", "app")
    git(top, "commit", "-q", "-m", "shipped")
    path = project / "migrations" / "versions" / "a1_test.py"
    path.write_text(path.read_text().replace("'t'", "'renamed'", 1))
    code, result, err = history(cli, "--base", "main")
    assert code == 1, result
    assert "edited: migrations/versions/a1_test.py: revision a1 changed since main" in str(
        result["message"]
    )
    assert err == ""


def test_an_import_added_to_a_shipped_revision_fails(project: Path, cli: Cli) -> None:
    path = project / "migrations" / "versions" / "a1_test.py"
    path.write_text("import os\n" + path.read_text())
    code, result, _ = history(cli, "--base", "main")
    assert code == 1 and "+import os" in str(result["message"]), result
