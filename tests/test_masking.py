"""Masking hides the password where it stands, and nothing else.

With the README's CI password, ``postgres`` (also the user's and the database's name,
and a prefix of the scheme), every message showed
``***ql+psycopg://***:***@localhost:.../***``: a remembered password was removed
wherever its letters appeared. A password is masked by its place (a URL's user
part, ``password=``), and a remembered one only as a whole token outside URLs, where
it is not also a name the URLs show (user, host, port, database).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from cli_fork import run_cli_in, run_pytest_argv
from psycopg import sql
from reynard_trees import clean_env, reynard_project

from pytest_reynard_db.foundation import urls
from pytest_reynard_db.foundation.urls import mask_url, redact, remember_secrets
from pytest_reynard_db.postgres import EphemeralServer

#: Passwords that are also a user, a database, a host, a port, too short to be told
#: from other words, and one with every character a URL gives a meaning to.
PASSWORDS = ("postgres", "p", "localhost", "5432", "p@ss:w/rd?#%&=+ ;'")
SPECIAL = PASSWORDS[-1]


@pytest.fixture
def remembered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Secrets remembered in the test stay the test's."""
    monkeypatch.setattr(urls, "_REMEMBERED", set())
    monkeypatch.setattr(urls, "_SHOWN", set(), raising=False)
    yield


def url_with(password: str, port: int = 5432) -> str:
    return f"postgresql://postgres:{quote(password, safe='')}@localhost:{port}/postgres"


@pytest.mark.parametrize("password", PASSWORDS)
def test_the_password_is_masked_where_it_stands_and_nothing_else(
    password: str, remembered: None
) -> None:
    url = url_with(password)
    remember_secrets(url)
    shown = "postgresql+psycopg://postgres:***@localhost:5432/postgres"
    assert mask_url(url.replace("postgresql:", "postgresql+psycopg:")) == shown
    for message in (
        f"cannot connect to {shown}: connection refused",
        f"reynard-db: databases main on {shown}",
        'FATAL:  password authentication failed for user "postgres"',
        'database "postgres" exists; port 5432 on localhost; postgresql 15; test_postgres_x',
        "app: wrote migrations/versions/1f2e3d4c5b6a_p.py (revision 1f2e3d4c5b6a) -p 5",
    ):
        assert redact(message) == message
    conninfo = f"host=localhost port=5432 user=postgres password={password} dbname=postgres"
    if " " not in password:  # else libpq's quoting, below
        assert redact(conninfo) == conninfo.replace(f"password={password}", "password=***")
    prose = redact(f"postgres:{password}@localhost")  # a password holding '@' hides the rest
    assert prose in ("postgres:***@localhost", "postgres:***@***@localhost"), prose


def test_a_remembered_password_goes_as_a_whole_token_never_as_part_of_a_word(
    remembered: None,
) -> None:
    remember_secrets(url_with("hunter22"), url_with(SPECIAL))
    assert redact("auth hunter22 failed; hunter222 and xhunter22 are words") == (
        "auth *** failed; hunter222 and xhunter22 are words"
    )
    assert redact(f"resolve '{SPECIAL}' failed") == "resolve '***' failed"
    # A URL parser shows a password's tail after an '@' as a host: that piece goes too.
    assert redact('could not translate host name "ss:w/rd?#%&=+ ;\'"') == (
        'could not translate host name "***"'
    )
    assert redact(f"postgresql://u:{quote(SPECIAL, safe='')}@h/db") == "postgresql://u:***@h/db"
    quoted = SPECIAL.replace("'", "\\'")  # libpq's quoting of a conninfo value
    assert redact(f"host=h password='{quoted}' dbname=db") == "host=h password=*** dbname=db"


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[EphemeralServer, psycopg.Connection[Any]]]:
    """A server as the CI service container runs it: ``postgres`` asked for a password
    over TCP, and a session opened before, on which each test sets the password."""
    with EphemeralServer.start() as server, server.connect() as conn:
        assert server.process.base_dir is not None
        hba = server.process.base_dir / "data" / "pg_hba.conf"
        info = hba.stat()
        hba.write_text("host all all 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        shutil.chown(hba, info.st_uid, info.st_gid)
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute("SELECT pg_reload_conf()")
        yield server, conn


@pytest.mark.parametrize("password", ["postgres", "localhost", SPECIAL])
def test_every_output_shows_the_url_with_only_its_password_masked(
    password: str, service: tuple[EphemeralServer, psycopg.Connection[Any]], tmp_path: Path
) -> None:
    server, conn = service
    conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))
    port = server.url.port
    url = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{port}/postgres"
    project = reynard_project(tmp_path / "project")
    (project / "test_a.py").write_text("def test_a(reynard_db):\n    pass\n")

    ran = run_pytest_argv(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reynard-db=main"],
        project,
        clean_env(REYNARD_DB_URL=url),
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    as_given = f"postgresql://postgres:***@127.0.0.1:{port}/postgres"
    assert f"reynard-db: databases main on {as_given}\n" in ran.stdout, ran.stdout
    assert "***ql" not in ran.stdout and ran.stderr == ""

    wrong = url.replace(f":{quote(password, safe='')}@", ":wrong@")
    for argv in (("check", "main", "--url", url, "--only", "upgrade"), ("current", "main")):
        env = clean_env(DATABASE_URL=wrong, REYNARD_DB_URL=url)
        code, out, err = run_cli_in(project, *argv, env=env)
        output = out + err
        if argv[0] == "check":
            assert code == 0, output
            assert "main      upgrade  ok" in out, output
        else:  # the password is wrong: one line, the URL as it is with its password masked
            assert code == 2, output
            assert err.count("\n") == 1, output
            assert f"postgresql+psycopg://postgres:***@127.0.0.1:{port}/" in err, output
        assert "***ql" not in output and f"{port}/***" not in output, output
