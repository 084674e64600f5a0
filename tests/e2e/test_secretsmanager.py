"""Secrets Manager with the AWS CLI and boto3: secrets and their versions,
staging labels, scheduled deletion and restore, tags, listing, and AWS's
refusals of bad input; values sealed in the store."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
from botocore.exceptions import ClientError

from support import AWS_CLI, CLI_TIMEOUT_S, error_of, unique

TOKEN_A = "a" * 32
TOKEN_B = "b" * 32


def aws(server, service: str, *args: str):
    """`aws SERVICE ARGS...` against the server: (returncode, JSON or stderr)."""
    command = [str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", service, *args]
    done = subprocess.run(command, env=server.cli_env(), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, cwd=server.home)
    if done.returncode != 0:
        return done.returncode, done.stderr
    return 0, (json.loads(done.stdout) if done.stdout.strip() else {})


@pytest.fixture
def sm(server):
    return server.client("secretsmanager")


def test_cli_creates_and_reads_a_secret(server):
    name = unique("e2e/db")
    code, created = aws(server, "secretsmanager", "create-secret", "--name", name,
                        "--secret-string", '{"user":"app","password":"pw-1"}',
                        "--description", "the database")
    assert code == 0, created
    assert created["Name"] == name
    # The ARN ends in the name, a hyphen and six random characters.
    assert created["ARN"].startswith(f"arn:aws:secretsmanager:{server.region}:{server.account_id}:secret:{name}-")
    assert len(created["ARN"]) == len(f"arn:aws:secretsmanager:{server.region}:{server.account_id}:secret:{name}-") + 6
    code, value = aws(server, "secretsmanager", "get-secret-value", "--secret-id", name)
    assert code == 0, value
    assert json.loads(value["SecretString"]) == {"user": "app", "password": "pw-1"}
    assert value["VersionStages"] == ["AWSCURRENT"]
    assert value["VersionId"] == created["VersionId"]
    # By its ARN, and by its ARN without the suffix.
    for secret_id in (created["ARN"], created["ARN"][:-7]):
        code, value = aws(server, "secretsmanager", "get-secret-value", "--secret-id", secret_id)
        assert code == 0, value
        assert value["Name"] == name
    code, described = aws(server, "secretsmanager", "describe-secret", "--secret-id", name)
    assert code == 0, described
    assert described["Description"] == "the database"
    assert described["VersionIdsToStages"] == {created["VersionId"]: ["AWSCURRENT"]}
    assert "SecretString" not in json.dumps(described)


def test_put_moves_current_and_previous(sm):
    name = unique("e2e/rotating")
    first = sm.create_secret(Name=name, SecretString="one", ClientRequestToken=TOKEN_A)
    assert first["VersionId"] == TOKEN_A
    second = sm.put_secret_value(SecretId=name, SecretString="two", ClientRequestToken=TOKEN_B)
    assert second["VersionStages"] == ["AWSCURRENT"]
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "two"
    previous = sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
    assert (previous["SecretString"], previous["VersionId"]) == ("one", TOKEN_A)
    assert sm.get_secret_value(SecretId=name, VersionId=TOKEN_A)["SecretString"] == "one"
    # The same token and value again changes nothing; another value is refused.
    again = sm.put_secret_value(SecretId=name, SecretString="two", ClientRequestToken=TOKEN_B)
    assert again["VersionId"] == TOKEN_B
    with pytest.raises(ClientError) as excinfo:
        sm.put_secret_value(SecretId=name, SecretString="three", ClientRequestToken=TOKEN_B)
    assert error_of(excinfo)[0] == "ResourceExistsException"
    versions = sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert {v["VersionId"]: v["VersionStages"] for v in versions} == {
        TOKEN_A: ["AWSPREVIOUS"], TOKEN_B: ["AWSCURRENT"]}
    # A custom label, then AWSCURRENT moved back to the first version.
    sm.update_secret_version_stage(SecretId=name, VersionStage="blue", MoveToVersionId=TOKEN_A)
    assert sm.get_secret_value(SecretId=name, VersionStage="blue")["SecretString"] == "one"
    with pytest.raises(ClientError) as excinfo:
        sm.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=TOKEN_A)
    assert error_of(excinfo)[0] == "InvalidParameterException"
    sm.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT",
                                   MoveToVersionId=TOKEN_A, RemoveFromVersionId=TOKEN_B)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "one"
    stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert sorted(stages[TOKEN_A]) == ["AWSCURRENT", "blue"]
    assert stages[TOKEN_B] == ["AWSPREVIOUS"]


def test_binary_secrets_and_update(sm):
    name = unique("e2e/bin")
    blob = bytes(range(256))
    sm.create_secret(Name=name, SecretBinary=blob)
    got = sm.get_secret_value(SecretId=name)
    assert got["SecretBinary"] == blob and "SecretString" not in got
    updated = sm.update_secret(SecretId=name, SecretString="text now", Description="changed")
    assert "VersionId" in updated
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "text now"
    assert sm.describe_secret(SecretId=name)["Description"] == "changed"
    # A secret made without a value has no AWSCURRENT version yet.
    empty = unique("e2e/empty")
    sm.create_secret(Name=empty)
    with pytest.raises(ClientError) as excinfo:
        sm.get_secret_value(SecretId=empty)
    assert error_of(excinfo) == ("ResourceNotFoundException",
                                 "Secrets Manager can't find the specified secret value for staging label: AWSCURRENT")


def test_delete_restore_and_force_delete(server, sm):
    name = unique("e2e/deleted")
    sm.create_secret(Name=name, SecretString="v")
    deleted = sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    assert "DeletionDate" in deleted
    with pytest.raises(ClientError) as excinfo:
        sm.get_secret_value(SecretId=name)
    assert error_of(excinfo) == ("InvalidRequestException",
                                 "You can't perform this operation on the secret because it was marked for deletion.")
    with pytest.raises(ClientError) as excinfo:
        sm.create_secret(Name=name, SecretString="again")
    assert error_of(excinfo)[0] == "InvalidRequestException"
    assert "DeletedDate" in sm.describe_secret(SecretId=name)
    names = [s["Name"] for s in sm.list_secrets(Filters=[{"Key": "name", "Values": [name]}])["SecretList"]]
    assert names == []
    names = [s["Name"] for s in sm.list_secrets(IncludePlannedDeletion=True,
                                                 Filters=[{"Key": "name", "Values": [name]}])["SecretList"]]
    assert names == [name]
    sm.restore_secret(SecretId=name)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v"
    code, _ = aws(server, "secretsmanager", "delete-secret", "--secret-id", name,
                  "--force-delete-without-recovery")
    assert code == 0
    with pytest.raises(ClientError) as excinfo:
        sm.describe_secret(SecretId=name)
    assert error_of(excinfo) == ("ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
    # The name is free again.
    sm.create_secret(Name=name, SecretString="new")
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "new"


def test_tags_and_list_filters_and_paging(sm):
    prefix = unique("e2e/list")
    for index in range(5):
        sm.create_secret(Name=f"{prefix}/{index}", SecretString="x",
                         Tags=[{"Key": "team", "Value": "red" if index % 2 else "blue"}])
    sm.tag_resource(SecretId=f"{prefix}/0", Tags=[{"Key": "env", "Value": "prod"}])
    sm.untag_resource(SecretId=f"{prefix}/0", TagKeys=["team"])
    assert sm.describe_secret(SecretId=f"{prefix}/0")["Tags"] == [{"Key": "env", "Value": "prod"}]
    red = sm.list_secrets(Filters=[{"Key": "name", "Values": [prefix]},
                                   {"Key": "tag-value", "Values": ["red"]}])["SecretList"]
    assert sorted(s["Name"] for s in red) == [f"{prefix}/1", f"{prefix}/3"]
    seen = []
    token = None
    while True:
        kwargs = {"MaxResults": 2, "Filters": [{"Key": "name", "Values": [prefix]}], "SortBy": "name"}
        if token:
            kwargs["NextToken"] = token
        page = sm.list_secrets(**kwargs)
        assert len(page["SecretList"]) <= 2
        seen += [s["Name"] for s in page["SecretList"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == [f"{prefix}/{i}" for i in range(5)]
    assert "SecretString" not in json.dumps(sm.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}]), default=str)


def test_bad_input_is_refused_and_changes_nothing(server, sm):
    name = unique("e2e/bad")
    # A 70 KB secret: over the 65,536-byte limit, and the value is not quoted.
    code, err = aws(server, "secretsmanager", "create-secret", "--name", name,
                    "--secret-string", "k" * 70_000)
    assert code != 0
    assert "ValidationException" in err and "65536" in err and "kkkk" not in err
    with pytest.raises(ClientError) as excinfo:
        sm.describe_secret(SecretId=name)
    assert error_of(excinfo)[0] == "ResourceNotFoundException"
    cases = [
        (dict(Name="bad name!", SecretString="v"), "InvalidParameterException"),
        (dict(Name=name, SecretString="v", SecretBinary=b"v"), "InvalidParameterException"),
        (dict(Name=name, SecretString="v", ClientRequestToken="short"), "ValidationException"),
        (dict(Name=name, SecretString="v", AddReplicaRegions=[{"Region": "eu-west-1"}]), "InvalidRequestException"),
    ]
    # What botocore would refuse itself, sent as is.
    unchecked = server.client("secretsmanager", parameter_validation=False)
    for params, code in cases:
        with pytest.raises(ClientError) as excinfo:
            unchecked.create_secret(**params)
        assert error_of(excinfo)[0] == code, params
    with pytest.raises(ClientError) as excinfo:
        sm.describe_secret(SecretId=name)
    assert error_of(excinfo)[0] == "ResourceNotFoundException"
    sm.create_secret(Name=name, SecretString="v")
    with pytest.raises(ClientError) as excinfo:
        sm.create_secret(Name=name, SecretString="v")
    assert error_of(excinfo) == ("ResourceExistsException",
                                 f"The operation failed because the secret {name} already exists.")
    for params, message in [
        (dict(RecoveryWindowInDays=3), "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."),
        (dict(RecoveryWindowInDays=7, ForceDeleteWithoutRecovery=True),
         "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays."),
    ]:
        with pytest.raises(ClientError) as excinfo:
            sm.delete_secret(SecretId=name, **params)
        assert error_of(excinfo) == ("InvalidParameterException", message)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v"
    with pytest.raises(ClientError) as excinfo:
        sm.get_secret_value(SecretId=f"arn:aws:secretsmanager:{server.region}:{server.account_id}:secret:{name}-zzzzzz")
    assert error_of(excinfo)[0] == "ResourceNotFoundException"


def test_values_are_sealed_in_the_store(fresh_server):
    sm = fresh_server.client("secretsmanager")
    marker = "plain-marker-" + unique("v")
    sm.create_secret(Name=unique("e2e/sealed"), SecretString=marker)
    sm.create_secret(Name=unique("e2e/sealed-bin"), SecretBinary=marker.encode() + b"-binary")
    fresh_server.restart(hard=True)
    sm = fresh_server.client("secretsmanager")
    found = [s["Name"] for s in sm.list_secrets()["SecretList"]]
    assert len(found) == 2
    assert sm.get_secret_value(SecretId=found[0])["SecretString" if "bin" not in found[0] else "SecretBinary"]
    key = fresh_server.data_dir / "secrets.key"
    assert key.stat().st_mode & 0o777 == 0o600
    encoded = base64.b64encode(marker.encode()).decode()[:16]
    for path in fresh_server.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert marker.encode() not in data, path
            assert encoded.encode() not in data, path


def test_an_operator_key_file_seals_instead(server_factory, tmp_path):
    key_file = tmp_path / "operator.key"
    key_file.write_text("0123456789abcdef" * 4 + "\n")
    key_file.chmod(0o600)
    server = server_factory(extra_args=("--secrets-key-file", str(key_file)))
    sm = server.client("secretsmanager")
    sm.create_secret(Name="with-operator-key", SecretString="value-1")
    assert sm.get_secret_value(SecretId="with-operator-key")["SecretString"] == "value-1"
    assert not (server.data_dir / "secrets.key").exists()
    # Restarted with another key, the server cannot open the value and
    # says so without showing anything of it.
    server.stop()
    key_file.write_text("fedcba9876543210" * 4 + "\n")
    server.start()
    with pytest.raises(ClientError) as excinfo:
        server.client("secretsmanager").get_secret_value(SecretId="with-operator-key")
    code, message = error_of(excinfo)
    assert code == "InternalServiceError" and "value-1" not in message
    assert "sealed with key" in server.stderr_path.read_text()


def test_batch_get_secret_value(sm):
    prefix = unique("e2e/batch")
    for index in range(3):
        sm.create_secret(Name=f"{prefix}/{index}", SecretString=f"value-{index}")
    got = sm.batch_get_secret_value(SecretIdList=[f"{prefix}/0", f"{prefix}/2", f"{prefix}/absent"])
    assert sorted(v["SecretString"] for v in got["SecretValues"]) == ["value-0", "value-2"]
    assert [(e["SecretId"], e["ErrorCode"]) for e in got["Errors"]] == [
        (f"{prefix}/absent", "ResourceNotFoundException")]
    filtered = sm.batch_get_secret_value(Filters=[{"Key": "name", "Values": [prefix]}])
    assert sorted(v["Name"] for v in filtered["SecretValues"]) == [f"{prefix}/{i}" for i in range(3)]
    with pytest.raises(ClientError) as excinfo:
        sm.batch_get_secret_value(SecretIdList=[f"{prefix}/0"], Filters=[{"Key": "name", "Values": [prefix]}])
    assert error_of(excinfo)[0] == "InvalidParameterException"
