"""``check --format github``: an annotation on the file and line of each problem.

A ``lint`` failure over two revisions is two annotations, each on its revision's
file and on the line of the statement that touches the table; a drifted mirror is
one annotation per differing file; both without a server (``lint`` and the file
checks need none). ``tests/test_checks.py::test_check_formats_for_ci`` covers a
stairway failure (its ``downgrade`` line) and ``--format junit``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from cli_fork import Cli

VERSIONS = Path("alembic/main/versions")


def revision(project: Path, rev: str, down: str, upgrade: str) -> Path:
    path = project / VERSIONS / f"{rev}_test.py"
    path.write_text(
        '"""a revision written by the test"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = {rev!r}\ndown_revision = {down!r}\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade() -> None:\n{textwrap.indent(upgrade, '    ')}\n\n\n"
        "def downgrade() -> None:\n    pass\n"
    )
    return path


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_lint_findings_are_annotated_on_each_revision_and_statement(
    project: Path, cli: Cli
) -> None:
    first = revision(
        project,
        "3a1400000098",
        "3a1400000004",
        'op.add_column("user_account", sa.Column("x", sa.Integer()))\n'
        'op.create_index("ix_user_account_x", "user_account", ["x"])',
    )
    second = revision(
        project,
        "3a1400000099",
        "3a1400000098",
        'op.alter_column("user_account", "display_name", type_=sa.Text())',
    )
    code, out, err = cli("check", "main", "--only", "lint", "--format", "github")
    assert code == 1, out + err
    lines = out.splitlines()
    assert len(lines) == 2, out
    for line, path, statement in (
        (lines[0], first, "op.create_index"),
        (lines[1], second, "op.alter_column"),
    ):
        where = f"file={path.relative_to(project)},line={line_of(path, statement)}"
        assert line.startswith(f"::error {where},title=main lint::"), line
        assert "%0A" in line and "\n" not in line  # one command, its message's lines escaped


def test_a_drifted_mirror_is_annotated_on_each_file(project: Path, cli: Cli) -> None:
    mirror = project / "alembic/e2e/versions"
    changed = next(p for p in sorted(mirror.rglob("*.py")) if "__" not in p.name)
    changed.write_text(changed.read_text() + "\n# edited in the mirror\n")
    extra = mirror / "3a1400000077_only_here.py"
    extra.write_text("revision = '3a1400000077'\ndown_revision = '3a1400000004'\n")
    code, out, err = cli("check", "e2e", "--only", "mirror_sync", "--format", "github")
    assert code == 1, out + err
    files = [line.split(",", 1)[0] for line in out.splitlines()]
    assert files == [
        f"::error file={changed.relative_to(project)}",
        f"::error file={extra.relative_to(project)}",
    ], out
    assert all(
        ",line=1,title=e2e mirror_sync::out of sync with main" in x for x in out.splitlines()
    )


def test_a_pass_says_so_on_stderr_and_annotates_nothing(cli: Cli) -> None:
    """A passing ``--format github`` step printed nothing at all: its log did not say it
    ran (the third new user's trial, issue 24). Annotations stay alone on stdout; the
    tally goes to stderr."""
    code, out, err = cli("check", "main", "--only", "single_head", "--format", "github")
    assert code == 0, out + err
    assert out == ""
    assert err.strip().splitlines()[-1] == "1 check, all passed", err
