"""Elastic Load Balancing (ELBv2) with the AWS CLI and boto3: load
balancers, target groups, listeners and rules as `aws elbv2` creates and
describes them, ELBv2's defaults and error codes as the CLI parses them,
paging, tags, the waiters, and state kept across kill -9."""

from __future__ import annotations

import datetime
import json
import re
import subprocess

import pytest
from botocore.exceptions import ClientError

from support import (AWS_CLI, CLI_TIMEOUT_S, FLOTILLA_BIN, TEST_IMAGE, docker, error_of, free_port, unique,
                     wait_until)

ARN_PREFIX = "arn:aws:elasticloadbalancing:us-east-1:000000000000:"


def elb(server, *args: str):
    """`aws elbv2 ARGS...`: (returncode, parsed JSON) or (returncode, stderr)."""
    command = [str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", "elbv2", *args]
    done = subprocess.run(command, env=server.cli_env(), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)
    if done.returncode != 0:
        return done.returncode, done.stderr
    return 0, (json.loads(done.stdout) if done.stdout.strip() else {})


def elb_ok(server, *args: str):
    code, out = elb(server, *args)
    assert code == 0, out
    return out


def elb_error(server, *args: str) -> str:
    code, out = elb(server, *args)
    assert code != 0, f"expected an error, got {out}"
    return out


_PORTS = iter(range(18_600, 18_700))


def listener_port() -> int:
    """A listener port no other test of this module uses."""
    return next(_PORTS)


def make_group(client, name: str, **extra) -> str:
    params = {"Name": name, "Protocol": "HTTP", "Port": 80, "VpcId": "vpc-0123", **extra}
    return client.create_target_group(**params)["TargetGroups"][0]["TargetGroupArn"]


def make_balancer(client, name: str, **extra) -> dict:
    return client.create_load_balancer(Name=name, **extra)["LoadBalancers"][0]


def test_load_balancer_lifecycle_with_the_cli(server):
    name = unique("web")
    created = elb_ok(server, "create-load-balancer", "--name", name, "--subnets", "subnet-a", "subnet-b",
                     "--security-groups", "sg-1")["LoadBalancers"][0]
    arn = created["LoadBalancerArn"]
    assert re.fullmatch(re.escape(ARN_PREFIX) + rf"loadbalancer/app/{name}/[0-9a-f]{{16}}", arn)
    assert re.fullmatch(rf"{name}-\d+\.us-east-1\.elb\.localhost", created["DNSName"])
    assert created["State"]["Code"] == "provisioning"
    assert created["Type"] == "application" and created["Scheme"] == "internet-facing"
    assert [zone["SubnetId"] for zone in created["AvailabilityZones"]] == ["subnet-a", "subnet-b"]

    elb_ok(server, "wait", "load-balancer-available", "--load-balancer-arns", arn)
    described = elb_ok(server, "describe-load-balancers", "--names", name)["LoadBalancers"]
    assert [lb["LoadBalancerArn"] for lb in described] == [arn]
    assert described[0]["State"]["Code"] == "active"
    assert described[0]["SecurityGroups"] == ["sg-1"]

    # Idempotent with the same settings, refused with others.
    again = elb_ok(server, "create-load-balancer", "--name", name)["LoadBalancers"][0]
    assert again["LoadBalancerArn"] == arn
    assert "DuplicateLoadBalancerName" in elb_error(
        server, "create-load-balancer", "--name", name, "--scheme", "internal")
    assert "ValidationError" in elb_error(server, "create-load-balancer", "--name", "bad_name!")

    attributes = {a["Key"]: a["Value"] for a in elb_ok(
        server, "describe-load-balancer-attributes", "--load-balancer-arn", arn)["Attributes"]}
    assert attributes["idle_timeout.timeout_seconds"] == "60"
    assert attributes["deletion_protection.enabled"] == "false"
    elb_ok(server, "modify-load-balancer-attributes", "--load-balancer-arn", arn,
           "--attributes", "Key=deletion_protection.enabled,Value=true")
    assert "OperationNotPermitted" in elb_error(server, "delete-load-balancer", "--load-balancer-arn", arn)
    assert "ValidationError" in elb_error(
        server, "modify-load-balancer-attributes", "--load-balancer-arn", arn,
        "--attributes", "Key=no.such.attribute,Value=1")
    elb_ok(server, "modify-load-balancer-attributes", "--load-balancer-arn", arn,
           "--attributes", "Key=deletion_protection.enabled,Value=false")

    kept = elb_ok(server, "set-security-groups", "--load-balancer-arn", arn,
                  "--security-groups", "sg-2", "sg-3")
    assert kept["SecurityGroupIds"] == ["sg-2", "sg-3"]
    zones = elb_ok(server, "set-subnets", "--load-balancer-arn", arn, "--subnets", "subnet-c")
    assert [zone["SubnetId"] for zone in zones["AvailabilityZones"]] == ["subnet-c"]
    described = elb_ok(server, "describe-load-balancers", "--load-balancer-arns", arn)["LoadBalancers"][0]
    assert described["SecurityGroups"] == ["sg-2", "sg-3"]

    mapped = make_balancer(server.client("elbv2"), unique("nlb"), Type="network", SubnetMappings=[
        {"SubnetId": "subnet-a", "PrivateIPv4Address": "10.0.0.10"}])
    assert mapped["Type"] == "network"
    assert mapped["AvailabilityZones"][0]["LoadBalancerAddresses"] == [{"PrivateIPv4Address": "10.0.0.10"}]
    assert mapped["LoadBalancerArn"].startswith(ARN_PREFIX + "loadbalancer/net/")

    elb_ok(server, "delete-load-balancer", "--load-balancer-arn", arn)
    assert "LoadBalancerNotFound" in elb_error(server, "describe-load-balancers", "--names", name)
    # Deleting again succeeds, as in ELBv2.
    elb_ok(server, "delete-load-balancer", "--load-balancer-arn", arn)


def test_target_group_defaults_validation_and_attributes(server):
    client = server.client("elbv2")
    name = unique("tg")
    group = client.create_target_group(Name=name, Protocol="HTTP", Port=8080, VpcId="vpc-0123")["TargetGroups"][0]
    assert group["HealthCheckIntervalSeconds"] == 30
    assert group["HealthCheckTimeoutSeconds"] == 5
    assert group["HealthyThresholdCount"] == 5
    assert group["UnhealthyThresholdCount"] == 2
    assert group["HealthCheckPath"] == "/"
    assert group["HealthCheckPort"] == "traffic-port"
    assert group["Matcher"] == {"HttpCode": "200"}
    assert group["TargetType"] == "instance"
    assert re.fullmatch(re.escape(ARN_PREFIX) + rf"targetgroup/{name}/[0-9a-f]{{16}}", group["TargetGroupArn"])

    tcp = client.create_target_group(Name=unique("tcp"), Protocol="TCP", Port=5432, VpcId="vpc-0123",
                                     TargetType="ip")["TargetGroups"][0]
    assert tcp["HealthCheckProtocol"] == "TCP" and tcp["HealthCheckTimeoutSeconds"] == 10
    assert "HealthCheckPath" not in tcp and "Matcher" not in tcp

    with pytest.raises(ClientError) as refused:
        client.create_target_group(Name=unique("tg"), Protocol="HTTP", Port=80,
                                   HealthCheckIntervalSeconds=10, HealthCheckTimeoutSeconds=10)
    assert error_of(refused)[0] == "ValidationError"
    assert "smaller than the interval" in error_of(refused)[1]
    with pytest.raises(ClientError) as refused:
        client.create_target_group(Name=name, Protocol="HTTP", Port=9090)
    assert error_of(refused)[0] == "DuplicateTargetGroupName"
    with pytest.raises(ClientError) as refused:
        client.create_target_group(Name=unique("tg"), Protocol="HTTP", Port=80, TargetType="lambda")
    assert error_of(refused)[0] == "ValidationError"

    arn = group["TargetGroupArn"]
    attributes = {a["Key"]: a["Value"] for a in client.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "300"
    assert attributes["load_balancing.algorithm.type"] == "round_robin"
    assert attributes["stickiness.enabled"] == "false"
    changed = client.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "5"},
        {"Key": "load_balancing.algorithm.type", "Value": "least_outstanding_requests"},
    ])["Attributes"]
    assert {"Key": "deregistration_delay.timeout_seconds", "Value": "5"} in changed
    with pytest.raises(ClientError) as refused:
        client.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": "9999"}])
    assert error_of(refused)[0] == "ValidationError"

    modified = client.modify_target_group(TargetGroupArn=arn, HealthCheckPath="/health",
                                          HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
                                          HealthyThresholdCount=2, Matcher={"HttpCode": "200-299"})
    group = modified["TargetGroups"][0]
    assert (group["HealthCheckPath"], group["HealthCheckIntervalSeconds"], group["Matcher"]["HttpCode"]) == \
        ("/health", 5, "200-299")

    with pytest.raises(ClientError) as refused:
        client.describe_target_groups(TargetGroupArns=[arn.replace(name, "nope")])
    assert error_of(refused)[0] == "TargetGroupNotFound"


def test_listeners_and_rules(server):
    client = server.client("elbv2")
    balancer = make_balancer(client, unique("alb"))
    other = make_balancer(client, unique("alb"))
    group = make_group(client, unique("tg"))
    second = make_group(client, unique("tg"))
    port = listener_port()

    listener = client.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=port,
                                      DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])["Listeners"][0]
    arn = listener["ListenerArn"]
    assert arn.startswith(ARN_PREFIX + "listener/app/" + balancer["LoadBalancerName"] + "/")
    assert listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"] == [
        {"TargetGroupArn": group, "Weight": 1}]
    described = client.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    assert [item["ListenerArn"] for item in described] == [arn]
    used_by = client.describe_target_groups(TargetGroupArns=[group])["TargetGroups"][0]["LoadBalancerArns"]
    assert used_by == [balancer["LoadBalancerArn"]]

    # The port is taken on the serving host, on this load balancer and on any other.
    for balancer_arn in (balancer["LoadBalancerArn"], other["LoadBalancerArn"]):
        stderr = elb_error(server, "create-listener", "--load-balancer-arn", balancer_arn, "--protocol", "HTTP",
                           "--port", str(port), "--default-actions", "Type=fixed-response,FixedResponseConfig={StatusCode=200}")
        assert "DuplicateListener" in stderr
    with pytest.raises(ClientError) as refused:
        client.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="TCP", Port=listener_port(),
                               DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
    assert error_of(refused)[0] == "UnsupportedProtocol"
    # A target group serves one load balancer.
    with pytest.raises(ClientError) as refused:
        client.create_listener(LoadBalancerArn=other["LoadBalancerArn"], Protocol="HTTP", Port=listener_port(),
                               DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
    assert error_of(refused)[0] == "TargetGroupAssociationLimit"

    rule = client.create_rule(ListenerArn=arn, Priority=10,
                              Conditions=[{"Field": "path-pattern", "Values": ["/api/*"]}],
                              Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [
                                  {"TargetGroupArn": group, "Weight": 90},
                                  {"TargetGroupArn": second, "Weight": 10}]}}])["Rules"][0]
    assert rule["Priority"] == "10" and rule["IsDefault"] is False
    assert rule["Conditions"][0]["PathPatternConfig"]["Values"] == ["/api/*"]
    host_rule = client.create_rule(ListenerArn=arn, Priority=20,
                                   Conditions=[{"Field": "host-header", "HostHeaderConfig": {"Values": ["a.example"]}}],
                                   Actions=[{"Type": "fixed-response", "FixedResponseConfig": {
                                       "StatusCode": "404", "ContentType": "text/plain", "MessageBody": "no"}}])["Rules"][0]

    stderr = elb_error(server, "create-rule", "--listener-arn", arn, "--priority", "10",
                       "--conditions", "Field=host-header,Values=b.example",
                       "--actions", f"Type=forward,TargetGroupArn={group}")
    assert "PriorityInUse" in stderr
    with pytest.raises(ClientError) as refused:
        client.create_rule(ListenerArn=arn, Priority=30,
                           Conditions=[{"Field": "host-header", "Values": [f"h{i}.example" for i in range(6)]}],
                           Actions=[{"Type": "forward", "TargetGroupArn": group}])
    assert error_of(refused)[0] == "ValidationError" and "'5' condition values" in error_of(refused)[1]
    with pytest.raises(ClientError) as refused:
        client.create_rule(ListenerArn=arn, Priority=31,
                           Conditions=[{"Field": "http-header", "HttpHeaderConfig": {
                               "HttpHeaderName": f"X-H{i}", "Values": ["v"]}} for i in range(1000)],
                           Actions=[{"Type": "forward", "TargetGroupArn": group}])
    assert error_of(refused)[0] == "ValidationError"
    with pytest.raises(ClientError) as refused:
        client.create_rule(ListenerArn=arn, Priority=32, Conditions=[{"Field": "cookie", "Values": ["x"]}],
                           Actions=[{"Type": "forward", "TargetGroupArn": group}])
    assert error_of(refused)[0] == "ValidationError"
    with pytest.raises(ClientError) as refused:
        client.create_rule(ListenerArn=arn, Priority=33, Conditions=[{"Field": "path-pattern", "Values": ["/x"]}],
                           Actions=[{"Type": "forward", "TargetGroupArn": group.replace("targetgroup/", "targetgroup/x")}])
    assert error_of(refused)[0] == "TargetGroupNotFound"

    rules = client.describe_rules(ListenerArn=arn)["Rules"]
    assert [r["Priority"] for r in rules] == ["10", "20", "default"]
    default_rule = rules[-1]
    assert default_rule["IsDefault"] is True
    with pytest.raises(ClientError) as refused:
        client.delete_rule(RuleArn=default_rule["RuleArn"])
    assert error_of(refused)[0] == "OperationNotPermitted"

    swapped = client.set_rule_priorities(RulePriorities=[
        {"RuleArn": rule["RuleArn"], "Priority": 20}, {"RuleArn": host_rule["RuleArn"], "Priority": 10}])["Rules"]
    assert {r["RuleArn"]: r["Priority"] for r in swapped} == {rule["RuleArn"]: "20", host_rule["RuleArn"]: "10"}
    with pytest.raises(ClientError) as refused:
        client.set_rule_priorities(RulePriorities=[{"RuleArn": rule["RuleArn"], "Priority": 10}])
    assert error_of(refused)[0] == "PriorityInUse"
    # Nothing changed by the refusal.
    rules = client.describe_rules(ListenerArn=arn)["Rules"]
    assert [(r["RuleArn"], r["Priority"]) for r in rules[:2]] == [(host_rule["RuleArn"], "10"), (rule["RuleArn"], "20")]

    modified = client.modify_rule(RuleArn=rule["RuleArn"], Conditions=[{"Field": "path-pattern", "Values": ["/v2/*"]}])
    assert modified["Rules"][0]["Conditions"][0]["Values"] == ["/v2/*"]

    with pytest.raises(ClientError) as refused:
        client.delete_target_group(TargetGroupArn=group)
    assert error_of(refused)[0] == "ResourceInUse"

    moved = client.modify_listener(ListenerArn=arn, Port=listener_port())["Listeners"][0]
    assert moved["Port"] != port
    client.delete_rule(RuleArn=rule["RuleArn"])
    with pytest.raises(ClientError) as refused:
        client.describe_rules(RuleArns=[rule["RuleArn"]])
    assert error_of(refused)[0] == "RuleNotFound"
    client.delete_listener(ListenerArn=arn)
    with pytest.raises(ClientError) as refused:
        client.describe_listeners(ListenerArns=[arn])
    assert error_of(refused)[0] == "ListenerNotFound"
    client.delete_target_group(TargetGroupArn=group)


def test_targets_register_deregister_and_health(server):
    client = server.client("elbv2")
    ip_group = make_group(client, unique("ip"), TargetType="ip")
    instance_group = make_group(client, unique("inst"))
    client.modify_target_group_attributes(TargetGroupArn=ip_group, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "0"}])

    client.register_targets(TargetGroupArn=ip_group, Targets=[{"Id": "10.0.0.5", "Port": 8080}, {"Id": "10.0.0.6"}])
    health = client.describe_target_health(TargetGroupArn=ip_group)["TargetHealthDescriptions"]
    assert sorted((h["Target"]["Id"], h["Target"]["Port"]) for h in health) == [("10.0.0.5", 8080), ("10.0.0.6", 80)]
    # No listener forwards to the group yet.
    assert {(h["TargetHealth"]["State"], h["TargetHealth"]["Reason"]) for h in health} == {("unused", "Target.NotInUse")}

    for group, target, reason in (
        (ip_group, {"Id": "i-0123456789abcdef0"}, "not a valid IPv4"),
        (ip_group, {"Id": "8.8.8.8"}, "private range"),
        (instance_group, {"Id": "10.0.0.5"}, "not valid instances"),
    ):
        with pytest.raises(ClientError) as refused:
            client.register_targets(TargetGroupArn=group, Targets=[target])
        assert error_of(refused)[0] == "InvalidTarget"
        assert reason in error_of(refused)[1]
    client.register_targets(TargetGroupArn=instance_group, Targets=[{"Id": "i-0123456789abcdef0", "Port": 32768}])
    with pytest.raises(ClientError) as refused:
        client.describe_target_health(TargetGroupArn=ip_group, Include=["AnomalyDetection"])
    assert error_of(refused)[0] == "ValidationError" and "Include" in error_of(refused)[1]

    with pytest.raises(ClientError) as refused:
        client.deregister_targets(TargetGroupArn=ip_group, Targets=[{"Id": "10.9.9.9"}])
    assert error_of(refused)[0] == "InvalidTarget"

    elb_ok(server, "deregister-targets", "--target-group-arn", ip_group, "--targets", "Id=10.0.0.5,Port=8080")
    elb_ok(server, "wait", "target-deregistered", "--target-group-arn", ip_group,
           "--targets", "Id=10.0.0.5,Port=8080")
    gone = client.describe_target_health(TargetGroupArn=ip_group, Targets=[{"Id": "10.0.0.5", "Port": 8080}])
    assert gone["TargetHealthDescriptions"][0]["TargetHealth"]["Reason"] == "Target.NotRegistered"
    remaining = client.describe_target_health(TargetGroupArn=ip_group)["TargetHealthDescriptions"]
    assert [h["Target"]["Id"] for h in remaining] == ["10.0.0.6"]

    # With the default delay, a deregistered target drains.
    client.deregister_targets(TargetGroupArn=instance_group, Targets=[{"Id": "i-0123456789abcdef0", "Port": 32768}])
    draining = client.describe_target_health(TargetGroupArn=instance_group)["TargetHealthDescriptions"]
    assert [(h["TargetHealth"]["State"], h["TargetHealth"]["Reason"]) for h in draining] == [
        ("draining", "Target.DeregistrationInProgress")]


def test_paging_and_tags(server):
    client = server.client("elbv2")
    prefix = unique("page")
    arns = [make_group(client, f"{prefix}-{i}", Tags=[{"Key": "n", "Value": str(i)}]) for i in range(5)]
    seen = []
    for page in client.get_paginator("describe_target_groups").paginate(PaginationConfig={"PageSize": 2}):
        assert len(page["TargetGroups"]) <= 2
        seen += [group["TargetGroupArn"] for group in page["TargetGroups"]]
    assert all(arn in seen for arn in arns) and len(seen) == len(set(seen))
    with pytest.raises(ClientError) as refused:
        client.describe_target_groups(PageSize=401)
    assert error_of(refused)[0] == "ValidationError"

    client.add_tags(ResourceArns=arns[:2], Tags=[{"Key": "team", "Value": "web"}])
    client.remove_tags(ResourceArns=[arns[0]], TagKeys=["n"])
    described = {d["ResourceArn"]: {t["Key"]: t["Value"] for t in d["Tags"]}
                 for d in client.describe_tags(ResourceArns=arns[:3])["TagDescriptions"]}
    assert described == {arns[0]: {"team": "web"}, arns[1]: {"n": "1", "team": "web"}, arns[2]: {"n": "2"}}
    with pytest.raises(ClientError) as refused:
        client.add_tags(ResourceArns=[arns[0]], Tags=[{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}])
    assert error_of(refused)[0] == "DuplicateTagKeys"
    with pytest.raises(ClientError) as refused:
        client.add_tags(ResourceArns=[arns[0]], Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(60)])
    assert error_of(refused)[0] == "TooManyTags"


def test_operations_not_implemented_answer_elbv2s_error(server):
    stderr = elb_error(server, "describe-ssl-policies")
    assert "OperationNotPermitted" in stderr


def test_state_survives_kill_9(fresh_server):
    client = fresh_server.client("elbv2")
    balancer = make_balancer(client, "durable")
    group = make_group(client, "durable-tg", TargetType="ip")
    client.register_targets(TargetGroupArn=group, Targets=[{"Id": "10.1.2.3", "Port": 8080}])
    listener = client.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP",
                                      Port=listener_port(),
                                      DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])["Listeners"][0]
    fresh_server.kill9()
    fresh_server.restart()
    client = fresh_server.client("elbv2", shared=False)
    assert client.describe_load_balancers(Names=["durable"])["LoadBalancers"][0]["LoadBalancerArn"] == \
        balancer["LoadBalancerArn"]
    assert client.describe_listeners(ListenerArns=[listener["ListenerArn"]])["Listeners"][0]["Port"] == listener["Port"]
    targets = client.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
    assert [t["Target"]["Id"] for t in targets] == ["10.1.2.3"]


# ---- traffic through the data plane ------------------------------------------------

CONTAINER_PREFIX = "elbv2-e2e"


def start_backend(name: str, page: str) -> str:
    """A busybox httpd container serving `page` on port 8080; its bridge IP."""
    docker("rm", "-f", name, check=False)
    script = f"mkdir -p /tmp/www && echo {page} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    docker("run", "-d", "--name", name, "--label", f"{CONTAINER_PREFIX}=1", TEST_IMAGE, "sh", "-c", script)
    return docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.decode().strip()


def curl(url: str, host: str | None = None) -> tuple[int, str]:
    """(status, body) of GET url, through curl as a user would."""
    command = ["curl", "-s", "-o", "-", "-w", "\\n%{http_code}", "--max-time", "5", url]
    if host:
        command += ["-H", f"Host: {host}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=15)
    body, _, status = done.stdout.rpartition("\n")
    return int(status or 0), body.strip()


@pytest.mark.docker
def test_traffic_reaches_healthy_targets_only(server, docker_ready):
    client = server.client("elbv2")
    names = [f"{CONTAINER_PREFIX}-{unique('web')}" for _ in range(2)]
    try:
        addresses = [start_backend(name, f"page-{i}") for i, name in enumerate(names)]
        balancer = make_balancer(client, unique("front"))
        group = make_group(client, unique("pages"), TargetType="ip", Port=8080, HealthCheckIntervalSeconds=5,
                           HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2, UnhealthyThresholdCount=2)
        client.modify_target_group_attributes(TargetGroupArn=group, Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": "1"}])
        port = listener_port()
        client.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=port,
                               DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
        client.register_targets(TargetGroupArn=group, Targets=[{"Id": address} for address in addresses])
        elb_ok(server, "wait", "target-in-service", "--target-group-arn", group,
               "--targets", *[f"Id={address},Port=8080" for address in addresses])

        # What a user curls: the DNSName (which resolves to this machine) and the listener's port.
        url = f"http://{balancer['DNSName']}:{port}/"
        seen = {curl(url, host=balancer["DNSName"])[1] for _ in range(10)}
        seen |= {curl(f"http://127.0.0.1:{port}/")[1] for _ in range(4)}
        assert seen == {"page-0", "page-1"}

        # The first target's page starts failing: it is found unhealthy and taken out.
        docker("exec", names[0], "rm", "/tmp/www/index.html")
        def unhealthy():
            health = client.describe_target_health(TargetGroupArn=group, Targets=[{"Id": addresses[0], "Port": 8080}])
            state = health["TargetHealthDescriptions"][0]["TargetHealth"]
            return state if state["State"] == "unhealthy" else None
        state = wait_until(unhealthy, 40, "the failing target to be unhealthy")
        assert state["Reason"] == "Target.ResponseCodeMismatch"
        assert "404" in state["Description"]
        answers = [curl(f"http://127.0.0.1:{port}/") for _ in range(10)]
        assert answers == [(200, "page-1")] * 10

        # Deregistered, both drain, and the load balancer answers 503 as ALB does.
        # (With every target unhealthy but registered, ALB fails open instead.)
        client.deregister_targets(TargetGroupArn=group, Targets=[{"Id": address} for address in addresses])
        elb_ok(server, "wait", "target-deregistered", "--target-group-arn", group,
               "--targets", *[f"Id={address},Port=8080" for address in addresses])
        assert wait_until(lambda: curl(f"http://127.0.0.1:{port}/")[0] == 503, 20, "503 with no healthy target")

        # Deleting the listener closes its port.
        listener = client.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"][0]
        client.delete_listener(ListenerArn=listener["ListenerArn"])
        assert wait_until(lambda: curl(f"http://127.0.0.1:{port}/")[0] == 0, 20, "the listener to close")
    finally:
        for name in names:
            docker("rm", "-f", name, check=False)


@pytest.mark.docker
def test_a_remote_data_plane_keeps_serving_while_the_control_plane_restarts(server_factory, docker_ready, tmp_path):
    control = server_factory(extra_args=("--no-load-balancer-data-plane",))
    client = control.client("elbv2")
    name = f"{CONTAINER_PREFIX}-{unique('remote')}"
    lb_process = None
    try:
        address = start_backend(name, "remote-page")
        balancer = make_balancer(client, "remote")
        group = make_group(client, "remote-pages", TargetType="ip", Port=8080, HealthCheckIntervalSeconds=5,
                           HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2)
        port = listener_port()
        client.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=port,
                               DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
        client.register_targets(TargetGroupArn=group, Targets=[{"Id": address}])
        # The control plane itself carries no traffic.
        assert curl(f"http://127.0.0.1:{port}/")[0] == 0

        env = {**control.cli_env(), "RUST_LOG": "info"}
        lb_process = subprocess.Popen(
            [str(FLOTILLA_BIN), "lb", "--control", control.endpoint, "--region", control.region,
             "--admin-listen", f"127.0.0.1:{free_port()}", "--workers", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lb.stderr", "wb"))
        wait_until(lambda: curl(f"http://127.0.0.1:{port}/") == (200, "remote-page"), 30,
                   "the remote data plane to serve the listener")
        # Its health checks reach DescribeTargetHealth.
        elb_ok(control, "wait", "target-in-service", "--target-group-arn", group, "--targets", f"Id={address},Port=8080")

        # The control plane is killed: traffic carries on from the last snapshot.
        control.kill9()
        answers = [curl(f"http://127.0.0.1:{port}/") for _ in range(20)]
        assert answers == [(200, "remote-page")] * 20
        control.start(port=control.port)
        answers = [curl(f"http://127.0.0.1:{port}/") for _ in range(5)]
        assert answers == [(200, "remote-page")] * 5

        # After the restart, changes reach it again.
        client = control.client("elbv2", shared=False)
        listener = client.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"][0]
        client.create_rule(ListenerArn=listener["ListenerArn"], Priority=1,
                           Conditions=[{"Field": "path-pattern", "Values": ["/gone"]}],
                           Actions=[{"Type": "fixed-response", "FixedResponseConfig": {
                               "StatusCode": "410", "ContentType": "text/plain", "MessageBody": "gone"}}])
        wait_until(lambda: curl(f"http://127.0.0.1:{port}/gone") == (410, "gone"), 30, "the new rule to be served")
        assert curl(f"http://127.0.0.1:{port}/") == (200, "remote-page")
    finally:
        if lb_process is not None:
            lb_process.terminate()
            lb_process.wait(timeout=15)
        docker("rm", "-f", name, check=False)


@pytest.mark.docker
def test_load_balancer_metrics_reach_cloudwatch(server_factory, docker_ready):
    # A CloudWatch minute every 2 s, so that minutes pass within the test.
    server = server_factory(extra_args=("--metrics-time-scale", "30"))
    client = server.client("elbv2")
    names = [f"{CONTAINER_PREFIX}-{unique('metered')}" for _ in range(2)]
    try:
        addresses = [start_backend(name, f"metered-{i}") for i, name in enumerate(names)]
        balancer = make_balancer(client, unique("metered"))
        group = make_group(client, unique("metered"), TargetType="ip", Port=8080, HealthCheckIntervalSeconds=5,
                           HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2)
        port = listener_port()
        client.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=port,
                               DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
        client.register_targets(TargetGroupArn=group, Targets=[{"Id": address} for address in addresses])
        elb_ok(server, "wait", "target-in-service", "--target-group-arn", group,
               "--targets", *[f"Id={address},Port=8080" for address in addresses])
        requests = 40
        assert [curl(f"http://127.0.0.1:{port}/")[0] for _ in range(requests)] == [200] * requests
        assert curl(f"http://127.0.0.1:{port}/absent")[0] == 404

        cloudwatch = server.client("cloudwatch")
        group_dimension = [{"Name": "TargetGroup", "Value": group.split(":", 5)[5]}]
        balancer_dimension = [{"Name": "LoadBalancer",
                               "Value": balancer["LoadBalancerArn"].split(":loadbalancer/", 1)[1]}]
        now = datetime.datetime.now(datetime.timezone.utc)

        def total(metric: str, dimensions) -> float:
            points = cloudwatch.get_metric_statistics(
                Namespace="AWS/ApplicationELB", MetricName=metric, Dimensions=dimensions,
                StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(days=2),
                Period=3600, Statistics=["Sum"])["Datapoints"]
            return sum(point["Sum"] for point in points)

        wait_until(lambda: total("RequestCount", group_dimension) == requests + 1, 60,
                   f"{requests + 1} requests counted for the target group")
        # Two healthy targets share them.
        assert total("RequestCountPerTarget", group_dimension) == (requests + 1) / 2
        assert total("HTTPCode_Target_2XX_Count", group_dimension) == requests
        assert total("HTTPCode_Target_4XX_Count", group_dimension) == 1
        assert total("RequestCount", balancer_dimension) == requests + 1
        listed = {m["MetricName"] for m in cloudwatch.list_metrics(Namespace="AWS/ApplicationELB",
                                                                   Dimensions=group_dimension)["Metrics"]}
        assert {"RequestCountPerTarget", "HealthyHostCount", "TargetResponseTime"} <= listed
    finally:
        for name in names:
            docker("rm", "-f", name, check=False)


def self_signed_certificate(directory, host_pattern: str) -> tuple[str, str]:
    """A self-signed P-256 certificate for `host_pattern` and its key, in PEM,
    made with openssl as a user would."""
    certificate, key = directory / "certificate.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "30", "-subj", "/CN=flotilla-test", "-addext",
                    f"subjectAltName=DNS:{host_pattern},IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(certificate)], check=True, capture_output=True)
    return certificate.read_text(), key.read_text()


@pytest.mark.docker
def test_https_listener_serves_an_iam_server_certificate(server, docker_ready, tmp_path):
    client, iam = server.client("elbv2"), server.client("iam")
    certificate, key = self_signed_certificate(tmp_path, "*.us-east-1.elb.localhost")
    # Uploaded with the AWS CLI from files, as a user does.
    name = unique("web-cert")
    done = subprocess.run([str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", "iam",
                           "upload-server-certificate", "--server-certificate-name", name,
                           "--certificate-body", f"file://{tmp_path / 'certificate.pem'}",
                           "--private-key", f"file://{tmp_path / 'key.pem'}"],
                          env=server.cli_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    metadata = json.loads(done.stdout)["ServerCertificateMetadata"]
    certificate_arn = metadata["Arn"]
    assert certificate_arn == f"arn:aws:iam::000000000000:server-certificate/{name}"
    assert metadata["ServerCertificateId"].startswith("ASCA")
    not_after = subprocess.run(["openssl", "x509", "-noout", "-enddate"], input=certificate, text=True,
                               capture_output=True, check=True).stdout.strip().split("=", 1)[1]
    expected = datetime.datetime.strptime(not_after, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.timezone.utc)
    assert datetime.datetime.fromisoformat(metadata["Expiration"].replace("Z", "+00:00")) == expected
    # IAM gives the body back, never the key.
    got = iam.get_server_certificate(ServerCertificateName=name)["ServerCertificate"]
    assert got["CertificateBody"].strip() == certificate.strip() and "PRIVATE" not in json.dumps(got, default=str)
    with pytest.raises(ClientError) as refused:
        iam.upload_server_certificate(ServerCertificateName=unique("bad"), CertificateBody="not a certificate",
                                      PrivateKey=key)
    assert error_of(refused)[0] == "MalformedCertificate"
    with pytest.raises(ClientError) as refused:
        iam.upload_server_certificate(ServerCertificateName=name, CertificateBody=certificate, PrivateKey=key)
    assert error_of(refused)[0] == "EntityAlreadyExists"

    backend = f"{CONTAINER_PREFIX}-{unique('tls')}"
    try:
        address = start_backend(backend, "over-tls")
        balancer = make_balancer(client, unique("tls"))
        group = make_group(client, unique("tls"), TargetType="ip", Port=8080, HealthCheckIntervalSeconds=5,
                           HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2)
        client.register_targets(TargetGroupArn=group, Targets=[{"Id": address}])
        port = listener_port()
        forward = [{"Type": "forward", "TargetGroupArn": group}]
        balancer_arn = balancer["LoadBalancerArn"]
        # Refused, and nothing made: no certificate, an ACM certificate, an
        # ALPN policy the data plane does not follow, a certificate on HTTP.
        for extra, code in (({}, "ValidationError"),
                            ({"Certificates": [{"CertificateArn": "arn:aws:acm:us-east-1:000000000000:certificate/x"}]},
                             "CertificateNotFound"),
                            ({"Certificates": [{"CertificateArn": certificate_arn}], "AlpnPolicy": ["HTTP1Only"]},
                             "ALPNPolicyNotFound")):
            with pytest.raises(ClientError) as refused:
                client.create_listener(LoadBalancerArn=balancer_arn, Protocol="HTTPS", Port=port,
                                       DefaultActions=forward, **extra)
            assert error_of(refused)[0] == code, extra
        with pytest.raises(ClientError) as refused:
            client.create_listener(LoadBalancerArn=balancer_arn, Protocol="HTTP", Port=port, DefaultActions=forward,
                                   Certificates=[{"CertificateArn": certificate_arn}])
        assert error_of(refused)[0] == "ValidationError"
        assert client.describe_listeners(LoadBalancerArn=balancer_arn)["Listeners"] == []

        listener = elb_ok(server, "create-listener", "--load-balancer-arn", balancer_arn, "--protocol", "HTTPS",
                          "--port", str(port), "--certificates", f"CertificateArn={certificate_arn}",
                          "--default-actions", f"Type=forward,TargetGroupArn={group}")["Listeners"][0]
        assert listener["Certificates"] == [{"CertificateArn": certificate_arn}]
        assert listener["SslPolicy"] == "ELBSecurityPolicy-2016-08"
        elb_ok(server, "wait", "target-in-service", "--target-group-arn", group, "--targets", f"Id={address},Port=8080")
        # curl trusts only the uploaded certificate, reaches the DNSName,
        # and negotiates HTTP/2 through ALPN.
        url = f"https://{balancer['DNSName']}:{port}/"
        command = ["curl", "-s", "--cacert", str(tmp_path / "certificate.pem"), "--max-time", "5",
                   "-w", "\\n%{http_code} %{http_version}", url]
        def answered():
            done = subprocess.run(command, capture_output=True, text=True, timeout=15)
            return done.stdout if done.returncode == 0 else None
        answer = wait_until(answered, 20, "an answer over TLS")
        assert answer.split() == ["over-tls", "200", "2"], answer
        # Without the certificate as a trust anchor, curl refuses the peer.
        untrusted = subprocess.run(["curl", "-s", "--max-time", "5", url], capture_output=True, timeout=15)
        assert untrusted.returncode == 60, untrusted
        # IAM keeps a certificate a listener serves.
        with pytest.raises(ClientError) as refused:
            iam.delete_server_certificate(ServerCertificateName=name)
        assert error_of(refused)[0] == "DeleteConflict"
        assert listener["ListenerArn"] in error_of(refused)[1]
        # Back to HTTP: the certificate goes, and plain HTTP is served.
        modified = client.modify_listener(ListenerArn=listener["ListenerArn"], Protocol="HTTP")["Listeners"][0]
        assert "Certificates" not in modified and "SslPolicy" not in modified
        assert wait_until(lambda: curl(f"http://127.0.0.1:{port}/") == (200, "over-tls"), 20, "plain HTTP")
    finally:
        docker("rm", "-f", backend, check=False)
        iam.delete_server_certificate(ServerCertificateName=name)
