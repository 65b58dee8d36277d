"""A project's files as a git commit has them: the base the ``history`` check compares with.

Read with the ``git`` command (``rev-parse``, ``ls-tree``, one ``cat-file --batch`` for
every file), not a library: git is there wherever a base is, and a pre-commit hook or a
CI job already runs it. Every way it can fail (no git, not a repository, a ref git does
not know) is one ``ConfigError`` line naming the ref and the folder.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..foundation.errors import ConfigError
from ..foundation.urls import first_line, one_line


@dataclass(frozen=True)
class Base:
    """``ref`` as the user gave it, the commit it names, and the repository's top folder."""

    ref: str
    commit: str
    top: Path

    @property
    def shown(self) -> str:
        """``origin/main (3f2a9c1d)``: how messages name the base."""
        return f"{self.ref} ({self.commit[:8]})"


def resolve_base(root: Path, ref: str) -> Base:
    """The commit ``ref`` names in the git repository holding ``root``."""
    top = Path(_git(root, ref, "rev-parse", "--show-toplevel").strip()).resolve()
    try:
        commit = _git(top, ref, "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}")
    except ConfigError:
        raise ConfigError(
            f"base {ref!r} is not a commit of the git repository at {top} "
            "(a branch, tag or commit; in CI, fetch it first: git fetch origin main, "
            "or actions/checkout with fetch-depth: 0)"
        ) from None
    return Base(ref, commit.strip(), top)


def python_files(base: Base, folder: Path, *, recursive: bool) -> dict[Path, str]:
    """The ``*.py`` files in ``folder`` at the base (its subfolders too if ``recursive``),
    as absolute paths in today's work tree, each with its blob id."""
    try:
        inside = folder.resolve().relative_to(base.top)
    except ValueError:
        raise ConfigError(
            f"{folder}: not inside the git repository at {base.top}, so it has no base "
            f"{base.ref!r} to compare with"
        ) from None
    listing = _git(
        base.top, base.ref, "ls-tree", *(["-r"] if recursive else []), "-z", "--full-tree",
        base.commit, "--", f"{inside.as_posix()}/",
    )  # fmt: skip
    found: dict[Path, str] = {}
    for entry in filter(None, listing.split("\0")):
        meta, _, path = entry.partition("\t")
        _mode, kind, blob = meta.split()
        if kind == "blob" and path.endswith(".py") and "__pycache__" not in path.split("/"):
            found[base.top / path] = blob
    return found


def read_blobs(base: Base, blobs: list[str]) -> dict[str, str]:
    """The text of each blob (one ``git cat-file --batch`` for all of them)."""
    if not blobs:
        return {}
    done = _run(base.top, base.ref, ["cat-file", "--batch"], "\n".join(blobs) + "\n")
    texts: dict[str, str] = {}
    data, at = done.stdout, 0
    for blob in blobs:
        end = data.index(b"\n", at)
        header = data[at:end].split()
        size = int(header[2])
        texts[blob] = data[end + 1 : end + 1 + size].decode("utf-8", errors="replace")
        at = end + 1 + size + 1  # the content, then a newline
    return texts


def _git(folder: Path, ref: str, *args: str) -> str:
    return _run(folder, ref, list(args)).stdout.decode("utf-8", errors="replace")


def _run(
    folder: Path, ref: str, args: list[str], stdin: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            input=stdin.encode() if stdin is not None else None,
            capture_output=True,
            check=False,
            timeout=120,
        )
    except FileNotFoundError:
        raise ConfigError(f"base {ref!r}: the git command is not installed") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"base {ref!r}: git {args[0]} in {folder} took over 120 s") from None
    if done.returncode != 0:
        why = (
            first_line(Exception(done.stderr.decode(errors="replace"))) or f"exit {done.returncode}"
        )
        if "not a git repository" in why:
            raise ConfigError(
                f"base {ref!r}: {folder} is not in a git repository (the history check "
                "compares the revisions with a git ref)"
            )
        raise ConfigError(f"base {ref!r}: git {args[0]} in {folder}: {one_line(why)}")
    return done
