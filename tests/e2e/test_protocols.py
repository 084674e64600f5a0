"""Every AWS protocol at one endpoint: the Query protocol (STS, ELBv2, IAM)
with its XML answers and errors, and the JSON 1.0 and 1.1 services whose
models are known but whose operations have not landed. Answers are parsed by
the AWS CLI, boto3, and botocore's own parsers run over raw responses."""

import json
import subprocess
import xml.etree.ElementTree as ET

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.model
import botocore.parsers
import botocore.session
import pytest
from botocore.exceptions import ClientError

from support import ACCESS_KEY_ID, ACCOUNT_ID, AWS_CLI, CLI_TIMEOUT_S, SECRET_ACCESS_KEY, error_of

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
STS_VERSION = "2011-06-15"
STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"


def aws(server, *args):
    """The AWS CLI against the server: (returncode, parsed stdout or stderr)."""
    done = subprocess.run(
        [str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", *args],
        env=server.cli_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )
    if done.returncode != 0:
        return done.returncode, done.stderr
    return 0, json.loads(done.stdout) if done.stdout.strip() else {}


def signed(server, service, body: bytes, headers: dict, region=None):
    """POSTs `body` signed by botocore's SigV4 signer for `service`."""
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=server.endpoint + "/", data=body, headers=headers,
    )
    botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), service, region or server.region,
    ).add_auth(request)
    return server.send("POST", "/", body, dict(request.headers.items()))


def query(server, service, body, region=None):
    if isinstance(body, str):
        body = body.encode()
    return signed(server, service, body, {"Content-Type": FORM_CONTENT_TYPE}, region)


def service_model(name):
    session = botocore.session.get_session()
    return session.get_service_model(name)


def botocore_parse(protocol, response, output_shape):
    """What botocore's own parser for `protocol` makes of a raw response."""
    parser = botocore.parsers.create_parser(protocol)
    return parser.parse(
        {"status_code": response.status, "headers": response.headers, "body": response.body},
        output_shape,
    )


def xml_error(response):
    """(Type, Code, Message, RequestId) of an XML ErrorResponse."""
    root = ET.fromstring(response.body)
    assert root.tag.endswith("ErrorResponse"), response.body
    namespace = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    error = root.find(f"{namespace}Error")
    return (
        error.findtext(f"{namespace}Type"),
        error.findtext(f"{namespace}Code"),
        error.findtext(f"{namespace}Message"),
        root.findtext(f"{namespace}RequestId"),
    )


# ---- STS GetCallerIdentity -------------------------------------------------------------


def test_cli_get_caller_identity(server):
    code, identity = aws(server, "sts", "get-caller-identity")
    assert code == 0, identity
    assert identity == {
        "UserId": ACCOUNT_ID,
        "Account": ACCOUNT_ID,
        "Arn": f"arn:aws:iam::{ACCOUNT_ID}:root",
    }


def test_boto3_get_caller_identity_in_any_region(server):
    # STS is global: a signature scoped to another region is accepted.
    for region in (server.region, "eu-west-3"):
        identity = server.client("sts", region=region).get_caller_identity()
        assert identity["Account"] == ACCOUNT_ID
        assert identity["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:root"
        assert identity["UserId"] == ACCOUNT_ID
        assert identity["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert identity["ResponseMetadata"]["RequestId"]


def test_regional_services_still_refuse_other_regions(server):
    with pytest.raises(ClientError) as caught:
        server.client("elbv2", region="eu-west-3").describe_load_balancers()
    code, message = error_of(caught)
    assert code == "InvalidSignatureException"
    assert "eu-west-3" in message


def test_query_response_is_xml_botocore_parses(server):
    response = query(server, "sts", f"Action=GetCallerIdentity&Version={STS_VERSION}")
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(response.body)
    assert root.tag == f"{{{STS_NAMESPACE}}}GetCallerIdentityResponse"
    request_id = root.findtext(f"{{{STS_NAMESPACE}}}ResponseMetadata/{{{STS_NAMESPACE}}}RequestId")
    assert request_id == response.headers["x-amzn-requestid"]
    operation = service_model("sts").operation_model("GetCallerIdentity")
    parsed = botocore_parse("query", response, operation.output_shape)
    assert parsed["Account"] == ACCOUNT_ID
    assert parsed["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:root"
    assert parsed["ResponseMetadata"]["RequestId"] == request_id


def test_wrong_signing_service_is_refused_in_xml(server):
    # Signed for ELBv2 but naming an STS action: ELBv2 has no such action.
    response = query(server, "elasticloadbalancing", f"Action=GetCallerIdentity&Version={STS_VERSION}")
    assert response.status == 400
    kind, code, message, _ = xml_error(response)
    assert (kind, code) == ("Sender", "InvalidAction")
    assert "GetCallerIdentity" in message


# ---- services whose operations have not landed ----------------------------------------


def test_cli_elbv2_not_implemented_is_an_error_with_its_code(server):
    code, stderr = aws(server, "elbv2", "describe-ssl-policies")
    assert code != 0
    assert "(OperationNotPermitted)" in stderr, stderr
    assert "when calling the DescribeSSLPolicies operation" in stderr
    assert "not supported by this Flotilla server" in stderr


def test_cli_ssm_not_implemented_is_an_error_with_its_code(server):
    code, stderr = aws(server, "ssm", "describe-instance-information")
    assert code != 0
    assert "(UnsupportedOperationException)" in stderr, stderr
    assert "when calling the DescribeInstanceInformation operation" in stderr


def test_cli_iam_not_implemented(server):
    code, stderr = aws(server, "iam", "list-open-id-connect-providers")
    assert code != 0
    assert "(InvalidAction)" in stderr, stderr
    assert "ListOpenIDConnectProviders" in stderr


def test_query_error_parsed_by_botocore(server):
    response = query(server, "elasticloadbalancing", "Action=DescribeAccountLimits&Version=2015-12-01&Marker=abc")
    assert response.status == 400
    kind, code, message, request_id = xml_error(response)
    assert (kind, code) == ("Sender", "OperationNotPermitted")
    assert request_id == response.headers["x-amzn-requestid"]
    operation = service_model("elbv2").operation_model("DescribeAccountLimits")
    parsed = botocore_parse("query", response, operation.output_shape)
    assert parsed["Error"]["Code"] == "OperationNotPermitted"
    assert parsed["Error"]["Type"] == "Sender"
    assert "DescribeAccountLimits" in parsed["Error"]["Message"]
    assert parsed["ResponseMetadata"]["RequestId"] == request_id


@pytest.mark.parametrize(
    "service,signing_name,target,content_type,parser,expected_code",
    [
        ("ssm", "ssm", "AmazonSSM.DescribeInstanceInformation", "application/x-amz-json-1.1", "json",
         "UnsupportedOperationException"),
        ("secretsmanager", "secretsmanager", "secretsmanager.GetRandomPassword", "application/x-amz-json-1.1", "json",
         "InvalidRequestException"),
    ],
)
def test_json_errors_parsed_by_botocore(server, service, signing_name, target, content_type, parser, expected_code):
    response = signed(server, signing_name, b"{}", {"Content-Type": content_type, "X-Amz-Target": target})
    assert response.status == 400, response.body
    assert response.headers["content-type"] == content_type
    body = json.loads(response.body)
    assert set(body) == {"__type", "message"}
    operation = service_model(service).operation_model(target.split(".")[1])
    parsed = botocore_parse(parser, response, operation.output_shape)
    assert parsed["Error"]["Code"] == expected_code, (parsed, response.headers)
    assert "not supported by this Flotilla server" in parsed["Error"]["Message"]


def test_cloudwatch_json_1_0_errors_carry_the_query_code(server):
    """CloudWatch speaks JSON 1.0 and is query-compatible: botocore takes the
    Query code from x-amzn-query-error."""
    target = "GraniteServiceVersion20100801.SetAlarmState"
    body = json.dumps({"AlarmName": "no-such-alarm", "StateValue": "OK", "StateReason": "r"}).encode()
    response = signed(server, "monitoring", body, {
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target})
    assert response.status in (400, 404), response.body
    assert response.headers["content-type"] == "application/x-amz-json-1.0"
    assert set(json.loads(response.body)) == {"__type", "message"}
    operation = service_model("cloudwatch").operation_model("SetAlarmState")
    parsed = botocore_parse("json", response, operation.output_shape)
    assert parsed["Error"]["Code"] == "ResourceNotFound", (parsed, response.headers)
    assert "no-such-alarm" in parsed["Error"]["Message"]


def test_json_unknown_operation_of_a_modelled_service(server):
    response = signed(server, "logs", b"{}", {
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Logs_20140328.NoSuchThing"})
    assert response.status == 400
    assert json.loads(response.body)["__type"] == "UnknownOperationException"


# ---- bad Query input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,code,words",
    [
        (b"Version=2011-06-15", "MissingAction", "Action"),
        (b"Action=GetCallerIdentity", "MissingParameter", "Version"),
        (b"Action=GetCallerIdentity&Version=2099-01-01", "InvalidAction", "2099-01-01"),
        (b"Action=NoSuchAction&Version=2011-06-15", "InvalidAction", "NoSuchAction"),
        (b"Action=GetCallerIdentity&Version=2011-06-15&Version=2011-06-15", "MalformedQueryString", "more than once"),
        (b"Action=GetCallerIdentity&Version=2011-06-15&=x", "MalformedQueryString", "empty name"),
        (b"Action=GetCallerIdentity&Version=2011-06-15&Name=%ff%fe", "MalformedQueryString", "UTF-8"),
        (b"\xff\xfe\x00garbage", "MalformedQueryString", "UTF-8"),
        (b"Action=GetCallerIdentity&Version=2011-06-15&Extra=1", "InvalidParameterValue", "Extra"),
        (b"Action=AssumeRole&Version=2011-06-15&RoleArn=a&RoleSessionName=s"
         b"&PolicyArns.member.1000000000000.arn=x", "ValidationError", "1000000000000"),
        (b"Action=AssumeRole&Version=2011-06-15&RoleArn=a&RoleSessionName=s"
         b"&PolicyArns.member.99999999999999999999999999999999999999999.arn=x", "ValidationError", "at most"),
        (b"Action=AssumeRole&Version=2011-06-15&RoleArn=a&RoleSessionName=s"
         b"&PolicyArns.member.0.arn=x", "ValidationError", "numbered from 1"),
        (b"Action=AssumeRole&Version=2011-06-15&RoleArn=a&RoleSessionName=s"
         b"&PolicyArns.member.x.arn=x", "ValidationError", "not a list index"),
        (b"Action=AssumeRole&Version=2011-06-15&RoleArn=a&RoleSessionName=s&DurationSeconds=soon",
         "ValidationError", "DurationSeconds"),
        (b"Action=AssumeRole&Version=2011-06-15&RoleArn=a&RoleSessionName=s&DurationSeconds=99999999999",
         "ValidationError", "DurationSeconds"),
    ],
)
def test_bad_query_input_is_a_query_shaped_400(server, body, code, words):
    response = query(server, "sts", body)
    assert response.status == 400, response.body
    assert response.headers["content-type"].startswith("text/xml")
    kind, got_code, message, request_id = xml_error(response)
    assert (kind, got_code) == ("Sender", code), message
    assert words in message
    assert request_id == response.headers["x-amzn-requestid"]


def test_ten_thousand_members_are_refused(server):
    members = "&".join(f"PolicyArns.member.{i}.arn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2Fp{i}" for i in range(1, 10_001))
    body = f"Action=AssumeRole&Version={STS_VERSION}&RoleArn=a&RoleSessionName=s&{members}"
    response = query(server, "sts", body)
    assert response.status == 400
    kind, code, message, _ = xml_error(response)
    assert kind == "Sender"
    assert code in ("MalformedQueryString", "ValidationError")
    assert "10000" in message or "1000 members" in message, message
    # The server is still answering.
    assert server.client("sts").get_caller_identity()["Account"] == ACCOUNT_ID


def test_well_formed_input_of_an_unimplemented_operation_decodes_then_is_refused(server):
    # Lists and nested structures decode; the operation is then refused
    # with STS's own code, not a decoding error.
    body = (f"Action=AssumeRoleWithSAML&Version={STS_VERSION}"
            f"&RoleArn=arn%3Aaws%3Aiam%3A%3A{ACCOUNT_ID}%3Arole%2Fr"
            f"&PrincipalArn=arn%3Aaws%3Aiam%3A%3A{ACCOUNT_ID}%3Asaml-provider%2Fp"
            "&SAMLAssertion=assertion&PolicyArns.member.1.arn=a&PolicyArns.member.2.arn=b"
            "&DurationSeconds=900")
    response = query(server, "sts", body)
    assert response.status == 400
    _, code, message, _ = xml_error(response)
    assert code == "InvalidAction"
    assert "AssumeRoleWithSAML is not supported" in message


def test_presigned_query_request_with_parameters_in_the_url(server):
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=server.endpoint + "/",
        data={"Action": "GetCallerIdentity", "Version": STS_VERSION},
        headers={"Content-Type": FORM_CONTENT_TYPE},
    )
    # SigV4QueryAuth moves a form body into the query string, as Query
    # services take it.
    botocore.auth.SigV4QueryAuth(
        botocore.credentials.Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "sts", server.region, expires=300,
    ).add_auth(request)
    prepared = request.prepare()
    path = prepared.url[len(server.endpoint):]
    assert "Action=GetCallerIdentity" in path and "X-Amz-Signature=" in path
    response = server.send("POST", path, prepared.body or b"", dict(prepared.headers.items()))
    assert response.status == 200, response.body
    operation = service_model("sts").operation_model("GetCallerIdentity")
    parsed = botocore_parse("query", response, operation.output_shape)
    assert parsed["Account"] == ACCOUNT_ID
