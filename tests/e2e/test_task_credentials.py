"""Task role credentials on real Docker: a task whose definition names a
task role (made with the AWS CLI, trusting ecs-tasks.amazonaws.com) gets
that role's credentials from http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
in bridge, host and awsvpc mode. The container prints what it fetched; the
test signs calls with it (boto3): GetCallerIdentity names the assumed role,
an allowed call works, one the role does not allow is AccessDenied. A
second task cannot read the first one's credentials with its id; the
credentials are renewed before they expire (the server's lifetime is
shortened); a role that does not trust ECS tasks stops the task with ECS's
reason. The time from the container's start to its first answer is printed."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
from types import SimpleNamespace

import boto3
import botocore.exceptions
import pytest

from conftest import _launch
from support import (
    AWS_CLI,
    TEST_IMAGE,
    client_config,
    container_of,
    docker,
    register_task_definition,
    run_tasks,
    unique,
    wait_tasks_status,
    wait_until,
)

# Short, so that renewal (halfway) and expiry happen within the test.
CREDENTIALS_LIFETIME_S = 20
TRUST_ECS_TASKS = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                   "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
TRUST_EC2 = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
             "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
ROLE_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["ecs:ListClusters", "sts:GetCallerIdentity"], "Resource": "*"}]}

# Fetches the task's credentials every half second, one line each, until stopped.
FETCH_LOOP = ('trap "exit 0" TERM; '
              'echo "uri=$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"; '
              'echo "endpoint=$AWS_ENDPOINT_URL"; echo "region=$AWS_REGION"; '
              '(while true; do echo "creds=$(wget -qO- http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)"; '
              'sleep 0.5; done) & wait')


def iam_cli(server, *args: str) -> dict:
    done = subprocess.run([str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", "iam", *args],
                          env=server.cli_env(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout or b"{}")


@pytest.fixture(scope="module")
def env(docker_ready, tmp_path_factory, module_agent_fleet):
    launched = _launch(tmp_path_factory.mktemp("flotilla-taskcreds"),
                       extra_args=("--task-credentials-duration-seconds", str(CREDENTIALS_LIFETIME_S)))
    server = next(launched)
    cluster = unique(f"taskcreds-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    agent = module_agent_fleet.start(server, cluster)
    role = unique("taskcreds-app")
    role_arn = iam_cli(server, "create-role", "--role-name", role,
                       "--assume-role-policy-document", json.dumps(TRUST_ECS_TASKS))["Role"]["Arn"]
    iam_cli(server, "put-role-policy", "--role-name", role, "--policy-name", "list",
            "--policy-document", json.dumps(ROLE_POLICY))
    untrusting = unique("taskcreds-vm")
    untrusting_arn = iam_cli(server, "create-role", "--role-name", untrusting,
                             "--assume-role-policy-document", json.dumps(TRUST_EC2))["Role"]["Arn"]
    yield SimpleNamespace(server=server, ecs=server.ecs, cluster=cluster, agent=agent,
                          role=role, role_arn=role_arn, untrusting_arn=untrusting_arn)
    launched.close()


def client_with(server, service: str, credentials: dict):
    session = boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["Token"],
        region_name=server.region)
    return session.client(service, endpoint_url=server.endpoint, config=client_config())


def timestamped_logs(container_id: str) -> list[tuple[datetime.datetime, str]]:
    text = docker("logs", "--timestamps", container_id).stdout.decode()
    lines = []
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        # Docker prints nanoseconds; Python parses microseconds.
        whole, _, fraction = stamp.rstrip("Z").partition(".")
        at = datetime.datetime.fromisoformat(f"{whole}.{fraction[:6].ljust(6, '0')}+00:00")
        lines.append((at, rest))
    return lines


def fetched(container_id: str) -> list[tuple[datetime.datetime, dict]]:
    """Every credentials answer the container printed, with its time."""
    answers = []
    for at, line in timestamped_logs(container_id):
        if line.startswith("creds=") and line != "creds=":
            answers.append((at, json.loads(line.removeprefix("creds="))))
    return answers


def printed(container_id: str, name: str) -> str:
    for _, line in timestamped_logs(container_id):
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"the container printed no {name}=")


def started_at(container_id: str) -> datetime.datetime:
    stamp = json.loads(docker("inspect", container_id).stdout)[0]["State"]["StartedAt"]
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(f"{whole}.{fraction[:6].ljust(6, '0')}+00:00")


def run_fetching_task(env, network_mode: str, **run_params) -> tuple[dict, str]:
    family = unique(f"taskcreds-{network_mode}")
    container = {"name": "app", "image": TEST_IMAGE, "memory": 32, "essential": True,
                 "command": ["sh", "-c", FETCH_LOOP]}
    params = {"taskRoleArn": env.role_arn, "networkMode": network_mode}
    if network_mode == "awsvpc":
        run_params["networkConfiguration"] = {"awsvpcConfiguration": {
            "subnets": ["subnet-0123456789abcdef0"], "assignPublicIp": "DISABLED"}}
    arn = register_task_definition(env.ecs, family, [container], **params)
    [task] = run_tasks(env.ecs, env.cluster, arn, **run_params)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "RUNNING")
    return task, container_of(task, "app")["runtimeId"]


def stop(env, task):
    env.ecs.stop_task(cluster=env.cluster, task=task["taskArn"])
    wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")


@pytest.mark.docker
@pytest.mark.parametrize("network_mode", ["bridge", "host", "awsvpc"])
def test_containers_get_their_task_roles_credentials(env, network_mode):
    asked_at = datetime.datetime.now(datetime.timezone.utc)
    task, container_id = run_fetching_task(env, network_mode)
    try:
        first_at, credentials = wait_until(lambda: (fetched(container_id) or [None])[0], 15,
                                           "the container's first credentials")
        assert printed(container_id, "uri").startswith("/v2/credentials/")
        assert printed(container_id, "region") == env.server.region
        assert printed(container_id, "endpoint").startswith("http://")
        assert credentials["RoleArn"] == env.role_arn
        assert credentials["AccessKeyId"].startswith("ASIA")
        expiration = datetime.datetime.fromisoformat(credentials["Expiration"].replace("Z", "+00:00"))
        assert first_at < expiration <= first_at + datetime.timedelta(seconds=CREDENTIALS_LIFETIME_S + 2)
        beyond_start_ms = (first_at - started_at(container_id)).total_seconds() * 1000
        since_run_task_ms = (first_at - asked_at).total_seconds() * 1000
        print(json.dumps({"network_mode": network_mode, "credentials_served_after_container_start_ms": round(beyond_start_ms, 1),
                          "credentials_served_after_run_task_ms": round(since_run_task_ms, 1)}))

        # They are the role's: its session, its permissions, nothing more.
        # (The latest the container holds: on a loaded machine the first may
        # be near the end of its short test lifetime by now.)
        credentials = fetched(container_id)[-1][1]
        identity = client_with(env.server, "sts", credentials).get_caller_identity()
        task_id = task["taskArn"].rsplit("/", 1)[1]
        assert identity["Arn"] == f"arn:aws:sts::{env.server.account_id}:assumed-role/{env.role}/{task_id}"
        ecs = client_with(env.server, "ecs", credentials)
        assert any(arn.endswith(f"/{env.cluster}") for arn in ecs.list_clusters()["clusterArns"])
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            ecs.create_cluster(clusterName=unique("taskcreds-denied"))
        assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "is not authorized to perform: ecs:CreateCluster" in denied.value.response["Error"]["Message"]
    finally:
        stop(env, task)


@pytest.mark.docker
def test_another_task_cannot_read_the_credentials(env):
    task, container_id = run_fetching_task(env, "bridge")
    try:
        uri = printed(container_id, "uri")
        wait_until(lambda: fetched(container_id), 15, "the first task's credentials")
        family = unique("taskcreds-thief")
        # Waits until the agent knows its address, then asks with the first task's id.
        thief = {"name": "thief", "image": TEST_IMAGE, "memory": 32, "essential": True,
                 "command": ["sh", "-c", 'sleep 3; echo "stolen=$(wget -qO- http://169.254.170.2$OTHER 2>&1)"; '
                             'echo "guessed=$(wget -qO- http://169.254.170.2/v2/credentials/0123456789abcdef 2>&1)"'],
                 "environment": [{"name": "OTHER", "value": uri}]}
        arn = register_task_definition(env.ecs, family, [thief], taskRoleArn=env.role_arn)
        [other] = run_tasks(env.ecs, env.cluster, arn)
        [other] = wait_tasks_status(env.ecs, env.cluster, [other["taskArn"]], "STOPPED")
        thief_id = container_of(other, "thief")["runtimeId"]
        stolen, guessed = printed(thief_id, "stolen"), printed(thief_id, "guessed")
        assert "AccessKeyId" not in stolen and "400" in stolen, stolen
        assert "AccessKeyId" not in guessed and "400" in guessed, guessed
        # The owner still gets them.
        count = len(fetched(container_id))
        wait_until(lambda: len(fetched(container_id)) > count, 10, "the owner's next fetch")
    finally:
        stop(env, task)


@pytest.mark.docker
def test_credentials_are_renewed_before_they_expire(env):
    task, container_id = run_fetching_task(env, "bridge")
    try:
        def renewed():
            keys = {answer["AccessKeyId"] for _, answer in fetched(container_id)}
            return len(keys) >= 3 and keys
        # Renewed halfway through each lifetime: three sets within about 1.5 lifetimes.
        wait_until(renewed, CREDENTIALS_LIFETIME_S * 2, "renewed credentials")
        answers = fetched(container_id)
        # Every answer was still valid when it was served.
        for at, answer in answers:
            expiration = datetime.datetime.fromisoformat(answer["Expiration"].replace("Z", "+00:00"))
            assert expiration - at > datetime.timedelta(seconds=CREDENTIALS_LIFETIME_S / 2 - 3), (at, expiration)
        first, latest = answers[0][1], answers[-1][1]
        assert first["AccessKeyId"] != latest["AccessKeyId"]
        # The first set has expired by now; the latest works.
        wait_until(lambda: datetime.datetime.now(datetime.timezone.utc) > datetime.datetime.fromisoformat(
            first["Expiration"].replace("Z", "+00:00")) + datetime.timedelta(seconds=1), CREDENTIALS_LIFETIME_S, "expiry")
        with pytest.raises(botocore.exceptions.ClientError) as expired:
            client_with(env.server, "sts", first).get_caller_identity()
        assert expired.value.response["Error"]["Code"] == "ExpiredToken"
        assert client_with(env.server, "sts", fetched(container_id)[-1][1]).get_caller_identity()["Arn"].endswith(
            "/" + task["taskArn"].rsplit("/", 1)[1])
    finally:
        stop(env, task)


@pytest.mark.docker
def test_a_role_that_does_not_trust_ecs_tasks_stops_the_task(env):
    family = unique("taskcreds-untrusted")
    container = {"name": "app", "image": TEST_IMAGE, "memory": 32, "essential": True, "command": ["true"]}
    arn = register_task_definition(env.ecs, family, [container], taskRoleArn=env.untrusting_arn)
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    assert task["stoppedReason"] == (
        f"ResourceInitializationError: ECS was unable to assume the role '{env.untrusting_arn}' that was "
        "provided for this task. Please verify that the role being passed has the proper trust relationship "
        "and permissions and that your IAM user has permissions to pass this role.")
    assert task["stopCode"] == "TaskFailedToStart"
    assert "runtimeId" not in container_of(task, "app")


@pytest.mark.docker
def test_secrets_are_read_as_the_execution_role(env):
    sm = env.server.client("secretsmanager")
    value = "v-" + unique("x")
    secret = sm.create_secret(Name=unique("taskcreds/db"), SecretString=value)
    allowed = unique("taskcreds-exec")
    allowed_arn = iam_cli(env.server, "create-role", "--role-name", allowed,
                          "--assume-role-policy-document", json.dumps(TRUST_ECS_TASKS))["Role"]["Arn"]
    iam_cli(env.server, "attach-role-policy", "--role-name", allowed, "--policy-arn",
            "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")
    iam_cli(env.server, "put-role-policy", "--role-name", allowed, "--policy-name", "secrets",
            "--policy-document", json.dumps({"Version": "2012-10-17", "Statement": [
                # Secrets Manager's operations are authorized on "*" for now.
                {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}))
    bare = unique("taskcreds-bare")
    bare_arn = iam_cli(env.server, "create-role", "--role-name", bare,
                       "--assume-role-policy-document", json.dumps(TRUST_ECS_TASKS))["Role"]["Arn"]
    container = {"name": "app", "image": TEST_IMAGE, "memory": 32, "essential": True,
                 "command": ["sh", "-c", 'echo "secret=$DB"'],
                 "secrets": [{"name": "DB", "valueFrom": secret["ARN"]}]}

    # A role allowed to read the secret: the container gets it.
    arn = register_task_definition(env.ecs, unique("taskcreds-exec"), [container], executionRoleArn=allowed_arn)
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    assert container_of(task, "app").get("exitCode") == 0, task.get("stoppedReason")
    assert printed(container_of(task, "app")["runtimeId"], "secret") == value

    # A role without that permission: the task stops with AWS's denial.
    arn = register_task_definition(env.ecs, unique("taskcreds-bare"), [container], executionRoleArn=bare_arn)
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    reason = task["stoppedReason"]
    assert reason.startswith("ResourceInitializationError: unable to pull secrets or registry auth"), reason
    assert "AccessDeniedException" in reason, reason
    task_id = task["taskArn"].rsplit("/", 1)[1]
    assert (f"arn:aws:sts::{env.server.account_id}:assumed-role/{bare}/{task_id} is not authorized to perform: "
            f"secretsmanager:GetSecretValue") in reason, reason


@pytest.mark.docker
def test_environment_files_are_read_as_the_execution_role(env):
    """As in ECS, a task's execution role reads its environment files from
    S3: a role allowed `s3:GetObject` on the object sets the variables; a
    role without stops the task with S3's AccessDenied."""
    s3 = env.server.client("s3")
    bucket = unique("taskcreds-env").lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="app/app.env", Body=b"GREETING=from-s3\n")
    reader = unique("taskcreds-env")
    reader_arn = iam_cli(env.server, "create-role", "--role-name", reader,
                         "--assume-role-policy-document", json.dumps(TRUST_ECS_TASKS))["Role"]["Arn"]
    iam_cli(env.server, "put-role-policy", "--role-name", reader, "--policy-name", "env-files",
            "--policy-document", json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/app/*"}]}))
    bare = unique("taskcreds-env-bare")
    bare_arn = iam_cli(env.server, "create-role", "--role-name", bare,
                       "--assume-role-policy-document", json.dumps(TRUST_ECS_TASKS))["Role"]["Arn"]
    container = {"name": "app", "image": TEST_IMAGE, "memory": 32, "essential": True,
                 "command": ["sh", "-c", 'echo "greeting=$GREETING"'],
                 "environmentFiles": [{"type": "s3", "value": f"arn:aws:s3:::{bucket}/app/app.env"}]}

    arn = register_task_definition(env.ecs, unique("taskcreds-env"), [container], executionRoleArn=reader_arn)
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    assert container_of(task, "app").get("exitCode") == 0, task.get("stoppedReason")
    assert printed(container_of(task, "app")["runtimeId"], "greeting") == "from-s3"

    arn = register_task_definition(env.ecs, unique("taskcreds-env-bare"), [container], executionRoleArn=bare_arn)
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    reason = task["stoppedReason"]
    assert reason.startswith("ResourceInitializationError: failed to download env files: "), reason
    assert "AccessDenied" in reason, reason
    assert "runtimeId" not in container_of(task, "app")
