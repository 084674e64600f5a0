"""Tasks and services whose image lives in Flotilla's registry: pushed with
the Docker CLI, removed from the engine, then run by `flotilla up`'s local
agent, which gets a registry token from the control plane and pulls with
it; the user does nothing about credentials.

Heavy (marked `docker`).
"""

from __future__ import annotations

import json

import pytest

from ecr_support import DockerClient, build_image, ecr_cli, registry_host
from support import (
    container_of,
    describe_tasks,
    docker,
    docker_logs,
    port_is_free,
    remove_docker_leftovers,
    unique,
    wait_tasks_status,
    wait_until,
)

pytestmark = pytest.mark.docker

UP_METADATA_PORT = 51679


@pytest.fixture
def up(docker_ready, server_factory):
    if not port_is_free(UP_METADATA_PORT):
        pytest.fail(f"port {UP_METADATA_PORT} is taken: `flotilla up` serves task metadata there")
    server = server_factory(command="up")
    identity_path = server.data_dir / "agent" / "identity.json"
    try:
        yield server
    finally:
        server.stop()
        if identity_path.exists():
            remove_docker_leftovers(instance_ids=[json.loads(identity_path.read_text())["instanceId"]])


def test_a_task_runs_an_image_pulled_from_the_registry(up, tmp_path):
    name = unique("tasks/app")
    code, out = ecr_cli(up, "create-repository", "--repository-name", name)
    assert code == 0, out
    image = f"{out['repository']['repositoryUri']}:v1"
    assert image.startswith(registry_host(up))
    marker = unique("from-the-registry")
    build_image(image, marker)
    client = DockerClient(tmp_path / "docker")
    client.login(up)
    client.run("push", image)
    # Only the registry has it now.
    docker("rmi", "-f", image)
    assert docker("image", "inspect", image, check=False).returncode != 0

    wait_until(lambda: up.ecs.list_container_instances(cluster="default")["containerInstanceArns"], 30,
               "the local agent to register")
    family = unique("registry-app")
    up.ecs.register_task_definition(family=family, containerDefinitions=[{
        "name": "app", "image": image, "memory": 32, "essential": True,
        "command": ["sh", "-c", "cat /marker; sleep 30"],
    }])
    try:
        [task] = up.ecs.run_task(cluster="default", taskDefinition=family)["tasks"]
        [task] = wait_tasks_status(up.ecs, "default", [task["taskArn"]], "RUNNING")
        container_id = container_of(task, "app")["runtimeId"]
        wait_until(lambda: marker in docker_logs(container_id), 10, "the container to print its marker")
        assert docker("image", "inspect", image, check=False).returncode == 0, "the agent pulled it"
        pulled = up.client("ecr").describe_images(repositoryName=name)["imageDetails"][0]
        wait_until(lambda: up.client("ecr").describe_images(repositoryName=name)["imageDetails"][0].get(
            "lastRecordedPullTime"), 10, "the agent's pull to be recorded")
        assert pulled["imageTags"] == ["v1"]
        up.ecs.stop_task(cluster="default", task=task["taskArn"])
        wait_tasks_status(up.ecs, "default", [task["taskArn"]], "STOPPED")
    finally:
        docker("rmi", "-f", image, check=False)


def test_a_service_runs_an_image_pulled_from_the_registry(up, tmp_path):
    name = unique("services/app")
    code, out = ecr_cli(up, "create-repository", "--repository-name", name)
    assert code == 0, out
    image = f"{out['repository']['repositoryUri']}:v1"
    marker = unique("service-from-the-registry")
    build_image(image, marker)
    client = DockerClient(tmp_path / "docker")
    client.login(up)
    client.run("push", image)
    docker("rmi", "-f", image)

    wait_until(lambda: up.ecs.list_container_instances(cluster="default")["containerInstanceArns"], 30,
               "the local agent to register")
    family = unique("registry-service")
    up.ecs.register_task_definition(family=family, containerDefinitions=[{
        "name": "app", "image": image, "memory": 32, "essential": True,
        "command": ["sh", "-c", "cat /marker; sleep 300"],
    }])
    service = unique("from-registry")
    try:
        up.ecs.create_service(cluster="default", serviceName=service, taskDefinition=family, desiredCount=2)
        up.ecs.get_waiter("services_stable").wait(
            cluster="default", services=[service], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
        arns = up.ecs.list_tasks(cluster="default", serviceName=service)["taskArns"]
        assert len(arns) == 2
        for task in describe_tasks(up.ecs, "default", arns):
            assert task["lastStatus"] == "RUNNING"
            container_id = container_of(task, "app")["runtimeId"]
            wait_until(lambda: marker in docker_logs(container_id), 10, "the container to print its marker")
    finally:
        up.ecs.delete_service(cluster="default", service=service, force=True)
        up.ecs.get_waiter("services_inactive").wait(
            cluster="default", services=[service], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
        docker("rmi", "-f", image, check=False)


def test_a_task_whose_registry_image_does_not_exist_stops_with_a_pull_error(up):
    name = unique("tasks/missing")
    ecr_cli(up, "create-repository", "--repository-name", name)
    image = f"{registry_host(up)}/{name}:nope"
    wait_until(lambda: up.ecs.list_container_instances(cluster="default")["containerInstanceArns"], 30,
               "the local agent to register")
    family = unique("registry-missing")
    up.ecs.register_task_definition(family=family, containerDefinitions=[{"name": "app", "image": image, "memory": 32}])
    [task] = up.ecs.run_task(cluster="default", taskDefinition=family)["tasks"]
    [stopped] = wait_tasks_status(up.ecs, "default", [task["taskArn"]], "STOPPED")
    reason = stopped.get("stoppedReason", "") + container_of(stopped, "app").get("reason", "")
    assert "CannotPullContainerError" in reason, describe_tasks(up.ecs, "default", [task["taskArn"]])
    assert "manifest unknown" in reason.lower() or "not found" in reason.lower(), reason
