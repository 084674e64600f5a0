"""`flotilla server --store etcd://...`: the control plane's state in an etcd
cluster (Debian's `etcd`, started here on free ports) instead of the
embedded file. Driven with the AWS CLI and boto3: clusters, task
definitions, tasks on simulated hosts; every acknowledged write is found
after kill -9, and by a server on another, empty data directory.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import (
    FLOTILLA_BIN,
    all_pages,
    cluster_arn,
    describe_tasks,
    free_port,
    register_task_definition,
    run_tasks,
    unique,
    wait_tasks_status,
    wait_until,
)
from test_durability import assert_acknowledged_writes_survived, run_writers_then

ETCD_START_TIMEOUT_S = 20.0
SIMULATED_INSTANCES = 3
TASKS = 6


class Etcd:
    """A single-member etcd on loopback ports, with a data directory of its own."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.client_port}"

    def start(self) -> "Etcd":
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.base_dir / "etcd.log", "ab")
        self.process = subprocess.Popen(
            [
                "etcd", "--name", "flotilla-e2e",
                "--data-dir", str(self.base_dir / "member"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"flotilla-e2e={peer}",
                # As the README advises: history kept an hour, then compacted.
                "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h",
                "--logger", "zap", "--log-level", "warn",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        deadline = time.monotonic() + ETCD_START_TIMEOUT_S
        while not self.healthy():
            assert self.process.poll() is None, f"etcd exited: {self.log_tail()}"
            assert time.monotonic() < deadline, f"etcd not healthy: {self.log_tail()}"
            time.sleep(0.05)
        return self

    def healthy(self) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=2)
            connection.request("GET", "/health")
            return b'"health":"true"' in connection.getresponse().read()
        except OSError:
            return False

    def log_tail(self) -> str:
        return (self.base_dir / "etcd.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def etcd(tmp_path_factory):
    if shutil.which("etcd") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but there is no `etcd` on PATH (Debian package etcd-server)")
        pytest.skip("no `etcd` on PATH (Debian package etcd-server); under CI this fails")
    server = Etcd(tmp_path_factory.mktemp("etcd")).start()
    try:
        yield server
    finally:
        server.stop()


def etcd_server(server_factory, etcd):
    return server_factory(extra_args=("--store", etcd.url))


def test_acknowledged_writes_survive_kill_9_on_etcd(server_factory, etcd):
    server = etcd_server(server_factory, etcd)
    acks = run_writers_then(server, "mixed", server.kill9)
    assert server.process.returncode == -9
    assert acks.attempts > len(acks.clusters), "the stream never wrote"
    # The state is in etcd: no embedded store was made.
    assert not (server.data_dir / "state.redb").exists()

    server.start()
    assert_acknowledged_writes_survived(server, acks, "mixed")
    family = acks.task_definitions[0][0]
    stored = len(all_pages(server.ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family))
    answer = server.ecs.register_task_definition(
        family=family, containerDefinitions=[{"name": "app", "image": "sim/any", "memory": 64}]
    )
    assert answer["taskDefinition"]["revision"] == stored + 1

    # Another server, on an empty data directory, reads the same state.
    server.stop()
    other = etcd_server(server_factory, etcd)
    assert other.data_dir != server.data_dir
    assert_acknowledged_writes_survived(other, acks, "mixed")


def test_cli_and_tasks_on_simulated_hosts_survive_kill_9_on_etcd(server_factory, etcd, agent_fleet):
    server = etcd_server(server_factory, etcd)
    cluster = unique("etcd-sim")
    code, created = server.cli("create-cluster", "--cluster-name", cluster)
    assert code == 0, created
    assert created["cluster"]["clusterArn"] == cluster_arn(cluster)
    code, registered = server.cli(
        "register-task-definition", "--family", unique("etcd-app"),
        "--container-definitions", '[{"name": "app", "image": "sim/any", "memory": 128, "cpu": 64}]',
    )
    assert code == 0, registered
    definition = registered["taskDefinition"]["taskDefinitionArn"]
    agent = agent_fleet.start(server, cluster, "--simulate", str(SIMULATED_INSTANCES))
    tasks = run_tasks(server.ecs, cluster, definition, count=TASKS)
    arns = [task["taskArn"] for task in tasks]
    wait_tasks_status(server.ecs, cluster, arns, "RUNNING")
    service_definition = register_task_definition(
        server.ecs, unique("etcd-svc"), [{"name": "app", "image": "sim/any", "memory": 64, "cpu": 32}]
    )
    server.ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=service_definition,
                              desiredCount=2)

    server.restart(hard=True, keep_port=True)
    assert not (server.data_dir / "state.redb").exists()

    code, described = server.cli("describe-clusters", "--clusters", cluster)
    assert code == 0, described
    assert [c["status"] for c in described["clusters"]] == ["ACTIVE"]
    code, shown = server.cli("describe-task-definition", "--task-definition", definition)
    assert code == 0, shown
    assert shown["taskDefinition"]["containerDefinitions"][0]["image"] == "sim/any"
    # The tasks are still there and running; the agent comes back.
    assert {task["lastStatus"] for task in describe_tasks(server.ecs, cluster, arns)} == {"RUNNING"}
    agent.wait_connected()
    listed = all_pages(server.ecs, "list_tasks", "taskArns", cluster=cluster)
    assert set(arns) <= set(listed)
    [service] = server.ecs.describe_services(cluster=cluster, services=["web"])["services"]
    assert service["desiredCount"] == 2

    # The control plane goes on working on etcd: the service reaches its
    # count and a stopped task stops.
    wait_until(
        lambda: server.ecs.describe_services(cluster=cluster, services=["web"])["services"][0]["runningCount"] == 2,
        60, "the service to run its 2 tasks",
    )
    server.ecs.stop_task(cluster=cluster, task=arns[0])
    wait_tasks_status(server.ecs, cluster, arns[:1], "STOPPED")


def run_server_expecting_failure(tmp_path, *args: str, env: dict | None = None) -> str:
    """Runs `flotilla server ARGS` that must exit non-zero; returns stderr."""
    done = subprocess.run(
        [str(FLOTILLA_BIN), "server", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0, done.stdout
    return done.stderr


def test_a_store_that_cannot_be_reached_or_is_misconfigured_stops_the_server_with_a_reason(tmp_path):
    port = free_port()
    stderr = run_server_expecting_failure(tmp_path, "--store", f"etcd://127.0.0.1:{port}")
    assert f"opening store etcd://127.0.0.1:{port}" in stderr, stderr
    stderr = run_server_expecting_failure(tmp_path, "--store", "etcd://no-port")
    assert "is not HOST:PORT" in stderr, stderr
    stderr = run_server_expecting_failure(tmp_path, "--etcd-user", "flotilla")
    assert "need --store etcd://" in stderr, stderr
    stderr = run_server_expecting_failure(
        tmp_path, "--store", f"etcd://127.0.0.1:{port}", "--etcd-user", "flotilla",
    )
    assert "FLOTILLA_ETCD_PASSWORD" in stderr, stderr
    assert not (tmp_path / "data" / "state.redb").exists()
