"""Containers that log with the awslogs driver: their stdout and stderr reach
Flotilla's CloudWatch Logs store, read back with the AWS CLI (`aws logs
get-log-events`, `aws logs tail`) and boto3. On real Docker with one agent,
and on simulated hosts whose fake containers print numbered lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from types import SimpleNamespace

import pytest

from support import (
    AWS_CLI,
    CLI_TIMEOUT_S,
    TEST_IMAGE,
    describe_tasks,
    register_task_definition,
    run_tasks,
    strip_line_comments,
    unique,
    wait_tasks_status,
    wait_until,
)
from test_logs import aws_cli_v2

# How soon a printed line must be readable from the store.
SHIPPING_DELAY_MAX_S = 5.0
# Simulated hosts and the lines a second each of their containers prints.
SIM_INSTANCES = 20
SIM_LINES_PER_SECOND = 50
# RunTask's count limit.
RUN_TASK_COUNT_MAX = 10


def aws_logs(server, *args: str, cli: str | None = None) -> str:
    command = [cli or str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", "logs", *args]
    done = subprocess.run(command, env=server.cli_env(), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, cwd=server.home)
    assert done.returncode == 0, done.stderr
    return done.stdout


def all_events(logs, group: str, stream: str) -> list[dict]:
    """Every event of a stream, oldest first, following GetLogEvents' tokens
    until the token stops moving."""
    events, token = [], None
    while True:
        params = dict(logGroupName=group, logStreamName=stream, startFromHead=True)
        if token:
            params["nextToken"] = token
        page = logs.get_log_events(**params)
        events += page["events"]
        if page["nextForwardToken"] == token:
            return events
        token = page["nextForwardToken"]


def task_id(task: dict) -> str:
    return task["taskArn"].rsplit("/", 1)[-1]


def awslogs(group: str, **extra: str) -> dict:
    options = {"awslogs-group": group, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs"}
    options.update(extra)
    return {"logDriver": "awslogs", "options": options}


@pytest.fixture(scope="module")
def env(docker_ready, server, module_agent_fleet):
    cluster = unique(f"awslogs-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    agent = module_agent_fleet.start(server, cluster)
    return SimpleNamespace(server=server, ecs=server.ecs, logs=server.client("logs"), cluster=cluster, agent=agent)


@pytest.mark.docker
def test_seed_nginx_definition_logs_through_awslogs(env, seeds_dir):
    definition = json.loads(strip_line_comments((seeds_dir / "nginx-task-def.jsonc").read_text()))
    group = unique("/ecs/nginx")
    container = definition["containerDefinitions"][0]
    container["image"] = TEST_IMAGE
    container["command"] = ["sh", "-c", "echo started on stdout; echo trouble on stderr >&2; "
                            "trap 'exit 0' TERM; while true; do sleep 1; done"]
    container["portMappings"][0]["hostPort"] = 0
    container["logConfiguration"]["options"]["awslogs-group"] = group
    definition["family"] = unique("nginx-task-def")
    env.logs.create_log_group(logGroupName=group)
    arn = env.ecs.register_task_definition(**definition)["taskDefinition"]["taskDefinitionArn"]
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "RUNNING")
    running_at = time.monotonic()
    stream = f"ecs/nginx/{task_id(task)}"

    def both_lines():
        answer = json.loads(aws_logs(env.server, "get-log-events", "--log-group-name", group,
                                     "--log-stream-name", stream, "--start-from-head"))
        messages = [event["message"] for event in answer["events"]]
        return messages if {"started on stdout", "trouble on stderr"} <= set(messages) else None

    messages = wait_until(both_lines, SHIPPING_DELAY_MAX_S + 10, "the container's lines in its stream")
    assert time.monotonic() - running_at < SHIPPING_DELAY_MAX_S + 2, "lines took too long to arrive"
    assert len(messages) == 2, messages
    tail = aws_logs(env.server, "tail", group, "--since", "10m", cli=aws_cli_v2())
    assert f"{stream} started on stdout" in tail, tail
    assert f"{stream} trouble on stderr" in tail, tail
    env.ecs.stop_task(cluster=env.cluster, task=task["taskArn"])
    wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")


@pytest.mark.docker
def test_hundred_thousand_lines_printed_before_exit_are_all_shipped_in_order(env):
    group = unique("/ecs/burst")
    lines = 100_000
    arn = register_task_definition(env.ecs, unique("burst"), [{
        "name": "burst", "image": TEST_IMAGE, "memory": 64, "essential": True,
        "command": ["seq", "1", str(lines)],
        "logConfiguration": awslogs(group, **{"awslogs-create-group": "true"}),
    }])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED", timeout_s=180)
    assert task["containers"][0].get("exitCode") == 0, task
    # The stop is reported only once the last lines were shipped: no waiting here.
    events = all_events(env.logs, group, f"ecs/burst/{task_id(task)}")
    assert len(events) == lines
    assert [event["message"] for event in events] == [str(n) for n in range(1, lines + 1)]
    timestamps = [event["timestamp"] for event in events]
    assert timestamps == sorted(timestamps)


@pytest.mark.docker
def test_missing_group_without_create_group_stops_the_task_with_ecs_reason(env):
    group = unique("/ecs/absent")
    arn = register_task_definition(env.ecs, unique("absent"), [{
        "name": "app", "image": TEST_IMAGE, "memory": 64, "essential": True,
        "command": ["echo", "never shipped"],
        "logConfiguration": awslogs(group),
    }])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    reason = ("CannotStartContainerError: Error response from daemon: failed to initialize logging "
              "driver: failed to create Cloudwatch log stream: ResourceNotFoundException: "
              "The specified log group does not exist.")
    assert task["stoppedReason"] == reason, task
    assert task["containers"][0]["reason"] == reason, task
    assert env.logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []


def test_simulated_hosts_ship_every_line_of_their_fake_containers(server, agent_fleet):
    cluster = unique("awslogs-sim")
    server.ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster, "--simulate", str(SIM_INSTANCES))
    wait_until(lambda: len(server.ecs.list_container_instances(cluster=cluster)["containerInstanceArns"])
               == SIM_INSTANCES, 60, "simulated instances registered")
    group = unique("/ecs/sim")
    logs = server.client("logs")
    arn = register_task_definition(server.ecs, unique("talker"), [{
        "name": "talker", "image": f"sim/log:{SIM_LINES_PER_SECOND}", "memory": 64, "essential": True,
        "logConfiguration": awslogs(group, **{"awslogs-create-group": "true"}),
    }])
    arns = [task["taskArn"]
            for _ in range(SIM_INSTANCES // RUN_TASK_COUNT_MAX)
            for task in run_tasks(server.ecs, cluster, arn, count=RUN_TASK_COUNT_MAX,
                                  placementStrategy=[{"type": "spread", "field": "instanceId"}])]
    wait_tasks_status(server.ecs, cluster, arns, "RUNNING")
    streams = [f"ecs/talker/{arn.rsplit('/', 1)[-1]}" for arn in arns]

    def shipping():
        found = logs.describe_log_streams(logGroupName=group, limit=50)["logStreams"]
        live = [s for s in found if s.get("lastEventTimestamp")]
        return len(live) == SIM_INSTANCES or None

    wait_until(shipping, SHIPPING_DELAY_MAX_S + 5, "every task's lines in the store")
    time.sleep(2)
    for task_arn in arns:
        server.ecs.stop_task(cluster=cluster, task=task_arn)
    stopped = wait_tasks_status(server.ecs, cluster, arns, "STOPPED")
    for task, stream in zip(stopped, streams):
        messages = [event["message"] for event in all_events(logs, group, stream)]
        # Numbered from 0 with no gap and no repeat, and at least the lines
        # of the seconds the test waited.
        assert messages == [f"{messages[0].split(' ')[0]} line {n}" for n in range(len(messages))], stream
        assert len(messages) >= 2 * SIM_LINES_PER_SECOND, (stream, len(messages))
    assert {t["lastStatus"] for t in describe_tasks(server.ecs, cluster, arns)} == {"STOPPED"}
