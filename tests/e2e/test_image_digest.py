"""A task's containers report the digest of the image they run, as ECS's
DescribeTasks does (`containers[].imageDigest`), for an image pulled from
Flotilla's registry by `flotilla up`'s local agent.

Heavy (marked `docker`).
"""

from __future__ import annotations

import pytest

from ecr_support import DockerClient, build_image, ecr_cli
from support import docker, free_port, unique, wait_until

pytestmark = pytest.mark.docker


@pytest.fixture
def up(docker_ready, server_factory):
    return server_factory(command="up", extra_args=("--agent-metadata-port", str(free_port())))


def push_and_forget(up, tmp_path, name: str) -> tuple[str, str]:
    """Pushes a fresh image to repository `name` and removes it from the
    engine, so that only the registry has it; (image reference, digest)."""
    code, out = ecr_cli(up, "create-repository", "--repository-name", name)
    assert code == 0, out
    image = f"{out['repository']['repositoryUri']}:v1"
    build_image(image, unique("digest-marker"))
    client = DockerClient(tmp_path / "docker")
    client.login(up)
    client.run("push", image)
    docker("rmi", "-f", image)
    code, described = ecr_cli(up, "describe-images", "--repository-name", name)
    assert code == 0, described
    [detail] = described["imageDetails"]
    return image, detail["imageDigest"]


def test_describe_tasks_reports_the_digest_of_an_image_pulled_from_the_registry(up, tmp_path):
    name = unique("digests/app")
    image, digest = push_and_forget(up, tmp_path, name)
    wait_until(lambda: up.ecs.list_container_instances(cluster="default")["containerInstanceArns"], 30,
               "the local agent to register")
    try:
        task = run_until_running(up, unique("digest-app"), image)
        [container] = task["containers"]
        assert container["image"] == image
        assert container["imageDigest"] == digest, container
        # The engine's copy, pulled by the agent, carries the same digest.
        repo_digests = docker("image", "inspect", "--format", "{{json .RepoDigests}}", image).stdout.decode()
        assert digest in repo_digests
        code, out = up.cli("stop-task", "--task", task["taskArn"])
        assert code == 0, out
        code, out = up.cli("wait", "tasks-stopped", "--tasks", task["taskArn"])
        assert code == 0, out
        code, described = up.cli("describe-tasks", "--tasks", task["taskArn"])
        assert code == 0, described
        assert described["tasks"][0]["containers"][0]["imageDigest"] == digest
    finally:
        docker("rmi", "-f", image, check=False)


def run_until_running(up, family: str, image: str) -> dict:
    code, out = up.cli("register-task-definition", "--family", family, "--container-definitions",
                       f'[{{"name": "app", "image": "{image}", "memory": 32, "essential": true, '
                       f'"command": ["sh", "-c", "trap \\"exit 0\\" TERM; sleep 300 & wait"]}}]')
    assert code == 0, out
    code, ran = up.cli("run-task", "--task-definition", family)
    assert code == 0, ran
    task_arn = ran["tasks"][0]["taskArn"]
    code, out = up.cli("wait", "tasks-running", "--tasks", task_arn)
    assert code == 0, out
    code, described = up.cli("describe-tasks", "--tasks", task_arn)
    assert code == 0, described
    return described["tasks"][0]


def test_the_digest_is_reported_for_an_image_the_host_first_ran_under_a_local_name(up, tmp_path):
    """As a user does: run a locally built image, then tag it for the
    registry, push it, and run it from there."""
    local = f"flotilla-e2e/digest-local:{unique('v')}"
    build_image(local, unique("local-marker"))
    name = unique("digests/local")
    code, out = ecr_cli(up, "create-repository", "--repository-name", name)
    assert code == 0, out
    pushed = f"{out['repository']['repositoryUri']}:v1"
    try:
        wait_until(lambda: up.ecs.list_container_instances(cluster="default")["containerInstanceArns"], 30,
                   "the local agent to register")
        first = run_until_running(up, unique("digest-local"), local)
        # Built here, never pushed or pulled: there is no registry digest.
        assert first["containers"][0].get("imageDigest") is None, first["containers"][0]

        docker("tag", local, pushed)
        client = DockerClient(tmp_path / "docker")
        client.login(up)
        client.run("push", pushed)
        code, described = ecr_cli(up, "describe-images", "--repository-name", name)
        assert code == 0, described
        digest = described["imageDetails"][0]["imageDigest"]

        second = run_until_running(up, unique("digest-pushed"), pushed)
        assert second["containers"][0]["imageDigest"] == digest, second["containers"][0]
        for task in (first, second):
            up.cli("stop-task", "--task", task["taskArn"])
    finally:
        docker("rmi", "-f", local, pushed, check=False)
