"""Durability: a write the server acknowledged survives `kill -9`, and a
crash leaves no half-written state behind. SIGTERM shuts down cleanly."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from support import all_pages, cluster_arn, task_definition_arn

WRITERS = 8
STREAM_BEFORE_STOP_S = 1.5
FAMILIES = 3  # writers share families, so revisions are contended
JOIN_TIMEOUT_S = 30


@dataclass
class Acknowledged:
    """Every write that got a 200 answer, and what was written."""

    clusters: list[str] = field(default_factory=list)
    tags: list[tuple[str, str, str]] = field(default_factory=list)  # (arn, key, value)
    task_definitions: list[tuple[str, int, dict]] = field(default_factory=list)  # (family, revision, container)
    refusals: collections.Counter = field(default_factory=collections.Counter)
    attempts: int = 0

    def merge(self, other: "Acknowledged"):
        self.clusters += other.clusters
        self.tags += other.tags
        self.task_definitions += other.task_definitions
        self.refusals += other.refusals
        self.attempts += other.attempts


def write_stream(ecs, writer: int, workload: str, stop: threading.Event, acks: Acknowledged):
    """One writer: a stream of create-cluster / register-task-definition /
    tag-resource calls until `stop`, recording what was acknowledged."""
    step = 0
    while not stop.is_set():
        step += 1
        acks.attempts += 1
        kind = step % 3 if workload == "mixed" else (0 if step % 3 else 2)
        try:
            if kind == 0:
                name = f"dur-w{writer}-{step}"
                answer = ecs.create_cluster(clusterName=name)
                assert answer["cluster"]["clusterArn"] == cluster_arn(name)
                acks.clusters.append(name)
            elif kind == 1:
                family = f"dur-family-{writer % FAMILIES}"
                container = {
                    "name": "app",
                    "image": f"registry.local/app:{writer}-{step}",
                    "memory": 64 + step,
                    "environment": [{"name": "WRITER", "value": f"{writer}-{step}"}],
                }
                answer = ecs.register_task_definition(family=family, containerDefinitions=[container])
                acks.task_definitions.append((family, answer["taskDefinition"]["revision"], container))
            else:
                targets = [cluster_arn(acks.clusters[-1])] if acks.clusters else []
                if acks.task_definitions:
                    family, revision, _ = acks.task_definitions[-1]
                    targets.append(task_definition_arn(family, revision))
                if not targets:
                    continue
                arn = targets[step % len(targets)]
                key, value = f"k{step}", f"w{writer}"
                ecs.tag_resource(resourceArn=arn, tags=[{"key": key, "value": value}])
                acks.tags.append((arn, key, value))
        except ClientError as error:
            acks.refusals[error.response["Error"]["Code"]] += 1
        except BotoCoreError as error:  # the server went away mid-call
            acks.refusals[type(error).__name__] += 1


def run_writers_then(server, workload: str, interrupt) -> Acknowledged:
    """Streams writes from WRITERS threads, calls `interrupt()` after
    STREAM_BEFORE_STOP_S while they are still writing, then stops them."""
    clients = [server.client(shared=False, connect_timeout=2, read_timeout=10)
               for index in range(WRITERS)]
    stop = threading.Event()
    per_writer = [Acknowledged() for _ in range(WRITERS)]
    threads = [
        threading.Thread(target=write_stream, args=(clients[i], i, workload, stop, per_writer[i]), daemon=True)
        for i in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(STREAM_BEFORE_STOP_S)
    assert all(thread.is_alive() for thread in threads), "a writer stopped before the interruption"
    interrupt()
    stop.set()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive(), "a writer hung"
    total = Acknowledged()
    for acks in per_writer:
        total.merge(acks)
    return total


def assert_acknowledged_writes_survived(server, acks: Acknowledged, workload: str):
    ecs = server.ecs
    assert acks.clusters, f"no create-cluster was acknowledged: {acks.refusals}"
    listed = all_pages(ecs, "list_clusters", "clusterArns")
    assert len(listed) == len(set(listed)), "a cluster is listed twice"
    missing = sorted(set(map(cluster_arn, acks.clusters)) - set(listed))
    assert not missing, f"{len(missing)} acknowledged clusters lost, e.g. {missing[:5]}"
    # Whatever is listed is whole: it describes, ACTIVE, under its own name.
    for start in range(0, len(listed), 100):
        described = ecs.describe_clusters(clusters=listed[start:start + 100])
        assert described["failures"] == []
        for cluster in described["clusters"]:
            assert cluster["status"] == "ACTIVE"
            assert cluster["clusterArn"] == cluster_arn(cluster["clusterName"])

    expected_tags = collections.defaultdict(dict)
    for arn, key, value in acks.tags:
        expected_tags[arn][key] = value
    for arn, tags in expected_tags.items():
        actual = {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"]}
        lost = {k: v for k, v in tags.items() if actual.get(k) != v}
        assert not lost, f"acknowledged tags on {arn} lost: {lost}"

    if workload != "mixed":
        return
    assert acks.task_definitions, f"no register-task-definition was acknowledged: {acks.refusals}"
    acknowledged = [(family, revision) for family, revision, _ in acks.task_definitions]
    duplicates = [pair for pair, n in collections.Counter(acknowledged).items() if n > 1]
    assert not duplicates, f"one revision acknowledged to two writers: {duplicates}"
    for family, revision, container in acks.task_definitions:
        definition = ecs.describe_task_definition(taskDefinition=f"{family}:{revision}")["taskDefinition"]
        assert (definition["family"], definition["revision"], definition["status"]) == (family, revision, "ACTIVE")
        [stored] = definition["containerDefinitions"]
        for key, value in container.items():
            assert stored.get(key) == value, (family, revision, key)
    per_family = collections.Counter(family for family, _ in acknowledged)
    for family, count in per_family.items():
        arns = all_pages(ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family)
        revisions = [int(arn.rsplit(":", 1)[1]) for arn in arns]
        assert revisions == list(range(1, len(revisions) + 1)), f"{family}: revisions {revisions} have gaps or repeats"
        assert len(revisions) >= count, f"{family}: {count} acknowledged, {len(revisions)} stored"


@pytest.mark.parametrize("workload", ["clusters", "mixed"])
def test_acknowledged_writes_survive_kill_9(fresh_server, workload):
    """`clusters`: create-cluster and tag-resource on clusters. `mixed` adds
    register-task-definition and tags on task definitions."""
    acks = run_writers_then(fresh_server, workload, fresh_server.kill9)
    assert fresh_server.process.returncode == -9
    assert acks.attempts > len(acks.clusters), "the stream never wrote"

    fresh_server.start()
    assert_acknowledged_writes_survived(fresh_server, acks, workload)

    # The store is writable after the crash, and numbering continues.
    fresh_server.ecs.create_cluster(clusterName="after-the-crash")
    if workload == "mixed":
        family = acks.task_definitions[0][0]
        stored = len(all_pages(fresh_server.ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family))
        answer = fresh_server.ecs.register_task_definition(
            family=family, containerDefinitions=[{"name": "app", "image": "busybox", "memory": 64}]
        )
        assert answer["taskDefinition"]["revision"] == stored + 1


def test_sigterm_shuts_down_cleanly_and_keeps_state(fresh_server):
    fresh_server.ecs.put_account_setting_default(name="containerInsights", value="enabled")
    exit_codes = []
    acks = run_writers_then(fresh_server, "clusters", lambda: exit_codes.append(fresh_server.terminate()))
    assert exit_codes == [0], f"exit code on SIGTERM: {exit_codes}"

    fresh_server.start()
    assert_acknowledged_writes_survived(fresh_server, acks, "clusters")
    [setting] = fresh_server.ecs.list_account_settings(name="containerInsights", effectiveSettings=True)["settings"]
    assert setting["value"] == "enabled"
