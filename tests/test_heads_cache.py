"""A template's heads, remembered by its tree's digest: a warm start loads no tree."""

from __future__ import annotations

import os
from pathlib import Path

from reynard_trees import write_revision

from pytest_reynard_db.foundation.registry import load_registry
from pytest_reynard_db.provisioning.resolve import HEADS_KEPT, Resolved, heads_at, tree_digest

MAIN_HEAD = "3a1400000004"


def _heads(project: Path, cache: Path, revision: str = "heads") -> tuple[tuple[str, ...], bool]:
    """``main``'s heads as a new run finds them (a registry read afresh), and whether the
    tree had to be loaded for them."""
    target = Resolved.of(load_registry(project), "main", "copy")
    digest = tree_digest(target.tree, revision, "copy")
    heads = heads_at(target, revision, digest, cache)
    return heads, target._script is not None


def test_heads_are_read_once_per_digest(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "heads"
    assert _heads(project, cache) == ((MAIN_HEAD,), True)
    assert _heads(project, cache) == ((MAIN_HEAD,), False), "the second start loads no tree"
    assert _heads(project, cache, MAIN_HEAD) == ((MAIN_HEAD,), True), "another revision: its own"


def test_a_revision_added_or_edited_is_read_from_the_tree(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "heads"
    versions = project / "alembic/main/versions"
    assert _heads(project, cache) == ((MAIN_HEAD,), True)
    added = write_revision(versions, "3a1400000005", MAIN_HEAD, slug="more")
    assert _heads(project, cache) == (("3a1400000005",), True)
    assert _heads(project, cache) == (("3a1400000005",), False)
    # The same file, now a branch beside the old head: two heads, same file names.
    added.write_text(added.read_text().replace(f"'{MAIN_HEAD}'", "'3a1400000003'"))
    assert _heads(project, cache) == ((MAIN_HEAD, "3a1400000005"), True)
    added.unlink()
    assert _heads(project, cache) == ((MAIN_HEAD,), True)


def test_an_unreadable_cache_reads_the_tree(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "heads"
    _heads(project, cache)
    (remembered,) = cache.iterdir()
    for garbage in ("{not json", '{"digest": 1}', '{"heads": ["x"]}', "[]"):
        remembered.write_text(garbage)
        assert _heads(project, cache) == ((MAIN_HEAD,), True), garbage
    assert _heads(project, cache) == ((MAIN_HEAD,), False), "written again whole"
    unwritable = tmp_path / "a file, not a folder"
    unwritable.write_text("")
    assert _heads(project, unwritable) == ((MAIN_HEAD,), True)
    assert _heads(project, unwritable) == ((MAIN_HEAD,), True)


def test_the_cache_keeps_the_most_recently_written_entries(project: Path, tmp_path: Path) -> None:
    """One entry per tree location and revision: a machine that runs many projects (this
    suite's temporary ones: 4036 files after a day) filled the runtime directory's tmpfs
    without end. A write beyond ``HEADS_KEPT`` entries removes the oldest written, and
    only its own kind of file; an entry removed is read from the tree again."""
    cache = tmp_path / "heads"
    cache.mkdir()
    others = [cache / f"heads-{n:016x}.json" for n in range(HEADS_KEPT + 10)]
    for age, path in enumerate(others):
        path.write_text('{"digest": "x", "heads": []}')
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    (cache / "not-ours.txt").write_text("kept")

    assert _heads(project, cache) == ((MAIN_HEAD,), True)
    left = sorted(cache.glob("heads-*.json"))
    assert len(left) <= HEADS_KEPT
    assert others[-1] in left and others[0] not in left, "the oldest go, the newest stay"
    assert (cache / "not-ours.txt").read_text() == "kept"
    assert _heads(project, cache) == ((MAIN_HEAD,), False), "the entry just written is kept"


def test_a_file_a_revision_reads_is_part_of_the_templates_digest(project: Path) -> None:
    """Hostile fixtures round 20: a ``.sql`` file beside the revisions, read by one of them,
    changed and the reused template stayed (only ``*.py`` and env.py were hashed)."""
    sql = project / "alembic/main/versions/sql/seed.sql"
    sql.parent.mkdir()
    sql.write_text("INSERT INTO t VALUES (1)")

    def digest() -> str:
        return tree_digest(
            Resolved.of(load_registry(project), "main", "copy").tree, "heads", "copy"
        )

    before = digest()
    assert digest() == before
    sql.write_text("INSERT INTO t VALUES (2)")
    assert digest() != before
    cached = project / "alembic/main/versions/__pycache__/x.cpython-311.pyc"
    cached.parent.mkdir(exist_ok=True)
    after = digest()
    cached.write_bytes(b"bytecode")  # build output is not the tree
    assert digest() == after
