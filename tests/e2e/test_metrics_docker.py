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


def test_target_tracking_scales_a_docker_service_out_under_load_and_in_when_it_stops(
        docker_ready, server_factory, agent_fleet):
    """A service of busybox containers burning a CPU each, tracking 50%:
    out from 1 to its maximum of 2; a revision that sleeps brings it back
    in to 1. The metrics clock runs 30 times faster (a minute every 2 s)."""
    server = server_factory(extra_args=("--metrics-time-scale", "30", "--service-stabilization-ms", "1000"))
    cluster = unique(f"burnsvc-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster, "--stats-interval-ms", "1000")
    family = unique("burnsvc")
    burn = register_task_definition(server.ecs, family, [{
        "name": "app", "image": TEST_IMAGE, "cpu": 1024, "memory": 32, "essential": True,
        "command": ["sh", "-c", "while :; do :; done"],
    }])
    name = unique("burner")
    # Two burning tasks reserve both of the host's 2,048 CPU units: the
    # rollout to the resting revision must stop one before it starts one.
    server.ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=burn, desiredCount=1,
                              deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200})
    resource_id = f"service/{cluster}/{name}"
    scaling = server.client("application-autoscaling")
    try:
        scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource_id,
                                         ScalableDimension="ecs:service:DesiredCount", MinCapacity=1, MaxCapacity=2)
        scaling.put_scaling_policy(
            ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension="ecs:service:DesiredCount",
            PolicyName="cpu50", PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 50.0, "ScaleOutCooldown": 60, "ScaleInCooldown": 60,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}})

        def desired():
            return server.ecs.describe_services(cluster=cluster, services=[name])["services"][0]["desiredCount"]

        wait_until(lambda: desired() == 2, 180.0, "scale-out under load")
        rest = register_task_definition(server.ecs, family, [{
            "name": "app", "image": TEST_IMAGE, "cpu": 1024, "memory": 32, "essential": True,
            "command": ["sleep", "3600"],
        }])
        server.ecs.update_service(cluster=cluster, service=name, taskDefinition=rest)
        wait_until(lambda: desired() == 1, 180.0, "scale-in once the load stops")
        causes = [a["Cause"] for a in scaling.describe_scaling_activities(
            ServiceNamespace="ecs", ResourceId=resource_id)["ScalingActivities"]]
        assert any("AlarmHigh" in c for c in causes) and "AlarmLow" in causes[0], causes
    finally:
        server.ecs.update_service(cluster=cluster, service=name, desiredCount=0)
        server.ecs.delete_service(cluster=cluster, service=name, force=True)

        def gone():
            arns = server.ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING")["taskArns"]
            if not arns:
                return True
            tasks = server.ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
            return all(t["lastStatus"] == "STOPPED" for t in tasks)

        wait_until(gone, 120.0, "the service's tasks to stop")
