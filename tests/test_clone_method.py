"""The clone method: reflinks probed, PostgreSQL >= 18 preferred and ``file_copy_method =
clone`` set where the runtime directory has them, and the run's header saying which.

The reflink file system is made here (a loop-mounted XFS, ``bench/reflink_fs.py``) when
the machine allows it (root, ``mkfs.xfs``); those tests are skipped with the reason
otherwise.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.reflink_fs import Unavailable, reflink_file_system
from pytest_reynard_db.postgres import EphemeralServer, find_binaries
from pytest_reynard_db.postgres.binaries import CLONE_VERSION, of_server, planned, reflinks
from pytest_reynard_db.postgres.runas import RUNTIME_DIR_ENV

#: A table of about 40 MB: a copy of it shows in the file system's use, a reflink not.
FILL = (
    "CREATE TABLE filler AS SELECT i, repeat(md5(i::text), 30) AS pad "
    "FROM generate_series(1, 40000) i"
)
MB = 2**20
PIP = "pip install 'pytest-reynard-db[embedded]'"


@pytest.fixture(scope="module")
def reflink_dir() -> Iterator[Path]:
    stack = ExitStack()
    try:
        mount = stack.enter_context(reflink_file_system(size_mb=1024))
    except Unavailable as exc:
        pytest.skip(f"no reflink file system here: {exc}")
    with stack:
        yield mount


@pytest.fixture
def on_reflinks(reflink_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The runtime directory on the reflink file system, for this test and its children."""
    runtime = reflink_dir / "runtime"
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(runtime))
    return runtime


def eighteen() -> None:
    if find_binaries(at_least=CLONE_VERSION).version < CLONE_VERSION:
        pytest.skip(f"no PostgreSQL >= {CLONE_VERSION} binaries here")


def test_the_probe(reflink_dir: Path, tmp_path: Path) -> None:
    assert reflinks(reflink_dir)
    assert not reflinks(tmp_path / "missing"), "a directory that cannot be probed has none"
    shm = Path("/dev/shm")
    if shm.is_dir():
        assert not reflinks(shm), "tmpfs has no reflinks"


def test_what_would_make_it_fast_is_what_is_missing(reflink_dir: Path) -> None:
    plain = reflink_dir.parent  # the file system the image is on
    if reflinks(plain):
        pytest.skip(f"{plain} has reflinks too")
    assert planned(18, reflink_dir).clone
    old_binaries = planned(15, reflink_dir)
    assert not old_binaries.clone
    assert old_binaries.why.startswith("PostgreSQL >= 18 binaries (these are 15: ")
    no_reflinks = planned(18, plain).why
    assert no_reflinks.startswith("$REYNARD_DB_RUNTIME_DIR on a reflink")
    assert ">= 18" not in no_reflinks, "these binaries would do"
    both = planned(15, plain).why
    assert both.startswith(no_reflinks)
    assert both.endswith("and PostgreSQL >= 18 (taken first there when installed: " + PIP + ")")


def test_binaries_of_at_least_a_version_are_preferred() -> None:
    first = find_binaries()
    assert find_binaries(at_least=first.version) == first
    assert find_binaries(at_least=999) == first, "none that new: the first, as without"
    newest = find_binaries(at_least=CLONE_VERSION)
    assert newest.version >= CLONE_VERSION or newest == first


def test_a_server_on_reflinks_clones_without_copying(on_reflinks: Path) -> None:
    eighteen()
    with EphemeralServer.start() as server:
        assert server.version >= CLONE_VERSION, "18 preferred where reflinks work"
        assert server.process.clone_method.clone
        method = of_server(server)
        assert method.clone and "file_copy_method = clone" in method.why
        server.create_database("test_big")
        with server.connect("test_big") as conn:
            conn.execute(FILL)
        used = shutil.disk_usage(on_reflinks).used
        server.create_database("test_clone", template="test_big", end_sessions=False)
        grew = shutil.disk_usage(on_reflinks).used - used
        with server.connect("test_clone") as conn:
            assert conn.execute("SELECT count(*) FROM filler").fetchone() == (40000,)
        assert grew < 10 * MB, f"the clone took {grew / MB:.0f} MB: copied, not cloned"


def test_a_server_without_reflinks_copies_and_says_what_would_clone(
    reflink_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eighteen()
    plain = reflink_dir.parent / "plain"  # beside the image: the file system the image is on
    plain.mkdir(exist_ok=True)
    if reflinks(plain):
        pytest.skip(f"{plain} has reflinks too")
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(plain / "runtime"))
    with EphemeralServer.start(binaries=find_binaries(at_least=CLONE_VERSION)) as server:
        with server.admin() as conn:
            assert conn.execute("SHOW file_copy_method").fetchone() == ("copy",)
        method = server.process.clone_method
        assert not method.clone and "$REYNARD_DB_RUNTIME_DIR on a reflink" in method.why
        assert "PostgreSQL >=" not in method.why, "these binaries would do"
        assert not of_server(server).clone


def header(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith("reynard-db: clone method")]


def test_the_header_says_the_slow_method_and_what_would_make_it_fast(
    pytester: pytest.Pytester, pg_server: EphemeralServer
) -> None:
    pytester.makepyfile(test_x="def test_x(reynard_db_fresh):\n    pass\n")
    result = pytester.runpytest_subprocess("--reynard-db=main")
    result.assert_outcomes(passed=1)
    if find_binaries().version < CLONE_VERSION:
        wanted = "*to clone: $REYNARD_DB_RUNTIME_DIR on a reflink * and PostgreSQL >= 18 (taken *"
    else:
        wanted = "*to clone: $REYNARD_DB_RUNTIME_DIR on a reflink file system*"
    assert len(header(result)) == 1, result.outlines
    result.stdout.fnmatch_lines(
        ["reynard-db: clone method: copy, time grows with the template's size; " + wanted]
    )
    admin = pg_server.url.render_as_string(hide_password=False)
    existing = pytester.runpytest_subprocess("--reynard-db=main", f"--reynard-db-url={admin}")
    existing.assert_outcomes(passed=1)
    assert header(existing) == [
        "reynard-db: clone method: copy, time grows with the template's size; to clone: "
        f"PostgreSQL >= 18 (this server is {pg_server.version}) with file_copy_method = clone, "
        "its data directory on a reflink file system"
    ]
    assert "Traceback" not in result.stderr.str() + existing.stderr.str()


def test_the_header_says_clone_on_reflinks(pytester: pytest.Pytester, on_reflinks: Path) -> None:
    eighteen()
    pytester.makepyfile(test_x="def test_x(reynard_db_fresh):\n    pass\n")
    result = pytester.runpytest_subprocess("--reynard-db=main")
    result.assert_outcomes(passed=1)
    assert header(result) == [
        f"reynard-db: clone method: clone, constant time (PostgreSQL {CLONE_VERSION}, "
        f"file_copy_method = clone, {on_reflinks} has reflinks)"
    ]
    # the PostgreSQL the header names is the one that runs (>= 18 preferred here)
    result.stdout.fnmatch_lines([f"reynard-db: PostgreSQL {CLONE_VERSION} (*"])
    with EphemeralServer.start() as server:  # an existing server set up for it: asked
        admin = server.url.render_as_string(hide_password=False)
        existing = pytester.runpytest_subprocess("--reynard-db=main", f"--reynard-db-url={admin}")
    existing.assert_outcomes(passed=1)
    assert header(existing) == [
        f"reynard-db: clone method: clone, constant time (PostgreSQL {CLONE_VERSION}, "
        "file_copy_method = clone)"
    ]
