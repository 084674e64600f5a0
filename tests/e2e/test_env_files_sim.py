"""`environmentFiles` on simulated hosts: they read the files through the
S3 API as real hosts do, so a task whose file exists runs and one whose
file is missing stops with ECS's reason, without Docker."""

from __future__ import annotations

import os

from support import register_task_definition, run_tasks, unique, wait_tasks_status


def test_simulated_hosts_read_environment_files(server, agent_fleet):
    cluster = unique(f"s3-envfiles-sim-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster, "--simulate", "2")
    bucket = unique("s3-sim-config").lower().replace("_", "-")[:63]
    client = server.client("s3")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="app.env", Body=b"A=1\n")

    def definition(key: str) -> str:
        return register_task_definition(server.ecs, unique("s3-envfiles-sim"), [{
            "name": "app", "image": "sim/any", "memory": 64,
            "environmentFiles": [{"type": "s3", "value": f"arn:aws:s3:::{bucket}/{key}"}],
        }])

    [present] = run_tasks(server.ecs, cluster, definition("app.env"))
    wait_tasks_status(server.ecs, cluster, [present["taskArn"]], "RUNNING")
    [missing] = run_tasks(server.ecs, cluster, definition("missing.env"))
    [stopped] = wait_tasks_status(server.ecs, cluster, [missing["taskArn"]], "STOPPED")
    assert stopped["stoppedReason"].startswith(
        "ResourceInitializationError: failed to download env files: unable to download env file "
        f"with key 'missing.env' from bucket '{bucket}': NoSuchKey"
    ), stopped["stoppedReason"]
    server.ecs.stop_task(cluster=cluster, task=present["taskArn"])
