"""Services whose tasks fail, on simulated hosts (`flotilla agent --simulate
N`, a start delay of 700 ms): a revision that crash-loops after RUNNING,
one that never reaches RUNNING and one that fails its container health
checks each end FAILED and roll back to the last completed deployment,
with the old tasks never all stopped and no deployment COMPLETED while its
tasks fail; the service's events say why its tasks fail and how long the
launch throttle holds it back; RunTask's placement failures name their
cause; a deployment's rolloutStateReason names it; a deleted service,
protected tasks and all, goes INACTIVE at once; and `flotilla service
deploy` draws a rollback as one.

The server holds a steady state for STABILIZATION_MS before a deployment
completes (`--service-stabilization-ms`; 40 s by default, as ECS waits
before it counts a task without a health check as healthy).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter

import pytest

from support import FLOTILLA_BIN, register_task_definition, strip_line_comments, unique, wait_until

# Far longer than a `sim/exit` container lives (100 ms) plus the agent's
# one-second container poll and its report, even on a busy machine.
STABILIZATION_MS = 5000
SERVICE_TIMEOUT_S = 90.0
START_DELAY_MS = "700"
DESIRED = 4
ROLLING = {"minimumHealthyPercent": 50, "maximumPercent": 200,
           "deploymentCircuitBreaker": {"enable": True, "rollback": True}}
CHECK = {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1}
STEADY = "has reached a steady state."


def stabilizing_server(server_factory):
    return server_factory(extra_args=("--service-stabilization-ms", str(STABILIZATION_MS)))


def make_cluster(server, fleet, instances: int, *extra: str) -> str:
    cluster = unique(f"fail-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    fleet.start(server, cluster, "--simulate", str(instances), "--simulate-start-delay-ms", START_DELAY_MS,
                "--simulate-zones", "local-1a,local-1b", *extra)
    return cluster


def definition(ecs, family: str, image: str, **container) -> str:
    return register_task_definition(ecs, family, [
        {"name": "app", "image": image, "memory": 64, "cpu": 32, "essential": True, **container},
    ])


def describe(ecs, cluster: str, name: str) -> dict:
    answer = ecs.describe_services(cluster=cluster, services=[name])
    assert answer["failures"] == [], answer
    return answer["services"][0]


def messages(service: dict) -> list[str]:
    return [e["message"] for e in service["events"]]


def tasks_of(ecs, cluster: str, name: str) -> list[dict]:
    arns = []
    for desired in ("RUNNING", "STOPPED"):
        for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, serviceName=name,
                                                             desiredStatus=desired):
            arns.extend(page["taskArns"])
    arns = list(dict.fromkeys(arns))
    tasks = []
    for start in range(0, len(arns), 100):
        tasks.extend(ecs.describe_tasks(cluster=cluster, tasks=arns[start:start + 100])["tasks"])
    return tasks


def completed(ecs, cluster: str, name: str, deployment: str | None = None) -> dict | None:
    service = describe(ecs, cluster, name)
    [primary, *others] = service["deployments"]
    done = (not others and primary["rolloutState"] == "COMPLETED"
            and service["runningCount"] == service["desiredCount"]
            and (deployment is None or primary["id"] == deployment))
    return service if done else None


def running_of(tasks: list[dict], task_definition: str) -> int:
    return sum(1 for t in tasks if t["taskDefinitionArn"] == task_definition
               and t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING")


# (image of the failing revision, container settings, what its events say of a failed task)
FAILURES = {
    "crash-after-running": ("sim/exit:1", {}, "Essential container in task exited"),
    "crash-before-running": ("sim/fail-pull:v2", {}, "failed to start: CannotPullContainerError"),
    "failing-health-checks": ("sim/unhealthy:v2", {"healthCheck": CHECK}, "failed container health checks."),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_a_failing_revision_fails_and_rolls_back_with_old_tasks_kept(server_factory, agent_fleet, case):
    """ECS's rolling deployment (50 %, 200 %, circuit breaker with rollback)
    to a revision whose tasks fail: it never completes, its failures count
    while it is IN_PROGRESS, the breaker fails it and the last completed
    deployment comes back. The old revision keeps its floor of running tasks
    throughout, and "has reached a steady state." is said only when true."""
    image, settings, told = FAILURES[case]
    server = stabilizing_server(server_factory)
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 3)
    family = unique("loop")
    good = definition(ecs, family, "sim/app:v1", **settings)
    name = unique("loop")
    created = ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=good, desiredCount=DESIRED,
                                 deploymentConfiguration=ROLLING)["service"]
    first = created["deployments"][0]["id"]
    stable = wait_until(lambda: completed(ecs, cluster, name, first), SERVICE_TIMEOUT_S, "the first deployment")
    assert messages(stable).count(f"(service {name}) {STEADY}") == 1, messages(stable)
    said_before = len(stable["events"])

    bad = definition(ecs, family, image, **settings)
    updated = ecs.update_service(cluster=cluster, service=name, taskDefinition=bad)["service"]
    failing = updated["deployments"][0]["id"]
    floor = DESIRED // 2
    lowest = DESIRED
    deadline = time.monotonic() + SERVICE_TIMEOUT_S
    while True:
        service = describe(ecs, cluster, name)
        ours = [d for d in service["deployments"] if d["id"] == failing]
        assert not ours or ours[0]["rolloutState"] != "COMPLETED", \
            f"the failing deployment completed: {service['deployments']}"
        lowest = min(lowest, running_of(tasks_of(ecs, cluster, name), good))
        assert lowest >= floor, f"only {lowest} tasks of the old revision were left running"
        if not ours and completed(ecs, cluster, name):
            break
        assert time.monotonic() < deadline, f"no rollback: {service['deployments']}\n{messages(service)}"
        time.sleep(0.1)
    service = completed(ecs, cluster, name)
    assert service["taskDefinition"] == good
    # The last completed deployment came back, with the tasks it kept.
    assert service["deployments"][0]["id"] == first
    assert Counter(t["taskDefinitionArn"] for t in tasks_of(ecs, cluster, name)
                   if t["lastStatus"] != "STOPPED") == Counter({good: DESIRED})
    listed = ecs.list_service_deployments(cluster=cluster, service=name)["serviceDeployments"]
    # The failing deployment ended FAILED: the breaker rolled it back.
    [rolled_back] = [d for d in listed if d["status"] == "ROLLBACK_SUCCESSFUL"]
    assert rolled_back["serviceDeploymentArn"].endswith("/" + failing.split("/")[1]), (rolled_back, failing)
    [described] = ecs.describe_service_deployments(
        serviceDeploymentArns=[rolled_back["serviceDeploymentArn"]])["serviceDeployments"]
    breaker = described["deploymentCircuitBreaker"]
    assert breaker["status"] == "TRIGGERED" and breaker["failureCount"] >= breaker["threshold"] == 3, breaker
    since = messages(service)[:len(service["events"]) - said_before]
    assert any(m.endswith("deployment failed: tasks failed to start.") for m in since), since
    assert any(told in m and m.startswith(f"(service {name}) (task ") for m in since), since
    # Said once, when the rollback held its steady state; not again while nothing changes.
    assert since.count(f"(service {name}) {STEADY}") == 1, since
    # Newest first: it came after the failure.
    assert since.index(f"(service {name}) {STEADY}") < \
        next(i for i, m in enumerate(since) if "deployment failed" in m), since
    time.sleep(2 * STABILIZATION_MS / 1000)
    again = describe(ecs, cluster, name)
    assert messages(again).count(f"(service {name}) {STEADY}") == 2, messages(again)


def test_a_completed_deployment_holds_its_steady_state_first(server_factory, agent_fleet):
    """RUNNING is not yet steady: the deployment completes once its tasks
    have run for the stabilization period, and its rolloutStateReason names
    it, in progress and completed."""
    server = stabilizing_server(server_factory)
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 2)
    family = unique("hold")
    good = definition(ecs, family, "sim/app:v1")
    name = unique("hold")
    created = ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=good, desiredCount=2)["service"]
    [deployment] = created["deployments"]
    number = deployment["id"]
    assert number.startswith("ecs-svc/") and len(number) == len("ecs-svc/") + 19, number
    assert deployment["rolloutStateReason"] == f"ECS deployment {number} in progress."
    running = wait_until(lambda: (s := describe(ecs, cluster, name))["runningCount"] == 2 and s,
                         SERVICE_TIMEOUT_S, "two running tasks")
    ran_at = time.monotonic()
    assert running["deployments"][0]["rolloutState"] == "IN_PROGRESS", running["deployments"]
    assert f"(service {name}) {STEADY}" not in messages(running)
    done = wait_until(lambda: completed(ecs, cluster, name), SERVICE_TIMEOUT_S, "completion")
    assert time.monotonic() - ran_at >= STABILIZATION_MS / 1000 - 1.0
    assert done["deployments"][0]["rolloutStateReason"] == f"ECS deployment {number} completed."
    assert messages(done).count(f"(service {name}) {STEADY}") == 1


def test_a_deleted_service_goes_inactive_at_once_and_says_so(server_factory, agent_fleet):
    """DeleteService stops the service's tasks, protected ones too (scale-in
    protection guards against scale-in and deployments, not the end of the
    service), says so in its events, and the service is INACTIVE once every
    task is stopping or stopped; `aws ecs wait services-inactive` succeeds."""
    server = stabilizing_server(server_factory)
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 2)
    family = unique("gone")
    definition(ecs, family, "sim/app:v1")
    name = unique("gone")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=3)
    wait_until(lambda: completed(ecs, cluster, name), SERVICE_TIMEOUT_S, "the service to be steady")
    arns = sorted(t["taskArn"] for t in tasks_of(ecs, cluster, name))
    protected = arns[0]
    answer = ecs.update_task_protection(cluster=cluster, tasks=[protected], protectionEnabled=True,
                                        expiresInMinutes=600)
    assert answer["failures"] == []
    code, out = server.cli("delete-service", "--cluster", cluster, "--service", name, "--force")
    assert code == 0 and out["service"]["status"] == "DRAINING", out
    deleted_at = time.monotonic()
    ecs.get_waiter("services_inactive").wait(cluster=cluster, services=[name],
                                             WaiterConfig={"Delay": 1, "MaxAttempts": 20})
    code, out = server.cli("wait", "services-inactive", "--cluster", cluster, "--services", name)
    assert code == 0, out
    service = describe(ecs, cluster, name)
    assert service["status"] == "INACTIVE"
    said = messages(service)
    protected_id = protected.rsplit("/", 1)[1]
    assert any("protected" in m and f"(task {protected_id})" in m for m in said), said
    assert any(m == f"(service {name}) has stopped all of its tasks and is INACTIVE." for m in said), said
    assert all(t["desiredStatus"] == "STOPPED" for t in tasks_of(ecs, cluster, name))
    # With nothing left to stop, a deleted service is INACTIVE in one pass.
    other = unique("empty")
    ecs.create_service(cluster=cluster, serviceName=other, taskDefinition=family, desiredCount=0)
    ecs.delete_service(cluster=cluster, service=other)
    wait_until(lambda: describe(ecs, cluster, other)["status"] == "INACTIVE", 2.0, "the empty service to be INACTIVE")
    assert time.monotonic() - deleted_at < 60


def test_events_say_why_tasks_fail_and_how_long_the_throttle_waits(server_factory, agent_fleet):
    server = stabilizing_server(server_factory)
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 2)
    family = unique("nopull")
    definition(ecs, family, "sim/fail-pull:v1")
    name = unique("nopull")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=2)

    def throttled():
        said = messages(describe(ecs, cluster, name))
        return [m for m in said if "is unable to consistently start tasks successfully." in m] and said

    said = wait_until(throttled, SERVICE_TIMEOUT_S, "the throttle to be told")
    failed = [m for m in said if " failed to start: " in m]
    assert failed, said
    assert all(m.startswith(f"(service {name}) (task ") and "CannotPullContainerError" in m for m in failed), failed
    [told] = [m for m in said if "is unable to consistently start tasks successfully." in m][:1]
    assert told.startswith(f"(service {name}) is unable to consistently start tasks successfully. ")
    assert "failed in the last 5 minutes; next launch in " in told, told
    # The back-off grows, and each length is said once.
    wait_until(lambda: len({m for m in messages(describe(ecs, cluster, name))
                            if "is unable to consistently start" in m}) >= 2,
               SERVICE_TIMEOUT_S, "a longer back-off")
    said = messages(describe(ecs, cluster, name))
    throttles = [m for m in said if "is unable to consistently start" in m]
    assert len(throttles) == len(set(throttles)), throttles


def test_placement_failures_name_their_cause(server_factory, agent_fleet, seeds_dir):
    """000's task definition with a log driver the agent does not run
    (fluentd): hosts that do not say they can are refused with ECS's reason
    ATTRIBUTE and, beyond ECS, a detail naming the attribute, in RunTask's
    failures and in the service's events."""
    server = stabilizing_server(server_factory)
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 1, "--simulate-memory", "1024")
    task_definition = json.loads(strip_line_comments((seeds_dir / "nginx-task-def.jsonc").read_text()))
    task_definition["family"] = unique("fluentd")
    task_definition["containerDefinitions"][0]["logConfiguration"] = {"logDriver": "fluentd"}
    family = ecs.register_task_definition(**task_definition)["taskDefinition"]["family"]
    code, out = server.cli("run-task", "--cluster", cluster, "--task-definition", family)
    assert code == 0, out
    [failure] = out["failures"]
    assert out["tasks"] == []
    assert failure["arn"].startswith(f"arn:aws:ecs:us-east-1:000000000000:container-instance/{cluster}/")
    assert failure["reason"] == "ATTRIBUTE"
    assert failure["detail"] == "missing required attribute com.amazonaws.ecs.capability.logging-driver.fluentd"
    # A task too big for the host: ECS's RESOURCE:MEMORY, and the numbers.
    big = definition(ecs, unique("big"), "sim/app:v1", memory=2048)
    [failure] = ecs.run_task(cluster=cluster, taskDefinition=big)["failures"]
    assert failure["reason"] == "RESOURCE:MEMORY"
    assert failure["detail"].startswith("not enough memory: needs 2048, has "), failure
    name = unique("fluentd")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=1)

    def placement_event():
        return [m for m in messages(describe(ecs, cluster, name)) if "was unable to place a task" in m]

    [message] = wait_until(placement_event, SERVICE_TIMEOUT_S, "the placement failure event")
    assert "is missing an attribute required by your task" in message, message
    assert "missing required attribute com.amazonaws.ecs.capability.logging-driver.fluentd" in message, message
    assert message.endswith("For more information, see the Troubleshooting section."), message


def deploy_cli(server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run([str(FLOTILLA_BIN), "service", "deploy", "--endpoint", server.endpoint, *args],
                          capture_output=True, text=True, timeout=180, env=env)


def test_service_deploy_draws_a_rollback_as_one(server_factory, agent_fleet):
    """After the circuit breaker rolls a deployment back, the bar follows the
    deployment that runs again instead of a full bar of "0/0 new running"."""
    server = stabilizing_server(server_factory)
    ecs = server.ecs
    cluster = make_cluster(server, agent_fleet, 2)
    family = unique("cli")
    good = definition(ecs, family, "sim/app:v1")
    name = unique("cli")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=good, desiredCount=3,
                       deploymentConfiguration=ROLLING)
    wait_until(lambda: completed(ecs, cluster, name), SERVICE_TIMEOUT_S, "the first deployment")
    definition(ecs, family, "sim/fail-pull:v2")
    failed = deploy_cli(server, "--cluster", cluster, "--service", name, "--task-definition", f"{family}:2")
    assert failed.returncode == 3, failed.stdout + failed.stderr
    lines = failed.stdout.splitlines()
    bars = [line for line in lines if line.startswith("[")]
    assert bars, lines
    assert not any("0/0 new running" in line for line in bars), bars
    assert any("rolling back" in line for line in bars), bars
    assert bars[-1] == f"[{'#' * 30}] 3/3 running after the rollback, 0 pending, 0 draining", bars
    assert lines[-1].endswith("failed and was rolled back"), lines
    help_text = subprocess.run([str(FLOTILLA_BIN), "service", "deploy", "--help"],
                               capture_output=True, text=True, timeout=30).stdout
    for option in ("--desired-count", "--minimum-healthy-percent", "--maximum-percent"):
        assert option_help(help_text, option), f"{option} has no help text:\n{help_text}"


def option_help(help_text: str, option: str) -> str:
    """What clap's --help says of an option: after its value name on the
    same line, or on the lines below it (long help)."""
    lines = help_text.splitlines()
    for index, line in enumerate(lines):
        words = line.split()
        if words and words[0] == option:
            same_line = line.split(">", 1)[1].strip() if ">" in line else ""
            below = lines[index + 1].strip() if index + 1 < len(lines) else ""
            return same_line or ("" if below.startswith("-") else below)
    return ""
