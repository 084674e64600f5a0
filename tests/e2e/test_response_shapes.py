"""Responses shaped like AWS's, checked with boto3 and the AWS CLI against
botocore's model and AWS's documented examples: clusters always carry
`statistics`, services the defaults ECS fills in, tasks their `attributes`,
container instances the agent's `versionInfo`; an awsvpc service needs a
network configuration; EFS volumes are kept with their default root
directory but a task that needs one is refused; validation errors read as
AWS's do.
"""

from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

from support import error_of, register_task_definition, unique

FAST = {"Delay": 1, "MaxAttempts": 60}
ALARMS_OFF = {"alarmNames": [], "enable": False, "rollback": False}


@pytest.fixture(scope="module")
def fleet_cluster(server, module_agent_fleet):
    cluster = unique(f"shapes-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    module_agent_fleet.start(server, cluster, "--simulate", "2")
    return cluster


def definition(ecs, family: str, **params) -> str:
    return register_task_definition(ecs, family, [
        {"name": "app", "image": "sim/app:v1", "memory": 64, "essential": True},
    ], **params)


def test_clusters_always_carry_statistics(server):
    ecs = server.ecs
    name = unique("stats")
    answers = {
        "CreateCluster": ecs.create_cluster(clusterName=name),
        "UpdateCluster": ecs.update_cluster(cluster=name, settings=[{"name": "containerInsights", "value": "enabled"}]),
        "UpdateClusterSettings": ecs.update_cluster_settings(
            cluster=name, settings=[{"name": "containerInsights", "value": "disabled"}]),
        "PutClusterCapacityProviders": ecs.put_cluster_capacity_providers(
            cluster=name, capacityProviders=[], defaultCapacityProviderStrategy=[]),
        "DescribeClusters": ecs.describe_clusters(clusters=[name])["clusters"][0],
    }
    for operation, answer in answers.items():
        cluster = answer.get("cluster", answer)
        assert cluster["statistics"] == [], operation
    asked = ecs.describe_clusters(clusters=[name], include=["STATISTICS"])["clusters"][0]
    assert {s["name"] for s in asked["statistics"]} >= {"runningEC2TasksCount", "activeEC2ServiceCount"}
    assert ecs.delete_cluster(cluster=name)["cluster"]["statistics"] == []
    code, described = server.cli("describe-clusters", "--clusters", name)
    assert code == 0, described
    assert described["clusters"][0]["statistics"] == []


def test_services_show_the_defaults_ecs_fills_in(server, fleet_cluster):
    ecs = server.ecs
    family = definition(ecs, unique("defaults"))
    name = unique("defaults-svc")
    created = ecs.create_service(cluster=fleet_cluster, serviceName=name, taskDefinition=family,
                                 desiredCount=1)["service"]
    for service in (created, ecs.describe_services(cluster=fleet_cluster, services=[name])["services"][0]):
        configuration = service["deploymentConfiguration"]
        assert configuration["alarms"] == ALARMS_OFF
        assert configuration["deploymentCircuitBreaker"] == {"enable": False, "rollback": False}
        assert (configuration["minimumHealthyPercent"], configuration["maximumPercent"]) == (100, 200)
        assert service["availabilityZoneRebalancing"] == "ENABLED"
        assert service["resourceManagementType"] == "CUSTOMER"
        assert service["deploymentController"] == {"type": "ECS"}
        assert service["loadBalancers"] == [] and service["serviceRegistries"] == []
        [revision] = service["currentServiceRevisions"]
        assert revision["arn"].startswith(f"arn:aws:ecs:us-east-1:000000000000:service-revision/{fleet_cluster}/{name}/")
        assert revision["requestedTaskCount"] == 1
    chosen = unique("rebalance-off")
    off = ecs.create_service(cluster=fleet_cluster, serviceName=chosen, taskDefinition=family, desiredCount=0,
                             availabilityZoneRebalancing="DISABLED")["service"]
    assert off["availabilityZoneRebalancing"] == "DISABLED"
    arn = created["serviceArn"]
    assert arn in ecs.list_services(cluster=fleet_cluster, resourceManagementType="CUSTOMER")["serviceArns"]
    assert ecs.list_services(cluster=fleet_cluster, resourceManagementType="ECS")["serviceArns"] == []


def test_an_awsvpc_service_needs_a_network_configuration(server, fleet_cluster):
    ecs = server.ecs
    family = definition(ecs, unique("vpc"), networkMode="awsvpc")
    with pytest.raises(ClientError) as caught:
        ecs.create_service(cluster=fleet_cluster, serviceName=unique("vpc-svc"), taskDefinition=family,
                           desiredCount=1)
    assert error_of(caught) == (
        "InvalidParameterException",
        "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
    )


def test_efs_volumes_are_kept_with_their_root_and_not_run_without_their_mount(server, fleet_cluster):
    ecs = server.ecs
    family = unique("efs")
    registered = ecs.register_task_definition(
        family=family,
        volumes=[{"name": "shared", "efsVolumeConfiguration": {"fileSystemId": "fs-0123456789abcdef0"}},
                 {"name": "other", "efsVolumeConfiguration": {"fileSystemId": "fs-1", "rootDirectory": "/data",
                                                              "transitEncryption": "ENABLED"}}],
        containerDefinitions=[{"name": "app", "image": "sim/app:v1", "memory": 64,
                               "mountPoints": [{"sourceVolume": "shared", "containerPath": "/mnt"}]}],
    )["taskDefinition"]
    described = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    for definition_ in (registered, described):
        volumes = {v["name"]: v["efsVolumeConfiguration"] for v in definition_["volumes"]}
        assert volumes["shared"] == {"fileSystemId": "fs-0123456789abcdef0", "rootDirectory": "/"}
        assert volumes["other"]["rootDirectory"] == "/data"
    with pytest.raises(ClientError) as caught:
        ecs.run_task(cluster=fleet_cluster, taskDefinition=family)
    code, message = error_of(caught)
    assert code == "InvalidParameterException"
    assert message == (f"Task definition {registered['taskDefinitionArn']} uses an EFS volume ('shared'), "
                       "which this Flotilla server does not mount yet.")
    with pytest.raises(ClientError) as caught:
        ecs.create_service(cluster=fleet_cluster, serviceName=unique("efs-svc"), taskDefinition=family,
                           desiredCount=1)
    assert error_of(caught)[1] == message


def test_tasks_carry_their_cpu_architecture(server, fleet_cluster):
    ecs = server.ecs
    family = definition(ecs, unique("arch"))
    [task] = ecs.run_task(cluster=fleet_cluster, taskDefinition=family)["tasks"]
    instance = ecs.describe_container_instances(
        cluster=fleet_cluster, containerInstances=[task["containerInstanceArn"]])["containerInstances"][0]
    architecture = {a["name"]: a.get("value") for a in instance["attributes"]}["ecs.cpu-architecture"]
    assert task["attributes"] == [{"name": "ecs.cpu-architecture", "value": architecture}]
    [described] = ecs.describe_tasks(cluster=fleet_cluster, tasks=[task["taskArn"]])["tasks"]
    assert described["attributes"] == task["attributes"]
    ecs.stop_task(cluster=fleet_cluster, task=task["taskArn"])


def test_container_instances_report_the_agents_version(server, fleet_cluster):
    code, listed = server.cli("list-container-instances", "--cluster", fleet_cluster)
    assert code == 0, listed
    code, described = server.cli("describe-container-instances", "--cluster", fleet_cluster,
                                 "--container-instances", *listed["containerInstanceArns"])
    assert code == 0, described
    for instance in described["containerInstances"]:
        info = instance["versionInfo"]
        assert info["agentVersion"]
        assert len(info["agentHash"]) >= 7, info
        assert info["dockerVersion"].startswith("DockerVersion: "), info


def test_validation_errors_read_as_aws_writes_them(server, fleet_cluster):
    ecs = server.ecs
    family = definition(ecs, unique("enum"))
    with pytest.raises(ClientError) as caught:
        ecs.run_task(cluster=fleet_cluster, taskDefinition=family, launchType="Fargate")
    assert error_of(caught) == (
        "InvalidParameterException",
        "1 validation error detected: Value 'Fargate' at 'launchType' failed to satisfy constraint: "
        "Member must satisfy enum value set: [EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES]",
    )
    code, stderr = server.cli("register-task-definition", "--family", unique("enum"), "--container-definitions",
                              '[{"name":"a","image":"b","memory":64,"logConfiguration":{"logDriver":"cloudwatch"}}]')
    assert code != 0
    assert ("1 validation error detected: Value 'cloudwatch' at "
            "'containerDefinitions.1.member.logConfiguration.logDriver' failed to satisfy constraint: "
            "Member must satisfy enum value set: [json-file, syslog, journald, gelf, fluentd, awslogs, splunk, "
            "awsfirelens]") in stderr
    with pytest.raises(ClientError) as caught:
        ecs.list_tags_for_resource(
            resourceArn=f"arn:aws:ecs:us-east-1:000000000000:service/{fleet_cluster}/{unique('none')}")
    assert error_of(caught)[0] == "InvalidParameterException"
