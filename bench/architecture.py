"""The package's shape, counted: ``python bench/architecture.py [--json]``.

Issue 27's before-and-after table, from the files: modules and lines (how many under
50 and 100 lines, over 400), the folders (rooms) and the import arrows between them
(module-level and function-level imports alike, each module pair once), arrows that
go against the layer order, and fixed sleeps in the tests (``time.sleep`` with a
constant). Pairs sharing six or more lines come from the library's ``duplicates``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pytest_reynard_db"

#: The layers, lowest first: a folder (or top-level module) may import from its own layer
#: and the layers before it. Anything not listed sits in the top level's layer.
LAYERS: list[tuple[str, ...]] = [
    ("foundation",),
    ("guard",),
    ("postgres",),
    ("migration",),
    ("provisioning",),
    ("top",),
    ("checks",),
    ("plugin", "cli"),
    ("entry",),
]


#: The package's folders (a folder's ``__init__`` is in its folder's room).
FOLDERS = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


#: What is entered from outside the package (``python -m``, the ``.pth`` at every start of
#: a guarded child, its ``sitecustomize``, a tree's ``env.py``, ``import
#: pytest_reynard_db``): above every layer, as the fronts are.
ENTRIES = {
    "pytest_reynard_db",
    "pytest_reynard_db.__main__",
    "pytest_reynard_db.child_guard",
    "pytest_reynard_db.alembic_env",
    "pytest_reynard_db.guard.startup.sitecustomize",
}


def room(module: str) -> str:
    """The folder a module is in (``top`` for the package's own top level, ``entry`` for
    ``ENTRIES``)."""
    if module in ENTRIES:
        return "entry"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS else "top"


def layer_of(name: str) -> int:
    for index, names in enumerate(LAYERS):
        if name in names:
            return index
    return next(i for i, names in enumerate(LAYERS) if "top" in names)


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
    return {t for t in targets if t in known and t != module}


def sleeps() -> int:
    pattern = re.compile(r"time\.sleep\(\s*[0-9.]+\s*\)|^\s*sleep\(\s*[0-9.]+\s*\)", re.M)
    return sum(len(pattern.findall(p.read_text())) for p in (ROOT / "tests").rglob("*.py"))


def shape() -> dict[str, object]:
    found = modules()
    lines = {m: len(p.read_text().splitlines()) for m, p in found.items()}
    arrows: Counter[tuple[str, str]] = Counter()
    against = 0
    upward: list[str] = []
    for module, path in found.items():
        for target in imports(module, path, set(found)):
            here, there = room(module), room(target)
            if here != there:
                arrows[(here, there)] += 1
                if layer_of(there) > layer_of(here):
                    against += 1
                    upward.append(f"{module} -> {target}")
    return {
        "modules": len(found),
        "lines": sum(lines.values()),
        "under 50 lines": sum(n < 50 for n in lines.values()),
        "under 100 lines": sum(n < 100 for n in lines.values()),
        "over 400 lines": sorted(m for m, n in lines.items() if n > 400),
        "rooms": sorted({room(m) for m in found}),
        "arrows between rooms": sum(arrows.values()),
        "arrows against the layers": against,
        "arrows": {f"{a} -> {b}": n for (a, b), n in sorted(arrows.items())},
        "against": sorted(upward),
        "fixed sleeps in tests": sleeps(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = shape()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for key, value in result.items():
        if key in ("arrows", "against"):
            continue
        print(f"| {key} | {value} |")
    print()
    arrows = result["arrows"]
    assert isinstance(arrows, dict)
    for pair, count in arrows.items():
        print(f"  {pair}: {count}")
    for arrow in result["against"]:  # type: ignore[attr-defined]
        print(f"  against the layers: {arrow}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
