"""CloudWatch through the Query protocol, as the AWS CLI before 2.13 (and
other older SDKs) call it: the same metrics and alarms as the JSON 1.0
clients see, the answers in XML the CLI parses, errors with CloudWatch's
Query codes."""

from __future__ import annotations

import datetime
import json
import subprocess

from support import CLI_TIMEOUT_S, aws_cli_v2, unique


def cloudwatch_cli(server, *args: str):
    """`aws cloudwatch ARGS...` with the Debian CLI, which speaks Query to CloudWatch."""
    command = [aws_cli_v2(), "--endpoint-url", server.endpoint, "--output", "json", "cloudwatch", *args]
    done = subprocess.run(command, env=server.cli_env(), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, cwd=server.home)
    return done.returncode, done.stdout, done.stderr


def iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_query_clients_put_and_read_metrics(server):
    namespace = unique("Flotilla/Query")
    for value in ("5", "7"):
        code, _, err = cloudwatch_cli(server, "put-metric-data", "--namespace", namespace,
                                      "--metric-name", "Latency", "--value", value,
                                      "--dimensions", "Service=web")
        assert code == 0, err
    now = datetime.datetime.now(datetime.timezone.utc)
    window = ["--start-time", iso(now - datetime.timedelta(minutes=10)),
              "--end-time", iso(now + datetime.timedelta(minutes=5))]
    code, out, err = cloudwatch_cli(server, "get-metric-statistics", "--namespace", namespace,
                                    "--metric-name", "Latency", "--dimensions", "Name=Service,Value=web",
                                    "--period", "60", "--statistics", "Average", "Sum", "Maximum", *window)
    assert code == 0, err
    points = json.loads(out)["Datapoints"]
    assert sum(point["Sum"] for point in points) == 12.0
    assert max(point["Maximum"] for point in points) == 7.0

    query = [{"Id": "total", "MetricStat": {"Metric": {
        "Namespace": namespace, "MetricName": "Latency",
        "Dimensions": [{"Name": "Service", "Value": "web"}]}, "Period": 60, "Stat": "Sum"}}]
    code, out, err = cloudwatch_cli(server, "get-metric-data", "--metric-data-queries", json.dumps(query), *window)
    assert code == 0, err
    result = json.loads(out)["MetricDataResults"][0]
    assert result["Id"] == "total" and result["StatusCode"] == "Complete"
    assert sum(result["Values"]) == 12.0 and len(result["Timestamps"]) == len(result["Values"])

    code, out, err = cloudwatch_cli(server, "list-metrics", "--namespace", namespace)
    assert code == 0, err
    assert json.loads(out)["Metrics"] == [{"Namespace": namespace, "MetricName": "Latency",
                                           "Dimensions": [{"Name": "Service", "Value": "web"}]}]


def test_query_clients_manage_alarms_the_json_clients_see(server):
    alarm = unique("query-alarm")
    code, _, err = cloudwatch_cli(server, "put-metric-alarm", "--alarm-name", alarm,
                                  "--namespace", "Flotilla/Query", "--metric-name", "Errors",
                                  "--statistic", "Sum", "--period", "60", "--evaluation-periods", "2",
                                  "--threshold", "3", "--comparison-operator", "GreaterThanThreshold")
    assert code == 0, err
    described = server.client("cloudwatch").describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
    assert [(a["AlarmName"], a["EvaluationPeriods"], a["Threshold"]) for a in described] == [(alarm, 2, 3.0)]

    code, _, err = cloudwatch_cli(server, "set-alarm-state", "--alarm-name", alarm,
                                  "--state-value", "ALARM", "--state-reason", "set by hand")
    assert code == 0, err
    code, out, err = cloudwatch_cli(server, "describe-alarms", "--alarm-names", alarm)
    assert code == 0, err
    [seen] = json.loads(out)["MetricAlarms"]
    assert seen["StateValue"] == "ALARM" and seen["StateReason"] == "set by hand"
    assert seen["AlarmArn"].endswith(f":alarm:{alarm}")

    code, out, err = cloudwatch_cli(server, "describe-alarm-history", "--alarm-name", alarm)
    assert code == 0, err
    summaries = [item["HistorySummary"] for item in json.loads(out)["AlarmHistoryItems"]]
    assert "Alarm updated from INSUFFICIENT_DATA to ALARM" in summaries

    code, _, err = cloudwatch_cli(server, "delete-alarms", "--alarm-names", alarm)
    assert code == 0, err
    assert server.client("cloudwatch").describe_alarms(AlarmNames=[alarm])["MetricAlarms"] == []


def test_query_clients_get_cloudwatch_query_errors(server):
    code, _, err = cloudwatch_cli(server, "delete-alarms", "--alarm-names", unique("missing"))
    assert code != 0
    assert "(ResourceNotFound)" in err and "not found" in err

    code, _, err = cloudwatch_cli(server, "get-metric-statistics", "--namespace", "Flotilla/Query",
                                  "--metric-name", "Latency", "--period", "7", "--statistics", "Average",
                                  "--start-time", "2026-01-01T00:00:00Z", "--end-time", "2026-01-01T01:00:00Z")
    assert code != 0
    assert "(InvalidParameterValue)" in err and "Period" in err

    # A bad alarm changes nothing: the alarm it names does not appear.
    alarm = unique("refused")
    code, _, err = cloudwatch_cli(server, "put-metric-alarm", "--alarm-name", alarm,
                                  "--namespace", "Flotilla/Query", "--metric-name", "Errors",
                                  "--statistic", "Sum", "--period", "7", "--evaluation-periods", "1",
                                  "--threshold", "1", "--comparison-operator", "GreaterThanThreshold")
    assert code != 0 and "Period" in err
    assert server.client("cloudwatch").describe_alarms(AlarmNames=[alarm])["MetricAlarms"] == []
