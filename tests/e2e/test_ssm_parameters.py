"""SSM Parameter Store with the AWS CLI and boto3: String, StringList and
SecureString parameters, versions, labels, paths, and Parameter Store's
refusals of bad input; SecureString values sealed in the store."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from support import error_of, unique
from test_secretsmanager import aws


@pytest.fixture
def ssm(server):
    return server.client("ssm")


def test_cli_puts_and_gets_parameters(server):
    root = "/" + unique("e2e")
    code, put = aws(server, "ssm", "put-parameter", "--name", f"{root}/db/host",
                    "--type", "String", "--value", "db.local")
    assert code == 0, put
    assert put == {"Version": 1, "Tier": "Standard"}
    code, put = aws(server, "ssm", "put-parameter", "--name", f"{root}/db/password",
                    "--type", "SecureString", "--value", "pw-secure")
    assert code == 0, put
    code, got = aws(server, "ssm", "get-parameter", "--name", f"{root}/db/password", "--with-decryption")
    assert code == 0, got
    assert got["Parameter"]["Value"] == "pw-secure"
    assert got["Parameter"]["Type"] == "SecureString"
    assert got["Parameter"]["ARN"] == f"arn:aws:ssm:{server.region}:{server.account_id}:parameter{root}/db/password"
    # Without decryption the value is not the plain text.
    code, hidden = aws(server, "ssm", "get-parameter", "--name", f"{root}/db/password")
    assert code == 0 and hidden["Parameter"]["Value"] != "pw-secure"
    code, listed = aws(server, "ssm", "get-parameters-by-path", "--path", root, "--recursive",
                       "--with-decryption")
    assert code == 0, listed
    assert {p["Name"]: p["Value"] for p in listed["Parameters"]} == {
        f"{root}/db/host": "db.local", f"{root}/db/password": "pw-secure"}
    code, err = aws(server, "ssm", "put-parameter", "--name", f"{root}/db/host",
                    "--type", "String", "--value", "other")
    assert code != 0 and "ParameterAlreadyExists" in err


def test_versions_history_labels_and_selectors(ssm):
    name = "/" + unique("e2e") + "/app/mode"
    ssm.put_parameter(Name=name, Type="StringList", Value="a,b")
    assert ssm.put_parameter(Name=name, Value="a,b,c", Overwrite=True)["Version"] == 2
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == "a,b,c"
    assert ssm.get_parameter(Name=f"{name}:1")["Parameter"]["Value"] == "a,b"
    labelled = ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["stable", "1bad"])
    assert labelled == {"InvalidLabels": ["1bad"], "ParameterVersion": 1,
                        "ResponseMetadata": labelled["ResponseMetadata"]}
    got = ssm.get_parameter(Name=f"{name}:stable")["Parameter"]
    assert (got["Value"], got["Version"], got["Selector"]) == ("a,b", 1, ":stable")
    history = ssm.get_parameter_history(Name=name)["Parameters"]
    assert [(h["Version"], h["Value"], h["Labels"]) for h in history] == [
        (1, "a,b", ["stable"]), (2, "a,b,c", [])]
    with pytest.raises(ClientError) as excinfo:
        ssm.get_parameter(Name=f"{name}:9")
    assert error_of(excinfo)[0] == "ParameterVersionNotFound"


def test_get_parameters_paths_describe_and_delete(ssm):
    root = "/" + unique("e2e")
    for index in range(12):
        ssm.put_parameter(Name=f"{root}/p{index:02}", Type="String", Value=str(index))
    ssm.put_parameter(Name=f"{root}/deep/x", Type="SecureString", Value="hidden")
    got = ssm.get_parameters(Names=[f"{root}/p00", f"{root}/p01", f"{root}/missing"])
    assert sorted(p["Name"] for p in got["Parameters"]) == [f"{root}/p00", f"{root}/p01"]
    assert got["InvalidParameters"] == [f"{root}/missing"]
    # One level: the twelve, in pages of at most 10; recursive: thirteen.
    paginator = ssm.get_paginator("get_parameters_by_path")
    one_level = [p["Name"] for page in paginator.paginate(Path=root) for p in page["Parameters"]]
    assert len(one_level) == 12
    recursive = [p["Name"] for page in paginator.paginate(Path=root, Recursive=True) for p in page["Parameters"]]
    assert len(recursive) == 13
    described = ssm.describe_parameters(ParameterFilters=[
        {"Key": "Name", "Option": "BeginsWith", "Values": [root]},
        {"Key": "Type", "Values": ["SecureString"]}])["Parameters"]
    assert [(d["Name"], d["Type"], d["Version"]) for d in described] == [(f"{root}/deep/x", "SecureString", 1)]
    assert "Value" not in described[0]
    deleted = ssm.delete_parameters(Names=[f"{root}/p00", f"{root}/nope"])
    assert (deleted["DeletedParameters"], deleted["InvalidParameters"]) == ([f"{root}/p00"], [f"{root}/nope"])
    ssm.delete_parameter(Name=f"{root}/p01")
    with pytest.raises(ClientError) as excinfo:
        ssm.delete_parameter(Name=f"{root}/p01")
    assert error_of(excinfo)[0] == "ParameterNotFound"
    with pytest.raises(ClientError) as excinfo:
        ssm.get_parameter(Name=f"{root}/p00")
    assert error_of(excinfo)[0] == "ParameterNotFound"


def test_bad_input_is_refused_and_changes_nothing(server):
    ssm = server.client("ssm", parameter_validation=False)
    root = "/" + unique("e2e")
    names = [f"{root}/n{i}" for i in range(11)]
    with pytest.raises(ClientError) as excinfo:
        ssm.get_parameters(Names=names)
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    assert "Member must have length less than or equal to 10" in message
    cases = [
        (dict(Name=f"{root}/bad name", Type="String", Value="v"), "ValidationException"),
        (dict(Name="/aws/reserved", Type="String", Value="v"), "ValidationException"),
        (dict(Name=f"{root}/ok$", Type="String", Value="v"), "ValidationException"),
        (dict(Name=root + "".join(f"/l{i}" for i in range(15)), Type="String", Value="v"),
         "HierarchyLevelLimitExceededException"),
        (dict(Name=f"{root}/big", Type="String", Value="v" * 4097), "ValidationException"),
        (dict(Name=f"{root}/huge", Type="String", Value="v" * 8193, Tier="Advanced"), "ValidationException"),
        (dict(Name=f"{root}/untyped", Value="v"), "ValidationException"),
        (dict(Name=f"{root}/k", Type="String", Value="v", KeyId="alias/x"), "ValidationException"),
    ]
    for params, expected in cases:
        with pytest.raises(ClientError) as excinfo:
            ssm.put_parameter(**params)
        assert error_of(excinfo)[0] == expected, params
    code, err = aws(server, "ssm", "put-parameter", "--name", f"{root}/secret-big", "--type", "SecureString",
                    "--value", "q" * 5000)
    assert code != 0 and "4096" in err and "qqqq" not in err
    assert server.client("ssm").describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": [root]}])["Parameters"] == []
    # 8 KB fits the advanced tier.
    put = ssm.put_parameter(Name=f"{root}/advanced", Type="String", Value="v" * 8192, Tier="Advanced")
    assert put["Tier"] == "Advanced"
    with pytest.raises(ClientError) as excinfo:
        ssm.put_parameter(Name=f"{root}/advanced", Value="v", Tier="Standard", Overwrite=True)
    assert error_of(excinfo)[0] == "ValidationException"


def test_secure_strings_are_sealed_in_the_store(fresh_server):
    ssm = fresh_server.client("ssm")
    marker = "plain-marker-" + unique("p")
    ssm.put_parameter(Name="/sealed/one", Type="SecureString", Value=marker)
    fresh_server.restart(hard=True)
    ssm = fresh_server.client("ssm")
    assert ssm.get_parameter(Name="/sealed/one", WithDecryption=True)["Parameter"]["Value"] == marker
    for path in fresh_server.data_dir.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path


def test_parameter_tags(server, ssm):
    name = "/" + unique("e2e") + "/tagged"
    ssm.put_parameter(Name=name, Type="String", Value="v", Tags=[{"Key": "team", "Value": "red"}])
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=name,
                             Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "blue"}])
    code, listed = aws(server, "ssm", "list-tags-for-resource", "--resource-type", "Parameter",
                       "--resource-id", name)
    assert code == 0, listed
    assert sorted((t["Key"], t["Value"]) for t in listed["TagList"]) == [("env", "prod"), ("team", "blue")]
    ssm.remove_tags_from_resource(ResourceType="Parameter", ResourceId=name, TagKeys=["team"])
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"] == [
        {"Key": "env", "Value": "prod"}]
    with pytest.raises(ClientError) as excinfo:
        ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name + "-absent")
    assert error_of(excinfo)[0] == "InvalidResourceId"
    with pytest.raises(ClientError) as excinfo:
        ssm.list_tags_for_resource(ResourceType="Document", ResourceId=name)
    assert error_of(excinfo)[0] == "InvalidResourceType"
