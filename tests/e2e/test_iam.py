"""IAM, STS and enforcement, end to end with the AWS CLI and boto3.

The server's own key (`test`/`test`) is the account's root: it creates
users, roles and policies, and is never restricted. Users' keys and role
sessions are verified and authorized on every request."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import boto3
import botocore.exceptions
import pytest

from support import ACCOUNT_ID, AWS_CLI, CLI_TIMEOUT_S, client_config, cluster_arn, error_of, unique, wait_until

READ_ONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"


def aws(server, *args: str, access_key: str | None = None, secret_key: str | None = None,
        session_token: str | None = None):
    """`aws --endpoint-url ... ARGS`: (returncode, JSON output or stderr)."""
    env = server.cli_env()
    if access_key:
        env["AWS_ACCESS_KEY_ID"] = access_key
        env["AWS_SECRET_ACCESS_KEY"] = secret_key
    if session_token:
        env["AWS_SESSION_TOKEN"] = session_token
    done = subprocess.run(
        [str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", *args],
        env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )
    if done.returncode != 0:
        return done.returncode, done.stderr
    return 0, (json.loads(done.stdout) if done.stdout.strip() else {})


def user_with_key(server, *, policies: dict[str, dict] | None = None,
                  attached: list[str] = ()) -> tuple[str, dict]:
    """A fresh user with inline `policies` and `attached` managed policies,
    and a boto3-ready key of its own."""
    iam = server.client("iam")
    name = unique("user")
    iam.create_user(UserName=name)
    for policy_name, document in (policies or {}).items():
        iam.put_user_policy(UserName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
    for arn in attached:
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return name, {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}


def allow(*actions: str, resource="*", condition=None, effect="Allow") -> dict:
    statement = {"Effect": effect, "Action": list(actions), "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


def register_family(server, family: str, **extra) -> str:
    return server.ecs.register_task_definition(
        family=family,
        containerDefinitions=[{"name": "app", "image": "busybox", "memory": 64, "essential": True}],
        **extra,
    )["taskDefinition"]["taskDefinitionArn"]


def test_users_and_access_keys_take_effect_at_once(server):
    code, created = aws(server, "iam", "create-user", "--user-name", "alice-cli", "--tags", "Key=team,Value=blue")
    assert code == 0, created
    assert created["User"]["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/alice-cli"
    assert created["User"]["UserId"].startswith("AIDA")
    code, again = aws(server, "iam", "create-user", "--user-name", "ALICE-cli")
    assert code != 0 and "EntityAlreadyExists" in again, again

    code, key = aws(server, "iam", "create-access-key", "--user-name", "alice-cli")
    assert code == 0, key
    access_key, secret = key["AccessKey"]["AccessKeyId"], key["AccessKey"]["SecretAccessKey"]
    assert access_key.startswith("AKIA") and len(access_key) == 20 and len(secret) == 40

    # A new key works at once.
    code, identity = aws(server, "sts", "get-caller-identity", access_key=access_key, secret_key=secret)
    assert code == 0, identity
    assert identity["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/alice-cli"
    assert identity["UserId"] == created["User"]["UserId"]

    # Inactive is refused at once, and active again works again.
    assert aws(server, "iam", "update-access-key", "--user-name", "alice-cli",
               "--access-key-id", access_key, "--status", "Inactive")[0] == 0
    code, refused = aws(server, "sts", "get-caller-identity", access_key=access_key, secret_key=secret)
    assert code != 0 and "InvalidClientTokenId" in refused, refused
    sts = server.client("sts", access_key=access_key, secret_key=secret, shared=False)
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        sts.get_caller_identity()
    assert error_of(excinfo)[0] == "InvalidClientTokenId"
    assert aws(server, "iam", "update-access-key", "--user-name", "alice-cli",
               "--access-key-id", access_key, "--status", "Active")[0] == 0
    assert sts.get_caller_identity()["Arn"].endswith(":user/alice-cli")

    code, listed = aws(server, "iam", "list-access-keys", "--user-name", "alice-cli")
    assert [k["AccessKeyId"] for k in listed["AccessKeyMetadata"]] == [access_key]
    code, conflict = aws(server, "iam", "delete-user", "--user-name", "alice-cli")
    assert code != 0 and "DeleteConflict" in conflict, conflict

    # Deleted is refused at once.
    assert aws(server, "iam", "delete-access-key", "--user-name", "alice-cli", "--access-key-id", access_key)[0] == 0
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        sts.get_caller_identity()
    assert error_of(excinfo)[0] == "InvalidClientTokenId"
    assert aws(server, "iam", "delete-user", "--user-name", "alice-cli")[0] == 0
    # The secret was handed out once and never logged or stored in the clear
    # outside the state store.
    assert secret not in server.stderr_tail(100_000)
    code, missing = aws(server, "iam", "get-user", "--user-name", "alice-cli")
    assert code != 0 and "NoSuchEntity" in missing and "alice-cli" in missing, missing


def test_policies_versions_paging_and_validation(server):
    iam = server.client("iam")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        iam.create_policy(PolicyName=unique("bad"), PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecs:*"}]}))
    assert error_of(excinfo) == ("MalformedPolicyDocument", "Policy statement must contain resources.")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        iam.create_policy(PolicyName=unique("big"), PolicyDocument=json.dumps(
            allow(*[f"ecs:Describe{index:05}" for index in range(600)])))
    assert error_of(excinfo)[0] == "LimitExceeded"

    name = unique("describe")
    policy = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(allow("ecs:Describe*")))["Policy"]
    assert policy["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:policy/{name}"
    assert policy["DefaultVersionId"] == "v1"
    iam.create_policy_version(PolicyArn=policy["Arn"], PolicyDocument=json.dumps(allow("ecs:List*")),
                              SetAsDefault=True)
    version = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId="v2")["PolicyVersion"]
    # botocore decodes the URL-encoded document into a dict.
    assert version["Document"]["Statement"][0]["Action"] == ["ecs:List*"]
    assert version["IsDefaultVersion"] is True
    versions = [v["VersionId"] for v in iam.list_policy_versions(PolicyArn=policy["Arn"])["Versions"]]
    assert versions == ["v2", "v1"]

    managed = iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")
    assert managed["Policy"]["PolicyName"] == "AmazonECSTaskExecutionRolePolicy"
    code, document = aws(server, "iam", "get-policy-version", "--policy-arn", READ_ONLY,
                         "--version-id", managed_version(iam, READ_ONLY))
    assert code == 0, document
    assert "ecs:Describe*" in json.dumps(document["PolicyVersion"]["Document"])

    names = [unique(f"page{index}") for index in range(5)]
    for user in names:
        iam.create_user(UserName=user, Path="/paging/")
    first = iam.list_users(PathPrefix="/paging/", MaxItems=2)
    assert first["IsTruncated"] is True and len(first["Users"]) == 2
    paged = [u["UserName"] for page in iam.get_paginator("list_users").paginate(
        PathPrefix="/paging/", PaginationConfig={"PageSize": 2}) for u in page["Users"]]
    assert sorted(paged) == sorted(names)

    role = unique("role")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust({"Service": "ecs-tasks.amazonaws.com"})))
    iam.attach_role_policy(RoleName=role, PolicyArn=policy["Arn"])
    assert iam.get_policy(PolicyArn=policy["Arn"])["Policy"]["AttachmentCount"] == 1
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        iam.delete_policy(PolicyArn=policy["Arn"])
    assert error_of(excinfo)[0] == "DeleteConflict"
    attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    assert attached == [{"PolicyName": name, "PolicyArn": policy["Arn"]}]
    iam.put_role_policy(RoleName=role, PolicyName="inline", PolicyDocument=json.dumps(allow("logs:*")))
    assert iam.get_role_policy(RoleName=role, PolicyName="inline")["PolicyDocument"]["Statement"][0]["Action"] == ["logs:*"]
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["inline"]
    got = iam.get_role(RoleName=role)["Role"]
    assert got["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert got["MaxSessionDuration"] == 3600

    profile = unique("profile")
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=role)
    assert iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"][0]["RoleName"] == role


def managed_version(iam, arn: str) -> str:
    return iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]


def trust(principal: dict, **condition) -> dict:
    statement = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


def test_read_only_user_can_describe_but_not_run_tasks(server):
    family = unique("ro")
    register_family(server, family)
    name, key = user_with_key(server, attached=[READ_ONLY])
    ecs = server.client("ecs", **key)
    assert ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["family"] == family
    assert "clusterArns" in ecs.list_clusters()
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        ecs.run_task(taskDefinition=family)
    code, message = error_of(excinfo)
    assert code == "AccessDeniedException"
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT_ID}:user/{name} is not authorized to perform: ecs:RunTask "
        f"on resource: arn:aws:ecs:us-east-1:{ACCOUNT_ID}:task-definition/{family}:1 "
        "because no identity-based policy allows the ecs:RunTask action"
    )
    code, refused = aws(server, "ecs", "run-task", "--task-definition", family,
                        access_key=key["access_key"], secret_key=key["secret_key"])
    assert code != 0 and "AccessDeniedException" in refused, refused
    # Query services answer their own code.
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        server.client("iam", **key).create_user(UserName=unique("nope"))
    assert error_of(excinfo)[0] == "AccessDenied"


def test_user_limited_to_one_cluster(server):
    family = unique("cl")
    register_family(server, family)
    allowed, other = unique("allowed"), unique("other")
    server.ecs.create_cluster(clusterName=allowed)
    server.ecs.create_cluster(clusterName=other)
    _, key = user_with_key(server, policies={"one-cluster": allow(
        "ecs:RunTask", condition={"ArnEquals": {"ecs:cluster": cluster_arn(allowed)}})})
    ecs = server.client("ecs", **key)
    # Allowed: the cluster has no instances, which ECS answers, not a denial.
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        ecs.run_task(cluster=allowed, taskDefinition=family)
    assert error_of(excinfo) == ("InvalidParameterException", "No Container Instances were found in your cluster.")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        ecs.run_task(cluster=other, taskDefinition=family)
    assert error_of(excinfo)[0] == "AccessDeniedException"
    assert "ecs:RunTask" in error_of(excinfo)[1]


def test_explicit_deny_beats_allow_and_a_policy_change_applies_at_once(server):
    name, key = user_with_key(server, policies={"all": allow("ecs:*")})
    ecs = server.client("ecs", **key)
    assert "clusterArns" in ecs.list_clusters()
    server.client("iam").put_user_policy(UserName=name, PolicyName="deny", PolicyDocument=json.dumps(
        allow("ecs:List*", effect="Deny")))
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        ecs.list_clusters()
    code, message = error_of(excinfo)
    assert code == "AccessDeniedException"
    assert message.endswith("with an explicit deny in an identity-based policy"), message
    assert ecs.describe_clusters()["clusters"] is not None
    server.client("iam").delete_user_policy(UserName=name, PolicyName="deny")
    assert "clusterArns" in ecs.list_clusters()


def test_pass_role_needs_permission(server):
    iam = server.client("iam")
    role = unique("taskrole")
    role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(
        trust({"Service": "ecs-tasks.amazonaws.com"})))["Role"]["Arn"]
    family = unique("pass")
    name, key = user_with_key(server, policies={"ecs": allow("ecs:*")})
    ecs = server.client("ecs", **key)
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        ecs.register_task_definition(
            family=family, taskRoleArn=role_arn,
            containerDefinitions=[{"name": "app", "image": "busybox", "memory": 64}])
    code, message = error_of(excinfo)
    assert code == "AccessDeniedException"
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT_ID}:user/{name} is not authorized to perform: iam:PassRole "
        f"on resource: {role_arn} because no identity-based policy allows the iam:PassRole action"
    )
    iam.put_user_policy(UserName=name, PolicyName="pass", PolicyDocument=json.dumps(allow(
        "iam:PassRole", resource=role_arn,
        condition={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}})))
    registered = ecs.register_task_definition(
        family=family, taskRoleArn=role_arn,
        containerDefinitions=[{"name": "app", "image": "busybox", "memory": 64}])
    assert registered["taskDefinition"]["taskRoleArn"] == role_arn

    # RunTask passes the roles of the task definition it runs.
    runner, runner_key = user_with_key(server, policies={"run": allow("ecs:RunTask")})
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        server.client("ecs", **runner_key).run_task(taskDefinition=family)
    assert error_of(excinfo) == ("AccessDeniedException", (
        f"User: arn:aws:iam::{ACCOUNT_ID}:user/{runner} is not authorized to perform: iam:PassRole "
        f"on resource: {role_arn} because no identity-based policy allows the iam:PassRole action"))


def test_assume_role_and_session_credentials(server):
    iam = server.client("iam")
    name, key = user_with_key(server)
    user_arn = f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"
    role = unique("deployer")
    role_arn = iam.create_role(
        RoleName=role, MaxSessionDuration=7200,
        AssumeRolePolicyDocument=json.dumps(trust({"AWS": user_arn}, StringEquals={"sts:ExternalId": "build-42"})),
    )["Role"]["Arn"]
    iam.attach_role_policy(RoleName=role, PolicyArn=READ_ONLY)
    sts = server.client("sts", **key)
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        sts.assume_role(RoleArn=role_arn, RoleSessionName="s1")
    assert error_of(excinfo)[0] == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        sts.assume_role(RoleArn=role_arn, RoleSessionName="s1", ExternalId="build-42", DurationSeconds=10800)
    assert error_of(excinfo) == ("ValidationError",
                                 "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        unchecked = server.client("sts", **key, parameter_validation=False, shared=False)
        unchecked.assume_role(RoleArn=role_arn, RoleSessionName="s1", ExternalId="build-42", DurationSeconds=600)
    assert error_of(excinfo) == ("ValidationError", "1 validation error detected: Value '600' at 'durationSeconds' "
                                 "failed to satisfy constraint: Member must have value greater than or equal to 900")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        server.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="s1")
    assert error_of(excinfo) == ("AccessDenied", "Roles may not be assumed by root accounts.")

    assumed = sts.assume_role(RoleArn=role_arn, RoleSessionName="build-7", ExternalId="build-42",
                              DurationSeconds=900)
    credentials = assumed["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA")
    assert assumed["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/build-7"
    code, identity = aws(server, "sts", "get-caller-identity", access_key=credentials["AccessKeyId"],
                         secret_key=credentials["SecretAccessKey"], session_token=credentials["SessionToken"])
    assert code == 0, identity
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/build-7"
    assert identity["UserId"].endswith(":build-7") and identity["UserId"].startswith("AROA")
    session_ecs = _session_client(server, "ecs", credentials)
    assert "clusterArns" in session_ecs.list_clusters()
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        session_ecs.create_cluster(clusterName=unique("no"))
    assert f"assumed-role/{role}/build-7 is not authorized to perform: ecs:CreateCluster" in error_of(excinfo)[1]
    # Without its token, or with another, the session key is refused.
    code, refused = aws(server, "sts", "get-caller-identity", access_key=credentials["AccessKeyId"],
                        secret_key=credentials["SecretAccessKey"])
    assert code != 0 and "InvalidClientTokenId" in refused, refused

    # A session policy narrows the session to what both allow.
    narrowed = sts.assume_role(RoleArn=role_arn, RoleSessionName="narrow", ExternalId="build-42",
                               Policy=json.dumps(allow("ecs:DescribeClusters")))["Credentials"]
    narrow_ecs = _session_client(server, "ecs", narrowed)
    assert narrow_ecs.describe_clusters()["clusters"] is not None
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        narrow_ecs.list_clusters()
    assert "because no session policy allows the ecs:ListClusters action" in error_of(excinfo)[1]

    # A trust policy that no longer names the user refuses it.
    iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(
        trust({"Service": "ecs-tasks.amazonaws.com"})))
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        sts.assume_role(RoleArn=role_arn, RoleSessionName="s2", ExternalId="build-42")
    assert error_of(excinfo)[0] == "AccessDenied"

    token = sts.get_session_token(DurationSeconds=900)["Credentials"]
    assert _session_client(server, "sts", token).get_caller_identity()["Arn"] == user_arn


def _session_client(server, service: str, credentials: dict):
    session = boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=server.region,
    )
    return session.client(service, endpoint_url=server.endpoint, config=client_config())


def test_a_user_manages_its_own_keys(server):
    name, key = user_with_key(server, policies={"self": allow(
        "iam:CreateAccessKey", "iam:ListAccessKeys", "iam:GetUser",
        resource=f"arn:aws:iam::{ACCOUNT_ID}:user/${{aws:username}}")})
    iam = server.client("iam", **key)
    assert iam.get_user()["User"]["UserName"] == name
    second = iam.create_access_key()["AccessKey"]
    assert second["UserName"] == name
    listed = {k["AccessKeyId"] for k in iam.list_access_keys()["AccessKeyMetadata"]}
    assert listed == {key["access_key"], second["AccessKeyId"]}
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        iam.create_access_key()
    assert error_of(excinfo)[0] == "LimitExceeded"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        iam.list_access_keys(UserName="someone-else")
    assert error_of(excinfo)[0] == "AccessDenied"


def test_the_servers_own_key_is_root_and_unrestricted(server):
    assert server.client("sts").get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:root"
    assert "clusterArns" in server.ecs.list_clusters()


SEED_POLICIES = sorted((Path(__file__).resolve().parents[2] / "crates/iam-policy/tests/fixtures/seeds").glob("*.json"))


@pytest.mark.parametrize("path", SEED_POLICIES, ids=lambda path: path.stem)
def test_the_guides_policy_documents_are_accepted_as_written(server, path):
    iam = server.client("iam")
    document = path.read_text()
    name = unique(path.stem.replace("_", "-"))
    policy = iam.create_policy(PolicyName=name, PolicyDocument=document)["Policy"]
    stored = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId="v1")["PolicyVersion"]["Document"]
    assert stored == json.loads(document)
    # And as a role's inline policy.
    role = unique("seedrole")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust({"Service": "ec2.amazonaws.com"})))
    iam.put_role_policy(RoleName=role, PolicyName="seed", PolicyDocument=document)


def test_groups_boundaries_and_source_ip(server):
    iam = server.client("iam")
    name, key = user_with_key(server)
    ecs = server.client("ecs", **key)
    with pytest.raises(botocore.exceptions.ClientError):
        ecs.list_clusters()
    group = unique("operators")
    iam.create_group(GroupName=group)
    iam.put_group_policy(GroupName=group, PolicyName="ecs", PolicyDocument=json.dumps(allow("ecs:*")))
    iam.add_user_to_group(GroupName=group, UserName=name)
    assert [g["GroupName"] for g in iam.list_groups_for_user(UserName=name)["Groups"]] == [group]
    assert "clusterArns" in ecs.list_clusters()

    # A permissions boundary caps what the group grants.
    boundary = iam.create_policy(PolicyName=unique("boundary"),
                                 PolicyDocument=json.dumps(allow("ecs:Describe*")))["Policy"]["Arn"]
    iam.put_user_permissions_boundary(UserName=name, PermissionsBoundary=boundary)
    assert iam.get_user(UserName=name)["User"]["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        ecs.list_clusters()
    assert "because no permissions boundary allows the ecs:ListClusters action" in error_of(excinfo)[1]
    assert ecs.describe_clusters()["clusters"] is not None
    iam.delete_user_permissions_boundary(UserName=name)

    # aws:SourceIp is the client's address: loopback here.
    iam.put_user_policy(UserName=name, PolicyName="from-office", PolicyDocument=json.dumps(allow(
        "ecs:*", effect="Deny", condition={"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}})))
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        ecs.list_clusters()
    assert "explicit deny" in error_of(excinfo)[1]
    iam.put_user_policy(UserName=name, PolicyName="from-office", PolicyDocument=json.dumps(allow(
        "ecs:*", effect="Deny", condition={"NotIpAddress": {"aws:SourceIp": "127.0.0.0/8"}})))
    assert "clusterArns" in ecs.list_clusters()

    iam.remove_user_from_group(GroupName=group, UserName=name)
    with pytest.raises(botocore.exceptions.ClientError):
        ecs.list_clusters()
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        iam.delete_group(GroupName=group)
    assert error_of(excinfo)[0] == "DeleteConflict"


def test_iam_state_and_sessions_survive_kill_9(fresh_server):
    server = fresh_server
    name, key = user_with_key(server, policies={"read": allow("ecs:List*")})
    role = unique("survivor")
    role_arn = server.client("iam").create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(
        trust({"AWS": f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"})))["Role"]["Arn"]
    session = server.client("sts", **key).assume_role(RoleArn=role_arn, RoleSessionName="before")["Credentials"]
    server.restart(hard=True)
    ecs = server.client("ecs", **key)
    assert "clusterArns" in ecs.list_clusters()
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        ecs.create_cluster(clusterName=unique("no"))
    assert error_of(excinfo)[0] == "AccessDeniedException"
    identity = _session_client(server, "sts", session).get_caller_identity()
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/before"


def test_other_services_are_authorized_by_their_iam_actions(server):
    _, key = user_with_key(server, policies={"watch": allow("cloudwatch:ListMetrics")})
    cloudwatch = server.client("cloudwatch", **key)
    assert "Metrics" in cloudwatch.list_metrics()
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        cloudwatch.describe_alarms()
    assert "cloudwatch:DescribeAlarms" in error_of(excinfo)[1]
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        server.client("logs", **key).describe_log_groups()
    assert error_of(excinfo)[0] == "AccessDeniedException"
    assert "logs:DescribeLogGroups" in error_of(excinfo)[1]


def test_s3_requests_are_authorized_by_iam(server):
    """S3 takes IAM users' keys and role sessions, and authorizes each
    operation by its IAM action on the bucket's or object's ARN, answering
    S3's own AccessDenied."""
    bucket = unique("config")
    root = server.client("s3")
    root.create_bucket(Bucket=bucket)
    root.put_object(Bucket=bucket, Key="app/app.env", Body=b"A=1\n")
    root.put_object(Bucket=bucket, Key="other/secret.env", Body=b"B=2\n")
    reader = allow("s3:GetObject", resource=f"arn:aws:s3:::{bucket}/app/*")
    reader["Statement"].append({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"})
    name, key = user_with_key(server, policies={"read-app": reader})
    s3 = server.client("s3", **key)
    assert s3.get_object(Bucket=bucket, Key="app/app.env")["Body"].read() == b"A=1\n"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["app/app.env", "other/secret.env"]
    for call in (lambda: s3.get_object(Bucket=bucket, Key="other/secret.env"),
                 lambda: s3.put_object(Bucket=bucket, Key="app/new.env", Body=b"C=3\n"),
                 lambda: s3.delete_object(Bucket=bucket, Key="app/app.env"),
                 lambda: s3.list_buckets()):
        with pytest.raises(botocore.exceptions.ClientError) as excinfo:
            call()
        assert error_of(excinfo)[0] == "AccessDenied"
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # Nothing was written or deleted.
    assert [o["Key"] for o in root.list_objects_v2(Bucket=bucket)["Contents"]] == ["app/app.env", "other/secret.env"]
    # The AWS CLI with the user's key, as a deploy script runs it.
    env = {**server.cli_env(), "AWS_ACCESS_KEY_ID": key["access_key"], "AWS_SECRET_ACCESS_KEY": key["secret_key"]}
    def cp(path: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(AWS_CLI), "--endpoint-url", server.endpoint, "s3", "cp", f"s3://{bucket}/{path}", "-"],
                              env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    done = cp("app/app.env")
    assert done.returncode == 0 and done.stdout == "A=1\n", done
    done = cp("other/secret.env")
    assert done.returncode != 0 and "403" in done.stderr and "B=2" not in done.stdout, done

    # A role session: allowed by the role's policy, only with its token.
    iam = server.client("iam")
    role = unique("reader")
    role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(
        trust({"AWS": f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"})))["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="read-other",
                        PolicyDocument=json.dumps(allow("s3:GetObject", resource=f"arn:aws:s3:::{bucket}/other/*")))
    iam.put_user_policy(UserName=name, PolicyName="assume", PolicyDocument=json.dumps(allow("sts:AssumeRole")))
    credentials = server.client("sts", **key).assume_role(RoleArn=role_arn, RoleSessionName="s3")["Credentials"]
    session = _session_client(server, "s3", credentials)
    assert session.get_object(Bucket=bucket, Key="other/secret.env")["Body"].read() == b"B=2\n"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        session.get_object(Bucket=bucket, Key="app/app.env")
    assert error_of(excinfo)[0] == "AccessDenied"
    tokenless = server.client("s3", access_key=credentials["AccessKeyId"], secret_key=credentials["SecretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        tokenless.get_object(Bucket=bucket, Key="other/secret.env")
    assert error_of(excinfo)[0] == "InvalidToken"


def test_an_agent_runs_on_an_iam_users_key_with_the_ecs_instance_role_policy(server, agent_fleet):
    """What an EC2 container instance's role allows is what an agent needs:
    an agent signing with an IAM user's key that has only AWS's
    AmazonEC2ContainerServiceforEC2Role registers, runs tasks and reports
    them; a key without it cannot register."""
    cluster = unique("instance-role")
    server.ecs.create_cluster(clusterName=cluster)
    _, key = user_with_key(server, attached=[
        "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"])
    agent = agent_fleet.start(server, cluster, "--simulate", "1",
                              credentials=(key["access_key"], key["secret_key"]))
    [instance] = server.ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    family = unique("instance-role")
    server.ecs.register_task_definition(family=family, containerDefinitions=[
        {"name": "app", "image": "sim/app", "memory": 32, "essential": True}])
    [task] = server.ecs.run_task(cluster=cluster, taskDefinition=family)["tasks"]
    wait_until(lambda: server.ecs.describe_tasks(cluster=cluster, tasks=[task["taskArn"]])["tasks"][0]["lastStatus"]
               == "RUNNING", 30, "the task to run")
    server.ecs.stop_task(cluster=cluster, task=task["taskArn"])
    wait_until(lambda: server.ecs.describe_tasks(cluster=cluster, tasks=[task["taskArn"]])["tasks"][0]["lastStatus"]
               == "STOPPED", 30, "the task to stop")
    assert agent.running and instance

    _, bare = user_with_key(server)
    refused = agent_fleet.start(server, cluster, "--simulate", "1", wait=False,
                                credentials=(bare["access_key"], bare["secret_key"]))
    wait_until(lambda: "not authorized to perform: ecs:RegisterContainerInstance" in refused.stderr_path.read_text(),
               30, "the agent to be refused")
    assert len(server.ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]) == 1
