"""``reynard-migrate drift``: a "production" server (started here, logging every statement
with the session's application name) migrated with ``upgrade``, then changed by hand;
``drift`` must find each hand-made change, say nothing when there is none, and never
write: the log shows only reads from its session.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import psycopg
import pytest
import yaml
from cli_fork import Cli, run_cli
from reynard_trees import clean_env, log_of, logged_since
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from test_readme_ci import readme_block

from pytest_reynard_db.checks.drift import Timeouts, read_only
from pytest_reynard_db.postgres import EphemeralServer

HEAD = "3a1400000004"
#: What a read-only session may send (reads, transaction control): anything else from
#: drift in the log is a failure.
READS = {"SELECT", "SHOW", "BEGIN", "ROLLBACK", "SAVEPOINT", "RELEASE"}
_numbers = itertools.count()


@pytest.fixture(scope="module")
def production() -> Iterator[EphemeralServer]:
    """Production: every statement logged with its session's application_name."""
    with EphemeralServer.start(settings=("log_statement=all", "log_line_prefix=%a|")) as server:
        yield server


@pytest.fixture
def live(production: EphemeralServer, project: Path) -> str:
    """A production database of its own, upgraded to heads by ``reynard-migrate upgrade``
    (every test's ``project`` holds the same Reynard trees: one upgraded database copied)."""
    return upgraded_copy(production, project, f"prod_{next(_numbers)}", tree="reynard")


#: (production's directory, a tree) -> its database upgraded by ``reynard-migrate upgrade``
#: and never touched since: what ``upgraded_copy`` copies.
_upgraded: dict[tuple[Path | None, str], str] = {}


def upgraded_copy(
    production: EphemeralServer, root: Path, name: str, *, tree: str | None = None
) -> str:
    """A new production database ``name`` as ``reynard-migrate upgrade main`` in ``root``
    leaves it (its URL). The first per server and ``tree`` (default: ``root``) is upgraded
    for real by the CLI and left untouched; each is a copy of it (``CREATE DATABASE ...
    TEMPLATE``, the same files): a child interpreter and a whole migration fewer a test."""
    key = (production.process.base_dir, tree or str(root))
    if key not in _upgraded:
        template = f"{name}_upgraded"
        url = production.create_database(template).render_as_string(hide_password=False)
        code, out, err = run_cli(root, "upgrade", "main", "--url", url)
        assert code == 0, out + err
        _upgraded[key] = template
    return production.create_database(name, template=_upgraded[key]).render_as_string(
        hide_password=False
    )


def drift(cli: Cli, production: EphemeralServer, url: str, *extra: str) -> tuple[int, str, str]:
    """``drift main --url URL``; asserts that production received nothing but reads meanwhile."""
    offset = log_of(production).stat().st_size
    code, out, err = cli("drift", "main", "--url", url, *extra)
    lines = entries(logged_since(production, offset))
    # every statement production received meanwhile: drift's session's, and the guard's
    # own look at which server the allowed URL reaches (a SELECT, on its own connection)
    # both protocols: the simple one's "statement: ...", the extended one's "execute <name>: ..."
    statements = [
        m[1] for line in lines if (m := re.search(r"(?:statement|execute [^:]*): (.*)", line))
    ]
    ours = [line for line in lines if line.startswith("reynard-db drift main|")]
    assert ours or code == 2, f"drift's statements are not in the log:\n{lines}"
    verbs = {statement.split()[0].upper() for statement in statements}
    assert verbs <= READS, f"production received {verbs - READS}:\n" + "\n".join(statements)
    return code, out, err


def entries(log: str) -> list[str]:
    """The log's entries, a statement's continuation lines joined to its first line."""
    found: list[str] = []
    for line in log.splitlines():
        if re.match(r"[^|\s]*[^|]*\|(LOG|ERROR|FATAL|WARNING|STATEMENT|DETAIL|HINT):", line):
            found.append(line)
        elif found:
            found[-1] += f" {line}"
    return found


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def test_a_database_as_migrated_matches(production: EphemeralServer, live: str, cli: Cli) -> None:
    code, out, err = drift(cli, production, live, "--format", "json")
    assert code == 0, out + err
    [result] = json.loads(out)["results"]
    assert result["check"] == "drift" and result["status"] == "ok"
    assert result["message"].endswith(f"matches its tree at {HEAD}")
    assert result["revision"] == HEAD
    assert err == ""


HOTFIXES = {
    "extra index": (
        "CREATE INDEX ix_hotfix ON audit_log (action, created_at)",
        "remove index ix_hotfix on audit_log (action, created_at)",
    ),
    "changed default": (
        "ALTER TABLE user_account ALTER COLUMN is_active SET DEFAULT false",
        "change default of user_account.is_active: false -> true",
    ),
    "dropped column": (
        "ALTER TABLE api_key DROP COLUMN scopes",
        "add column api_key.scopes (JSONB)",
    ),
    "changed enum": (
        "ALTER TYPE user_role ADD VALUE 'auditor'",
        "change definition of enum public.user_role: ('user', 'admin', 'service', 'auditor') "
        "-> ('user', 'admin', 'service')",
    ),
}


@pytest.mark.parametrize("hotfix", HOTFIXES)
def test_a_hand_made_change_is_found(
    production: EphemeralServer, live: str, cli: Cli, hotfix: str
) -> None:
    statement, found = HOTFIXES[hotfix]
    execute(live, statement)
    code, out, err = drift(cli, production, live)
    assert code == 1, out + err
    lines = out.splitlines()
    assert f"  {found}" in lines, out
    assert "(1 difference); what would make it match the tree:" in out
    assert err == ""


def test_every_change_at_once_in_json_and_github(
    production: EphemeralServer, live: str, cli: Cli
) -> None:
    execute(live, *(statement for statement, _ in HOTFIXES.values()))
    code, out, _ = drift(cli, production, live, "--format", "json")
    assert code == 1
    [result] = json.loads(out)["results"]
    listed = result["message"].splitlines()[1:]
    assert sorted(listed) == sorted(f"  {found}" for _, found in HOTFIXES.values())
    code, out, _ = drift(cli, production, live, "--format", "github")
    assert code == 1 and out.startswith("::error title=main drift::"), out


def test_a_revision_not_in_the_tree_is_one_line(
    production: EphemeralServer, live: str, cli: Cli
) -> None:
    execute(live, "UPDATE alembic_version SET version_num = 'ffffffffffff'")
    code, out, err = drift(cli, production, live)
    assert code == 2 and out == ""
    [line] = err.strip().splitlines()
    assert re.fullmatch(
        r"reynard-migrate: error: database 'main' \(postgresql\+psycopg://\S+/prod_\d+\) is "
        r"stamped at ffffffffffff, which is not a revision of its tree \(alembic/main\): "
        r"deployed from another branch, or its file was removed",
        line,
    ), line


def test_a_writer_is_not_blocked_and_an_exclusive_lock_times_out(
    production: EphemeralServer, live: str, cli: Cli
) -> None:
    """A transaction writing rows (ROW EXCLUSIVE) meanwhile: drift reads beside it. One
    holding ACCESS EXCLUSIVE (a migration): drift gives up after --lock-timeout, one line."""
    plain = live.replace("+psycopg", "")
    with psycopg.connect(plain) as writer:
        writer.execute("INSERT INTO audit_log (action) VALUES ('writing')")
        started = time.monotonic()
        code, out, err = drift(cli, production, live)
        assert code == 0, out + err
        writer.execute("LOCK TABLE api_key IN ACCESS EXCLUSIVE MODE")
        blocked: list[tuple[int, str, str]] = []
        worker = threading.Thread(
            target=lambda: blocked.append(drift(cli, production, live, "--lock-timeout", "1"))
        )
        worker.start()
        worker.join(timeout=120)
        writer.rollback()
    [(code, out, err)] = blocked
    assert code == 2 and out == "", out + err
    assert "canceling statement due to lock timeout" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert time.monotonic() - started < 60


def test_the_readme_drift_job_runs_as_written(
    production: EphemeralServer, live: str, cli: Cli, project: Path
) -> None:
    """The scheduled job of the README's CI recipe, its production URL a changed database."""
    job = yaml.safe_load(readme_block("### In CI: GitHub Actions", "yaml"))["jobs"]["drift"]
    [step] = [s for s in job["steps"] if s.get("name") == "Production matches its tree"]
    assert step["run"] == "reynard-migrate drift main --format github"
    variable = next(iter(step["env"]))
    execute(live, "CREATE INDEX ix_hotfix ON audit_log (action, created_at)")
    done = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=project,
        env=clean_env(**{variable: live}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("::error title=main drift::"), done.stdout
    assert "remove index ix_hotfix on audit_log (action, created_at)" in done.stdout


def test_the_live_session_is_read_only_on_the_servers_side(live: str) -> None:
    """Whatever runs on drift's connection: the server refuses a write."""
    with read_only("main", make_url(live), Timeouts(lock=5.0)) as connection:
        with pytest.raises(DBAPIError, match="read-only transaction"):
            connection.execute(text("CREATE TABLE sneaky (id int)"))
        connection.rollback()
        assert connection.execute(text("SHOW lock_timeout")).scalar() == "5s"


def test_a_read_that_does_not_end_is_given_up(live: str) -> None:
    """``statement_timeout`` on drift's session: one read, at most that long."""
    with (
        read_only("main", make_url(live), Timeouts(statement=0.3)) as connection,
        pytest.raises(DBAPIError, match="canceling statement due to statement timeout"),
    ):
        connection.execute(text("SELECT pg_catalog.pg_sleep(5)"))


def test_a_database_below_heads_is_compared_at_its_own_revision(
    production: EphemeralServer, live: str, cli: Cli
) -> None:
    """Migrated to exactly the live revision: at heads the same database would differ."""
    code, out, err = cli("downgrade", "main", "--to", "3a1400000002", "--url", live)
    assert code == 0, out + err
    code, out, err = drift(cli, production, live)
    assert code == 0, out + err
    assert "matches its tree at 3a1400000002" in out


def test_a_tree_of_three_branches_at_heads_matches(production: EphemeralServer, cli: Cli) -> None:
    """The ECS tree (labels ecs, naming, agents: three version rows), as upgraded."""
    production.create_database("prod_ecs")
    url = production.database_url("prod_ecs").render_as_string(hide_password=False)
    code, out, err = cli("upgrade", "ecs", "--url", url)
    assert code == 0, out + err
    execute(url, "DROP INDEX IF EXISTS ix_nope")  # nothing changed: a no-op by hand
    code, out, err = cli("drift", "ecs", "--url", url, "--format", "json")
    assert code == 0, out + err
    [result] = json.loads(out)["results"]
    assert result["revision"] is None  # several version rows: no one revision
    assert result["message"].endswith(
        "matches its tree at 4a3e00000004, a6e400000004, ec5000000004"
    ), result


def test_env_py_reaches_only_the_throw_away_database(
    production: EphemeralServer, live: str, cli: Cli, project: Path
) -> None:
    """An env.py that writes to production by its own hard-coded URL, while drift migrates
    its throw-away database: refused before it connects (drift may read production, its
    env.py may not reach it), one line, nothing written."""
    env_py = project / "alembic" / "main" / "env.py"
    env_py.write_text(
        "import psycopg\n"
        f"with psycopg.connect({live.replace('+psycopg', '')!r}, autocommit=True) as c:\n"
        "    c.execute('CREATE TABLE hacked (id int)')\n" + env_py.read_text()
    )
    code, out, err = drift(cli, production, live)  # asserts that no other session wrote
    assert code == 2 and out == "", out + err
    [line] = err.strip().splitlines()
    assert "refused a connection to" in line and "alembic/main/env.py:2" in line, line


def test_an_empty_database_is_compared_with_the_empty_tree(
    production: EphemeralServer, cli: Cli
) -> None:
    """No version table: base, so every table made by hand is drift (JUnit here)."""
    production.create_database("prod_empty")
    url = production.database_url("prod_empty").render_as_string(hide_password=False)
    code, out, err = drift(cli, production, url)
    assert code == 0 and "matches its tree at base" in out, out + err
    execute(url, "CREATE TABLE by_hand (id int)")
    code, out, err = drift(cli, production, url, "--format", "junit")
    assert code == 1, out + err
    [case] = ElementTree.fromstring(out).iter("testcase")
    [failure] = case.iter("failure")
    assert "remove table by_hand" in (failure.text or "") + failure.get("message", "")


def test_a_version_table_of_its_own_name_is_read(
    production: EphemeralServer, cli: Cli, project: Path
) -> None:
    """env.py names its version table (mlflow's auth tree: ``alembic_version_auth``); drift
    learns the name when env.py first runs, after it has read the live database once."""
    env_py = project / "alembic" / "main" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            'default_url_env="DATABASE_URL")',
            'default_url_env="DATABASE_URL", version_table="reynard_version")',
        )
    )
    production.create_database("prod_own_version")
    url = production.database_url("prod_own_version").render_as_string(hide_password=False)
    code, out, err = cli("upgrade", "main", "--url", url)
    assert code == 0, out + err
    code, out, err = drift(cli, production, url)
    assert code == 0, out + err
    assert f"matches its tree at {HEAD}" in out and err == ""
    # a second tree's version table beside it (mlflow's two trees in one database): this
    # tree's revisions are still read from its own, and the other's table is a table
    execute(
        url,
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('0123456789ab')",
    )
    code, out, err = drift(cli, production, url)
    assert code == 1 and err == "", out + err
    assert "  remove table alembic_version" in out.splitlines(), out
    assert "(1 difference)" in out, out
