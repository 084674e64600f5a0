"""Task placement through the real AWS CLI and boto3: placement strategies,
memberOf constraints in the Cluster Query Language, and custom attributes,
on six simulated instances (zones a, b, c; t2.micro and m5.large by turns).
"""

from __future__ import annotations

import os
from collections import Counter
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from support import error_of, register_task_definition, unique, wait_tasks_status

INSTANCES = 6
ZONES = ["a", "b", "c"]
INSTANCE_TYPES = ["t2.micro", "m5.large"]


@pytest.fixture(scope="module")
def cluster(server, module_agent_fleet):
    name = unique(f"placement-{os.getpid()}")
    server.ecs.create_cluster(clusterName=name)
    agent = module_agent_fleet.start(
        server, name,
        "--simulate", str(INSTANCES),
        "--simulate-zones", ",".join(ZONES),
        "--simulate-instance-types", ",".join(INSTANCE_TYPES),
    )
    arns = agent.instance_arns
    described = server.ecs.describe_container_instances(cluster=name, containerInstances=arns)
    facts = {}
    for instance in described["containerInstances"]:
        attributes = {a["name"]: a.get("value") for a in instance["attributes"]}
        facts[instance["containerInstanceArn"]] = SimpleNamespace(
            zone=attributes["ecs.availability-zone"], instance_type=attributes["ecs.instance-type"])
    return SimpleNamespace(server=server, ecs=server.ecs, name=name, arns=arns, facts=facts)


def run(cluster, *extra: str, count: int = 6):
    """run-task through the AWS CLI with a family of its own (its own task
    group), then stops the tasks; returns the instance of each task."""
    family = unique("placed")
    register_task_definition(cluster.ecs, family, [
        {"name": "app", "image": "sim/any", "memory": 512, "cpu": 16},
    ])
    code, ran = cluster.server.cli("run-task", "--cluster", cluster.name, "--task-definition", family,
                                   "--count", str(count), *extra)
    assert code == 0, ran
    assert ran["failures"] == [], ran["failures"]
    arns = [task["taskArn"] for task in ran["tasks"]]
    for arn in arns:
        cluster.ecs.stop_task(cluster=cluster.name, task=arn)
    wait_tasks_status(cluster.ecs, cluster.name, arns, "STOPPED")
    return [task["containerInstanceArn"] for task in ran["tasks"]]


def test_spread_over_zones_puts_two_in_each(cluster):
    placed = run(cluster, "--placement-strategy", "type=spread,field=attribute:ecs.availability-zone")
    assert Counter(cluster.facts[arn].zone for arn in placed) == {"a": 2, "b": 2, "c": 2}


def test_spread_over_instances_puts_one_on_each(cluster):
    placed = run(cluster, "--placement-strategy", "type=spread,field=instanceId")
    assert sorted(placed) == sorted(cluster.arns)


def test_binpack_memory_fills_one_instance_first(cluster):
    placed = run(cluster, "--placement-strategy", "type=binpack,field=memory")
    assert len(set(placed)) == 1


def test_member_of_instance_type_pattern(cluster):
    placed = run(cluster, "--placement-constraints",
                 "type=memberOf,expression=attribute:ecs.instance-type =~ t2.*")
    assert {cluster.facts[arn].instance_type for arn in placed} == {"t2.micro"}


def test_put_attributes_then_member_of_a_custom_attribute(cluster):
    chosen = cluster.arns[3]
    code, put = cluster.server.cli("put-attributes", "--cluster", cluster.name, "--attributes",
                                   f"name=stack,value=blue,targetType=container-instance,targetId={chosen}")
    assert code == 0, put
    listed = cluster.ecs.list_attributes(cluster=cluster.name, targetType="container-instance",
                                         attributeName="stack", attributeValue="blue")["attributes"]
    assert [a["targetId"] for a in listed] == [chosen]
    placed = run(cluster, "--placement-constraints", "type=memberOf,expression=attribute:stack == blue",
                 count=3)
    assert placed == [chosen] * 3
    cluster.ecs.delete_attributes(cluster=cluster.name, attributes=[
        {"name": "stack", "targetType": "container-instance", "targetId": chosen}])
    assert cluster.ecs.list_attributes(cluster=cluster.name, targetType="container-instance",
                                       attributeName="stack")["attributes"] == []


def test_put_attributes_on_an_unknown_target(cluster):
    with pytest.raises(ClientError) as excinfo:
        cluster.ecs.put_attributes(cluster=cluster.name, attributes=[
            {"name": "stack", "targetType": "container-instance", "targetId": "0" * 32}])
    assert error_of(excinfo)[0] == "TargetNotFoundException"


def test_cql_syntax_error_is_an_invalid_parameter(cluster):
    family = unique("placed")
    definition = register_task_definition(cluster.ecs, family, [
        {"name": "app", "image": "sim/any", "memory": 64},
    ])
    with pytest.raises(ClientError) as excinfo:
        cluster.ecs.run_task(cluster=cluster.name, taskDefinition=definition, placementConstraints=[
            {"type": "memberOf", "expression": "attribute:ecs.instance-type == t2.micro and"}])
    code, message = error_of(excinfo)
    assert code == "InvalidParameterException"
    assert "character 43" in message
