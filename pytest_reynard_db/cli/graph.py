"""The revision graph of one Alembic tree, rendered as Mermaid or Graphviz DOT text.

Pure: it takes a loaded ``ScriptDirectory`` and returns a string, so the CLI's
``graph`` verb only prints it and tests compare text. Heads, bases, merge points
and declared branch labels are marked, ``down_revision`` links are solid arrows
and ``depends_on`` links dashed ones. The order is topological (bases first,
ties broken by revision id), so the same tree always renders the same text.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from alembic.script import Script, ScriptDirectory

from ..migration import tree

SHORT_ID = 12
MARKS = ("head", "merge", "base")  # in order of precedence for a node's fill colour
COLOURS = {"head": "#d4f7d4", "merge": "#fff3cd", "base": "#eeeeee"}
STROKES = {"head": "#2e7d32", "merge": "#b8860b", "base": "#616161"}


@dataclass(frozen=True)
class _Node:
    revision: str
    key: str  # identifier in the rendered text
    label: str
    marks: tuple[str, ...]


@dataclass(frozen=True)
class _Graph:
    nodes: tuple[_Node, ...]
    edges: tuple[tuple[str, str], ...]  # (down_revision, revision), as node keys
    depends: tuple[tuple[str, str], ...]  # (dependency, revision), as node keys


def render(script: ScriptDirectory, fmt: str = "mermaid", *, name: str = "revisions") -> str:
    """The revision graph of ``script`` in ``fmt`` ("mermaid" or "dot").

    ``name`` titles the graph (the DOT graph name; a Mermaid comment).
    Raises ``ValueError`` for an unknown format.
    """
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        known = ", ".join(sorted(_RENDERERS))
        raise ValueError(f"unknown graph format {fmt!r} (known: {known})")
    return renderer(_build(script), name)


def _build(script: ScriptDirectory) -> _Graph:
    revisions = {rev.revision: rev for rev in script.walk_revisions()}
    heads, bases = set(script.get_heads()), set(script.get_bases())
    parents = {rid: tree.parents(rev) for rid, rev in revisions.items()}
    depends = {
        rid: _dependencies(script, rev) - set(parents[rid]) for rid, rev in revisions.items()
    }
    order = _topological(revisions, {rid: set(parents[rid]) | depends[rid] for rid in revisions})
    keys = _node_keys(order)
    short = short_ids(order)
    nodes: list[_Node] = []
    edges: list[tuple[str, str]] = []
    dashed: list[tuple[str, str]] = []
    for rid in order:
        rev = revisions[rid]
        marks = tuple(
            mark
            for mark, present in (
                ("head", rid in heads),
                ("merge", len(parents[rid]) > 1),
                ("base", rid in bases),
            )
            if present
        )
        nodes.append(_Node(rid, keys[rid], _label(rev, short[rid], marks), marks))
        edges.extend((keys[p], keys[rid]) for p in sorted(parents[rid]) if p in keys)
        dashed.extend((keys[d], keys[rid]) for d in sorted(depends[rid]) if d in keys)
    return _Graph(tuple(nodes), tuple(edges), tuple(dashed))


def _dependencies(script: ScriptDirectory, rev: Script) -> set[str]:
    """``depends_on`` as revision ids (a branch label names the revision declaring it)."""
    resolved: set[str] = set()
    for dep in _as_tuple(rev.dependencies):
        target = script.get_revision(dep)
        if target is not None:
            resolved.add(target.revision)
    return resolved


def _topological(revisions: Iterable[str], parents: dict[str, set[str]]) -> list[str]:
    """Kahn's algorithm over ``parents``, always taking the smallest ready id."""
    children: dict[str, list[str]] = {rid: [] for rid in parents}
    waiting = {rid: 0 for rid in parents}
    for rid, ups in parents.items():
        for up in ups:
            if up in children:
                children[up].append(rid)
                waiting[rid] += 1
    ready = [rid for rid in revisions if waiting[rid] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        rid = heapq.heappop(ready)
        order.append(rid)
        for child in children[rid]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, child)
    # Alembic refuses cycles before we get here; keep any leftover anyway.
    done = set(order)
    order.extend(sorted(rid for rid in parents if rid not in done))
    return order


def _node_keys(order: list[str]) -> dict[str, str]:
    """A safe, unique identifier per revision (``r_`` + the id, odd characters as ``_``)."""
    keys: dict[str, str] = {}
    used: set[str] = set()
    for rid in order:
        base = "r_" + re.sub(r"\W", "_", rid, flags=re.ASCII)
        key, n = base, 1
        while key in used:
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        keys[rid] = key
    return keys


def short_ids(revisions: Iterable[str], minimum: int = SHORT_ID) -> dict[str, str]:
    """Each id cut to ``minimum`` characters, or longer where that would not be unique
    (``20250127_000000`` and ``20250127_000001`` share their first twelve), as git
    abbreviates commits."""
    ids = list(revisions)
    short: dict[str, str] = {}
    for rid in ids:
        length = minimum
        while length < len(rid) and any(
            other != rid and other[:length] == rid[:length] for other in ids
        ):
            length += 1
        short[rid] = rid[:length]
    return short


def _label(rev: Script, short_id: str, marks: tuple[str, ...]) -> str:
    message = " ".join((rev.doc or "").split())
    parts = [short_id]
    if message:
        parts.append(message)
    parts.extend(f"({mark})" for mark in MARKS if mark in marks)
    labels = _as_tuple(getattr(rev.module, "branch_labels", None))
    parts.extend(f"[{label}]" for label in sorted(labels))
    return " ".join(parts)


def _as_tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(str(v) for v in value)
    return (str(value),)


_MERMAID_ESCAPES = {c: f"#{ord(c)};" for c in '#"[]<>&`'}


def _mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: specials as entity codes (``#34;`` for ``"``)."""
    return "".join(_MERMAID_ESCAPES.get(c, c) for c in text)


def _mermaid(graph: _Graph, name: str) -> str:
    lines = ["flowchart BT", f"    %% {' '.join(name.split())}"]
    lines += [f'    {n.key}["{_mermaid_text(n.label)}"]' for n in graph.nodes]
    lines += [f"    {down} --> {up}" for down, up in graph.edges]
    lines += [f"    {dep} -.-> {up}" for dep, up in graph.depends]
    for mark in MARKS:
        lines.append(f"    classDef {mark} fill:{COLOURS[mark]},stroke:{STROKES[mark]}")
    for mark in MARKS:
        members = [n.key for n in graph.nodes if mark in n.marks]
        if members:
            lines.append(f"    class {','.join(members)} {mark}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    """Text for a double-quoted DOT string: backslashes and quotes escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot(graph: _Graph, name: str) -> str:
    lines = [
        f'digraph "{_dot_text(name)}" {{',
        "    rankdir=BT;",
        '    node [shape=box, style="rounded,filled", fillcolor="white"];',
    ]
    for n in graph.nodes:
        attrs = [f'label="{_dot_text(n.label)}"']
        if n.marks:
            first = next(mark for mark in MARKS if mark in n.marks)
            attrs.append(f'class="{" ".join(n.marks)}"')
            attrs.append(f'fillcolor="{COLOURS[first]}", color="{STROKES[first]}"')
        if "head" in n.marks:
            attrs.append("penwidth=2")
        lines.append(f'    "{n.key}" [{", ".join(attrs)}];')
    lines += [f'    "{down}" -> "{up}";' for down, up in graph.edges]
    lines += [f'    "{dep}" -> "{up}" [style=dashed];' for dep, up in graph.depends]
    lines.append("}")
    return "\n".join(lines) + "\n"


_RENDERERS: dict[str, Callable[[_Graph, str], str]] = {"mermaid": _mermaid, "dot": _dot}
