"""Result kinds and places (the README's "Migration checks", SPEC section 8).

Every result is ``ok``, ``failed``, ``skipped`` or ``not_run``, and each kind shows in
every format (table, JSON, GitHub annotations, JUnit, the pytest items). A finding
points at the code at fault: the ``upgrade()`` or ``downgrade()`` of the revision whose
step failed, and, for ``downgrade_clean``, of the revision that created what was left.
Trees broken on purpose, a real server, real Alembic.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cli_fork import Cli
from reynard_trees import admin_url, write_revision

from pytest_reynard_db.checks import CheckResult, Place, run_checks
from pytest_reynard_db.checks.report import show_results
from pytest_reynard_db.foundation.registry import load_registry
from pytest_reynard_db.postgres import EphemeralServer

VERSIONS = Path("alembic/main/versions")
BROKEN = "3a1400000099"


def def_line(path: Path, function: str) -> int:
    """The line of ``def <function>(`` in ``path``."""
    lines = path.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.startswith(f"def {function}("))


def checked(project: Path, server: EphemeralServer, *only: str) -> list[CheckResult]:
    registry = load_registry(project)
    return run_checks(registry, [registry.get("main")], server, only=only)


def rendered(results: list[CheckResult], fmt: str) -> str:
    out = io.StringIO()
    show_results(results, fmt, out)
    return out.getvalue()


def broken_upgrade(project: Path) -> Path:
    """main's tree with a last revision whose upgrade fails."""
    return write_revision(
        project / VERSIONS, BROKEN, "3a1400000004", 'op.drop_table("no_such_table")'
    )


# -- not_run: a check whose prerequisite failed says so ---------------------------------
def test_a_failed_upgrade_is_not_repeated_by_the_checks_that_need_it(
    project: Path, pg_server: EphemeralServer
) -> None:
    """``upgrade`` fails on the revision's ``upgrade()``; ``downgrade_clean`` and
    ``models_match``, which upgrade first, are not run (not failed), naming where; each
    kind in each format."""
    path = broken_upgrade(project)
    shown = str(path.relative_to(project))
    results = checked(project, pg_server, "upgrade", "downgrade_clean", "models_match")
    upgrade, *rest = results
    assert (upgrade.check, upgrade.status, upgrade.ok) == ("upgrade", "failed", False)
    assert (upgrade.revision, upgrade.file) == (BROKEN, shown)
    assert (upgrade.function, upgrade.line) == ("upgrade", def_line(path, "upgrade"))
    assert "no_such_table" in upgrade.message
    assert [r.check for r in rest] == ["downgrade_clean", "models_match"]
    for result in rest:
        assert (result.status, result.ok, result.skipped) == ("not_run", True, True)
        assert result.message == f"not run: upgrade failed at {BROKEN} ({shown})"
        assert "no_such_table" not in result.message  # the failure is upgrade's, said once

    entries = json.loads(rendered(results, "json"))["results"]
    assert [e["status"] for e in entries] == ["failed", "not_run", "not_run"]
    assert [e["ok"] for e in entries] == [False, True, True]
    assert entries[0]["line"] == def_line(path, "upgrade") and entries[0]["function"] == "upgrade"
    assert "skipped" not in entries[0] and entries[1]["skipped"] is True
    assert list(entries[0])[:8] == [
        "database", "check", "ok", "message", "revision", "file", "line", "function"
    ]  # fmt: skip

    table = rendered(results, "table")
    assert "downgrade_clean  not run  not run: upgrade failed at" in table, table
    assert table.rstrip().endswith("3 checks, 1 failed, 2 not run"), table

    annotations = rendered(results, "github").splitlines()
    assert annotations[0].startswith(
        f"::error file={shown},line={def_line(path, 'upgrade')},title=main upgrade::"
    ), annotations
    assert [a.split(" ", 1)[0] for a in annotations] == ["::error", "::notice", "::notice"]
    assert "title=main downgrade_clean::not run: upgrade failed at" in annotations[1]

    suite = ET.fromstring(rendered(results, "junit")).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "2")
    for case in suite.iter("testcase"):
        assert case.get("file") == shown
    skipped = suite.find("testcase[@name='models_match']/skipped")
    assert skipped is not None and skipped.get("message", "").startswith("not run: upgrade")


def test_not_run_is_decided_by_each_check_alone(
    project: Path, cli: Cli, pg_server: EphemeralServer
) -> None:
    """``--only downgrade_clean`` says the same as all checks together; a not-run check
    alone fails no run (exit 0), and the summary counts it."""
    broken_upgrade(project)
    url = admin_url(pg_server)
    code, out, err = cli(
        "check", "main", "--only", "downgrade_clean", "--url", url, "--format", "json"
    )
    assert code == 0, out + err
    [entry] = json.loads(out)["results"]
    assert entry["status"] == "not_run" and entry["revision"] == BROKEN, entry
    assert entry["message"].startswith(f"not run: upgrade failed at {BROKEN} (")
    assert "Traceback" not in err
    code, out, err = cli("check", "main", "--only", "downgrade_clean", "--url", url)
    assert code == 0 and out.rstrip().endswith("1 check, 1 not run"), out + err


def test_a_not_run_check_is_a_skipped_pytest_item(pytester: pytest.Pytester) -> None:
    broken_upgrade(pytester.path)
    result = pytester.runpytest(
        "--reynard-db=main", "--reynard-db-checks", "-k", "upgrade or downgrade_clean", "-rs"
    )
    result.assert_outcomes(failed=1, skipped=1, deselected=3)
    result.stdout.fnmatch_lines([f"SKIPPED*not run: upgrade failed at {BROKEN} (*)"])
    assert "Traceback" not in result.stdout.str()


# -- places: the code at fault -----------------------------------------------------------
def test_each_stairway_failure_points_at_the_function_its_step_ran(
    project: Path, pg_server: EphemeralServer
) -> None:
    """A down step's failure is on ``downgrade()``, an up or re-up step's on ``upgrade()``."""
    versions = project / VERSIONS
    down = write_revision(versions, "3a1400000097", "3a1400000004", "pass", 'op.drop_table("x")')
    re_up = write_revision(
        versions,
        "3a1400000098",
        "3a1400000097",
        'op.add_column("user_account", sa.Column("nickname", sa.String(50)))',
        "pass  # forgets the column",
    )
    up = write_revision(versions, BROKEN, "3a1400000098", 'op.drop_table("no_such_table")')
    results = checked(project, pg_server, "stairway")
    found = {r.revision: (r.function, r.line, r.file) for r in results}
    assert found == {
        "3a1400000097": ("downgrade", def_line(down, "downgrade"), str(down.relative_to(project))),
        "3a1400000098": ("upgrade", def_line(re_up, "upgrade"), str(re_up.relative_to(project))),
        BROKEN: ("upgrade", def_line(up, "upgrade"), str(up.relative_to(project))),
    }, [r.message for r in results]
    assert ", down step:" in results[0].message and ", re-up step:" in results[1].message
    annotations = rendered(results, "github").splitlines()
    assert annotations[0].startswith(
        f"::error file={down.relative_to(project)},line={def_line(down, 'downgrade')},"
    ), annotations


def test_a_failing_downgrade_points_at_downgrade(project: Path, pg_server: EphemeralServer) -> None:
    """``downgrade_clean``'s own downgrade fails: its failure, on that ``downgrade()``."""
    path = write_revision(project / VERSIONS, BROKEN, "3a1400000004", "pass", 'op.drop_table("x")')
    [result] = checked(project, pg_server, "downgrade_clean")
    assert (result.status, result.revision, result.function) == ("failed", BROKEN, "downgrade")
    assert result.line == def_line(path, "downgrade")
    assert f"downgrade {BROKEN} -> 3a1400000004 failed" in result.message, result.message


def test_a_failing_first_revision_reads_upgrade_base(
    project: Path, pg_server: EphemeralServer
) -> None:
    """Alembic's "upgrade  -> R" (no revision before) reads "upgrade base -> R"."""
    write_revision(project / VERSIONS, BROKEN, None, 'op.drop_table("nope")', labels="side")
    [result] = checked(project, pg_server, "upgrade")
    assert f"upgrade base -> {BROKEN} failed" in result.message, result.message
    assert "  ->" not in result.message


def test_downgrade_clean_names_the_revision_that_created_each_leftover(
    project: Path, pg_server: EphemeralServer
) -> None:
    """Two revisions forget something each (an enum ``create_table`` made, a function):
    each object names its revision, and each revision's ``downgrade()`` is a place."""
    versions = project / VERSIONS
    enum = write_revision(
        versions,
        "3a1400000098",
        "3a1400000004",
        'op.create_table("t", sa.Column("kind", sa.Enum("x", "y", name="kindenum")))',
        'op.drop_table("t")  # forgets the type create_table made',
    )
    function = write_revision(
        versions,
        BROKEN,
        "3a1400000098",
        "op.execute(\"CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42'\")",
    )
    [result] = checked(project, pg_server, "downgrade_clean")
    assert result.status == "failed"
    lines = result.message.splitlines()
    assert lines[0] == "downgrade to base left 2 objects behind:"
    assert lines[1:] == [
        f"  enum type public.kindenum (created by 3a1400000098, {enum.relative_to(project)})",
        f"  function public.answer() (created by {BROKEN}, {function.relative_to(project)})",
    ]
    assert result.revision is None and result.file is None  # two revisions at fault
    assert result.places == (
        Place(
            str(enum.relative_to(project)),
            def_line(enum, "downgrade"),
            "downgrade",
            "downgrade of 3a1400000098 left 1 object behind:\n  enum type public.kindenum",
        ),
        Place(
            str(function.relative_to(project)),
            def_line(function, "downgrade"),
            "downgrade",
            f"downgrade of {BROKEN} left 1 object behind:\n  function public.answer()",
        ),
    )
    annotations = rendered([result], "github").splitlines()
    assert len(annotations) == 2 and all(a.startswith("::error file=") for a in annotations)
    case = ET.fromstring(rendered([result], "junit")).find(".//testcase")
    assert case is not None and case.get("file") == str(enum.relative_to(project))


def test_downgrade_clean_with_one_revision_at_fault_is_about_its_downgrade(
    project: Path, pg_server: EphemeralServer
) -> None:
    path = write_revision(
        project / VERSIONS,
        BROKEN,
        "3a1400000004",
        "op.execute(\"CREATE TYPE mood AS ENUM ('calm', 'angry')\")\n"
        'op.execute("CREATE SEQUENCE ticket_seq")',
        'op.execute("DROP SEQUENCE ticket_seq")  # forgets the type',
    )
    [result] = checked(project, pg_server, "downgrade_clean")
    assert (result.revision, result.file) == (BROKEN, str(path.relative_to(project)))
    assert (result.function, result.line) == ("downgrade", def_line(path, "downgrade"))
    assert "downgrade to base left 1 object behind:" in result.message


# -- kinds and places as data --------------------------------------------------------------
def test_a_result_without_a_place_has_no_file_in_junit(project: Path, cli: Cli) -> None:
    """Two heads are about no single file: no ``file=""`` in JUnit, an annotation with
    no file; and one check is "1 check"."""
    write_revision(project / VERSIONS, BROKEN, "3a1400000003")
    code, out, err = cli("check", "main", "--only", "single_head", "--format", "junit")
    assert code == 1, out + err
    case = ET.fromstring(out).find(".//testcase")
    assert case is not None and "file" not in case.attrib and "line" not in case.attrib
    assert 'file=""' not in out
    code, out, err = cli("check", "main", "--only", "single_head", "--format", "github")
    assert code == 1 and out.startswith("::error title=main single_head::"), out + err
    write_revision(project / VERSIONS, BROKEN, "3a1400000004")
    code, out, err = cli("check", "main", "--only", "single_head")
    assert code == 0 and out.rstrip().endswith("1 check, all passed"), out + err


def test_a_skipped_check_in_every_format() -> None:
    """``skipped`` (does not apply): ``skip`` in the table, a notice, a skipped test case."""
    result = CheckResult(
        "app", "models_match", True, "skipped: no target_metadata in env.py", status="skipped"
    )
    assert (result.ok, result.skipped, result.places) == (True, True, ())
    table = rendered([result], "table")
    assert "models_match  skip    skipped: no target_metadata" in table, table
    assert table.rstrip().endswith("1 check, all passed, 1 skipped")
    assert rendered([result], "github").startswith("::notice title=app models_match::skipped")
    case = ET.fromstring(rendered([result], "junit")).find(".//testcase")
    assert case is not None and case.find("skipped") is not None and "file" not in case.attrib
    entry = json.loads(rendered([result], "json"))["results"][0]
    assert (entry["status"], entry["skipped"], entry["line"], entry["places"]) == (
        "skipped",
        True,
        None,
        [],
    )


def test_a_result_round_trips_through_its_json() -> None:
    """The child interpreter answers in JSON: every field comes back, places included."""
    place = Place("a.py", 3, "upgrade", "part")
    result = CheckResult(
        "app", "lint", False, "m", "r1", "a.py", 3, "upgrade", places=(place, Place("b.py"))
    )
    assert result.status == "failed"
    assert CheckResult.from_json(json.loads(json.dumps(result.as_json()))) == result
    with pytest.raises(ValueError, match="unknown check status"):
        CheckResult("app", "x", True, "m", status="maybe")  # type: ignore[arg-type]
