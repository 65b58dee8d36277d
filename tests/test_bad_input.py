"""Bad input to ``reynard-migrate``: one clear line on stderr, exit 2, never a traceback.

The corpus is ``CASES``, one line per case: an id, a mutation of a fresh copy of the
Reynard trees (or None), the argv, the exit code and a regex the one-line message
must match. ``{closed}``, ``{silent}``, ``{wrong_password}``, ``{unknown_role}`` in
argv are URLs of a closed port, a listener that never answers, and a server that
refuses the credentials; ``{no_createdb}`` names a role that may not create
databases. Every run also proves that the password of any URL given
(``s3cr3t``) appears nowhere in stdout or stderr.

Beside the corpus, a database name with quotes, spaces and a semicolon is created
exactly as named and never run as SQL.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_fork import run_cli
from reynard_trees import copy_reynard_trees, databases, require_password
from sqlalchemy import create_engine, text

from pytest_reynard_db.postgres import EphemeralServer

SECRET = "s3cr3t"
MAIN = Path("alembic/main/versions")
BAD = MAIN / "3a1400000009_bad.py"


# -- mutations: each breaks one thing in a fresh copy of the trees --------------------------------
def edit(path: str | Path, old: str, new: str) -> Callable[[Path], None]:
    def mutate(project: Path) -> None:
        target = project / path
        body = target.read_text()
        assert re.search(old, body, flags=re.M), f"{old!r} not in {target}"
        target.write_text(re.sub(old, new, body, count=1, flags=re.M))

    return mutate


def write(path: str | Path, body: str) -> Callable[[Path], None]:
    def mutate(project: Path) -> None:
        (project / path).write_text(body)

    return mutate


def empty_versions(project: Path) -> None:
    for revision in (project / MAIN).glob("*.py"):
        revision.unlink()


def remove(path: str) -> Callable[[Path], None]:
    return lambda project: (project / path).unlink()


def no_registry(project: Path) -> None:
    """No databases: a pyproject.toml without the table, no ``alembic_<name>.ini``."""
    (project / "pyproject.toml").write_text('[project]\nname = "app"\n')
    for ini in project.glob("alembic_*.ini"):
        ini.unlink()


def prepend_bytes(path: str, data: bytes) -> Callable[[Path], None]:
    def mutate(project: Path) -> None:
        target = project / path
        target.write_bytes(data + target.read_bytes())

    return mutate


def both(*mutations: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(project: Path) -> None:
        for one in mutations:
            one(project)

    return mutate


def revision_id(rev: str) -> Callable[[Path], None]:
    """A revision file whose id is ``rev`` (after the head of ``main``)."""
    return write(BAD, f'revision = "{rev}"\ndown_revision = "3a1400000004"\n')


UP_CLOSED = ("upgrade", "main", "--url", "{closed}")
SQL_CLOSED = ("upgrade", "main", "--sql", "--url", "{closed}")  # --sql: nothing connects
# env.py as `alembic init` writes it: the ini's logging read whether it is there or not.
STOCK_FILECONFIG = edit(
    "alembic/main/env.py", r"^run_migrations\(",
    "from logging.config import fileConfig\nfrom alembic import context\n"
    "fileConfig(context.config.config_file_name)\nrun_migrations(",
)  # fmt: skip
NO_LOGGING_SECTIONS = edit("alembic_main.ini", r"^\[loggers\](.|\n)*\Z", "")
ECS_FORK = write("alembic/ecs/versions/ecs/ec5000000009_fork.py",
                 'revision = "ec5000000009"\ndown_revision = "ec5000000003"\n')  # fmt: skip

# (id, mutation, argv, exit code, message regex): one line per case.
CASES: list[tuple[str, Callable[[Path], None] | None, tuple[str, ...], int, str]] = [
    ("broken-ini", edit("alembic_main.ini", r"\A", "not an ini line\n"), ("heads", "main"), 2,
     r"alembic_main\.ini: unreadable ini: File contains no section headers"),
    ("missing-script-location", edit("alembic_main.ini", r"^script_location.*$", ""),
     ("heads", "main"), 2, r"alembic_main\.ini: \[alembic\] script_location is missing"),
    ("versions-path-is-a-file",
     edit("alembic_main.ini", r"^version_locations.*$",
          "version_locations = %(here)s/alembic_main.ini"),
     ("heads", "main"), 2, r"alembic_main\.ini: version_locations: not a directory: .*main\.ini"),
    ("missing-ini", remove("alembic_main.ini"), ("heads", "main"), 2,
     r"pyproject\.toml: \[tool\.reynard-db\.databases\.main\]: ini: no such file"),
    ("invalid-toml", edit("pyproject.toml", r"\A", "[[[\n"), ("list",), 2,
     r"pyproject\.toml: invalid TOML"),
    # a CI gate over a project whose registry moved away: nothing checked is no pass
    # the same silent pass, by selection: no database selected is a mirror
    ("mirror-sync-of-no-mirror", None, ("check", "main", "ecs", "--only", "mirror_sync"), 2,
     r"nothing to check: mirror_sync applies to mirrors only, and none of main, ecs is one"),
    ("empty-registry", no_registry, ("check",), 2,
     r"nothing to check: no databases in .*pyproject\.toml \(no \[tool\.reynard-db\] "
     r"table, and no alembic_<name>\.ini beside it\)"),
    ("non-utf8-pyproject", prepend_bytes("pyproject.toml", b"# caf\xe9\n"), ("list",), 2,
     r"pyproject\.toml: not UTF-8: byte 0xe9 at line 1"),
    ("unknown-registry-key", edit("pyproject.toml", r'^description = "Main application"$',
                                  'colour = "red"'), ("heads", "main"), 2,
     r"\[tool\.reynard-db\.databases\.main\]: unknown key 'colour'"),
    ("syntax-error", write(BAD, 'revision = "3a1400000009"\ndef upgrade(:\n'), UP_CLOSED, 2,
     r"3a1400000009_bad\.py:2: syntax error"),
    ("missing-module", write(BAD, 'import no_such_module\nrevision = "3a1400000009"\n'),
     UP_CLOSED, 2, r"3a1400000009_bad\.py: cannot load: ModuleNotFoundError: .*no_such_module"),
    ("down-revision-cycle",
     edit(MAIN / "3a1400000001_create_user_account_table.py", r"^down_revision(.*)= None$",
          r'down_revision\1= "3a1400000004"'),
     UP_CLOSED, 2, r"Cycle is detected in revisions .*3a1400000001_create_user_account_table\.py"),
    ("missing-down-revision",
     write(BAD, 'revision = "3a1400000009"\ndown_revision = "deadbeef0000"\n'), ("heads", "main"),
     2, r"3a1400000009_bad\.py: down_revision 'deadbeef0000' is not a revision of this tree"),
    ("duplicate-id-two-branches",
     write("alembic/ecs/versions/agents/a6e400000009_dup.py",
           'revision = "ec5000000002"\ndown_revision = "a6e400000004"\n'), ("heads", "ecs"), 2,
     r"revision ec5000000002 is defined twice: .*/versions/ecs/.* and .*/versions/agents/"),
    ("unknown-depends-on",
     write(BAD, 'revision = "3a1400000009"\ndown_revision = "3a1400000004"\n'
                'depends_on = "deadbeef0000"\n'), ("heads", "main"),
     2, r"3a1400000009_bad\.py: depends_on 'deadbeef0000' is not a revision or branch label"),
    ("sys-exit-at-import", write(BAD, 'import sys\nsys.exit(3)\nrevision = "3a1400000009"\n'),
     ("heads", "main"), 2, r"3a1400000009_bad\.py: cannot load: it calls sys\.exit\(3\) \(line 2"),
    ("empty-revision-id", revision_id(""), ("heads", "main"), 2,
     r"3a1400000009_bad\.py: revision '' is not a valid revision id: it is empty"),
    ("revision-id-heads", revision_id("heads"), ("heads", "main"), 2,
     r"3a1400000009_bad\.py: revision 'heads' is not a valid revision id: .*reserved"),
    ("revision-id-head", revision_id("head"), ("history", "main"), 2,
     r"3a1400000009_bad\.py: revision 'head' is not a valid revision id: .*reserved"),
    ("revision-id-base", revision_id("base"), UP_CLOSED, 2,
     r"3a1400000009_bad\.py: revision 'base' is not a valid revision id: .*reserved"),
    ("missing-env-py", remove("alembic/main/env.py"), SQL_CLOSED, 2,
     r"database 'main': .*alembic/main/env\.py: no such file"),
    ("sql-logging-sections-missing", both(STOCK_FILECONFIG, NO_LOGGING_SECTIONS),
     SQL_CLOSED, 2, r"alembic_main\.ini: no \[formatters\] section .*env\.py:\d+ .*fileConfig"),
    ("create-on-a-branch-with-two-heads", ECS_FORK,
     ("create", "ecs", "-m", "more", "--branch", "ecs", "--empty"), 2,
     r"database 'ecs': branch 'ecs' has 2 heads: ec5000000004 \(.*\), ec5000000009 \(.*\); merge"),
    ("empty-tree-unknown-target", empty_versions, ("upgrade", "main", "--to", "3a1400000001"),
     2, r"database 'main': unknown revision '3a1400000001'"),
    ("mirror-cycle", edit("pyproject.toml", r'^(description = "ECS world simulation")$',
                          r'\1\nmirror_of = "ecs_e2e"'), ("heads", "ecs"), 2,
     r"mirror_of: cycle (ecs -> ecs_e2e -> ecs|ecs_e2e -> ecs -> ecs_e2e)"),
    ("unknown-mirror-of", edit("pyproject.toml", r'^mirror_of = "main"$', 'mirror_of = "nope"'),
     ("heads", "e2e"), 2,
     r"\[tool\.reynard-db\.databases\.e2e\]: mirror_of: unknown database 'nope'"),
    ("unknown-database", None, ("upgrade", "nope", "--url", "{closed}"), 2,
     r"unknown database 'nope' in .*pyproject\.toml \(known: ecs, ecs_e2e, main, e2e\)"),
    ("unknown-revision", None, ("upgrade", "main", "--to", "zzz", "--url", "{closed}"), 2,
     r"database 'main': unknown revision 'zzz'"),
    ("unknown-downgrade-target", None, ("downgrade", "main", "--to", "ec5000000001", "--sql"), 2,
     r"database 'main': unknown revision 'ec5000000001'"),
    ("unknown-check", None, ("check", "--only", "nope"), 2, r"unknown check 'nope'"),
    ("malformed-url", None, ("upgrade", "main", "--url", "not a url"), 2,
     r"--url: malformed database URL 'not a url'"),
    ("malformed-env-url", None, ("upgrade", "main"), 2,
     r"\$DATABASE_URL: malformed database URL 'postgresql://u:\*\*\*@h:notaport/x'"),
    ("not-postgresql-url", None, ("upgrade", "main", "--url", f"mysql://u:{SECRET}@h/x"), 2,
     r"--url: not a PostgreSQL URL: 'mysql://u:\*\*\*@h/x'"),
    ("invalid-port", None, ("current", "main", "--url", f"postgresql://u:{SECRET}@127.0.0.1:99999/x"),
     2,
     r"cannot connect to .*u:\*\*\*@127\.0\.0\.1:99999/x: .*invalid port"),
    ("closed-port", None, ("current", "main", "--url", "{closed}"), 2,
     r"database 'main': cannot connect to .*u:\*\*\*@127\.0\.0\.1:\d+/x: .*Connection refused"),
    ("check-closed-port", None, ("check", "main", "--url", "{closed_admin}"), 2,
     r"cannot connect to .*u:\*\*\*@127\.0\.0\.1:\d+/postgres: .*Connection refused"),
    ("check-on-an-application-database", None, ("check", "main", "--url", "{closed}"), 2,
     r"refusing --url: it names database 'x', not a maintenance database"),
    ("check-on-production", None, ("check", "main", "--url", "{closed_production}"), 2,
     r"refusing --url: it names the production database 'reynard'"),
    ("silent-server", None, ("upgrade", "main", "--url", "{silent}"), 2,
     r"database 'main': cannot connect to .*u:\*\*\*@127\.0\.0\.1:\d+/x: .*timeout"),
    ("wrong-password", None, ("upgrade", "main", "--url", "{wrong_password}"), 2,
     r"cannot connect to .*app:\*\*\*@.*password authentication failed for user \"app\""),
    ("role-without-createdb", None, ("setup", "main", "--url", "{no_createdb}"), 2,
     r"no_createdb:\*\*\*@.*: permission denied to create database"),
    ("unknown-role", None, ("setup", "main", "--url", "{unknown_role}"), 2,
     r"cannot connect to .*nobody_here:\*\*\*@.*role \"nobody_here\" does not exist"),
]  # fmt: skip


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A listener that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.fixture(scope="module")
def password_server() -> Iterator[EphemeralServer]:
    """A server where role ``app`` must give its password (scram), others are trusted."""
    with EphemeralServer.start() as server:
        require_password(server, "app", "right-password")
        with server.connect() as conn:
            conn.execute("CREATE ROLE no_createdb LOGIN")  # trusted, but may not create
        yield server


def cli_with(project: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return run_cli(project, *argv, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(
    ("mutate", "argv", "code", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input(
    tmp_path: Path,
    mutate: Callable[[Path], None] | None,
    argv: tuple[str, ...],
    code: int,
    message: str,
    closed_port: int,
    silent_port: int,
    password_server: EphemeralServer,
) -> None:
    project = copy_reynard_trees(tmp_path)
    if mutate is not None:
        mutate(project)
    port = password_server.url.port
    urls = {
        "closed": f"postgresql://u:{SECRET}@127.0.0.1:{closed_port}/x",
        "closed_admin": f"postgresql://u:{SECRET}@127.0.0.1:{closed_port}/postgres",
        "closed_production": f"postgresql://u:{SECRET}@127.0.0.1:{closed_port}/reynard",
        "silent": f"postgresql://u:{SECRET}@127.0.0.1:{silent_port}/x",
        "wrong_password": f"postgresql://app:{SECRET}@127.0.0.1:{port}/postgres",
        "unknown_role": f"postgresql://nobody_here:{SECRET}@127.0.0.1:{port}/x",
        "no_createdb": f"postgresql://no_createdb:{SECRET}@127.0.0.1:{port}/reynard_new",
    }
    env = {"DATABASE_URL": f"postgresql://u:{SECRET}@h:notaport/x"}
    returncode, out, err = cli_with(project, *(arg.format(**urls) for arg in argv), env=env)
    assert returncode == code, (out, err)
    assert err.startswith("reynard-migrate: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in out + err
    assert re.search(message, err), err
    assert SECRET not in out + err
    # "silent" never answers: connect_timeout ends it; a hang would end in run_cli's timeout


def test_hostile_database_name_is_created_exactly_as_named(
    tmp_path: Path, pg_server: EphemeralServer
) -> None:
    """``setup`` quotes the name: a quote, spaces and a semicolon are just characters."""
    project = copy_reynard_trees(tmp_path)
    name = 'test_o\'brien "db"; DROP DATABASE postgres; --'
    pg_server.drop_database(name)
    before = databases(pg_server)
    url = pg_server.url.set(database=name).render_as_string(hide_password=False)
    code, out, err = cli_with(project, "setup", "main", "--url", url)
    assert code == 0, err
    assert "created, at 3a1400000004" in out
    assert databases(pg_server) == before | {name}
    engine = create_engine(pg_server.url.set(database=name))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            "3a1400000004"
        )
    engine.dispose()
    # Again: it exists now, nothing is created, it stays at head.
    code, out, err = cli_with(project, "setup", "main", "--url", url)
    assert code == 0 and "created" not in out, err
    pg_server.drop_database(name)


def test_list_of_a_registry_naming_no_database_says_why(tmp_path: Path) -> None:
    """``list`` shows its empty table (exit 0) and says on stderr what is missing."""
    project = copy_reynard_trees(tmp_path)
    no_registry(project)

    code, out, err = run_cli(project, "list")

    assert code == 0, out + err
    assert out.splitlines() == ["name  database  ini  tree  mirror_of  heads"], out
    assert err == (
        "reynard-migrate: no databases in pyproject.toml (no [tool.reynard-db] table, "
        "and no alembic_<name>.ini beside it)\n"
    ), err
