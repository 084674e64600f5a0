"""Operations that need no new part: DescribeServiceRevisions and
UpdateContainerAgent, through the AWS CLI; and every operation of
botocore's model that still answers UnsupportedFeatureException is the
README's list of them, and no other.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import botocore.session
import pytest

from support import register_task_definition, unique

FAST = {"Delay": 1, "MaxAttempts": 60}
README = Path(__file__).resolve().parents[2] / "README.md"
UNSUPPORTED_HEADING = "### Operations that still answer `UnsupportedFeatureException`"


@pytest.fixture(scope="module")
def fleet_cluster(server, module_agent_fleet):
    cluster = unique(f"ops-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    module_agent_fleet.start(server, cluster, "--simulate", "2")
    return cluster


def test_service_revisions_describe_what_each_deployment_runs(server, fleet_cluster):
    ecs = server.ecs
    family = unique("revisions")
    first = register_task_definition(ecs, family, [{"name": "app", "image": "sim/app:v1", "memory": 64}])
    second = register_task_definition(ecs, family, [{"name": "app", "image": "sim/app:v2", "memory": 64}])
    name = unique("revisions-svc")
    ecs.create_service(cluster=fleet_cluster, serviceName=name, taskDefinition=first, desiredCount=1)
    ecs.get_waiter("services_stable").wait(cluster=fleet_cluster, services=[name], WaiterConfig=FAST)
    ecs.update_service(cluster=fleet_cluster, service=name, taskDefinition=second)
    ecs.get_waiter("services_stable").wait(cluster=fleet_cluster, services=[name], WaiterConfig=FAST)

    code, listed = server.cli("list-service-deployments", "--cluster", fleet_cluster, "--service", name)
    assert code == 0, listed
    arns = [d["targetServiceRevisionArn"] for d in listed["serviceDeployments"]]
    assert len(arns) == 2
    missing = arns[0].rsplit("/", 1)[0] + "/1234567890123456789"
    code, described = server.cli("describe-service-revisions", "--service-revision-arns", *arns, missing)
    assert code == 0, described
    assert described["failures"] == [{"arn": missing, "reason": "MISSING"}]
    revisions = {r["serviceRevisionArn"]: r for r in described["serviceRevisions"]}
    assert set(revisions) == set(arns)
    images = sorted(r["containerImages"][0]["image"] for r in revisions.values())
    assert images == ["sim/app:v1", "sim/app:v2"]
    for revision in revisions.values():
        assert revision["serviceArn"].endswith(f"service/{fleet_cluster}/{name}")
        assert revision["clusterArn"].endswith(f"cluster/{fleet_cluster}")
        assert revision["launchType"] == "EC2"
        assert revision["containerImages"][0]["containerName"] == "app"
    newest = revisions[arns[0]]
    assert newest["taskDefinition"].endswith(f"{family}:2")
    [service] = ecs.describe_services(cluster=fleet_cluster, services=[name])["services"]
    assert [r["arn"] for r in service["currentServiceRevisions"]] == [arns[0]]


def test_update_container_agent_answers_as_ecs_does_for_a_current_agent(server, fleet_cluster):
    code, listed = server.cli("list-container-instances", "--cluster", fleet_cluster)
    assert code == 0, listed
    instance = listed["containerInstanceArns"][0]
    code, stderr = server.cli("update-container-agent", "--cluster", fleet_cluster, "--container-instance", instance)
    assert code != 0
    assert "NoUpdateAvailableException" in stderr, stderr
    assert "already running the latest version" in stderr
    code, stderr = server.cli("update-container-agent", "--cluster", fleet_cluster,
                              "--container-instance", "0123456789abcdef0123456789abcdef")
    assert code != 0 and "InvalidParameterException" in stderr and "was not found" in stderr


def readme_unsupported() -> set[str]:
    text = README.read_text()
    section = text.split(UNSUPPORTED_HEADING, 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| operations")]
    return {name.strip() for row in rows for name in row.split("|")[1].split(",")}


def test_the_readme_lists_exactly_the_operations_still_unsupported(server):
    model = botocore.session.get_session().get_service_model("ecs")
    unsupported = set()
    for operation in model.operation_names:
        answer = server.signed_request(operation, "{}")
        if answer.error_code == "UnsupportedFeatureException" and re.fullmatch(
                rf"{operation} is not supported by this Flotilla server yet", answer.message):
            unsupported.add(operation)
    listed = readme_unsupported()
    assert unsupported == listed, {"unlisted": sorted(unsupported - listed), "answered": sorted(listed - unsupported)}
    assert "DescribeServiceRevisions" not in unsupported and "UpdateContainerAgent" not in unsupported
    assert unsupported, "later parts remain"
