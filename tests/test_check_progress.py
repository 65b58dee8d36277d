"""``reynard-migrate check`` shows how far it is on a terminal, and nothing off one (issue 14).

On a terminal (a pty here, as a user's shell gives it) stderr carries one line
rewritten in place: ``check <db>: <check> ...``, then ``check <db>: stairway n/N``
revision by revision, blanked before the results. Off a terminal (a pipe, a CI
log) there is no progress and no control character at all.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from reynard_trees import clean_env, reynard_project

from pytest_reynard_db.checks.report import ProgressLine, progress_line

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


def screen(output: str) -> list[str]:
    """What a terminal shows after ``output``: carriage returns overwrite, newlines move on."""
    lines = [""]
    column = 0
    for char in output:
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append("")
            column = 0
        else:
            line = lines[-1]
            lines[-1] = line[:column].ljust(column) + char + line[column + 1 :]
            column += 1
    return lines


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reynard_project(tmp_path_factory.mktemp("progress") / "project")


def check_on_a_tty(project: Path, *argv: str) -> tuple[int, str, str]:
    """``reynard-migrate check ARGV`` with stderr on a pty (stdout a pipe): code, stdout, stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest_reynard_db", "check", *argv],
        cwd=project,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    received = bytearray()
    while True:  # read as it comes: a full pty would block the child
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every writer closed the pty
            break
        if not chunk:
            break
        received += chunk
    os.close(master)
    assert child.stdout is not None
    out = child.stdout.read().decode()
    child.stdout.close()
    code = child.wait(timeout=300)
    return code, out, received.decode().replace("\r\n", "\n")  # the pty's own newlines


def test_a_terminal_sees_the_stairway_revision_by_revision(project: Path) -> None:
    code, out, err = check_on_a_tty(project, "main", "--only", "single_head,stairway")
    assert code == 0, out + err
    for n in range(1, 5):
        assert f"\rcheck main: stairway {n}/4" in err, repr(err)
    assert "\rcheck main: single_head ..." in err, repr(err)
    assert "\x1b" not in err  # carriage returns and spaces only: a dumb terminal shows it too
    assert "\n" not in err, repr(err)  # one line, rewritten in place
    [shown] = screen(err)
    assert shown.strip() == "", repr(err)  # blanked before the results
    assert not CONTROL.search(out), repr(out)  # the results (a pipe here) stay plain
    assert "main      stairway     ok" in out


def test_each_databases_child_interpreter_reports_its_revisions(project: Path) -> None:
    """With several databases each runs in a child interpreter: its progress reaches the line."""
    code, out, err = check_on_a_tty(project, "main", "ecs", "--only", "stairway")
    assert code == 0, out + err
    assert "\rcheck main: stairway 4/4" in err, repr(err)
    assert "\rcheck ecs: stairway 12/12" in err, repr(err)
    assert [line.strip() for line in screen(err)] == [""], repr(err)


def test_off_a_terminal_no_progress_and_no_control_character(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_reynard_db", "check", "main", "ecs", "--only", "stairway"],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert not CONTROL.search(done.stdout), repr(done.stdout)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_is_padded_over_the_previous_one_and_cut_to_the_width() -> None:
    stream = Terminal()
    with progress_line(stream) as progress:
        assert isinstance(progress, ProgressLine)
        progress.width = 30
        progress("ecs_e2e", "stairway", 9, 12)
        progress("ecs_e2e", "downgrade_clean")
        progress("a_database_with_a_long_name", "models_match")
    lines = stream.getvalue().split("\r")
    assert lines[1] == "check ecs_e2e: stairway 9/12"
    assert lines[3] == "check ecs_e2e: downgrade_clean ..."[:30]
    assert lines[5] == "check a_database_with_a_long_n"
    assert lines[7] == " " * 30  # cleared when the block ends
    with progress_line(io.StringIO()) as progress:
        assert progress is None  # not a terminal: no callback at all
