"""How the plugin reports harness errors, per run (reviewer's notes on issue 12).

Inner pytest runs in child processes (``runpytest_subprocess``), on the Reynard
trees; the unreachable server is a closed port.
"""

from __future__ import annotations

import socket
from fnmatch import fnmatch
from pathlib import Path

import pytest
from reynard_trees import break_main, reynard_project, run_pytest


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://u:pw@127.0.0.1:{port}/postgres"


def test_a_nested_run_keeps_its_own_reported_errors(pytester: pytest.Pytester) -> None:
    """A pytest run inside a test (pytester) neither forgets the outer run's reported
    errors nor changes how the outer run shows them (``-v`` there, not here)."""
    url = closed_port_url()
    pytester.makepyfile(
        test_nested=f"""
        pytest_plugins = ["pytester"]

        def test_a(reynard_db):
            pass

        def test_nested(pytester):
            pytester.makepyfile(test_inner="def test_inner():\\n    pass\\n")
            result = pytester.runpytest("--reynard-db=main", "--reynard-db-url={url}", "-v",
                                        "-p", "no:cacheprovider")
            result.assert_outcomes(passed=1)

        def test_b(reynard_db_fresh):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--reynard-db=main", f"--reynard-db-url={url}")
    result.assert_outcomes(passed=1, errors=2)
    out = result.stdout.str()
    assert out.count("\nreynard-db: cannot connect to") == 1, out
    assert "reynard-db: failed as reported above" in out
    assert "Traceback" not in out, out


def test_a_test_raising_a_harness_error_behaves_as_in_plain_pytest(
    pytester: pytest.Pytester,
) -> None:
    """``xfail(raises=...)`` and ``pytest.raises`` see the ReynardDBError a test body met;
    one a test raises itself is shown with its traceback, one from the harness in one line."""
    url = closed_port_url()
    pytester.makepyfile(
        test_raises="""
        import pytest
        from pytest_reynard_db.foundation.errors import ReynardDBError, ServerError

        @pytest.mark.xfail(raises=ReynardDBError, strict=True)
        def test_xfail_raises(reynard_db_server):
            reynard_db_server.create_database("test_by_hand")

        def test_pytest_raises(reynard_db_server):
            with pytest.raises(ServerError, match="cannot connect"):
                reynard_db_server.create_database("test_by_hand")

        def test_own_error(reynard_db_server):
            raise ReynardDBError("raised by the test itself")

        def test_harness_error(reynard_db_server):
            reynard_db_server.create_database("test_by_hand")
        """
    )
    result = pytester.runpytest_subprocess("--reynard-db=main", f"--reynard-db-url={url}")
    result.assert_outcomes(passed=1, xfailed=1, failed=2)
    out = result.stdout.str()
    # the test's own raise: pytest's usual report, the raising line and "E" lines
    result.stdout.fnmatch_lines(
        ['*raise ReynardDBError("raised by the test itself")', "E  *raised by the test itself"]
    )
    # the harness's: one line under the test's header, no traceback entry
    section = out.split(" test_harness_error ")[1].split("====")[0]
    body = [line for line in section.splitlines()[1:] if line.strip()]
    assert len(body) == 1 and body[0].startswith("reynard-db: cannot connect to"), section


NEEDS_MAIN = """
import pytest

def test_session(reynard_db):
    pass

def test_again(reynard_db):
    pass

def test_connection(reynard_db_connection):
    pass

def test_session_orm(reynard_db_session):
    pass

def test_fresh(reynard_db_fresh):
    pass

@pytest.mark.reynard_db("main", "ecs")
def test_several(reynard_dbs):
    pass

def test_factory_in_the_body(reynard_db_factory):
    reynard_db_factory("main")
"""


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_a_broken_template_build_is_reported_in_full_once(
    pytester: pytest.Pytester, workers: tuple[str, ...]
) -> None:
    """Every test that needs the template fails; the first report says why in full, each
    later one "failed as reported above" in one line: once per run, under xdist too (a
    session fixture's error, raised again by pytest for each later test, included)."""
    break_main(pytester.path)
    pytester.makepyfile(test_main=NEEDS_MAIN)
    result = pytester.runpytest_subprocess("--reynard-db=main", *workers)
    result.assert_outcomes(errors=6, failed=1)
    output = result.stdout.str() + result.stderr.str()
    sections, summary = output.split("short test summary info")
    full = "reynard-db: database 'main': *3a1400000005_broken.py: upgrade*broken_on_purpose*"
    lines = sections.splitlines()
    assert len([line for line in lines if fnmatch(line, full)]) == 1, output
    pointers = [line for line in lines if line.startswith("reynard-db: failed as reported above")]
    assert len(pointers) == 6, output
    assert all("database 'main'" in line for line in pointers), output
    # each report is one line under its header; the short summary repeats no full message
    assert output.count("broken_on_purpose") == 1 + summary.count("broken_on_purpose") <= 2
    assert summary.count(" - Failed: reynard-db: database 'main'") == 1, summary  # the first
    assert "Traceback" not in output and "During handling" not in output, output


def test_no_pyproject_is_one_line_with_pytests_own_hint(tmp_path: Path) -> None:
    """No pyproject.toml at or above pytest's rootdir: one line, pytest's usage error, and
    a hint a pytest user can follow (``--rootdir``), not the CLI's ``--project``."""
    (tmp_path / "test_a.py").write_text("def test_a(reynard_db):\n    pass\n")

    run = run_pytest(tmp_path, "--reynard-db=main")

    assert run.returncode == 4, run.stdout + run.stderr
    assert run.stderr.strip() == (
        f"ERROR: reynard-db: no pyproject.toml in {tmp_path} or above; "
        "run pytest inside the project, or pass --rootdir DIR"
    ), run.stderr
    assert "Traceback" not in run.stdout + run.stderr


@pytest.mark.parametrize("selected", [(), ("--reynard-db=ecs",)], ids=["inactive", "a-database"])
def test_a_run_without_pytests_terminal_plugin(
    tmp_path: Path, runtime: Path, selected: tuple[str, ...]
) -> None:
    """``-p no:terminal`` (a tool that reads pytest's results otherwise) drops the options
    ``--tb`` and ``-v`` with it: reading them for the run's harness errors was an
    INTERNALERROR at pytest_configure, in every project where the plugin is installed."""
    project = reynard_project(tmp_path / "project")
    taken = "reynard_db" if selected else ""
    (project / "test_a.py").write_text(f"def test_a({taken}):\n    pass\n")

    run = run_pytest(
        project, "-p", "no:terminal", *selected, "test_a.py", REYNARD_DB_RUNTIME_DIR=str(runtime)
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "INTERNALERROR" not in run.stdout + run.stderr, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr
