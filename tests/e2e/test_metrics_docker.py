"""A real Docker task's CPU as CloudWatch reports it: a busybox container
burning one CPU, reserving one vCPU (1,024 units), sampled by a real
agent, published as AWS/ECS CPUUtilization, read with the AWS CLI's
`cloudwatch get-metric-statistics`, and compared with `docker stats`.

Heavy (marked `docker`). The server runs its metrics clock 6 times faster
(`--metrics-time-scale 6`: a minute's publication every 10 s).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess

import pytest

from support import (
    AWS_CLI,
    CLI_TIMEOUT_S,
    TEST_IMAGE,
    container_of,
    docker,
    register_task_definition,
    run_tasks,
    unique,
    wait_tasks_status,
    wait_until,
)

pytestmark = pytest.mark.docker


def test_cpu_of_a_busy_container_matches_docker_stats(docker_ready, server_factory, agent_fleet):
    server = server_factory(extra_args=("--metrics-time-scale", "6"))
    cluster = unique(f"cpu-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster, "--stats-interval-ms", "2000")
    family = unique("burn")
    register_task_definition(server.ecs, family, [{
        "name": "app", "image": TEST_IMAGE, "cpu": 1024, "memory": 64, "essential": True,
        "command": ["sh", "-c", "while :; do :; done"],
    }])
    arns = [t["taskArn"] for t in run_tasks(server.ecs, cluster, family, 1)]
    try:
        task = wait_tasks_status(server.ecs, cluster, arns, "RUNNING")[0]
        container_id = container_of(task, "app")["runtimeId"]
        start = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        end = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def published():
            command = [str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", "cloudwatch",
                       "get-metric-statistics", "--namespace", "AWS/ECS", "--metric-name", "CPUUtilization",
                       "--dimensions", f"Name=ClusterName,Value={cluster}",
                       "--start-time", start, "--end-time", end, "--period", "300",
                       "--statistics", "Average", "SampleCount"]
            done = subprocess.run(command, env=server.cli_env(), capture_output=True, text=True,
                                  timeout=CLI_TIMEOUT_S, cwd=server.home)
            assert done.returncode == 0, done.stderr
            points = json.loads(done.stdout)["Datapoints"]
            return points if sum(p["SampleCount"] for p in points) >= 3 else None

        points = wait_until(published, 120.0, "three published minutes of the task's CPU")
        samples = sum(p["SampleCount"] for p in points)
        ours = sum(p["Average"] * p["SampleCount"] for p in points) / samples
        stats = docker("stats", "--no-stream", "--format", "{{.CPUPerc}}", container_id).stdout.decode().strip()
        theirs = float(stats.rstrip("%"))
        # One vCPU reserved and one CPU burnt: both near 100%, on a shared
        # machine give or take what other work takes from it.
        assert abs(ours - theirs) <= 25.0, (ours, theirs, points)
        # An idle container would read near 0.
        assert ours >= 20.0, (ours, points)
    finally:
        for arn in arns:
            server.ecs.stop_task(cluster=cluster, task=arn)
        wait_tasks_status(server.ecs, cluster, arns, "STOPPED")
