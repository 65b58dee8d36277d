"""The real projects whose shipped Alembic trees ``bench/real_trees.py`` runs: where each
tree sits in its installed wheel, and what its ``env.py`` needs to run (the variable it
reads its URL from, the application settings its import reads).

Nothing here is the project's own file changed: the trees run as installed. ``{scratch}``
in a setting is the project's scratch folder (outside the repository).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Project:
    """One project's tree.

    ``name``: its row (and virtualenv, and registry name); ``requirements``: what ``pip
    install`` gets; ``distribution``: whose version is shown; ``ini``: the shipped ini,
    relative to site-packages; ``cwd``: where ``alembic`` runs, ``"ini"`` (the ini's
    folder, where a relative ``script_location`` is found) or ``"site"`` (site-packages:
    an ini whose ``script_location`` is a path from there, as its application sets it);
    ``url_env``: variables env.py reads its URL from (the first is registered as
    ``url_env``); ``env``: application settings its import needs, as its docs give them;
    ``version_table``: where env.py keeps the versions; ``note``: why it is run as it is;
    ``venv``: its virtualenv, when another project's serves it; ``driver``: the
    SQLAlchemy driver plain Alembic and pytest-alembic are given, where the project's docs
    name one (ours always hands env.py ``postgresql+psycopg``).
    """

    name: str
    requirements: tuple[str, ...]
    distribution: str
    ini: str
    cwd: str = "ini"
    url_env: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    version_table: str = "alembic_version"
    note: str = ""
    venv: str = ""
    driver: str = "postgresql+psycopg"

    @property
    def venv_name(self) -> str:
        """Its virtualenv's folder: ``venv``, else its name (mlflow's two trees share one)."""
        return self.venv or self.name


PROJECTS: tuple[Project, ...] = (
    Project(
        name="mlflow",
        requirements=("mlflow[auth]",),
        distribution="mlflow",
        ini="mlflow/store/db_migrations/alembic.ini",
        cwd="site",
        note=(
            "script_location = mlflow/store/db_migrations, a path from site-packages (mlflow "
            "sets it in code); the URL is the ini's sqlalchemy.url, set per database"
        ),
    ),
    Project(
        name="mlflow-auth",
        requirements=("mlflow[auth]",),
        distribution="mlflow",
        ini="mlflow/server/auth/db/migrations/alembic.ini",
        version_table="alembic_version_auth",
        venv="mlflow",
        note="mlflow's basic-auth store (the [auth] extra): its own tree, its own version table",
    ),
    Project(
        name="open-webui",
        requirements=("open-webui",),
        distribution="open-webui",
        ini="open_webui/alembic.ini",
        url_env=("DATABASE_URL",),
        env={"DATA_DIR": "{scratch}/data", "WEBUI_SECRET_KEY": "real-trees-bench"},
        note="env.py reads DATABASE_URL (falling back to a SQLite file under DATA_DIR)",
    ),
    Project(
        name="optuna",
        requirements=("optuna",),
        distribution="optuna",
        ini="optuna/storages/_rdb/alembic.ini",
        note="the stock env.py: its own engine from sqlalchemy.url",
    ),
    Project(
        name="airflow",
        requirements=("apache-airflow-core", "psycopg2-binary", "asyncpg"),
        driver="postgresql+psycopg2",
        distribution="apache-airflow-core",
        ini="airflow/alembic.ini",
        cwd="site",
        url_env=("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",),
        env={"AIRFLOW_HOME": "{scratch}/airflow_home"},
        note=(
            "env.py connects through airflow.settings, configured by AIRFLOW__DATABASE__*; "
            "run from site-packages (in airflow/, its airflow/logging shadows the stdlib's)"
        ),
    ),
)


def by_name(names: list[str] | None) -> list[Project]:
    """The projects named (all when none are); an unknown name is a ``KeyError`` naming it."""
    known = {p.name: p for p in PROJECTS}
    if not names:
        return list(PROJECTS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown project(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names]
