"""Harness errors a test meets inside pytest are one line, not a traceback (issue 12).

Real servers, inner pytest runs in a child process (``runpytest_subprocess``): what
a user sees on the terminal, down to what is printed after the summary.
"""

from __future__ import annotations

import re
import socket

import pytest

SECRET = "s3cr3t"
#: How pytest shows a traceback entry ("path.py:12: in name", "path.py:12: SomeError").
TRACEBACK_ENTRY = re.compile(r"^\S+\.py:\d+: (in \w+|\w+Error)", re.M)


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert not TRACEBACK_ENTRY.search(text), text
    assert not re.search(r"^E\s", text, re.M), text


def test_create_database_on_an_unreachable_server(pytester: pytest.Pytester) -> None:
    """``reynard_db_server.create_database`` in a test body, on a server nothing answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pytester.makepyfile(
        test_x="""
        def test_create(reynard_db_server):
            reynard_db_server.create_database("test_by_hand")
        """
    )
    url = f"postgresql://u:{SECRET}@127.0.0.1:{port}/postgres"
    result = pytester.runpytest_subprocess("--reynard-db=main", f"--reynard-db-url={url}")
    result.assert_outcomes(failed=1)
    out = result.stdout.str() + result.stderr.str()
    no_traceback(out)
    assert SECRET not in out
    # nothing was made there: the run's end, which drops its databases, fails no clean-up
    assert "clean-up failed" not in out, out
    result.stdout.re_match_lines(
        [rf"reynard-db: cannot connect to .*u:\*\*\*@127\.0\.0\.1:{port}/postgres: .*refused"]
    )


KILL_THE_POSTMASTER = """
import os
import re
import signal
import time
from pathlib import Path


def test_kill(reynard_db_server, reynard_db_connection):
    # No reynard_db_fresh here: it would have the next clone made ahead, in the background,
    # racing the kill, and test_fresh_after would be handed a database made just before it.
    # The run's postmaster: the parent of this connection's backend.
    with reynard_db_server.connect() as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        status = Path(f"/proc/{backend}/status").read_text()
    postmaster = int(re.search(r"^PPid:\\s+(\\d+)", status, re.M).group(1))
    os.kill(postmaster, signal.SIGKILL)
    while alive(postmaster):  # gone (or a zombie) before the next test starts
        time.sleep(0.01)


def alive(pid):
    try:
        return "State:\\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_connection_after(reynard_db_connection):
    pass


def test_session_after(reynard_db_session):
    pass


def test_fresh_after(reynard_db_fresh):
    pass


def test_factory_after(reynard_db_factory):
    reynard_db_factory("main", "3a1400000002")


def test_server_after(reynard_db_server):
    reynard_db_server.create_database("test_by_hand")
"""


def test_postmaster_killed_during_the_run(pytester: pytest.Pytester) -> None:
    """kill -9 of the run's postmaster: every later error and the clean-up at exit are
    one line each, no traceback (the killing test itself fails at teardown)."""
    pytester.makepyfile(test_kill=KILL_THE_POSTMASTER)
    result = pytester.runpytest_subprocess("--reynard-db=main")
    out = result.stdout.str()
    err = result.stderr.str()
    no_traceback(out + err)
    # Every test after the kill fails (test_kill's own teardown may or may not: its
    # backend may still answer the rollback), each with one reynard-db line.
    for name in ("connection", "session", "fresh", "factory", "server"):
        result.stdout.re_match_lines([rf"(FAILED|ERROR) test_kill\.py::test_{name}_after - "])
    # The first failure says it in full: the database and the server that went away.
    assert re.search(r"reynard-db: database 'test_main_\w+'.*: the server cannot be reached", out)
    sections = re.findall(r"^_{3,} .* _{3,}\n((?:.*\n)*?)(?=_{3,} |={3,} )", out, re.M)
    assert sections and all(
        len(body.strip().splitlines()) == 1 and body.startswith("reynard-db: ") for body in sections
    ), sections
    # After the summary: the clean-up's one line, nothing else.
    tail = out.split(" in ")[-1].splitlines()[1:] + err.splitlines()
    assert all(line.startswith("reynard-db: ") for line in tail if line.strip()), tail
