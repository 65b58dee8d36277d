"""The checks as functions (``ALL_CHECKS``) and how they are run (``run_checks``,
``run_check``): imported on use through ``checks`` (PEP 562), so a process that only
names the checks (the pytest plugin's parent, which runs them in a child interpreter)
does not import them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ..foundation.errors import CheckTimedOut, MigrationFailed, ReynardDBError, time_limit
from ..foundation.registry import OPT_IN, Database, Registry
from ..foundation.urls import one_line, raised_warning
from . import (
    CHECK_ORDER,
    CHECKS_DEFAULT,
    SPECS,
    CheckResult,
    enabled_checks,
    isolated_by_default,
    select_checks,
)
from .downgrade_clean import downgrade_clean
from .files import history, mirror_sync, single_head
from .heads import upgrade
from .isolated import run_isolated
from .models_match import models_match
from .runner import CheckRunner, NotRun, Progress
from .safety.lint import lint
from .safety.locks import locks
from .stairway import stairway

if TYPE_CHECKING:
    from ..postgres import Server
    from .spares import Spares

Check = Callable[[CheckRunner], "CheckResult | list[CheckResult]"]

_FUNCTIONS: dict[str, Check] = {
    "single_head": single_head,
    "mirror_sync": mirror_sync,
    "history": history,
    "upgrade": upgrade,
    "stairway": stairway,
    "downgrade_clean": downgrade_clean,
    "models_match": models_match,
    "lint": lint,
    "locks": locks,
}

CHECKS: dict[str, Check] = {name: _FUNCTIONS[name] for name in CHECKS_DEFAULT}

#: Checks that run only when enabled in ``[tool.reynard-db.lint]`` or named in ``--only``.
OPT_IN_CHECKS: dict[str, Check] = {name: _FUNCTIONS[name] for name in OPT_IN}

#: Every check, in the order they run: the file checks first.
ALL_CHECKS: dict[str, Check] = {name: _FUNCTIONS[name] for name in CHECK_ORDER}
assert set(_FUNCTIONS) == set(SPECS), "each check declared in checks.SPECS has its function"


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
    spares: Spares | None = None,
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
    the guard of those interpreters. ``spares``: children forked ahead for them
    (``spares.fork_spares``), taken one per database while any is left.
    """
    names = select_checks(only, enabled_checks(registry))
    if isolate is None:
        isolate = isolated_by_default(names, len(databases))
    # Named in the children's throw-away databases: one a child killed with -9 (the OOM
    # killer) could not drop is dropped here, after them, not left on a --url server.
    run_id = uuid.uuid4().hex[:8] if isolate else None
    results: list[CheckResult] = []
    for db in databases:
        if isolate:
            results.extend(
                run_isolated(
                    registry,
                    db,
                    server,
                    names,
                    timeout=timeout,
                    allow=allow,
                    progress=progress,
                    spare=spares.take() if spares is not None else None,
                    run_id=run_id,
                )
            )
            continue
        runner = CheckRunner(db, registry, server, progress=progress)
        for name in names:
            if progress is not None:
                progress(db.name, name)
            results.extend(run_check(runner, name, timeout=timeout))
    if run_id is not None and server is not None:
        server.drop_run(run_id)
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
        message = f"{type(exc).__name__}: {one_line(exc)}{raised_warning(exc)}"
    else:
        return outcome if isinstance(outcome, list) else [outcome]
    if runner.db.name not in message:
        message = f"database {runner.db.name!r}: {message}"
    return [runner.result(name, False, message)]
