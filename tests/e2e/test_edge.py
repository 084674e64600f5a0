"""The HTTP edge: signatures, framing, limits, request ids, health and
metrics. Every refused mutation is checked to have changed nothing."""

import datetime
import http.client
import json
import re
import secrets
import subprocess

import botocore.auth
import botocore.credentials

import pytest
from botocore.exceptions import ClientError

from support import ACCESS_KEY_ID, AWS_CLI, ECS_TARGET_PREFIX, SECRET_ACCESS_KEY, JSON_CONTENT_TYPE, all_pages, cluster_arn, error_of, unique, utc_now

TEN_MINUTES = datetime.timedelta(minutes=10)
REQUEST_BODY_MAX_BYTES = 1024 * 1024


def listed_clusters(server):
    return all_pages(server.ecs, "list_clusters", "clusterArns")


def assert_not_created(server, name, before):
    assert listed_clusters(server) == before
    assert cluster_arn(name) not in before
    assert server.ecs.describe_clusters(clusters=[name])["clusters"] == []


def assert_aws_error(response, status, code):
    assert response.status == status, (response.status, response.body)
    assert response.error_code == code, response.body
    assert response.headers.get("content-type") == JSON_CONTENT_TYPE
    assert response.headers.get("x-amzn-requestid")


# ---- authentication ----------------------------------------------------------------


def test_unsigned_post_is_refused(server):
    name = unique("unsigned")
    before = listed_clusters(server)
    response = server.send(
        "POST", "/", json.dumps({"clusterName": name}).encode(),
        {"Content-Type": JSON_CONTENT_TYPE, "X-Amz-Target": f"{ECS_TARGET_PREFIX}.CreateCluster"},
    )
    assert_aws_error(response, 400, "MissingAuthenticationTokenException")
    assert_not_created(server, name, before)


def test_wrong_secret_is_invalid_signature(server):
    name = unique("wrong-secret")
    before = listed_clusters(server)
    with pytest.raises(ClientError) as caught:
        server.client(secret_key="not-the-secret").create_cluster(clusterName=name)
    code, message = error_of(caught)
    assert code == "InvalidSignatureException"
    assert "signature" in message.lower()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert_not_created(server, name, before)


def test_unknown_access_key_is_unrecognized_client(server):
    name = unique("stranger")
    before = listed_clusters(server)
    with pytest.raises(ClientError) as caught:
        server.client(access_key="AKIDNOBODYKNOWS", secret_key="whatever").create_cluster(clusterName=name)
    code, message = error_of(caught)
    assert code == "UnrecognizedClientException"
    assert "security token" in message
    assert_not_created(server, name, before)


def test_unknown_access_key_with_the_cli(server):
    env = server.cli_env()
    env["AWS_ACCESS_KEY_ID"] = "AKIDNOBODYKNOWS"
    done = subprocess.run(
        [str(AWS_CLI), "--endpoint-url", server.endpoint, "ecs", "list-clusters"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 255, done
    assert "UnrecognizedClientException" in done.stderr


def test_signature_scoped_to_another_region_is_refused(server):
    name = unique("elsewhere")
    before = listed_clusters(server)
    with pytest.raises(ClientError) as caught:
        server.client(region="eu-west-1").create_cluster(clusterName=name)
    code, message = error_of(caught)
    assert code == "InvalidSignatureException"
    assert "eu-west-1" in message
    assert_not_created(server, name, before)


def test_signature_from_ten_minutes_ago_is_expired(server):
    name = unique("stale")
    before = listed_clusters(server)
    response = server.signed_request("CreateCluster", {"clusterName": name}, signed_at=utc_now() - TEN_MINUTES)
    assert_aws_error(response, 400, "InvalidSignatureException")
    assert "Signature expired" in response.message
    assert_not_created(server, name, before)


def test_signature_from_ten_minutes_ahead_is_refused(server):
    name = unique("future")
    before = listed_clusters(server)
    response = server.signed_request("CreateCluster", {"clusterName": name}, signed_at=utc_now() + TEN_MINUTES)
    assert_aws_error(response, 400, "InvalidSignatureException")
    assert "not yet current" in response.message
    assert_not_created(server, name, before)


def test_signature_from_a_minute_ago_is_accepted(server):
    name = unique("slightly-stale")
    response = server.signed_request(
        "CreateCluster", {"clusterName": name}, signed_at=utc_now() - datetime.timedelta(minutes=1)
    )
    assert response.status == 200, response.body
    assert response.json["cluster"]["clusterArn"] == cluster_arn(name)


def test_swapped_body_is_refused(server):
    signed_for, sent = unique("innocent"), unique("swapped")
    before = listed_clusters(server)
    response = server.signed_request("CreateCluster", {"clusterName": signed_for}, send_body={"clusterName": sent})
    assert_aws_error(response, 400, "InvalidSignatureException")
    assert_not_created(server, sent, before)
    assert cluster_arn(signed_for) not in listed_clusters(server)


def test_unsigned_payload_does_not_let_a_body_be_swapped(server):
    """UNSIGNED-PAYLOAD is S3's; on ECS the signature must cover the body, or
    whoever sees a signed request can send any body under its signature."""
    signed_for, sent = unique("innocent"), unique("swapped")
    before = listed_clusters(server)
    response = server.signed_request(
        "CreateCluster", {"clusterName": signed_for}, send_body={"clusterName": sent},
        extra_headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )
    assert_aws_error(response, 400, "InvalidSignatureException")
    assert_not_created(server, sent, before)


def test_presigned_request_with_a_swapped_body_is_refused(server):
    signed_for, sent = unique("presigned-innocent"), unique("presigned-swapped")
    before = listed_clusters(server)
    response = server.presigned_request("CreateCluster", {"clusterName": signed_for}, send_body={"clusterName": sent})
    assert_aws_error(response, 400, "InvalidSignatureException")
    assert_not_created(server, sent, before)
    assert cluster_arn(signed_for) not in listed_clusters(server)


def test_presigned_request_is_accepted(server):
    name = unique("presigned")
    response = server.presigned_request("CreateCluster", {"clusterName": name})
    assert response.status == 200, response.body
    assert response.json["cluster"]["clusterArn"] == cluster_arn(name)
    assert response.headers.get("x-amzn-requestid")
    assert cluster_arn(name) in listed_clusters(server)


def test_presigned_request_ten_minutes_old_is_accepted_until_it_expires(server):
    name = unique("presigned-old")
    response = server.presigned_request(
        "CreateCluster", {"clusterName": name}, signed_at=utc_now() - TEN_MINUTES, expires_s=3600
    )
    assert response.status == 200, response.body
    assert cluster_arn(name) in listed_clusters(server)


def test_expired_presigned_request_is_refused(server):
    name = unique("presigned-expired")
    before = listed_clusters(server)
    response = server.presigned_request(
        "CreateCluster", {"clusterName": name}, signed_at=utc_now() - TEN_MINUTES, expires_s=60
    )
    assert_aws_error(response, 400, "InvalidSignatureException")
    assert "expired" in response.message.lower()
    assert_not_created(server, name, before)


# ---- framing -------------------------------------------------------------------------------


def test_unknown_operation(server):
    response = server.signed_request("LaunchTheRockets", {})
    assert_aws_error(response, 400, "UnknownOperationException")


def test_unknown_service_prefix(server):
    response = server.signed_request("", {}, target="AmazonSomethingElse.CreateCluster")
    assert_aws_error(response, 400, "UnknownOperationException")


def test_missing_target(server):
    response = server.signed_request("", {}, target="")
    assert response.status == 400
    assert response.error_code in {"UnknownOperationException", "MissingAction"}, response.body
    assert response.headers.get("x-amzn-requestid")


def test_malformed_json_is_a_serialization_exception(server):
    name = unique("malformed")
    before = listed_clusters(server)
    response = server.signed_request("CreateCluster", f'{{"clusterName": "{name}"'.encode())
    assert_aws_error(response, 400, "SerializationException")
    assert_not_created(server, name, before)


def test_body_that_is_not_an_object_is_a_serialization_exception(server):
    response = server.signed_request("CreateCluster", b'["clusterName"]')
    assert_aws_error(response, 400, "SerializationException")


def test_wrong_member_type_names_the_member(server):
    response = server.signed_request("ListClusters", {"maxResults": "abc"})
    assert_aws_error(response, 400, "SerializationException")
    assert "maxResults" in response.message

    name = unique("wrong-type")
    before = listed_clusters(server)
    response = server.signed_request("CreateCluster", {"clusterName": name, "tags": [{"key": "a", "value": 7}]})
    assert_aws_error(response, 400, "SerializationException")
    assert "value" in response.message
    assert_not_created(server, name, before)


def test_body_over_one_mebibyte_is_refused_on_its_declared_length(server):
    size = REQUEST_BODY_MAX_BYTES + 100 * 1024
    head = (
        "POST / HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: {JSON_CONTENT_TYPE}\r\n"
        f"X-Amz-Target: {ECS_TARGET_PREFIX}.CreateCluster\r\n"
        f"Content-Length: {size}\r\n"
        "Connection: close\r\n\r\n"
    )
    # The server must answer from the declared length, without waiting for
    # (or buffering) the body.
    response = server.send_headers_only(head)
    assert_aws_error(response, 413, "RequestEntityTooLargeException")


def test_body_over_one_mebibyte_is_refused(server):
    before = listed_clusters(server)
    name = unique("huge")
    # boto3 sends the whole body; the server answers 413 without reading it all.
    with pytest.raises(ClientError) as caught:
        server.ecs.create_cluster(clusterName=name, tags=[{"key": "k", "value": "v" * (REQUEST_BODY_MAX_BYTES + 1)}])
    code, message = error_of(caught)
    assert code == "RequestEntityTooLargeException"
    assert str(REQUEST_BODY_MAX_BYTES) in message
    metadata = caught.value.response["ResponseMetadata"]
    assert metadata["HTTPStatusCode"] == 413
    assert metadata["RequestId"]
    assert_not_created(server, name, before)


def test_body_just_under_the_limit_is_read(server):
    # Just under the limit, the body is read whole and judged on its content:
    # a tag value this long is a validation error, not a framing one.
    name = unique("big")
    padding = REQUEST_BODY_MAX_BYTES - 200
    body = json.dumps({"clusterName": name, "tags": [{"key": "k", "value": "v" * padding}]})
    assert len(body) <= REQUEST_BODY_MAX_BYTES
    response = server.signed_request("CreateCluster", body)
    assert_aws_error(response, 400, "InvalidParameterException")


# ---- request ids, health, metrics --------------------------------------------------------


def test_every_response_has_a_request_id(server):
    ids = []
    answered = server.ecs.list_clusters()
    ids.append(answered["ResponseMetadata"]["RequestId"])
    with pytest.raises(ClientError) as caught:
        server.ecs.delete_cluster(cluster=unique("nope"))
    ids.append(caught.value.response["ResponseMetadata"]["RequestId"])
    for response in (
        server.signed_request("ListClusters", {}),
        server.signed_request("Nope", {}),
        server.signed_request("ListClusters", b"{"),
        server.send("POST", "/", b"{}", {"X-Amz-Target": f"{ECS_TARGET_PREFIX}.ListClusters"}),
    ):
        ids.append(response.headers.get("x-amzn-requestid"))
    assert all(ids), ids
    assert len(set(ids)) == len(ids), "request ids repeat"
    for request_id in ids:
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", request_id), request_id


def test_health(server):
    response = server.send("GET", "/health")
    assert response.status == 200
    body = response.json
    assert body["status"] == "ok" and body["storeReachable"] is True, body
    # One replica on the embedded store leads every elected loop.
    assert "service_scheduler" in str(body["leads"]), body


def metric_value(text, operation, code):
    pattern = (
        r'^flotilla_api_requests_total\{service="ecs",operation="' + re.escape(operation)
        + r'",code="' + re.escape(code) + r'"\} (\d+)$'
    )
    match = re.search(pattern, text, re.M)
    return int(match.group(1)) if match else 0


def test_metrics_count_requests_by_operation_and_outcome(server):
    before = server.metrics_text()
    server.ecs.list_clusters()
    server.ecs.list_clusters()
    with pytest.raises(ClientError):
        server.ecs.delete_cluster(cluster=unique("nope"))
    response = server.send("GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.body.decode()
    assert "# TYPE flotilla_api_requests_total counter" in text
    assert metric_value(text, "ListClusters", "OK") == metric_value(before, "ListClusters", "OK") + 2
    assert (metric_value(text, "DeleteCluster", "ClusterNotFoundException")
            == metric_value(before, "DeleteCluster", "ClusterNotFoundException") + 1)
    assert re.search(r"^flotilla_api_request_duration_seconds_count\{.*\} \d+$", text, re.M)
    # Every sample line is `name{labels} value` or `name value`.
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInf]+', line), line


def resident_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_random_operation_names_do_not_grow_the_server(server_factory):
    """100,000 requests for operations that do not exist, signed and unsigned,
    over kept-alive connections: /metrics keeps one series for them and the
    server's memory stays where it was."""
    server = server_factory()
    server.ecs.list_clusters()
    signer = botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "ecs", server.region)

    def flood(count, signed):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for _ in range(count):
                operation = "Op" + secrets.token_hex(8)
                request = server.build_request(operation, b"{}")
                if signed:
                    signer.add_auth(request)
                connection.request("POST", "/", body=b"{}", headers=dict(request.headers.items()))
                response = connection.getresponse()
                response.read()
                assert response.status == 400, response.status
        finally:
            connection.close()

    flood(2_000, signed=False)  # warm the allocator before the baseline
    metrics_before = len(server.metrics_text())
    rss_before_kib = resident_kib(server.process.pid)
    flood(30_000, signed=True)
    flood(68_000, signed=False)
    text = server.metrics_text()
    assert metric_value(text, "unknown", "UnknownOperationException") >= 30_000
    assert "Op" not in "".join(re.findall(r'operation="([^"]*)"', text))
    assert len(text) < metrics_before + 4_096, (metrics_before, len(text))
    rss_after_kib = resident_kib(server.process.pid)
    assert rss_after_kib < rss_before_kib + 4_096, (rss_before_kib, rss_after_kib)
