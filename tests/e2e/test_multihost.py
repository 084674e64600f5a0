"""Two hosts in one cluster: two `flotilla agent` processes on the local
Docker engine (separate data directories and metadata ports) registered to
one `flotilla server`. Placement must spread a RunTask over both when one
cannot hold it all, and every task must answer at its own binding.

Heavy (marked `docker`).
"""

from __future__ import annotations

import os

import pytest

from support import (
    HTTPD_COMMAND,
    TEST_IMAGE,
    TEST_PAGE,
    container_of,
    curl_until_ok,
    docker_inspect,
    register_task_definition,
    resources_by_name,
    run_tasks,
    unique,
    wait_tasks_status,
)

pytestmark = pytest.mark.docker

# Each host offers this much memory to tasks; each task takes half of it, so
# first fit fills one host with two tasks and must put the next two elsewhere.
HOST_MEMORY_MIB = 256
TASK_MEMORY_MIB = 128
TASKS = 4


def host_memory_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        line = next(line for line in meminfo if line.startswith("MemTotal:"))
    return int(line.split()[1]) // 1024


@pytest.fixture(scope="module")
def hosts(docker_ready, server, module_agent_fleet):
    cluster = unique(f"multihost-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    reserved = str(host_memory_mib() - HOST_MEMORY_MIB)
    agents = [
        module_agent_fleet.start(server, cluster, "--memory-reserved-mib", reserved,
                                 "--availability-zone", zone)
        for zone in ("local-1a", "local-1b")
    ]
    return server, cluster, agents


def test_both_agents_are_instances_of_the_cluster(hosts):
    server, cluster, agents = hosts
    assert agents[0].metadata_port != agents[1].metadata_port
    code, listed = server.cli("list-container-instances", "--cluster", cluster)
    assert code == 0, listed
    assert sorted(listed["containerInstanceArns"]) == sorted(agent.instance_arn for agent in agents)
    code, described = server.cli("describe-container-instances", "--cluster", cluster,
                                 "--container-instances", *listed["containerInstanceArns"])
    assert code == 0, described
    zones = set()
    for instance in described["containerInstances"]:
        assert instance["agentConnected"] is True
        assert resources_by_name(instance["registeredResources"])["MEMORY"] == HOST_MEMORY_MIB
        zones |= {a["value"] for a in instance["attributes"] if a["name"] == "ecs.availability-zone"}
    assert zones == {"local-1a", "local-1b"}
    assert len({i["ec2InstanceId"] for i in described["containerInstances"]}) == 2


def test_run_task_spreads_over_both_hosts_when_one_is_full(hosts):
    server, cluster, agents = hosts
    ecs = server.ecs
    arn = register_task_definition(ecs, unique("spread"), [{
        "name": "web", "image": TEST_IMAGE, "memory": TASK_MEMORY_MIB, "command": HTTPD_COMMAND,
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
    }])
    tasks = run_tasks(ecs, cluster, arn, count=TASKS, startedBy="multihost")
    arns = [task["taskArn"] for task in tasks]
    by_instance = {}
    for task in tasks:
        by_instance.setdefault(task["containerInstanceArn"], []).append(task["taskArn"])
    assert sorted(by_instance) == sorted(agent.instance_arn for agent in agents)
    assert sorted(len(placed) for placed in by_instance.values()) == [2, 2]

    tasks = wait_tasks_status(ecs, cluster, arns, "RUNNING")
    ports = set()
    for task in tasks:
        binding = container_of(task, "web")["networkBindings"][0]
        ports.add(binding["hostPort"])
        assert curl_until_ok(f"http://127.0.0.1:{binding['hostPort']}/") == TEST_PAGE
    assert len(ports) == TASKS

    # Each host runs its own tasks' containers, and says so.
    for agent in agents:
        listed = ecs.list_tasks(cluster=cluster, containerInstance=agent.instance_arn)["taskArns"]
        assert sorted(listed) == sorted(by_instance[agent.instance_arn])
        [instance] = ecs.describe_container_instances(
            cluster=cluster, containerInstances=[agent.instance_arn])["containerInstances"]
        assert instance["runningTasksCount"] == 2
        assert resources_by_name(instance["remainingResources"])["MEMORY"] == 0
    for task in tasks:
        labels = container_labels(container_of(task, "web")["runtimeId"])
        owner = next(a for a in agents if a.instance_arn == task["containerInstanceArn"])
        assert labels["com.flotilla.instance-id"] == owner.instance_ids[0]

    [counted] = ecs.describe_clusters(clusters=[cluster])["clusters"]
    assert counted["registeredContainerInstancesCount"] == 2
    assert counted["runningTasksCount"] == TASKS

    # Full: a fifth task has nowhere to go, and says why.
    refused = ecs.run_task(cluster=cluster, taskDefinition=arn)
    assert refused["tasks"] == []
    assert [f["reason"] for f in refused["failures"]] == ["RESOURCE:MEMORY", "RESOURCE:MEMORY"]

    for task_arn in arns:
        ecs.stop_task(cluster=cluster, task=task_arn)
    wait_tasks_status(ecs, cluster, arns, "STOPPED")
    for agent in agents:
        [instance] = ecs.describe_container_instances(
            cluster=cluster, containerInstances=[agent.instance_arn])["containerInstances"]
        assert resources_by_name(instance["remainingResources"])["MEMORY"] == HOST_MEMORY_MIB


def container_labels(container_id: str) -> dict:
    return docker_inspect(container_id)["Config"]["Labels"]
