"""Simulated hosts: `flotilla agent --simulate N` registers N container
instances with a fake runtime, through the same agent code as a real host.
The fake's image names choose what a container does (`sim/any` runs,
`sim/exit:CODE` exits, `sim/fail-pull` cannot be pulled), so the whole task
lifecycle and the API's checks run here without Docker.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from support import (
    all_pages,
    container_of,
    describe_tasks,
    error_of,
    register_task_definition,
    resources_by_name,
    run_tasks,
    unique,
    wait_tasks_status,
    wait_until,
)

INSTANCES = 5
ZONES = ["local-1a", "local-1b"]
INSTANCE_TYPES = ["t2.micro", "m5.large"]
# The agent's defaults for a simulated instance.
SIMULATED_CPU_UNITS = 4096
SIMULATED_MEMORY_MIB = 16_384


@pytest.fixture(scope="module")
def sim(server, module_agent_fleet):
    cluster = unique(f"sim-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    agent = module_agent_fleet.start(
        server, cluster,
        "--simulate", str(INSTANCES),
        "--simulate-zones", ",".join(ZONES),
        "--simulate-instance-types", ",".join(INSTANCE_TYPES),
    )
    family = unique("sim-app")
    definition = register_task_definition(server.ecs, family, [
        {"name": "app", "image": "sim/any", "memory": 128, "cpu": 64},
    ])
    return SimpleNamespace(server=server, ecs=server.ecs, cluster=cluster, agent=agent,
                           family=family, definition=definition)


def stop_all(ecs, cluster, arns):
    for arn in arns:
        ecs.stop_task(cluster=cluster, task=arn)
    return wait_tasks_status(ecs, cluster, arns, "STOPPED")


def test_simulated_instances_register_with_round_robin_zones_and_types(sim):
    code, listed = sim.server.cli("list-container-instances", "--cluster", sim.cluster)
    assert code == 0, listed
    arns = sim.agent.instance_arns  # sim-0 .. sim-4, in order
    assert len(arns) == INSTANCES
    assert sorted(listed["containerInstanceArns"]) == sorted(arns)
    described = sim.ecs.describe_container_instances(cluster=sim.cluster, containerInstances=arns)
    assert described["failures"] == []
    by_arn = {i["containerInstanceArn"]: i for i in described["containerInstances"]}
    for index, arn in enumerate(arns):
        instance = by_arn[arn]
        attributes = {a["name"]: a.get("value") for a in instance["attributes"]}
        assert attributes["ecs.availability-zone"] == ZONES[index % len(ZONES)], index
        assert attributes["ecs.instance-type"] == INSTANCE_TYPES[index % len(INSTANCE_TYPES)], index
        assert instance["agentConnected"] is True
        assert instance["status"] == "ACTIVE"
        registered = resources_by_name(instance["registeredResources"])
        assert registered["CPU"] == SIMULATED_CPU_UNITS
        assert registered["MEMORY"] == SIMULATED_MEMORY_MIB
    assert len({i["ec2InstanceId"] for i in by_arn.values()}) == INSTANCES
    # The cluster query language sees the same attributes.
    code, filtered = sim.server.cli("list-container-instances", "--cluster", sim.cluster,
                                    "--filter", "attribute:ecs.instance-type == m5.large")
    assert code == 0, filtered
    assert sorted(filtered["containerInstanceArns"]) == sorted(arns[1::2])


def test_run_task_count_10_all_run(sim):
    code, ran = sim.server.cli("run-task", "--cluster", sim.cluster, "--task-definition", sim.family,
                               "--count", "10")
    assert code == 0, ran
    assert ran["failures"] == []
    arns = [task["taskArn"] for task in ran["tasks"]]
    assert len(arns) == 10
    tasks = wait_tasks_status(sim.ecs, sim.cluster, arns, "RUNNING")
    for task in tasks:
        app = container_of(task, "app")
        assert app["lastStatus"] == "RUNNING"
        assert app["runtimeId"]
        assert task["desiredStatus"] == "RUNNING"
        assert task["containerInstanceArn"] in sim.agent.instance_arns
    counted = sim.ecs.describe_clusters(clusters=[sim.cluster])["clusters"][0]
    assert counted["runningTasksCount"] >= 10
    stop_all(sim.ecs, sim.cluster, arns)


def test_essential_container_exit_3_stops_the_task(sim):
    definition = register_task_definition(sim.ecs, unique("sim-exit"), [
        {"name": "app", "image": "sim/exit:3", "memory": 64},
    ])
    [task] = run_tasks(sim.ecs, sim.cluster, definition)
    [task] = wait_tasks_status(sim.ecs, sim.cluster, [task["taskArn"]], "STOPPED")
    assert task["stopCode"] == "EssentialContainerExited"
    assert "Essential container in task exited" in task["stoppedReason"]
    assert container_of(task, "app")["exitCode"] == 3
    assert task["startedAt"] <= task["stoppedAt"]


def test_failed_pull_fails_the_task_to_start(sim):
    definition = register_task_definition(sim.ecs, unique("sim-fail-pull"), [
        {"name": "app", "image": "sim/fail-pull", "memory": 64},
    ])
    [task] = run_tasks(sim.ecs, sim.cluster, definition)
    [task] = wait_tasks_status(sim.ecs, sim.cluster, [task["taskArn"]], "STOPPED")
    assert task["stopCode"] == "TaskFailedToStart"
    assert task["stoppedReason"].startswith("CannotPullContainerError")
    app = container_of(task, "app")
    assert app["reason"].startswith("CannotPullContainerError")
    assert "startedAt" not in task


def test_stop_task_stops_it_as_user_initiated(sim):
    [task] = run_tasks(sim.ecs, sim.cluster, sim.definition)
    wait_tasks_status(sim.ecs, sim.cluster, [task["taskArn"]], "RUNNING")
    code, stopped = sim.server.cli("stop-task", "--cluster", sim.cluster, "--task", task["taskArn"],
                                   "--reason", "no longer needed")
    assert code == 0, stopped
    assert stopped["task"]["desiredStatus"] == "STOPPED"
    [task] = wait_tasks_status(sim.ecs, sim.cluster, [task["taskArn"]], "STOPPED")
    assert task["stopCode"] == "UserInitiated"
    assert task["stoppedReason"] == "no longer needed"
    assert container_of(task, "app")["exitCode"] == 143  # SIGTERM, as under Docker
    # Stopping it again changes nothing.
    again = sim.ecs.stop_task(cluster=sim.cluster, task=task["taskArn"], reason="twice")["task"]
    assert again["stoppedReason"] == "no longer needed"


def test_list_tasks_filters(sim):
    ecs, cluster = sim.ecs, sim.cluster
    arns = sim.agent.instance_arns
    family_a, family_b = unique("sim-list-a"), unique("sim-list-b")
    definition_a = register_task_definition(ecs, family_a, [{"name": "app", "image": "sim/any", "memory": 32}])
    definition_b = register_task_definition(ecs, family_b, [{"name": "app", "image": "sim/any", "memory": 32}])
    # StartTask puts each task on the instance it names.
    a_on_1 = ecs.start_task(cluster=cluster, taskDefinition=definition_a, containerInstances=[arns[1]],
                            startedBy="alice")["tasks"][0]["taskArn"]
    a_on_2 = ecs.start_task(cluster=cluster, taskDefinition=definition_a, containerInstances=[arns[2]],
                            startedBy="alice")["tasks"][0]["taskArn"]
    b_on_2 = ecs.start_task(cluster=cluster, taskDefinition=definition_b, containerInstances=[arns[2]],
                            startedBy="bob")["tasks"][0]["taskArn"]
    wait_tasks_status(ecs, cluster, [a_on_1, a_on_2, b_on_2], "RUNNING")
    stop_all(ecs, cluster, [a_on_1])

    def listed(*args):
        code, out = sim.server.cli("list-tasks", "--cluster", cluster, *args)
        assert code == 0, out
        return sorted(out["taskArns"])

    assert listed("--family", family_a) == [a_on_2]
    assert listed("--family", family_a, "--desired-status", "STOPPED") == [a_on_1]
    assert listed("--started-by", "bob") == [b_on_2]
    assert listed("--started-by", "alice") == [a_on_2]
    assert sorted(all_pages(ecs, "list_tasks", "taskArns", cluster=cluster, startedBy="alice",
                            desiredStatus="STOPPED")) == [a_on_1]
    on_2 = listed("--container-instance", arns[2])
    assert a_on_2 in on_2 and b_on_2 in on_2 and a_on_1 not in on_2
    assert listed("--container-instance", arns[1], "--family", family_a) == []
    assert listed("--container-instance", arns[1], "--family", family_a, "--desired-status", "STOPPED") == [a_on_1]
    stop_all(ecs, cluster, [a_on_2, b_on_2])


def test_draining_instances_take_no_new_tasks(sim):
    ecs, cluster = sim.ecs, sim.cluster
    arns = sim.agent.instance_arns
    draining, active = arns[:-1], arns[-1]
    code, out = sim.server.cli("update-container-instances-state", "--cluster", cluster,
                               "--container-instances", *draining, "--status", "DRAINING")
    assert code == 0, out
    assert out["failures"] == []
    assert {i["status"] for i in out["containerInstances"]} == {"DRAINING"}
    try:
        tasks = run_tasks(ecs, cluster, sim.definition, count=3)
        assert {task["containerInstanceArn"] for task in tasks} == {active}
        wait_tasks_status(ecs, cluster, [t["taskArn"] for t in tasks], "RUNNING")
        # With the last one draining too, no instance takes tasks at all.
        ecs.update_container_instances_state(cluster=cluster, containerInstances=[active], status="DRAINING")
        before = state_of(sim)
        with pytest.raises(ClientError) as raised:
            ecs.run_task(cluster=cluster, taskDefinition=sim.definition)
        assert error_of(raised) == ("InvalidParameterException", "No Container Instances were found in your cluster.")
        assert state_of(sim) == before
        # Draining does not stop what runs.
        assert {t["lastStatus"] for t in describe_tasks(ecs, cluster, [t["taskArn"] for t in tasks])} == {"RUNNING"}
        code, listed = sim.server.cli("list-container-instances", "--cluster", cluster, "--status", "DRAINING")
        assert code == 0 and sorted(listed["containerInstanceArns"]) == sorted(arns)
    finally:
        ecs.update_container_instances_state(cluster=cluster, containerInstances=arns, status="ACTIVE")
    stop_all(ecs, cluster, [t["taskArn"] for t in tasks])


def test_deregister_refuses_an_instance_with_tasks_unless_forced(server, agent_fleet):
    ecs = server.ecs
    cluster = unique(f"sim-deregister-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(server, cluster, "--simulate", "1")
    instance_arn = agent.instance_arn
    definition = register_task_definition(ecs, unique("sim-dereg"), [{"name": "app", "image": "sim/any", "memory": 32}])
    [task] = run_tasks(ecs, cluster, definition)
    wait_tasks_status(ecs, cluster, [task["taskArn"]], "RUNNING")

    code, refused = server.cli("deregister-container-instance", "--cluster", cluster,
                               "--container-instance", instance_arn)
    assert code != 0
    assert "InvalidParameterException" in refused and "running tasks" in refused
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == [instance_arn]
    assert describe_tasks(ecs, cluster, [task["taskArn"]])[0]["lastStatus"] == "RUNNING"

    code, out = server.cli("deregister-container-instance", "--cluster", cluster,
                           "--container-instance", instance_arn, "--force")
    assert code == 0, out
    assert out["containerInstance"]["status"] == "INACTIVE"
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == []
    [task] = wait_tasks_status(ecs, cluster, [task["taskArn"]], "STOPPED")
    assert "deregistered" in task["stoppedReason"]
    # The agent of a deregistered instance stops its tasks and ends.
    wait_until(lambda: not agent.running, 15, "the simulated agent to exit")
    assert agent.process.returncode == 0
    # No instance left: RunTask says so.
    with pytest.raises(ClientError) as raised:
        ecs.run_task(cluster=cluster, taskDefinition=definition)
    assert error_of(raised)[0] == "InvalidParameterException"


# ---- refused requests change nothing -------------------------------------------------


@pytest.fixture(scope="module")
def other_cluster_instance(server, module_agent_fleet):
    """An instance of another cluster, for requests that name the wrong one."""
    cluster = unique(f"sim-other-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    return module_agent_fleet.start(server, cluster, "--simulate", "1").instance_arn


def state_of(sim) -> tuple:
    """What a refused request must leave as it was."""
    tasks = {
        status: sorted(all_pages(sim.ecs, "list_tasks", "taskArns", cluster=sim.cluster, desiredStatus=status))
        for status in ("RUNNING", "STOPPED")
    }
    instances = sim.ecs.describe_container_instances(cluster=sim.cluster, containerInstances=sim.agent.instance_arns)
    remaining = sorted(
        (i["containerInstanceArn"], i["status"], resources_by_name(i["remainingResources"])["MEMORY"])
        for i in instances["containerInstances"]
    )
    return tasks["RUNNING"], tasks["STOPPED"], remaining


BAD_REQUESTS = {
    "unknown task definition": (
        "run_task", lambda sim, other: dict(taskDefinition="no-such-family-anywhere:1"),
        "ClientException", "TaskDefinition not found",
    ),
    "FARGATE launch type": (
        "run_task", lambda sim, other: dict(taskDefinition=sim.definition, launchType="FARGATE"),
        "InvalidParameterException", "Task definition does not support launch_type FARGATE.",
    ),
    "FARGATE capacity provider": (
        "run_task", lambda sim, other: dict(
            taskDefinition=sim.definition,
            capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}]),
        "InvalidParameterException", "not associated with the cluster",
    ),
    "override of an unknown container": (
        "run_task", lambda sim, other: dict(
            taskDefinition=sim.definition,
            overrides={"containerOverrides": [{"name": "not-a-container", "command": ["x"]}]}),
        "InvalidParameterException", "not-a-container",
    ),
    "count over 10": (
        "run_task", lambda sim, other: dict(taskDefinition=sim.definition, count=11),
        "InvalidParameterException", "count",
    ),
    "awsvpc configuration for a bridge task": (
        "run_task", lambda sim, other: dict(
            taskDefinition=sim.definition,
            networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-1"]}}),
        "InvalidParameterException", "Network Configuration",
    ),
    "stop of an unknown task": (
        "stop_task", lambda sim, other: dict(task="0123456789abcdef0123456789abcdef"),
        "InvalidParameterException", "task was not found",
    ),
    "stop of another cluster's task ARN": (
        "stop_task", lambda sim, other: dict(
            task="arn:aws:ecs:us-east-1:000000000000:task/elsewhere/0123456789abcdef0123456789abcdef"),
        "InvalidParameterException", "task was not found",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_refused_requests_change_nothing(sim, other_cluster_instance, case):
    operation, params, code, message = BAD_REQUESTS[case]
    before = state_of(sim)
    with pytest.raises(ClientError) as raised:
        getattr(sim.ecs, operation)(cluster=sim.cluster, **params(sim, other_cluster_instance))
    got_code, got_message = error_of(raised)
    assert got_code == code, got_message
    assert message.lower() in got_message.lower(), got_message
    assert state_of(sim) == before


def test_start_task_on_another_clusters_instance_starts_nothing(sim, other_cluster_instance):
    before = state_of(sim)
    try:
        answer = sim.ecs.start_task(cluster=sim.cluster, taskDefinition=sim.definition,
                                    containerInstances=[other_cluster_instance])
    except ClientError as error:
        assert error.response["Error"]["Code"] in ("InvalidParameterException", "ClientException")
    else:
        assert answer["tasks"] == []
        assert [(f["arn"], f["reason"]) for f in answer["failures"]] == [(other_cluster_instance, "MISSING")]
    assert state_of(sim) == before
    # Nor did the other cluster get a task.
    other_cluster = other_cluster_instance.split("/")[1]
    assert sim.ecs.list_tasks(cluster=other_cluster)["taskArns"] == []


def test_refused_requests_through_the_cli(sim):
    before = state_of(sim)
    code, error = sim.server.cli("run-task", "--cluster", sim.cluster, "--task-definition", sim.family,
                                 "--launch-type", "FARGATE")
    assert code != 0
    assert "InvalidParameterException" in error and "does not support launch_type FARGATE" in error
    code, error = sim.server.cli("stop-task", "--cluster", sim.cluster, "--task", "ffffffffffffffffffffffffffffffff")
    assert code != 0
    assert "InvalidParameterException" in error
    code, error = sim.server.cli("run-task", "--cluster", sim.cluster, "--task-definition", "no-such-family")
    assert code != 0
    assert "ClientException" in error
    assert state_of(sim) == before


# ---- lifecycle corners ---------------------------------------------------------------


def test_failed_dependency_stops_the_task_before_its_dependent_starts(sim):
    definition = register_task_definition(sim.ecs, unique("sim-bad-init"), [
        {"name": "init", "image": "sim/exit:1", "memory": 32, "essential": False},
        {"name": "main", "image": "sim/any", "memory": 32,
         "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
    ])
    [task] = run_tasks(sim.ecs, sim.cluster, definition)
    [task] = wait_tasks_status(sim.ecs, sim.cluster, [task["taskArn"]], "STOPPED")
    assert container_of(task, "init")["exitCode"] == 1
    main = container_of(task, "main")
    assert main["lastStatus"] == "STOPPED"
    assert "runtimeId" not in main, "main must never have been created"
    assert task["stopCode"] == "TaskFailedToStart"
    assert "dependency init cannot reach condition SUCCESS" in task["stoppedReason"]


def test_stop_task_while_its_container_is_starting(server, agent_fleet):
    """A task stopped while its container is still starting ends STOPPED as
    the user asked, and is not left running."""
    ecs = server.ecs
    cluster = unique(f"sim-slow-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(server, cluster, "--simulate", "1", "--simulate-start-delay-ms", "3000")
    definition = register_task_definition(ecs, unique("sim-slow"), [{"name": "app", "image": "sim/any", "memory": 32}])
    [task] = run_tasks(ecs, cluster, definition)
    time.sleep(1)  # the agent has it and is starting its container
    stopping = ecs.stop_task(cluster=cluster, task=task["taskArn"], reason="changed my mind")["task"]
    assert stopping["lastStatus"] in ("PROVISIONING", "PENDING")
    [task] = wait_tasks_status(ecs, cluster, [task["taskArn"]], "STOPPED", timeout_s=20)
    assert task["stopCode"] == "UserInitiated"
    assert task["stoppedReason"] == "changed my mind"
    assert container_of(task, "app")["lastStatus"] == "STOPPED"
    [instance] = ecs.describe_container_instances(cluster=cluster, containerInstances=[agent.instance_arn])[
        "containerInstances"]
    assert instance["runningTasksCount"] == 0 and instance["pendingTasksCount"] == 0


def test_instance_deregistered_while_its_agent_is_down(server, agent_fleet):
    """With no agent to stop them, a force-deregistered instance's tasks are
    stopped at once; the agent, back with its old identity, registers anew."""
    ecs = server.ecs
    cluster = unique(f"sim-lost-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(server, cluster, "--simulate", "1")
    old_arn = agent.instance_arn
    definition = register_task_definition(ecs, unique("sim-lost"), [{"name": "app", "image": "sim/any", "memory": 32}])
    [task] = run_tasks(ecs, cluster, definition)
    wait_tasks_status(ecs, cluster, [task["taskArn"]], "RUNNING")

    agent.kill()
    wait_until(lambda: not ecs.describe_container_instances(cluster=cluster, containerInstances=[old_arn])[
        "containerInstances"][0]["agentConnected"], 30, "agentConnected to become false")
    out = ecs.deregister_container_instance(cluster=cluster, containerInstance=old_arn, force=True)
    assert out["containerInstance"]["status"] == "INACTIVE"
    [task] = describe_tasks(ecs, cluster, [task["taskArn"]])
    assert task["lastStatus"] == "STOPPED"
    assert "deregistered" in task["stoppedReason"]

    agent.start().wait_connected()
    new_arn = agent.instance_arn
    assert new_arn != old_arn
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == [new_arn]
    described = ecs.describe_container_instances(cluster=cluster, containerInstances=[old_arn, new_arn])
    assert [i["status"] for i in described["containerInstances"]] == ["INACTIVE", "ACTIVE"]
    # The new instance takes work.
    [task] = run_tasks(ecs, cluster, definition)
    assert task["containerInstanceArn"] == new_arn
    wait_tasks_status(ecs, cluster, [task["taskArn"]], "RUNNING")
