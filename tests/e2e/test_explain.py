"""ExplainPlacement, Flotilla's addition to ECS (`X-Amz-Target:
FlotillaV1.ExplainPlacement`, signed for `ecs`), and the CLI on top of it,
`flotilla placement explain`. Hosts are simulated (`flotilla agent
--simulate N`): two roomy instances in zones a and b, and one in zone c with
128 MiB, too little for the task's 512."""

from __future__ import annotations

import json
import os
import subprocess
from types import SimpleNamespace

import pytest

from support import (
    ACCESS_KEY_ID,
    CLI_TIMEOUT_S,
    FLOTILLA_BIN,
    SECRET_ACCESS_KEY,
    register_task_definition,
    unique,
)

TARGET = "FlotillaV1.ExplainPlacement"
TASK_MEMORY_MIB = 512
SMALL_MEMORY_MIB = 128
ZONE = "attribute:ecs.availability-zone"


@pytest.fixture(scope="module")
def placed(server, module_agent_fleet):
    cluster = unique(f"explain-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    roomy = module_agent_fleet.start(server, cluster, "--simulate", "2", "--simulate-zones", "zone-a,zone-b")
    small = module_agent_fleet.start(
        server, cluster, "--simulate", "1", "--simulate-zones", "zone-c",
        "--simulate-memory", str(SMALL_MEMORY_MIB),
    )
    family = unique("explain-app")
    register_task_definition(server.ecs, family, [
        {"name": "app", "image": "sim/any", "memory": TASK_MEMORY_MIB, "cpu": 64},
    ])
    return SimpleNamespace(
        server=server, cluster=cluster, family=family,
        zone_a=roomy.instance_arns[0], zone_b=roomy.instance_arns[1], small=small.instance_arns[0],
    )


def explain(placed, **body):
    body = {"cluster": placed.cluster, "taskDefinition": placed.family, **body}
    return placed.server.signed_request("ExplainPlacement", json.dumps(body), target=TARGET)


def verdicts(answer):
    assert answer.status == 200, answer.body
    return {v["containerInstanceArn"]: v for v in answer.json["instances"]}


def test_an_instance_without_the_memory_is_excluded_with_the_numbers(placed):
    answer = explain(placed, count=2)
    by_arn = verdicts(answer)
    assert set(by_arn) == {placed.zone_a, placed.zone_b, placed.small}
    small = by_arn[placed.small]
    assert small["outcome"] == "EXCLUDED"
    assert small["step"] == "resources"
    assert small["reason"] == "RESOURCE:MEMORY"
    assert f"needs {TASK_MEMORY_MIB}, has {SMALL_MEMORY_MIB}" in small["detail"]
    outcomes = sorted(by_arn[arn]["outcome"] for arn in (placed.zone_a, placed.zone_b))
    assert outcomes == ["CHOSEN", "NOT_PREFERRED"]
    # Two tasks, spread over the two zones that fit.
    assert sorted(answer.json["placements"]) == sorted([placed.zone_a, placed.zone_b])


def test_a_zone_left_out_by_member_of_is_named(placed):
    answer = explain(placed, placementConstraints=[
        {"type": "memberOf", "expression": f"{ZONE} != zone-a"},
    ], placementStrategy=[{"type": "binpack", "field": "memory"}])
    by_arn = verdicts(answer)
    zone_a = by_arn[placed.zone_a]
    assert zone_a["outcome"] == "EXCLUDED"
    assert zone_a["step"] == "constraints"
    assert zone_a["reason"] == "MemberOf constraint not satisfied"
    assert "zone-a" in zone_a["detail"]
    assert by_arn[placed.zone_b]["outcome"] == "CHOSEN"
    assert answer.json["placements"] == [placed.zone_b]


def test_explaining_commits_nothing(placed):
    assert explain(placed, count=3).status == 200
    assert placed.server.ecs.list_tasks(cluster=placed.cluster)["taskArns"] == []
    described = placed.server.ecs.describe_container_instances(
        cluster=placed.cluster, containerInstances=[placed.zone_a])["containerInstances"][0]
    remaining = {r["name"]: r["integerValue"] for r in described["remainingResources"] if r["name"] == "MEMORY"}
    registered = {r["name"]: r["integerValue"] for r in described["registeredResources"] if r["name"] == "MEMORY"}
    assert remaining == registered


def test_errors_are_ecs_errors(placed):
    unknown = explain(placed, taskDefinition=unique("nope"))
    assert (unknown.status, unknown.error_code) == (400, "ClientException")
    bad = explain(placed, placementConstraints=[{"type": "memberOf", "expression": f"{ZONE} == zone-a and"}])
    assert (bad.status, bad.error_code) == (400, "InvalidParameterException")
    assert "at character" in bad.message
    wrong_type = explain(placed, count="two")
    assert wrong_type.error_code == "SerializationException"
    unknown_operation = placed.server.signed_request("Nope", "{}", target="FlotillaV1.Nope")
    assert unknown_operation.error_code == "UnknownOperationException"


def run_cli(placed, *args):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": placed.server.region,
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [str(FLOTILLA_BIN), "placement", "explain", "--endpoint", placed.server.endpoint,
         "--cluster", placed.cluster, "--task-definition", placed.family, *args],
        capture_output=True, text=True, env=env, timeout=CLI_TIMEOUT_S,
    )


def test_the_cli_prints_one_line_per_instance(placed):
    done = run_cli(
        placed, "--count", "2",
        "--strategy", f"type=spread,field={ZONE}",
        "--strategy", "type=binpack,field=memory",
        "--constraint", f"memberOf:{ZONE} != zone-a",
        "--launch-type", "EC2",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    line_of = {arn: next(line for line in lines if line.startswith(arn.rsplit("/", 1)[1]))
               for arn in (placed.zone_a, placed.zone_b, placed.small)}
    assert "EXCLUDED" in line_of[placed.small] and f"needs {TASK_MEMORY_MIB}, has {SMALL_MEMORY_MIB}" in line_of[placed.small]
    assert "EXCLUDED" in line_of[placed.zone_a] and "zone-a" in line_of[placed.zone_a]
    assert "CHOSEN" in line_of[placed.zone_b]
    assert "2 of 2 task(s) placed" in done.stdout


def test_the_cli_reports_a_refusal_and_fails(placed):
    done = run_cli(placed, "--constraint", f"memberOf:{ZONE} ==")
    assert done.returncode != 0
    assert "InvalidParameterException" in done.stderr
