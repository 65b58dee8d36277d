"""``mirror_sync``: a mirror's revision files are its source's, path and bytes.

A mirror that drifts runs other migrations than production: its tests then
prove nothing. Databases that mirror nothing get no result.
"""

from __future__ import annotations

from ..mirror import mirror_diff
from .result import CheckResult, Place
from .runner import CheckRunner

CHECK = "mirror_sync"


def mirror_sync(runner: CheckRunner) -> list[CheckResult]:
    """Compare the mirror with its source; conflicting, missing, changed, renamed and
    extra files each listed."""
    db = runner.db
    assert db.mirror_of is not None, "applies to mirrors only (checks.SPECS)"
    diff = mirror_diff(runner.registry.get(db.mirror_of), db)
    if diff.in_sync:
        return [runner.result(CHECK, True, f"in sync with {db.mirror_of}")]
    kinds = (
        ("conflict", tuple(c.key for c in diff.conflicts)),
        ("missing", diff.missing),
        ("changed", diff.changed),
        ("renamed", tuple(old for old, _ in diff.renamed)),
        ("extra", diff.extra),
    )
    counts = ", ".join(f"{len(keys)} {kind}" for kind, keys in kinds if keys)
    head = f"out of sync with {db.mirror_of} ({counts}); run `reynard-migrate copy {db.name}`"
    lines, places = [head], []
    for kind, keys in kinds:
        for key in keys:
            listed = f"  {kind}: {runner.relative(diff.mirror_root / key)}"
            lines.append(listed)
            # a missing file is shown where it is: in the source
            root = diff.source_root if kind == "missing" else diff.mirror_root
            places.append(
                Place(runner.relative(root / key) or str(key), 1, None, head + "\n" + listed)
            )
    return [runner.result(CHECK, False, "\n".join(lines), places=tuple(places))]
