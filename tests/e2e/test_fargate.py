"""Fargate on a self-hosted pool: `flotilla agent --fargate` hosts that users
never see, taking launch type FARGATE tasks (FARGATE and FARGATE_SPOT
capacity) only, each in its own network namespace with its task-level CPU
and memory as hard limits. Also ECS's refusals of what Fargate cannot run,
FARGATE_SPOT interruptions, `flotilla up` serving Fargate out of the box,
and EXTERNAL hosts' managed-instance ids.

Driven with boto3 and the AWS CLI against real Docker (tests marked
`docker`); the refusals need no engine.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from support import (
    ACCESS_KEY_ID,
    FLOTILLA_BIN,
    HTTPD_COMMAND,
    SECRET_ACCESS_KEY,
    TEST_IMAGE,
    TEST_PAGE,
    curl_until_ok,
    describe_tasks,
    docker_inspect,
    docker_logs,
    error_of,
    private_ipv4_of,
    register_task_definition,
    unique,
    wait_tasks_status,
    wait_until,
)

AWSVPC = {"awsvpcConfiguration": {"subnets": ["subnet-0123456789abcdef0"], "assignPublicIp": "DISABLED"}}
OUT_OF_MEMORY = "OutOfMemoryError: Container killed due to memory usage"
HOST_CONNECT_TIMEOUT_S = 30.0
# Short stop timeouts keep the interruption tests quick; Fargate allows up to 120 s.
STOP_TIMEOUT_S = 5


def fargate_definition(ecs, family: str, containers: list[dict], cpu: str = "256",
                       memory: str = "512", **params) -> str:
    return register_task_definition(
        ecs, unique(family), containers, networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"], cpu=cpu, memory=memory, **params,
    )


def start_fargate_host(fleet, server, cluster: str):
    """A `flotilla agent --fargate` host of `cluster`, once its control
    channel is up. It is never described, so its log says when."""
    agent = fleet.start(server, cluster, "--fargate", wait=False)

    def connected():
        if not agent.running:
            raise AssertionError(f"the Fargate host exited:\n{agent.stderr_tail()}")
        return "control channel connected" in agent.stderr_path.read_text(errors="replace")

    wait_until(connected, HOST_CONNECT_TIMEOUT_S, "the Fargate host to connect")
    return agent


def run_fargate(ecs, cluster: str, task_definition: str, **params) -> dict:
    """RunTask of one FARGATE task, retried while the pool's host has just
    connected and the control plane has not yet marked it so."""
    params.setdefault("networkConfiguration", AWSVPC)
    if "capacityProviderStrategy" not in params:
        params.setdefault("launchType", "FARGATE")
    answers = []

    def placed():
        answer = ecs.run_task(cluster=cluster, taskDefinition=task_definition, count=1, **params)
        answers.append(answer)
        return answer["tasks"][0] if answer["tasks"] else None

    try:
        return wait_until(placed, 15, "the FARGATE task to be placed")
    except AssertionError:
        raise AssertionError(f"last RunTask failures: {answers[-1]['failures']}") from None


def eni_details(task: dict) -> dict:
    [eni] = [a for a in task["attachments"] if a["type"] == "ElasticNetworkInterface"]
    return {d["name"]: d["value"] for d in eni["details"]}


def container_of(task: dict, name: str) -> dict:
    [container] = [c for c in task["containers"] if c["name"] == name]
    return container


@pytest.fixture
def cluster(server):
    name = unique("fargate")
    server.ecs.create_cluster(clusterName=name)
    return name


# ---- running -----------------------------------------------------------------


@pytest.mark.docker
def test_a_fargate_task_runs_on_no_listed_instance_and_answers_at_its_address(
        server, cluster, agent_fleet, docker_ready):
    ecs = server.ecs
    start_fargate_host(agent_fleet, server, cluster)
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == []
    [described] = ecs.describe_clusters(clusters=[cluster])["clusters"]
    assert described["registeredContainerInstancesCount"] == 0

    arn = fargate_definition(ecs, "fargate-web", [{
        "name": "web", "image": TEST_IMAGE, "essential": True,
        "command": HTTPD_COMMAND, "portMappings": [{"containerPort": 8080}],
    }])
    task = run_fargate(ecs, cluster, arn)
    assert task["launchType"] == "FARGATE"
    assert task["capacityProviderName"] == "FARGATE"
    assert task["platformVersion"] == "1.4.0"
    assert task["platformFamily"] == "Linux"
    assert "containerInstanceArn" not in task
    assert (task["cpu"], task["memory"]) == ("256", "512")
    details = eni_details(task)
    assert details["subnetId"] == "subnet-0123456789abcdef0"
    assert details["networkInterfaceId"].startswith("eni-")
    assert len(details["macAddress"].split(":")) == 6

    [task] = wait_tasks_status(ecs, cluster, [task["taskArn"]], "RUNNING")
    address = private_ipv4_of(task)
    assert address == details["privateIPv4Address"]
    assert curl_until_ok(f"http://{address}:8080/") == TEST_PAGE

    # Fargate's isolation, as the engine holds it: the task's size as hard
    # limits, no privileged mode, no swap.
    host_config = docker_inspect(container_of(task, "web")["runtimeId"])["HostConfig"]
    assert host_config["Memory"] == 512 * 1024 * 1024
    assert host_config["MemorySwap"] == 512 * 1024 * 1024
    assert (host_config["CpuQuota"], host_config["CpuPeriod"]) == (25_000, 100_000)
    assert host_config["Privileged"] is False

    # The pool's host took no EC2 task: it is not there for them.
    ec2 = register_task_definition(ecs, unique("fargate-ec2"), [{
        "name": "c", "image": TEST_IMAGE, "memory": 32, "command": ["sleep", "30"],
    }])
    error = pytest.raises(Exception, ecs.run_task, cluster=cluster, taskDefinition=ec2, launchType="EC2")
    assert error_of(error) == ("InvalidParameterException", "No Container Instances were found in your cluster.")
    ecs.stop_task(cluster=cluster, task=task["taskArn"])
    wait_tasks_status(ecs, cluster, [task["taskArn"]], "STOPPED")


@pytest.mark.docker
def test_a_container_past_the_task_memory_is_oom_killed_with_ecs_reason(
        server, cluster, agent_fleet, docker_ready):
    ecs = server.ecs
    start_fargate_host(agent_fleet, server, cluster)
    # The shell holds 700 MB in a variable; the task has 512 MiB.
    arn = fargate_definition(ecs, "fargate-hog", [{
        "name": "hog", "image": TEST_IMAGE, "essential": True,
        "command": ["sh", "-c", "x=$(head -c 700000000 /dev/zero | tr '\\0' a); echo survived; sleep 60"],
    }])
    task = run_fargate(ecs, cluster, arn)
    [task] = wait_tasks_status(ecs, cluster, [task["taskArn"]], "STOPPED")
    assert task["stoppedReason"] == OUT_OF_MEMORY, task
    assert task["stopCode"] == "EssentialContainerExited"
    hog = container_of(task, "hog")
    assert hog["reason"] == OUT_OF_MEMORY
    assert hog["exitCode"] == 137
    assert docker_inspect(hog["runtimeId"])["State"]["OOMKilled"] is True
    assert "survived" not in docker_logs(hog["runtimeId"])


@pytest.mark.docker
def test_seed_004_two_container_task_talks_over_localhost(server, cluster, agent_fleet, docker_ready):
    """Seed 004's task: cpu 2048 and memory 4096 for the task, shared by a
    frontend (2048 MiB, 1024 units) and a backend (1934 MiB, 999 units)."""
    ecs = server.ecs
    start_fargate_host(agent_fleet, server, cluster)
    arn = fargate_definition(ecs, "seed-004", [
        {"name": "frontend-react-app", "image": TEST_IMAGE, "memory": 2048, "cpu": 1024,
         "command": HTTPD_COMMAND, "portMappings": [{"containerPort": 8080}]},
        {"name": "backend-python", "image": TEST_IMAGE, "memory": 1934, "cpu": 999,
         "command": ["sh", "-c",
                     "until wget -q -O /tmp/page http://localhost:8080/; do sleep 0.2; done; "
                     "echo fetched; cat /tmp/page; sleep 3600"]},
    ], cpu="2048", memory="4096")
    task = run_fargate(ecs, cluster, arn)
    [task] = wait_tasks_status(ecs, cluster, [task["taskArn"]], "RUNNING")
    backend = container_of(task, "backend-python")["runtimeId"]
    wait_until(lambda: "fetched" in docker_logs(backend), 20, "the backend to reach the frontend on localhost")
    assert TEST_PAGE in docker_logs(backend)
    # Each container keeps its own hard limit, within the task's.
    assert docker_inspect(backend)["HostConfig"]["Memory"] == 1934 * 1024 * 1024
    ecs.stop_task(cluster=cluster, task=task["taskArn"])
    wait_tasks_status(ecs, cluster, [task["taskArn"]], "STOPPED")


# ---- FARGATE_SPOT --------------------------------------------------------------


def reclaim_spot(server, cluster: str) -> list[str]:
    done = subprocess.run(
        [str(FLOTILLA_BIN), "fargate", "reclaim-spot", "--endpoint", server.endpoint, "--cluster", cluster],
        capture_output=True, text=True, timeout=30,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
             "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_DEFAULT_REGION": server.region},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.docker
def test_a_spot_interruption_sends_sigterm_and_the_service_replaces_the_task(
        server, cluster, agent_fleet, docker_ready):
    ecs = server.ecs
    ecs.put_cluster_capacity_providers(
        cluster=cluster, capacityProviders=["FARGATE", "FARGATE_SPOT"], defaultCapacityProviderStrategy=[])
    start_fargate_host(agent_fleet, server, cluster)
    arn = fargate_definition(ecs, "fargate-spot", [{
        "name": "worker", "image": TEST_IMAGE, "essential": True, "stopTimeout": STOP_TIMEOUT_S,
        "command": ["sh", "-c", "trap 'echo got SIGTERM; exit 0' TERM; echo working; "
                                "while true; do sleep 1; done"],
    }])
    service = unique("spot")
    ecs.create_service(
        cluster=cluster, serviceName=service, taskDefinition=arn, desiredCount=1,
        capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
        networkConfiguration=AWSVPC,
    )

    def running_tasks():
        arns = ecs.list_tasks(cluster=cluster, serviceName=service, desiredStatus="RUNNING")["taskArns"]
        tasks = describe_tasks(ecs, cluster, arns) if arns else []
        return [t for t in tasks if t["lastStatus"] == "RUNNING"] or None

    [first] = wait_until(running_tasks, 60, "the service's task to run")
    assert first["capacityProviderName"] == "FARGATE_SPOT"
    assert first["launchType"] == "FARGATE"
    worker = container_of(first, "worker")["runtimeId"]
    wait_until(lambda: "working" in docker_logs(worker), 10, "the worker to start")

    assert reclaim_spot(server, cluster) == [first["taskArn"]]
    [stopped] = wait_tasks_status(ecs, cluster, [first["taskArn"]], "STOPPED", timeout_s=60)
    assert stopped["stopCode"] == "SpotInterruption"
    assert stopped["stoppedReason"] == "Your Spot Task was interrupted."
    assert "got SIGTERM" in docker_logs(worker)
    assert container_of(stopped, "worker")["exitCode"] == 0

    def replaced():
        tasks = running_tasks() or []
        return [t for t in tasks if t["taskArn"] != first["taskArn"]] or None

    [second] = wait_until(replaced, 60, "the service to replace the interrupted task")
    assert second["capacityProviderName"] == "FARGATE_SPOT"
    # Nothing left to reclaim but the replacement.
    ecs.update_service(cluster=cluster, service=service, desiredCount=0)
    ecs.delete_service(cluster=cluster, service=service, force=True)
    wait_tasks_status(ecs, cluster, [second["taskArn"]], "STOPPED", timeout_s=60)


# ---- flotilla up ---------------------------------------------------------------


@pytest.mark.docker
def test_up_serves_fargate_out_of_the_box(server_factory, docker_ready):
    up = server_factory(command="up")
    ecs = up.ecs

    def one_listed_instance():
        return len(ecs.list_container_instances(cluster="default")["containerInstanceArns"]) == 1

    wait_until(one_listed_instance, 60, "the local agent to register")
    arn = fargate_definition(ecs, "up-fargate", [{
        "name": "web", "image": TEST_IMAGE, "essential": True,
        "command": HTTPD_COMMAND, "portMappings": [{"containerPort": 8080}],
    }])
    task = run_fargate(ecs, "default", arn)
    [task] = wait_tasks_status(ecs, "default", [task["taskArn"]], "RUNNING")
    assert curl_until_ok(f"http://{private_ipv4_of(task)}:8080/") == TEST_PAGE
    # The local Fargate host is not among the cluster's instances.
    [listed] = ecs.list_container_instances(cluster="default")["containerInstanceArns"]
    assert "containerInstanceArn" not in task
    [instance] = ecs.describe_container_instances(cluster="default", containerInstances=[listed])["containerInstances"]
    assert instance["runningTasksCount"] == 0
    ecs.stop_task(cluster="default", task=task["taskArn"])
    wait_tasks_status(ecs, "default", [task["taskArn"]], "STOPPED")


# ---- EXTERNAL ------------------------------------------------------------------


@pytest.mark.docker
def test_an_external_host_is_a_managed_instance(server, cluster, agent_fleet, docker_ready):
    ecs = server.ecs
    agent = agent_fleet.start(server, cluster, "--external")
    [instance] = ecs.describe_container_instances(
        cluster=cluster, containerInstances=[agent.instance_arn])["containerInstances"]
    assert instance["ec2InstanceId"].startswith("mi-"), instance["ec2InstanceId"]
    attributes = {a["name"]: a.get("value") for a in instance["attributes"]}
    assert attributes["ecs.os-type"] == "linux"
    assert attributes["ecs.cpu-architecture"] in ("x86_64", "arm64")
    assert "ecs.capability.external" in attributes


# ---- bad input -----------------------------------------------------------------


def register_error(ecs, **overrides) -> tuple[str, str]:
    params = {
        "family": unique("fargate-bad"), "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "cpu": "256", "memory": "512",
        "containerDefinitions": [{"name": "c", "image": TEST_IMAGE}],
    }
    params.update(overrides)
    return error_of(pytest.raises(Exception, ecs.register_task_definition, **params))


def test_fargate_definitions_ecs_refuses_are_refused_with_its_messages(server):
    ecs = server.ecs
    before = ecs.list_task_definitions()["taskDefinitionArns"]
    assert register_error(ecs, networkMode="bridge") == (
        "ClientException", "Fargate only supports network mode \u2018awsvpc\u2019.")
    code, message = register_error(ecs, cpu="256", memory="4096")
    assert code == "ClientException" and "memory" in message.lower() and "256" in message, message
    code, message = register_error(ecs, cpu="8192", memory="20000")
    assert code == "ClientException" and "8192" in message, message
    params = {"family": unique("fargate-bad"), "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
              "memory": "512", "containerDefinitions": [{"name": "c", "image": TEST_IMAGE}]}
    assert error_of(pytest.raises(Exception, ecs.register_task_definition, **params)) == (
        "ClientException", "Fargate requires that 'cpu' be defined at the task level.")
    assert register_error(ecs, containerDefinitions=[{"name": "c", "image": TEST_IMAGE, "privileged": True}]) == (
        "ClientException", "Tasks using the Fargate launch type do not support privileged containers.")
    assert register_error(ecs, containerDefinitions=[{
        "name": "c", "image": TEST_IMAGE, "linuxParameters": {"capabilities": {"add": ["NET_ADMIN"]}},
    }]) == ("ClientException",
            "Tasks using the Fargate launch type only support adding the 'SYS_PTRACE' kernel capability.")
    assert register_error(ecs, volumes=[{"name": "v", "host": {"sourcePath": "/etc"}}]) == (
        "ClientException", "Tasks using the Fargate launch type do not support host volumes with a sourcePath.")
    code, message = register_error(ecs, ephemeralStorage={"sizeInGiB": 10})
    assert code == "ClientException" and "ephemeralStorage" in message, message
    assert ecs.list_task_definitions()["taskDefinitionArns"] == before


def test_fargate_launches_ecs_refuses_are_refused_with_its_messages(server, cluster):
    ecs = server.ecs
    arn = fargate_definition(ecs, "fargate-ok", [{"name": "c", "image": TEST_IMAGE}],
                             runtimePlatform={"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
                             ephemeralStorage={"sizeInGiB": 30})
    [described] = [ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]]
    assert described["runtimePlatform"] == {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"}
    assert described["ephemeralStorage"] == {"sizeInGiB": 30}
    assert "FARGATE" in described["compatibilities"]

    def run_error(**params):
        params.setdefault("networkConfiguration", AWSVPC)
        return error_of(pytest.raises(Exception, ecs.run_task, cluster=cluster, taskDefinition=arn, **params))

    assert run_error(launchType="FARGATE", placementConstraints=[{"type": "distinctInstance"}]) == (
        "InvalidParameterException", "Placement constraints are not supported with FARGATE launch type.")
    assert run_error(launchType="FARGATE", placementStrategy=[{"type": "random"}]) == (
        "InvalidParameterException", "Placement strategies are not supported with FARGATE launch type.")
    code, message = run_error(launchType="FARGATE", platformVersion="1.3.0")
    assert code == "InvalidParameterException" and "1.3.0" in message, message
    assert run_error(capacityProviderStrategy=[
        {"capacityProvider": "FARGATE", "weight": 1}, {"capacityProvider": "my-ec2-provider", "weight": 1},
    ]) == ("InvalidParameterException",
           "The capacity provider strategy cannot contain a mix of capacity providers using Auto Scaling "
           "groups and Fargate providers. Specify one or the other and try again.")
    # FARGATE_SPOT, like ECS's, must be associated with the cluster first.
    code, message = run_error(capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])
    assert code == "InvalidParameterException" and "not associated with the cluster" in message, message

    bridge = register_task_definition(ecs, unique("fargate-bridge"), [
        {"name": "c", "image": TEST_IMAGE, "memory": 32}])
    assert error_of(pytest.raises(Exception, ecs.run_task, cluster=cluster, taskDefinition=bridge,
                                  launchType="FARGATE")) == (
        "InvalidParameterException", "Task definition does not support launch_type FARGATE.")

    # The AWS CLI gets the same answer, and LATEST names the one platform.
    code, stderr = server.cli("run-task", "--cluster", cluster, "--task-definition", arn,
                              "--launch-type", "FARGATE", "--placement-strategy", "type=spread,field=instanceId",
                              "--network-configuration", "awsvpcConfiguration={subnets=[subnet-0123456789abcdef0]}")
    assert code != 0 and "Placement strategies are not supported with FARGATE launch type." in stderr, stderr
    code, answer = server.cli("run-task", "--cluster", cluster, "--task-definition", arn,
                              "--launch-type", "FARGATE", "--platform-version", "LATEST",
                              "--network-configuration", "awsvpcConfiguration={subnets=[subnet-0123456789abcdef0]}")
    assert code == 0, answer
    # No host in this cluster's pool: Fargate's own words, no task.
    assert answer["tasks"] == []
    assert answer["failures"][0]["reason"].startswith("Capacity is unavailable at this time.")
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == []
