"""A service on real Docker: an HTTP container rolled from one image tag to
another, every task's page reachable before and after, checked with curl at
the host ports the API reports.

Heavy (marked `docker`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from support import (
    HTTPD_COMMAND,
    TEST_IMAGE,
    container_of,
    curl_until_ok,
    docker,
    register_task_definition,
    unique,
    wait_until,
)

pytestmark = pytest.mark.docker

FAST = {"Delay": 1, "MaxAttempts": 90}


@pytest.fixture
def page_images(docker_ready):
    """Two tags of one local image, each serving its own page; removed afterwards."""
    repository = f"flotilla-test/service-web-{os.getpid()}"
    tags = {}
    for version in ("v1", "v2"):
        with tempfile.TemporaryDirectory() as context:
            Path(context, "index.html").write_text(f"page {version}\n")
            Path(context, "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nCOPY index.html /www/index.html\n")
            tag = f"{repository}:{version}"
            docker("build", "--quiet", "--tag", tag, context)
            tags[version] = tag
    yield tags
    for tag in tags.values():
        docker("rmi", "--force", tag, check=False)


def pages(ecs, cluster: str, name: str) -> dict[str, str]:
    arns = ecs.list_tasks(cluster=cluster, serviceName=name)["taskArns"]
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    answers = {}
    for task in tasks:
        [binding] = container_of(task, "web")["networkBindings"]
        answers[task["taskArn"]] = curl_until_ok(f"http://127.0.0.1:{binding['hostPort']}/")
    return answers


def test_http_service_rolls_from_one_image_tag_to_another(server, agent_fleet, page_images):
    ecs = server.ecs
    cluster = unique(f"svc-docker-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster)
    family = unique("svc-web")

    def revision(image: str) -> str:
        return register_task_definition(ecs, family, [{
            "name": "web", "image": image, "memory": 64, "essential": True, "command": HTTPD_COMMAND,
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
        }])

    v1 = revision(page_images["v1"])
    name = unique("web")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=v1, desiredCount=2,
                       deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200})
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
    before = pages(ecs, cluster, name)
    assert len(before) == 2 and set(before.values()) == {"page v1\n"}, before

    v2 = revision(page_images["v2"])
    ecs.update_service(cluster=cluster, service=name, taskDefinition=v2)
    wait_until(lambda: len(ecs.describe_services(cluster=cluster, services=[name])["services"][0]["deployments"]) == 1
               and ecs.describe_services(cluster=cluster, services=[name])["services"][0]["deployments"][0]
               ["rolloutState"] == "COMPLETED", 90, "the deployment to complete")
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
    after = pages(ecs, cluster, name)
    assert len(after) == 2 and set(after.values()) == {"page v2\n"}, after
    assert not set(after) & set(before), "every task was replaced"
    service = ecs.describe_services(cluster=cluster, services=[name])["services"][0]
    assert service["taskDefinition"] == v2
    messages = [e["message"] for e in service["events"]]
    assert any(m.endswith("deployment completed.") for m in messages), messages
    ecs.delete_service(cluster=cluster, service=name, force=True)
    ecs.get_waiter("services_inactive").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
