"""Service auto scaling on simulated hosts, end to end: tasks whose images
declare a CPU load (`sim/cpu:P`), their usage reported by the agents and
published as AWS/ECS CPUUtilization, read back with GetMetricStatistics;
seed 000's scalable target and target tracking policy through the AWS CLI,
scaling out under load and back in when it drops, within min and max; a
scheduled action that raises the minimum at its time; step scaling on a
CloudWatch alarm over a custom metric; each service's own errors for bad
input, with nothing changed.

The module's server runs CloudWatch's and Application Auto Scaling's clock
30 times faster than the wall clock (`--metrics-time-scale 30`: a minute
every 2 s), so target tracking's 3-minute AlarmHigh takes about 6 s and
its 15-minute AlarmLow about 30 s. Times sent to those APIs are on that
clock: each test reads it from a resource it has just created.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess

import pytest
from botocore.exceptions import ClientError

from conftest import _launch
from support import AWS_CLI, CLI_TIMEOUT_S, error_of, register_task_definition, unique, wait_until

TIME_SCALE = 30
STABILIZATION_MS = 1000
SCALE_TIMEOUT_S = 120.0
ZONES = ["local-1a", "local-1b"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from _launch(tmp_path_factory.mktemp("flotilla-autoscaling"),
                       extra_args=("--service-stabilization-ms", str(STABILIZATION_MS),
                                   "--metrics-time-scale", str(TIME_SCALE)))


@pytest.fixture(scope="module")
def cluster(server, module_agent_fleet):
    name = unique(f"scale-{os.getpid()}")
    server.ecs.create_cluster(clusterName=name)
    module_agent_fleet.start(server, name, "--simulate", "3", "--simulate-zones", ",".join(ZONES),
                             "--stats-interval-ms", "500")
    return name


def aws(server, service: str, *args: str):
    """The pinned AWS CLI against the server: (returncode, JSON or stderr)."""
    command = [str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", service, *args]
    done = subprocess.run(command, env=server.cli_env(), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, cwd=server.home)
    if done.returncode != 0:
        return done.returncode, done.stderr
    return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else {})


def make_service(server, cluster: str, image: str, desired: int) -> tuple[str, str]:
    family = unique("scaled")
    arn = register_task_definition(server.ecs, family, [
        {"name": "app", "image": image, "cpu": 256, "memory": 128, "essential": True},
    ])
    name = unique("web")
    server.ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=arn, desiredCount=desired)
    return name, family


def desired_count(server, cluster: str, name: str) -> int:
    return server.ecs.describe_services(cluster=cluster, services=[name])["services"][0]["desiredCount"]


def running_count(server, cluster: str, name: str) -> int:
    return server.ecs.describe_services(cluster=cluster, services=[name])["services"][0]["runningCount"]


def metrics_now(server, resource_id: str) -> datetime.datetime:
    """The metrics clock, as the scalable target's creation time tells it."""
    targets = server.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="ecs", ResourceIds=[resource_id])["ScalableTargets"]
    return targets[0]["CreationTime"]


# Seed 000's Application Auto Scaling example, as written there.
SEED_000 = """
{
  "scalableTarget": {
    "maxCapacity": 5,
    "minCapacity": 2,
    "resourceId": "service/nginx-cluster/nginx-service",
    "roleARN": "arn:aws:iam::account-id:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService",
    "scalableDimension": "ecs:service:DesiredCount",
    "serviceNamespace": "ecs"
  },
  "scalingPolicy": {
    "policyName": "nginx-cpu-scaling-policy",
    "policyType": "TargetTrackingScaling",
    "targetTrackingScalingPolicyConfiguration": {
      "targetValue": 50.0,
      "predefinedMetricSpecification": {
        "predefinedMetricType": "ECSServiceAverageCPUUtilization"
      },
      "scaleInCooldown": 60,
      "scaleOutCooldown": 60
    }
  }
}
"""


def api_case(value):
    """The seed's camelCase members in the API's own case (roleARN: RoleARN)."""
    if isinstance(value, dict):
        return {key[0].upper() + key[1:]: api_case(item) for key, item in value.items()}
    return value


def test_target_tracking_scales_out_under_load_and_back_in(server, cluster, tmp_path):
    name, family = make_service(server, cluster, "sim/cpu:90", desired=2)
    resource_id = f"service/{cluster}/{name}"
    wait_until(lambda: running_count(server, cluster, name) == 2, SCALE_TIMEOUT_S, "the first tasks")
    seed = json.loads(SEED_000.replace("service/nginx-cluster/nginx-service", resource_id)
                      .replace("account-id", "000000000000"))
    target = api_case(seed["scalableTarget"])
    policy = api_case(seed["scalingPolicy"])
    policy.update({key: target[key] for key in ("ServiceNamespace", "ResourceId", "ScalableDimension")})
    (tmp_path / "target.json").write_text(json.dumps(target))
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    code, out = aws(server, "application-autoscaling", "register-scalable-target",
                    "--cli-input-json", f"file://{tmp_path / 'target.json'}")
    assert code == 0, out
    code, out = aws(server, "application-autoscaling", "put-scaling-policy",
                    "--cli-input-json", f"file://{tmp_path / 'policy.json'}")
    assert code == 0, out
    alarm_names = [a["AlarmName"] for a in out["Alarms"]]
    assert alarm_names[0].startswith(f"TargetTracking-{resource_id}-AlarmHigh-")
    assert alarm_names[1].startswith(f"TargetTracking-{resource_id}-AlarmLow-")
    code, out = aws(server, "application-autoscaling", "describe-scalable-targets",
                    "--service-namespace", "ecs", "--resource-ids", resource_id)
    assert code == 0, out
    assert out["ScalableTargets"][0]["RoleARN"] == target["RoleARN"]
    cloudwatch = server.client("cloudwatch")
    alarms = cloudwatch.describe_alarms(AlarmNames=alarm_names)["MetricAlarms"]
    high = next(a for a in alarms if "AlarmHigh" in a["AlarmName"])
    low = next(a for a in alarms if "AlarmLow" in a["AlarmName"])
    assert (high["Threshold"], high["EvaluationPeriods"], high["ComparisonOperator"]) == (50.0, 3, "GreaterThanThreshold")
    assert (low["Threshold"], low["EvaluationPeriods"], low["ComparisonOperator"]) == (45.0, 15, "LessThanThreshold")

    # 90% on two tasks: out to ceil(2 x 90 / 50) = 4, then 4 tasks at 90%
    # ask for 8, held at the maximum of 5.
    seen = []

    def at_max():
        count = desired_count(server, cluster, name)
        seen.append(count)
        return count == 5

    wait_until(at_max, SCALE_TIMEOUT_S, "scale-out to the maximum")
    assert max(seen) <= 5, seen
    wait_until(lambda: running_count(server, cluster, name) == 5, SCALE_TIMEOUT_S, "5 running tasks")

    # The agents' usage is CloudWatch's: 90% of the reserved CPU.
    now = metrics_now(server, resource_id)
    statistics = cloudwatch.get_metric_statistics(
        Namespace="AWS/ECS", MetricName="CPUUtilization",
        Dimensions=[{"Name": "ClusterName", "Value": cluster}, {"Name": "ServiceName", "Value": name}],
        StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(hours=2),
        Period=60, Statistics=["Average", "Maximum", "SampleCount"])
    points = statistics["Datapoints"]
    assert points, statistics
    assert all(85.0 <= p["Average"] <= 95.0 for p in points), points
    assert {p["Unit"] for p in points} == {"Percent"}
    listed = cloudwatch.list_metrics(Namespace="AWS/ECS", MetricName="CPUUtilization",
                                     Dimensions=[{"Name": "ServiceName", "Value": name}])["Metrics"]
    assert len(listed) == 1, listed

    activities = server.client("application-autoscaling").describe_scaling_activities(
        ServiceNamespace="ecs", ResourceId=resource_id)["ScalingActivities"]
    assert activities, activities
    latest = activities[0]
    assert latest["StatusCode"] == "Successful", latest
    assert latest["Description"] == "Setting desired count to 5."
    assert latest["StatusMessage"] == "Successfully set desired count to 5. Change successfully fulfilled by ecs."
    assert "AlarmHigh" in latest["Cause"] and "triggered policy nginx-cpu-scaling-policy" in latest["Cause"]
    events = server.ecs.describe_services(cluster=cluster, services=[name])["services"][0]["events"]
    assert any("has started" in e["message"] for e in events), events

    # The load drops: a new revision at 10%. Fifteen minutes under 45% ask
    # for ceil(5 x 10 / 50) = 1, held at the minimum of 2.
    arn = register_task_definition(server.ecs, family, [
        {"name": "app", "image": "sim/cpu:10", "cpu": 256, "memory": 128, "essential": True},
    ])
    server.ecs.update_service(cluster=cluster, service=name, taskDefinition=arn)
    wait_until(lambda: desired_count(server, cluster, name) == 2, SCALE_TIMEOUT_S, "scale-in to the minimum")
    activities = server.client("application-autoscaling").describe_scaling_activities(
        ServiceNamespace="ecs", ResourceId=resource_id)["ScalingActivities"]
    assert "AlarmLow" in activities[0]["Cause"], activities[0]


def test_scheduled_action_raises_the_minimum_at_its_time(server, cluster):
    name, _ = make_service(server, cluster, "sim/cpu:5", desired=1)
    resource_id = f"service/{cluster}/{name}"
    scaling = server.client("application-autoscaling")
    scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource_id,
                                     ScalableDimension="ecs:service:DesiredCount", MinCapacity=1, MaxCapacity=3)
    now = metrics_now(server, resource_id)
    # Two minutes of the metrics clock from now (4 s of the wall's).
    at = (now + datetime.timedelta(minutes=2)).astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    scaling.put_scheduled_action(ServiceNamespace="ecs", ResourceId=resource_id,
                                 ScalableDimension="ecs:service:DesiredCount", ScheduledActionName="morning",
                                 Schedule=f"at({at})", ScalableTargetAction={"MinCapacity": 2, "MaxCapacity": 3})
    actions = scaling.describe_scheduled_actions(ServiceNamespace="ecs", ResourceId=resource_id)["ScheduledActions"]
    assert [a["Schedule"] for a in actions] == [f"at({at})"]
    assert desired_count(server, cluster, name) == 1
    wait_until(lambda: desired_count(server, cluster, name) == 2, SCALE_TIMEOUT_S, "the scheduled minimum")
    target = scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource_id])["ScalableTargets"][0]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 3)
    causes = [a["Cause"] for a in scaling.describe_scaling_activities(
        ServiceNamespace="ecs", ResourceId=resource_id)["ScalingActivities"]]
    assert "minimum capacity was set to 2" in causes, causes
    assert "scheduled action name morning was triggered" in causes, causes


def test_step_scaling_on_an_alarm(server, cluster):
    name, _ = make_service(server, cluster, "sim/cpu:5", desired=1)
    resource_id = f"service/{cluster}/{name}"
    scaling = server.client("application-autoscaling")
    scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource_id,
                                     ScalableDimension="ecs:service:DesiredCount", MinCapacity=1, MaxCapacity=5)
    policy_arn = scaling.put_scaling_policy(
        ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension="ecs:service:DesiredCount",
        PolicyName="queue-out", PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "Cooldown": 600, "MetricAggregationType": "Average",
            "StepAdjustments": [
                {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 50, "ScalingAdjustment": 1},
                {"MetricIntervalLowerBound": 50, "ScalingAdjustment": 2},
            ],
        })["PolicyARN"]
    now = metrics_now(server, resource_id)
    cloudwatch = server.client("cloudwatch")
    metric = unique("QueueDepth")
    # A queue 80 over the threshold of 20 for the next minutes: the +2 step.
    cloudwatch.put_metric_data(Namespace="Flotilla/Test", MetricData=[
        {"MetricName": metric, "Value": 100.0, "Unit": "Count",
         "Timestamp": now + datetime.timedelta(minutes=minute)}
        for minute in range(-2, 10)
    ])
    cloudwatch.put_metric_alarm(AlarmName=f"{metric}-high", Namespace="Flotilla/Test", MetricName=metric,
                                Statistic="Average", Period=60, EvaluationPeriods=1, Threshold=20.0,
                                ComparisonOperator="GreaterThanThreshold", AlarmActions=[policy_arn])
    wait_until(lambda: desired_count(server, cluster, name) == 3, SCALE_TIMEOUT_S, "the +2 step")
    alarm = cloudwatch.describe_alarms(AlarmNames=[f"{metric}-high"])["MetricAlarms"][0]
    assert alarm["StateValue"] == "ALARM", alarm
    history = cloudwatch.describe_alarm_history(AlarmName=f"{metric}-high")["AlarmHistoryItems"]
    assert any(h["HistoryItemType"] == "StateUpdate" for h in history), history
    # The 600 s cooldown holds it at 3 while the alarm stays in ALARM.
    activities = scaling.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=resource_id)["ScalingActivities"]
    assert activities[0]["Cause"] == f"monitor alarm {metric}-high in state ALARM triggered policy queue-out"
    assert desired_count(server, cluster, name) == 3


def test_bad_input_answers_each_services_errors_and_changes_nothing(server, cluster):
    name, _ = make_service(server, cluster, "sim/cpu:5", desired=1)
    resource_id = f"service/{cluster}/{name}"
    scaling = server.client("application-autoscaling")
    cloudwatch = server.client("cloudwatch")
    dimension = "ecs:service:DesiredCount"

    with pytest.raises(ClientError) as excinfo:
        scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource_id,
                                         ScalableDimension=dimension, MinCapacity=5, MaxCapacity=2)
    assert error_of(excinfo) == ("ValidationException", "Minimum capacity cannot be greater than maximum capacity")
    with pytest.raises(ClientError) as excinfo:
        scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=f"service/{cluster}/missing",
                                         ScalableDimension=dimension, MinCapacity=1, MaxCapacity=2)
    assert error_of(excinfo) == ("ValidationException", f"ECS service doesn't exist: service/{cluster}/missing")
    assert scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource_id])["ScalableTargets"] == []
    with pytest.raises(ClientError) as excinfo:
        scaling.put_scaling_policy(ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=dimension,
                                   PolicyName="p", PolicyType="TargetTrackingScaling",
                                   TargetTrackingScalingPolicyConfiguration={"TargetValue": 50.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}})
    assert error_of(excinfo)[0] == "ObjectNotFoundException"

    scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource_id,
                                     ScalableDimension=dimension, MinCapacity=1, MaxCapacity=2)
    with pytest.raises(ClientError) as excinfo:
        scaling.put_scheduled_action(ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=dimension,
                                     ScheduledActionName="bad", Schedule="cron(0 25 * * ? *)",
                                     ScalableTargetAction={"MinCapacity": 1})
    assert error_of(excinfo)[0] == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        scaling.put_scaling_policy(
            ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=dimension,
            PolicyName="overlap", PolicyType="StepScaling",
            StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity", "StepAdjustments": [
                {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 10, "ScalingAdjustment": 1},
                {"MetricIntervalLowerBound": 5, "ScalingAdjustment": 2}]})
    assert error_of(excinfo) == ("ValidationException", "Step adjustments have overlapping intervals: [0, 10) and [5, null)")
    with pytest.raises(ClientError) as excinfo:
        scaling.put_scaling_policy(ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=dimension,
                                   PolicyName="dynamo", PolicyType="TargetTrackingScaling",
                                   TargetTrackingScalingPolicyConfiguration={"TargetValue": 50.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "DynamoDBReadCapacityUtilization"}})
    assert error_of(excinfo) == ("ValidationException", "Unsupported predefined metric type DynamoDBReadCapacityUtilization for service namespace ecs")
    assert scaling.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource_id)["ScalingPolicies"] == []
    assert scaling.describe_scheduled_actions(ServiceNamespace="ecs", ResourceId=resource_id)["ScheduledActions"] == []
    with pytest.raises(ClientError) as excinfo:
        scaling.delete_scaling_policy(ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=dimension,
                                      PolicyName="never")
    assert error_of(excinfo)[0] == "ObjectNotFoundException"
    step = {"AdjustmentType": "ChangeInCapacity",
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]}
    for index in range(50):
        scaling.put_scaling_policy(ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=dimension,
                                   PolicyName=f"p{index:02}", PolicyType="StepScaling",
                                   StepScalingPolicyConfiguration=step)
    with pytest.raises(ClientError) as excinfo:
        scaling.put_scaling_policy(ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=dimension,
                                   PolicyName="one-too-many", PolicyType="StepScaling",
                                   StepScalingPolicyConfiguration=step)
    assert error_of(excinfo) == ("LimitExceededException",
                                 "You have reached the maximum limit of 50 scaling policies for the scalable target")
    # Replacing one of the fifty is not a fifty-first.
    scaling.put_scaling_policy(ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=dimension,
                               PolicyName="p00", PolicyType="StepScaling", StepScalingPolicyConfiguration=step)
    policies = scaling.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource_id,
                                                 MaxResults=50)["ScalingPolicies"]
    assert len(policies) == 50 and "one-too-many" not in {p["PolicyName"] for p in policies}

    # CloudWatch: the Query codes, read by boto3 from x-amzn-query-error.
    with pytest.raises(ClientError) as excinfo:
        cloudwatch.put_metric_data(Namespace="AWS/Mine", MetricData=[{"MetricName": "m", "Value": 1.0}])
    assert error_of(excinfo)[0] == "InvalidParameterValue"
    with pytest.raises(ClientError) as excinfo:
        cloudwatch.set_alarm_state(AlarmName="no-such-alarm", StateValue="ALARM", StateReason="test")
    assert error_of(excinfo) == ("ResourceNotFound", "Alarm no-such-alarm not found")
    with pytest.raises(ClientError) as excinfo:
        cloudwatch.put_metric_alarm(AlarmName="bad-period", Namespace="Flotilla/Test", MetricName="m",
                                    Statistic="Average", Period=7, EvaluationPeriods=1, Threshold=1.0,
                                    ComparisonOperator="GreaterThanThreshold")
    assert error_of(excinfo) == ("ValidationError", "The value 7 for parameter Period is invalid. Valid values are 10, 20, 30, and any multiple of 60.")
    assert cloudwatch.describe_alarms(AlarmNames=["bad-period"])["MetricAlarms"] == []
    code, out = aws(server, "cloudwatch", "delete-alarms", "--alarm-names", "no-such-alarm")
    assert code != 0 and "ResourceNotFound" in out, out


def test_scaling_state_survives_a_kill_9(server_factory, agent_fleet):
    """Targets, policies, their alarms and states, scheduled actions,
    activities and the metrics a kill -9 of the control plane leaves: all
    there after the restart, and a cooldown still holds (no second scale)."""
    server = server_factory(extra_args=("--service-stabilization-ms", str(STABILIZATION_MS),
                                        "--metrics-time-scale", str(TIME_SCALE)))
    name_of_cluster = unique("durable")
    server.ecs.create_cluster(clusterName=name_of_cluster)
    agent_fleet.start(server, name_of_cluster, "--simulate", "2", "--stats-interval-ms", "500")
    name, _ = make_service(server, name_of_cluster, "sim/cpu:5", desired=1)
    resource_id = f"service/{name_of_cluster}/{name}"
    scaling = server.client("application-autoscaling")
    scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource_id,
                                     ScalableDimension="ecs:service:DesiredCount", MinCapacity=1, MaxCapacity=6)
    policy_arn = scaling.put_scaling_policy(
        ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension="ecs:service:DesiredCount",
        PolicyName="out", PolicyType="StepScaling",
        StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity", "Cooldown": 3600,
                                        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]},
    )["PolicyARN"]
    now = metrics_now(server, resource_id)
    cloudwatch = server.client("cloudwatch")
    cloudwatch.put_metric_data(Namespace="Flotilla/Test", MetricData=[
        {"MetricName": "Backlog", "Value": 10.0, "Timestamp": now + datetime.timedelta(minutes=m)}
        for m in range(-2, 60)
    ])
    cloudwatch.put_metric_alarm(AlarmName="backlog", Namespace="Flotilla/Test", MetricName="Backlog",
                                Statistic="Average", Period=60, EvaluationPeriods=1, Threshold=5.0,
                                ComparisonOperator="GreaterThanThreshold", AlarmActions=[policy_arn])
    wait_until(lambda: desired_count(server, name_of_cluster, name) == 2, SCALE_TIMEOUT_S, "the first step")
    server.restart(hard=True, keep_port=True)
    scaling = server.client("application-autoscaling")
    cloudwatch = server.client("cloudwatch")
    assert [p["PolicyName"] for p in scaling.describe_scaling_policies(
        ServiceNamespace="ecs", ResourceId=resource_id)["ScalingPolicies"]] == ["out"]
    alarm = cloudwatch.describe_alarms(AlarmNames=["backlog"])["MetricAlarms"][0]
    assert alarm["StateValue"] == "ALARM", alarm
    points = cloudwatch.get_metric_statistics(
        Namespace="Flotilla/Test", MetricName="Backlog", StartTime=now - datetime.timedelta(hours=1),
        EndTime=now + datetime.timedelta(hours=2), Period=3600, Statistics=["SampleCount"])["Datapoints"]
    assert sum(p["SampleCount"] for p in points) == 62, points
    # The alarm stays in ALARM and re-invokes the policy every minute; the
    # hour-long cooldown, stored, holds the count at 2 across the restart.
    before = len(scaling.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=resource_id)["ScalingActivities"])
    assert before == 1
    def repeated_actions():
        history = server.client("cloudwatch").describe_alarm_history(
            AlarmName="backlog", HistoryItemType="Action")["AlarmHistoryItems"]
        return len(history) >= 4

    wait_until(repeated_actions, SCALE_TIMEOUT_S, "the alarm's repeated actions after the restart")
    assert desired_count(server, name_of_cluster, name) == 2


def test_container_insights_when_the_cluster_enables_it(server, module_agent_fleet):
    cluster = unique(f"insights-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster, settings=[{"name": "containerInsights", "value": "enabled"}])
    module_agent_fleet.start(server, cluster, "--simulate", "1", "--stats-interval-ms", "500")
    name, family = make_service(server, cluster, "sim/cpu:40", desired=2)
    cloudwatch = server.client("cloudwatch")
    dimensions = [{"Name": "ClusterName", "Value": cluster}, {"Name": "ServiceName", "Value": name}]
    by_family = [{"Name": "ClusterName", "Value": cluster}, {"Name": "TaskDefinitionFamily", "Value": family}]
    by_cluster = [{"Name": "ClusterName", "Value": cluster}]
    per_task = {"CpuUtilized", "CpuReserved", "MemoryUtilized", "MemoryReserved",
                "NetworkRxBytes", "NetworkTxBytes", "StorageReadBytes", "StorageWriteBytes"}

    def listed(wanted: list[dict], names: set[str]):
        metrics = cloudwatch.list_metrics(Namespace="ECS/ContainerInsights", Dimensions=wanted)["Metrics"]
        found = {m["MetricName"] for m in metrics if len(m["Dimensions"]) == len(wanted)}
        return found if names <= found else None

    wait_until(lambda: listed(dimensions, per_task | {"DesiredTaskCount", "RunningTaskCount",
                                                      "PendingTaskCount", "DeploymentCount"}),
               SCALE_TIMEOUT_S, "Container Insights' service metrics")
    wait_until(lambda: listed(by_family, per_task), SCALE_TIMEOUT_S, "Container Insights' task metrics")
    wait_until(lambda: listed(by_cluster, per_task | {"TaskCount", "ServiceCount", "ContainerInstanceCount"}),
               SCALE_TIMEOUT_S, "Container Insights' cluster metrics")
    now = datetime.datetime.now(datetime.timezone.utc)

    def latest(metric: str, wanted: list[dict], statistic: str = "Maximum"):
        # Minutes of the metrics clock, which runs ahead of the wall's:
        # 23 hours of them, within GetMetricStatistics' 1,440 points.
        points = cloudwatch.get_metric_statistics(
            Namespace="ECS/ContainerInsights", MetricName=metric, Dimensions=wanted,
            StartTime=now - datetime.timedelta(minutes=5), EndTime=now + datetime.timedelta(hours=23),
            Period=60, Statistics=[statistic])["Datapoints"]
        return max(points, key=lambda p: p["Timestamp"])[statistic] if points else None

    wait_until(lambda: latest("RunningTaskCount", dimensions) == 2.0, SCALE_TIMEOUT_S, "RunningTaskCount of 2")
    # DesiredTaskCount follows the service's desired count, before its tasks run.
    server.ecs.update_service(cluster=cluster, service=name, desiredCount=3)
    wait_until(lambda: latest("DesiredTaskCount", dimensions) == 3.0, SCALE_TIMEOUT_S, "DesiredTaskCount of 3")
    wait_until(lambda: latest("TaskCount", by_cluster) == 3.0 and latest("ServiceCount", by_cluster) == 1.0
               and latest("ContainerInstanceCount", by_cluster) == 1.0, SCALE_TIMEOUT_S, "the cluster's counts")
    # 40% of 256 reserved units per task, by service and by family alike.
    for wanted in (dimensions, by_family):
        points = cloudwatch.get_metric_statistics(
            Namespace="ECS/ContainerInsights", MetricName="CpuUtilized", Dimensions=wanted,
            StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(days=1),
            Period=3600, Statistics=["Average"])["Datapoints"]
        assert points and all(90.0 <= p["Average"] <= 115.0 for p in points), (wanted, points)
    assert latest("StorageReadBytes", by_family) > 0, "the simulated containers read from storage"
    # The module's other clusters have it off: nothing of theirs there.
    others = cloudwatch.list_metrics(Namespace="ECS/ContainerInsights")["Metrics"]
    assert all(d["Value"] == cluster for m in others for d in m["Dimensions"] if d["Name"] == "ClusterName"), others


def test_cluster_reservation_is_published_per_minute(server, module_agent_fleet):
    cluster = unique(f"reserve-{os.getpid()}")
    server.ecs.create_cluster(clusterName=cluster)
    module_agent_fleet.start(server, cluster, "--simulate", "2", "--stats-interval-ms", "500")
    arns = server.ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    instances = server.ecs.describe_container_instances(cluster=cluster, containerInstances=arns)["containerInstances"]

    def registered(name: str) -> int:
        return sum(r["integerValue"] for i in instances for r in i["registeredResources"] if r["name"] == name)

    cpu, memory = registered("CPU"), registered("MEMORY")
    assert len(instances) == 2 and cpu > 0 and memory > 0
    make_service(server, cluster, "sim/cpu:10", desired=3)
    cloudwatch = server.client("cloudwatch")
    dimensions = [{"Name": "ClusterName", "Value": cluster}]
    now = datetime.datetime.now(datetime.timezone.utc)

    def latest(metric: str):
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/ECS", MetricName=metric, Dimensions=dimensions,
            StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(days=1),
            Period=3600, Statistics=["Maximum"])["Datapoints"]
        return max((p["Maximum"] for p in points), default=None)

    # Three tasks of 256 CPU units and 128 MiB each.
    expected_cpu = 3 * 256 / cpu * 100
    wait_until(lambda: latest("CPUReservation") is not None
               and abs(latest("CPUReservation") - expected_cpu) < 0.01,
               SCALE_TIMEOUT_S, f"CPUReservation of {expected_cpu:.2f}%")
    assert abs(latest("MemoryReservation") - 3 * 128 / memory * 100) < 0.01
    assert {m["MetricName"] for m in cloudwatch.list_metrics(Namespace="AWS/ECS", Dimensions=dimensions)["Metrics"]} \
        >= {"CPUReservation", "MemoryReservation", "CPUUtilization", "MemoryUtilization"}


def test_tags_on_alarms_and_scalable_targets(server, cluster):
    cloudwatch = server.client("cloudwatch")
    alarm = unique("tagged")
    cloudwatch.put_metric_alarm(AlarmName=alarm, Namespace="Flotilla/Test", MetricName="m", Statistic="Sum",
                                Period=60, EvaluationPeriods=1, Threshold=1.0,
                                ComparisonOperator="GreaterThanThreshold", Tags=[{"Key": "team", "Value": "web"}])
    arn = cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["AlarmArn"]
    assert cloudwatch.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "web"}]
    # Updating the alarm leaves its tags, as CloudWatch does; TagResource changes them.
    cloudwatch.put_metric_alarm(AlarmName=alarm, Namespace="Flotilla/Test", MetricName="m", Statistic="Sum",
                                Period=60, EvaluationPeriods=2, Threshold=1.0,
                                ComparisonOperator="GreaterThanThreshold", Tags=[{"Key": "other", "Value": "x"}])
    cloudwatch.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "api"}])
    cloudwatch.untag_resource(ResourceARN=arn, TagKeys=["env", "never-set"])
    assert cloudwatch.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "api"}]
    with pytest.raises(ClientError) as caught:
        cloudwatch.tag_resource(ResourceARN=arn, Tags=[{"Key": "aws:owner", "Value": "me"}])
    assert error_of(caught)[0] == "InvalidParameterValue" and "aws:" in error_of(caught)[1]
    with pytest.raises(ClientError) as caught:
        cloudwatch.list_tags_for_resource(ResourceARN=arn + "-missing")
    assert error_of(caught)[0] == "ResourceNotFoundException"
    assert cloudwatch.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "api"}]

    name, _ = make_service(server, cluster, "sim/cpu:10", desired=1)
    code, out = aws(server, "application-autoscaling", "register-scalable-target", "--service-namespace", "ecs",
                    "--scalable-dimension", "ecs:service:DesiredCount", "--resource-id", f"service/{cluster}/{name}",
                    "--min-capacity", "1", "--max-capacity", "3", "--tags", "team=web")
    assert code == 0, out
    target_arn = out["ScalableTargetARN"]
    code, out = aws(server, "application-autoscaling", "tag-resource", "--resource-arn", target_arn,
                    "--tags", "env=prod")
    assert code == 0, out
    code, out = aws(server, "application-autoscaling", "list-tags-for-resource", "--resource-arn", target_arn)
    assert code == 0 and out["Tags"] == {"team": "web", "env": "prod"}, out
    too_many = ",".join(f"k{i}=v" for i in range(49))
    code, out = aws(server, "application-autoscaling", "tag-resource", "--resource-arn", target_arn,
                    "--tags", too_many)
    assert code != 0 and "TooManyTagsException" in out, out
    code, out = aws(server, "application-autoscaling", "untag-resource", "--resource-arn", target_arn,
                    "--tag-keys", "env")
    assert code == 0, out
    code, out = aws(server, "application-autoscaling", "list-tags-for-resource", "--resource-arn", target_arn)
    assert code == 0 and out["Tags"] == {"team": "web"}, out
    code, out = aws(server, "application-autoscaling", "list-tags-for-resource", "--resource-arn",
                    target_arn + "-missing")
    assert code != 0 and "ResourceNotFoundException" in out, out
