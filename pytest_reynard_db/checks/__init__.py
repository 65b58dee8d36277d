"""The migration checks (the README's "Migration checks"), as plain functions over a
``CheckRunner``.

Each check is a function ``(runner) -> CheckResult | list[CheckResult]`` in
its own module, declared in ``SPECS`` (in the order they run, cheap file checks
first) with what it needs, how it is turned on and what it applies to; every other
list here is drawn from that one table. The lint-enabled checks (``lint``, ``locks``)
run only when named in ``--only`` or in ``[tool.reynard-db.lint] enabled``, so a tree
that passed before does not turn red on upgrade; ``history`` only when named in
``--only`` or given a base (``check --base``, ``base`` in ``[tool.reynard-db]``).
``isolated_by_default`` decides, for the CLI and the plugin, when a database's checks
run in an interpreter of their own. ``run_checks`` is what
the CLI and the pytest plugin call: it never lets an exception out of a check, so one
broken database or revision becomes one failed result that names it, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError, MigrationFailed, ReynardDBError
from ..lint_settings import OPT_IN
from ..registry import Database, Registry
from ..text import one_line
from .bounded import CheckTimedOut, time_limit
from .downgrade_clean import downgrade_clean
from .files import history, mirror_sync, single_head
from .heads import upgrade
from .isolated import run_isolated
from .models_match import models_match
from .result import CheckResult
from .runner import CheckRunner, NotRun, Progress
from .safety import lint, locks
from .stairway import stairway

if TYPE_CHECKING:
    from ..postgres import Server

Check = Callable[[CheckRunner], "CheckResult | list[CheckResult]"]


@dataclass(frozen=True)
class CheckSpec:
    """What a check is, declared once, for the CLI and the plugin alike.

    ``needs``: ``files`` (the revision files alone, no ``env.py``), ``tool`` (``env.py``
    offline and a tool over its SQL, no server) or ``server`` (it migrates throw-away
    databases). ``turned_on``: ``default``; ``lint``, named in ``[tool.reynard-db.lint]
    enabled`` (``lint_settings.OPT_IN``); ``base``, given a git base. ``mirrors_only``:
    it applies to a database that mirrors another and has no result for the others.
    """

    function: Check
    needs: Literal["files", "tool", "server"]
    turned_on: Literal["default", "lint", "base"] = "default"
    mirrors_only: bool = False

    def applies_to(self, db: Database | None) -> bool:
        """Whether ``db`` (None: not known, a broken database) has a result of this check."""
        return not self.mirrors_only or db is None or db.mirror_of is not None


#: Every check, in the order they run: the file checks first.
SPECS: dict[str, CheckSpec] = {
    "single_head": CheckSpec(single_head, "files"),
    "mirror_sync": CheckSpec(mirror_sync, "files", mirrors_only=True),
    "history": CheckSpec(history, "files", turned_on="base"),
    "upgrade": CheckSpec(upgrade, "server"),
    "stairway": CheckSpec(stairway, "server"),
    "downgrade_clean": CheckSpec(downgrade_clean, "server"),
    "models_match": CheckSpec(models_match, "server"),
    "lint": CheckSpec(lint, "tool", turned_on="lint"),
    "locks": CheckSpec(locks, "server", turned_on="lint"),
}
ALL_CHECKS: dict[str, Check] = {name: spec.function for name, spec in SPECS.items()}
#: The checks that run by default.
CHECKS: dict[str, Check] = {n: s.function for n, s in SPECS.items() if s.turned_on == "default"}
#: Checks that run only when enabled in ``[tool.reynard-db.lint]`` or named in ``--only``.
OPT_IN_CHECKS: dict[str, Check] = {n: s.function for n, s in SPECS.items() if s.turned_on == "lint"}
#: Checks that read files only: they need no PostgreSQL server, and run no ``env.py``.
FILE_CHECKS = frozenset(name for name, spec in SPECS.items() if spec.needs == "files")
#: Checks that need no server (``lint`` runs Squawk over offline SQL).
OFFLINE_CHECKS = frozenset(name for name, spec in SPECS.items() if spec.needs != "server")
assert tuple(OPT_IN_CHECKS) == OPT_IN, "lint_settings.OPT_IN names the lint-enabled checks"

__all__ = [
    "ALL_CHECKS",
    "CHECKS",
    "FILE_CHECKS",
    "OFFLINE_CHECKS",
    "OPT_IN_CHECKS",
    "SPECS",
    "CheckResult",
    "CheckRunner",
    "CheckSpec",
    "enabled_checks",
    "isolated_by_default",
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
        isolate = isolated_by_default(names, len(databases))
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


def isolated_by_default(
    names: Iterable[str], databases: int, *, beside_tests: bool = False
) -> bool:
    """The one policy for where checks run: each database's in a clean interpreter when
    something else may have imported what its ``env.py`` imports: the tests of the same
    pytest run (``beside_tests``: the plugin's items, always), or another database's
    ``env.py`` (the CLI with several databases). Checks that run no ``env.py`` (the file
    checks) are left in the process: an interpreter would cost them a second each."""
    if beside_tests:
        return True
    return databases > 1 and any(SPECS[name].needs != "files" for name in names)


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
    if not SPECS[name].applies_to(runner.db):
        return []
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
