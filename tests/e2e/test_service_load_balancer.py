"""A service behind an application load balancer, on real Docker: busybox
httpd tasks in bridge mode with dynamic host ports registered in an instance
target group as they reach RUNNING, a rolling deployment and a scale-in while
a load generator sends requests through the listener (zero failed requests),
a task whose page starts failing stopped with ECS's reason and replaced, and
loadBalancers that do not fit the task definition or the target group
refused with ECS's messages; and target tracking on ALBRequestCountPerTarget
scaling such a service out while requests come and back in when they stop.

Heavy (marked `docker`).
"""

from __future__ import annotations

import datetime
import http.client
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from support import HTTPD_COMMAND, TEST_IMAGE, docker, error_of, free_port, register_task_definition, unique, wait_until

pytestmark = pytest.mark.docker

FAST = {"Delay": 1, "MaxAttempts": 120}


@pytest.fixture
def page_images(docker_ready):
    """Two tags of one local image, each serving its own page; removed afterwards."""
    repository = f"flotilla-test/lb-service-{os.getpid()}"
    tags = {}
    for version in ("v1", "v2"):
        with tempfile.TemporaryDirectory() as context:
            Path(context, "index.html").write_text(f"page {version}\n")
            Path(context, "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nCOPY index.html /www/index.html\n")
            tag = f"{repository}:{version}"
            docker("build", "--quiet", "--tag", tag, context)
            tags[version] = tag
    yield tags
    for tag in tags.values():
        docker("rmi", "--force", tag, check=False)


class Load:
    """Requests sent back to back through the load balancer by a few
    threads, each on a fresh connection (so a closed target shows as a
    connection error), counting every answer and every failure."""

    def __init__(self, port: int, threads: int = 4):
        self.port = port
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        while not self.stopping.is_set():
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", "/")
                response = connection.getresponse()
                body = response.read().decode().strip()
                connection.close()
                outcome = body if response.status == 200 else f"status {response.status}: {body[:80]}"
            except OSError as error:
                outcome = f"error {error!r}"
            with self.lock:
                if outcome.startswith(("status", "error")):
                    self.failures.append(outcome)
                else:
                    self.answers[outcome] += 1

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def total(self) -> int:
        with self.lock:
            return sum(self.answers.values()) + len(self.failures)


def service_of(ecs, cluster: str, name: str) -> dict:
    return ecs.describe_services(cluster=cluster, services=[name])["services"][0]


def healthy_targets(elbv2, group: str) -> list[dict]:
    health = elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
    return [t for t in health if t["TargetHealth"]["State"] == "healthy"]


def test_a_service_behind_an_alb_deploys_and_scales_in_with_no_failed_request(server, agent_fleet, page_images):
    ecs, elbv2 = server.ecs, server.client("elbv2")
    cluster = unique(f"lb-svc-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster)
    family = unique("lb-web")

    def revision(image: str) -> str:
        return register_task_definition(ecs, family, [{
            "name": "web", "image": image, "memory": 64, "essential": True, "command": HTTPD_COMMAND,
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
        }])

    v1 = revision(page_images["v1"])
    balancer = elbv2.create_load_balancer(Name=unique("front"))["LoadBalancers"][0]
    group = elbv2.create_target_group(
        Name=unique("web"), Protocol="HTTP", Port=80, VpcId="vpc-0123", TargetType="instance",
        # A check's timeout and the unhealthy threshold leave room for a
        # loaded machine's slow answers; a page that fails is still found
        # within 15 s.
        HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=4, HealthyThresholdCount=2,
        UnhealthyThresholdCount=3)["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(TargetGroupArn=group, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "3"}])
    loose = elbv2.create_target_group(Name=unique("loose"), Protocol="HTTP", Port=80, VpcId="vpc-0123",
                                      TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    port = free_port()
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=port,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
    name = unique("web")

    # loadBalancers that do not fit are refused, and no service is made.
    refusals = {
        "does not have an associated load balancer":
            [{"targetGroupArn": loose, "containerName": "web", "containerPort": 8080}],
        "The container nope does not exist in the task definition":
            [{"targetGroupArn": group, "containerName": "nope", "containerPort": 8080}],
        "did not have a container port 9999 defined":
            [{"targetGroupArn": group, "containerName": "web", "containerPort": 9999}],
    }
    for words, load_balancers in refusals.items():
        with pytest.raises(ClientError) as refused:
            ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=v1, desiredCount=1,
                               loadBalancers=load_balancers)
        code, message = error_of(refused)
        assert code == "InvalidParameterException" and words in message, (code, message)
    assert ecs.list_services(cluster=cluster)["serviceArns"] == []

    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=v1, desiredCount=4,
                       healthCheckGracePeriodSeconds=0,
                       loadBalancers=[{"targetGroupArn": group, "containerName": "web", "containerPort": 8080}],
                       deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200})
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
    # Every task is registered and its target turns healthy.
    wait_until(lambda: len(healthy_targets(elbv2, group)) == 4, 30, "four healthy targets")
    messages = [e["message"] for e in service_of(ecs, cluster, name)["events"]]
    assert any("registered" in m and f"(target-group {group})" in m for m in messages), messages

    # A rolling deployment to v2 under load: no failed request, and v2 answers at the end.
    v2 = revision(page_images["v2"])
    statuses: set[str] = set()
    with Load(port) as load:
        wait_until(lambda: load.total() > 20, 30, "the load to start")
        ecs.update_service(cluster=cluster, service=name, taskDefinition=v2)

        def completed():
            arns = ecs.list_tasks(cluster=cluster, serviceName=name, desiredStatus="RUNNING")["taskArns"]
            arns += ecs.list_tasks(cluster=cluster, serviceName=name, desiredStatus="STOPPED")["taskArns"]
            for chunk in range(0, len(arns), 100):
                for task in ecs.describe_tasks(cluster=cluster, tasks=arns[chunk:chunk + 100])["tasks"]:
                    statuses.add(task["lastStatus"])
            deployments = service_of(ecs, cluster, name)["deployments"]
            return len(deployments) == 1 and deployments[0]["rolloutState"] == "COMPLETED"
        wait_until(completed, 240, "the deployment to complete", interval_s=0.5)
        ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
        time.sleep(1)
    print(f"rolling deployment under load: {dict(load.answers)}, {len(load.failures)} failed")
    assert load.failures == [], (load.failures[:10], load.answers)
    assert load.answers["page v1"] > 0 and load.answers["page v2"] > 0, load.answers
    assert "DEACTIVATING" in statuses, statuses
    service = service_of(ecs, cluster, name)
    messages = [e["message"] for e in service["events"]]
    assert any("deregistered" in m and f"(target-group {group})" in m for m in messages), messages
    assert len(healthy_targets(elbv2, group)) == 4

    # Scale-in under load: the two tasks leaving drain first, nothing fails.
    with Load(port) as load:
        wait_until(lambda: load.total() > 20, 30, "the load to start")
        ecs.update_service(cluster=cluster, service=name, desiredCount=2)
        wait_until(lambda: service_of(ecs, cluster, name)["runningCount"] == 2
                   and len(ecs.list_tasks(cluster=cluster, serviceName=name)["taskArns"]) == 2,
                   120, "the scale-in")
        time.sleep(1)
    print(f"scale-in under load: {dict(load.answers)}, {len(load.failures)} failed")
    assert load.failures == [], (load.failures[:10], load.answers)
    assert set(load.answers) == {"page v2"}, load.answers
    wait_until(lambda: len(healthy_targets(elbv2, group)) == 2, 60, "two healthy targets")

    # A task whose page starts failing is found unhealthy, stopped with ECS's reason, and replaced.
    [victim, *_] = ecs.describe_tasks(cluster=cluster, tasks=ecs.list_tasks(
        cluster=cluster, serviceName=name)["taskArns"])["tasks"]
    docker("exec", victim["containers"][0]["runtimeId"], "rm", "/www/index.html")

    def stopped():
        task = ecs.describe_tasks(cluster=cluster, tasks=[victim["taskArn"]])["tasks"][0]
        return task if task["lastStatus"] == "STOPPED" else None
    task = wait_until(stopped, 120, "the unhealthy task to be stopped")
    assert task["stoppedReason"] == f"Task failed ELB health checks in (target-group {group})", task["stoppedReason"]
    messages = [e["message"] for e in service_of(ecs, cluster, name)["events"]]
    assert any("is unhealthy in" in m and "Health checks failed with these codes: [404]" in m
               for m in messages), messages
    wait_until(lambda: len(healthy_targets(elbv2, group)) == 2
               and service_of(ecs, cluster, name)["runningCount"] == 2, 120, "the replacement to serve")

    ecs.delete_service(cluster=cluster, service=name, force=True)
    ecs.get_waiter("services_inactive").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
    wait_until(lambda: elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"] == [],
               60, "every target deregistered")


def test_alb_request_count_per_target_scales_the_service_out_and_back_in(docker_ready, server_factory, agent_fleet):
    """Target tracking on ALBRequestCountPerTarget for a service behind the
    load balancer: requests through the listener push the target group's
    RequestCountPerTarget over the target, the service scales out to its
    maximum (its new tasks registered as targets), and back to its minimum
    once the requests stop. The metrics clock runs 30 times faster
    (`--metrics-time-scale 30`: a minute every 2 s, so AlarmHigh's 3
    minutes take 6 s and AlarmLow's 15 minutes 30 s)."""
    server = server_factory(extra_args=("--metrics-time-scale", "30", "--service-stabilization-ms", "1000"))
    ecs, elbv2 = server.ecs, server.client("elbv2")
    scaling, cloudwatch = server.client("application-autoscaling"), server.client("cloudwatch")
    cluster = unique(f"lb-scale-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster)
    family = unique("lb-scaled")
    arn = register_task_definition(ecs, family, [{
        "name": "web", "image": TEST_IMAGE, "memory": 32, "essential": True, "command": HTTPD_COMMAND,
        "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
    }])
    balancer = elbv2.create_load_balancer(Name=unique("scaled"))["LoadBalancers"][0]
    group = elbv2.create_target_group(
        Name=unique("scaled"), Protocol="HTTP", Port=80, VpcId="vpc-0123", TargetType="instance",
        HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2,
        UnhealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(TargetGroupArn=group, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "1"}])
    port = free_port()
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=port,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
    name = unique("scaled")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=arn, desiredCount=1,
                       healthCheckGracePeriodSeconds=0,
                       loadBalancers=[{"targetGroupArn": group, "containerName": "web", "containerPort": 8080}])
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
    resource_id = f"service/{cluster}/{name}"
    dimension = "ecs:service:DesiredCount"
    # ResourceLabel: app/LB/ID/targetgroup/TG/ID, from the two ARNs.
    label = (balancer["LoadBalancerArn"].split(":loadbalancer/", 1)[1] + "/"
             + group.split(":", 5)[5])
    scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=dimension,
                                     MinCapacity=1, MaxCapacity=3)
    alarms = scaling.put_scaling_policy(
        ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=dimension,
        PolicyName="requests", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 20.0, "ScaleOutCooldown": 60, "ScaleInCooldown": 60,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ALBRequestCountPerTarget",
                                              "ResourceLabel": label}})["Alarms"]
    high = cloudwatch.describe_alarms(AlarmNames=[alarms[0]["AlarmName"]])["MetricAlarms"][0]
    assert (high["Namespace"], high["MetricName"], high["Statistic"]) == \
        ("AWS/ApplicationELB", "RequestCountPerTarget", "Sum"), high
    assert high["Dimensions"] == [{"Name": "TargetGroup", "Value": label.split("/", 3)[3]}], high

    def service():
        return service_of(ecs, cluster, name)

    seen: list[int] = []

    def desired(count: int) -> bool:
        seen.append(service()["desiredCount"])
        return seen[-1] == count

    # Requests back to back on two connections: far more than 20 per
    # target in each 2-second minute, so out to the maximum of 3.
    with Load(port, threads=2) as load:
        wait_until(lambda: desired(3), 90, "scale-out on requests per target", interval_s=0.5)
        wait_until(lambda: len(healthy_targets(elbv2, group)) == 3, 60, "three healthy targets")
    assert max(seen) == 3, seen
    assert load.failures == [], load.failures[:10]
    activities = scaling.describe_scaling_activities(
        ServiceNamespace="ecs", ResourceId=resource_id)["ScalingActivities"]
    assert "AlarmHigh" in activities[0]["Cause"] and activities[0]["StatusCode"] == "Successful", activities[0]
    now = datetime.datetime.now(datetime.timezone.utc)
    points = cloudwatch.get_metric_statistics(
        Namespace="AWS/ApplicationELB", MetricName="RequestCountPerTarget", Dimensions=high["Dimensions"],
        StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(days=1),
        Period=3600, Statistics=["Maximum"])["Datapoints"]
    assert points and max(p["Maximum"] for p in points) > 20.0, points

    # No requests: RequestCountPerTarget is 0 for 15 minutes, in to the minimum.
    seen.clear()
    wait_until(lambda: desired(1), 90, "scale-in once the requests stop", interval_s=0.5)
    assert min(seen) == 1, seen
    wait_until(lambda: service()["runningCount"] == 1 and len(healthy_targets(elbv2, group)) == 1,
               60, "one task, one healthy target")
    activities = scaling.describe_scaling_activities(
        ServiceNamespace="ecs", ResourceId=resource_id)["ScalingActivities"]
    assert "AlarmLow" in activities[0]["Cause"], activities[0]
    assert activities[0]["Description"] == "Setting desired count to 1.", activities[0]

    ecs.delete_service(cluster=cluster, service=name, force=True)
    ecs.get_waiter("services_inactive").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
