"""Capacity providers with simulated hosts: two `flotilla agent --simulate`
fleets, each started with its own `--capacity-provider`, one cluster. The
provider API through the AWS CLI and boto3, RunTask and services with a
capacityProviderStrategy (base first, then weight) landing on each
provider's instances only, the cluster's default strategy, refused requests
that change nothing, and a kill -9 of the control plane.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from support import (
    ACCOUNT_ID,
    FLOTILLA_BIN,
    REGION,
    all_pages,
    error_of,
    register_task_definition,
    unique,
    wait_tasks_status,
)

HOSTS_PER_PROVIDER = 2
SERVICE_TIMEOUT_S = 60.0
FAST = {"Delay": 1, "MaxAttempts": 60}


def provider_arn(name: str) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:capacity-provider/{name}"


def asg(name: str) -> dict:
    return {"autoScalingGroupArn": f"arn:aws:autoscaling:{REGION}:{ACCOUNT_ID}:autoScalingGroup:1:autoScalingGroupName/{name}"}


@pytest.fixture(scope="module")
def fleet(server, module_agent_fleet):
    """A cluster with providers `ondemand` and `spot`, each of two simulated
    hosts, and a task definition that runs on them."""
    ecs = server.ecs
    names = SimpleNamespace(ondemand=unique("ondemand"), spot=unique("spot"))
    for name in (names.ondemand, names.spot):
        ecs.create_capacity_provider(name=name, autoScalingGroupProvider=asg(name))
    cluster = unique(f"cp-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster, capacityProviders=[names.ondemand, names.spot])
    agents = {
        name: module_agent_fleet.start(server, cluster, "--simulate", str(HOSTS_PER_PROVIDER),
                                       "--capacity-provider", name)
        for name in (names.ondemand, names.spot)
    }
    family = unique("cp-app")
    register_task_definition(ecs, family, [{"name": "app", "image": "sim/any", "memory": 128, "cpu": 64}])
    instances = {arn: name for name, agent in agents.items() for arn in agent.instance_arns}
    return SimpleNamespace(server=server, ecs=ecs, cluster=cluster, names=names, agents=agents,
                           family=family, provider_of_instance=instances)


def check_placed(fleet, tasks: list[dict]) -> Counter:
    """Tasks per provider, each checked to run on an instance of its provider."""
    for task in tasks:
        provider = task.get("capacityProviderName")
        assert fleet.provider_of_instance[task["containerInstanceArn"]] == provider, task
        assert task["launchType"] == "EC2"
    return Counter(task.get("capacityProviderName") for task in tasks)


def stop_all(fleet, tasks: list[dict]):
    arns = [t["taskArn"] for t in tasks]
    for arn in arns:
        fleet.ecs.stop_task(cluster=fleet.cluster, task=arn)
    wait_tasks_status(fleet.ecs, fleet.cluster, arns, "STOPPED")


def test_capacity_provider_lifecycle_with_the_cli(server):
    name = unique("cli-cp")
    code, out = server.cli(
        "create-capacity-provider", "--name", name,
        "--auto-scaling-group-provider",
        f"autoScalingGroupArn=my-group-{name},managedScaling={{status=ENABLED,targetCapacity=80}},"
        "managedTerminationProtection=DISABLED",
        "--tags", "key=team,value=platform",
    )
    assert code == 0, out
    created = out["capacityProvider"]
    assert created["capacityProviderArn"] == provider_arn(name)
    assert created["status"] == "ACTIVE"
    assert created["autoScalingGroupProvider"]["autoScalingGroupArn"] == f"my-group-{name}"
    assert created["autoScalingGroupProvider"]["managedScaling"] == {
        "status": "ENABLED", "targetCapacity": 80, "minimumScalingStepSize": 1,
        "maximumScalingStepSize": 10000, "instanceWarmupPeriod": 300,
    }
    # Every provider: Fargate's two, as ECS lists them, and ours.
    code, out = server.cli("describe-capacity-providers")
    assert code == 0, out
    names = [p["name"] for p in out["capacityProviders"]]
    assert names[:2] == ["FARGATE", "FARGATE_SPOT"] and name in names, names
    fargate = out["capacityProviders"][0]
    assert fargate["capacityProviderArn"] == provider_arn("FARGATE") and fargate["status"] == "ACTIVE"
    code, out = server.cli("describe-capacity-providers", "--capacity-providers", name, "--include", "TAGS")
    assert code == 0, out
    assert out["capacityProviders"][0]["tags"] == [{"key": "team", "value": "platform"}]
    code, out = server.cli(
        "update-capacity-provider", "--name", name,
        "--auto-scaling-group-provider", "managedScaling={maximumScalingStepSize=4},managedDraining=DISABLED",
    )
    assert code == 0, out
    updated = out["capacityProvider"]
    assert updated["updateStatus"] == "UPDATE_COMPLETE"
    assert updated["autoScalingGroupProvider"]["managedScaling"]["maximumScalingStepSize"] == 4
    assert updated["autoScalingGroupProvider"]["managedScaling"]["targetCapacity"] == 80
    assert updated["autoScalingGroupProvider"]["managedDraining"] == "DISABLED"
    code, out = server.cli("tag-resource", "--resource-arn", provider_arn(name), "--tags", "key=env,value=dev")
    assert code == 0, out
    code, out = server.cli("list-tags-for-resource", "--resource-arn", provider_arn(name))
    assert code == 0, out
    assert sorted((t["key"], t["value"]) for t in out["tags"]) == [("env", "dev"), ("team", "platform")]
    code, out = server.cli("delete-capacity-provider", "--capacity-provider", name)
    assert code == 0, out
    assert out["capacityProvider"]["status"] == "INACTIVE"
    assert out["capacityProvider"]["updateStatus"] == "DELETE_COMPLETE"
    described = server.ecs.describe_capacity_providers(capacityProviders=[name])["capacityProviders"]
    assert described[0]["status"] == "INACTIVE"


def test_describe_pages_ten_at_most_with_a_token(server):
    made = [unique("page-cp") for _ in range(11)]
    for name in made:
        server.ecs.create_capacity_provider(name=name, autoScalingGroupProvider=asg(name))
    first = server.ecs.describe_capacity_providers()
    assert len(first["capacityProviders"]) == 10 and first["nextToken"]
    every = all_pages(server.ecs, "describe_capacity_providers", "capacityProviders", maxResults=3)
    names = [p["name"] for p in every]
    assert len(names) == len(set(names))
    assert names[:2] == ["FARGATE", "FARGATE_SPOT"]
    assert set(made) <= set(names)


def test_instances_report_their_provider(fleet):
    described = fleet.ecs.describe_container_instances(
        cluster=fleet.cluster, containerInstances=list(fleet.provider_of_instance))
    assert described["failures"] == []
    for instance in described["containerInstances"]:
        assert instance["capacityProviderName"] == fleet.provider_of_instance[instance["containerInstanceArn"]]
    cluster = fleet.ecs.describe_clusters(clusters=[fleet.cluster])["clusters"][0]
    assert cluster["capacityProviders"] == [fleet.names.ondemand, fleet.names.spot]
    listed = fleet.ecs.describe_capacity_providers(cluster=fleet.cluster)["capacityProviders"]
    assert sorted(p["name"] for p in listed) == sorted([fleet.names.ondemand, fleet.names.spot])


def test_run_task_splits_base_first_then_by_weight(fleet):
    answer = fleet.ecs.run_task(
        cluster=fleet.cluster, taskDefinition=fleet.family, count=10,
        capacityProviderStrategy=[
            {"capacityProvider": fleet.names.ondemand, "base": 2, "weight": 1},
            {"capacityProvider": fleet.names.spot, "weight": 3},
        ],
    )
    assert answer["failures"] == []
    # Base 2 on ondemand, then the other 8 one to three.
    assert check_placed(fleet, answer["tasks"]) == {fleet.names.ondemand: 4, fleet.names.spot: 6}
    running = wait_tasks_status(fleet.ecs, fleet.cluster, [t["taskArn"] for t in answer["tasks"]], "RUNNING")
    assert check_placed(fleet, running) == {fleet.names.ondemand: 4, fleet.names.spot: 6}
    stop_all(fleet, running)


def test_run_task_with_the_cli_and_the_default_strategy(fleet):
    code, out = fleet.server.cli(
        "run-task", "--cluster", fleet.cluster, "--task-definition", fleet.family, "--count", "4",
        "--capacity-provider-strategy", f"capacityProvider={fleet.names.spot},weight=1",
        f"capacityProvider={fleet.names.ondemand},weight=1",
    )
    assert code == 0, out
    assert check_placed(fleet, out["tasks"]) == {fleet.names.spot: 2, fleet.names.ondemand: 2}
    tasks = out["tasks"]
    fleet.ecs.put_cluster_capacity_providers(
        cluster=fleet.cluster, capacityProviders=[fleet.names.ondemand, fleet.names.spot],
        defaultCapacityProviderStrategy=[{"capacityProvider": fleet.names.spot, "weight": 1}],
    )
    try:
        # Neither a launch type nor a strategy: the cluster's default.
        by_default = fleet.ecs.run_task(cluster=fleet.cluster, taskDefinition=fleet.family, count=3)["tasks"]
        assert check_placed(fleet, by_default) == {fleet.names.spot: 3}
        # A launch type: any EC2 instance, and no provider reported.
        [plain] = fleet.ecs.run_task(cluster=fleet.cluster, taskDefinition=fleet.family, launchType="EC2")["tasks"]
        assert "capacityProviderName" not in plain
        tasks += by_default + [plain]
    finally:
        fleet.ecs.put_cluster_capacity_providers(
            cluster=fleet.cluster, capacityProviders=[fleet.names.ondemand, fleet.names.spot],
            defaultCapacityProviderStrategy=[])
    stop_all(fleet, tasks)


def service_tasks(fleet, name: str) -> list[dict]:
    arns = all_pages(fleet.ecs, "list_tasks", "taskArns", cluster=fleet.cluster, serviceName=name)
    if not arns:
        return []
    return fleet.ecs.describe_tasks(cluster=fleet.cluster, tasks=arns)["tasks"]


def test_a_service_keeps_its_split_as_it_scales(fleet):
    ecs = fleet.ecs
    name = unique("cp-svc")
    created = ecs.create_service(
        cluster=fleet.cluster, serviceName=name, taskDefinition=fleet.family, desiredCount=4,
        capacityProviderStrategy=[
            {"capacityProvider": fleet.names.ondemand, "base": 1, "weight": 1},
            {"capacityProvider": fleet.names.spot, "weight": 1},
        ],
    )["service"]
    assert "launchType" not in created
    assert created["capacityProviderStrategy"][0]["base"] == 1
    ecs.get_waiter("services_stable").wait(cluster=fleet.cluster, services=[name], WaiterConfig=FAST)
    # Base 1, then three by equal weights, the odd one to the first listed.
    assert check_placed(fleet, service_tasks(fleet, name)) == {fleet.names.ondemand: 3, fleet.names.spot: 1}
    ecs.update_service(cluster=fleet.cluster, service=name, desiredCount=9)
    ecs.get_waiter("services_stable").wait(cluster=fleet.cluster, services=[name], WaiterConfig=FAST)
    assert check_placed(fleet, service_tasks(fleet, name)) == {fleet.names.ondemand: 5, fleet.names.spot: 4}
    # The service holds its providers in the cluster.
    with pytest.raises(ClientError) as caught:
        ecs.put_cluster_capacity_providers(cluster=fleet.cluster, capacityProviders=[fleet.names.ondemand],
                                           defaultCapacityProviderStrategy=[])
    assert error_of(caught)[0] == "ResourceInUseException"
    ecs.delete_service(cluster=fleet.cluster, service=name, force=True)
    ecs.get_waiter("services_inactive").wait(cluster=fleet.cluster, services=[name], WaiterConfig=FAST)


REFUSED_RUN_TASKS = {
    "launch type beside a strategy": (
        lambda f: dict(launchType="EC2", capacityProviderStrategy=[{"capacityProvider": f.names.spot}]),
        "InvalidParameterException", "Specifying both a launch type and capacity provider strategy"),
    "provider not associated with the cluster": (
        lambda f: dict(capacityProviderStrategy=[{"capacityProvider": "not-in-this-cluster"}]),
        "InvalidParameterException", "not associated with the cluster"),
    "base on two providers": (
        lambda f: dict(capacityProviderStrategy=[{"capacityProvider": f.names.spot, "base": 1, "weight": 1},
                                                 {"capacityProvider": f.names.ondemand, "base": 1}]),
        "InvalidParameterException", "base"),
    "every weight zero": (
        lambda f: dict(capacityProviderStrategy=[{"capacityProvider": f.names.spot},
                                                 {"capacityProvider": f.names.ondemand}]),
        "InvalidParameterException", "weight value greater than zero"),
    "more than 20 providers": (
        lambda f: dict(capacityProviderStrategy=[{"capacityProvider": f"p{i}", "weight": 1} for i in range(21)]),
        "InvalidParameterException", "20"),
    "Fargate": (
        lambda f: dict(capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}]),
        "InvalidParameterException", "not associated with the cluster"),
}


@pytest.mark.parametrize("case", list(REFUSED_RUN_TASKS), ids=list(REFUSED_RUN_TASKS))
def test_refused_run_task_starts_nothing(fleet, case):
    params, code, words = REFUSED_RUN_TASKS[case]
    before = all_pages(fleet.ecs, "list_tasks", "taskArns", cluster=fleet.cluster)
    with pytest.raises(ClientError) as caught:
        fleet.ecs.run_task(cluster=fleet.cluster, taskDefinition=fleet.family, **params(fleet))
    got_code, message = error_of(caught)
    assert got_code == code, message
    assert words in message, message
    assert all_pages(fleet.ecs, "list_tasks", "taskArns", cluster=fleet.cluster) == before


def test_refused_provider_and_cluster_requests_change_nothing(fleet):
    ecs = fleet.ecs
    providers_before = all_pages(ecs, "describe_capacity_providers", "capacityProviders", include=["TAGS"])
    services_before = all_pages(ecs, "list_services", "serviceArns", cluster=fleet.cluster)
    cluster_before = ecs.describe_clusters(clusters=[fleet.cluster])["clusters"][0]
    other = unique("other")
    ecs.create_cluster(clusterName=other)
    refused = [
        ("create_capacity_provider", dict(name="ecs-reserved", autoScalingGroupProvider=asg("x")), "InvalidParameterException"),
        ("create_capacity_provider", dict(name=fleet.names.spot, autoScalingGroupProvider=asg("again")), "ClientException"),
        ("create_capacity_provider", dict(name=unique("no-group")), "InvalidParameterException"),
        ("create_capacity_provider", dict(name=unique("scale"), autoScalingGroupProvider={
            **asg("y"), "managedScaling": {"targetCapacity": 101}}), "InvalidParameterException"),
        ("delete_capacity_provider", dict(capacityProvider=fleet.names.spot), "ClientException"),
        ("delete_capacity_provider", dict(capacityProvider="FARGATE"), "InvalidParameterException"),
        ("put_cluster_capacity_providers", dict(cluster=other, capacityProviders=[fleet.names.spot],
                                                defaultCapacityProviderStrategy=[]), "InvalidParameterException"),
        ("put_cluster_capacity_providers", dict(cluster=fleet.cluster, capacityProviders=[fleet.names.spot],
                                                defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE"}]),
         "InvalidParameterException"),
        ("create_service", dict(cluster=fleet.cluster, serviceName=unique("bad"), taskDefinition=fleet.family,
                                desiredCount=1, launchType="EC2",
                                capacityProviderStrategy=[{"capacityProvider": fleet.names.spot}]),
         "InvalidParameterException"),
        ("create_service", dict(cluster=fleet.cluster, serviceName=unique("bad"), taskDefinition=fleet.family,
                                schedulingStrategy="DAEMON",
                                capacityProviderStrategy=[{"capacityProvider": fleet.names.spot}]),
         "InvalidParameterException"),
    ]
    for operation, params, code in refused:
        with pytest.raises(ClientError) as caught:
            getattr(ecs, operation)(**params)
        assert error_of(caught)[0] == code, (operation, params, error_of(caught))
    assert all_pages(ecs, "describe_capacity_providers", "capacityProviders", include=["TAGS"]) == providers_before
    cluster_after = ecs.describe_clusters(clusters=[fleet.cluster])["clusters"][0]
    for field in ("capacityProviders", "defaultCapacityProviderStrategy"):
        assert cluster_after[field] == cluster_before[field], field
    assert ecs.describe_clusters(clusters=[other])["clusters"][0]["capacityProviders"] == []
    assert all_pages(ecs, "list_services", "serviceArns", cluster=fleet.cluster) == services_before


def test_an_agent_cannot_be_external_and_in_a_capacity_provider():
    done = subprocess.run(
        [str(FLOTILLA_BIN), "agent", "--external", "--capacity-provider", "spot"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2, done
    assert "cannot be used with" in done.stderr, done.stderr


def test_providers_and_placements_survive_kill9(fresh_server, agent_fleet):
    server = fresh_server
    name = unique("durable")
    server.ecs.create_capacity_provider(name=name, autoScalingGroupProvider=asg(name),
                                        tags=[{"key": "team", "value": "a"}])
    cluster = unique("durable")
    server.ecs.create_cluster(clusterName=cluster, capacityProviders=[name],
                              defaultCapacityProviderStrategy=[{"capacityProvider": name, "weight": 1}])
    agent = agent_fleet.start(server, cluster, "--simulate", "1", "--capacity-provider", name)
    family = unique("durable-app")
    register_task_definition(server.ecs, family, [{"name": "app", "image": "sim/any", "memory": 64}])
    tasks = server.ecs.run_task(cluster=cluster, taskDefinition=family, count=2)["tasks"]
    assert [t["capacityProviderName"] for t in tasks] == [name, name]
    server.restart(hard=True, keep_port=True)
    agent.wait_connected()
    [provider] = server.ecs.describe_capacity_providers(capacityProviders=[name], include=["TAGS"])["capacityProviders"]
    assert provider["status"] == "ACTIVE" and provider["tags"] == [{"key": "team", "value": "a"}]
    described = server.ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert described["capacityProviders"] == [name]
    assert described["defaultCapacityProviderStrategy"] == [{"capacityProvider": name, "weight": 1}]
    again = server.ecs.describe_tasks(cluster=cluster, tasks=[t["taskArn"] for t in tasks])["tasks"]
    assert [t["capacityProviderName"] for t in again] == [name, name]
    [instance] = server.ecs.describe_container_instances(
        cluster=cluster, containerInstances=agent.instance_arns)["containerInstances"]
    assert instance["capacityProviderName"] == name
    # Still associated, still not deletable; after the cluster goes, it is.
    with pytest.raises(ClientError) as caught:
        server.ecs.delete_capacity_provider(capacityProvider=name)
    assert error_of(caught)[0] == "ClientException"
    for task in tasks:
        server.ecs.stop_task(cluster=cluster, task=task["taskArn"])
    wait_tasks_status(server.ecs, cluster, [t["taskArn"] for t in tasks], "STOPPED")
    for arn in agent.instance_arns:
        server.ecs.deregister_container_instance(cluster=cluster, containerInstance=arn, force=True)
    agent.stop()
    server.ecs.delete_cluster(cluster=cluster)
    deleted = server.ecs.delete_capacity_provider(capacityProvider=name)["capacityProvider"]
    assert deleted["status"] == "INACTIVE"
