"""Tasks on real Docker containers: one `flotilla server` and one
`flotilla agent` on the local engine, driven with the AWS CLI and boto3, and
checked the way a user would: curl to the ports and addresses the API
reports, `docker logs` and `docker inspect` of the containers it names.

Heavy (marked `docker`): every test starts containers. Tests that kill or
restart the agent get an agent (and cluster) of their own; the rest share
the module's.
"""

from __future__ import annotations

import json
import os
import signal
import time
from types import SimpleNamespace

import pytest

from support import (
    HTTPD_COMMAND,
    TEST_IMAGE,
    TEST_PAGE,
    container_of,
    curl,
    curl_until_ok,
    describe_tasks,
    docker,
    docker_inspect,
    docker_logs,
    free_port,
    private_ipv4_of,
    register_task_definition,
    resources_by_name,
    run_tasks,
    unique,
    wait_tasks_status,
    wait_until,
)

pytestmark = pytest.mark.docker

# The server's default agent heartbeat timeout (flotilla_types::acs::HEARTBEAT_TIMEOUT_MS).
HEARTBEAT_TIMEOUT_S = 30.0


def cluster_name(prefix: str) -> str:
    # The pid keeps two runs on one engine apart (volumes are found by cluster).
    return unique(f"{prefix}-{os.getpid()}")


@pytest.fixture(scope="module")
def env(docker_ready, server, module_agent_fleet):
    """The module's cluster, with one real agent connected to it."""
    cluster = cluster_name("docker")
    server.ecs.create_cluster(clusterName=cluster)
    agent = module_agent_fleet.start(server, cluster)
    return SimpleNamespace(server=server, ecs=server.ecs, cluster=cluster, agent=agent)


def httpd_container(name: str = "web", **extra) -> dict:
    container = {
        "name": name,
        "image": TEST_IMAGE,
        "memory": 64,
        "essential": True,
        "command": HTTPD_COMMAND,
        "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
    }
    container.update(extra)
    return container


def host_port_of(task: dict, container: str = "web") -> int:
    bindings = container_of(task, container)["networkBindings"]
    assert len(bindings) == 1, bindings
    assert bindings[0]["containerPort"] == 8080
    assert bindings[0]["protocol"] == "tcp"
    assert bindings[0]["hostPort"] > 0
    return bindings[0]["hostPort"]


def stop_and_wait(ecs, cluster, arns):
    for arn in arns:
        ecs.stop_task(cluster=cluster, task=arn)
    return wait_tasks_status(ecs, cluster, arns, "STOPPED")


# ---- networking ------------------------------------------------------------------


def test_bridge_task_serves_its_page_on_the_reported_host_port(env, tmp_path):
    """The user's path: register, run-task, `aws ecs wait tasks-running`,
    curl the networkBinding's hostPort, stop-task."""
    family = unique("bridge-web")
    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps({
        "family": family,
        "networkMode": "bridge",
        "containerDefinitions": [httpd_container()],
    }))
    code, registered = env.server.cli("register-task-definition", "--cli-input-json", f"file://{definition}")
    assert code == 0, registered
    code, ran = env.server.cli("run-task", "--cluster", env.cluster, "--task-definition", family)
    assert code == 0, ran
    assert ran["failures"] == []
    task_arn = ran["tasks"][0]["taskArn"]

    code, waited = env.server.cli("wait", "tasks-running", "--cluster", env.cluster, "--tasks", task_arn)
    assert code == 0, (waited, describe_tasks(env.ecs, env.cluster, [task_arn]))

    code, described = env.server.cli("describe-tasks", "--cluster", env.cluster, "--tasks", task_arn)
    assert code == 0, described
    task = described["tasks"][0]
    assert task["lastStatus"] == "RUNNING"
    assert task["containerInstanceArn"] == env.agent.instance_arn
    web = container_of(task, "web")
    assert web["lastStatus"] == "RUNNING"
    port = host_port_of(task)
    assert curl_until_ok(f"http://127.0.0.1:{port}/") == TEST_PAGE

    # The container the API names is the one serving.
    inspected = docker_inspect(web["runtimeId"])
    assert inspected["State"]["Running"]
    assert inspected["Config"]["Labels"]["com.amazonaws.ecs.task-arn"] == task_arn
    assert inspected["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"] == str(port)

    code, stopped = env.server.cli("stop-task", "--cluster", env.cluster, "--task", task_arn)
    assert code == 0, stopped
    code, waited = env.server.cli("wait", "tasks-stopped", "--cluster", env.cluster, "--tasks", task_arn)
    assert code == 0, waited
    task = describe_tasks(env.ecs, env.cluster, [task_arn])[0]
    assert task["stopCode"] == "UserInitiated"
    assert container_of(task, "web")["exitCode"] == 0
    assert curl(f"http://127.0.0.1:{port}/", timeout_s=2)[0] != 0


def test_awsvpc_task_answers_at_its_private_address(env):
    family = unique("awsvpc-web")
    arn = register_task_definition(
        env.ecs, family, [httpd_container(portMappings=[{"containerPort": 8080, "protocol": "tcp"}])],
        networkMode="awsvpc",
    )
    [task] = run_tasks(env.ecs, env.cluster, arn, networkConfiguration={
        "awsvpcConfiguration": {"subnets": ["subnet-0123456789abcdef0"], "assignPublicIp": "DISABLED"},
    })
    address = private_ipv4_of(task)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "RUNNING")
    web = container_of(task, "web")
    assert web["networkInterfaces"][0]["privateIpv4Address"] == address
    assert curl_until_ok(f"http://{address}:8080/") == TEST_PAGE
    stop_and_wait(env.ecs, env.cluster, [task["taskArn"]])
    assert curl(f"http://{address}:8080/", timeout_s=2)[0] != 0


def test_awsvpc_tasks_started_together_on_a_fresh_instance_all_run(docker_ready, server, agent_fleet):
    """The first awsvpc tasks of an instance make its task network together;
    each must get it, and its own address."""
    cluster = cluster_name("awsvpc-burst")
    server.ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster)
    arn = register_task_definition(
        server.ecs, unique("awsvpc-burst"),
        [httpd_container(portMappings=[{"containerPort": 8080}])], networkMode="awsvpc",
    )
    tasks = run_tasks(server.ecs, cluster, arn, count=4)
    tasks = wait_tasks_status(server.ecs, cluster, [t["taskArn"] for t in tasks], "RUNNING")
    addresses = [private_ipv4_of(task) for task in tasks]
    assert len(set(addresses)) == 4, addresses
    for address in addresses:
        assert curl_until_ok(f"http://{address}:8080/") == TEST_PAGE
    stop_and_wait(server.ecs, cluster, [t["taskArn"] for t in tasks])


def test_host_network_mode_serves_on_the_containers_own_port(env):
    port = free_port()
    arn = register_task_definition(env.ecs, unique("host-web"), [httpd_container(
        command=["sh", "-c", f"trap 'exit 0' TERM; httpd -f -p {port} -h /www & wait"],
        portMappings=[{"containerPort": port}],
    )], networkMode="host")
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "RUNNING")
    [binding] = container_of(task, "web")["networkBindings"]
    assert (binding["containerPort"], binding["hostPort"]) == (port, port)
    assert curl_until_ok(f"http://127.0.0.1:{port}/") == TEST_PAGE
    # The port is the instance's until the task stops.
    [instance] = env.ecs.describe_container_instances(
        cluster=env.cluster, containerInstances=[env.agent.instance_arn])["containerInstances"]
    assert str(port) in resources_by_name(instance["remainingResources"])["PORTS"]
    stop_and_wait(env.ecs, env.cluster, [task["taskArn"]])


def test_host_path_volume_is_shared_with_the_host(env, tmp_path):
    shared = tmp_path / "site"
    shared.mkdir()
    (shared / "index.html").write_text("from the host\n")
    arn = register_task_definition(env.ecs, unique("host-path"), [httpd_container(
        command=["sh", "-c", "echo from the container > /site/note.txt; "
                 "trap 'exit 0' TERM; httpd -f -p 8080 -h /site & wait"],
        mountPoints=[{"sourceVolume": "site", "containerPath": "/site"}],
    )], volumes=[{"name": "site", "host": {"sourcePath": str(shared)}}])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "RUNNING")
    assert curl_until_ok(f"http://127.0.0.1:{host_port_of(task)}/") == "from the host\n"
    assert (shared / "note.txt").read_text() == "from the container\n"
    stop_and_wait(env.ecs, env.cluster, [task["taskArn"]])


def test_containers_share_a_volume_and_talk_over_localhost_in_awsvpc(env):
    """One container writes a page into a task volume, another serves it,
    and a third fetches it from localhost: one network namespace per task."""
    family = unique("awsvpc-pair")
    page = f"written by the writer of {family}"
    mount = [{"sourceVolume": "shared", "containerPath": "/shared"}]
    arn = register_task_definition(env.ecs, family, [
        {
            "name": "writer", "image": TEST_IMAGE, "memory": 32, "essential": False,
            "command": ["sh", "-c", f"echo '{page}' > /shared/index.html"],
            "mountPoints": mount,
        },
        {
            "name": "web", "image": TEST_IMAGE, "memory": 32, "essential": True,
            "command": ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /shared & wait"],
            "mountPoints": mount,
            "dependsOn": [{"containerName": "writer", "condition": "SUCCESS"}],
        },
        {
            "name": "client", "image": TEST_IMAGE, "memory": 32, "essential": False,
            "command": ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do "
                        "wget -qO- http://localhost:8080/ && exit 0; sleep 0.5; done; exit 1"],
            "dependsOn": [{"containerName": "web", "condition": "START"}],
        },
    ], networkMode="awsvpc", volumes=[{"name": "shared"}])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    task_arn = task["taskArn"]
    address = private_ipv4_of(task)

    def client_done():
        [task] = describe_tasks(env.ecs, env.cluster, [task_arn])
        assert task["lastStatus"] != "STOPPED", task
        return task if container_of(task, "client")["lastStatus"] == "STOPPED" else None

    task = wait_until(client_done, 60, "the client container to finish")
    client = container_of(task, "client")
    assert client["exitCode"] == 0, (client, docker_logs(client["runtimeId"]))
    assert docker_logs(client["runtimeId"]).strip() == page
    assert container_of(task, "writer")["exitCode"] == 0
    # Non-essential containers came and went; the task runs on.
    [task] = wait_tasks_status(env.ecs, env.cluster, [task_arn], "RUNNING")
    assert container_of(task, "web")["lastStatus"] == "RUNNING"
    assert curl_until_ok(f"http://{address}:8080/").strip() == page
    stop_and_wait(env.ecs, env.cluster, [task_arn])


def test_depends_on_success_starts_the_main_container_after_the_init_container(env):
    family = unique("init-then-main")
    mount = [{"sourceVolume": "work", "containerPath": "/work"}]
    arn = register_task_definition(env.ecs, family, [
        {
            # Slow on purpose: without ordering, main would start first.
            "name": "init", "image": TEST_IMAGE, "memory": 32, "essential": False,
            "command": ["sh", "-c", "sleep 1; echo initialized > /work/flag"],
            "mountPoints": mount,
        },
        {
            "name": "main", "image": TEST_IMAGE, "memory": 32, "essential": True,
            "command": ["sh", "-c", "test -f /work/flag || exit 7; "
                        "trap 'exit 0' TERM; httpd -f -p 8080 -h /work & wait"],
            "mountPoints": mount,
            "portMappings": [{"containerPort": 8080, "hostPort": 0}],
            "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}],
        },
    ], volumes=[{"name": "work"}])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "RUNNING")
    init, main = container_of(task, "init"), container_of(task, "main")
    assert init["lastStatus"] == "STOPPED" and init["exitCode"] == 0
    assert main["lastStatus"] == "RUNNING"
    # The engine's own record of the order.
    init_finished = docker_inspect(init["runtimeId"])["State"]["FinishedAt"]
    main_started = docker_inspect(main["runtimeId"])["State"]["StartedAt"]
    assert main_started > init_finished, (init_finished, main_started)
    assert curl_until_ok(f"http://127.0.0.1:{host_port_of(task, 'main')}/flag") == "initialized\n"
    stop_and_wait(env.ecs, env.cluster, [task["taskArn"]])


# ---- how tasks end -----------------------------------------------------------------


def test_essential_container_exit_stops_the_task(env):
    """The essential container exits 3: the task stops, and the agent stops
    the non-essential sidecar with it."""
    family = unique("exit-3")
    arn = register_task_definition(env.ecs, family, [
        {"name": "app", "image": TEST_IMAGE, "memory": 32, "command": ["sh", "-c", "sleep 1; exit 3"]},
        {"name": "sidecar", "image": TEST_IMAGE, "memory": 32, "essential": False,
         "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]},
    ])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    code, described = env.server.cli("describe-tasks", "--cluster", env.cluster, "--tasks", task["taskArn"])
    assert code == 0
    task = described["tasks"][0]
    assert task["lastStatus"] == "STOPPED"
    assert task["desiredStatus"] == "STOPPED"
    assert task["stopCode"] == "EssentialContainerExited"
    assert "Essential container in task exited" in task["stoppedReason"]
    app = container_of(task, "app")
    assert app["exitCode"] == 3
    assert app["lastStatus"] == "STOPPED"
    assert docker_inspect(app["runtimeId"])["State"]["ExitCode"] == 3
    sidecar = container_of(task, "sidecar")
    assert sidecar["lastStatus"] == "STOPPED"
    assert sidecar["exitCode"] == 0  # stopped with SIGTERM, which it honours
    assert docker_inspect(sidecar["runtimeId"])["State"]["Running"] is False


def test_unpullable_image_fails_the_task_to_start(env):
    family = unique("bad-image")
    arn = register_task_definition(env.ecs, family, [
        {"name": "app", "image": "127.0.0.1:1/nope:latest", "memory": 32},
    ])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    assert task["stopCode"] == "TaskFailedToStart"
    assert "CannotPullContainerError" in task["stoppedReason"]
    app = container_of(task, "app")
    assert "CannotPullContainerError" in app["reason"]
    assert "runtimeId" not in app
    # The instance got its resources back.
    instance = env.ecs.describe_container_instances(
        cluster=env.cluster, containerInstances=[env.agent.instance_arn])["containerInstances"][0]
    assert task["taskArn"] not in env.ecs.list_tasks(cluster=env.cluster)["taskArns"]
    assert instance["pendingTasksCount"] == 0


def test_stop_task_honours_each_containers_stop_timeout(env):
    """A container that ignores SIGTERM is killed after its stopTimeout; one
    that honours it stops at once."""
    stubborn = register_task_definition(env.ecs, unique("stubborn"), [{
        "name": "app", "image": TEST_IMAGE, "memory": 32, "stopTimeout": 3,
        "command": ["sh", "-c", "trap '' TERM; sleep 1000"],
    }])
    polite = register_task_definition(env.ecs, unique("polite"), [{
        "name": "app", "image": TEST_IMAGE, "memory": 32, "stopTimeout": 30,
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
    }])
    arns = [run_tasks(env.ecs, env.cluster, definition)[0]["taskArn"] for definition in (stubborn, polite)]
    wait_tasks_status(env.ecs, env.cluster, arns, "RUNNING")

    started = time.monotonic()
    for arn in arns:
        env.ecs.stop_task(cluster=env.cluster, task=arn, reason="checking stop timeouts")
    took = {}

    def all_stopped():
        for task in describe_tasks(env.ecs, env.cluster, arns):
            if task["lastStatus"] == "STOPPED":
                took.setdefault(task["taskArn"], time.monotonic() - started)
        return len(took) == len(arns)

    wait_until(all_stopped, 40, "both tasks to stop", interval_s=0.1)
    stubborn_s, polite_s = took[arns[0]], took[arns[1]]
    assert 2.5 <= stubborn_s <= 15, stubborn_s
    assert polite_s < 2.5, polite_s
    stubborn_task, polite_task = describe_tasks(env.ecs, env.cluster, arns)
    assert container_of(stubborn_task, "app")["exitCode"] == 137  # SIGKILL
    assert container_of(polite_task, "app")["exitCode"] == 0
    for task in (stubborn_task, polite_task):
        assert task["stopCode"] == "UserInitiated"
        assert task["stoppedReason"] == "checking stop timeouts"


# ---- the task metadata endpoint ------------------------------------------------------


@pytest.mark.parametrize("network_mode", ["bridge", "awsvpc"])
def test_metadata_endpoint_tells_a_container_its_task(env, network_mode):
    family = unique(f"metadata-{network_mode}")
    arn = register_task_definition(env.ecs, family, [{
        "name": "probe", "image": TEST_IMAGE, "memory": 32,
        "command": ["sh", "-c", 'echo "task=$(wget -qO- "$ECS_CONTAINER_METADATA_URI_V4/task")"; '
                    'echo "container=$(wget -qO- "$ECS_CONTAINER_METADATA_URI_V4")"; '
                    # Stats may be null until the agent has seen the container run.
                    'for i in 1 2 3 4 5 6 7 8 9 10; do '
                    'stats=$(wget -qO- "$ECS_CONTAINER_METADATA_URI_V4/task/stats"); '
                    'case "$stats" in *memory_stats*) break;; esac; sleep 0.3; done; '
                    'echo "stats=$stats"'],
    }], networkMode=network_mode)
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    probe = container_of(task, "probe")
    logs = docker_logs(probe["runtimeId"])
    assert probe["exitCode"] == 0, logs
    lines = dict(line.split("=", 1) for line in logs.splitlines() if "=" in line)
    task_metadata = json.loads(lines["task"])
    assert task_metadata["TaskARN"] == task["taskArn"]
    assert task_metadata["Family"] == family
    assert task_metadata["Cluster"] in (env.cluster, f"arn:aws:ecs:us-east-1:000000000000:cluster/{env.cluster}")
    assert [c["Name"] for c in task_metadata["Containers"]] == ["probe"]
    container_metadata = json.loads(lines["container"])
    assert container_metadata["Name"] == "probe"
    assert container_metadata["DockerId"] == probe["runtimeId"]
    stats = json.loads(lines["stats"])
    assert stats[probe["runtimeId"]]["memory_stats"]["limit"] == 32 * 1024 * 1024


# ---- what the definition and the overrides ask of the container ---------------------------


def test_run_task_overrides_reach_the_container(env):
    family = unique("overridden")
    arn = register_task_definition(env.ecs, family, [{
        "name": "app", "image": TEST_IMAGE, "memory": 32,
        "command": ["sh", "-c", "echo definition"],
        "environment": [{"name": "GREETING", "value": "from the definition"}],
    }])
    [task] = run_tasks(env.ecs, env.cluster, arn, overrides={"containerOverrides": [{
        "name": "app",
        "command": ["sh", "-c", 'echo "$GREETING / $EXTRA"; exit 4'],
        "environment": [{"name": "EXTRA", "value": "from the override"}],
    }]})
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "STOPPED")
    app = container_of(task, "app")
    assert app["exitCode"] == 4
    assert docker_logs(app["runtimeId"]).strip() == "from the definition / from the override"
    assert task["overrides"]["containerOverrides"][0]["environment"] == [{"name": "EXTRA", "value": "from the override"}]


def test_health_check_makes_the_task_healthy(env):
    family = unique("healthy")
    arn = register_task_definition(env.ecs, family, [httpd_container(healthCheck={
        "command": ["CMD-SHELL", "wget -qO- http://localhost:8080/ || exit 1"],
        "interval": 5, "timeout": 2, "retries": 2, "startPeriod": 0,
    })])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    task_arn = task["taskArn"]
    wait_tasks_status(env.ecs, env.cluster, [task_arn], "RUNNING")

    def healthy():
        [task] = describe_tasks(env.ecs, env.cluster, [task_arn])
        return task if task.get("healthStatus") == "HEALTHY" else None

    task = wait_until(healthy, 20, "the task to be HEALTHY")
    assert container_of(task, "web")["healthStatus"] == "HEALTHY"
    assert docker_inspect(container_of(task, "web")["runtimeId"])["State"]["Health"]["Status"] == "healthy"
    stop_and_wait(env.ecs, env.cluster, [task_arn])


# ---- the container instance ------------------------------------------------------------


def test_describe_container_instances_shows_resources_attributes_and_tasks(env):
    static_port = free_port()
    family = unique("sized")
    arn = register_task_definition(env.ecs, family, [httpd_container(
        cpu=128, memory=96, portMappings=[{"containerPort": 8080, "hostPort": static_port}],
    )])
    [task] = run_tasks(env.ecs, env.cluster, arn)
    [task] = wait_tasks_status(env.ecs, env.cluster, [task["taskArn"]], "RUNNING")
    assert curl_until_ok(f"http://127.0.0.1:{static_port}/") == TEST_PAGE
    # The engine enforces what the definition reserves.
    host_config = docker_inspect(container_of(task, "web")["runtimeId"])["HostConfig"]
    assert host_config["Memory"] == 96 * 1024 * 1024
    assert host_config["CpuShares"] == 128

    code, described = env.server.cli("describe-container-instances", "--cluster", env.cluster,
                                     "--container-instances", env.agent.instance_arn)
    assert code == 0, described
    assert described["failures"] == []
    [instance] = described["containerInstances"]
    assert instance["status"] == "ACTIVE"
    assert instance["agentConnected"] is True
    assert instance["ec2InstanceId"] == env.agent.instance_ids[0]

    registered = resources_by_name(instance["registeredResources"])
    remaining = resources_by_name(instance["remainingResources"])
    assert registered["CPU"] == os.cpu_count() * 1024
    with open("/proc/meminfo") as meminfo:
        total_kib = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    assert registered["MEMORY"] == total_kib // 1024
    reserved_ports = {"22", "2375", "2376", "51678", "51679", str(env.agent.metadata_port)}
    assert registered["PORTS"] == reserved_ports
    assert remaining["PORTS"] == reserved_ports | {str(static_port)}

    # Remaining = registered less what every unstopped task of the instance holds.
    live = env.ecs.list_tasks(cluster=env.cluster, containerInstance=env.agent.instance_arn)["taskArns"]
    live_tasks = describe_tasks(env.ecs, env.cluster, live)
    assert task["taskArn"] in live
    assert remaining["CPU"] == registered["CPU"] - sum(int(t["cpu"]) for t in live_tasks)
    assert remaining["MEMORY"] == registered["MEMORY"] - sum(int(t["memory"]) for t in live_tasks)
    assert instance["runningTasksCount"] == sum(t["lastStatus"] == "RUNNING" for t in live_tasks)
    assert instance["runningTasksCount"] >= 1
    assert instance["pendingTasksCount"] == sum(t["lastStatus"] == "PENDING" for t in live_tasks)

    attributes = {a["name"]: a.get("value") for a in instance["attributes"]}
    assert attributes["ecs.os-type"] == "linux"
    assert attributes["ecs.os-family"] == "LINUX"
    assert attributes["ecs.cpu-architecture"] in ("x86_64", "arm64")
    assert attributes["ecs.availability-zone"] == "local-1a"
    assert attributes["ecs.instance-type"] == "flotilla.local"
    assert "com.amazonaws.ecs.capability.docker-remote-api.1.41" in attributes
    assert "ecs.capability.task-eni" in attributes
    assert instance["versionInfo"]["agentVersion"]

    # The static port is the task's until it stops.
    clash = env.ecs.run_task(cluster=env.cluster, taskDefinition=arn)
    assert clash["tasks"] == []
    assert [f["reason"] for f in clash["failures"]] == ["RESOURCE:PORTS"]
    stop_and_wait(env.ecs, env.cluster, [task["taskArn"]])
    [instance] = env.ecs.describe_container_instances(
        cluster=env.cluster, containerInstances=[env.agent.instance_arn])["containerInstances"]
    assert str(static_port) not in resources_by_name(instance["remainingResources"])["PORTS"]


# ---- the agent going away and coming back -------------------------------------------------


def agent_connected(ecs, cluster, instance_arn) -> bool:
    [instance] = ecs.describe_container_instances(cluster=cluster, containerInstances=[instance_arn])[
        "containerInstances"]
    return instance["agentConnected"]


def metadata_seen_from_inside(container_id: str) -> dict:
    """The task metadata as the container itself reads it."""
    done = docker("exec", container_id, "sh", "-c", 'wget -qO- "$ECS_CONTAINER_METADATA_URI_V4/task"', check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("sig,network_mode", [
    (signal.SIGTERM, "bridge"), (signal.SIGKILL, "bridge"), (signal.SIGKILL, "awsvpc"),
], ids=["SIGTERM-bridge", "SIGKILL-bridge", "SIGKILL-awsvpc"])
def test_tasks_run_on_across_an_agent_restart(docker_ready, server, agent_fleet, sig, network_mode):
    """The agent process dies; its containers do not. Meanwhile the instance
    shows agentConnected false (well within the heartbeat timeout: the socket
    closes with the process) and takes no tasks. The new process with the
    same data directory re-adopts the containers: same container, same page,
    the metadata endpoint still knows them, and StopTask still reaches them."""
    cluster = cluster_name("restart")
    server.ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(server, cluster)
    instance_arn = agent.instance_arn
    if network_mode == "bridge":
        web = httpd_container()
    else:
        web = httpd_container(portMappings=[{"containerPort": 8080}])
    arn = register_task_definition(server.ecs, unique("survivor"), [web], networkMode=network_mode)
    [task] = run_tasks(server.ecs, cluster, arn)
    [task] = wait_tasks_status(server.ecs, cluster, [task["taskArn"]], "RUNNING")
    runtime_id = container_of(task, "web")["runtimeId"]
    started_at = docker_inspect(runtime_id)["State"]["StartedAt"]
    if network_mode == "bridge":
        url = f"http://127.0.0.1:{host_port_of(task)}/"
    else:
        url = f"http://{private_ipv4_of(task)}:8080/"
    assert curl_until_ok(url) == TEST_PAGE
    assert metadata_seen_from_inside(runtime_id)["TaskARN"] == task["taskArn"]

    agent.kill(sig)
    # Nobody is there to answer for the instance...
    killed_at = time.monotonic()
    wait_until(lambda: not agent_connected(server.ecs, cluster, instance_arn), HEARTBEAT_TIMEOUT_S,
               "agentConnected to become false")
    assert time.monotonic() - killed_at <= HEARTBEAT_TIMEOUT_S
    refused = server.ecs.run_task(cluster=cluster, taskDefinition=arn)
    assert refused["tasks"] == [] and [f["reason"] for f in refused["failures"]] == ["AGENT"]
    # ...but the container serves on.
    assert curl(url)[1] == TEST_PAGE
    [before] = describe_tasks(server.ecs, cluster, [task["taskArn"]])
    assert before["lastStatus"] == "RUNNING"

    agent.start().wait_connected()
    assert agent.instance_arn == instance_arn
    # Give recovery a few poll rounds to disturb what it should not.
    time.sleep(2)
    [task] = describe_tasks(server.ecs, cluster, [task["taskArn"]])
    assert task["lastStatus"] == "RUNNING"
    assert task["desiredStatus"] == "RUNNING"
    assert container_of(task, "web")["runtimeId"] == runtime_id
    assert container_of(task, "web")["networkBindings"] == container_of(before, "web")["networkBindings"]
    assert docker_inspect(runtime_id)["State"]["StartedAt"] == started_at
    assert curl(url)[1] == TEST_PAGE
    assert metadata_seen_from_inside(runtime_id)["TaskARN"] == task["taskArn"]
    [instance] = server.ecs.describe_container_instances(cluster=cluster, containerInstances=[instance_arn])[
        "containerInstances"]
    assert instance["runningTasksCount"] == 1

    # The restarted agent is in charge of the old container.
    [task] = stop_and_wait(server.ecs, cluster, [task["taskArn"]])
    assert container_of(task, "web")["exitCode"] == 0
    assert docker_inspect(runtime_id)["State"]["Running"] is False


def test_what_happens_while_the_agent_is_down_is_settled_when_it_returns(docker_ready, server, agent_fleet):
    """StopTask of a task whose agent is down, and an essential container
    that exits meanwhile: the agent acts on and reports both when it is back."""
    cluster = cluster_name("offline")
    server.ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(server, cluster)
    web = register_task_definition(server.ecs, unique("offline-web"), [httpd_container()])
    short = register_task_definition(server.ecs, unique("offline-short"), [{
        "name": "app", "image": TEST_IMAGE, "memory": 32,
        # Runs long enough to outlive the agent, not long enough to outlive its absence.
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 4 & wait; exit 5"],
    }])
    [to_stop] = run_tasks(server.ecs, cluster, web)
    [to_exit] = run_tasks(server.ecs, cluster, short)
    arns = [to_stop["taskArn"], to_exit["taskArn"]]
    to_stop, to_exit = wait_tasks_status(server.ecs, cluster, arns, "RUNNING")
    web_id = container_of(to_stop, "web")["runtimeId"]
    exiting_id = container_of(to_exit, "app")["runtimeId"]

    agent.kill(signal.SIGKILL)
    wait_until(lambda: not agent_connected(server.ecs, cluster, agent.instance_arn), HEARTBEAT_TIMEOUT_S,
               "agentConnected to become false")
    stopping = server.ecs.stop_task(cluster=cluster, task=arns[0], reason="stopped while the agent was away")["task"]
    assert stopping["desiredStatus"] == "STOPPED"
    assert stopping["lastStatus"] == "RUNNING"  # nobody has stopped it yet
    wait_until(lambda: not docker_inspect(exiting_id)["State"]["Running"], 20, "the short container to exit")
    assert docker_inspect(web_id)["State"]["Running"]

    agent.start().wait_connected()
    stopped, exited = wait_tasks_status(server.ecs, cluster, arns, "STOPPED")
    assert stopped["stopCode"] == "UserInitiated"
    assert stopped["stoppedReason"] == "stopped while the agent was away"
    assert container_of(stopped, "web")["exitCode"] == 0
    assert docker_inspect(web_id)["State"]["Running"] is False
    assert exited["stopCode"] == "EssentialContainerExited"
    assert container_of(exited, "app")["exitCode"] == 5
    [instance] = server.ecs.describe_container_instances(
        cluster=cluster, containerInstances=[agent.instance_arn])["containerInstances"]
    assert instance["runningTasksCount"] == 0
    assert resources_by_name(instance["remainingResources"])["MEMORY"] == \
        resources_by_name(instance["registeredResources"])["MEMORY"]


# Servers of a test's own (server_factory) number their instances' task
# subnets from 100.64.0.0/24 again, as the module's server does; two awsvpc
# networks with one subnet cannot coexist on an engine, so tests on such
# servers stay in bridge mode.


def test_tasks_run_on_across_a_control_plane_crash(docker_ready, server_factory, agent_fleet):
    """The server is killed (-9) and started again on the same port and
    data: the agent reconnects, the task never noticed, and StopTask works."""
    server = server_factory()
    cluster = cluster_name("server-crash")
    server.ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(server, cluster)
    arn = register_task_definition(server.ecs, unique("server-crash"), [httpd_container()])
    [task] = run_tasks(server.ecs, cluster, arn)
    [task] = wait_tasks_status(server.ecs, cluster, [task["taskArn"]], "RUNNING")
    runtime_id = container_of(task, "web")["runtimeId"]
    url = f"http://127.0.0.1:{host_port_of(task)}/"

    server.restart(hard=True, keep_port=True)
    assert curl(url)[1] == TEST_PAGE
    agent.wait_connected()
    [task] = describe_tasks(server.ecs, cluster, [task["taskArn"]])
    assert task["lastStatus"] == "RUNNING"
    assert container_of(task, "web")["runtimeId"] == runtime_id
    [task] = stop_and_wait(server.ecs, cluster, [task["taskArn"]])
    assert task["stopCode"] == "UserInitiated"
    assert agent.running


def test_stopped_tasks_containers_are_removed_after_the_cleanup_wait(docker_ready, server, agent_fleet):
    cluster = cluster_name("cleanup")
    server.ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster, "--task-cleanup-wait-seconds", "2")
    arn = register_task_definition(server.ecs, unique("cleanup"), [{
        "name": "app", "image": TEST_IMAGE, "memory": 32, "command": ["sh", "-c", "echo bye > /scratch/x"],
        "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/scratch"}],
    }], volumes=[{"name": "scratch"}])
    [task] = run_tasks(server.ecs, cluster, arn)
    [task] = wait_tasks_status(server.ecs, cluster, [task["taskArn"]], "STOPPED")
    runtime_id = container_of(task, "app")["runtimeId"]
    task_id = task["taskArn"].rsplit("/", 1)[-1]
    assert docker("volume", "ls", "-q", "--filter", f"name=flotilla-{task_id}").stdout.strip()

    def gone():
        return docker("inspect", runtime_id, check=False).returncode != 0

    wait_until(gone, 15, "the stopped task's container to be removed")
    assert not docker("volume", "ls", "-q", "--filter", f"name=flotilla-{task_id}").stdout.strip()
    # The control plane still describes the task.
    [task] = describe_tasks(server.ecs, cluster, [task["taskArn"]])
    assert task["lastStatus"] == "STOPPED"


# A server that gives up on a silent agent sooner than the default 30 s, but
# later than the agents' 10 s heartbeat interval, so live agents stay connected.
SHORT_HEARTBEAT_TIMEOUT_MS = 12_000


def test_frozen_agent_is_shown_disconnected_after_the_heartbeat_timeout(docker_ready, server_factory, agent_fleet):
    """A frozen agent (SIGSTOP) keeps its connection open but says nothing:
    the server must notice the silence. Thawed, it connects again."""
    server = server_factory(extra_args=("--agent-heartbeat-timeout-ms", str(SHORT_HEARTBEAT_TIMEOUT_MS)))
    cluster = cluster_name("frozen")
    server.ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(server, cluster)
    arn = register_task_definition(server.ecs, unique("frozen-web"), [httpd_container()])
    [task] = run_tasks(server.ecs, cluster, arn)
    [task] = wait_tasks_status(server.ecs, cluster, [task["taskArn"]], "RUNNING")
    port = host_port_of(task)

    agent.process.send_signal(signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        wait_until(lambda: not agent_connected(server.ecs, cluster, agent.instance_arn),
                   SHORT_HEARTBEAT_TIMEOUT_MS / 1000 + 5, "agentConnected to become false")
        assert time.monotonic() - frozen_at <= SHORT_HEARTBEAT_TIMEOUT_MS / 1000 + 2
        refused = server.ecs.run_task(cluster=cluster, taskDefinition=arn)
        assert [f["reason"] for f in refused["failures"]] == ["AGENT"]
        assert curl(f"http://127.0.0.1:{port}/")[1] == TEST_PAGE
    finally:
        agent.process.send_signal(signal.SIGCONT)
    agent.wait_connected()
    [task] = describe_tasks(server.ecs, cluster, [task["taskArn"]])
    assert task["lastStatus"] == "RUNNING"
    stop_and_wait(server.ecs, cluster, [task["taskArn"]])
