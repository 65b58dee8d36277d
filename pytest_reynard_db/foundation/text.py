"""Small text helpers every message and report shares: one line, short paths, tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .urls import redact


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` with every run of white space (newlines included) folded to one space,
    and any URL or known password in it masked (it may come from anyone's exception);
    cut to ``limit`` characters, ending in ``...``, when a limit is given."""
    flat = redact(" ".join(str(text).split()))
    if limit is None or len(flat) <= limit:
        return flat
    return flat[: limit - 3] + "..."


def counted(number: int, word: str, plural: str | None = None) -> str:
    """``1 check``, ``3 checks``: a count and its noun, singular for one."""
    return f"{number} {word if number == 1 else plural or word + 's'}"


def first_line(exc: BaseException | None) -> str:
    """The first line of an exception's message (a database error's own summary), masked."""
    text = str(exc).strip() if exc is not None else ""
    return redact(text.splitlines()[0]) if text else type(exc).__name__


def shown_path(path: str | Path | None) -> str:
    """``path`` relative to the current directory when it is below it, else as is."""
    if path is None:
        return ""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest cell, two spaces apart; the last one not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
