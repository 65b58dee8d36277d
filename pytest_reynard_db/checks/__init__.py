"""The migration checks (the README's "Migration checks"), as plain functions over a
``CheckRunner``.

Each check is a function ``(runner) -> CheckResult | list[CheckResult]`` in
its own module; ``CHECKS`` lists them in the order they run (cheap file
checks first). ``OPT_IN_CHECKS`` (``lint``, ``locks``) run only when named in
``--only`` or in ``[tool.reynard-db.lint] enabled``, so a tree that passed
before does not turn red on upgrade; ``history`` only when named in ``--only`` or
given a base (``check --base``, ``base`` in ``[tool.reynard-db]``). ``run_checks`` is what
the CLI and the pytest plugin call: it never lets an exception out of a check, so one
broken database or revision becomes one failed result that names it, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigError, MigrationFailed, ReynardDBError
from ..lint_settings import OPT_IN
from ..registry import Database, Registry
from ..text import one_line
from .bounded import CheckTimedOut, time_limit
from .downgrade_clean import downgrade_clean
from .history import history
from .isolated import run_isolated
from .mirror_sync import mirror_sync
from .models_match import models_match
from .result import CheckResult
from .runner import CheckRunner, NotRun, Progress
from .safety import lint, locks
from .single_head import single_head
from .stairway import stairway
from .upgrade import upgrade

if TYPE_CHECKING:
    from ..postgres import Server

Check = Callable[[CheckRunner], "CheckResult | list[CheckResult]"]

CHECKS: dict[str, Check] = {
    "single_head": single_head,
    "mirror_sync": mirror_sync,
    "upgrade": upgrade,
    "stairway": stairway,
    "downgrade_clean": downgrade_clean,
    "models_match": models_match,
}

#: Checks that run only when enabled in ``[tool.reynard-db.lint]`` or named in ``--only``.
_SAFETY_CHECKS: dict[str, Check] = {"lint": lint, "locks": locks}
OPT_IN_CHECKS: dict[str, Check] = {name: _SAFETY_CHECKS[name] for name in OPT_IN}

#: Every check, in the order they run: the file checks first.
ALL_CHECKS: dict[str, Check] = {
    "single_head": single_head,
    "mirror_sync": mirror_sync,
    "history": history,
    **CHECKS,
    **OPT_IN_CHECKS,
}

#: Checks that read files only: they need no PostgreSQL server.
FILE_CHECKS = frozenset({"single_head", "mirror_sync", "history"})

#: Checks that need no server but a tool (``lint`` runs Squawk over offline SQL).
OFFLINE_CHECKS = FILE_CHECKS | {"lint"}

__all__ = [
    "ALL_CHECKS",
    "CHECKS",
    "FILE_CHECKS",
    "OFFLINE_CHECKS",
    "OPT_IN_CHECKS",
    "CheckResult",
    "CheckRunner",
    "enabled_checks",
    "needs_server",
    "run_check",
    "run_checks",
    "select_checks",
]


def select_checks(only: Iterable[str] | None = None, enabled: Iterable[str] = ()) -> list[str]:
    """The check ids to run, in ``ALL_CHECKS`` order; an unknown id is a ``ConfigError``.

    Without ``only``: every default check, and the opt-in checks in ``enabled``.
    """
    if only is None:
        chosen = set(enabled)
        return [name for name in ALL_CHECKS if name in CHECKS or name in chosen]
    wanted = [name.strip() for name in only if name.strip()]
    unknown = [name for name in wanted if name not in ALL_CHECKS]
    if unknown:
        raise ConfigError(
            f"unknown check {', '.join(repr(n) for n in unknown)} (checks: {', '.join(ALL_CHECKS)})"
        )
    return [name for name in ALL_CHECKS if name in wanted]


def enabled_checks(registry: Registry) -> tuple[str, ...]:
    """The opt-in checks ``[tool.reynard-db.lint] enabled`` turns on (unknown ids: ConfigError),
    and ``history`` when the registry has a base."""
    return (*registry.lint.enabled, *(("history",) if registry.base else ()))


def needs_server(only: Iterable[str] | None = None, enabled: Iterable[str] = ()) -> bool:
    """Whether any of the selected checks migrates a database."""
    return any(name not in OFFLINE_CHECKS for name in select_checks(only, enabled))


def run_checks(
    registry: Registry,
    databases: Sequence[Database],
    server: Server | None,
    only: Iterable[str] | None = None,
    progress: Progress | None = None,
    timeout: float | None = None,
    *,
    isolate: bool | None = None,
    allow: Sequence[str] = (),
) -> list[CheckResult]:
    """Run the selected checks on each database; one result per database and check that applies.

    ``server`` hosts the throw-away databases (None is fine when only file
    checks run). ``progress(database, check)`` is called before each check, and
    ``progress(database, check, done, total)`` as a long check advances (the stairway).
    ``timeout``: seconds a check may run before it fails (``--timeout``).
    ``isolate``: each database's checks in a clean interpreter (``isolated``), so that
    what one database's ``env.py`` imports cannot change another's results; by
    default when there are several databases and a selected check runs ``env.py``
    (the file checks read revision files only: a child interpreter would cost them a
    second of start-up each, before a commit). ``allow``: the ``--allow`` URLs, for
    the guard of those interpreters.
    """
    names = select_checks(only, enabled_checks(registry))
    if isolate is None:
        isolate = len(databases) > 1 and not FILE_CHECKS.issuperset(names)
    results: list[CheckResult] = []
    for db in databases:
        if isolate:
            results.extend(
                run_isolated(
                    registry, db, server, names, timeout=timeout, allow=allow, progress=progress
                )
            )
            continue
        runner = CheckRunner(db, registry, server, progress=progress)
        for name in names:
            if progress is not None:
                progress(db.name, name)
            results.extend(run_check(runner, name, timeout=timeout))
    return results


def run_check(runner: CheckRunner, name: str, *, timeout: float | None = None) -> list[CheckResult]:
    """Run one check; any exception becomes a failed result naming database, revision and file.

    A check still running after ``timeout`` seconds fails with that reason; one that ran
    env.py after an env.py run of its database reached beyond its throw-away database
    fails with that (``CheckRunner.same_env_verdict``).
    """
    runner.check = name
    mark = runner.env_mark()
    return runner.same_env_verdict(name, _run_check(runner, name, timeout), mark)


def _run_check(runner: CheckRunner, name: str, timeout: float | None) -> list[CheckResult]:
    try:
        with time_limit(timeout):
            outcome = ALL_CHECKS[name](runner)
    except NotRun as exc:
        return [runner.not_run(name, exc)]
    except CheckTimedOut as exc:
        message = f"check {name} {exc}"
    except MigrationFailed as exc:
        return [
            runner.result(
                name, False, str(exc), revision=exc.revision, file=exc.path, function=exc.function
            )
        ]
    except ReynardDBError as exc:
        message = str(exc)
    except Exception as exc:  # a bug in a tree or here: still one result, not a traceback
        message = f"{type(exc).__name__}: {one_line(exc)}"
    else:
        return outcome if isinstance(outcome, list) else [outcome]
    if runner.db.name not in message:
        message = f"database {runner.db.name!r}: {message}"
    return [runner.result(name, False, message)]
