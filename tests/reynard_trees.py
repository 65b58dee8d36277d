"""Copies of this repository's Reynard trees, for tests that break them on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_reynard_trees(dest: Path, *, pyproject: bool = True) -> Path:
    """Copy the trees, inis and models (and pyproject.toml) into ``dest``; return it."""
    for name in ("alembic", "reynard_models"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for ini in REPO.glob("alembic_*.ini"):
        shutil.copy(ini, dest / ini.name)
    if pyproject:
        shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest
