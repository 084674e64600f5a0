"""Nothing a request carries is silently dropped: a member Flotilla does not
act on is kept and returned as ECS returns it, or refused with a message
naming it (`crates/control/src/input_members.rs` has the table).
Client tokens are acted on: a retried RunTask or CreateService answers what
the first call did.
"""

from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

from support import error_of, register_task_definition, unique

FAST = {"Delay": 1, "MaxAttempts": 60}


@pytest.fixture(scope="module")
def fleet_cluster(server, module_agent_fleet):
    cluster = unique(f"members-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    module_agent_fleet.start(server, cluster, "--simulate", "2")
    return cluster


@pytest.fixture(scope="module")
def family(server):
    return register_task_definition(server.ecs, unique("members"), [
        {"name": "app", "image": "sim/app:v1", "memory": 64, "essential": True},
    ])


def refused(member: str, why: str) -> str:
    return f"{member} is not supported by this Flotilla server: {why}."


def test_service_connect_configuration_is_refused_by_name_not_dropped(server, fleet_cluster, family):
    name = unique("connect")
    code, stderr = server.cli(
        "create-service", "--cluster", fleet_cluster, "--service-name", name, "--task-definition", family,
        "--desired-count", "1",
        "--service-connect-configuration", "enabled=true,namespace=internal,services=[{portName=web}]",
    )
    assert code != 0
    assert "InvalidParameterException" in stderr
    assert refused("serviceConnectConfiguration", "service connect needs service discovery namespaces and a "
                   "proxy, which Flotilla does not have yet") in stderr
    code, described = server.cli("describe-services", "--cluster", fleet_cluster, "--services", name)
    assert code == 0, described
    assert described["services"] == [] and described["failures"][0]["reason"] == "MISSING"

    # Turned off, there is nothing to act on.
    code, created = server.cli(
        "create-service", "--cluster", fleet_cluster, "--service-name", name, "--task-definition", family,
        "--desired-count", "0", "--service-connect-configuration", "enabled=false",
    )
    assert code == 0, created
    code, stderr = server.cli("update-service", "--cluster", fleet_cluster, "--service", name,
                              "--service-connect-configuration", "enabled=true,namespace=internal")
    assert code != 0 and "serviceConnectConfiguration is not supported" in stderr


@pytest.mark.parametrize("member, arguments, why", [
    ("volumeConfigurations", ("--volume-configurations", "name=data,managedEBSVolume={roleArn=arn:aws:iam::000000000000:role/ebs,sizeInGiB=10}"),
     "volumes configured at launch need Amazon EBS, which this Flotilla server does not provide"),
    ("referenceId", ("--reference-id", "order-42"), "this Flotilla server does not record reference ids"),
])
def test_run_task_members_nothing_acts_on_are_refused(server, fleet_cluster, family, member, arguments, why):
    before = server.ecs.list_tasks(cluster=fleet_cluster)["taskArns"]
    code, stderr = server.cli("run-task", "--cluster", fleet_cluster, "--task-definition", family, *arguments)
    assert code != 0
    assert refused(member, why) in stderr
    assert server.ecs.list_tasks(cluster=fleet_cluster)["taskArns"] == before


def test_start_task_tags_tasks_with_ecs_managed_tags(server, fleet_cluster, family):
    ecs = server.ecs
    instance = ecs.list_container_instances(cluster=fleet_cluster)["containerInstanceArns"][0]
    [task] = ecs.start_task(cluster=fleet_cluster, taskDefinition=family, containerInstances=[instance],
                            enableECSManagedTags=True)["tasks"]
    tags = ecs.list_tags_for_resource(resourceArn=task["taskArn"])["tags"]
    assert {"key": "aws:ecs:clusterName", "value": fleet_cluster} in tags, tags
    ecs.stop_task(cluster=fleet_cluster, task=task["taskArn"])


def test_a_retried_run_task_answers_the_first_calls_tasks(server, fleet_cluster, family):
    ecs = server.ecs
    token = unique("token")
    before = set(ecs.list_tasks(cluster=fleet_cluster)["taskArns"])
    first = ecs.run_task(cluster=fleet_cluster, taskDefinition=family, count=2, clientToken=token)
    again = ecs.run_task(cluster=fleet_cluster, taskDefinition=family, count=2, clientToken=token)
    arns = sorted(t["taskArn"] for t in first["tasks"])
    assert len(arns) == 2
    assert sorted(t["taskArn"] for t in again["tasks"]) == arns
    started = set(ecs.list_tasks(cluster=fleet_cluster)["taskArns"]) - before
    assert sorted(started) == arns
    with pytest.raises(ClientError) as caught:
        ecs.run_task(cluster=fleet_cluster, taskDefinition=family, count=1, clientToken=token)
    assert error_of(caught) == (
        "ConflictException",
        "The RunTask request could not be processed due to conflicts. "
        "The provided clientToken is already in use with a different RunTask request.",
    )
    # boto3 fills a fresh token into every call: those never collide.
    assert len(ecs.run_task(cluster=fleet_cluster, taskDefinition=family)["tasks"]) == 1
    for arn in arns:
        ecs.stop_task(cluster=fleet_cluster, task=arn)


def test_a_retried_create_service_answers_the_service(server, fleet_cluster, family):
    ecs = server.ecs
    name = unique("retried")
    token = unique("svc-token")[:36]
    first = ecs.create_service(cluster=fleet_cluster, serviceName=name, taskDefinition=family,
                               desiredCount=0, clientToken=token)["service"]
    again = ecs.create_service(cluster=fleet_cluster, serviceName=name, taskDefinition=family,
                               desiredCount=0, clientToken=token)["service"]
    assert again["serviceArn"] == first["serviceArn"]
    assert again["createdAt"] == first["createdAt"]
    with pytest.raises(ClientError) as caught:
        ecs.create_service(cluster=fleet_cluster, serviceName=name, taskDefinition=family, desiredCount=0,
                           clientToken=unique("other")[:36])
    assert error_of(caught) == ("InvalidParameterException", "Creation of service was not idempotent.")
