"""Fixtures that run a real `flotilla server` process for the end-to-end
suite.

`server` is one process per test module (cheap; tests there only add uniquely
named resources); `fresh_server` is a process of the test's own on an empty
data directory, for tests that need isolation or kill the process. Both are
`support.FlotillaServer`s. When a test fails, the stderr of every server alive
during it is attached to the report. Every process is stopped at teardown.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support import FLOTILLA_BIN, FlotillaServer


_LIVE_SERVERS: list[FlotillaServer] = []


def _require_binary():
    if not FLOTILLA_BIN.exists():
        pytest.exit(f"{FLOTILLA_BIN} does not exist: run `cargo build -p flotilla` or set FLOTILLA_BIN", 2)


def _launch(base_dir: Path):
    _require_binary()
    server = FlotillaServer(base_dir=base_dir)
    _LIVE_SERVERS.append(server)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if server.running:
            server.kill9()
        _LIVE_SERVERS.remove(server)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole module."""
    yield from _launch(tmp_path_factory.mktemp("flotilla-module"))


@pytest.fixture
def fresh_server(tmp_path_factory):
    """A server of this test's own, on an empty data directory."""
    yield from _launch(tmp_path_factory.mktemp("flotilla-fresh"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for server in _LIVE_SERVERS:
            report.sections.append((f"flotilla server stderr ({server.stderr_path})", server.stderr_tail()))
    return report


def pytest_sessionfinish(session, exitstatus):
    # Belt and braces: no server outlives the run, whatever went wrong.
    for server in list(_LIVE_SERVERS):
        if server.running:
            server.kill9()


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    return Path(__file__).resolve().parent / "seeds"


