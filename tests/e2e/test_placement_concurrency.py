"""Placement under concurrency and the seeds' chained strategy, through
boto3 and the AWS CLI against simulated instances: concurrent RunTask calls
from many clients never overcommit an instance, and spread over zones then
binpack on memory keeps each zone's tasks together.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, defaultdict

import boto3
from botocore.config import Config

from support import register_task_definition, unique

TASK_MEMORY_MIB = 128
INSTANCE_MEMORY_MIB = 1024
INSTANCES = 3


def client_for(server):
    return boto3.client(
        "ecs", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),
    )


def registered_memory(instance: dict, key: str) -> int:
    return next(r["integerValue"] for r in instance[key] if r["name"] == "MEMORY")


def test_concurrent_run_tasks_never_overcommit(server, agent_fleet):
    cluster = unique(f"concurrent-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(
        server, cluster, "--simulate", str(INSTANCES),
        "--simulate-memory", str(INSTANCE_MEMORY_MIB), "--simulate-cpu", "4096",
    )
    assert len(agent.instance_arns) == INSTANCES
    family = unique("crowd")
    register_task_definition(server.ecs, family, [
        {"name": "app", "image": "sim/any", "memory": TASK_MEMORY_MIB, "cpu": 8},
    ])
    capacity = INSTANCES * (INSTANCE_MEMORY_MIB // TASK_MEMORY_MIB)
    placed: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()

    def crowd():
        ecs = client_for(server)
        for _ in range(2):
            try:
                answer = ecs.run_task(cluster=cluster, taskDefinition=family, count=5)
            except Exception as error:  # noqa: BLE001 - any error is a finding
                with lock:
                    errors.append(repr(error))
                continue
            with lock:
                placed.extend(answer["tasks"])

    threads = [threading.Thread(target=crowd) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    # 80 tasks asked for, room for 24: every slot is taken and none twice.
    assert len(placed) == capacity
    assert len({task["taskArn"] for task in placed}) == capacity
    per_instance = Counter(task["containerInstanceArn"] for task in placed)
    described = server.ecs.describe_container_instances(
        cluster=cluster, containerInstances=agent.instance_arns)["containerInstances"]
    for instance in described:
        registered = registered_memory(instance, "registeredResources")
        remaining = registered_memory(instance, "remainingResources")
        used = per_instance[instance["containerInstanceArn"]] * TASK_MEMORY_MIB
        assert remaining >= 0
        assert used <= registered
        assert remaining == registered - used


def test_spread_over_zones_then_binpack_memory(server, agent_fleet):
    cluster = unique(f"chained-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(
        server, cluster, "--simulate", "6", "--simulate-zones", "a,b,c",
    )
    described = server.ecs.describe_container_instances(
        cluster=cluster, containerInstances=agent.instance_arns)["containerInstances"]
    zone_of = {
        instance["containerInstanceArn"]: next(
            a["value"] for a in instance["attributes"] if a["name"] == "ecs.availability-zone")
        for instance in described
    }
    family = unique("chained")
    register_task_definition(server.ecs, family, [
        {"name": "app", "image": "sim/any", "memory": 256, "cpu": 8},
    ])
    code, ran = server.cli(
        "run-task", "--cluster", cluster, "--task-definition", family, "--count", "6",
        "--placement-strategy",
        "type=spread,field=attribute:ecs.availability-zone", "type=binpack,field=memory",
    )
    assert code == 0, ran
    assert ran["failures"] == []
    by_zone: dict[str, Counter] = defaultdict(Counter)
    for task in ran["tasks"]:
        arn = task["containerInstanceArn"]
        by_zone[zone_of[arn]][arn] += 1
    # Two per zone, and within each zone both on one instance.
    assert {zone: sum(c.values()) for zone, c in by_zone.items()} == {"a": 2, "b": 2, "c": 2}
    assert all(len(instances) == 1 for instances in by_zone.values())
