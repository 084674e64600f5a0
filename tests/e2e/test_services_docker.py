"""Services on real Docker: an HTTP container rolled from one image tag to
another, every task's page reachable before and after, checked with curl at
the host ports the API reports; and rolling deployments of busybox
revisions that fail (a container that exits 1 a second after it starts, one
whose command cannot start, one that fails its health checks), each ending
FAILED and rolled back with the old tasks never all stopped.

Heavy (marked `docker`).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
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


# Longer than the crashing container lives (1 s) with room for the agent's
# report of its exit on a busy engine.
STABILIZATION_MS = 8000
# (command, health check) of each failing revision, and what its events say of a failed task.
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
FAILING = {
    "crash-after-running": (["sh", "-c", "sleep 1; exit 1"], None,
                            ("stopped: Essential container in task exited", "(exit code 1).")),
    "crash-before-running": (["/no/such/command"], None, ("failed to start: CannotStartContainerError",)),
    "failing-health-checks": (SLEEPER, {"command": ["CMD-SHELL", "exit 1"], "interval": 5, "timeout": 2,
                                        "retries": 1}, ("failed container health checks.",)),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_a_failing_revision_is_rolled_back_on_docker(server_factory, agent_fleet, docker_ready, case):
    command, check, told = FAILING[case]
    server = server_factory(extra_args=("--service-stabilization-ms", str(STABILIZATION_MS)))
    ecs = server.ecs
    cluster = unique(f"svc-fail-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster)
    family = unique("svc-fail")
    good_check = {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1} if check else None

    def revision(command, health_check) -> str:
        container = {"name": "app", "image": TEST_IMAGE, "memory": 32, "essential": True, "command": command}
        if health_check:
            container["healthCheck"] = health_check
        return register_task_definition(ecs, family, [container])

    good = revision(SLEEPER, good_check)
    name = unique("fail")
    first = ecs.create_service(
        cluster=cluster, serviceName=name, taskDefinition=good, desiredCount=2,
        deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200,
                                 "deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    )["service"]["deployments"][0]["id"]

    def completed():
        service = ecs.describe_services(cluster=cluster, services=[name])["services"][0]
        [primary, *others] = service["deployments"]
        done = not others and primary["rolloutState"] == "COMPLETED" and service["runningCount"] == 2
        return service if done else None

    wait_until(completed, 90, "the first deployment to complete")
    bad = revision(command, check)
    failing = ecs.update_service(cluster=cluster, service=name, taskDefinition=bad)["service"]["deployments"][0]["id"]
    deadline = time.monotonic() + 180
    while True:
        service = ecs.describe_services(cluster=cluster, services=[name])["services"][0]
        ours = [d for d in service["deployments"] if d["id"] == failing]
        assert not ours or ours[0]["rolloutState"] != "COMPLETED", service["deployments"]
        arns = ecs.list_tasks(cluster=cluster, serviceName=name)["taskArns"]
        tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
        old_running = sum(1 for t in tasks if t["taskDefinitionArn"] == good
                          and t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING")
        assert old_running >= 1, f"every task of the old revision was stopped: {tasks}"
        if not ours and completed():
            break
        assert time.monotonic() < deadline, f"no rollback: {service['deployments']}\n{service['events'][:10]}"
        time.sleep(0.5)
    service = completed()
    assert service["taskDefinition"] == good and service["deployments"][0]["id"] == first
    messages = [e["message"] for e in service["events"]]
    assert any(m.endswith("deployment failed: tasks failed to start.") for m in messages), messages
    assert any(m.startswith(f"(service {name}) (task ") and all(part in m for part in told)
               for m in messages), messages
    listed = ecs.list_service_deployments(cluster=cluster, service=name)["serviceDeployments"]
    assert Counter(d["status"] for d in listed)["ROLLBACK_SUCCESSFUL"] == 1, listed
    ecs.delete_service(cluster=cluster, service=name, force=True)
    ecs.get_waiter("services_inactive").wait(cluster=cluster, services=[name], WaiterConfig=FAST)


def test_a_deleted_service_is_inactive_once_its_tasks_are_stopping(server, agent_fleet, docker_ready):
    """ECS moves a deleted service from DRAINING to INACTIVE once every task
    is stopping or stopped, not when the last container is gone: here one
    that ignores SIGTERM and is given a minute to stop."""
    ecs = server.ecs
    cluster = unique(f"svc-gone-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster)
    family = unique("svc-gone")
    # A shell as PID 1 ignores SIGTERM; the agent kills it after stopTimeout.
    stubborn = register_task_definition(ecs, family, [{
        "name": "app", "image": TEST_IMAGE, "memory": 32, "essential": True,
        "command": ["sh", "-c", "sleep 3600"], "stopTimeout": 60,
    }])
    name = unique("gone")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=stubborn, desiredCount=1)
    wait_until(lambda: ecs.describe_services(cluster=cluster, services=[name])["services"][0]["runningCount"] == 1,
               90, "the task to run")
    [task_arn] = ecs.list_tasks(cluster=cluster, serviceName=name)["taskArns"]
    ecs.delete_service(cluster=cluster, service=name, force=True)
    wait_until(lambda: ecs.describe_services(cluster=cluster, services=[name])["services"][0]["status"] == "INACTIVE",
               10, "the service to be INACTIVE")
    [task] = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"]
    assert task["desiredStatus"] == "STOPPED" and task["lastStatus"] != "STOPPED", task
    code, out = server.cli("wait", "services-inactive", "--cluster", cluster, "--services", name)
    assert code == 0, out
