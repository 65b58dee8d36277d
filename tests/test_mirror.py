"""mirror.py on real trees in tmp_path: diff, sync, dry runs, pruning, broken sources."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from pytest_reynard_db.foundation.errors import FileConflict, RevisionError
from pytest_reynard_db.foundation.registry import Database
from pytest_reynard_db.migration.mirror import (
    MirrorDiff,
    duplicate_revisions,
    keyed_files,
    leftover_files,
    mirror_diff,
    sync_mirror,
    versions_root,
)

BRANCHES = ("ecs", "naming")


def revision_text(rev: str, down: str | None, message: str = "a revision") -> str:
    return (
        f'"""{message}"""\n\n'
        f'revision: str = "{rev}"\n'
        f"down_revision = {down!r}\n\n\n"
        "def upgrade() -> None:\n    pass\n\n\n"
        "def downgrade() -> None:\n    pass\n"
    )


def make_db(root: Path, name: str, *, mirror_of: str | None = None) -> Database:
    """A Database whose versions live in ``root/alembic/<name>/versions/{ecs,naming}``."""
    script = root / "alembic" / name
    locations = tuple(script / "versions" / branch for branch in BRANCHES)
    for location in locations:
        location.mkdir(parents=True, exist_ok=True)
    return Database(
        name=name,
        ini=root / f"alembic_{name}.ini",
        database=f"reynard_{name}",
        url_env=f"{name.upper()}_DATABASE_URL",
        mirror_of=mirror_of,
        description="",
        script_location=script,
        version_locations=locations,
    )


@pytest.fixture
def dbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Database, Database]:
    """A source with two branches and its mirror, an exact copy of it."""
    monkeypatch.chdir(tmp_path)
    source = make_db(tmp_path, "ecs")
    mirror = make_db(tmp_path, "ecs_e2e", mirror_of="ecs")
    for db in (source, mirror):
        root = versions_root(db)
        (root / "ecs" / "e1_create.py").write_text(revision_text("e1", None))
        (root / "ecs" / "e2_alter.py").write_text(revision_text("e2", "e1"))
        (root / "naming" / "n1_create.py").write_text(revision_text("n1", None))
    return source, mirror


def mtimes(root: Path) -> dict[PurePosixPath, int]:
    return {key: path.stat().st_mtime_ns for key, path in keyed_files(root).items()}


def test_versions_root_is_the_common_parent(dbs: tuple[Database, Database], tmp_path: Path) -> None:
    source, _ = dbs
    assert versions_root(source) == tmp_path / "alembic" / "ecs" / "versions"
    single = make_db(tmp_path, "main")
    single = replace(single, version_locations=single.version_locations[:1])
    assert versions_root(single) == tmp_path / "alembic" / "main" / "versions" / "ecs"


def test_keyed_files_are_relative_and_skip_pycache(tmp_path: Path) -> None:
    (tmp_path / "a" / "__pycache__").mkdir(parents=True)
    (tmp_path / "a" / "x.py").write_text("")
    (tmp_path / "a" / "__pycache__" / "x.py").write_text("")
    (tmp_path / "a" / "notes.txt").write_text("")
    (tmp_path / "a" / ".x.py.swp").write_text("")
    assert keyed_files(tmp_path) == {
        PurePosixPath("a/notes.txt"): tmp_path / "a" / "notes.txt",
        PurePosixPath("a/x.py"): tmp_path / "a" / "x.py",
    }


def test_a_file_a_revision_reads_is_mirrored_and_its_change_seen(
    dbs: tuple[Database, Database],
) -> None:
    """Hostile verdict round 20, F8: a revision that reads ``sql/e3_up.sql`` beside it ran
    under plain Alembic from the source tree, and failed from a mirror that had only its
    ``.py`` files; a change of the ``.sql`` alone was "in sync"."""
    source, mirror = dbs
    sql = versions_root(source) / "ecs" / "sql" / "e3_up.sql"
    sql.parent.mkdir()
    sql.write_text("CREATE VIEW v AS SELECT 1")
    diff = mirror_diff(source, mirror)
    assert diff.missing == (PurePosixPath("ecs/sql/e3_up.sql"),)
    sync_mirror(diff)
    copied = versions_root(mirror) / "ecs" / "sql" / "e3_up.sql"
    assert copied.read_text() == "CREATE VIEW v AS SELECT 1"
    assert mirror_diff(source, mirror).in_sync
    sql.write_text("CREATE VIEW v AS SELECT 2")
    assert mirror_diff(source, mirror).changed == (PurePosixPath("ecs/sql/e3_up.sql"),)


def test_in_sync(dbs: tuple[Database, Database]) -> None:
    diff = mirror_diff(*dbs)
    assert diff.in_sync
    assert (diff.missing, diff.changed, diff.extra) == ((), (), ())
    assert diff.describe() == "ecs_e2e: in sync with ecs"
    assert sync_mirror(diff).written == []


def test_missing_file_is_reported_and_copied(dbs: tuple[Database, Database]) -> None:
    source, mirror = dbs
    new = versions_root(source) / "naming" / "n2_add.py"
    new.write_text(revision_text("n2", "n1"))
    new.chmod(0o640)
    diff = mirror_diff(source, mirror)
    assert diff.missing == (PurePosixPath("naming/n2_add.py"),)
    assert not diff.in_sync
    assert diff.describe() == (
        "ecs_e2e: missing alembic/ecs_e2e/versions/naming/n2_add.py"
        " (in alembic/ecs/versions/naming/n2_add.py)"
    )
    report = sync_mirror(diff)
    copied = versions_root(mirror) / "naming" / "n2_add.py"
    assert report.written == [copied]
    assert copied.read_bytes() == new.read_bytes()
    assert stat.S_IMODE(copied.stat().st_mode) == 0o640
    assert not [p for p in copied.parent.iterdir() if p.name.endswith(".tmp")]
    assert mirror_diff(source, mirror).in_sync


def test_missing_folder_is_created(dbs: tuple[Database, Database]) -> None:
    source, mirror = dbs
    (versions_root(source) / "ecs" / "sub").mkdir()
    (versions_root(source) / "ecs" / "sub" / "e3.py").write_text(revision_text("e3", "e2"))
    sync_mirror(mirror_diff(source, mirror))
    assert (versions_root(mirror) / "ecs" / "sub" / "e3.py").is_file()
    assert mirror_diff(source, mirror).in_sync


def test_changed_file_is_rewritten_and_unchanged_files_are_not(
    dbs: tuple[Database, Database],
) -> None:
    source, mirror = dbs
    edited = versions_root(source) / "ecs" / "e2_alter.py"
    edited.write_text(revision_text("e2", "e1", "edited message"))
    diff = mirror_diff(source, mirror)
    assert diff.changed == (PurePosixPath("ecs/e2_alter.py"),)
    assert "ecs_e2e: differs alembic/ecs_e2e/versions/ecs/e2_alter.py" in diff.describe()
    before = mtimes(versions_root(mirror))
    report = sync_mirror(diff)
    after = mtimes(versions_root(mirror))
    target = versions_root(mirror) / "ecs" / "e2_alter.py"
    assert report.written == [target]
    assert target.read_text() == edited.read_text()
    untouched = {k: v for k, v in before.items() if k != PurePosixPath("ecs/e2_alter.py")}
    assert {k: after[k] for k in untouched} == untouched


def test_extra_file_is_kept_without_prune_and_removed_with_it(
    dbs: tuple[Database, Database],
) -> None:
    source, mirror = dbs
    extra = versions_root(mirror) / "ecs" / "e9_local.py"
    extra.write_text(revision_text("e9", "e2"))
    diff = mirror_diff(source, mirror)
    assert diff.extra == (PurePosixPath("ecs/e9_local.py"),)
    assert diff.describe() == "ecs_e2e: extra alembic/ecs_e2e/versions/ecs/e9_local.py (not in ecs)"
    kept = sync_mirror(diff)
    assert (kept.kept, kept.removed, kept.written) == ([extra], [], [])
    assert extra.is_file()
    pruned = sync_mirror(diff, prune=True)
    assert (pruned.kept, pruned.removed) == ([], [extra])
    assert not extra.exists()
    assert mirror_diff(source, mirror).in_sync


def test_dry_run_writes_nothing(dbs: tuple[Database, Database]) -> None:
    source, mirror = dbs
    (versions_root(source) / "naming" / "n2_add.py").write_text(revision_text("n2", "n1"))
    (versions_root(source) / "ecs" / "e2_alter.py").write_text(revision_text("e2", "e1", "new"))
    extra = versions_root(mirror) / "ecs" / "e9_local.py"
    extra.write_text(revision_text("e9", "e2"))
    mirror_root = versions_root(mirror)
    contents = {k: p.read_bytes() for k, p in keyed_files(mirror_root).items()}
    before = mtimes(mirror_root)
    diff = mirror_diff(source, mirror)
    report = sync_mirror(diff, dry_run=True, prune=True)
    assert report.written == [mirror_root / "naming" / "n2_add.py", mirror_root / "ecs/e2_alter.py"]
    assert report.removed == [extra]
    assert mtimes(mirror_root) == before
    assert {k: p.read_bytes() for k, p in keyed_files(mirror_root).items()} == contents
    assert mirror_diff(source, mirror) == diff


def test_pycache_is_never_copied(dbs: tuple[Database, Database]) -> None:
    source, mirror = dbs
    cache = versions_root(source) / "ecs" / "__pycache__"
    cache.mkdir()
    (cache / "e1_create.cpython-311.py").write_text("junk")
    assert mirror_diff(source, mirror).in_sync
    assert not (versions_root(mirror) / "ecs" / "__pycache__").exists()


def test_files_outside_the_version_locations_are_ignored(
    dbs: tuple[Database, Database],
) -> None:
    source, mirror = dbs
    (versions_root(source) / "stray.py").write_text(revision_text("s1", None))
    assert mirror_diff(source, mirror).in_sync


def test_duplicate_revision_across_branches_names_both_files(
    dbs: tuple[Database, Database],
) -> None:
    source, mirror = dbs
    (versions_root(source) / "naming" / "n2_copy.py").write_text(revision_text("e2", "n1"))
    with pytest.raises(RevisionError) as raised:
        mirror_diff(source, mirror)
    message = str(raised.value)
    assert "\n" not in message
    assert "'e2'" in message
    assert "alembic/ecs/versions/ecs/e2_alter.py" in message
    assert "alembic/ecs/versions/naming/n2_copy.py" in message


def test_duplicate_revisions_reads_plain_and_annotated_assignments(tmp_path: Path) -> None:
    plain, annotated, other = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    plain.write_text('revision = "abc"\n')
    annotated.write_text('import sys\nrevision: str = "abc"\nsys.exit(1)\n')
    other.write_text('def f():\n    revision = "abc"\n')
    assert duplicate_revisions([plain, annotated, other]) == {"abc": [plain, annotated]}
    assert duplicate_revisions([plain, other]) == {}


def test_syntax_error_names_file_and_line(dbs: tuple[Database, Database]) -> None:
    source, mirror = dbs
    broken = versions_root(source) / "ecs" / "e3_broken.py"
    broken.write_text('"""broken"""\nrevision = "e3"\ndef upgrade(:\n    pass\n')
    with pytest.raises(RevisionError) as raised:
        mirror_diff(source, mirror)
    message = str(raised.value)
    assert message.startswith("alembic/ecs/versions/ecs/e3_broken.py:3: syntax error: ")
    assert "\n" not in message


def test_describe_shows_absolute_paths_outside_the_cwd(
    dbs: tuple[Database, Database], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, mirror = dbs
    (versions_root(source) / "ecs" / "e3.py").write_text(revision_text("e3", "e2"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    described = mirror_diff(source, mirror).describe()
    assert str(versions_root(mirror) / "ecs" / "e3.py") in described
    assert os.sep in described


def test_mirror_diff_is_a_value(dbs: tuple[Database, Database]) -> None:
    diff = MirrorDiff(*dbs)
    assert diff.in_sync and diff == mirror_diff(*dbs)


def test_revisions_are_matched_by_id_as_well_as_by_path(dbs: tuple[Database, Database]) -> None:
    """A rename in the source is a rename in the mirror; a mirror-only revision where the
    source has a file is a conflict; a mirror-only file without a revision is a helper."""
    source, mirror = dbs
    src, mir = versions_root(source), versions_root(mirror)
    (src / "ecs" / "e2_alter.py").rename(src / "ecs" / "e2_renamed.py")
    (src / "naming" / "n2_add.py").write_text(revision_text("n2", "n1"))
    (mir / "naming" / "n2_add.py").write_text(revision_text("m2", "n1", "mine"))
    (mir / "ecs" / "helpers.py").write_text("SEED = 1\n")
    diff = mirror_diff(source, mirror)
    assert diff.renamed == ((PurePosixPath("ecs/e2_alter.py"), PurePosixPath("ecs/e2_renamed.py")),)
    assert diff.missing == (PurePosixPath("ecs/e2_renamed.py"),)
    assert [(c.key, c.mirror_revision, c.source_revision) for c in diff.conflicts] == [
        (PurePosixPath("naming/n2_add.py"), "m2", "n2")
    ]
    assert diff.extra == diff.helpers == (PurePosixPath("ecs/helpers.py"),)
    assert diff.changed == ()
    with pytest.raises(
        FileConflict, match=r"naming/n2_add\.py.*naming/n2_add\.py.*nothing written"
    ):
        sync_mirror(diff, dry_run=True)
    (mir / "naming" / "n2_add.py").unlink()
    report = sync_mirror(mirror_diff(source, mirror), prune=True)
    assert report.moved == [(mir / "ecs" / "e2_alter.py", mir / "ecs" / "e2_renamed.py")]
    assert (report.removed, report.helpers) == ([], [mir / "ecs" / "helpers.py"])
    assert not (mir / "ecs" / "e2_alter.py").exists()
    assert duplicate_revisions(keyed_files(mir).values()) == {}


def test_leftover_temp_files_are_found_and_only_those(dbs: tuple[Database, Database]) -> None:
    _, mirror = dbs
    folder = versions_root(mirror) / "ecs"
    leftover = folder / ".e1_create.py.a1b2_c3d.tmp"
    leftover.write_text("half a revision")
    (folder / ".notes.tmp").write_text("someone's")
    assert leftover_files(mirror) == [leftover]
