"""The kept server as a warm run's test process sees it, its admin work done by the
run's agent (``agent``): what a run asks of a server it asks over the agent's pipe, and
the guard is told what the agent found.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from ..guard import GUARD
from .agent import Agent, AgentEnded
from .reaper import postmaster_pid
from .server import Server


@dataclass(frozen=True)
class ServerProcess:
    """The server's process as seen from the test process."""

    base_dir: Path

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (its ``postmaster.pid``); None once it has stopped."""
        return postmaster_pid(self.base_dir / "data")


class AgentServer(Server):
    """The run's server as the test process sees it when its agent started it or attached
    to the kept one: the statements a run makes (exists, create, drop, rename) are the
    agent's, what ``Server`` keeps of them (which databases are ours, the guard told) is
    this process's; any other use of ``admin`` or ``connect`` is this process's own
    connection, as for any ``Server`` (a template build, ``reynard_db_server.connect()``)."""

    def __init__(self, agent: Agent) -> None:
        attached = agent.attached()
        self.agent = agent
        #: Where the server runs, as ``EphemeralServer.process`` says it (its directory, its
        #: postmaster): the agent started it, or attached to the kept one.
        self.process = ServerProcess(Path(attached.base_dir))
        super().__init__(attached.url)
        self._version = attached.version
        # What EphemeralServer does on attaching, with the identity the agent asked.
        GUARD.allow_server(self.url, identity=attached.identity)
        GUARD.keep_server(self.url)

    def sibling(self) -> Server:
        return AgentServer(self.agent)

    def exists(self, name: str) -> bool:
        return bool(self.agent.ask("exists", name=name))

    def _make(self, name: str, template: str | None, *, end_sessions: bool) -> None:
        self.agent.ask("create", name=name, template=template, end_sessions=end_sessions)

    def _remove(self, name: str) -> None:
        # An agent that has ended has dropped the run's databases on its way out (the run's
        # process group signalled: a CI job cancelled, a terminal closed), or its record,
        # left by a kill, has the next run drop them: no clean-up failure to report.
        with suppress(AgentEnded):
            self.agent.ask("drop", name=name)

    def _rename(self, old: str, new: str) -> None:
        self.agent.ask("rename", old=old, new=new)


class AgentPresence:
    """The run's presence, held by its agent: the templates it uses are held there."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def hold(self, template: str) -> None:
        """Told, not asked: the provisioner's next request (whether the template exists)
        waits, and raises its error."""
        self.agent.tell("hold", template=template)

    def mark_used(self, template: str, *, project: str, tree: str) -> None:
        self.agent.tell("mark_used", template=template, project=project, tree=tree)

    def close(self) -> None:
        """Nothing: the presence ends with the agent (``Agent.end``)."""
