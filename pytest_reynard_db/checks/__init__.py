"""The migration checks (the README's "Migration checks"), as plain functions over a
``CheckRunner``.

Each check is declared once, in ``SPECS`` (in the order they run, cheap file checks
first), with what it needs, how it is turned on and what it applies to; every list of
names here is drawn from that one table. The functions themselves (``ALL_CHECKS``) and
how they run (``run_checks``, ``run_check``) are in ``suite`` and load on first use
(PEP 562): a process that only names the checks (the pytest plugin's parent, which
runs them in a child interpreter) imports none of them.

The lint-enabled checks (``lint``, ``locks``) run only when named in ``--only`` or in
``[tool.reynard-db.lint] enabled``, so a tree that passed before does not turn red on
upgrade; ``history`` only when named in ``--only`` or given a base (``check --base``,
``base`` in ``[tool.reynard-db]``). ``isolated_by_default`` decides, for the CLI and the
plugin, when a database's checks run in an interpreter of their own. ``run_checks`` is
what the CLI and the pytest plugin call: it never lets an exception out of a check, so
one broken database or revision becomes one failed result that names it, never a
traceback.

A check's outcome is data (``CheckResult``: its status, why, and its ``Place``s): every
output format (the table, the JSON, GitHub annotations, JUnit, the pytest items) renders
from these fields; none parses a message back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..foundation import lazy_name
from ..foundation.errors import ConfigError
from ..foundation.registry import OPT_IN, Database, Registry

if TYPE_CHECKING:
    from .runner import CheckRunner
    from .suite import ALL_CHECKS, CHECKS, OPT_IN_CHECKS, run_check, run_checks


@dataclass(frozen=True)
class CheckSpec:
    """What a check is, declared once, for the CLI and the plugin alike.

    ``needs``: ``files`` (the revision files alone, no ``env.py``), ``tool`` (``env.py``
    offline and a tool over its SQL, no server) or ``server`` (it migrates throw-away
    databases). ``turned_on``: ``default``; ``lint``, named in ``[tool.reynard-db.lint]
    enabled`` (``registry.OPT_IN``); ``base``, given a git base. ``mirrors_only``:
    it applies to a database that mirrors another and has no result for the others.
    """

    needs: Literal["files", "tool", "server"]
    turned_on: Literal["default", "lint", "base"] = "default"
    mirrors_only: bool = False

    def applies_to(self, db: Database | None) -> bool:
        """Whether ``db`` (None: not known, a broken database) has a result of this check."""
        return not self.mirrors_only or db is None or db.mirror_of is not None


#: Every check, in the order they run: the file checks first. Its function is
#: ``suite.ALL_CHECKS[name]``.
SPECS: dict[str, CheckSpec] = {
    "single_head": CheckSpec("files"),
    "mirror_sync": CheckSpec("files", mirrors_only=True),
    "history": CheckSpec("files", turned_on="base"),
    "upgrade": CheckSpec("server"),
    "stairway": CheckSpec("server"),
    "downgrade_clean": CheckSpec("server"),
    "models_match": CheckSpec("server"),
    "lint": CheckSpec("tool", turned_on="lint"),
    "locks": CheckSpec("server", turned_on="lint"),
}
#: Every check's name, in the order they run.
CHECK_ORDER = tuple(SPECS)
#: The default checks, in the order they run.
CHECKS_DEFAULT = tuple(name for name, spec in SPECS.items() if spec.turned_on == "default")
#: Checks that read files only: they need no PostgreSQL server, and run no ``env.py``.
FILE_CHECKS = frozenset(name for name, spec in SPECS.items() if spec.needs == "files")
#: Checks that need no server (``lint`` runs Squawk over offline SQL).
OFFLINE_CHECKS = frozenset(name for name, spec in SPECS.items() if spec.needs != "server")
assert tuple(n for n, s in SPECS.items() if s.turned_on == "lint") == OPT_IN, "registry.OPT_IN"

# The checks themselves load on first use (PEP 562): naming them imports none.
_WHERE = {
    "ALL_CHECKS": "suite",
    "CHECKS": "suite",
    "OPT_IN_CHECKS": "suite",
    "run_check": "suite",
    "run_checks": "suite",
    "CheckRunner": "runner",
}

__all__ = [
    "ALL_CHECKS",
    "CHECKS",
    "CHECKS_DEFAULT",
    "CHECK_ORDER",
    "FILE_CHECKS",
    "OFFLINE_CHECKS",
    "OPT_IN_CHECKS",
    "SPECS",
    "CheckResult",
    "CheckRunner",
    "CheckSpec",
    "Place",
    "enabled_checks",
    "isolated_by_default",
    "needs_server",
    "run_check",
    "run_checks",
    "select_checks",
]


def __getattr__(name: str) -> Any:
    return lazy_name(__name__, _WHERE, name, globals())


def select_checks(only: Iterable[str] | None = None, enabled: Iterable[str] = ()) -> list[str]:
    """The check ids to run, in ``CHECK_ORDER``; an unknown id is a ``ConfigError``.

    Without ``only``: every default check, and the opt-in checks in ``enabled``.
    """
    if only is None:
        chosen = set(enabled)
        return [name for name in CHECK_ORDER if name in CHECKS_DEFAULT or name in chosen]
    wanted = [name.strip() for name in only if name.strip()]
    unknown = [name for name in wanted if name not in CHECK_ORDER]
    if unknown:
        named = ", ".join(repr(n) for n in unknown)
        raise ConfigError(f"unknown check {named} (checks: {', '.join(CHECK_ORDER)})")
    return [name for name in CHECK_ORDER if name in wanted]


def enabled_checks(registry: Registry) -> tuple[str, ...]:
    """The opt-in checks ``[tool.reynard-db.lint] enabled`` turns on (unknown ids: ConfigError),
    and ``history`` when the registry has a base."""
    return (*registry.lint.enabled, *(("history",) if registry.base else ()))


def needs_server(only: Iterable[str] | None = None, enabled: Iterable[str] = ()) -> bool:
    """Whether any of the selected checks migrates a database."""
    return any(name not in OFFLINE_CHECKS for name in select_checks(only, enabled))


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


# -- results ---------------------------------------------------------------------------

#: ``ok`` passed; ``failed``; ``skipped``: does not apply (the message says why);
#: ``not_run``: a step it needs first failed (the message names it).
Status = Literal["ok", "failed", "skipped", "not_run"]
STATUSES: tuple[Status, ...] = ("ok", "failed", "skipped", "not_run")


@dataclass(frozen=True)
class Place:
    """Where in the code a result points: a file (relative to the project root), the line
    of the function or statement at fault, the function's name (``upgrade``,
    ``downgrade``); ``message``: what to say there, when it is part of the result's
    message only (one revision of a ``lint`` failure), None for the whole message."""

    file: str
    line: int | None = None
    function: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class CheckResult:
    """One database, one check: its status, why, and where in the code.

    ``revision``, ``file``, ``line`` and ``function`` name the one revision (and its
    function) a result is about; None where no single one is. ``places``: every place
    a result points at (each revision of a ``lint`` failure, each differing file of a
    mirror, each revision that created an object ``downgrade_clean`` found left); the
    one place ``file`` names when it is the only one.

    ``status`` is given, or follows from ``ok`` and ``skipped``. ``ok`` is false for a
    failure only: a skipped or not-run check fails no run. ``skipped`` is true for both
    kinds that did not run (kept for the ``--json`` readers that know only it).
    """

    database: str
    check: str
    ok: bool
    message: str
    revision: str | None = None
    file: str | None = None
    line: int | None = None
    function: str | None = None
    status: Status | None = None
    places: tuple[Place, ...] = ()
    skipped: bool = False

    def __post_init__(self) -> None:
        status = self.status or ("skipped" if self.skipped else "ok" if self.ok else "failed")
        if status not in STATUSES:
            raise ValueError(f"unknown check status {status!r}")
        fixed: dict[str, object] = {
            "status": status,
            "ok": status != "failed",
            "skipped": status in ("skipped", "not_run"),
        }
        if not self.places and self.file:
            fixed["places"] = (Place(self.file, self.line, self.function),)
        for name, value in fixed.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` entry (the README's "Migration checks"): every field, None where it
        does not apply; ``"skipped": true`` added to a skipped or not-run check's entry
        only, so the documented shape is kept."""
        entry = asdict(self)
        entry["places"] = [asdict(place) for place in self.places]
        if not self.skipped:
            del entry["skipped"]
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> CheckResult:
        """The result an ``as_json`` entry describes (the child interpreter's answer)."""
        places = tuple(Place(**place) for place in entry.get("places", ()))
        return cls(**{**entry, "places": places})

    @property
    def summary(self) -> str:
        """The first line of the message (the rest are details)."""
        lines = self.message.strip().splitlines()
        return lines[0] if lines else ""
