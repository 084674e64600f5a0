"""Secrets in containers, on real Docker: a Secrets Manager secret (whole,
and one JSON key of it) and a SecureString parameter reach a container's
environment; the container prints only their SHA-256, and the test checks
that the values themselves appear nowhere else: not in DescribeTasks or
DescribeTaskDefinition, not in the task metadata endpoint, not in the
server's or the agent's logs, data directories or /metrics. A secret, JSON
key or parameter that is missing stops the task with ECS's reason."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import uuid
from types import SimpleNamespace

import pytest

from support import (
    TEST_IMAGE,
    container_of,
    docker_logs,
    register_task_definition,
    run_tasks,
    unique,
    wait_tasks_status,
)

STOP_REASON = "ResourceInitializationError: unable to pull secrets or registry auth: "


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def env(docker_ready, server, module_agent_fleet):
    cluster = unique(f"secrets-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    agent = module_agent_fleet.start(server, cluster)
    return SimpleNamespace(server=server, ecs=server.ecs, cluster=cluster, agent=agent,
                           sm=server.client("secretsmanager"), ssm=server.client("ssm"))


def printing_container(variables: list[str], secrets: list[dict]) -> dict:
    """A container that prints `NAME=sha256(value)` for each variable, then
    what the task metadata endpoint tells it."""
    script = "".join(
        f'echo "{name}=$(printf %s "${name}" | sha256sum | cut -d" " -f1)"; ' for name in variables)
    script += ('echo "task=$(wget -qO- "$ECS_CONTAINER_METADATA_URI_V4/task")"; '
               'echo "container=$(wget -qO- "$ECS_CONTAINER_METADATA_URI_V4")"')
    return {"name": "app", "image": TEST_IMAGE, "memory": 32, "essential": True,
            "command": ["sh", "-c", script], "secrets": secrets}


def files_containing(roots, needles: list[bytes]) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {needle[:6]!r}..." for needle in needles if needle in data]
    return found


@pytest.mark.docker
def test_secret_and_secure_string_reach_the_environment_and_nothing_else(env):
    password = "pw-" + uuid.uuid4().hex
    whole = json.dumps({"password": password, "user": "app"})
    token = "tok-" + uuid.uuid4().hex
    secret = env.sm.create_secret(Name=unique("e2e/db"), SecretString=whole)
    parameter = "/" + unique("e2e") + "/api/token"
    env.ssm.put_parameter(Name=parameter, Type="SecureString", Value=token)
    family = unique("secrets")
    arn = register_task_definition(env.ecs, family, [printing_container(
        ["DB_PASSWORD", "WHOLE", "API_TOKEN"],
        [{"name": "DB_PASSWORD", "valueFrom": f"{secret['ARN']}:password::"},
         {"name": "WHOLE", "valueFrom": secret["ARN"]},
         {"name": "API_TOKEN", "valueFrom": parameter}])])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    app = container_of(task, "app")
    logs = docker_logs(app["runtimeId"])
    assert app["exitCode"] == 0, (task.get("stoppedReason"), logs)
    printed = dict(line.split("=", 1) for line in logs.splitlines() if "=" in line)
    assert printed["DB_PASSWORD"] == sha256(password)
    assert printed["WHOLE"] == sha256(whole)
    assert printed["API_TOKEN"] == sha256(token)
    values = [password, token]
    # The metadata endpoint's answers (printed by the container) hold no value.
    assert json.loads(printed["task"])["TaskARN"] == task["taskArn"]
    for value in values:
        assert value not in logs
    # Nor do the API's descriptions of the task and its definition.
    described = json.dumps(env.ecs.describe_tasks(cluster=env.cluster, tasks=[task["taskArn"]]), default=str)
    definition = json.dumps(env.ecs.describe_task_definition(taskDefinition=arn), default=str)
    assert secret["ARN"] in definition
    for value in values:
        assert value not in described and value not in definition
    # Nor /metrics, the logs and the data directories of server and agent.
    with urllib.request.urlopen(f"{env.server.endpoint}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    for value in values:
        assert value not in metrics
        assert value not in env.server.stderr_path.read_text(errors="replace")
        assert value not in env.agent.stderr_path.read_text(errors="replace")
    needles = [value.encode() for value in values]
    assert files_containing([env.server.data_dir, env.agent.data_dir], needles) == []


@pytest.mark.docker
@pytest.mark.parametrize("case", ["missing-secret", "missing-json-key", "missing-parameter"])
def test_a_missing_secret_stops_the_task_with_ecs_reason(env, case):
    secret = env.sm.create_secret(Name=unique("e2e/present"), SecretString='{"a": "1"}')
    value_from, expected = {
        "missing-secret": (
            f"arn:aws:secretsmanager:{env.server.region}:{env.server.account_id}:secret:e2e/absent-AbCdEf",
            "ResourceNotFoundException"),
        "missing-json-key": (f"{secret['ARN']}:nokey::", "did not contain json key nokey"),
        "missing-parameter": ("/e2e/absent/parameter", "invalid parameters: /e2e/absent/parameter"),
    }[case]
    arn = register_task_definition(env.ecs, unique("secrets-missing"), [printing_container(
        ["S"], [{"name": "S", "valueFrom": value_from}])])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    reason = task.get("stoppedReason", "")
    assert reason.startswith(STOP_REASON), reason
    assert expected in reason, reason
    assert container_of(task, "app").get("exitCode") is None


@pytest.mark.parametrize("present", [True, False])
def test_simulated_hosts_resolve_secrets_too(server, agent_fleet, present):
    """Simulated hosts read secrets from the control plane as real ones do:
    a task whose secret exists runs, one whose secret is missing stops with
    ECS's reason."""
    cluster = unique("secrets-sim")
    server.ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster, "--simulate", "2")
    name = "/" + unique("e2e-sim") + "/token"
    if present:
        server.client("ssm").put_parameter(Name=name, Type="SecureString", Value="sim-" + uuid.uuid4().hex)
    arn = register_task_definition(server.ecs, unique("secrets-sim"), [{
        "name": "app", "image": "sim/app", "memory": 32, "essential": True,
        "secrets": [{"name": "TOKEN", "valueFrom": name}]}])
    [task] = run_tasks(server.ecs, cluster, arn)
    if present:
        wait_tasks_status(server.ecs, cluster, [task["taskArn"]], "RUNNING")
    else:
        [task] = wait_tasks_status(server.ecs, cluster, [task["taskArn"]], "STOPPED")
        assert task["stoppedReason"].startswith(STOP_REASON), task["stoppedReason"]
        assert f"invalid parameters: {name}" in task["stoppedReason"]


@pytest.mark.parametrize("present", [True, False])
def test_secret_log_options_are_read_then_refused_by_name(server, agent_fleet, present):
    """logConfiguration.secretOptions are read like secrets (a missing one
    stops the task with ECS's reason); no log driver of the agent takes
    options yet, so a task whose options were read stops with a reason
    naming them instead of running without them."""
    cluster = unique("secret-options")
    server.ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster, "--simulate", "1")
    name = "/" + unique("e2e-opt") + "/token"
    if present:
        server.client("ssm").put_parameter(Name=name, Type="SecureString", Value="opt-" + uuid.uuid4().hex)
    arn = register_task_definition(server.ecs, unique("secret-options"), [{
        "name": "app", "image": "sim/app", "memory": 32, "essential": True,
        "logConfiguration": {"logDriver": "json-file",
                             "secretOptions": [{"name": "token", "valueFrom": name}]}}])
    [task] = run_tasks(server.ecs, cluster, arn)
    [task] = wait_tasks_status(server.ecs, cluster, [task["taskArn"]], "STOPPED")
    reason = task["stoppedReason"]
    if present:
        assert "logConfiguration.secretOptions" in reason, reason
    else:
        assert reason.startswith(STOP_REASON) and f"invalid parameters: {name}" in reason, reason
