"""Where in a revision file a finding points: the line of its ``upgrade()`` or
``downgrade()``, or of the statement in ``upgrade()`` that touches a table.

Found once, when a result is made (results are data: the output formats render
``line`` and never read a file or a message again).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

from alembic.script import Script

#: A quoted identifier in a line of Python: what ``op.create_index("ix", "table", ...)`` names.
QUOTED_NAME = re.compile(r"[\"']([A-Za-z_]\w*)[\"']")
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def function_line(script: Script, function: str) -> int | None:
    """The line of ``def <function>`` in ``script``'s file.

    The module Alembic loaded has the function, and its code object knows the line; a
    function defined elsewhere (imported into the revision) or replaced is looked up in
    the file's syntax tree instead.
    """
    code = getattr(getattr(script.module, function, None), "__code__", None)
    if code is not None and _same_file(code.co_filename, script.path):
        line: int = code.co_firstlineno
        return line
    return function_line_in(Path(script.path), function)


def function_line_in(path: Path, function: str) -> int | None:
    """The line of the module-level ``def <function>`` in the Python file ``path``."""
    tree = _parse(path)
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            return node.lineno
    return None


def statement_line(path: Path, names: Iterable[str]) -> int | None:
    """The line, in ``upgrade()``, of the statement naming most of ``names`` (a table, an
    index, the identifiers of a finding's SQL) in quotes; else ``upgrade()``'s own line."""
    tree = _parse(path)
    if tree is None:
        return None
    upgrade = next(
        (
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "upgrade"
        ),
        None,
    )
    if upgrade is None:
        return None
    wanted = set(names)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    end = upgrade.end_lineno or len(lines)
    best, best_score = upgrade.lineno, 0
    for number in range(upgrade.lineno, end + 1):
        score = len(wanted & set(QUOTED_NAME.findall(lines[number - 1])))
        if score > best_score:
            best, best_score = number, score
    return best


def identifiers(text: str) -> set[str]:
    """The words of ``text`` that could name a table, an index or a column."""
    return set(IDENTIFIER.findall(text))


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8", errors="replace"), str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def _same_file(one: str, other: str) -> bool:
    try:
        return Path(one).resolve() == Path(other).resolve()
    except OSError:
        return False
