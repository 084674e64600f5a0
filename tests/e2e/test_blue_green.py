"""Blue/green and linear deployments of a service behind an application
load balancer, on real Docker: busybox httpd tasks answer their version, a
load generator sends requests through the production listener the whole
time and records which version answered each. A BLUE_GREEN deployment
from v1 to v2 is held by a PAUSE hook after its test traffic shift (the
test listener reaches green, production still only blue), then continued:
production serves only v1 until the shift and only v2 after it, with no
failed request, and the target groups swap roles. A LINEAR deployment back
shows its steps in DescribeRules' weights, and a CANARY one sends about its
share of requests to green during its bake time. Bad configurations get
ECS's errors.

A deployment "minute" lasts 3 s here (`--service-deployment-minute-ms`).
Heavy (marked `docker`).
"""

from __future__ import annotations

import http.client
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from support import HTTPD_COMMAND, TEST_IMAGE, curl, docker, error_of, free_port, register_task_definition, unique, wait_until

pytestmark = pytest.mark.docker

FAST = {"Delay": 1, "MaxAttempts": 120}
MINUTE_MS = 3000


@pytest.fixture
def page_images(docker_ready):
    """Two tags of one local image, each serving its own page; removed afterwards."""
    repository = f"flotilla-test/bluegreen-{os.getpid()}"
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
    """Requests sent back to back through the production listener by a few
    threads, each on a fresh connection, recording when each started and
    what answered it."""

    def __init__(self, port: int, threads: int = 3):
        self.port = port
        self.answers: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", "/")
                response = connection.getresponse()
                body = response.read().decode().strip()
                connection.close()
                failed = None if response.status == 200 else f"status {response.status}: {body[:80]}"
            except OSError as error:
                body, failed = "", f"error {error!r}"
            with self.lock:
                if failed:
                    self.failures.append(failed)
                else:
                    self.answers.append((started, body))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(body for _, body in self.answers)


def forward(*weights: tuple[str, int]) -> list[dict]:
    return [{"Type": "forward", "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": arn, "Weight": weight} for arn, weight in weights]}}]


def weights_of(elbv2, rule: str) -> dict[str, int]:
    [described] = elbv2.describe_rules(RuleArns=[rule])["Rules"]
    [action] = described["Actions"]
    return {t["TargetGroupArn"]: t["Weight"] for t in action["ForwardConfig"]["TargetGroups"]}


def service_of(ecs, cluster: str, name: str) -> dict:
    return ecs.describe_services(cluster=cluster, services=[name])["services"][0]


def deployment_of(ecs, arn: str) -> dict:
    return ecs.describe_service_deployments(serviceDeploymentArns=[arn])["serviceDeployments"][0]


def awaiting_hook(ecs, arn: str) -> dict | None:
    deployment = deployment_of(ecs, arn)
    for hook in deployment.get("lifecycleHookDetails", []):
        if hook["status"] == "AWAITING_ACTION":
            return hook
    return None


def completed(ecs, cluster: str, name: str) -> bool:
    deployments = service_of(ecs, cluster, name)["deployments"]
    return len(deployments) == 1 and deployments[0]["rolloutState"] == "COMPLETED"


def test_blue_green_linear_and_canary_deployments_shift_production_traffic_with_no_failed_request(
        server_factory, agent_fleet, page_images):
    server = server_factory(extra_args=("--service-deployment-minute-ms", str(MINUTE_MS)))
    ecs, elbv2 = server.ecs, server.client("elbv2")
    cluster = unique(f"bluegreen-{os.getpid()}")
    ecs.create_cluster(clusterName=cluster)
    agent_fleet.start(server, cluster)
    family = unique("bluegreen-web")

    def revision(image: str) -> str:
        return register_task_definition(ecs, family, [{
            "name": "web", "image": image, "memory": 64, "essential": True, "command": HTTPD_COMMAND,
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
        }])

    def target_group(label: str) -> str:
        arn = elbv2.create_target_group(
            Name=unique(label), Protocol="HTTP", Port=80, VpcId="vpc-0123", TargetType="instance",
            HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=4, HealthyThresholdCount=2,
            UnhealthyThresholdCount=5)["TargetGroups"][0]["TargetGroupArn"]
        elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": "2"}])
        return arn

    def listener_rule(balancer: str, port: int, *weights: tuple[str, int]) -> str:
        listener = elbv2.create_listener(
            LoadBalancerArn=balancer, Protocol="HTTP", Port=port,
            DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
                "StatusCode": "404", "ContentType": "text/plain", "MessageBody": "no rule"}}],
        )["Listeners"][0]["ListenerArn"]
        return elbv2.create_rule(ListenerArn=listener, Priority=1,
                                 Conditions=[{"Field": "path-pattern", "Values": ["/*"]}],
                                 Actions=forward(*weights))["Rules"][0]["RuleArn"]

    v1, v2 = revision(page_images["v1"]), revision(page_images["v2"])
    balancer = elbv2.create_load_balancer(Name=unique("bluegreen-front"))["LoadBalancers"][0]["LoadBalancerArn"]
    blue, green = target_group("bluegreen-a"), target_group("bluegreen-b")
    production_port, test_port = free_port(), free_port()
    production_rule = listener_rule(balancer, production_port, (blue, 100), (green, 0))
    test_rule = listener_rule(balancer, test_port, (blue, 100), (green, 0))
    elsewhere = elbv2.create_load_balancer(Name=unique("bluegreen-other"))["LoadBalancers"][0]["LoadBalancerArn"]
    other_rule = listener_rule(elsewhere, free_port(), (target_group("bluegreen-c"), 1))

    advanced = {"alternateTargetGroupArn": green, "productionListenerRule": production_rule,
                "testListenerRule": test_rule,
                "roleArn": "arn:aws:iam::000000000000:role/ecsInfrastructureRoleForLoadBalancers"}
    load_balancers = [{"targetGroupArn": blue, "containerName": "web", "containerPort": 8080,
                       "advancedConfiguration": advanced}]
    pause = {"targetType": "PAUSE", "lifecycleStages": ["POST_TEST_TRAFFIC_SHIFT"],
             "timeoutConfiguration": {"timeoutInMinutes": 100, "action": "ROLLBACK"}}
    configuration = {"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 0, "lifecycleHooks": [pause]}
    name = unique("bluegreen-web")

    # Bad configurations get ECS's errors, and no service is made.
    plain = [{"targetGroupArn": blue, "containerName": "web", "containerPort": 8080}]
    refusals = [
        ("advancedConfiguration with an alternateTargetGroupArn and a productionListenerRule",
         plain, configuration),
        ("productionListenerRule must be specified",
         [{**plain[0], "advancedConfiguration": {"alternateTargetGroupArn": green}}], configuration),
        ("alternateTargetGroupArn must be specified",
         [{**plain[0], "advancedConfiguration": {"productionListenerRule": production_rule}}], configuration),
        ("which is not the load balancer of target group",
         [{**plain[0], "advancedConfiguration": {**advanced, "productionListenerRule": other_rule}}],
         configuration),
        ("bakeTimeInMinutes must be between 0 and 1440", load_balancers,
         {**configuration, "bakeTimeInMinutes": 1441}),
        ("linearConfiguration.stepPercent must be between 3.0 and 100.0", load_balancers,
         {"strategy": "LINEAR", "linearConfiguration": {"stepPercent": 1.0}}),
        ("canaryConfiguration.canaryPercent must be between 0.1 and 100.0", load_balancers,
         {"strategy": "CANARY", "canaryConfiguration": {"canaryPercent": 150.0}}),
        ("targetType AWS_LAMBDA", load_balancers,
         {**configuration, "lifecycleHooks": [{
             "targetType": "AWS_LAMBDA", "lifecycleStages": ["PRE_SCALE_UP"],
             "hookTargetArn": "arn:aws:lambda:us-east-1:000000000000:function:check",
             "roleArn": "arn:aws:iam::000000000000:role/hooks"}]}),
        ("can only be specified for services with the BLUE_GREEN, LINEAR or CANARY", load_balancers,
         {"strategy": "ROLLING"}),
    ]
    for words, given_load_balancers, given_configuration in refusals:
        with pytest.raises(ClientError) as refused:
            ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=v1, desiredCount=2,
                               loadBalancers=given_load_balancers,
                               deploymentConfiguration=given_configuration)
        code, message = error_of(refused)
        assert code == "InvalidParameterException" and words in message, (words, code, message)
    assert ecs.list_services(cluster=cluster)["serviceArns"] == []

    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=v1, desiredCount=2,
                       healthCheckGracePeriodSeconds=30, loadBalancers=load_balancers,
                       deploymentConfiguration=configuration)
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
    described = service_of(ecs, cluster, name)
    assert described["deploymentConfiguration"]["strategy"] == "BLUE_GREEN"
    assert described["loadBalancers"][0]["advancedConfiguration"] == advanced
    assert weights_of(elbv2, production_rule) == {blue: 100, green: 0}

    # BLUE_GREEN v1 → v2 under load, held after the test traffic shift.
    with Load(production_port) as load:
        wait_until(lambda: len(load.counts()) > 0, 30, "the load to start")
        ecs.update_service(cluster=cluster, service=name, taskDefinition=v2)
        deployment = service_of(ecs, cluster, name)["currentServiceDeployment"]
        wait_until(lambda: awaiting_hook(ecs, deployment) is not None, 120, "the PAUSE hook to hold")
        held = deployment_of(ecs, deployment)
        assert held["lifecycleStage"] == "POST_TEST_TRAFFIC_SHIFT", held
        # The test listener reaches green; production is still all blue.
        assert weights_of(elbv2, test_rule) == {blue: 0, green: 100}
        assert weights_of(elbv2, production_rule) == {blue: 100, green: 0}
        assert {curl(f"http://127.0.0.1:{test_port}/")[1].strip() for _ in range(5)} == {"page v2"}
        time.sleep(1)
        assert set(load.counts()) == {"page v1"}, load.counts()
        hook = awaiting_hook(ecs, deployment)
        shift_requested = time.monotonic()
        ecs.continue_service_deployment(serviceDeploymentArn=deployment, hookId=hook["hookId"],
                                        action="CONTINUE")
        with pytest.raises(ClientError) as twice:
            ecs.continue_service_deployment(serviceDeploymentArn=deployment, hookId=hook["hookId"])
        assert error_of(twice)[0] == "ConflictException", error_of(twice)
        wait_until(lambda: completed(ecs, cluster, name), 120, "the blue/green deployment to complete")
        time.sleep(1)
    counts = Counter(body for _, body in load.answers)
    print(f"blue/green deployment under load: {dict(counts)}, {len(load.failures)} failed")
    assert load.failures == [], (load.failures[:10], counts)
    assert set(counts) == {"page v1", "page v2"}, counts
    first_v2 = min(at for at, body in load.answers if body == "page v2")
    assert first_v2 >= shift_requested, "v2 answered production before the shift"
    late_v1 = [at - first_v2 for at, body in load.answers if body == "page v1" and at > first_v2 + 1.0]
    assert late_v1 == [], f"v1 answered requests started {late_v1[:5]} s after v2 first did"
    finished = deployment_of(ecs, deployment)
    assert (finished["status"], finished["lifecycleStage"]) == ("SUCCESSFUL", "CLEAN_UP"), finished
    assert finished["lifecycleHookDetails"][0]["status"] == "SUCCEEDED", finished
    # The groups swapped roles: green is production now, and blue's tasks are gone from blue.
    assert weights_of(elbv2, production_rule) == {blue: 0, green: 100}
    wait_until(lambda: elbv2.describe_target_health(TargetGroupArn=blue)["TargetHealthDescriptions"] == [],
               30, "blue's targets to be deregistered")

    # LINEAR back to v1 in four steps of 25%, one "minute" each, into the other group.
    ecs.update_service(cluster=cluster, service=name, taskDefinition=v1, deploymentConfiguration={
        "strategy": "LINEAR", "linearConfiguration": {"stepPercent": 25.0, "stepBakeTimeInMinutes": 1}})
    deployment = service_of(ecs, cluster, name)["currentServiceDeployment"]
    shares: list[int] = []
    with Load(production_port) as load:
        wait_until(lambda: awaiting_hook(ecs, deployment) is not None, 120, "the PAUSE hook to hold")
        ecs.continue_service_deployment(serviceDeploymentArn=deployment,
                                        hookId=awaiting_hook(ecs, deployment)["hookId"])
        deadline = time.monotonic() + 120
        while not completed(ecs, cluster, name):
            assert time.monotonic() < deadline, "the linear deployment did not complete"
            share = weights_of(elbv2, production_rule)[blue]
            if not shares or shares[-1] != share:
                shares.append(share)
            time.sleep(0.3)
        time.sleep(1)
    counts = Counter(body for _, body in load.answers)
    print(f"linear deployment under load: {dict(counts)}, {len(load.failures)} failed, shares {shares}")
    assert load.failures == [], (load.failures[:10], counts)
    assert shares[:4] == [25, 50, 75, 100] or shares[:5] == [0, 25, 50, 75, 100], shares
    assert set(counts) == {"page v1", "page v2"}, counts
    assert weights_of(elbv2, production_rule) == {blue: 100, green: 0}
    assert deployment_of(ecs, deployment)["deploymentConfiguration"]["linearConfiguration"]["stepPercent"] == 25.0

    # CANARY to v2: 20% for two "minutes", then the rest.
    ecs.update_service(cluster=cluster, service=name, taskDefinition=v2, deploymentConfiguration={
        "strategy": "CANARY", "canaryConfiguration": {"canaryPercent": 20.0, "canaryBakeTimeInMinutes": 2}})
    deployment = service_of(ecs, cluster, name)["currentServiceDeployment"]
    canary: list[float] = []
    with Load(production_port) as load:
        wait_until(lambda: awaiting_hook(ecs, deployment) is not None, 120, "the PAUSE hook to hold")
        ecs.continue_service_deployment(serviceDeploymentArn=deployment,
                                        hookId=awaiting_hook(ecs, deployment)["hookId"])
        deadline = time.monotonic() + 120
        while not completed(ecs, cluster, name):
            assert time.monotonic() < deadline, "the canary deployment did not complete"
            share = weights_of(elbv2, production_rule)[green]
            if share == 20 and not canary:
                canary.append(time.monotonic())
            if share == 100 and len(canary) == 1:
                canary.append(time.monotonic())
            time.sleep(0.2)
    assert len(canary) == 2, canary
    # Requests started well inside the canary's bake time: about a fifth on v2.
    during = [body for at, body in load.answers if canary[0] + 0.5 < at < canary[1] - 0.5]
    fraction = during.count("page v2") / max(len(during), 1)
    print(f"canary: {len(during)} requests during its bake, {fraction:.0%} on v2")
    assert load.failures == [], load.failures[:10]
    assert len(during) > 50 and 0.08 < fraction < 0.35, (len(during), fraction)
    assert weights_of(elbv2, production_rule) == {blue: 0, green: 100}

    ecs.update_service(cluster=cluster, service=name, desiredCount=0)
    ecs.delete_service(cluster=cluster, service=name)
