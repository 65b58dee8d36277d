"""Real projects' Alembic trees as a second oracle (issue 22, point 3):
``python bench/real_trees.py [--project mlflow ...] [--first N] [--reinstall]``.

Each project is installed from PyPI into a virtualenv of its own under ``--venvs``
(outside the repository; made once, reused), with pytest-alembic and this repository
(editable). Its shipped tree is then judged, unchanged, by ``reynard-migrate check``,
by plain Alembic (``bench.plain_alembic``: fresh commands) and by pytest-alembic's
default tests (``bench/real_trees_run.py`` does that inside the virtualenv). Results
are kept per project in ``bench/real_trees_results.json``; the table of them all is
printed and written into ``bench/REAL_TREES.md`` between its markers (the
explanations around it are kept).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.real_trees_projects import Project, by_name

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "real_trees_results.json"
REPORT = REPO / "bench" / "REAL_TREES.md"
BEGIN, END = "<!-- real_trees.py: table -->", "<!-- real_trees.py: end of table -->"
CHECKS = ("single_head", "upgrade", "stairway", "downgrade_clean", "models_match")
TOOLS = ("ours", "plain", "pytest_alembic")
#: pytest-alembic 0.13 collects nothing under pytest 9 (its collector sets ``_nodeid``).
PIP_EXTRAS = ("pytest-alembic", "pytest<9")
#: The driver ``check`` hands env.py for its throw-away databases.
PSYCOPG = "postgresql+psycopg"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", nargs="+", help="projects to run (default: all)")
    parser.add_argument("--venvs", type=Path, default=Path("/work/realtrees-venvs"))
    parser.add_argument("--first", type=int, help="only the first N revisions of each tree")
    parser.add_argument("--reinstall", action="store_true", help="pip install again")
    parser.add_argument("--no-write", action="store_true", help="print, change no file")
    parser.add_argument("--table-only", action="store_true", help="render the stored results")
    return parser.parse_args(argv)


def venv_python(project: Project, venvs: Path, reinstall: bool) -> Path:
    """The project's virtualenv's interpreter, made (and installed into) when missing."""
    folder = venvs / project.venv_name
    python = folder / "bin" / "python"
    if python.exists() and not reinstall:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    wanted = [*project.requirements, *PIP_EXTRAS]
    print(f"{project.name}: pip install {' '.join(wanted)} ...", file=sys.stderr, flush=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            *wanted,
            "-e",
            str(REPO),
        ],
        check=True,
    )
    return python


def run_project(project: Project, args: argparse.Namespace) -> dict[str, Any]:
    """The project's three verdicts (``bench/real_trees_run.py`` in its virtualenv)."""
    python = venv_python(project, args.venvs, args.reinstall)
    scratch = args.venvs / "scratch" / project.name
    argv = [str(python), str(REPO / "bench" / "real_trees_run.py"), project.name, str(scratch)]
    if args.first:
        argv.append(str(args.first))
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{project.name}: bench/real_trees_run.py exited {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["date"] = datetime.date.today().isoformat()
    result["wall"] = time.perf_counter() - started
    return result


# -- the table ------------------------------------------------------------------------------
def cell(verdict: dict[str, Any] | None) -> str:
    """One judge's verdict on one check: ``ok``, ``FAIL``, ``FAIL@rev``, ``skip``, ``-``."""
    if verdict is None:
        return "-"
    status = str(verdict["status"])
    if status == "ok":
        return "ok"
    word = {"failed": "FAIL", "skipped": "skip", "not_run": "not run"}.get(status, status)
    revisions = verdict.get("revisions") or []
    if not revisions:
        return word
    shown = ",".join(r[:8] for r in revisions[:2]) + ("..." if len(revisions) > 2 else "")
    return f"{word}@{shown}"


def agree(verdicts: list[dict[str, Any] | None]) -> bool:
    """The judges that have the check agree: all pass, or all fail on the same revisions
    (where they name any)."""
    present = [v for v in verdicts if v is not None]
    passed = {v["status"] in ("ok", "skipped") for v in present}
    if len(passed) > 1:
        return False
    named = [frozenset(v.get("revisions") or []) for v in present if v.get("revisions")]
    return len(set(named)) <= 1


def row(result: dict[str, Any]) -> list[str]:
    cells = [result["project"], result["version"], str(result["revisions"])]
    for check in CHECKS:
        verdicts = [_verdict(result, tool, check) for tool in TOOLS]
        mark = "" if agree(verdicts) else " **≠**"
        cells.append(" / ".join(cell(v) for v in verdicts) + mark)
    seconds = result["seconds"]
    cells.append(" / ".join(f"{seconds.get(tool, 0):.0f}" for tool in TOOLS))
    return cells


def _verdict(result: dict[str, Any], tool: str, check: str) -> dict[str, Any] | None:
    found = result[tool]
    if "error" in found:
        return {"status": "error", "revisions": [], "messages": [str(found["error"])]}
    verdict: dict[str, Any] | None = found.get(check)
    return verdict


def render(results: dict[str, dict[str, Any]]) -> str:
    """The markdown table (each cell: ours / plain Alembic / pytest-alembic) and the
    messages of every judge that did not pass."""
    head = ["project", "version", "revisions", *CHECKS, "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results.values()]
    lines += ["", "Messages of every verdict that is not ok (first 300 characters):", ""]
    for result in results.values():
        limited = f", first {result['first']} revisions" if result.get("first") else ""
        if result.get("driver", PSYCOPG) != PSYCOPG:
            limited += f"; plain Alembic and pytest-alembic on {result['driver']}"
        lines.append(
            f"- **{result['project']}** {result['version']} (Alembic {result['alembic']}"
            f"{limited}; run {result['date']} by `{result.get('command', '?')}`, "
            f"{result['wall']:.0f} s)"
        )
        for check in CHECKS:
            for tool in TOOLS:
                verdict = _verdict(result, tool, check)
                if verdict is None or verdict["status"] == "ok":
                    continue
                for message in verdict["messages"][:3] or ["(no message)"]:
                    text = " ".join(message.split())[:300].replace("|", "\\|")
                    lines.append(f"  - {check}, {tool}: {verdict['status']}: {text}")
    return "\n".join(lines)


def write_report(table: str, command: str) -> None:
    """Replace the generated part of REAL_TREES.md; the explanations stay."""
    generated = f"{BEGIN}\n_Generated {datetime.date.today()} by `{command}`._\n\n{table}\n{END}"
    text = REPORT.read_text() if REPORT.exists() else f"# Real trees\n\n{BEGIN}\n{END}\n"
    start, end = text.index(BEGIN), text.index(END) + len(END)
    REPORT.write_text(text[:start] + generated + text[end:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        projects = by_name(args.project)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    command = "python bench/real_trees.py " + " ".join(argv if argv is not None else sys.argv[1:])
    stored: dict[str, dict[str, Any]] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for project in [] if args.table_only else projects:
        print(f"{project.name}...", file=sys.stderr, flush=True)
        result = run_project(project, args)
        result["command"] = command
        stored[project.name] = result
        if not args.no_write:  # each project's result is kept as soon as it is known
            RESULTS.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    ordered = {p.name: stored[p.name] for p in by_name(None) if p.name in stored}
    table = render(ordered)
    print(table)
    if not args.no_write:
        write_report(table, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
