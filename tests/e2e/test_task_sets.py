"""A service with the EXTERNAL deployment controller driven through task
sets with the AWS CLI and boto3, on real Docker: busybox httpd tasks of two
versions, each task set registered in its own target group behind one
listener's weighted forward. Both versions answer while both sets run;
the traffic moves to v2 and v2 becomes PRIMARY; v1 is scaled to 0 and
deleted with no failed request. Task set operations on a service with the
ECS controller, and the CODE_DEPLOY controller, are refused with ECS's
words.

Heavy (marked `docker`).
"""

from __future__ import annotations

import os
import time

import pytest
from botocore.exceptions import ClientError

from support import HTTPD_COMMAND, error_of, free_port, register_task_definition, unique, wait_until
# page_images: two local images, "page v1" and "page v2" (a fixture).
from test_service_load_balancer import Load, healthy_targets, page_images  # noqa: F401

pytestmark = pytest.mark.docker


def task_set(ecs, cluster: str, service: str, task_set_id: str) -> dict:
    return ecs.describe_task_sets(cluster=cluster, service=service, taskSets=[task_set_id])["taskSets"][0]


def test_an_external_service_moves_traffic_between_task_sets(server, agent_fleet, page_images):
    ecs, elbv2 = server.ecs, server.client("elbv2")
    cluster = unique(f"task-sets-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster)
    family = unique("sets-web")
    revisions = {
        version: register_task_definition(ecs, family, [{
            "name": "web", "image": image, "memory": 64, "essential": True, "command": HTTPD_COMMAND,
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
        }])
        for version, image in page_images.items()
    }
    balancer = elbv2.create_load_balancer(Name=unique("sets-front"))["LoadBalancers"][0]
    groups = {}
    for color in ("blue", "green"):
        arn = elbv2.create_target_group(
            Name=unique(color), Protocol="HTTP", Port=80, VpcId="vpc-0123", TargetType="instance",
            HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=4, HealthyThresholdCount=2,
            # Lenient: a busy machine must not make a serving task look failed.
            UnhealthyThresholdCount=5)["TargetGroups"][0]["TargetGroupArn"]
        elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": "2"}])
        groups[color] = arn
    port = free_port()

    def forward(blue: int, green: int) -> list[dict]:
        return [{"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": groups["blue"], "Weight": blue},
            {"TargetGroupArn": groups["green"], "Weight": green}]}}]
    listener = elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=port,
                                     DefaultActions=forward(1, 0))["Listeners"][0]["ListenerArn"]

    # Refusals: task sets need the EXTERNAL controller; CODE_DEPLOY is not here.
    plain = unique("plain")
    ecs.create_service(cluster=cluster, serviceName=plain, taskDefinition=revisions["v1"], desiredCount=0)
    code, stderr = server.cli("create-task-set", "--cluster", cluster, "--service", plain,
                              "--task-definition", revisions["v1"])
    assert code != 0 and "InvalidParameterException" in stderr, stderr
    assert "only supports task set management on services configured to use external deployment controllers" \
        in stderr, stderr
    with pytest.raises(ClientError) as refused:
        ecs.create_service(cluster=cluster, serviceName=unique("cd"), taskDefinition=revisions["v1"],
                           desiredCount=1, deploymentController={"type": "CODE_DEPLOY"})
    code, message = error_of(refused)
    assert code == "InvalidParameterException" and "BLUE_GREEN" in message, (code, message)

    # The EXTERNAL service and its first task set, through the CLI.
    name = unique("web")
    code, created = server.cli("create-service", "--cluster", cluster, "--service-name", name,
                               "--desired-count", "2", "--deployment-controller", "type=EXTERNAL")
    assert code == 0, created
    assert created["service"]["deploymentController"] == {"type": "EXTERNAL"}
    assert created["service"]["taskSets"] == []

    def load_balancer(color: str) -> str:
        return f"targetGroupArn={groups[color]},containerName=web,containerPort=8080"
    code, blue = server.cli("create-task-set", "--cluster", cluster, "--service", name,
                            "--task-definition", revisions["v1"], "--external-id", "blue",
                            "--scale", "value=100,unit=PERCENT", "--load-balancers", load_balancer("blue"))
    assert code == 0, blue
    blue = blue["taskSet"]
    assert (blue["status"], blue["computedDesiredCount"], blue["externalId"]) == ("ACTIVE", 2, "blue"), blue
    code, primary = server.cli("update-service-primary-task-set", "--cluster", cluster, "--service", name,
                               "--primary-task-set", blue["taskSetArn"])
    assert code == 0 and primary["taskSet"]["status"] == "PRIMARY", primary

    def steady(task_set_id: str, count: int, color: str) -> bool:
        described = task_set(ecs, cluster, name, task_set_id)
        return (described["stabilityStatus"] == "STEADY_STATE" and described["runningCount"] == count
                and len(healthy_targets(elbv2, groups[color])) == count)
    wait_until(lambda: steady(blue["id"], 2, "blue"), 120, "the blue task set to serve")

    # The second set, through boto3, in the green target group.
    green = ecs.create_task_set(
        cluster=cluster, service=name, taskDefinition=revisions["v2"], externalId="green",
        scale={"value": 100, "unit": "PERCENT"},
        loadBalancers=[{"targetGroupArn": groups["green"], "containerName": "web", "containerPort": 8080}],
    )["taskSet"]
    wait_until(lambda: steady(green["id"], 2, "green"), 120, "the green task set to serve")
    service = ecs.describe_services(cluster=cluster, services=[name])["services"][0]
    assert service["runningCount"] == 4 and len(service["taskSets"]) == 2, service
    assert service["taskDefinition"] == revisions["v1"], service

    # Half the traffic to each set: both versions answer.
    elbv2.modify_listener(ListenerArn=listener, DefaultActions=forward(1, 1))
    with Load(port) as load:
        wait_until(lambda: load.answers["page v1"] >= 20 and load.answers["page v2"] >= 20, 30,
                   "both versions to answer")
    print(f"both sets serving: {dict(load.answers)}, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:10]

    # All of it to green, which becomes PRIMARY; blue is scaled to 0 and deleted.
    with Load(port) as load:
        wait_until(lambda: load.total() > 20, 30, "the load to start")
        elbv2.modify_listener(ListenerArn=listener, DefaultActions=forward(0, 1))
        ecs.update_service_primary_task_set(cluster=cluster, service=name, primaryTaskSet=green["id"])
        # The listener's change reaches the proxy within a second; from then
        # on only v2 may answer.
        time.sleep(1)
        at_shift = load.answers.copy()
        with pytest.raises(ClientError) as refused:
            ecs.delete_task_set(cluster=cluster, service=name, taskSet=blue["id"])
        assert error_of(refused)[0] == "InvalidParameterException", error_of(refused)
        code, scaled = server.cli("update-task-set", "--cluster", cluster, "--service", name,
                                  "--task-set", blue["id"], "--scale", "value=0,unit=PERCENT")
        assert code == 0 and scaled["taskSet"]["computedDesiredCount"] == 0, scaled
        wait_until(lambda: task_set(ecs, cluster, name, blue["id"])["runningCount"] == 0
                   and not elbv2.describe_target_health(TargetGroupArn=groups["blue"])["TargetHealthDescriptions"],
                   60, "blue to scale in")
        code, deleted = server.cli("delete-task-set", "--cluster", cluster, "--service", name,
                                   "--task-set", blue["id"])
        assert code == 0 and deleted["taskSet"]["status"] == "DRAINING", deleted
        wait_until(lambda: [s["id"] for s in ecs.describe_task_sets(cluster=cluster, service=name)["taskSets"]]
                   == [green["id"]], 60, "blue to be gone")
        time.sleep(1)
    print(f"shift to green: {dict(load.answers)}, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:10]
    after = load.answers - at_shift
    assert after["page v2"] > 0 and after["page v1"] == 0, after
    service = ecs.describe_services(cluster=cluster, services=[name])["services"][0]
    assert service["taskDefinition"] == revisions["v2"] and service["runningCount"] == 2, service
    assert [s["status"] for s in service["taskSets"]] == ["PRIMARY"], service["taskSets"]

    ecs.delete_service(cluster=cluster, service=name, force=True)
    ecs.get_waiter("services_inactive").wait(cluster=cluster, services=[name],
                                             WaiterConfig={"Delay": 1, "MaxAttempts": 60})
