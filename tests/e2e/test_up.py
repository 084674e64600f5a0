"""`flotilla up`: the control plane and a local agent in one process, the
way a user starts Flotilla on one machine. Its `default` cluster has this
machine as its one container instance, and a task runs as a real container.

Heavy (marked `docker`).
"""

from __future__ import annotations

import json

import pytest

from support import (
    HTTPD_COMMAND,
    TEST_IMAGE,
    TEST_PAGE,
    container_of,
    curl_until_ok,
    describe_tasks,
    port_is_free,
    remove_docker_leftovers,
    unique,
    wait_tasks_status,
    wait_until,
)

pytestmark = pytest.mark.docker

# `flotilla up` serves the task metadata endpoint on ECS's own port.
UP_METADATA_PORT = 51679


@pytest.fixture
def up(docker_ready, server_factory):
    if not port_is_free(UP_METADATA_PORT):
        pytest.fail(f"port {UP_METADATA_PORT} is taken: `flotilla up` serves task metadata there "
                    "(is another flotilla up or agent running on this machine?)")
    server = server_factory(command="up")
    identity_path = server.data_dir / "agent" / "identity.json"
    try:
        yield server
    finally:
        server.stop()
        if identity_path.exists():
            remove_docker_leftovers(instance_ids=[json.loads(identity_path.read_text())["instanceId"]])


def test_up_runs_a_task_on_this_machine(up, tmp_path):
    def local_instance():
        arns = up.ecs.list_container_instances(cluster="default")["containerInstanceArns"]
        if len(arns) != 1:
            return None
        [instance] = up.ecs.describe_container_instances(cluster="default", containerInstances=arns)[
            "containerInstances"]
        return instance if instance["agentConnected"] else None

    instance = wait_until(local_instance, 30, "the local agent to register in the default cluster")
    assert instance["status"] == "ACTIVE"

    family = unique("up-web")
    definition = tmp_path / "web.json"
    definition.write_text(json.dumps([{
        "name": "web", "image": TEST_IMAGE, "memory": 64, "command": HTTPD_COMMAND,
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
    }]))
    code, out = up.cli("register-task-definition", "--family", family,
                       "--container-definitions", f"file://{definition}")
    assert code == 0, out
    # No --cluster: the default cluster, as a new user would run it.
    code, ran = up.cli("run-task", "--task-definition", family)
    assert code == 0, ran
    assert ran["failures"] == []
    task_arn = ran["tasks"][0]["taskArn"]
    assert ran["tasks"][0]["containerInstanceArn"] == instance["containerInstanceArn"]
    code, out = up.cli("wait", "tasks-running", "--tasks", task_arn)
    assert code == 0, (out, describe_tasks(up.ecs, "default", [task_arn]))
    [task] = describe_tasks(up.ecs, "default", [task_arn])
    port = container_of(task, "web")["networkBindings"][0]["hostPort"]
    assert curl_until_ok(f"http://127.0.0.1:{port}/") == TEST_PAGE

    up.ecs.stop_task(cluster="default", task=task_arn)
    [task] = wait_tasks_status(up.ecs, "default", [task_arn], "STOPPED")
    assert task["stopCode"] == "UserInitiated"
