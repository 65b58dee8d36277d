"""The registry: reading, discovery, validation and URL resolution."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from pytest_reynard_db.foundation.errors import ConfigError, UnknownDatabaseError
from pytest_reynard_db.foundation.registry import find_project_root, load_registry
from pytest_reynard_db.foundation.urls import mask_url

INI = """\
[alembic]
script_location = %(here)s/alembic/{name}
path_separator = os
sqlalchemy.url = postgresql://app:pw@db.example/{database}
"""


def make_tree(root: Path, name: str, database: str | None = None) -> Path:
    (root / "alembic" / name / "versions").mkdir(parents=True, exist_ok=True)
    ini = root / f"alembic_{name}.ini"
    ini.write_text(INI.format(name=name, database=database or f"reynard_{name}"))
    return ini


def write_pyproject(root: Path, body: str) -> Path:
    path = root / "pyproject.toml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_tree(tmp_path, "ecs")
    make_tree(tmp_path, "ecs_e2e")
    write_pyproject(
        tmp_path,
        """
        [tool.reynard-db.databases.ecs]
        ini = "alembic_ecs.ini"
        database = "reynard_ecs"
        url_env = "ECS_DATABASE_URL"
        description = "ECS world simulation"

        [tool.reynard-db.databases.ecs_e2e]
        ini = "alembic_ecs_e2e.ini"
        database = "reynard_ecs_e2e"
        url_env = "ECS_E2E_DATABASE_URL"
        mirror_of = "ecs"
        """,
    )
    return tmp_path


def test_reads_the_table(project: Path) -> None:
    registry = load_registry(project)
    assert list(registry.databases) == ["ecs", "ecs_e2e"]
    ecs = registry.get("ecs")
    assert ecs.database == "reynard_ecs"
    assert ecs.script_location == project / "alembic" / "ecs"
    assert ecs.version_locations == (project / "alembic" / "ecs" / "versions",)
    assert registry.get("ecs_e2e").mirror_of == "ecs"
    assert [db.name for db in registry.mirrors_of("ecs")] == ["ecs_e2e"]
    assert registry.production_names() == {"reynard_ecs", "reynard_ecs_e2e"}


def test_alembic_config_has_absolute_locations(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    config = load_registry(project).get("ecs").alembic_config(url="postgresql://u:p%w@h/test_x")
    assert config.get_main_option("script_location") == str(project / "alembic" / "ecs")
    assert config.get_version_locations_list() == [str(project / "alembic" / "ecs" / "versions")]
    url = make_url(config.get_main_option("sqlalchemy.url") or "")
    assert (url.drivername, url.password, url.database) == ("postgresql+psycopg", "p%w", "test_x")
    assert config.get_main_option("reynard_url_env") == "ECS_DATABASE_URL"


def test_project_root_is_found_upward(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "alembic" / "ecs")
    assert find_project_root() == project
    assert load_registry().root == project


def test_discovery_without_a_table(tmp_path: Path) -> None:
    make_tree(tmp_path, "main", database="reynard")
    make_tree(tmp_path, "e2e")
    make_tree(tmp_path, "main_e2e")
    write_pyproject(tmp_path, "[project]\nname = 'x'\n")
    registry = load_registry(tmp_path)
    assert sorted(registry.databases) == ["e2e", "main", "main_e2e"]
    assert registry.get("main_e2e").mirror_of == "main"
    assert registry.get("e2e").mirror_of is None
    assert registry.get("main").database == "reynard"
    assert registry.get("main").url_env == "MAIN_DATABASE_URL"


def test_url_precedence(project: Path) -> None:
    ecs = load_registry(project).get("ecs")
    env = {"ECS_DATABASE_URL": "postgresql://env@h/from_env"}
    assert ecs.production_url("postgresql://cli@h/from_cli", environ=env).database == "from_cli"
    assert ecs.production_url(environ=env).database == "from_env"
    assert ecs.production_url(environ={}).database == "reynard_ecs"
    # libpq's other scheme (Heroku's DATABASE_URL), which SQLAlchemy no longer reads
    heroku = ecs.production_url(environ={"ECS_DATABASE_URL": "postgres://u:pw@h:5433/from_env"})
    assert (heroku.drivername, heroku.host, heroku.port) == ("postgresql+psycopg", "h", 5433)


def test_passwords_are_masked() -> None:
    assert "s3cret" not in mask_url("postgresql://user:s3cret@host/db")
    assert "s3cret" not in mask_url("postgresql://user:s3cret@host:notaport/db")


def test_unknown_database_lists_the_known(project: Path) -> None:
    with pytest.raises(UnknownDatabaseError, match=r"unknown database 'nope'.*ecs, ecs_e2e"):
        load_registry(project).get("nope")


BAD_CONFIGS = [
    pytest.param(
        '[tool.reynard-db.databases.ecs]\nini = "alembic_ecs.ini"\ncolour = "red"\n',
        r"pyproject.toml: \[tool.reynard-db.databases.ecs\]: unknown key 'colour'",
        id="unknown-key",
    ),
    pytest.param(
        '[tool.reynard-db]\nextra = 1\n[tool.reynard-db.databases.ecs]\nini = "alembic_ecs.ini"\n',
        r"\[tool.reynard-db\]: unknown key 'extra'",
        id="unknown-top-level-key",
    ),
    pytest.param(
        '[tool.reynard-db.databases.ecs]\nini = "alembic_ecs.ini"\nmirror_of = "ghost"\n',
        r"\[tool.reynard-db.databases.ecs\]: mirror_of: unknown database 'ghost'",
        id="unknown-mirror-of",
    ),
    pytest.param(
        '[tool.reynard-db.databases.ecs]\nini = "alembic_missing.ini"\n',
        r"\[tool.reynard-db.databases.ecs\]: ini: no such file: .*alembic_missing.ini",
        id="missing-ini",
    ),
    pytest.param(
        '[tool.reynard-db.databases.ecs]\nini = "alembic_ecs.ini"\nmirror_of = "ecs_e2e"\n'
        '[tool.reynard-db.databases.ecs_e2e]\nini = "alembic_ecs.ini"\nmirror_of = "ecs"\n',
        r"mirror_of: cycle ecs -> ecs_e2e -> ecs",
        id="mirror-cycle",
    ),
    pytest.param(
        '[tool.reynard-db.databases.ecs]\nini = "alembic_noscript.ini"\n',
        r"alembic_noscript.ini: \[alembic\] script_location is missing",
        id="missing-script-location",
    ),
    pytest.param(
        '[tool.reynard-db.databases.ecs]\nini = "alembic_broken.ini"\n',
        r"alembic_broken.ini: unreadable ini",
        id="broken-ini",
    ),
    pytest.param(
        "[tool.reynard-db.databases.ecs\n",
        r"pyproject.toml: invalid TOML",
        id="invalid-toml",
    ),
    pytest.param(
        "[tool.reynard-db.databases.ecs]\nini = 3\n",
        r"\[tool.reynard-db.databases.ecs\]: ini must be a string",
        id="wrong-type",
    ),
]


@pytest.mark.parametrize(("pyproject", "message"), BAD_CONFIGS)
def test_bad_config_is_one_clear_line(tmp_path: Path, pyproject: str, message: str) -> None:
    make_tree(tmp_path, "ecs")
    (tmp_path / "alembic_noscript.ini").write_text("[alembic]\nsqlalchemy.url = x\n")
    (tmp_path / "alembic_broken.ini").write_text("[alembic\nscript_location = x\n")
    (tmp_path / "alembic_noversions.ini").write_text(
        "[alembic]\nscript_location = %(here)s/alembic/ecs\npath_separator = os\n"
        "version_locations = %(here)s/alembic/ecs/missing\n"
    )
    (tmp_path / "pyproject.toml").write_text(pyproject)
    with pytest.raises(ConfigError, match=message) as info:
        load_registry(tmp_path).get("ecs")  # a broken entry fails when it is used
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_a_broken_entry_does_not_stop_the_others(tmp_path: Path) -> None:
    make_tree(tmp_path, "ecs")
    (tmp_path / "alembic_broken.ini").write_text("[alembic\nscript_location = x\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.reynard-db.databases.ecs]\nini = "alembic_ecs.ini"\n'
        '[tool.reynard-db.databases.ecs_e2e]\nini = "alembic_broken.ini"\nmirror_of = "ecs"\n'
        'url_env = "E2E_URL"\ndatabase = "reynard_e2e"\n'
    )
    registry = load_registry(tmp_path)
    assert [db.name for db in registry.select()] == ["ecs"]
    assert set(registry.broken) == {"ecs_e2e"}
    with pytest.raises(ConfigError, match=r"alembic_broken\.ini: unreadable ini"):
        registry.get("ecs_e2e")
    # still known for what must never be reached, and for the guard
    assert "E2E_URL" in registry.production_variables()
    assert "reynard_e2e" in registry.production_names()
    assert registry.url_envs("ecs") == ["ECS_DATABASE_URL"]


def test_a_missing_versions_folder_is_a_warning(tmp_path: Path) -> None:
    """git keeps no empty folder; Alembic accepts a version location that does not exist."""
    make_tree(tmp_path, "ecs")
    (tmp_path / "alembic_noversions.ini").write_text(
        "[alembic]\nscript_location = %(here)s/alembic/ecs\npath_separator = os\n"
        "version_locations = %(here)s/alembic/ecs/versions:%(here)s/alembic/ecs/missing\n"
    )
    (tmp_path / "pyproject.toml").write_text(
        '[tool.reynard-db.databases.ecs]\nini = "alembic_noversions.ini"\n'
    )
    registry = load_registry(tmp_path)
    assert registry.get("ecs").version_locations[-1].name == "missing"
    assert any("version_locations: no such directory (yet)" in w for w in registry.warnings)


def test_script_location_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Alembic resolves it when the ini-relative path does not exist (mlflow's ini)."""
    make_tree(tmp_path, "ecs")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "alembic.ini").write_text("[alembic]\nscript_location = alembic/ecs\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.reynard-db.databases.ecs]\nini = "conf/alembic.ini"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert load_registry(tmp_path).get("ecs").script_location == tmp_path / "alembic" / "ecs"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=r"script_location: no such directory: .* nor .*"):
        load_registry(tmp_path).get("ecs")
