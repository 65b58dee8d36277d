"""Writing migrations with ``reynard-migrate`` on a project made with ``alembic init``:
the first revision of an empty tree, branches (``--new-branch``, ``--head``), ``merge``,
``stamp``, and what the CLI prints (Alembic's INFO lines only with ``-v``).

Real Alembic, real PostgreSQL (the suite's ``pg_server``), the CLI in a child process
as a user runs it; the lines asserted are the lines a user sees.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from cli_fork import run_cli
from reynard_trees import clean_env, ctrl_c_as_in_a_terminal, wait_for, write_revision
from sqlalchemy import create_engine, text

from pytest_reynard_db.foundation.errors import GuardRefused
from pytest_reynard_db.foundation.registry import load_registry
from pytest_reynard_db.guard import GUARD
from pytest_reynard_db.migration.manager import MigrationManager
from pytest_reynard_db.postgres import EphemeralServer

VERSIONS = Path("migrations/versions")
WROTE = r"app: wrote migrations/versions/([0-9a-f]{12})_%s\.py \(revision \1%s\)"
ALEMBIC_INFO = ("Context impl PostgresqlImpl", "Will assume transactional DDL")
UNKNOWN = re.compile(r"^reynard-migrate: error: ")


@pytest.fixture
def project(tmp_path: Path, pg_server: EphemeralServer, request: pytest.FixtureRequest) -> Path:
    """``alembic init -t generic``, registered; its ini names a database of its own."""
    root = tmp_path / "app"
    root.mkdir()
    ini = root / "alembic.ini"
    command.init(Config(str(ini)), str(root / "migrations"), template="generic")
    name = "test_authoring_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    pg_server.drop_database(name)
    url = pg_server.create_database(name).render_as_string(hide_password=False)
    ini.write_text(
        ini.read_text().replace("driver://user:pass@localhost/dbname", url.replace("%", "%%"))
    )
    (root / "pyproject.toml").write_text(
        '[tool.reynard-db.databases.app]\nini = "alembic.ini"\ndatabase = "app"\n'
        'url_env = "APP_DATABASE_URL"\n'
    )
    return root


def cli(project: Path, *argv: str) -> tuple[int, str, str]:
    return run_cli(project, *argv, env=clean_env())


def created(project: Path, slug: str, *argv: str, label: str = "") -> str:
    """``create app -m SLUG --empty ARGV``: the one line it prints; returns the revision."""
    code, out, err = cli(project, "create", "app", "-m", slug, "--empty", *argv)
    assert code == 0, (out, err)
    assert err == ""
    line = re.fullmatch(WROTE % (slug, f", branch {label}" if label else "") + "\n", out)
    assert line, out
    return line.group(1)


def refused(project: Path, *argv: str, code: int = 2) -> str:
    """The command fails with ``code`` and one error line, and writes no file."""
    before = sorted(p.name for p in (project / VERSIONS).iterdir())
    got, out, err = cli(project, *argv)
    assert got == code, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and UNKNOWN.match(lines[0]), err
    assert sorted(p.name for p in (project / VERSIONS).iterdir()) == before
    return lines[0].removeprefix("reynard-migrate: error: ")


def heads(project: Path) -> list[str]:
    code, out, err = cli(project, "heads", "app")
    assert code == 0, err
    return out.splitlines()


def version_table(url: str) -> set[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        if conn.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None:
            return set()
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    return set(rows)


def ini_url(project: Path) -> str:
    return load_registry(project).get("app").production_url().render_as_string(False)


# -- an empty tree ---------------------------------------------------------------------------
def test_an_empty_tree_is_listed_and_takes_its_first_revision(project: Path) -> None:
    code, out, err = cli(project, "list")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "name  database  ini          tree        mirror_of  heads",
        "app   app       alembic.ini  migrations  -          (empty)",
    ]
    assert cli(project, "heads", "app") == (0, "", "")
    assert cli(project, "history", "app") == (0, "", "")

    first = created(project, "first")
    assert heads(project) == [f"{first} (head)"]
    assert "down_revision: Union[str, Sequence[str], None] = None" in (
        next((project / VERSIONS).glob(f"{first}_*.py")).read_text()
    )
    code, out, err = cli(project, "upgrade", "app")
    assert code == 0, err
    assert version_table(ini_url(project)) == {first}


# -- branches ----------------------------------------------------------------------------------
def test_new_branch_head_and_branch_place_each_revision(project: Path) -> None:
    first = created(project, "first")
    feat = created(project, "feat_one", "--new-branch", "feat", label="feat")
    assert sorted(heads(project)) == sorted([f"{first} (head)", f"{feat} (feat) (head)"])

    # Two heads: no silent choice; the error says both ways to choose.
    assert refused(project, "create", "app", "-m", "x", "--empty") == (
        f"database 'app' has 2 heads: {', '.join(_labelled(first, feat))}; "
        "pass --branch LABEL or --head REV"
    )
    feat_two = created(project, "feat_two", "--branch", "feat")
    # The unlabelled head beside the labelled one (before: "no branch labelled").
    second = created(project, "second", "--head", first)
    # A branch from a revision that is not a head: a new branch point (Alembic's --splice).
    side = created(project, "side", "--new-branch", "side", "--from", first, label="side")

    code, out, err = cli(project, "history", "app")
    assert code == 0, err
    assert f"{first} -> {second} (head), second" in out
    assert f"{feat} -> {feat_two} (feat) (head), feat_two" in out
    assert f"<base> -> {feat} (feat), feat_one" in out
    assert f"{first} -> {side} (side) (head), side" in out
    assert f"<base> -> {first} (branchpoint), first" in out


def test_two_heads_of_one_label_are_chosen_by_head_or_merged(project: Path) -> None:
    """A fork inside branch ``feat``: ``--branch feat`` cannot choose (Alembic's
    ``feat@head`` names two heads), so the error offers what works, and it works."""
    first = created(project, "first")
    feat = created(project, "feat_one", "--new-branch", "feat", label="feat")
    a = write_revision(project / VERSIONS, "a00000000001", feat, slug="a").stem.split("_")[0]
    b = write_revision(project / VERSIONS, "b00000000001", feat, slug="b").stem.split("_")[0]
    listed = ", ".join(sorted([f"{a} (feat)", f"{b} (feat)", f"{first} (no label)"]))
    assert refused(project, "create", "app", "-m", "x", "--empty") == (
        f"database 'app' has 3 heads: {listed}; pass --head REV, or merge branch 'feat''s "
        "heads first: reynard-migrate merge app"
    )
    assert "merge them first (reynard-migrate merge app)" in refused(
        project, "create", "app", "-m", "x", "--empty", "--branch", "feat"
    )
    after_a = created(project, "after_a", "--head", a)
    assert f"{after_a} (feat) (head)" in heads(project)
    (project / VERSIONS / f"{after_a}_after_a.py").unlink()

    # What the error suggests works: the merge joins feat's two heads (and is labelled feat).
    code, out, err = cli(project, "merge", "app")
    assert (code, err) == (0, ""), out
    assert f"merging {a}, {b}" in out
    # Now a fork in the unlabelled part, beside feat's one head.
    created(project, "second", "--head", first)
    write_revision(project / VERSIONS, "c00000000001", first, slug="c")
    assert refused(project, "create", "app", "-m", "x", "--empty").endswith(
        "; pass --head REV, or merge the unlabelled heads first: reynard-migrate merge app"
    )
    code, out, err = cli(project, "merge", "app")
    assert (code, err) == (0, ""), out
    assert len(heads(project)) == 2  # feat's and the unlabelled one: by design


def _labelled(unlabelled: str, feat: str) -> list[str]:
    """The two heads as messages list them: by revision id."""
    return sorted([f"{unlabelled} (no label)", f"{feat} (feat)"])


def test_create_refuses_what_it_cannot_do_in_one_line(project: Path) -> None:
    first = created(project, "first")
    created(project, "feat_one", "--new-branch", "feat", label="feat")
    second = created(project, "second", "--head", first)
    rel = f"migrations/versions/{first}_first.py"
    assert refused(project, "create", "app", "-m", "x", "--empty", "--head", "zzz") == (
        "database 'app': --head: unknown revision 'zzz' (Can't locate revision identified by 'zzz')"
    )
    assert refused(project, "create", "app", "-m", "x", "--empty", "--head", first) == (
        f"database 'app': --head {first}: revision {first} is not a head (its children: "
        f"{second}); to branch from it, use --new-branch LABEL --from {first}"
    )
    assert refused(project, "create", "app", "-m", "x", "--empty", "--new-branch", "feat") == (
        f"database 'app': branch label 'feat' is already used by "
        f"{_rev_of(project, 'feat_one')} (migrations/versions/{_rev_of(project, 'feat_one')}"
        "_feat_one.py); extend it with --branch feat, or choose another label"
    )
    assert refused(project, "create", "app", "-m", "x", "--empty", "--new-branch", "my feat") == (
        "database 'app': branch label 'my feat' is not valid: a label must be one word, "
        "without spaces"
    )
    assert refused(project, "create", "app", "-m", "x", "--empty", "--new-branch", "heads") == (
        "database 'app': branch label 'heads' is not valid: it is reserved by Alembic "
        "(base, current, head, heads)"
    )
    assert refused(
        project, "create", "app", "-m", "x", "--empty", "--new-branch", "b", "--from", "nope"
    ).startswith("database 'app': --from: unknown revision 'nope'")
    assert refused(project, "create", "app", "-m", "x", "--empty", "--from", first) == (
        "database 'app': --from REV goes with --new-branch LABEL (where the new branch "
        "starts); to extend a head, use --head REV alone"
    )
    assert refused(project, "create", "app", "-m", "x", "--empty", "--branch", "nope") == (
        "database 'app': no branch labelled 'nope' (labels: feat); to extend an unlabelled "
        "head, pass --head REV; to start a branch, --new-branch LABEL"
    )
    assert rel  # the first revision's file is still there, untouched
    assert (project / rel).is_file()
    # --head and --from together, --head and --branch together: argparse's usage error.
    for extra in (("--head", second, "--from", first), ("--head", second, "--branch", "feat")):
        code, out, err = cli(project, "create", "app", "-m", "x", "--empty", *extra)
        assert code == 2, (out, err)
        assert err.splitlines()[-1].startswith("reynard-migrate")


def _rev_of(project: Path, slug: str) -> str:
    [path] = (project / VERSIONS).glob(f"*_{slug}.py")
    return path.name.split("_", 1)[0]


# -- merge -------------------------------------------------------------------------------------
def test_merge_joins_the_fork_and_refuses_the_rest(project: Path) -> None:
    assert refused(project, "merge", "app") == (
        "database 'app' has 0 heads (the tree is empty): nothing to merge"
    )
    first = created(project, "first")
    assert refused(project, "merge", "app") == (
        f"database 'app' has 1 head ({first}): nothing to merge"
    )
    assert refused(project, "merge", "app", first) == (
        f"database 'app': merge: a merge joins two heads or more; only {first} was named"
    )
    feat = created(project, "feat_one", "--new-branch", "feat", label="feat")
    # One head per branch: separate branches by design, merged only when named.
    assert refused(project, "merge", "app") == (
        f"database 'app' has one head per branch ({', '.join(_labelled(first, feat))}): "
        f"nothing to merge; to join branches on purpose, name their heads: "
        f"reynard-migrate merge app {' '.join(sorted([first, feat]))}"
    )
    # Two people wrote on the same parent: the unlabelled part of the tree has two heads.
    a = write_revision(project / VERSIONS, "a00000000001", first, slug="a").stem.split("_")[0]
    b = write_revision(project / VERSIONS, "b00000000001", first, slug="b").stem.split("_")[0]
    assert refused(project, "merge", "app", a, first) == (
        f"database 'app': merge: revision {first} is not a head (its children: {a}, {b})"
    )
    assert refused(project, "merge", "app", a, "nope").startswith(
        "database 'app': merge: unknown revision 'nope'"
    )
    code, out, err = cli(project, "merge", "app")
    assert (code, err) == (0, ""), out
    assert re.fullmatch(WROTE % ("merge_heads", f", merging {a}, {b}") + "\n", out), out
    merged = re.search(r"revision ([0-9a-f]{12})", out)
    assert merged
    assert sorted(heads(project)) == sorted([f"{merged.group(1)} (head)", f"{feat} (feat) (head)"])

    # Named heads across labels, with a message.
    code, out, err = cli(project, "merge", "app", "-m", "join feat", merged.group(1), feat)
    assert (code, err) == (0, ""), out
    assert re.fullmatch(WROTE % ("join_feat", f", merging {merged.group(1)}, {feat}") + "\n", out)
    assert len(heads(project)) == 1


def test_merge_never_overwrites_a_file(project: Path) -> None:
    ini = project / "alembic.ini"
    body = ini.read_text()
    assert "# file_template = " in body
    ini.write_text(body.replace("# file_template = ", "file_template = %%(slug)s\n# was: ", 1))
    first = created_slug_only(project, "first")
    write_revision(project / VERSIONS, "a00000000001", first, slug="a")
    write_revision(project / VERSIONS, "b00000000001", first, slug="b")
    taken = project / VERSIONS / "merge_heads.py"  # a third head, written by hand
    taken.write_text("revision = 'c00000000001'\ndown_revision = None\n# hand edits\n")
    assert refused(project, "merge", "app", code=1) == (
        "database 'app': migrations/versions/merge_heads.py already exists (the ini's "
        "file_template '%(slug)s' has no %(rev)s); nothing written: use another message, or "
        "put %%(rev)s in file_template"
    )
    assert taken.read_text() == "revision = 'c00000000001'\ndown_revision = None\n# hand edits\n"


def created_slug_only(project: Path, slug: str) -> str:
    code, out, err = cli(project, "create", "app", "-m", slug, "--empty")
    assert code == 0, err
    assert out == f"app: wrote migrations/versions/{slug}.py (revision {_id(out)})\n"
    return _id(out)


def _id(out: str) -> str:
    found = re.search(r"revision ([0-9a-f]{12})", out)
    assert found, out
    return found.group(1)


# -- stamp ---------------------------------------------------------------------------------------
def test_stamp_sets_the_version_table_and_nothing_else(project: Path) -> None:
    first = created(project, "first")
    (project / VERSIONS / f"{first}_first.py").write_text(
        (project / VERSIONS / f"{first}_first.py")
        .read_text()
        .replace("    pass\n", "    op.create_table('t', sa.Column('id', sa.Integer))\n", 1)
    )
    second = created(project, "second")
    url = ini_url(project)
    code, out, err = cli(project, "stamp", "app", first)
    assert (code, err) == (0, ""), out
    assert out == f"app: stamped, at {first} ({_masked(url)})\n"
    assert version_table(url) == {first}
    engine = create_engine(url)
    with engine.connect() as conn:  # stamped, not migrated: the first revision's table is not made
        assert conn.execute(text("SELECT to_regclass('t')")).scalar() is None
    engine.dispose()

    before = version_table(url)
    assert refused(project, "stamp", "app", "zzz") == (
        "database 'app': unknown revision 'zzz' (Can't locate revision identified by 'zzz')"
    )
    assert version_table(url) == before

    code, out, err = cli(project, "stamp", "app", "heads", "-q")
    assert (code, err) == (0, "")
    assert out == f"app: stamped, at {second} ({_masked(url)})\n"
    code, out, err = cli(project, "stamp", "app", "base")
    assert (code, err, out) == (0, "", f"app: stamped, at base ({_masked(url)})\n")
    assert version_table(url) == set()

    code, out, err = cli(project, "stamp", "app", first, "--sql")
    assert (code, err) == (0, "")
    assert f"INSERT INTO alembic_version (version_num) VALUES ('{first}')" in out
    assert version_table(url) == set()  # --sql touches nothing


def _masked(url: str) -> str:
    from pytest_reynard_db.foundation.urls import mask_url

    return mask_url(url)


def test_stamp_takes_the_migration_lock(project: Path) -> None:
    from pytest_reynard_db.migration.target import advisory_lock_key

    first = created(project, "first")
    engine = create_engine(ini_url(project))
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": advisory_lock_key()})
        holder.commit()
        code, out, err = cli(project, "stamp", "app", first, "--lock-timeout", "1")
    engine.dispose()
    assert code == 1, (out, err)
    waiting, gave_up = err.splitlines()
    assert waiting.startswith("reynard-db: waiting for the migration lock of database 'app' (")
    assert re.fullmatch(
        r"reynard-migrate: error: gave up waiting for the migration lock of database 'app' "
        r"\(.*\) after 1 s \(--lock-timeout\); held by pid \d+ .*",
        gave_up,
    ), err
    assert version_table(ini_url(project)) == set()


def test_stamp_on_a_database_the_run_did_not_create_is_refused_by_the_guard(
    project: Path,
) -> None:
    """Where the guard is armed (the plugin, the checks), a stamp of a production-looking
    database is one refused line, and its version table is untouched; the CLI's stamp,
    like its upgrade, is a production verb: not guarded, it exists to reach production."""
    first = created(project, "first")
    db = load_registry(project).get("app")
    with EphemeralServer.start() as decoy:
        production = decoy.create_database("app").render_as_string(hide_password=False)
        GUARD.forget_server(decoy.url)  # not the harness's: production, as far as it knows
        with GUARD.armed_for(opt_in_hint="--allow URL"), pytest.raises(GuardRefused) as refusal:
            MigrationManager(db, production, quiet=True).stamp([first])
        message = str(refusal.value)
        assert message.startswith("refused a connection to postgresql://postgres@127.0.0.1:")
        assert "/app: not a database this run created" in message
        assert "; to allow it on purpose, pass --" in message  # the outer run's opt-in
        GUARD.allow_server(decoy.url)  # this test's own look at it
        assert version_table(production) == set()


# -- what the CLI prints -------------------------------------------------------------------------
def test_alembic_info_lines_only_with_verbose(project: Path) -> None:
    first = created(project, "first")
    url = ini_url(project)
    code, out, err = cli(project, "upgrade", "app")
    assert (code, out, err) == (0, f"app: at {first} ({_masked(url)})\n", "")
    code, out, err = cli(project, "downgrade", "app", "--to", "base", "-v")
    assert code == 0, err
    assert out == f"app: at base ({_masked(url)})\n"
    for line in ALEMBIC_INFO:
        assert f"INFO  [alembic.runtime.migration] {line}" in err
    assert f"Running downgrade {first} -> , first" in err
    code, out, err = cli(project, "-q", "upgrade", "app")
    assert (code, out, err) == (0, f"app: at {first} ({_masked(url)})\n", "")
    code, out, err = cli(project, "create", "app", "-m", "verbose", "--empty", "-v")
    assert code == 0, err
    assert re.fullmatch(
        r"Generating .*/migrations/versions/([0-9a-f]{12})_verbose\.py \.\.\.  done\n"
        + WROTE % ("verbose", "")
        + "\n",
        out,
    ), out


def test_autogenerate_is_quiet_by_default(project: Path) -> None:
    env_py = project / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            "target_metadata = None",
            "import sqlalchemy as sa\ntarget_metadata = sa.MetaData()\n"
            "sa.Table('pet', target_metadata, sa.Column('id', sa.Integer, primary_key=True))",
        )
    )
    code, out, err = cli(project, "create", "app", "-m", "pets")
    assert (code, err) == (0, ""), out
    assert re.fullmatch(WROTE % ("pets", "") + "\n", out), out
    assert "op.create_table('pet'" in next((project / VERSIONS).glob("*_pets.py")).read_text()

    code, out, err = cli(project, "create", "app", "-m", "nothing", "-v")
    assert code == 0, err
    assert "INFO  [alembic.runtime.plugins] setting up autogenerate plugin" in err
    assert "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl." in err


# -- interrupted -----------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_create_interrupted_while_writing_leaves_no_file(
    project: Path, signum: signal.Signals
) -> None:
    first = created(project, "first")
    rendering = project / "rendering"
    mako = project / "migrations" / "script.py.mako"
    mako.write_text(
        f"<% import pathlib, time; pathlib.Path({str(rendering)!r}).touch(); "
        "time.sleep(60) %>\n" + mako.read_text()
    )
    before = sorted(p.name for p in (project / VERSIONS).iterdir())
    with ctrl_c_as_in_a_terminal():  # whatever the suite was started from
        child = subprocess.Popen(
            [sys.executable, "-m", "pytest_reynard_db", "create", "app", "-m", "cut", "--empty"],
            cwd=project,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    wait_for(rendering, child, 60)
    child.send_signal(signum)
    out, err = child.communicate(timeout=60)
    name = signal.Signals(signum).name
    expected = "interrupted" if signum == signal.SIGINT else f"terminated by {name}"
    assert child.returncode == 128 + signum, (out, err)
    assert err.splitlines()[-1] == f"reynard-migrate: {expected}"
    assert sorted(p.name for p in (project / VERSIONS).iterdir()) == before
    assert heads(project) == [f"{first} (head)"]
