"""An env.py whose session has a ``search_path`` of its own (hostile verdict round 20, F6).

Applications that own one schema set it on their engine (``connect_args={"options": "-c
search_path=app,public"}``); Alembic then keeps ``alembic_version`` in ``app``, and plain
``upgrade``, ``current``, ``downgrade`` and ``check`` all work. The checks read the version
table back on a connection of their own, unqualified, did not find it, and failed a sound
tree with "env.py connected to another database".
"""

from __future__ import annotations

import json
from pathlib import Path

from cli_fork import cli_of
from reynard_trees import alembic_init_project

OWN_SCHEMA = 'connect_args={"options": "-c search_path=app,public"},\n    )'
MAKES_IT = (
    "    with connectable.connect() as connection:\n"
    "        from sqlalchemy import text\n"
    '        connection.execute(text("CREATE SCHEMA IF NOT EXISTS app"))\n'
    "        connection.commit()\n"
)


def test_a_tree_whose_session_keeps_its_own_schema_passes(tmp_path: Path) -> None:
    project = alembic_init_project(tmp_path / "app", "postgresql://nobody@127.0.0.1:1/x")
    env_py = project / "migrations" / "env.py"
    source = env_py.read_text()
    pooled = "poolclass=pool.NullPool,\n    )"
    opened = "    with connectable.connect() as connection:\n"
    assert pooled in source and opened in source
    env_py.write_text(
        source.replace(pooled, f"poolclass=pool.NullPool,\n        {OWN_SCHEMA}").replace(
            opened, MAKES_IT
        )
    )
    code, out, err = cli_of(project)("check", "app", "--json")
    results = {r["check"]: r for r in json.loads(out)["results"]}
    assert code == 0, out + err
    assert err == "", err  # no redirect note, no error line
    assert all(r["ok"] for r in results.values()), results
    assert results["upgrade"]["message"] == "base -> 0a0000000001"
