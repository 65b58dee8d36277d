"""This process's view of a test run: settings, registry, server and provisioner.

Kept apart from the hooks and fixtures, and imported once a run selects a database:
a pytest session that does not use the plugin never imports SQLAlchemy, psycopg or
the servers through it. A run that selects one imports the servers (psycopg, file
locks, the provisioner) when a test or check first asks for a server: a run whose
tests take no database (``pytest --reynard-db=ecs tests/test_graph.py``) never does.
"""

from __future__ import annotations

from concurrent.futures import wait
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

import pytest

from ..foundation.errors import ReynardDBError
from ..foundation.registry import Registry, find_project_root, load_registry
from ..foundation.urls import admin_url, remember_secrets
from ..guard import COMMON_URL_VARIABLES, GUARD, hidden_variables
from .options import Settings
from .stash import AGENT, EARLY_START, new_run_id

if TYPE_CHECKING:
    from ..postgres import EphemeralServer, ExistingServer, Server
    from ..postgres.agent import Agent
    from ..postgres.binaries import Binaries, CloneMethod
    from ..provisioning.provision import Presence, Provisioner

WORKER_KEY = "reynard_db"


def guard_the_run(registry: Registry, settings: Settings) -> ExitStack:
    """Arm the guard and hide the production URL variables; closing the stack undoes both."""
    remember_secrets(settings.url, *settings.allow)
    stack = ExitStack()
    stack.enter_context(GUARD.armed_for(opt_in_hint="--reynard-db-allow=URL", allow=settings.allow))
    variables = registry.production_variables() | set(COMMON_URL_VARIABLES)
    stack.enter_context(hidden_variables(tuple(sorted(variables))))
    return stack


#: What a pytest user can do when no pyproject.toml is found (``--project`` is the CLI's).
NO_PROJECT_HINT = "run pytest inside the project, or pass --rootdir DIR"


def project_registry(rootpath: Path) -> Registry:
    """The registry of the project at or above pytest's rootdir."""
    return load_registry(find_project_root(rootpath, hint=NO_PROJECT_HINT))


class RunState:
    """This process's view of the run: settings, registry, server and provisioner."""

    def __init__(
        self, config: pytest.Config, settings: Settings, registry: Registry | None = None
    ) -> None:
        """``registry``: already read (to arm the guard early); by default read on use."""
        self.config = config
        self.settings = settings
        workerinput = getattr(config, "workerinput", None)
        inherited = workerinput.get(WORKER_KEY) if workerinput else None
        self.worker = str(workerinput["workerid"]) if workerinput else "main"
        self.run_id: str = inherited["run_id"] if inherited else new_run_id()
        self.inherited_url: str | None = inherited["url"] if inherited else None
        self.inherited_ephemeral = bool(inherited and inherited.get("ephemeral"))
        self.is_worker = workerinput is not None
        self.is_controller = not self.is_worker and getattr(config.option, "dist", "no") != "no"
        #: The child doing a warm run's admin work (``postgres.agent``), forked as the
        #: plugin registered: the run is its run.
        self.agent: Agent | None = None if self.is_worker else config.stash.get(AGENT, None)
        if self.agent is not None and (self.agent.reuse != settings.reuse or settings.url):
            self.agent.end()  # forked on a reading of the arguments the run's settings undo
            self.agent = None
        if self.agent is not None:
            self.run_id = self.agent.run_id
        self.own_server: EphemeralServer | None = None
        self._server: Server | None = None
        self._registry = registry
        self._provisioner: Provisioner | None = None
        self._binaries: Binaries | None = None
        self._run_record: Path | None = None
        self._presence: Presence | None = None
        self._armed = ExitStack()
        #: xdist controller: what the workers' guards redirected (reported at the end).
        self.worker_redirects: list[str] = []

    def arm(self, early: ExitStack | None = None) -> None:
        """From now until ``close``: only the run's own databases (and the opt-in ones)
        can be connected to, and the production URL variables are hidden. ``early``:
        the guard armed before the conftests were imported (``guard_the_run``)."""
        self._armed = early if early is not None else guard_the_run(self.registry, self.settings)

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = project_registry(self.config.rootpath)
        return self._registry

    @property
    def server(self) -> Server:
        if self._server is None:
            from ..postgres import EphemeralServer, ExistingServer, Server

            if self.settings.url:
                url = admin_url(self.settings.url, origin="--reynard-db-url")
                self.registry.refuse_as_admin_url(
                    url,
                    option="--reynard-db-url",
                    allow=self.settings.allow,
                    allow_option="--reynard-db-allow",
                )
                self._server = ExistingServer(url)
            elif self.inherited_url:
                self._server = Server(self.inherited_url)
                if self.inherited_ephemeral:  # the controller's own server: all of it is ours
                    GUARD.allow_server(self._server.url)
                else:  # the run's existing server: its maintenance database, for admin work
                    GUARD.allow_database(self._server.url)
            elif self.agent is not None:  # the run's own server, or the kept one
                from ..postgres.agent_server import AgentServer

                self._server = AgentServer(self.agent)
            elif self.settings.reuse:
                binaries = self.binaries
                self._initdb_ready()
                self.own_server = EphemeralServer.reusable(binaries=binaries, run_id=self.run_id)
                self._server = self.own_server
                self._enrol_in_reused_server()
            else:
                self.own_server = self._started_ahead() or self._start()
                self._server = self.own_server
        return self._server

    def _started_ahead(self) -> EphemeralServer | None:
        """The server the run's first hook began to start (``initdb_cache.begin_preparing``), if
        it did: its start's error is raised here, once."""
        early = self.config.stash.get(EARLY_START, None)
        return early.take_server() if early is not None else None

    def _start(self) -> EphemeralServer:
        from ..postgres import EphemeralServer

        binaries = self.binaries
        self._initdb_ready()
        return EphemeralServer.start(binaries=binaries)

    def _enrol_in_reused_server(self) -> None:
        """The run's record beside the kept server (``EphemeralServer.enrol``)."""
        assert self.own_server is not None
        self._run_record = self.own_server.enrol(self.run_id)

    @property
    def binaries(self) -> Binaries:
        """The binaries of the ephemeral server this run starts (or attaches to), found
        once, for the header (which PostgreSQL, its clone method) and the start. Found
        without the server's modules (psycopg, file locks): a header costs no imports."""
        if self._binaries is None:
            from ..postgres.initdb_cache import server_binaries
            from ..postgres.runas import run_as, runtime_root

            early = self.config.stash.get(EARLY_START, None)
            if early is not None:  # found from the start of the run (its error raised here)
                self._binaries = early.binaries.result()
            else:
                user = run_as()
                self._binaries = server_binaries(user, runtime_root(user))
        return self._binaries

    def _initdb_ready(self) -> None:
        """Until the initdb cache begun at the start of the run is built (or failed: the
        start then says why)."""
        early = self.config.stash.get(EARLY_START, None)
        if early is not None:
            wait([early.initdb])

    def clone_method(self) -> CloneMethod | None:
        """How the run's server clones templates: a running server is asked; an
        ephemeral one not started yet is planned, not started for it. None: the server
        cannot be reached or started (the first test that needs it says why)."""
        from ..postgres.binaries import of_server, planned
        from ..postgres.runas import run_as, runtime_root

        try:
            if self.settings.url or self.inherited_url:  # running: asked
                return of_server(self.server)
            if self.own_server is not None:
                return self.own_server.process.clone_method
            return planned(self.binaries.version, runtime_root(run_as()))
        except ReynardDBError:
            return None

    def header(self) -> list[str]:
        """The run's lines of pytest's header: its databases and where, which PostgreSQL
        (an ephemeral server's binaries: found once, the server starts with these), how it
        clones (one line for the run, not a warning per test), the registry's warnings."""
        from ..foundation.urls import mask_url
        from ..postgres.binaries import describe

        settings = self.settings
        where = mask_url(settings.url) if settings.url else "an ephemeral server"
        reuse = " (reused between runs)" if settings.reuse else ""
        names = ", ".join(settings.databases) or "none"
        if settings.from_markers:
            names += " (from @pytest.mark.reynard_db)"
        known = self.registry.databases
        mirrors = any(known[n].mirror_of for n in settings.databases if n in known)
        source = f", source={settings.source}" if mirrors else ""  # only a mirror has one
        lines = [f"reynard-db: databases {names} on {where}{reuse}{source}"]
        if not settings.url:
            try:
                lines += [f"reynard-db: {line}" for line in describe(self.binaries)]
            except ReynardDBError as exc:  # said again, as the run's error, at the start
                lines.append(f"reynard-db: {exc}")
        method = self.clone_method()
        if method is not None:
            lines.append(f"reynard-db: {method.line}")
        return lines + [f"reynard-db: warning: {w}" for w in self.registry.warnings]

    @property
    def provisioner(self) -> Provisioner:
        if self._provisioner is None:
            from ..postgres.runas import run_as, runtime_root
            from ..provisioning.provision import Provisioner
            from .fixtures import seed_of

            root = runtime_root(run_as())
            locks = root / "locks"
            locks.mkdir(mode=0o700, exist_ok=True)
            self._provisioner = Provisioner(
                self.registry,
                self.server,
                run_id=self.run_id,
                worker=self.worker,
                source=self.settings.source,
                presence=self._shared_server_presence(),
                lock_dir=locks,
                seed=seed_of(self.config),
                heads_cache=root / "heads",
            )
        return self._provisioner

    def _shared_server_presence(self) -> Presence | None:
        """On a server other runs use too (``--reynard-db-url``, the reuse server): this
        run's session there, after the databases of dead runs and the templates no
        one used for ``$REYNARD_DB_TEMPLATE_MAX_AGE`` days are dropped (once per run,
        by the controller). A per-run ephemeral server needs none of it."""
        if not (self.settings.url or self.settings.reuse):
            return None
        server = self.server
        if self.agent is not None:  # begun and pruned by the agent as it attached
            from ..postgres.agent_server import AgentPresence

            self._presence = AgentPresence(self.agent)
            return self._presence
        from ..postgres.shared import RunPresence, drop_dead_runs, prune_templates, template_max_age

        self._presence = RunPresence(server, self.run_id, self.worker).start()
        if not self.is_worker:
            if self.settings.url:  # the reuse server has its own records of runs
                drop_dead_runs(server, self.run_id)
            prune_templates(
                server, max_age=template_max_age(), everything_ours=self.own_server is not None
            )
        return self._presence

    def close(self) -> None:
        """Drop what this process made, then stop what it started; each step runs even
        if an earlier one failed."""
        with ExitStack() as stack:
            stack.callback(self._armed.close)  # last: the clean-up above still connects
            if self._presence is not None:  # after the drops: until then the run is alive
                stack.callback(self._presence.close)
            if self.own_server is not None:
                stack.callback(self.own_server.stop)
            if self._server is not None:
                stack.callback(self._server.close)
            if self._run_record is not None and self.own_server is not None:
                # on the admin connection, before it closes; the record kept if what the
                # run left cannot be dropped: the next run drops it
                stack.callback(self.own_server.leave, self.run_id, self._run_record)
            if self._server is not None and _reached_existing(self._server):
                # Databases a test made by hand with reynard_db_server.create_database.
                stack.callback(self._server.stop)
            if self._server is not None and _existing(self._server) and not self.is_worker:
                # the run's databases, whichever worker or check child made them: also
                # where this process never connected (xdist, check items without a header)
                stack.callback(_drop_run_if_reachable, self._server, self.run_id)
            if self._provisioner is not None:
                stack.callback(self._provisioner.close, drop=not self._server_goes())

    def _server_goes(self) -> bool:
        """Whether the run's databases go without a drop from here: with its server (the
        run's own, stopped and removed at its end), or by its agent's hand (which drops
        them on the kept server as it ends)."""
        if self.agent is not None:
            return True
        return self.own_server is not None and not self.settings.reuse


def _existing(server: Server) -> TypeGuard[ExistingServer]:
    """Whether ``server`` is an existing one (``--reynard-db-url``)."""
    from ..postgres import ExistingServer

    return isinstance(server, ExistingServer)


def _reached_existing(server: Server) -> TypeGuard[ExistingServer]:
    """Whether ``server`` is an existing one (``--reynard-db-url``) this run reached."""
    return _existing(server) and server.reached


def _drop_run_if_reachable(server: ExistingServer, run_id: str) -> None:
    """``drop_run``; a server no connection ever reached (this one included) had no
    database made on it: not a failed clean-up."""
    try:
        server.drop_run(run_id)
    except ReynardDBError:
        if server.reached:
            raise
