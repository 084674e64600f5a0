"""Services on simulated hosts (`flotilla agent --simulate N`, fake runtime):
the service API through the AWS CLI and boto3, reconciliation, scaling,
the rolling example of the seed documents with its bounds checked at every
observed step, the circuit breaker's rollback (tasks that cannot start,
tasks that exit after RUNNING with and without resetOnHealthyTask, tasks
that fail their health checks), DAEMON services, draining, agent loss,
scale-in protection, events, 1,000 tasks registered in and drained from
one target group, a kill -9 of the control plane in the middle
of a deployment, a service running on after its revision is deregistered,
and the managed and propagated tags of service tasks.

The module's server holds a steady state for STABILIZATION_MS before a
deployment completes (`--service-stabilization-ms`), not ECS's 40 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter

import pytest
from botocore.exceptions import ClientError

from conftest import _launch
from support import (
    FLOTILLA_BIN,
    error_of,
    register_task_definition,
    strip_line_comments,
    free_port,
    unique,
    wait_until,
)

ZONES = ["local-1a", "local-1b", "local-1c"]
# Far longer than a `sim/exit` container lives (100 ms) plus the agent's
# one-second container poll and its report, even on a busy machine.
STABILIZATION_MS = 5000
SERVICE_TIMEOUT_S = 60.0
# Fast waiters: the AWS defaults poll every 15 s.
FAST = {"Delay": 1, "MaxAttempts": 60}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole module, with a short stabilization period."""
    yield from _launch(tmp_path_factory.mktemp("flotilla-module"),
                       extra_args=("--service-stabilization-ms", str(STABILIZATION_MS)))


def make_cluster(server, fleet, instances: int, *extra: str) -> str:
    cluster = unique(f"svc-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    fleet.start(server, cluster, "--simulate", str(instances), "--simulate-zones", ",".join(ZONES), *extra)
    return cluster


def definition(ecs, family: str, image: str = "sim/app:v1", memory: int = 128, **container) -> str:
    return register_task_definition(ecs, family, [
        {"name": "app", "image": image, "memory": memory, "cpu": 64, "essential": True, **container},
    ])


def service_tasks(ecs, cluster: str, name: str, include_stopped: bool = False) -> list[dict]:
    arns = []
    for desired in (["RUNNING", "STOPPED"] if include_stopped else ["RUNNING"]):
        for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, serviceName=name, desiredStatus=desired):
            arns.extend(page["taskArns"])
    # A task asked to stop between the two listings is in both.
    arns = list(dict.fromkeys(arns))
    tasks = []
    for start in range(0, len(arns), 100):
        tasks.extend(ecs.describe_tasks(cluster=cluster, tasks=arns[start:start + 100])["tasks"])
    return tasks


def census(ecs, cluster: str, name: str) -> tuple[Counter, int]:
    """Tasks not yet STOPPED per task definition revision, and how many are
    RUNNING and not asked to stop."""
    tasks = [t for t in service_tasks(ecs, cluster, name, include_stopped=True) if t["lastStatus"] != "STOPPED"]
    by_revision = Counter(t["taskDefinitionArn"].rsplit(":", 1)[1] for t in tasks)
    healthy = sum(1 for t in tasks if t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING")
    return by_revision, healthy


def describe(ecs, cluster: str, name: str) -> dict:
    answer = ecs.describe_services(cluster=cluster, services=[name])
    assert answer["failures"] == [], answer
    return answer["services"][0]


def wait_stable(ecs, cluster: str, name: str):
    """`aws ecs wait services-stable` (one deployment, the running count at
    the desired count), then the deployment COMPLETED: it completes once its
    steady state has held for the stabilization period."""
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig=FAST)

    def completed():
        service = describe(ecs, cluster, name)
        done = len(service["deployments"]) == 1 and service["deployments"][0]["rolloutState"] == "COMPLETED"
        return service if done else None

    return wait_until(completed, SERVICE_TIMEOUT_S, f"service {name}'s deployment to complete")


def events_of(service: dict) -> list[str]:
    return [e["message"] for e in service["events"]]


def wait_rolled_back(ecs, cluster: str, name: str, good: str) -> dict:
    """Waits for the circuit breaker to fail the deployment, then for the
    service to be stable on `good` again; returns it."""

    def tripped():
        return any("deployment failed: tasks failed to start." in m for m in events_of(describe(ecs, cluster, name)))

    wait_until(tripped, SERVICE_TIMEOUT_S, "the circuit breaker to trip")
    stable = wait_stable(ecs, cluster, name)
    assert stable["taskDefinition"].endswith(good), (stable["taskDefinition"], good)
    assert any("rolling back to deployment" in m for m in events_of(stable)), events_of(stable)
    return stable


def rolled_back_breaker(ecs, cluster: str, name: str) -> dict:
    """The circuit breaker of the service's rolled back deployment, as
    DescribeServiceDeployments shows it."""
    listed = ecs.list_service_deployments(cluster=cluster, service=name)["serviceDeployments"]
    [failed] = [d for d in listed if d["status"] == "ROLLBACK_SUCCESSFUL"]
    [described] = ecs.describe_service_deployments(
        serviceDeploymentArns=[failed["serviceDeploymentArn"]])["serviceDeployments"]
    return described["deploymentCircuitBreaker"]


def test_seed_service_example_is_accepted_as_written(server, agent_fleet, seeds_dir, tmp_path):
    """000: the nginx service example, `//` comment stripped, through the CLI."""
    cluster = "default"
    server.ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster, "--simulate", "2")
    # The example's task definition logs with awslogs to a group it does not
    # ask to create: it must exist before its containers start.
    server.client("logs").create_log_group(logGroupName="/ecs/nginx")
    # The example's task definition, switched to awsvpc as its comment says
    # a service with an awsvpcConfiguration needs.
    task_definition = json.loads(strip_line_comments((seeds_dir / "nginx-task-def.jsonc").read_text()))
    task_definition["networkMode"] = "awsvpc"
    task_definition["containerDefinitions"][0]["portMappings"][0]["hostPort"] = 80
    server.ecs.register_task_definition(**task_definition)
    text = strip_line_comments((seeds_dir / "nginx-service.jsonc").read_text())
    # The example names its target group by a placeholder ARN: make one
    # with the AWS CLI (ip targets, as awsvpc tasks need), attached to a
    # load balancer as ECS requires, and name it instead.
    elbv2 = server.client("elbv2")
    group = elbv2.create_target_group(Name="my-target-group", Protocol="HTTP", Port=80, VpcId="vpc-0123",
                                      TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    balancer = elbv2.create_load_balancer(Name=unique("nginx"))["LoadBalancers"][0]
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=free_port(),
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
    placeholder = json.loads(text)["loadBalancers"][0]["targetGroupArn"]
    text = text.replace(placeholder, group)
    path = tmp_path / "nginx-service.json"
    path.write_text(text)
    code, out = server.cli("create-service", "--cli-input-json", f"file://{path}")
    assert code == 0, out
    service = out["service"]
    sent = json.loads(text)
    assert service["serviceName"] == "nginx-service"
    assert service["status"] == "ACTIVE"
    assert service["desiredCount"] == 2
    assert service["launchType"] == "EC2"
    assert service["loadBalancers"] == sent["loadBalancers"]
    assert service["networkConfiguration"] == sent["networkConfiguration"]
    assert service["deploymentConfiguration"]["maximumPercent"] == 200
    assert service["deploymentConfiguration"]["minimumHealthyPercent"] == 100
    assert service["schedulingStrategy"] == "REPLICA"
    [deployment] = service["deployments"]
    assert deployment["status"] == "PRIMARY" and deployment["rolloutState"] == "IN_PROGRESS"
    assert deployment["id"].startswith("ecs-svc/")
    # Simulated tasks serve nothing, so their targets never turn healthy and
    # the deployment stays in progress, as ECS's would: check that both
    # tasks run.
    wait_until(lambda: server.ecs.describe_services(cluster=cluster, services=["nginx-service"])
               ["services"][0]["runningCount"] == 2, 60, "two running tasks")
    tasks = service_tasks(server.ecs, cluster, "nginx-service")
    assert len(tasks) == 2
    assert all(t["group"] == "service:nginx-service" and t["startedBy"] == deployment["id"] for t in tasks)
    assert all(t["attachments"][0]["type"] == "ElasticNetworkInterface" for t in tasks)
    # Each running awsvpc task is registered by its address and the
    # container port. Simulated tasks answer no health check, so the
    # service replaces them after the grace period: compare with the tasks
    # running at each look.
    def registered():
        running = {d["value"] for t in service_tasks(server.ecs, cluster, "nginx-service")
                   if t["lastStatus"] == "RUNNING"
                   for d in t["attachments"][0]["details"] if d["name"] == "privateIPv4Address"}
        health = elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
        live = {(d["Target"]["Id"], d["Target"]["Port"]) for d in health if d["TargetHealth"]["State"] != "draining"}
        return len(running) == 2 and live == {(address, 80) for address in running}
    wait_until(registered, 30, "running tasks registered by address and port 80")
    code, out = server.cli("list-services", "--cluster", cluster)
    assert code == 0 and out["serviceArns"] == [service["serviceArn"]], out
    code, out = server.cli("delete-service", "--cluster", cluster, "--service", "nginx-service")
    assert code != 0 and "scaled above 0" in str(out), out
    code, out = server.cli("delete-service", "--cluster", cluster, "--service", "nginx-service", "--force")
    assert code == 0 and out["service"]["status"] == "DRAINING", out
    code, out = server.cli("wait", "services-inactive", "--cluster", cluster, "--services", "nginx-service")
    assert code == 0, out
    assert describe(server.ecs, cluster, "nginx-service")["status"] == "INACTIVE"
    assert server.ecs.list_services(cluster=cluster)["serviceArns"] == []


def test_service_keeps_its_desired_count_and_scales(server, agent_fleet):
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 6)
    family = unique("web")
    definition(ecs, family)
    name = unique("web")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=6)
    stable = wait_stable(ecs, cluster, name)
    assert stable["runningCount"] == 6 and stable["pendingCount"] == 0
    messages = events_of(stable)
    assert any(m == f"(service {name}) has reached a steady state." for m in messages), messages
    assert any(m.startswith(f"(service {name}) has started 6 tasks: (task ") for m in messages), messages
    tasks = service_tasks(ecs, cluster, name)
    assert Counter(t["availabilityZone"] for t in tasks) == Counter({zone: 2 for zone in ZONES})
    # A task that stops is replaced.
    victim = tasks[0]["taskArn"]
    ecs.stop_task(cluster=cluster, task=victim, reason="chaos")
    wait_until(lambda: victim not in [t["taskArn"] for t in service_tasks(ecs, cluster, name)]
               and len([t for t in service_tasks(ecs, cluster, name) if t["lastStatus"] == "RUNNING"]) == 6,
               SERVICE_TIMEOUT_S, "the stopped task to be replaced")
    # Out to 12, in to 3, balanced over zones.
    ecs.update_service(cluster=cluster, service=name, desiredCount=12)
    assert wait_stable(ecs, cluster, name)["runningCount"] == 12
    ecs.update_service(cluster=cluster, service=name, desiredCount=3)
    wait_until(lambda: len(service_tasks(ecs, cluster, name)) == 3, SERVICE_TIMEOUT_S, "scale-in to 3")
    stable = wait_stable(ecs, cluster, name)
    assert stable["runningCount"] == 3
    zones = Counter(t["availabilityZone"] for t in service_tasks(ecs, cluster, name))
    assert sorted(zones.values()) == [1, 1, 1], zones
    assert any("has stopped 9 running tasks" in m for m in events_of(stable)), events_of(stable)


def test_rolling_example_stays_within_its_bounds_at_every_step(server, agent_fleet):
    """001: 4 tasks, minimum 50%, maximum 100%: v1 v1 v1 v1 → v1 v1 →
    v1 v1 v2 v2 → v2 v2 → v2 v2 v2 v2, healthy never below 2, total never above 4."""
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 4, "--simulate-start-delay-ms", "400")
    family = unique("roll")
    definition(ecs, family, "sim/app:v1")
    name = unique("roll")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=f"{family}:1", desiredCount=4,
                       deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 100})
    wait_stable(ecs, cluster, name)
    definition(ecs, family, "sim/app:v2")
    events_before = len(describe(ecs, cluster, name)["events"])
    seen = [(4, 0)]
    ecs.update_service(cluster=cluster, service=name, taskDefinition=f"{family}:2")
    deadline = time.monotonic() + SERVICE_TIMEOUT_S
    while time.monotonic() < deadline:
        by_revision, healthy = census(ecs, cluster, name)
        total = sum(by_revision.values())
        assert total <= 4, f"more than maximumPercent: {by_revision}"
        assert healthy >= 2, f"fewer than minimumHealthyPercent healthy: {by_revision}, {healthy} healthy"
        state = (by_revision.get("1", 0), by_revision.get("2", 0))
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == (0, 4) and healthy == 4:
            break
        time.sleep(0.05)
    # Some states last only between two reports; every one observed is one
    # of the example's, in its order. The two tasks of a stop step are stopped
    # in one transaction but reported STOPPED by their agents one at a time,
    # so (3, 0) and (1, 2) may be seen in between, and when the two reports
    # reach separate passes, the new tasks start one by one: (2, 1), (0, 3).
    expected = [(4, 0), (3, 0), (2, 0), (2, 1), (2, 2), (1, 2), (0, 2), (0, 3), (0, 4)]
    assert seen[-1] == (0, 4), seen
    assert [state for state in expected if state in seen] == seen, seen
    stable = wait_stable(ecs, cluster, name)
    # The events say every step, oldest first: stop two, start two, stop two,
    # start two (a start may come in two events of one task each).
    steps: list[list] = []
    for message in reversed(events_of(stable)[:len(stable["events"]) - events_before]):
        found = re.search(r"\) has (stopped|started) (\d+) (running )?tasks", message)
        if not found:
            continue
        kind, count = found.group(1), int(found.group(2))
        if steps and steps[-1][0] == kind:
            steps[-1][1] += count
        else:
            steps.append([kind, count])
    assert steps == [["stopped", 2], ["started", 2], ["stopped", 2], ["started", 2]], steps
    assert stable["taskDefinition"].endswith(f"{family}:2")
    [deployment] = stable["deployments"]
    assert deployment["rolloutState"] == "COMPLETED"
    listed = ecs.list_service_deployments(cluster=cluster, service=name)["serviceDeployments"]
    assert [d["status"] for d in listed] == ["SUCCESSFUL", "SUCCESSFUL"], listed
    described = ecs.describe_service_deployments(serviceDeploymentArns=[listed[0]["serviceDeploymentArn"]])
    [newest] = described["serviceDeployments"]
    assert newest["targetServiceRevision"]["requestedTaskCount"] == 4
    assert len(newest["sourceServiceRevisions"]) == 1


def test_circuit_breaker_rolls_back_a_deployment_that_cannot_start(server, agent_fleet):
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 3)
    family = unique("cb")
    definition(ecs, family, "sim/app:v1")
    name = unique("cb")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=f"{family}:1", desiredCount=4,
                       deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    first_deployment = wait_stable(ecs, cluster, name)["deployments"][0]["id"]
    definition(ecs, family, "sim/fail-pull:v2")
    ecs.update_service(cluster=cluster, service=name, taskDefinition=f"{family}:2")
    stable = wait_rolled_back(ecs, cluster, name, f"{family}:1")
    revisions = Counter(t["taskDefinitionArn"].rsplit(":", 1)[1] for t in service_tasks(ecs, cluster, name))
    assert revisions == Counter({"1": 4})
    breaker = rolled_back_breaker(ecs, cluster, name)
    assert breaker["status"] == "TRIGGERED" and breaker["threshold"] == 3, breaker
    assert breaker["failureCount"] >= 3, breaker
    # The last completed deployment became PRIMARY again and kept its tasks.
    assert stable["deployments"][0]["id"] == first_deployment
    assert "rolling back" in stable["deployments"][0]["rolloutStateReason"] or \
        stable["deployments"][0]["rolloutState"] == "COMPLETED"


def test_daemon_runs_one_task_per_instance_and_follows_the_fleet(server, agent_fleet):
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 3)
    family = unique("daemon")
    definition(ecs, family)
    name = unique("daemon")
    with pytest.raises(ClientError) as excinfo:
        ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family,
                           schedulingStrategy="DAEMON", desiredCount=2)
    assert error_of(excinfo)[0] == "InvalidParameterException"
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, schedulingStrategy="DAEMON")
    stable = wait_stable(ecs, cluster, name)
    assert stable["desiredCount"] == 3 and stable["schedulingStrategy"] == "DAEMON"
    instances = {t["containerInstanceArn"] for t in service_tasks(ecs, cluster, name)}
    assert len(instances) == 3
    # A new instance gets one.
    agent_fleet.start(server, cluster, "--simulate", "1")
    wait_until(lambda: describe(ecs, cluster, name)["desiredCount"] == 4, SERVICE_TIMEOUT_S, "desired 4")
    assert wait_stable(ecs, cluster, name)["runningCount"] == 4
    # A draining one loses it.
    drained = sorted(instances)[0]
    ecs.update_container_instances_state(cluster=cluster, containerInstances=[drained], status="DRAINING")
    wait_until(lambda: drained not in {t["containerInstanceArn"] for t in service_tasks(ecs, cluster, name)},
               SERVICE_TIMEOUT_S, "the draining instance's daemon task to stop")
    assert wait_stable(ecs, cluster, name)["runningCount"] == 3


def test_draining_instance_tasks_move_elsewhere(server, agent_fleet):
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 3)
    family = unique("drain")
    definition(ecs, family)
    name = unique("drain")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=6)
    wait_stable(ecs, cluster, name)
    by_instance = Counter(t["containerInstanceArn"] for t in service_tasks(ecs, cluster, name))
    drained = by_instance.most_common(1)[0][0]
    ecs.update_container_instances_state(cluster=cluster, containerInstances=[drained], status="DRAINING")
    wait_until(lambda: all(t["containerInstanceArn"] != drained for t in service_tasks(ecs, cluster, name)),
               SERVICE_TIMEOUT_S, "tasks to leave the draining instance")
    stable = wait_stable(ecs, cluster, name)
    assert stable["runningCount"] == 6
    instance = ecs.describe_container_instances(cluster=cluster, containerInstances=[drained])["containerInstances"][0]
    assert instance["runningTasksCount"] == 0 and instance["pendingTasksCount"] == 0


def test_tasks_of_a_lost_agent_are_replaced_after_the_timeout(server_factory, agent_fleet):
    server = server_factory(extra_args=("--service-agent-lost-timeout-ms", "3000",
                                        "--agent-heartbeat-timeout-ms", "11000"))
    ecs = server.ecs
    cluster = unique("lost")
    ecs.create_cluster(clusterName=cluster)
    doomed = agent_fleet.start(server, cluster, "--simulate", "2")
    agent_fleet.start(server, cluster, "--simulate", "2")
    family = unique("lost")
    definition(ecs, family)
    name = unique("lost")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=8,
                       placementConstraints=[], placementStrategy=[{"type": "spread", "field": "instanceId"}])
    wait_stable(ecs, cluster, name)
    lost = set(doomed.instance_arns)
    assert sum(1 for t in service_tasks(ecs, cluster, name) if t["containerInstanceArn"] in lost) == 4
    doomed.kill(signal.SIGKILL)

    def replaced():
        live = [t for t in service_tasks(ecs, cluster, name) if t["desiredStatus"] == "RUNNING"]
        return len(live) == 8 and all(t["containerInstanceArn"] not in lost for t in live)

    wait_until(replaced, SERVICE_TIMEOUT_S, "tasks of the lost agent to be replaced")
    service = wait_stable(ecs, cluster, name)
    assert any("its agent has been disconnected too long" in m for m in events_of(service)), events_of(service)


def test_protected_tasks_survive_scale_in(server, agent_fleet):
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 2)
    family = unique("prot")
    definition(ecs, family)
    name = unique("prot")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=4)
    wait_stable(ecs, cluster, name)
    keep = sorted(t["taskArn"] for t in service_tasks(ecs, cluster, name))[:2]
    answer = ecs.update_task_protection(cluster=cluster, tasks=keep, protectionEnabled=True, expiresInMinutes=60)
    assert answer["failures"] == [] and all(p["protectionEnabled"] for p in answer["protectedTasks"])
    got = ecs.get_task_protection(cluster=cluster, tasks=keep)["protectedTasks"]
    assert all(p["protectionEnabled"] and p["expirationDate"] for p in got)
    ecs.update_service(cluster=cluster, service=name, desiredCount=2)
    wait_until(lambda: sorted(t["taskArn"] for t in service_tasks(ecs, cluster, name)) == keep,
               SERVICE_TIMEOUT_S, "scale-in to stop only unprotected tasks")


def test_unplaceable_tasks_are_reported_in_events(server, agent_fleet):
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 1, "--simulate-memory", "1024")
    family = unique("big")
    definition(ecs, family, memory=600)
    name = unique("big")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=2)

    def reported():
        messages = events_of(describe(ecs, cluster, name))
        return [m for m in messages if "was unable to place a task" in m]

    [message] = wait_until(reported, SERVICE_TIMEOUT_S, "the placement failure event")
    assert message.startswith(f"(service {name}) was unable to place a task because no container instance met "
                              "all of its requirements. The closest matching (container-instance ")
    assert message.endswith(") has insufficient memory available (not enough memory: needs 600, has 424). "
                            "For more information, see the Troubleshooting section."), message
    wait_until(lambda: describe(ecs, cluster, name)["runningCount"] == 1, SERVICE_TIMEOUT_S, "the task that fits")


def test_refused_service_requests_change_nothing(server, agent_fleet):
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 1)
    family = unique("bad")
    definition(ecs, family)
    cases = [
        ({"serviceName": "x y", "taskDefinition": family, "desiredCount": 1}, "InvalidParameterException"),
        ({"serviceName": "ok", "taskDefinition": "nope-none", "desiredCount": 1}, "ClientException"),
        ({"serviceName": "ok", "taskDefinition": family, "desiredCount": 1,
          "deploymentConfiguration": {"maximumPercent": 50}}, "InvalidParameterException"),
        ({"serviceName": "ok", "taskDefinition": family, "desiredCount": 1, "launchType": "EC2",
          "capacityProviderStrategy": [{"capacityProvider": "FARGATE"}]}, "InvalidParameterException"),
        ({"serviceName": "ok", "taskDefinition": family, "desiredCount": 1,
          "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}}}, "InvalidParameterException"),
    ]
    for params, code in cases:
        with pytest.raises(ClientError) as excinfo:
            ecs.create_service(cluster=cluster, **params)
        assert error_of(excinfo)[0] == code, (params, error_of(excinfo))
    assert ecs.list_services(cluster=cluster)["serviceArns"] == []
    created = ecs.create_service(cluster=cluster, serviceName="ok", taskDefinition=family, desiredCount=0,
                                 tags=[{"key": "team", "value": "a"}])["service"]
    ecs.tag_resource(resourceArn=created["serviceArn"], tags=[{"key": "tier", "value": "web"}])
    tags = ecs.list_tags_for_resource(resourceArn=created["serviceArn"])["tags"]
    assert sorted((t["key"], t["value"]) for t in tags) == [("team", "a"), ("tier", "web")]
    described = ecs.describe_services(cluster=cluster, services=["ok"], include=["TAGS"])["services"][0]
    assert len(described["tags"]) == 2
    with pytest.raises(ClientError) as excinfo:
        ecs.create_service(cluster=cluster, serviceName="ok", taskDefinition=family, desiredCount=0)
    assert error_of(excinfo) == ("InvalidParameterException", "Creation of service was not idempotent.")
    with pytest.raises(ClientError) as excinfo:
        ecs.update_service(cluster=cluster, service="missing", desiredCount=1)
    assert error_of(excinfo)[0] == "ServiceNotFoundException"
    missing = ecs.describe_services(cluster=cluster, services=["missing"])
    assert missing["services"] == [] and missing["failures"][0]["reason"] == "MISSING"


def test_kill9_in_the_middle_of_a_deployment_carries_on(fresh_server, agent_fleet):
    server = fresh_server
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 4, "--simulate-start-delay-ms", "300")
    family = unique("crash")
    definition(ecs, family, "sim/app:v1")
    name = unique("crash")
    desired = 8
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=f"{family}:1", desiredCount=desired,
                       deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 150})
    wait_stable(ecs, cluster, name)
    definition(ecs, family, "sim/app:v2")
    ecs.update_service(cluster=cluster, service=name, taskDefinition=f"{family}:2")
    # Let the deployment get going, then kill the control plane, twice.
    for pause in (0.4, 0.9):
        time.sleep(pause)
        by_revision, _ = census(ecs, cluster, name)
        assert sum(by_revision.values()) <= 12, by_revision
        server.restart(hard=True, keep_port=True)
        ecs = server.ecs
    deadline = time.monotonic() + SERVICE_TIMEOUT_S
    while time.monotonic() < deadline:
        by_revision, _ = census(ecs, cluster, name)
        assert sum(by_revision.values()) <= 12, f"more than maximumPercent after a restart: {by_revision}"
        if by_revision == Counter({"2": desired}):
            break
        time.sleep(0.1)
    stable = wait_stable(ecs, cluster, name)
    assert stable["taskDefinition"].endswith(f"{family}:2")
    assert stable["deployments"][0]["rolloutState"] == "COMPLETED"
    started = [t for t in service_tasks(ecs, cluster, name, include_stopped=True)
               if t["taskDefinitionArn"].endswith(f"{family}:2")]
    assert len(started) == desired, f"{len(started)} tasks of the new revision were started for {desired}"


def deploy_cli(server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run([str(FLOTILLA_BIN), "service", "deploy", "--endpoint", server.endpoint, *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_service_deploy_cli_follows_the_rollout_and_says_how_it_ended(server, agent_fleet):
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 3)
    family = unique("cli")
    definition(ecs, family, "sim/app:v1")
    name = unique("cli")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=f"{family}:1", desiredCount=3,
                       deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    wait_stable(ecs, cluster, name)
    definition(ecs, family, "sim/app:v2")
    done = deploy_cli(server, "--cluster", cluster, "--service", name, "--task-definition", f"{family}:2")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"deploying arn:aws:ecs:us-east-1:000000000000:task-definition/{family}:2 to service {name}")
    assert any(line.startswith("[") and "new running" in line and "old draining" in line for line in lines), lines
    assert any(f"(service {name}) has started" in line for line in lines), lines
    assert lines[-1].endswith("completed"), lines
    definition(ecs, family, "sim/fail-pull:v3")
    failed = deploy_cli(server, "--cluster", cluster, "--service", name, "--task-definition", f"{family}:3")
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "deployment failed: tasks failed to start." in failed.stdout
    assert failed.stdout.splitlines()[-1].endswith("failed and was rolled back")
    assert describe(ecs, cluster, name)["taskDefinition"].endswith(f"{family}:2")


def test_a_deregistered_revision_keeps_its_service_running(server, agent_fleet):
    """A service goes on running, replacing and scaling the revision it runs
    after DeregisterTaskDefinition; no request may take an INACTIVE one up."""
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 2)
    family = unique("inactive")
    old = definition(ecs, family)
    name = unique("inactive")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=f"{family}:1", desiredCount=2)
    wait_stable(ecs, cluster, name)
    code, out = server.cli("deregister-task-definition", "--task-definition", f"{family}:1")
    assert code == 0 and out["taskDefinition"]["status"] == "INACTIVE", out
    victim = service_tasks(ecs, cluster, name)[0]["taskArn"]
    ecs.stop_task(cluster=cluster, task=victim, reason="chaos")

    def replaced():
        tasks = service_tasks(ecs, cluster, name)
        running = [t for t in tasks if t["lastStatus"] == "RUNNING" and t["taskDefinitionArn"] == old]
        return victim not in [t["taskArn"] for t in tasks] and len(running) == 2

    wait_until(replaced, SERVICE_TIMEOUT_S, "the stopped task to be replaced on the INACTIVE revision")
    code, out = server.cli("update-service", "--cluster", cluster, "--service", name, "--desired-count", "3")
    assert code == 0, out
    stable = wait_stable(ecs, cluster, name)
    assert stable["runningCount"] == 3 and stable["taskDefinition"] == old
    assert {t["taskDefinitionArn"] for t in service_tasks(ecs, cluster, name)} == {old}
    # Refused, and nothing changes.
    other = unique("other")
    code, out = server.cli("create-service", "--cluster", cluster, "--service-name", other,
                           "--task-definition", f"{family}:1", "--desired-count", "1")
    assert code != 0 and "ClientException" in out and "TaskDefinition is inactive" in out, out
    definition(ecs, family, "sim/app:v2")
    ecs.deregister_task_definition(taskDefinition=f"{family}:2")
    for call in (
        lambda: ecs.update_service(cluster=cluster, service=name, taskDefinition=f"{family}:2"),
        lambda: ecs.run_task(cluster=cluster, taskDefinition=f"{family}:1"),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_of(excinfo) == ("ClientException", "TaskDefinition is inactive")
    assert ecs.list_services(cluster=cluster)["serviceArns"] == [stable["serviceArn"]]
    after = describe(ecs, cluster, name)
    assert after["taskDefinition"] == old
    assert [d["id"] for d in after["deployments"]] == [d["id"] for d in stable["deployments"]]


def counting_breaker(threshold: int, reset_on_healthy: bool) -> dict:
    return {"deploymentCircuitBreaker": {
        "enable": True, "rollback": True, "resetOnHealthyTask": reset_on_healthy,
        "thresholdConfiguration": {"type": "COUNT", "value": threshold},
    }}


def crashed_tasks(ecs, cluster: str, name: str, task_definition: str) -> int:
    return sum(1 for t in service_tasks(ecs, cluster, name, include_stopped=True)
               if t["taskDefinitionArn"] == task_definition and t.get("stopCode") == "EssentialContainerExited"
               and "startedAt" in t)


def test_circuit_breaker_counts_tasks_that_exit_after_running_with_or_without_resets(server, agent_fleet):
    """Tasks that reach RUNNING and exit a moment later, one at a time,
    never hold their health for the stabilization period: none of them
    counts as healthy, so none resets the count, and the failures trip the
    breaker whether or not healthy tasks would reset it. The deployment
    never completes on the way."""
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 2)
    for reset in (True, False):
        family = unique("crash")
        good = definition(ecs, family, "sim/app:v1")
        name = unique("crash")
        ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=good, desiredCount=1,
                           deploymentConfiguration=counting_breaker(3, reset))
        wait_until(lambda: describe(ecs, cluster, name)["deployments"][0]["rolloutState"] == "COMPLETED",
                   SERVICE_TIMEOUT_S, "the first deployment to complete")
        bad = definition(ecs, family, "sim/exit:1")
        ecs.update_service(cluster=cluster, service=name, taskDefinition=bad)

        def tripped():
            service = describe(ecs, cluster, name)
            for deployment in service["deployments"]:
                if deployment["taskDefinition"] == bad:
                    assert deployment["rolloutState"] != "COMPLETED", service["deployments"]
            return any("deployment failed: tasks failed to start." in m for m in events_of(service))

        wait_until(tripped, SERVICE_TIMEOUT_S, f"the breaker to trip (reset on healthy: {reset})")
        wait_rolled_back(ecs, cluster, name, good)
        assert crashed_tasks(ecs, cluster, name, bad) == 3
        breaker = rolled_back_breaker(ecs, cluster, name)
        assert breaker["failureCount"] == 3 and breaker["threshold"] == 3, breaker


def test_circuit_breaker_trips_on_tasks_that_fail_their_health_checks(server, agent_fleet):
    """Stage 2: the new revision's tasks reach RUNNING and never turn
    healthy; the scheduler stops them, and they count."""
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 2)
    family = unique("hc")
    check = {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1}
    good = definition(ecs, family, "sim/app:v1", healthCheck=check)
    name = unique("hc")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=good, desiredCount=2,
                       deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    wait_stable(ecs, cluster, name)
    bad = definition(ecs, family, "sim/unhealthy:v2", healthCheck=check)
    ecs.update_service(cluster=cluster, service=name, taskDefinition=bad)
    stable = wait_rolled_back(ecs, cluster, name, good)
    messages = events_of(stable)
    assert any("failed container health checks." in m for m in messages), messages
    unhealthy = [t for t in service_tasks(ecs, cluster, name, include_stopped=True)
                 if t["taskDefinitionArn"] == bad and t["lastStatus"] == "STOPPED"]
    assert len(unhealthy) >= 3 and all("startedAt" in t for t in unhealthy), unhealthy
    assert all(t["stoppedReason"] == "Task failed container health checks" for t in unhealthy), unhealthy


def test_refused_circuit_breaker_thresholds_change_nothing(server, agent_fleet):
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 1)
    family = unique("threshold")
    definition(ecs, family)
    name = unique("threshold")
    for threshold in ({"type": "COUNT", "value": 0}, {"type": "BOUNDED_PERCENT", "value": 101},
                      {"type": "UNBOUNDED_PERCENT", "value": 0}):
        config = {"deploymentCircuitBreaker": {"enable": True, "rollback": True, "thresholdConfiguration": threshold}}
        with pytest.raises(ClientError) as excinfo:
            ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=1,
                               deploymentConfiguration=config)
        assert error_of(excinfo)[0] == "InvalidParameterException", threshold
        assert "thresholdConfiguration" in error_of(excinfo)[1]
    assert ecs.list_services(cluster=cluster)["serviceArns"] == []


def tag_pairs(tags: list[dict]) -> list[tuple[str, str]]:
    return [(t["key"], t["value"]) for t in tags]


def test_service_tasks_carry_managed_and_propagated_tags(server, agent_fleet):
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 2)
    family = unique("tagged")
    register_task_definition(ecs, family, [{"name": "app", "image": "sim/app:v1", "memory": 64, "cpu": 64}],
                             tags=[{"key": "layer", "value": "definition"}])
    name = unique("tagged")
    code, out = server.cli("create-service", "--cluster", cluster, "--service-name", name,
                           "--task-definition", family, "--desired-count", "2",
                           "--tags", "key=team,value=a", "--propagate-tags", "SERVICE",
                           "--enable-ecs-managed-tags")
    assert code == 0, out
    assert out["service"]["propagateTags"] == "SERVICE" and out["service"]["enableECSManagedTags"] is True
    wait_stable(ecs, cluster, name)
    managed = [("aws:ecs:clusterName", cluster), ("aws:ecs:serviceName", name)]
    first = {}
    for task in service_tasks(ecs, cluster, name):
        code, listed = server.cli("list-tags-for-resource", "--resource-arn", task["taskArn"])
        assert code == 0, listed
        assert tag_pairs(listed["tags"]) == [("team", "a"), *managed], listed
        code, described = server.cli("describe-tasks", "--cluster", cluster, "--tasks", task["taskArn"],
                                     "--include", "TAGS")
        assert code == 0 and tag_pairs(described["tasks"][0]["tags"]) == [("team", "a"), *managed], described
        first[task["taskArn"]] = listed["tags"]
    # Changing how tasks are tagged starts no deployment; later tasks follow it.
    deployments = [d["id"] for d in describe(ecs, cluster, name)["deployments"]]
    ecs.update_service(cluster=cluster, service=name, desiredCount=3, propagateTags="TASK_DEFINITION",
                       enableECSManagedTags=False)
    stable = wait_stable(ecs, cluster, name)
    assert [d["id"] for d in stable["deployments"]] == deployments
    tasks = ecs.describe_tasks(cluster=cluster, tasks=[t["taskArn"] for t in service_tasks(ecs, cluster, name)],
                               include=["TAGS"])["tasks"]
    [newest] = [t for t in tasks if t["taskArn"] not in first]
    assert tag_pairs(newest["tags"]) == [("layer", "definition")]
    assert all(t["tags"] == first[t["taskArn"]] for t in tasks if t["taskArn"] in first)
    # A task started on its own: managed tags name its cluster only, and it
    # cannot propagate a service's tags.
    code, out = server.cli("run-task", "--cluster", cluster, "--task-definition", family,
                           "--enable-ecs-managed-tags", "--propagate-tags", "TASK_DEFINITION")
    assert code == 0, out
    assert tag_pairs(out["tasks"][0]["tags"]) == [("layer", "definition"), ("aws:ecs:clusterName", cluster)]
    with pytest.raises(ClientError) as excinfo:
        ecs.run_task(cluster=cluster, taskDefinition=family, propagateTags="SERVICE")
    assert error_of(excinfo)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as excinfo:
        ecs.untag_resource(resourceArn=out["tasks"][0]["taskArn"], tagKeys=["aws:ecs:clusterName"])
    assert error_of(excinfo)[0] == "InvalidParameterException"


def test_a_thousand_targets_register_and_deregister(server, agent_fleet):
    """1,000 awsvpc tasks of one service in one ip target group: each running
    task is registered once by its address, and scaling to 0 drains and
    deregisters every one before its task stops."""
    ecs, elbv2 = server.ecs, server.client("elbv2")
    cluster = make_cluster(server, agent_fleet, 10)
    family = unique("many")
    register_task_definition(ecs, family, [
        {"name": "app", "image": "sim/app:v1", "memory": 16, "cpu": 4, "essential": True,
         "portMappings": [{"containerPort": 8080}]},
    ], networkMode="awsvpc")
    group = elbv2.create_target_group(Name=unique("many"), Protocol="HTTP", Port=8080, VpcId="vpc-0123",
                                      TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(TargetGroupArn=group, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "2"}])
    balancer = elbv2.create_load_balancer(Name=unique("many"))["LoadBalancers"][0]
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=free_port(),
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
    name = unique("many")
    started = time.monotonic()
    # Simulated tasks answer no health check: a long grace period keeps the
    # service from replacing them while the test looks.
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=1000,
                       healthCheckGracePeriodSeconds=3600,
                       loadBalancers=[{"targetGroupArn": group, "containerName": "app", "containerPort": 8080}],
                       networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-1"]}})

    def targets() -> list[dict]:
        return elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]

    wait_until(lambda: len(targets()) == 1000, 180, "1,000 targets registered")
    registered_s = time.monotonic() - started
    tasks = service_tasks(ecs, cluster, name)
    addresses = {d["value"] for t in tasks for d in t["attachments"][0]["details"] if d["name"] == "privateIPv4Address"}
    assert len(tasks) == 1000 and len(addresses) == 1000
    assert {(d["Target"]["Id"], d["Target"]["Port"]) for d in targets()} == {(a, 8080) for a in addresses}
    print(json.dumps({"targets": 1000, "registered_s": round(registered_s, 1)}))
    ecs.update_service(cluster=cluster, service=name, desiredCount=0)
    wait_until(lambda: targets() == [], 180, "every target deregistered")
    wait_until(lambda: all(t["lastStatus"] == "STOPPED" for t in service_tasks(ecs, cluster, name, include_stopped=True)),
               180, "every task stopped")
    stopped = service_tasks(ecs, cluster, name, include_stopped=True)
    assert len(stopped) == 1000
