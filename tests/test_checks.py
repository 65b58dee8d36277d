"""The migration checks (the README's "Migration checks") on copies of the Reynard trees,
some broken on purpose.

Real server, real Alembic: each broken tree is a copy in tmp_path with one
revision file added, removed or edited, and the check it targets must fail
with the names a developer needs in its message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_fork import Cli
from reynard_trees import admin_url, scratch_databases, stairway_of, write_revision

from pytest_reynard_db.checks import CHECKS, CheckResult, run_check, run_checks, select_checks
from pytest_reynard_db.checks.heads import expected_heads
from pytest_reynard_db.checks.runner import CheckRunner
from pytest_reynard_db.cli import main
from pytest_reynard_db.foundation.errors import ConfigError
from pytest_reynard_db.foundation.registry import Registry, load_registry
from pytest_reynard_db.postgres import EphemeralServer, ExistingServer
from pytest_reynard_db.postgres.server import scratch_name

MAIN_VERSIONS = Path("alembic/main/versions")
ECS_VERSIONS = Path("alembic/ecs/versions")


def check(
    project: Path | Registry, server: EphemeralServer, db: str, *only: str
) -> list[CheckResult]:
    registry = project if isinstance(project, Registry) else load_registry(project)
    return run_checks(registry, [registry.get(db)], server, only=only or None)


def one(results: list[CheckResult]) -> CheckResult:
    assert len(results) == 1, results
    return results[0]


# -- the shipped trees -----------------------------------------------------------------
def test_every_check_passes_on_the_shipped_trees(project: Path, pg_server: EphemeralServer) -> None:
    registry = load_registry(project)
    seen: list[tuple[str, str]] = []
    steps: dict[tuple[str, str], list[tuple[int, int]]] = {}

    def progress(
        database: str, check: str, done: int | None = None, total: int | None = None
    ) -> None:
        if done is None or total is None:
            seen.append((database, check))
        else:
            steps.setdefault((database, check), []).append((done, total))

    results = run_checks(registry, registry.select(), pg_server, progress=progress)
    failed = [r for r in results if not r.ok]
    assert not failed, "\n".join(f"{r.database} {r.check}: {r.message}" for r in failed)
    ran = {(r.database, r.check) for r in results}
    for name in ("ecs", "ecs_e2e", "main", "e2e"):
        for check_id in ("single_head", "upgrade", "stairway", "downgrade_clean", "models_match"):
            assert (name, check_id) in ran
    # mirror_sync applies to mirrors only: no entry for a database that mirrors nothing
    assert {r.database for r in results if r.check == "mirror_sync"} == {"ecs_e2e", "e2e"}
    assert len(seen) == 4 * len(CHECKS)
    # the stairway says each revision as it goes, through the child interpreters too
    assert steps[("main", "stairway")] == [(n, 4) for n in range(1, 5)]
    assert scratch_databases(pg_server) == []  # every throw-away database was dropped


def test_ecs_tree_with_three_labelled_branches_and_depends_on_passes(
    project: Path, pg_server: EphemeralServer
) -> None:
    stair = one(check(project, pg_server, "ecs", "stairway"))
    assert stair.ok, stair.message
    assert "12 revisions" in stair.message
    head = one(check(project, pg_server, "ecs", "single_head"))
    assert head.ok and "(naming)" in head.message and "(agents)" in head.message


def test_checks_never_read_the_production_url(
    project: Path, pg_server: EphemeralServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bogus = "postgresql://prod:secret@production.invalid:1/reynard_ecs"
    monkeypatch.setenv("ECS_DATABASE_URL", bogus)
    results = check(project, pg_server, "ecs")
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]
    assert os.environ["ECS_DATABASE_URL"] == bogus  # restored after each migration


def test_check_ecs_passes_with_a_bogus_production_url_in_a_child_process(
    project: Path, cli: Cli
) -> None:
    env = {**os.environ, "ECS_DATABASE_URL": "postgresql://prod@production.invalid:1/reynard_ecs"}
    code, out, err = cli("check", "ecs", env=env)
    assert code == 0, out + err
    assert "5 checks, all passed" in out


# -- single_head -----------------------------------------------------------------------
def test_single_head_fails_on_two_heads_in_one_branch(
    project: Path, pg_server: EphemeralServer
) -> None:
    path = write_revision(project / ECS_VERSIONS / "ecs", "ec5000000099", "ec5000000003")
    result = one(check(project, pg_server, "ecs", "single_head"))
    assert not result.ok
    assert result.summary == (
        "branch 'ecs' has 2 heads: ec5000000004, ec5000000099 (common ancestor ec5000000003)"
    )
    assert "ec5000000004: alembic/ecs/versions/ecs/ec5000000004_add_component_version.py" in (
        result.message
    )
    assert f"ec5000000099: {path.relative_to(project)}" in result.message
    assert "merge them: reynard-migrate merge ecs ec5000000004 ec5000000099" in result.message
    # the other branches are not blamed
    assert "naming" not in result.message and "agents" not in result.message


def test_single_head_fails_on_two_unlabelled_heads(
    project: Path, pg_server: EphemeralServer
) -> None:
    write_revision(project / MAIN_VERSIONS, "3a1400000099", "3a1400000002")
    result = one(check(project, pg_server, "main", "single_head"))
    assert not result.ok
    assert result.summary == (
        "the tree (no branch label) has 2 heads: 3a1400000004, 3a1400000099"
        " (common ancestor 3a1400000002)"
    )
    assert "reynard-migrate merge main 3a1400000004 3a1400000099" in result.message


def test_single_head_fails_on_a_fork_whose_one_side_is_labelled(
    project: Path, pg_server: EphemeralServer
) -> None:
    """Hostile verdict round 20, F9: heads grouped by label let a trunk fork pass when one
    side carries a label (a merge into the trunk inherits the merged branch's; a label added
    on the trunk's tip), where ``alembic upgrade head`` fails on "multiple head revisions"."""
    versions = project / MAIN_VERSIONS
    # a labelled branch of its own base, merged into the trunk (the merge takes its label),
    # while another revision was added on the trunk's head
    write_revision(versions, "b11100000001", None, labels="billing")
    write_revision(versions, "3a14000000ff", ("3a1400000004", "b11100000001"))
    write_revision(versions, "3a1400000098", "3a1400000004")
    result = one(check(project, pg_server, "main", "single_head"))
    assert not result.ok, result.message
    assert "3a1400000098" in result.summary and "3a14000000ff" in result.summary, result.summary
    assert "common ancestor 3a1400000004" in result.summary, result.summary
    assert "reynard-migrate merge main 3a1400000098 3a14000000ff" in result.message


def test_single_head_fails_on_a_label_added_on_one_side_of_a_fork(
    project: Path, pg_server: EphemeralServer
) -> None:
    versions = project / MAIN_VERSIONS
    write_revision(versions, "3a1400000005", "3a1400000004", labels="core")
    write_revision(versions, "3a1400000098", "3a1400000002")
    result = one(check(project, pg_server, "main", "single_head"))
    assert not result.ok, result.message
    assert "common ancestor 3a1400000002" in result.summary, result.summary


def test_single_head_passes_a_labelled_branch_started_from_a_trunk_revision(
    project: Path, pg_server: EphemeralServer
) -> None:
    """Alembic's "Working with Branch Labels" layout (and ``create --new-branch L --from
    REV``): the branch's first revision carries its label, from a trunk revision; a fork
    only when the labelled side's first revision after the common ancestor has none
    (review of 42e1066)."""
    write_revision(project / MAIN_VERSIONS, "5c0000000001", "3a1400000002", labels="shop")
    result = one(check(project, pg_server, "main", "single_head"))
    assert result.ok, result.message
    assert result.message == "one head per branch: 3a1400000004, 5c0000000001 (shop)"


def test_single_head_passes_a_labelled_branch_of_its_own_base_beside_the_trunk(
    project: Path, pg_server: EphemeralServer
) -> None:
    """Heads of separate lineages are separate branches (``upgrade heads`` takes both)."""
    write_revision(project / MAIN_VERSIONS, "b11100000001", None, labels="billing")
    result = one(check(project, pg_server, "main", "single_head"))
    assert result.ok, result.message
    assert result.message == "one head per branch: 3a1400000004, b11100000001 (billing)"


# -- mirror_sync -----------------------------------------------------------------------
def test_mirror_sync_lists_missing_changed_and_extra_files(
    project: Path, pg_server: EphemeralServer
) -> None:
    mirror = project / "alembic/e2e/versions"
    (mirror / "3a1400000004_seed_system_user.py").unlink()
    write_revision(mirror, "3a1400000099", "3a1400000004")
    changed = mirror / "3a1400000002_create_api_key_table.py"
    changed.write_text(changed.read_text() + "\n# edited in the mirror\n")
    result = one(check(project, pg_server, "e2e", "mirror_sync"))
    assert not result.ok
    assert "1 missing, 1 changed, 1 extra" in result.message
    assert "missing: alembic/e2e/versions/3a1400000004_seed_system_user.py" in result.message
    assert "changed: alembic/e2e/versions/3a1400000002_create_api_key_table.py" in result.message
    assert "extra: alembic/e2e/versions/3a1400000099_test.py" in result.message
    assert "reynard-migrate copy e2e" in result.message
    assert check(project, pg_server, "main", "mirror_sync") == []  # main mirrors nothing


def test_mirror_sync_fails_where_the_same_files_load_as_other_revisions(
    project: Path, pg_server: EphemeralServer
) -> None:
    """Hostile verdict round 20, F7: the source's ini adds a folder to version_locations,
    ``copy`` copies it, the mirror's ini does not name it: same files, other heads."""
    ini = project / "alembic_main.ini"
    located = "version_locations = %(here)s/alembic/main/versions\n"
    assert located in ini.read_text()
    ini.write_text(
        ini.read_text().replace(
            located, f"{located.rstrip()}{os.pathsep}%(here)s/alembic/main/versions/billing\n"
        )
    )
    for versions in ("alembic/main/versions", "alembic/e2e/versions"):
        write_revision(project / versions / "billing", "b11100000001", "3a1400000004")
    result = one(check(project, pg_server, "e2e", "mirror_sync"))
    assert not result.ok, result.message
    assert "alembic_e2e.ini loads other revisions (not loaded: b11100000001)" in result.message


# -- upgrade ---------------------------------------------------------------------------
def test_upgrade_fails_naming_the_revision_file_and_the_database_error(
    project: Path, pg_server: EphemeralServer
) -> None:
    path = write_revision(
        project / MAIN_VERSIONS, "3a1400000099", "3a1400000004", 'op.drop_table("no_such_table")'
    )
    result = one(check(project, pg_server, "main", "upgrade"))
    assert not result.ok
    assert result.revision == "3a1400000099"
    assert result.file == str(path.relative_to(project))
    assert "no_such_table" in result.message and "does not exist" in result.message


# -- stairway --------------------------------------------------------------------------
def test_stairway_fails_at_re_up_when_a_downgrade_forgets_a_column(
    project: Path, pg_server: EphemeralServer
) -> None:
    path = write_revision(
        project / MAIN_VERSIONS,
        "3a1400000099",
        "3a1400000004",
        'op.add_column("user_account", sa.Column("nickname", sa.String(50)))',
        "pass  # forgets to drop the column",
    )
    result = one(check(project, pg_server, "main", "stairway"))
    assert not result.ok
    assert result.revision == "3a1400000099"
    assert result.file == str(path.relative_to(project))
    assert result.message.startswith(f"{path.relative_to(project)}: revision 3a1400000099, re-up")
    assert 'column "nickname" of relation "user_account" already exists' in result.message


def test_stairway_fails_at_down_step_on_a_downgrade_error(
    project: Path, pg_server: EphemeralServer
) -> None:
    write_revision(
        project / MAIN_VERSIONS, "3a1400000099", "3a1400000004", "pass", 'op.drop_table("nope")'
    )
    result = one(check(project, pg_server, "main", "stairway"))
    assert not result.ok
    assert "revision 3a1400000099, down step" in result.message
    assert '"nope" does not exist' in result.message


def test_stairway_passes_through_a_merge_revision(
    project: Path, pg_server: EphemeralServer
) -> None:
    versions = project / MAIN_VERSIONS
    write_revision(
        versions,
        "3a1400000005",
        "3a1400000003",
        'op.create_table("side", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("side")',
    )
    write_revision(
        versions,
        "3a1400000006",
        ("3a1400000004", "3a1400000005"),
        'op.add_column("side", sa.Column("note", sa.Text))',
        'op.drop_column("side", "note")',
    )
    results = {r.check: r for r in check(project, pg_server, "main", "single_head", "stairway")}
    assert results["single_head"].ok, results["single_head"].message
    assert results["stairway"].ok, results["stairway"].message
    assert "6 revisions" in results["stairway"].message


def test_stairway_passes_a_labelled_branch_with_depends_on_and_a_merge_into_it(
    project: Path, pg_server: EphemeralServer
) -> None:
    """A new labelled base depending on another branch, and a merge of two of its revisions."""
    folder = project / ECS_VERSIONS / "extra"
    folder.mkdir()
    ini = project / "alembic_ecs.ini"
    ini.write_text(
        ini.read_text().replace(
            "%(here)s/alembic/ecs/versions/agents",
            "%(here)s/alembic/ecs/versions/agents:%(here)s/alembic/ecs/versions/extra",
        )
    )
    write_revision(folder, "e7000000001", None, labels="extra", depends_on="4a3e00000002")
    write_revision(folder, "e7000000002", "e7000000001")
    write_revision(folder, "e7000000003", "e7000000001")
    write_revision(folder, "e7000000004", ("e7000000002", "e7000000003"))
    result = one(check(project, pg_server, "ecs", "stairway"))
    assert result.ok, result.message
    assert "16 revisions" in result.message


def test_stairway_reports_broken_revisions_in_two_branches_and_walks_what_builds_on_them(
    project: Path, pg_server: EphemeralServer
) -> None:
    """Broken heads of the ``ecs`` and ``agents`` branches: both reported, and a revision on
    top of the first (its upgrade works, so it is reachable) is walked and found broken too."""
    ecs, agents = project / ECS_VERSIONS / "ecs", project / ECS_VERSIONS / "agents"
    first = write_revision(
        ecs,
        "ec5000000099",
        "ec5000000004",
        'op.add_column("entity", sa.Column("nick", sa.String(50)))',
        "pass  # forgets the column",
    )
    above = write_revision(
        ecs, "ec50000000a0", "ec5000000099", "pass", 'op.drop_table("gone_from_ecs")'
    )
    other = write_revision(
        agents,
        "a6e400000099",
        "a6e400000004",
        'op.add_column("agent", sa.Column("mood", sa.String(50)))',
        "pass  # forgets the column",
    )
    results, made = stairway_of(project, pg_server, "ecs", count="made")
    assert [r.ok for r in results] == [False, False, False], results
    by_revision = {r.revision: r for r in results}
    assert set(by_revision) == {"ec5000000099", "ec50000000a0", "a6e400000099"}
    for path, step, error in (
        (first, "re-up", 'column "nick" of relation "entity" already exists'),
        (above, "down", 'table "gone_from_ecs" does not exist'),
        (other, "re-up", 'column "mood" of relation "agent" already exists'),
    ):
        result = next(r for r in results if r.file == str(path.relative_to(project)))
        assert result.summary.startswith(f"{result.file}: revision {result.revision}, {step} step")
        assert error in result.message, result.message
        assert "stairway: 3 of 15 revisions broken" in result.message
    assert "not reached" not in "".join(r.message for r in results)
    assert made == 1 + 3  # one database, and one rebuild per broken revision
    assert scratch_databases(pg_server) == []


def test_stairway_reports_every_broken_revision_of_one_chain(
    project: Path, pg_server: EphemeralServer
) -> None:
    """One chain: a downgrade that forgets a column, one that fails, an upgrade that fails,
    and a revision needing that last one (not reached); the one after the first two is walked."""
    versions = project / MAIN_VERSIONS
    write_revision(
        versions,
        "3a1400000099",
        "3a1400000004",
        'op.add_column("user_account", sa.Column("nickname", sa.String(50)))',
        "pass  # forgets to drop the column",
    )
    write_revision(versions, "3a140000009a", "3a1400000099", "pass", 'op.drop_table("nope")')
    write_revision(versions, "3a140000009b", "3a140000009a", 'op.drop_table("never_there")')
    write_revision(versions, "3a140000009c", "3a140000009b")
    write_revision(versions, "3a140000009d", "3a140000009c")
    results, made = stairway_of(project, pg_server, "main", count="made")
    assert [(r.revision, r.ok) for r in results] == [
        ("3a1400000099", False),
        ("3a140000009a", False),
        ("3a140000009b", False),
    ]
    steps = [r.summary.split(", ")[1].split(":")[0] for r in results]
    assert steps == ["re-up step", "down step", "up step"]
    assert 'table "never_there" does not exist' in results[2].message
    assert "not reached (they need it): 3a140000009c, 3a140000009d" in results[2].message
    assert "stairway: 3 of 9 revisions broken, 2 not reached" in results[0].message
    assert made == 4


def test_stairway_on_a_sound_tree_makes_one_database(
    project: Path, pg_server: EphemeralServer
) -> None:
    """Linear cost: nothing broken, nothing rebuilt (one database, one walk)."""
    results, made = stairway_of(project, pg_server, "ecs", count="made")
    assert [r.ok for r in results] == [True] and made == 1


def test_cli_check_json_has_one_stairway_entry_per_broken_revision(
    project: Path, pg_server: EphemeralServer, capsys: pytest.CaptureFixture[str]
) -> None:
    versions = project / MAIN_VERSIONS
    write_revision(versions, "3a1400000099", "3a1400000004", "pass", 'op.drop_table("nope")')
    write_revision(versions, "3a140000009a", "3a1400000099", "pass", 'op.drop_table("nope")')
    admin = pg_server.url.render_as_string(hide_password=False)
    argv = ["--project", str(project), "check", "main", "--url", admin, "--only", "stairway"]
    assert main([*argv, "--json"]) == 1
    entries = json.loads(capsys.readouterr().out)["results"]
    assert [(e["check"], e["ok"], e["revision"], e["file"]) for e in entries] == [
        ("stairway", False, "3a1400000099", "alembic/main/versions/3a1400000099_test.py"),
        ("stairway", False, "3a140000009a", "alembic/main/versions/3a140000009a_test.py"),
    ]


def test_expected_heads_follow_depends_on(project: Path) -> None:
    registry = load_registry(project)
    script = CheckRunner(registry.get("ecs"), registry, None).script
    assert expected_heads(script, {"ec5000000001", "a6e400000001"}) == {"a6e400000001"}
    assert expected_heads(script, {"ec5000000001", "ec5000000002", "a6e400000001"}) == {
        "a6e400000001",
        "ec5000000002",
    }
    assert expected_heads(script, set()) == set()


# -- downgrade_clean -------------------------------------------------------------------
def test_downgrade_clean_names_an_enum_type_left_behind(
    project: Path, pg_server: EphemeralServer
) -> None:
    write_revision(
        project / MAIN_VERSIONS,
        "3a1400000099",
        "3a1400000004",
        "op.execute(\"CREATE TYPE mood AS ENUM ('calm', 'angry')\")\n"
        'op.execute("CREATE SEQUENCE ticket_seq")\n'
        "op.execute(\"CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42'\")",
        'op.execute("DROP SEQUENCE ticket_seq")  # forgets the type and the function',
    )
    result = one(check(project, pg_server, "main", "downgrade_clean"))
    assert not result.ok
    assert "enum type public.mood" in result.message
    assert "function public.answer()" in result.message
    assert "ticket_seq" not in result.message
    assert "user_account" not in result.message  # the rest of the tree is clean


# -- models_match ----------------------------------------------------------------------
TINY_PYPROJECT = """\
[tool.reynard-db.databases.tiny]
ini = "alembic_tiny.ini"
database = "tiny"
url_env = "TINY_DATABASE_URL"
"""

TINY_INI = """\
[alembic]
script_location = %(here)s/tiny_alembic
path_separator = os
prepend_sys_path = .
sqlalchemy.url = postgresql+psycopg://localhost/tiny
"""

TINY_ENV = """\
import os

from alembic import context
from sqlalchemy import create_engine, pool

from {module} import metadata

config = context.config


def run(connection):
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = os.environ.get("TINY_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        run(conn)
    engine.dispose()
"""

TINY_MODELS = """\
import sqlalchemy as sa

metadata = sa.MetaData()
widget = sa.Table(
    "widget",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(80), nullable=False),  # the migration says 50
    sa.Column("color", sa.String(20)),  # no migration creates it
)
"""


def tiny_project(root: Path, module: str) -> Path:
    """A self-contained project: one tree, one revision, models in ``module``."""
    (root / "pyproject.toml").write_text(TINY_PYPROJECT)
    (root / "alembic_tiny.ini").write_text(TINY_INI)
    (root / "tiny_alembic" / "versions").mkdir(parents=True)
    (root / "tiny_alembic" / "env.py").write_text(TINY_ENV.format(module=module))
    (root / f"{module}.py").write_text(TINY_MODELS)
    write_revision(
        root / "tiny_alembic" / "versions",
        "71a000000001",
        None,
        'op.create_table("widget", sa.Column("id", sa.Integer, primary_key=True),\n'
        '    sa.Column("name", sa.String(50), nullable=False))',
        'op.drop_table("widget")',
    )
    return root


def test_models_match_lists_a_model_column_no_migration_creates(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    project = tiny_project(tmp_path, f"tiny_models_{tmp_path.name.replace('-', '_')}")
    results = {r.check: r for r in check(project, pg_server, "tiny")}
    failed = {name for name, r in results.items() if not r.ok}
    assert failed == {"models_match"}, {n: results[n].message for n in failed}
    message = results["models_match"].message
    assert "2 differences" in message
    assert "\n  add column widget.color (VARCHAR(20))" in message
    assert "\n  change type of widget.name: VARCHAR(50) -> VARCHAR(80)" in message


# -- robustness ------------------------------------------------------------------------
def test_a_broken_revision_file_is_a_failed_result_not_a_traceback(
    project: Path, pg_server: EphemeralServer
) -> None:
    broken = project / MAIN_VERSIONS / "3a1400000099_broken.py"
    broken.write_text("revision = '3a1400000099'\ndown_revision = (\n")
    results = check(project, pg_server, "main", "single_head", "upgrade", "stairway")
    assert [r.check for r in results] == ["single_head", "upgrade", "stairway"]
    for result in results:
        assert not result.ok
        assert "syntax error" in result.message and "3a1400000099_broken.py" in result.message
        assert "main" in result.message


def test_unknown_check_ids_raise_a_config_error_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown check 'stairs'.*single_head, mirror_sync"):
        select_checks(["stairs"])
    assert select_checks(["models_match", "upgrade"]) == ["upgrade", "models_match"]


def test_scratch_names_are_valid_and_distinct() -> None:
    long = scratch_name("a" * 80, "downgrade_clean")
    assert long.startswith("test_check_aaa") and len(long) <= 63
    assert scratch_name("ecs", "stairway") != scratch_name("ecs", "stairway")
    assert scratch_name("My-DB", "upgrade").startswith("test_check_my_db_upgrade_")


# -- the CLI ---------------------------------------------------------------------------
def test_cli_check_json_on_the_shipped_trees_matches_the_spec(
    project: Path, cli: Cli, pg_server: EphemeralServer
) -> None:
    code, out, err = cli("check", "--json", "--url", admin_url(pg_server))
    assert code == 0, err
    document = json.loads(out)  # nothing but the JSON on stdout
    assert list(document) == ["results"]
    entries = document["results"]
    assert len(entries) == 4 * 5 + 2
    for entry in entries:
        assert list(entry) == [
            "database", "check", "ok", "message", "revision", "file",
            "line", "function", "status", "places",
        ]  # fmt: skip
        assert entry["ok"] is True and entry["revision"] is None and entry["file"] is None
        assert entry["status"] == "ok" and entry["line"] is None and entry["places"] == []
    assert [e["check"] for e in entries if e["database"] == "e2e"] == list(CHECKS)
    assert [e["check"] for e in entries if e["database"] == "main"] == [
        c for c in CHECKS if c != "mirror_sync"
    ]


def test_cli_check_on_an_existing_server_prints_a_table_and_exits_1_on_failure(
    project: Path, pg_server: EphemeralServer, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = pg_server.url.render_as_string(hide_password=False)
    argv = ["--project", str(project), "check", "main", "--url", admin]
    assert main([*argv, "--only", "upgrade,stairway"]) == 0
    out = capsys.readouterr().out
    assert "main      upgrade   ok" in out and "2 checks, all passed" in out
    write_revision(
        project / MAIN_VERSIONS,
        "3a1400000099",
        "3a1400000004",
        'op.add_column("user_account", sa.Column("nickname", sa.String(50)))',
    )
    assert main([*argv, "--only", "stairway", "--json"]) == 1
    entry = one_entry(capsys.readouterr().out)
    assert entry["check"] == "stairway" and entry["ok"] is False
    assert entry["file"] == "alembic/main/versions/3a1400000099_test.py"
    assert scratch_databases(pg_server) == []


def test_cli_check_rejects_an_unknown_check_id(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--project", str(project), "check", "--only", "upgrade,nope"]) == 2
    assert "unknown check 'nope'" in capsys.readouterr().err


def one_entry(stdout: str) -> dict[str, object]:
    entries = json.loads(stdout)["results"]
    assert len(entries) == 1
    entry: dict[str, object] = entries[0]
    return entry


ELSEWHERE_ENV = '''\
"""An env.py that ignores what it is given and migrates a SQLite file of its own."""
from alembic import context
from sqlalchemy import create_engine

engine = create_engine("sqlite:///" + context.config.get_main_option("here", ".") + "/other.db")
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''


def test_env_py_migrating_elsewhere_fails_upgrade_and_stairway(
    project: Path, pg_server: EphemeralServer
) -> None:
    """An "ok base -> base" is impossible: the SQLite file is refused before it is created,
    in one line naming env.py's line (more in ``test_check_targets.py``)."""
    (project / "alembic/main/env.py").write_text(ELSEWHERE_ENV)
    for revision in (project / MAIN_VERSIONS).glob("*.py"):
        revision.unlink()  # SQLite could run the real ones; one trivial revision will do
    write_revision(project / MAIN_VERSIONS, "3a1400000005", None)
    names = ("upgrade", "stairway", "downgrade_clean", "models_match")
    results = {r.check: r for r in check(project, pg_server, "main", *names)}
    for name in names:
        assert not results[name].ok, results[name]
        assert results[name].message == (
            f"database 'main': alembic/main/env.py:6: refused a connection to "
            f"sqlite:///{project}/other.db: a check may reach only its throw-away database "
            "(its own production URL is sent there)"
        )
        assert results[name].file == "alembic/main/env.py"
    assert not (project / "alembic/main/other.db").exists() and not (project / "other.db").exists()


def test_check_formats_for_ci(project: Path, pg_server: EphemeralServer, cli: Cli) -> None:
    """``--format github`` annotates the revision file on its ``downgrade`` line (the step
    that failed); ``--format junit`` is JUnit XML with the failure inside its test case."""
    import xml.etree.ElementTree as ET

    path = write_revision(
        project / MAIN_VERSIONS, "3a1400000099", "3a1400000004", "pass", 'op.drop_table("nope")'
    )
    downgrade_line = path.read_text().splitlines().index("def downgrade() -> None:") + 1
    admin = pg_server.url.render_as_string(hide_password=False)
    only = ("--only", "single_head,stairway", "--url", admin)
    code, out, err = cli("check", "main", *only, "--format", "github")
    assert code == 1, out + err
    [annotation] = out.splitlines()
    assert annotation.startswith(
        f"::error file={path.relative_to(project)},line={downgrade_line},title=main stairway::"
    ), annotation
    assert "down step" in annotation and "\n" not in annotation
    code, out, err = cli("check", "main", *only, "--format", "junit")
    assert code == 1, out + err
    suite = ET.fromstring(out).find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "2"
    failure = suite.find("testcase[@name='stairway']/failure")
    assert failure is not None and "down step" in (failure.text or "")


class _SignalledAfterCreate(ExistingServer):
    """A shared server where a signal lands the moment ``CREATE DATABASE`` returns,
    before the harness has noted the database as its own (SIGTERM's handler raises)."""

    def _make(self, name: str, template: str | None, *, end_sessions: bool) -> None:
        super()._make(name, template, end_sessions=end_sessions)
        raise KeyboardInterrupt


def test_a_signal_just_after_a_throw_away_database_is_made_leaves_no_database(
    project: Path, pg_server: EphemeralServer
) -> None:
    registry = load_registry(project)
    server = _SignalledAfterCreate(admin_url(pg_server))
    runner = CheckRunner(registry.get("main"), registry, server, run_id="r1a2b3")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_check(runner, "stairway")
    finally:
        server.close()
    assert scratch_databases(pg_server) == []


def test_a_throw_away_name_taken_on_a_shared_server_is_not_dropped(
    project: Path, pg_server: EphemeralServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The throw-away database's CREATE fails (its name is taken: somebody's database):
    the check fails, and that database, which this run did not create, is left as it was."""
    taken = "test_check_someone_elses"
    pg_server.create_database(taken)
    try:
        monkeypatch.setattr("pytest_reynard_db.postgres.server.scratch_name", lambda *a: taken)
        registry = load_registry(project)
        server = ExistingServer(admin_url(pg_server))
        try:
            [result] = run_check(CheckRunner(registry.get("main"), registry, server), "stairway")
        finally:
            server.close()
        assert not result.ok and "already exists" in result.message, result
        assert scratch_databases(pg_server) == [taken]
    finally:
        pg_server.drop_database(taken)
