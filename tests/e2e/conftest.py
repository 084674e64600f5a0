"""Fixtures that run a real `flotilla server` process for the end-to-end
suite.

`server` is one process per test module (cheap; tests there only add uniquely
named resources); `fresh_server` is a process of the test's own on an empty
data directory, for tests that need isolation or kill the process;
`server_factory` starts servers with other settings (`command="up"`, extra
flags). All are `support.FlotillaServer`s. When a test fails, the stderr of
every server alive during it is attached to the report. Every process is
stopped at teardown, and what an `up` server's own agent made on the Docker
engine (its task network, its containers) is removed.

Agents: `agent_fleet` (per test) and `module_agent_fleet` (per module) start
`flotilla agent` processes (`support.FlotillaAgent`) against a server, each
with its own data directory and metadata port; at teardown every agent is
stopped and every container, task network and volume its instances made is
removed. Nothing else on the engine is touched: other installations and
other test runs may share it, and networks left by earlier ones are the
suite's to live with, not to delete. `docker_ready` (per session) makes sure a Docker engine answers and
the local test image exists; tests marked `docker` need it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import (
    FLOTILLA_BIN,
    FlotillaAgent,
    FlotillaServer,
    docker_available,
    ensure_test_image,
    remove_docker_leftovers,
)


_LIVE_SERVERS: list[FlotillaServer] = []
_LIVE_AGENTS: list[FlotillaAgent] = []


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "docker: runs real containers on the local Docker engine (heavy; always run in CI, "
        "FLOTILLA_E2E_SKIP_DOCKER=1 skips them on a machine without Docker)",
    )


def _require_binary():
    if not FLOTILLA_BIN.exists():
        pytest.exit(f"{FLOTILLA_BIN} does not exist: run `cargo build -p flotilla` or set FLOTILLA_BIN", 2)


def _launch(base_dir: Path, **settings):
    _require_binary()
    server = FlotillaServer(base_dir=base_dir, **settings)
    _LIVE_SERVERS.append(server)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if server.running:
            server.kill9()
        _LIVE_SERVERS.remove(server)
        if server.command == "up" and server.local_instance_ids:
            # `up`'s own agent made its task network and maybe containers.
            remove_docker_leftovers(instance_ids=server.local_instance_ids)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole module."""
    yield from _launch(tmp_path_factory.mktemp("flotilla-module"))


@pytest.fixture
def fresh_server(tmp_path_factory):
    """A server of this test's own, on an empty data directory."""
    yield from _launch(tmp_path_factory.mktemp("flotilla-fresh"))


@pytest.fixture
def server_factory(tmp_path_factory):
    """Starts servers of this test's own with other settings, e.g.
    `server_factory(command="up")` or `server_factory(extra_args=(...))`."""
    launched = []

    def launch(**settings) -> FlotillaServer:
        generator = _launch(tmp_path_factory.mktemp("flotilla-custom"), **settings)
        launched.append(generator)
        return next(generator)

    yield launch
    for generator in reversed(launched):
        generator.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for server in _LIVE_SERVERS:
            report.sections.append((f"flotilla server stderr ({server.stderr_path})", server.stderr_tail()))
        for agent in _LIVE_AGENTS:
            report.sections.append((f"flotilla agent stderr ({agent.stderr_path})", agent.stderr_tail(80)))
    return report


def pytest_sessionfinish(session, exitstatus):
    # Belt and braces: no process outlives the run, whatever went wrong.
    for agent in list(_LIVE_AGENTS):
        if agent.running:
            agent.process.kill()
    for server in list(_LIVE_SERVERS):
        if server.running:
            server.kill9()


@pytest.fixture(scope="session")
def docker_ready():
    """A Docker engine that answers, with the local test image built."""
    if not docker_available():
        if os.environ.get("FLOTILLA_E2E_SKIP_DOCKER") == "1":
            pytest.skip("no Docker engine, and FLOTILLA_E2E_SKIP_DOCKER=1")
        pytest.fail("no Docker engine answers `docker version`: these tests need one "
                    "(set FLOTILLA_E2E_SKIP_DOCKER=1 to skip them on this machine)")
    ensure_test_image()


class AgentFleet:
    """Agents started for a test or a module, and everything they made."""

    def __init__(self, tmp_path_factory, name: str):
        self._tmp = tmp_path_factory
        self._name = name
        self.agents: list[FlotillaAgent] = []

    def start(self, server: FlotillaServer, cluster: str, *extra_args: str, wait: bool = True,
              metadata_port: int = 0, credentials: tuple[str, str] | None = None) -> FlotillaAgent:
        _require_binary()
        agent = FlotillaAgent(
            base_dir=self._tmp.mktemp(self._name), server=server, cluster=cluster,
            metadata_port=metadata_port, extra_args=tuple(extra_args), credentials=credentials,
        )
        self.agents.append(agent)
        _LIVE_AGENTS.append(agent)
        agent.start()
        if wait:
            agent.wait_connected()
        return agent

    def close(self):
        for agent in self.agents:
            agent.stop()
            if agent.running:
                agent.process.kill()
                agent.process.wait()
        real = [agent for agent in self.agents if not agent.simulated]
        if real:
            remove_docker_leftovers(
                instance_ids=[i for agent in real for i in agent.instance_ids],
                clusters=sorted({agent.cluster for agent in real}),
            )
        for agent in self.agents:
            if agent in _LIVE_AGENTS:
                _LIVE_AGENTS.remove(agent)


@pytest.fixture
def agent_fleet(tmp_path_factory):
    fleet = AgentFleet(tmp_path_factory, "agent")
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="module")
def module_agent_fleet(tmp_path_factory):
    fleet = AgentFleet(tmp_path_factory, "module-agent")
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    return Path(__file__).resolve().parent / "seeds"


