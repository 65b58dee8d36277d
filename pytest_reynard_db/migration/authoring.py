"""Where a new revision goes, and which heads a merge joins.

``place`` turns ``create``'s options (``--branch LABEL``, ``--new-branch LABEL
[--from REV]``, ``--head REV``, or none) into what Alembic's ``revision`` takes
(``head``, ``splice``, ``branch_label``, ``version_path``), with one-line errors
for what Alembic would answer with a traceback or a surprise (a label used
twice, a head that is not one, several heads and no choice). ``merge_heads`` picks
the heads of a merge. Pure decisions over a loaded ``ScriptDirectory``: no
database, no file written (``new_revisions`` writes them), no arguments parsed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError

from ..foundation.errors import RevisionError
from ..foundation.registry import Database
from ..foundation.urls import one_line, shown_path
from .tree import RESERVED_IDS, declared_labels

NO_LABEL = ""


@dataclass(frozen=True)
class Placement:
    """Where a new revision goes, as Alembic's ``revision`` takes it."""

    head: str  # ``base``, ``head``, a revision id, or ``label@head``
    folder: Path
    branch_label: str | None = None
    splice: bool = False  # the parent is not a head: a new branch point


def place(
    script: ScriptDirectory,
    db: Database,
    *,
    branch: str | None = None,
    new_branch: str | None = None,
    from_rev: str | None = None,
    head: str | None = None,
) -> Placement:
    """The place of a new revision of ``db``'s tree (``script``), from ``create``'s options.

    ``branch``: extend the head of that label. ``new_branch``: start a branch with that
    label, from base or ``from_rev``. ``head``: extend that head (labelled or not). None:
    extend the only head (base on an empty tree). At most one of the three.
    """
    chosen = [o for o, v in (("--branch", branch), ("--new-branch", new_branch), ("--head", head))
              if v is not None]  # fmt: skip
    if len(chosen) > 1:
        raise RevisionError(f"database {db.name!r}: {' and '.join(chosen)} exclude each other")
    if from_rev is not None and new_branch is None:
        raise RevisionError(
            f"database {db.name!r}: --from REV goes with --new-branch LABEL (where the new "
            "branch starts); to extend a head, use --head REV alone"
        )
    if new_branch is not None:
        return _new_branch(script, db, new_branch, from_rev)
    if head is not None:
        return _given_head(script, db, head)
    if branch is not None:
        return _labelled_head(script, db, branch)
    heads = _heads(script)
    if len(heads) > 1:
        listed = ", ".join(f"{h.revision} ({_labels(h)})" for h in heads)
        raise RevisionError(
            f"database {db.name!r} has {len(heads)} heads: {listed}; {_how_to_choose(db, heads)}"
        )
    if not heads:  # an empty tree: the first revision
        return Placement("base", db.version_locations[0])
    return Placement("head", location_of(db, heads[0]))


def location_of(db: Database, revision: Script) -> Path:
    """The version location holding ``revision``'s file: where a revision after it goes.

    Alembic takes only a version location as the new file's folder, while the file may
    sit in a subfolder of one (``recursive_version_locations``) or be read through a
    symlinked one (the file's path is then the real one). The deepest location holding
    it wins (locations may nest); its own folder if none does.
    """
    path = Path(revision.path).resolve()
    nearest = sorted(db.version_locations, key=lambda p: len(p.resolve().parts), reverse=True)
    for location in nearest:
        if path.is_relative_to(location.resolve()):
            return location
    return path.parent


def _new_branch(
    script: ScriptDirectory, db: Database, label: str, from_rev: str | None
) -> Placement:
    _check_new_label(script, db, label)
    parent = None if from_rev in (None, "base") else one_revision(script, db, from_rev, "--from")
    named = [p for p in db.version_locations if p.name == label]
    if named:  # a version location of its own (as the ECS tree's versions/<label>)
        folder = named[0]
    elif parent is not None:
        folder = location_of(db, parent)
    else:
        folder = db.version_locations[0]
    if parent is None:
        return Placement("base", folder, label)
    return Placement(parent.revision, folder, label, splice=not parent.is_head)


def _check_new_label(script: ScriptDirectory, db: Database, label: str) -> None:
    why = ""
    if not label or any(c.isspace() for c in label):
        why = "a label must be one word, without spaces"
    elif "@" in label or "," in label or ":" in label:
        why = "a label may not contain '@', ',' or ':' (Alembic reads them as syntax)"
    elif label in RESERVED_IDS:
        why = f"it is reserved by Alembic ({', '.join(sorted(RESERVED_IDS))})"
    if why:
        raise RevisionError(f"database {db.name!r}: branch label {label!r} is not valid: {why}")
    for revision in script.walk_revisions():
        if label in declared_labels(revision):
            raise RevisionError(
                f"database {db.name!r}: branch label {label!r} is already used by "
                f"{revision.revision} ({shown_path(revision.path)}); extend it with "
                f"--branch {label}, or choose another label"
            )
        if revision.revision == label:
            raise RevisionError(
                f"database {db.name!r}: branch label {label!r} is the id of revision "
                f"{label} ({shown_path(revision.path)}); choose another label"
            )


def _given_head(script: ScriptDirectory, db: Database, rev: str) -> Placement:
    found = one_revision(script, db, rev, "--head")
    if not found.is_head:
        children = ", ".join(sorted(found.nextrev)) or "none"
        raise RevisionError(
            f"database {db.name!r}: --head {rev}: revision {found.revision} is not a head "
            f"(its children: {children}); to branch from it, use --new-branch LABEL --from "
            f"{found.revision}"
        )
    return Placement(found.revision, location_of(db, found))


def _labelled_head(script: ScriptDirectory, db: Database, label: str) -> Placement:
    labels = sorted({lb for s in script.walk_revisions() for lb in s.branch_labels})
    if label not in labels:
        raise RevisionError(
            f"database {db.name!r}: no branch labelled {label!r} "
            f"(labels: {', '.join(labels) or 'none'}); to extend an unlabelled head, pass "
            "--head REV; to start a branch, --new-branch LABEL"
        )
    # Alembic's ``label@head`` on a forked branch is a MultipleHeads traceback.
    on_branch = [h for h in _heads(script) if label in h.branch_labels]
    if len(on_branch) > 1:
        listed = ", ".join(f"{h.revision} ({shown_path(h.path)})" for h in on_branch)
        raise RevisionError(
            f"database {db.name!r}: branch {label!r} has {len(on_branch)} heads: "
            f"{listed}; merge them first (reynard-migrate merge {db.name}), then create"
        )
    return Placement(f"{label}@head", location_of(db, on_branch[0]))


def merge_heads(script: ScriptDirectory, db: Database, revisions: Sequence[str]) -> list[Script]:
    """The heads a merge joins: ``revisions`` (two heads or more), or by default the heads
    of the one branch label (or of the unlabelled part of the tree) that has several.

    Separate branches, each with its own label and one head, are heads by design (the
    ``single_head`` check passes them): they are merged only when named.
    """
    if revisions:
        found = [one_revision(script, db, rev, "merge") for rev in revisions]
        ids = [s.revision for s in found]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise RevisionError(f"database {db.name!r}: merge: {', '.join(twice)} named twice")
        if len(found) < 2:
            raise RevisionError(
                f"database {db.name!r}: merge: a merge joins two heads or more; "
                f"only {ids[0]} was named"
            )
        for script_ in found:
            if not script_.is_head:
                raise RevisionError(
                    f"database {db.name!r}: merge: revision {script_.revision} is not a "
                    f"head (its children: {', '.join(sorted(script_.nextrev))})"
                )
        return found
    heads = _heads(script)
    if len(heads) < 2:
        shown = f"1 head ({heads[0].revision})" if heads else "0 heads (the tree is empty)"
        raise RevisionError(f"database {db.name!r} has {shown}: nothing to merge")
    forks = _forks(heads)
    if len(forks) == 1:
        [fork] = forks
        return [h for h in heads if h.revision in fork]
    listed = "; ".join(
        f"{label or 'no label'}: {' '.join(fork)}" for fork, label in sorted(forks.items())
    )
    if forks:
        raise RevisionError(
            f"database {db.name!r}: several branches have several heads ({listed}); "
            f"name the heads to merge: reynard-migrate merge {db.name} REV REV"
        )
    listed = ", ".join(f"{h.revision} ({_labels(h)})" for h in heads)
    raise RevisionError(
        f"database {db.name!r} has one head per branch ({listed}): nothing to merge; "
        f"to join branches on purpose, name their heads: reynard-migrate merge {db.name} "
        f"{' '.join(h.revision for h in heads)}"
    )


def _how_to_choose(db: Database, heads: list[Script]) -> str:
    """What ``create`` takes to choose among several heads. ``--branch LABEL`` names a
    label's one head: where a label has several (a fork), only ``--head REV`` or a
    merge does (``LABEL@head`` is then Alembic's MultipleHeads error)."""
    forks = _forks(heads)
    if not forks:
        return "pass --branch LABEL or --head REV"
    if len(forks) > 1:
        return (
            "pass --head REV, or merge each branch's heads first: "
            f"reynard-migrate merge {db.name} REV REV"
        )
    [(fork, label)] = forks.items()
    if len(fork) == len(heads):
        which = "them"
    else:
        which = f"branch {label!r}'s heads" if label else "the unlabelled heads"
    return f"pass --head REV, or merge {which} first: reynard-migrate merge {db.name}"


def _forks(heads: list[Script]) -> dict[tuple[str, ...], str]:
    """The heads of each branch label (or of the unlabelled part) that has several, with
    that label: a head with two labels (a merge takes its parents') counts for both."""
    groups: dict[str, list[Script]] = defaultdict(list)
    for head in heads:
        for label in sorted(head.branch_labels) or [NO_LABEL]:
            groups[label].append(head)
    forks: dict[tuple[str, ...], str] = {}
    for label, group in sorted(groups.items()):
        if len(group) > 1:
            forks.setdefault(tuple(h.revision for h in group), label)
    return forks


def one_revision(script: ScriptDirectory, db: Database, rev: str, what: str) -> Script:
    """The one revision ``rev`` names (an id, a unique prefix, ``label@head``...)."""
    try:
        found = [s for s in script.get_revisions(rev) if s is not None]
    except (AlembicRevisionError, CommandError) as exc:
        raise RevisionError(
            f"database {db.name!r}: {what}: unknown revision {rev!r} ({one_line(exc)})"
        ) from None
    if len(found) != 1:
        shown = ", ".join(sorted(s.revision for s in found)) or "none"
        raise RevisionError(
            f"database {db.name!r}: {what}: {rev!r} names {len(found)} revisions ({shown}); "
            "name one"
        )
    assert isinstance(found[0], Script)
    return found[0]


def _heads(script: ScriptDirectory) -> list[Script]:
    heads = (s for s in script.get_revisions("heads") if isinstance(s, Script))
    return sorted(heads, key=lambda s: s.revision)


def _labels(script: Script) -> str:
    return ", ".join(sorted(script.branch_labels)) or "no label"
