"""`environmentFiles` on real Docker: an environment file copied to the S3
API with `aws s3 cp` sets a container's variables with ECS's precedence
(the first file that defines a variable wins, `environment` overrides every
file), and a missing object stops the task with ECS's reason."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from support import (
    AWS_CLI,
    CLI_TIMEOUT_S,
    TEST_IMAGE,
    container_of,
    docker_logs,
    error_of,
    register_task_definition,
    run_tasks,
    unique,
    wait_tasks_status,
)

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def env(docker_ready, server, module_agent_fleet):
    cluster = unique(f"s3-envfiles-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    agent = module_agent_fleet.start(server, cluster)
    bucket = unique("s3-config").lower().replace("_", "-")[:63]
    server.client("s3").create_bucket(Bucket=bucket)
    return SimpleNamespace(server=server, ecs=server.ecs, cluster=cluster, agent=agent, bucket=bucket)


def aws_s3_cp(server, source: str, destination: str) -> None:
    done = subprocess.run(
        [str(AWS_CLI), "--endpoint-url", server.endpoint, "s3", "cp", source, destination],
        env=server.cli_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr


def test_environment_files_set_variables_with_ecs_precedence(env, tmp_path):
    app = tmp_path / "app.env"
    app.write_text("# application settings\nFROM_FILE=app value with spaces\nSHARED=from app.env\n"
                   "OVERRIDDEN=from app.env\n\nQUOTED=\"kept as is\"\n")
    extra = tmp_path / "extra.env"
    extra.write_text("SHARED=from extra.env\nONLY_EXTRA=extra=yes\n")
    aws_s3_cp(env.server, str(app), f"s3://{env.bucket}/app.env")
    aws_s3_cp(env.server, str(extra), f"s3://{env.bucket}/nested/extra.env")
    family = unique("s3-envfiles")
    arn = register_task_definition(env.ecs, family, [{
        "name": "app", "image": TEST_IMAGE, "memory": 32,
        "command": ["sh", "-c", 'for v in FROM_FILE SHARED OVERRIDDEN QUOTED ONLY_EXTRA; do '
                                'eval "echo $v=\\$$v"; done'],
        "environment": [{"name": "OVERRIDDEN", "value": "from environment"}],
        "environmentFiles": [
            {"type": "s3", "value": f"arn:aws:s3:::{env.bucket}/app.env"},
            {"type": "s3", "value": f"arn:aws:s3:::{env.bucket}/nested/extra.env"},
        ],
    }])
    described = env.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert described["containerDefinitions"][0]["environmentFiles"][1] == {
        "type": "s3", "value": f"arn:aws:s3:::{env.bucket}/nested/extra.env"}
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    container = container_of(task, "app")
    assert container["exitCode"] == 0, task
    assert docker_logs(container["runtimeId"]).strip().splitlines() == [
        "FROM_FILE=app value with spaces",
        "SHARED=from app.env",
        "OVERRIDDEN=from environment",
        'QUOTED="kept as is"',
        "ONLY_EXTRA=extra=yes",
    ]


def test_missing_environment_file_stops_the_task_with_ecs_reason(env):
    family = unique("s3-envfiles-missing")
    arn = register_task_definition(env.ecs, family, [{
        "name": "app", "image": TEST_IMAGE, "memory": 32, "command": ["true"],
        "environmentFiles": [{"type": "s3", "value": f"arn:aws:s3:::{env.bucket}/absent.env"}],
    }])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    assert task["stoppedReason"] == (
        "ResourceInitializationError: failed to download env files: unable to download env file "
        f"with key 'absent.env' from bucket '{env.bucket}': NoSuchKey: The specified key does not exist."
    )
    assert task["stopCode"] == "TaskFailedToStart"


def test_environment_files_are_checked_at_registration(env):
    too_many = [{"type": "s3", "value": f"arn:aws:s3:::{env.bucket}/f{i}.env"} for i in range(11)]
    for files, words in [
        (too_many, "up to 10 environment files"),
        ([{"type": "s3", "value": f"arn:aws:s3:::{env.bucket}/app.txt"}], "must have a .env file extension"),
        ([{"type": "s3", "value": f"s3://{env.bucket}/app.env"}], "is not the ARN of an S3 object"),
    ]:
        with pytest.raises(ClientError) as excinfo:
            env.ecs.register_task_definition(family=unique("s3-envfiles-bad"), containerDefinitions=[{
                "name": "app", "image": TEST_IMAGE, "memory": 32, "environmentFiles": files}])
        code, message = error_of(excinfo)
        assert code == "ClientException" and words in message, message
