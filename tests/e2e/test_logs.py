"""CloudWatch Logs with the AWS CLI and boto3: groups and streams, putting
events, reading them back (get, filter, `aws logs tail` and `tail --follow`),
retention, refusals of bad input, and kill -9 of the server after
acknowledged puts."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

from support import AWS_CLI, CLI_TIMEOUT_S, aws_cli_v2, error_of, unique, wait_until


def now_ms() -> int:
    return int(time.time() * 1000)


def aws_logs(server, *args: str, timeout: float = CLI_TIMEOUT_S, cli: str | None = None):
    """`aws logs ARGS...` against the server: (returncode, stdout, stderr)."""
    command = [cli or str(AWS_CLI), "--endpoint-url", server.endpoint, "logs", *args]
    done = subprocess.run(command, env=server.cli_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=server.home)
    return done.returncode, done.stdout, done.stderr


def make_stream(logs, group: str, stream: str = "app"):
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)


def test_cli_creates_puts_gets_and_filters(server):
    group = unique("/flotilla/e2e")
    code, _, err = aws_logs(server, "create-log-group", "--log-group-name", group)
    assert code == 0, err
    code, _, err = aws_logs(server, "create-log-stream", "--log-group-name", group,
                            "--log-stream-name", "web/1")
    assert code == 0, err
    start = now_ms()
    events = [{"timestamp": start + i, "message": json.dumps({"level": "error" if i % 3 == 0 else "info", "n": i})}
              for i in range(30)]
    code, out, err = aws_logs(server, "put-log-events", "--log-group-name", group,
                              "--log-stream-name", "web/1", "--log-events", json.dumps(events),
                              "--output", "json")
    assert code == 0, err
    assert "nextSequenceToken" in json.loads(out)

    code, out, err = aws_logs(server, "get-log-events", "--log-group-name", group,
                              "--log-stream-name", "web/1", "--start-from-head", "--output", "json")
    assert code == 0, err
    got = json.loads(out)["events"]
    assert [e["message"] for e in got] == [e["message"] for e in events]

    code, out, err = aws_logs(server, "filter-log-events", "--log-group-name", group,
                              "--filter-pattern", '{ $.level = "error" }', "--output", "json")
    assert code == 0, err
    found = json.loads(out)["events"]
    assert [json.loads(e["message"])["n"] for e in found] == list(range(0, 30, 3))
    assert all(e["logStreamName"] == "web/1" and len(e["eventId"]) == 56 for e in found)

    code, out, err = aws_logs(server, "describe-log-streams", "--log-group-name", group,
                              "--order-by", "LastEventTime", "--descending", "--output", "json")
    assert code == 0, err
    stream = json.loads(out)["logStreams"][0]
    assert stream["logStreamName"] == "web/1"
    assert stream["lastEventTimestamp"] == start + 29


def test_filter_interleaves_streams_with_time_range_and_prefix(server):
    logs = server.client("logs")
    group = unique("interleave")
    logs.create_log_group(logGroupName=group)
    start = now_ms() - 60_000
    for index, stream in enumerate(["a/1", "a/2", "b/1"]):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
            {"timestamp": start + i * 10 + index, "message": f"{stream} ERROR {i}" if i % 2 else f"{stream} ok {i}"}
            for i in range(20)])
    events = logs.filter_log_events(logGroupName=group)["events"]
    assert len(events) == 60
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    assert len(logs.filter_log_events(logGroupName=group, logStreamNamePrefix="a/")["events"]) == 40
    assert len(logs.filter_log_events(logGroupName=group, logStreamNames=["b/1"], filterPattern="ERROR")["events"]) == 10
    assert len(logs.filter_log_events(logGroupName=group, filterPattern="?ok ?nothing -a/1")["events"]) == 20
    ranged = logs.filter_log_events(logGroupName=group, startTime=start + 50, endTime=start + 99)["events"]
    assert len(ranged) == 15
    paginator = logs.get_paginator("filter_log_events")
    paged = [e["eventId"] for page in paginator.paginate(logGroupName=group, PaginationConfig={"PageSize": 7})
             for e in page["events"]]
    assert paged == [e["eventId"] for e in events]


def test_aws_logs_tail_and_follow_show_each_line_once(server):
    cli = aws_cli_v2()
    logs = server.client("logs")
    group = unique("tail")
    make_stream(logs, group)
    logs.put_log_events(logGroupName=group, logStreamName="app",
                        logEvents=[{"timestamp": now_ms(), "message": f"before {i}"} for i in range(5)])
    code, out, err = aws_logs(server, "tail", group, "--since", "10m", cli=cli)
    assert code == 0, err
    assert [line.split(" ", 2)[2] for line in out.splitlines()] == [f"before {i}" for i in range(5)]

    follow = subprocess.Popen(
        [cli, "--endpoint-url", server.endpoint, "logs", "tail", group, "--follow",
         "--since", "10m", "--format", "short"],
        # Unbuffered, so that each line reaches the pipe as the CLI prints it.
        env={**server.cli_env(), "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=server.home)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follow.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: len(lines) >= 5, 20, "tail --follow prints the existing lines")
        for batch in range(3):
            logs.put_log_events(logGroupName=group, logStreamName="app",
                                logEvents=[{"timestamp": now_ms(), "message": f"after {batch}"}])
            time.sleep(1)
        wait_until(lambda: sum("after" in line for line in lines) >= 3, 20,
                   "tail --follow shows new lines")
        time.sleep(6)  # a few more polls: nothing may repeat
    finally:
        follow.terminate()
        follow.wait(timeout=10)
    messages = [line.rstrip("\n").split(" ", 1)[1] for line in lines]
    assert messages == [f"before {i}" for i in range(5)] + [f"after {b}" for b in range(3)]


def test_retention_policy_hides_old_events(server):
    logs = server.client("logs")
    group = unique("retention")
    make_stream(logs, group)
    day_ms = 86_400_000
    old = now_ms() - 5 * day_ms
    logs.put_log_events(logGroupName=group, logStreamName="app",
                        logEvents=[{"timestamp": old, "message": "old"}])
    logs.put_log_events(logGroupName=group, logStreamName="app",
                        logEvents=[{"timestamp": now_ms(), "message": "new"}])
    code, _, err = aws_logs(server, "put-retention-policy", "--log-group-name", group,
                            "--retention-in-days", "3")
    assert code == 0, err
    described = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert described["retentionInDays"] == 3
    assert [e["message"] for e in logs.filter_log_events(logGroupName=group)["events"]] == ["new"]
    answer = logs.put_log_events(logGroupName=group, logStreamName="app",
                                 logEvents=[{"timestamp": old, "message": "late"}])
    assert answer["rejectedLogEventsInfo"] == {"expiredLogEventEndIndex": 1}
    code, _, err = aws_logs(server, "put-retention-policy", "--log-group-name", group,
                            "--retention-in-days", "2")
    assert code != 0 and "InvalidParameterException" in err
    logs.delete_retention_policy(logGroupName=group)
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert [e["message"] for e in logs.filter_log_events(logGroupName=group)["events"]] == ["old", "new"]


def test_bad_input_is_refused_and_changes_nothing(server):
    logs = server.client("logs")
    group = unique("bad")
    make_stream(logs, group)
    logs.put_log_events(logGroupName=group, logStreamName="app",
                        logEvents=[{"timestamp": now_ms(), "message": "kept"}])
    before = logs.filter_log_events(logGroupName=group)["events"]
    t = now_ms()
    cases = [
        (lambda: logs.put_log_events(logGroupName=group, logStreamName="app", logEvents=[
            {"timestamp": t, "message": "x" * 1000} for _ in range(1100)]),
         "InvalidParameterException", "Upload too large"),
        (lambda: logs.put_log_events(logGroupName=group, logStreamName="app", logEvents=[
            {"timestamp": t, "message": "later"}, {"timestamp": t - 1, "message": "earlier"}]),
         "InvalidParameterException", "chronological order"),
        (lambda: logs.put_log_events(logGroupName=group, logStreamName="nope", logEvents=[
            {"timestamp": t, "message": "m"}]),
         "ResourceNotFoundException", "The specified log stream does not exist."),
        (lambda: logs.put_log_events(logGroupName=unique("none"), logStreamName="app", logEvents=[
            {"timestamp": t, "message": "m"}]),
         "ResourceNotFoundException", "The specified log group does not exist."),
        (lambda: logs.create_log_group(logGroupName="has space"),
         "InvalidParameterException", "regular expression pattern"),
        (lambda: logs.create_log_group(logGroupName="bad!name"),
         "InvalidParameterException", "regular expression pattern"),
        (lambda: logs.create_log_stream(logGroupName=group, logStreamName="a:b"),
         "InvalidParameterException", "regular expression pattern"),
        (lambda: logs.create_log_stream(logGroupName=group, logStreamName="app"),
         "ResourceAlreadyExistsException", "already exists"),
        (lambda: logs.create_log_group(logGroupName=group),
         "ResourceAlreadyExistsException", "already exists"),
        (lambda: logs.filter_log_events(logGroupName=group, filterPattern='{ $.level = '),
         "InvalidParameterException", "Invalid filter pattern"),
        (lambda: logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", logStreamNamePrefix="a"),
         "InvalidParameterException", "Cannot order by LastEventTime with a logStreamNamePrefix."),
    ]
    for call, code, message in cases:
        with pytest.raises(ClientError) as excinfo:
            call()
        got_code, got_message = error_of(excinfo)
        assert got_code == code, got_message
        assert message in got_message
    assert logs.filter_log_events(logGroupName=group)["events"] == before
    names = [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]
    assert "has space" not in names and "bad!name" not in names
    assert [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]] == ["app"]

    # The AWS CLI's own error output for an oversized batch.
    too_many = json.dumps([{"timestamp": t, "message": "m"} for _ in range(10_001)])
    path = server.home / "too-many.json"
    path.write_text(too_many)
    code, _, err = aws_logs(server, "put-log-events", "--log-group-name", group,
                            "--log-stream-name", "app", "--log-events", f"file://{path}")
    assert code != 0 and "InvalidParameterException" in err


def test_tags_on_groups(server):
    logs = server.client("logs")
    group = unique("tags")
    logs.create_log_group(logGroupName=group, tags={"team": "a"})
    arn = f"arn:aws:logs:{server.region}:{server.account_id}:log-group:{group}"
    logs.tag_resource(resourceArn=arn, tags={"env": "prod"})
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "a", "env": "prod"}
    logs.untag_log_group(logGroupName=group, tags=["team"])
    assert logs.list_tags_log_group(logGroupName=group)["tags"] == {"env": "prod"}
    logs.delete_log_group(logGroupName=group)
    with pytest.raises(ClientError) as excinfo:
        logs.list_tags_log_group(logGroupName=group)
    assert error_of(excinfo) == ("ResourceNotFoundException", "The specified log group does not exist.")


def test_kill_nine_after_acknowledged_puts_loses_nothing(fresh_server):
    logs = fresh_server.client("logs")
    group = unique("durable")
    streams = [f"s{i}" for i in range(4)]
    logs.create_log_group(logGroupName=group)
    for stream in streams:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    acknowledged: dict[str, list[str]] = {s: [] for s in streams}
    stop = threading.Event()

    def writer(stream: str):
        client = fresh_server.client("logs", shared=False)
        batch = 0
        while not stop.is_set():
            messages = [f"{stream} {batch} {i}" for i in range(100)]
            try:
                client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
                    {"timestamp": now_ms(), "message": m} for m in messages])
            except Exception:  # the server died under the call: not acknowledged
                return
            acknowledged[stream].extend(messages)
            batch += 1

    threads = [threading.Thread(target=writer, args=(s,)) for s in streams]
    for thread in threads:
        thread.start()
    wait_until(lambda: sum(map(len, acknowledged.values())) >= 4000, 30, "puts are acknowledged")
    fresh_server.kill9()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    fresh_server.start()
    logs = fresh_server.client("logs")
    for stream in streams:
        stored = []
        paginator = logs.get_paginator("filter_log_events")
        for page in paginator.paginate(logGroupName=group, logStreamNames=[stream]):
            stored.extend(e["message"] for e in page["events"])
        missing = set(acknowledged[stream]) - set(stored)
        assert not missing, f"{stream}: {len(missing)} acknowledged events lost"
        assert len(stored) == len(set(stored))
