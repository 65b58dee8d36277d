"""``single_head``: one head per declared branch label (one head where there are none).

Two heads in one branch mean two people wrote a revision on the same parent:
``upgrade head`` is then ambiguous and the next ``revision`` lands on either.
Separate branches (each with its own label, as the ECS tree's ``ecs``,
``naming`` and ``agents``) are heads by design and pass.
"""

from __future__ import annotations

from collections import defaultdict

from alembic.script import Script, ScriptDirectory

from ..tree import parents
from .result import CheckResult
from .runner import CheckRunner

CHECK = "single_head"
NO_LABEL = ""


def single_head(runner: CheckRunner) -> CheckResult:
    """Pass when no branch label (and no unlabeled part of the tree) has several heads."""
    script = runner.script
    heads = sorted(script.get_revisions("heads"), key=lambda s: s.revision)
    groups: dict[str, list[Script]] = defaultdict(list)
    for head in heads:
        if head is None:
            continue
        for label in sorted(head.branch_labels) or [NO_LABEL]:
            groups[label].append(head)
    problems = [
        _describe(runner, script, label, group)
        for label, group in sorted(groups.items())
        if len(group) > 1
    ]
    if problems:
        return runner.result(CHECK, False, "\n".join(problems))
    shown = ", ".join(
        f"{h.revision} ({', '.join(sorted(h.branch_labels))})" if h.branch_labels else h.revision
        for h in heads
        if h is not None
    )
    return runner.result(CHECK, True, f"one head per branch: {shown or 'empty tree'}")


def _describe(runner: CheckRunner, script: ScriptDirectory, label: str, heads: list[Script]) -> str:
    """A headline naming the heads and their common ancestor, then files and the fix."""
    where = f"branch {label!r}" if label else "the tree (no branch label)"
    ids = " ".join(h.revision for h in heads)
    ancestor = common_ancestor(script, [h.revision for h in heads])
    since = f"common ancestor {ancestor}" if ancestor else "no common ancestor"
    lines = [f"{where} has {len(heads)} heads: {', '.join(ids.split())} ({since})"]
    lines += [f"  {h.revision}: {runner.relative(h.path)}" for h in heads]
    lines.append(f"  merge them: reynard-migrate merge {runner.db.name} {ids}")
    return "\n".join(lines)


def ancestors(script: ScriptDirectory, revision: str) -> set[str]:
    """``revision`` and every revision below it through ``down_revision``."""
    seen: set[str] = set()
    todo = [revision]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        found = script.get_revision(current)
        if found is not None:
            todo.extend(parents(found))
    return seen


def common_ancestor(script: ScriptDirectory, revisions: list[str]) -> str | None:
    """The nearest revision below all of ``revisions`` (None when their roots differ)."""
    sets = [ancestors(script, r) for r in revisions]
    common = set.intersection(*sets) if sets else set()
    # The nearest: the common ancestor that no other common ancestor descends from.
    nearest = [c for c in common if not any(c in ancestors(script, o) - {o} for o in common)]
    return sorted(nearest)[0] if nearest else None
