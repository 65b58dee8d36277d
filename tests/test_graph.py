"""graph.render on real revision files loaded by a real Alembic ScriptDirectory."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from reynard_trees import write_revision

from pytest_reynard_db.cli.graph import render

QUOTED = """add "quoted" [col] <b> & #1"""


def script_directory(root: Path, *folders: Path) -> ScriptDirectory:
    return ScriptDirectory(str(root), version_locations=[str(p) for p in folders])


@pytest.fixture
def linear(tmp_path: Path) -> ScriptDirectory:
    """c3 -> b2 -> a1: ids sort in the reverse of the graph's order."""
    versions = tmp_path / "versions"
    write_revision(versions, "c3", None, message="create table")
    write_revision(versions, "b2", "c3", message="add column")
    write_revision(versions, "a1", "b2", message=QUOTED)
    return script_directory(tmp_path, versions)


@pytest.fixture
def branched(tmp_path: Path) -> ScriptDirectory:
    """Two labelled branches, depends_on by label and by id, and a merge of both."""
    ecs, naming = tmp_path / "versions" / "ecs", tmp_path / "versions" / "naming"
    write_revision(ecs, "a1", None, message="create entity", labels="ecs")
    write_revision(ecs, "a2", "a1", message="create world")
    write_revision(naming, "b1", None, message="create spirit", labels="naming", depends_on="ecs")
    write_revision(naming, "b2", "b1", message="name the world", depends_on="a2")
    write_revision(ecs, "m1", ("a2", "b2"), message="merge branches")
    return script_directory(tmp_path, ecs, naming)


def node_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith(("r_", '"r_'))]


def test_mermaid_linear_is_topological_with_marks_and_escapes(linear: ScriptDirectory) -> None:
    text = render(linear)
    assert text.startswith("flowchart BT\n")
    nodes = [line for line in node_lines(text) if "[" in line and "-->" not in line]
    assert nodes == [
        'r_c3["c3 create table (base)"]',
        'r_b2["b2 add column"]',
        'r_a1["a1 add #34;quoted#34; #91;col#93; #60;b#62; #38; #35;1 (head)"]',
    ]
    assert "    r_c3 --> r_b2\n    r_b2 --> r_a1\n" in text
    assert "-.->" not in text
    assert "classDef head " in text
    assert "    class r_a1 head\n" in text
    assert "    class r_c3 base\n" in text


def test_dot_linear_escapes_quotes(linear: ScriptDirectory) -> None:
    text = render(linear, "dot", name='ecs "main"')
    assert text.startswith('digraph "ecs \\"main\\"" {\n')
    assert text.rstrip().endswith("}")
    assert '"r_a1" [label="a1 add \\"quoted\\" [col] <b> & #1 (head)", class="head"' in text
    assert '"r_c3" [label="c3 create table (base)", class="base"' in text
    assert '    "r_c3" -> "r_b2";\n    "r_b2" -> "r_a1";\n' in text


def test_mermaid_branched(branched: ScriptDirectory) -> None:
    text = render(branched, "mermaid")
    for rev in ("a1", "a2", "b1", "b2", "m1"):
        assert f"    r_{rev}[" in text
    assert 'r_a1["a1 create entity (base) #91;ecs#93;"]' in text
    assert 'r_b1["b1 create spirit (base) #91;naming#93;"]' in text
    assert 'r_m1["m1 merge branches (head) (merge)"]' in text
    for edge in ("r_a1 --> r_a2", "r_b1 --> r_b2", "r_a2 --> r_m1", "r_b2 --> r_m1"):
        assert f"    {edge}\n" in text
    # depends_on: a branch label names the revision declaring it.
    assert "    r_a1 -.-> r_b1\n" in text
    assert "    r_a2 -.-> r_b2\n" in text
    assert "    class r_m1 head\n" in text
    assert "    class r_m1 merge\n" in text
    assert "    class r_a1,r_b1 base\n" in text
    order = [line.split("[", 1)[0] for line in node_lines(text) if '["' in line]
    assert order.index("r_a2") < order.index("r_b2") < order.index("r_m1")
    assert order.index("r_a1") < order.index("r_b1")


def test_dot_branched(branched: ScriptDirectory) -> None:
    text = render(branched, "dot", name="ecs")
    assert text.startswith('digraph "ecs" {\n')
    assert '"r_m1" [label="m1 merge branches (head) (merge)", class="head merge"' in text
    assert 'label="a1 create entity (base) [ecs]"' in text
    assert '    "r_a1" -> "r_b1" [style=dashed];\n' in text
    assert '    "r_a2" -> "r_b2" [style=dashed];\n' in text
    assert '    "r_a2" -> "r_m1";\n' in text
    assert '    "r_b2" -> "r_m1";\n' in text


def test_single_revision_is_head_and_base(tmp_path: Path) -> None:
    write_revision(tmp_path / "versions", "x1", None, message="only one")
    text = render(script_directory(tmp_path, tmp_path / "versions"))
    assert 'r_x1["x1 only one (head) (base)"]' in text


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_output_is_deterministic(branched: ScriptDirectory, tmp_path: Path, fmt: str) -> None:
    again = script_directory(
        tmp_path, tmp_path / "versions" / "naming", tmp_path / "versions" / "ecs"
    )
    assert render(branched, fmt) == render(again, fmt)


def test_unknown_format_raises(linear: ScriptDirectory) -> None:
    with pytest.raises(ValueError, match="svg"):
        render(linear, "svg")


def test_short_ids_stay_unique() -> None:
    """Ids cut to 12 characters collided (``20250127_000000``, ``20250127_000001``)."""
    from pytest_reynard_db.cli.graph import short_ids

    short = short_ids(["20250127_000000", "20250127_000001", "abcdef0123456789", "x"])
    assert short == {
        "20250127_000000": "20250127_000000",
        "20250127_000001": "20250127_000001",
        "abcdef0123456789": "abcdef012345",
        "x": "x",
    }
