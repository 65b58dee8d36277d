"""The opt-in safety checks ``lint`` (Squawk over offline SQL) and ``locks`` (measured).

Real Squawk, real PostgreSQL: each broken tree is a copy of the Reynard main
tree with one revision added on top; ``user_account`` exists (with rows, for
``locks``) before it runs.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pytest_reynard_db.checks import CHECKS, CheckResult, run_checks, select_checks
from pytest_reynard_db.checks.runner import CheckRunner
from pytest_reynard_db.checks.safety.lint import find_squawk
from pytest_reynard_db.checks.safety.locks import locks_reports
from pytest_reynard_db.cli import main
from pytest_reynard_db.foundation.errors import ConfigError
from pytest_reynard_db.foundation.registry import load_registry
from pytest_reynard_db.postgres import EphemeralServer

REPO = Path(__file__).resolve().parents[1]
MAIN_VERSIONS = Path("alembic/main/versions")
HEAD = "3a1400000004"


FILE = "alembic/main/versions/3a1400000099_test.py"


def lint_and_locks(project: Path, server: EphemeralServer) -> dict[str, list[CheckResult]]:
    registry = load_registry(project)
    results = run_checks(registry, [registry.get("main")], server, only=["lint", "locks"])
    return {c: [r for r in results if r.check == c] for c in ("lint", "locks")}


def broken(project: Path, upgrade: str) -> None:
    """Revision 3a1400000099 on top of the main tree, running ``upgrade``."""
    body = textwrap.indent(upgrade, "    ")
    (project / FILE).write_text(
        '"""a revision written by the test"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n"
        f"revision = '3a1400000099'\ndown_revision = {HEAD!r}\n"
        "branch_labels = None\ndepends_on = None\n"
        f"def upgrade() -> None:\n{body}\ndef downgrade() -> None:\n    pass\n"
    )


def assert_both_fail(results: dict[str, list[CheckResult]], table: str, *words: str) -> None:
    for check_id, rows in results.items():
        failed = [r for r in rows if not r.ok]
        assert len(failed) == 1, (check_id, rows)
        result = failed[0]
        assert result.file == FILE and result.revision == "3a1400000099"
        assert result.summary.startswith(f"{FILE}: revision 3a1400000099: ")
        assert f"on {table}" in result.summary, result.message
    locks_message = results["locks"][0].message
    for word in words:
        assert word in locks_message, locks_message


# -- broken on purpose -------------------------------------------------------------------
def test_non_concurrent_index_on_existing_table(project: Path, pg_server: EphemeralServer) -> None:
    broken(
        project, 'op.create_index("ix_user_account_display_name", "user_account", ["display_name"])'
    )
    results = lint_and_locks(project, pg_server)
    assert_both_fail(results, "user_account", "ShareLock", "not rewritten")
    assert "require-concurrent-index-creation" in results["lint"][0].message
    assert "CREATE INDEX ix_user_account_display_name ON user_account" in results["lint"][0].message


def test_not_null_column_without_default(project: Path, pg_server: EphemeralServer) -> None:
    broken(project, 'op.add_column("user_account", sa.Column("nick", sa.Text(), nullable=False))')
    results = lint_and_locks(project, pg_server)
    assert_both_fail(results, "user_account", "migration-failed", "contains null values")
    assert "adding-required-field" in results["lint"][0].message


@pytest.mark.parametrize(
    ("upgrade", "fails"),
    [
        ('op.add_column("user_account", sa.Column("nickname", sa.Text()))', False),
        ('op.alter_column("user_account", "display_name", new_column_name="shown_name")', False),
        # SET NOT NULL reads every row under ACCESS EXCLUSIVE: a long scan under lock
        ('op.alter_column("user_account", "display_name", nullable=False)', True),
    ],
    ids=["nullable-add-column", "rename-column", "set-not-null-scans"],
)
def test_a_brief_exclusive_lock_is_a_note_a_scan_under_it_fails(
    project: Path, pg_server: EphemeralServer, upgrade: str, fails: bool
) -> None:
    """Only a table rewrite or a scan under the lock fail; a catalogue-only ACCESS
    EXCLUSIVE (it still queues behind long transactions) is said as a note."""
    broken(project, upgrade)
    registry = load_registry(project)
    runner = CheckRunner(registry.get("main"), registry, pg_server)
    reports = [r for r in locks_reports(runner) if r.revision == "3a1400000099"]
    assert len(reports) == 1
    report = reports[0]
    assert report.ok is not fails, report
    if fails:
        assert "AccessExclusiveLock" in report.findings[0].message
    else:
        assert report.findings == [] and any("briefly" in n for n in report.notes), report


def test_column_type_change_rewrites(project: Path, pg_server: EphemeralServer) -> None:
    broken(
        project,
        'op.alter_column("user_account", "display_name", type_=sa.BigInteger(), '
        'postgresql_using="length(display_name)")',
    )
    results = lint_and_locks(project, pg_server)
    assert_both_fail(
        results,
        "user_account",
        "AccessExclusiveLock",
        "rewritten (new relfilenode)",
        "table-rewrite",
    )
    assert "changing-column-type" in results["lint"][0].message


def test_foreign_key_without_not_valid(project: Path, pg_server: EphemeralServer) -> None:
    broken(
        project,
        'op.add_column("user_account", sa.Column("boss_id", sa.Integer(), nullable=True))\n'
        'op.execute("UPDATE user_account SET boss_id = id")\n'
        'op.create_foreign_key("fk_boss", "user_account", "user_account", ["boss_id"], ["id"])',
    )
    results = lint_and_locks(project, pg_server)
    assert_both_fail(results, "user_account", "AccessExclusiveLock")
    assert "constraint-missing-not-valid" in results["lint"][0].message


def test_foreign_key_on_existing_tables_is_measured(
    project: Path, pg_server: EphemeralServer
) -> None:
    broken(
        project,
        'op.create_foreign_key("fk_api_key_owner", "api_key", "user_account", ["user_id"], ["id"])',
    )
    results = lint_and_locks(project, pg_server)
    assert_both_fail(results, "api_key", "ShareRowExclusiveLock")
    assert "constraint-missing-not-valid" in results["lint"][0].message


def test_new_table_created_and_indexed_passes_both(
    project: Path, pg_server: EphemeralServer
) -> None:
    broken(
        project,
        'op.create_table("gadget", sa.Column("id", sa.BigInteger(), primary_key=True),\n'
        '    sa.Column("owner_id", sa.Integer(), sa.ForeignKey("user_account.id")),\n'
        '    sa.Column("name", sa.Text(), nullable=False))\n'
        'op.create_index("ix_gadget_name", "gadget", ["name"])',
    )
    results = lint_and_locks(project, pg_server)
    for check_id, rows in results.items():
        assert [r.ok for r in rows] == [True], (check_id, [r.message for r in rows])


# -- waivers ----------------------------------------------------------------------------
def test_a_waiver_silences_exactly_one_rule(project: Path, pg_server: EphemeralServer) -> None:
    broken(
        project,
        "# reynard-db: allow require-concurrent-index-creation -- tested: small table\n"
        'op.create_index("ix_user_account_display_name", "user_account", ["display_name"])\n'
        'op.alter_column("user_account", "display_name", type_=sa.BigInteger(), '
        'postgresql_using="length(display_name)")',
    )
    lint = load_registry(project)
    rows = run_checks(lint, [lint.get("main")], pg_server, only=["lint"])
    assert len(rows) == 1 and not rows[0].ok
    assert "changing-column-type" in rows[0].message
    assert "require-concurrent-index-creation" not in rows[0].message


def test_a_waiver_without_reason_is_a_finding(project: Path, pg_server: EphemeralServer) -> None:
    broken(
        project,
        "# reynard-db: allow require-concurrent-index-creation\n"
        'op.create_index("ix_user_account_display_name", "user_account", ["display_name"])',
    )
    registry = load_registry(project)
    rows = run_checks(registry, [registry.get("main")], pg_server, only=["lint"])
    assert not rows[0].ok
    assert "waiver-without-reason" in rows[0].message
    assert "require-concurrent-index-creation on user_account" in rows[0].message


def test_locks_waiver(project: Path, pg_server: EphemeralServer) -> None:
    broken(
        project,
        "# reynard-db: allow share-lock -- user_account is tiny\n"
        'op.create_index("ix_user_account_display_name", "user_account", ["display_name"])',
    )
    registry = load_registry(project)
    rows = run_checks(registry, [registry.get("main")], pg_server, only=["locks"])
    # 3a1400000003's constant-default ADD COLUMN is a brief lock now: a note, not a finding
    assert [r.ok for r in rows] == [True] and "1 waived, 1 notes" in rows[0].message
    code, markdown = _lint_cli(project, "main", "--only", "locks", "--format", "markdown")
    assert code == 0 and "~~" in markdown, markdown  # a waived finding, struck through


def test_autocommit_block_is_reported_not_measured(
    project: Path, pg_server: EphemeralServer
) -> None:
    broken(
        project,
        "with op.get_context().autocommit_block():\n"
        '    op.create_index("ix_ua_dn", "user_account", ["display_name"], '
        "postgresql_concurrently=True, if_not_exists=True)",
    )
    out = _lint_cli(project, "main", "--format", "json")
    payload = json.loads(out[1])
    mine = [r for r in payload["revisions"] if r["revision"] == "3a1400000099"]
    locks = next(r for r in mine if r["check"] == "locks")
    assert locks["notes"] == ["not measured: autocommit_block (cannot run inside a transaction)"]
    assert all(r["ok"] for r in mine), mine


# -- the shipped trees, config, default-off ----------------------------------------------
@pytest.mark.parametrize("db", ["ecs", "main", "ecs_e2e", "e2e"])
def test_shipped_trees_pass_both(project: Path, pg_server: EphemeralServer, db: str) -> None:
    registry = load_registry(project)
    results = run_checks(registry, [registry.get(db)], pg_server, only=["lint", "locks"])
    assert [r.check for r in results] == ["lint", "locks"]
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]


def test_both_are_off_by_default_and_enabled_in_pyproject(project: Path) -> None:
    registry = load_registry(project)
    assert select_checks() == list(CHECKS)
    assert "lint" not in CHECKS and "locks" not in CHECKS
    assert select_checks(["locks"]) == ["locks"]
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text()
        + '\n[tool.reynard-db.lint]\nenabled = ["lint"]\nexclude = ["ban-drop-column"]\n'
        + 'pg_version = "16"\n'
    )
    registry = load_registry(project)
    assert registry.lint.enabled == ("lint",) and registry.lint.pg_version == "16"
    from pytest_reynard_db.checks import enabled_checks

    assert select_checks(None, enabled_checks(registry)) == [*CHECKS, "lint"]


def test_enabled_lint_runs_in_check_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.reynard-db.lint]\nenabled = ["lint"]\n')
    broken(project, 'op.create_index("ix_ua_dn", "user_account", ["display_name"])')
    code = main(
        ["--project", str(project), "check", "main", "--only", "single_head,lint", "--json"]
    )
    entries = json.loads(capsys.readouterr().out)["results"]
    assert code == 1
    lint = [e for e in entries if e["check"] == "lint"]
    assert lint and lint[0]["file"] == FILE and lint[0]["revision"] == "3a1400000099"


def test_unknown_lint_key_is_a_config_error(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n[tool.reynard-db.lint]\nexclud = []\n")
    with pytest.raises(
        ConfigError, match=r"pyproject.toml: \[tool.reynard-db.lint\]: unknown key 'exclud'"
    ):
        load_registry(project)


def test_unknown_enabled_check_is_a_config_error(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.reynard-db.lint]\nenabled = ["lnt"]\n')
    with pytest.raises(ConfigError, match="enabled: unknown check 'lnt'"):
        load_registry(project)


def test_squawk_is_found() -> None:
    assert Path(find_squawk()).name.startswith("squawk")


# -- the lint verb -----------------------------------------------------------------------
def _lint_cli(project: Path, *args: str) -> tuple[int, str]:
    import io

    out = io.StringIO()
    code = main(["--project", str(project), "lint", *args], stdout=out)
    return code, out.getvalue()


def test_lint_verb_formats(project: Path) -> None:
    broken(project, 'op.create_index("ix_ua_dn", "user_account", ["display_name"])')
    code, table = _lint_cli(project, "main")
    assert code == 1
    assert "main      lint   3a1400000099  FAIL" in table
    assert "require-concurrent-index-creation on user_account" in table
    assert "AccessExclusiveLock, briefly" in table  # 3a1400000003's ADD COLUMN: a note
    code, raw = _lint_cli(project, "main", "--format", "json")
    payload = json.loads(raw)
    assert code == 1 and payload["ok"] is False
    failing = [r for r in payload["revisions"] if not r["ok"]]
    assert {(r["check"], r["file"]) for r in failing} == {("lint", FILE), ("locks", FILE)}
    finding = failing[0]["findings"][0]
    assert finding["table"] == "user_account"
    code, markdown = _lint_cli(project, "main", "--format", "markdown")
    assert markdown.startswith("### Migration safety")
    assert "| main | `3a1400000099` | lint | ❌ FAIL |" in markdown
    assert "```sql" in markdown
    code, clean = _lint_cli(project, "e2e", "--only", "lint")
    assert code == 0 and "all passed" in clean


def test_a_second_connection_in_a_revision_is_not_measured(
    project: Path, pg_server: EphemeralServer
) -> None:
    """A revision migrating on an engine of its own (env.py passes the check's connection)
    would wait on the check's locks: it is stopped, that revision is "not measured" with
    why, and the walk goes on: the revisions before and after are measured."""
    broken(
        project,
        "url = op.get_bind().engine.url\n"
        "with sa.create_engine(url).begin() as own:\n"
        '    own.execute(sa.text("ALTER TABLE user_account ADD COLUMN nick text"))',
    )
    (project / MAIN_VERSIONS / "3a1400000100_after.py").write_text(
        '"""after the one on its own engine"""\n'
        "from alembic import op\n"
        "revision = '3a1400000100'\ndown_revision = '3a1400000099'\n"
        "branch_labels = None\ndepends_on = None\n"
        "def upgrade() -> None:\n"
        '    op.create_index("ix_ua_nick", "user_account", ["nick"])\n'
        "def downgrade() -> None:\n    pass\n"
    )
    registry = load_registry(project)
    runner = CheckRunner(registry.get("main"), registry, pg_server)
    reports = {r.revision: r for r in locks_reports(runner)}
    own = reports["3a1400000099"]
    assert own.ok and not own.checked and own.findings == [], own
    assert own.notes == [
        "not measured: a second connection (opened by env.py or by the revision) waited on "
        "the locks of the check's transaction and was stopped; only the connection passed "
        "to env.py is measured"
    ]
    after = reports["3a1400000100"]  # applied for real before: nick exists, measured
    assert after.checked and not after.ok, after
    assert "share-lock" in after.failures[0].rule and after.failures[0].table == "user_account"
    assert all(r.checked for k, r in reports.items() if k != "3a1400000099")
