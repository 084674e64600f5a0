"""Revisions registered by tools that copy a described task definition.

Deployment tools take DescribeTaskDefinition's output, change the image,
keep every member RegisterTaskDefinition accepts and register the result,
often with `"taskRoleArn": ""` and `"executionRoleArn": ""`. ECS treats
those empty strings as absent; so must Flotilla, or the revision requires a
task IAM role no instance has and never runs. Empty optional strings of
CreateService, UpdateService and RunTask mean absent too.
"""

from __future__ import annotations

import copy
import json
import os

import botocore.session

from support import register_task_definition, unique

FAST = {"Delay": 1, "MaxAttempts": 60}


def accepted_members() -> set[str]:
    """RegisterTaskDefinition's input members, from botocore's model."""
    model = botocore.session.get_session().get_service_model("ecs")
    return set(model.operation_model("RegisterTaskDefinition").input_shape.members)


def copied_with_image(described: dict, tags: list[dict], image: str) -> dict:
    """What deployment tools send: the described revision with every member
    RegisterTaskDefinition accepts, the image changed, empty roles."""
    members = accepted_members()
    copied = {key: value for key, value in copy.deepcopy(described).items() if key in members}
    copied["containerDefinitions"][0]["image"] = image
    copied["taskRoleArn"] = ""
    copied["executionRoleArn"] = ""
    if tags:
        copied["tags"] = tags
    return copied


def test_a_described_revision_registered_again_with_a_new_image_deploys(server, agent_fleet, tmp_path):
    ecs = server.ecs
    cluster = unique(f"copy-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster, "--simulate", "2")
    family = unique("copied")
    register_task_definition(ecs, family, [
        {"name": "app", "image": "sim/app:v1", "memory": 128, "cpu": 64, "essential": True,
         "portMappings": [{"containerPort": 8080}],
         "environment": [{"name": "MODE", "value": "blue"}],
         "healthCheck": {"command": ["CMD-SHELL", "true"]}},
    ], volumes=[{"name": "scratch", "host": {}}], tags=[{"key": "team", "value": "web"}])
    answer = ecs.describe_task_definition(taskDefinition=family, include=["TAGS"])
    described = answer["taskDefinition"]
    assert "taskRoleArn" not in described

    # boto3, as a deployment script does it.
    copied = copied_with_image(described, answer["tags"], "sim/app:v2")
    dropped = set(described) - set(copied)
    assert dropped <= {"taskDefinitionArn", "revision", "status", "requiresAttributes", "compatibilities",
                       "registeredAt", "registeredBy", "deregisteredAt"}, dropped
    second = ecs.register_task_definition(**copied)["taskDefinition"]
    assert second["revision"] == 2
    assert "taskRoleArn" not in second and "executionRoleArn" not in second
    required = {a["name"] for a in second["requiresAttributes"]}
    assert not any("task-iam-role" in name or "execution-role" in name for name in required), required
    assert second["containerDefinitions"][0]["image"] == "sim/app:v2"
    for member in ("containerDefinitions", "volumes", "placementConstraints"):
        expected = copy.deepcopy(described[member])
        if member == "containerDefinitions":
            expected[0]["image"] = "sim/app:v2"
        assert second[member] == expected, member

    # The AWS CLI with the same JSON, as `--cli-input-json` users do.
    copied_file = tmp_path / "copied.json"
    copied_file.write_text(json.dumps(copied_with_image(second, answer["tags"], "sim/app:v3")))
    code, third = server.cli("register-task-definition", "--cli-input-json", f"file://{copied_file}")
    assert code == 0, third
    assert third["taskDefinition"]["revision"] == 3
    assert "taskRoleArn" not in third["taskDefinition"]

    # Deployed as a service, with the empty strings tools send there too.
    name = unique("copied-svc")
    created = ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=f"{family}:2",
                                 desiredCount=2, role="", platformVersion="", clientToken="")["service"]
    assert "roleArn" not in created and "platformVersion" not in created
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
    [service] = ecs.describe_services(cluster=cluster, services=[name])["services"]
    assert service["runningCount"] == 2
    # services-stable waits for one deployment at its desired count; the
    # deployment completes once that has held for the stabilization period.
    [deployment] = service["deployments"]
    assert deployment["status"] == "PRIMARY" and deployment["taskDefinition"].endswith(f"{family}:2")
    assert deployment["rolloutState"] in ("IN_PROGRESS", "COMPLETED"), deployment

    # And rolled to the CLI's revision the same way.
    ecs.update_service(cluster=cluster, service=name, taskDefinition=f"{family}:3", platformVersion="")
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
    [service] = ecs.describe_services(cluster=cluster, services=[name])["services"]
    assert service["taskDefinition"].endswith(f"{family}:3")
    arns = ecs.list_tasks(cluster=cluster, serviceName=name)["taskArns"]
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    assert len(tasks) == 2
    assert {t["lastStatus"] for t in tasks} == {"RUNNING"}
    assert {t["taskDefinitionArn"].rsplit("/", 1)[1] for t in tasks} == {f"{family}:3"}


def test_empty_strings_in_run_task_mean_absent(server, agent_fleet):
    ecs = server.ecs
    cluster = unique(f"copy-run-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster, "--simulate", "1")
    family = unique("runs")
    register_task_definition(ecs, family, [
        {"name": "app", "image": "sim/app:v1", "memory": 64, "essential": True},
    ], taskRoleArn="", executionRoleArn="")
    answer = ecs.run_task(cluster=cluster, taskDefinition=family, group="", startedBy="", referenceId="",
                          platformVersion="",
                          overrides={"taskRoleArn": "", "executionRoleArn": "", "cpu": "", "memory": ""})
    assert answer["failures"] == []
    [task] = answer["tasks"]
    assert task["group"] == f"family:{family}"
    assert "startedBy" not in task
    assert "taskRoleArn" not in task["overrides"]
    ecs.get_waiter("tasks_running").wait(cluster=cluster, tasks=[task["taskArn"]], WaiterConfig=FAST)
