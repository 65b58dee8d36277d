"""``find_binaries``' remembered answers: asked once, asked again when what decides them changes.

Real subprocesses: stand-in ``postgres`` and ``pg_config`` scripts that log every call,
so the tests see how many times each was asked (a pytest start asked both, every time).
"""

from __future__ import annotations

import os
from pathlib import Path

from pytest_reynard_db.postgres.binaries import find_binaries


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    # A rewrite within the same clock tick must still count as a change.
    stamp = path.stat().st_mtime_ns + 10**9 * len(path.read_text())
    os.utime(path, ns=(stamp, stamp))


def _bindir(root: Path, version: int, calls: Path) -> Path:
    """A bin directory whose ``postgres --version`` says ``version`` and logs the call."""
    bindir = root / str(version) / "bin"
    bindir.mkdir(parents=True)
    _script(bindir / "initdb", "exit 0")
    _script(
        bindir / "postgres",
        f'echo "version {version}" >> {calls}; echo "postgres (PostgreSQL) {version}.1"',
    )
    return bindir


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_the_version_is_asked_once_then_again_when_the_binary_changes(tmp_path: Path) -> None:
    calls, cache = tmp_path / "calls.log", tmp_path / "binaries.json"
    bindir = _bindir(tmp_path, 15, calls)
    environ = {"REYNARD_DB_PG_BIN": str(bindir)}

    first = find_binaries(environ, cache=cache)
    again = find_binaries(environ, cache=cache)
    assert first == again and first.version == 15
    assert _calls(calls) == ["version 15"], "the second lookup asked postgres again"

    _script(  # upgraded in place: same path, a new binary
        bindir / "postgres", f'echo "version 16" >> {calls}; echo "postgres (PostgreSQL) 16.0"'
    )
    assert find_binaries(environ, cache=cache).version == 16
    assert _calls(calls) == ["version 15", "version 16"]
    assert find_binaries(environ).version == 16  # without a cache: asked, as before
    assert len(_calls(calls)) == 3


def test_pg_config_is_asked_again_when_a_version_is_installed_beside(tmp_path: Path) -> None:
    """Debian's pg_config runs the newest installed version's: installing one changes
    its answer without changing pg_config itself."""
    calls, cache = tmp_path / "calls.log", tmp_path / "binaries.json"
    lib = tmp_path / "lib" / "postgresql"
    _bindir(lib, 15, calls)
    path = tmp_path / "path"
    path.mkdir()
    _script(
        path / "pg_config",
        f"echo pg_config >> {calls}; ls -d {lib}/*/bin | sort -V | tail -n1",
    )
    environ = {"PATH": str(path)}
    debian_glob = f"{lib}/*/bin"

    assert find_binaries(environ, debian_glob=debian_glob, cache=cache).version == 15
    assert find_binaries(environ, debian_glob=debian_glob, cache=cache).version == 15
    assert _calls(calls) == ["pg_config", "version 15"]

    _bindir(lib, 16, calls)
    found = find_binaries(environ, debian_glob=debian_glob, cache=cache)
    assert (found.version, found.origin) == (16, "pg_config --bindir")
    assert _calls(calls) == ["pg_config", "version 15", "pg_config", "version 16"]


def test_an_unreadable_cache_is_asked_again_and_rewritten(tmp_path: Path) -> None:
    calls, cache = tmp_path / "calls.log", tmp_path / "binaries.json"
    environ = {"REYNARD_DB_PG_BIN": str(_bindir(tmp_path, 15, calls))}
    cache.write_text("{not json")

    assert find_binaries(environ, cache=cache).version == 15
    assert find_binaries(environ, cache=cache).version == 15
    assert _calls(calls) == ["version 15"]
