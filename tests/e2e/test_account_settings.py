"""Account settings: per principal, account defaults, effective values."""

import pytest
from botocore.exceptions import ClientError

from support import ACCOUNT_ID, error_of

ROOT = f"arn:aws:iam::{ACCOUNT_ID}:root"
USER = f"arn:aws:iam::{ACCOUNT_ID}:user/alice"


def effective(ecs, name, principal=None):
    params = {"name": name, "effectiveSettings": True}
    if principal:
        params["principalArn"] = principal
    [setting] = ecs.list_account_settings(**params)["settings"]
    assert setting["name"] == name
    return setting["value"]


@pytest.fixture
def clean_settings(server):
    """Leaves no setting this test put behind for the next one."""
    yield
    for principal in (ROOT, USER):
        for setting in server.ecs.list_account_settings(principalArn=principal)["settings"]:
            server.ecs.delete_account_setting(name=setting["name"], principalArn=principal)


def test_put_list_and_delete(server, clean_settings):
    ecs = server.ecs
    assert effective(ecs, "containerInsights") == "disabled"

    put = ecs.put_account_setting(name="containerInsights", value="enabled")["setting"]
    assert (put["name"], put["value"], put["principalArn"]) == ("containerInsights", "enabled", ROOT)
    listed = ecs.list_account_settings(name="containerInsights")["settings"]
    assert [(s["name"], s["value"]) for s in listed] == [("containerInsights", "enabled")]
    assert effective(ecs, "containerInsights") == "enabled"

    deleted = ecs.delete_account_setting(name="containerInsights")["setting"]
    assert (deleted["name"], deleted["value"]) == ("containerInsights", "enabled")
    assert ecs.list_account_settings(name="containerInsights")["settings"] == []
    assert effective(ecs, "containerInsights") == "disabled"


def test_effective_settings_list_every_setting(server, clean_settings):
    code, out = server.cli("list-account-settings", "--effective-settings")
    assert code == 0, out
    settings = {s["name"]: s["value"] for s in out["settings"]}
    for name, value in {
        "serviceLongArnFormat": "enabled",
        "taskLongArnFormat": "enabled",
        "containerInstanceLongArnFormat": "enabled",
        "awsvpcTrunking": "disabled",
        "containerInsights": "disabled",
    }.items():
        assert settings.get(name) == value, name
    assert all(s["principalArn"] == ROOT for s in out["settings"])


def test_account_default_applies_to_principals_without_their_own(server, clean_settings):
    code, out = server.cli("put-account-setting-default", "--name", "fargateTaskRetirementWaitPeriod", "--value", "14")
    assert code == 0, out
    assert out["setting"]["value"] == "14"
    assert effective(server.ecs, "fargateTaskRetirementWaitPeriod") == "14"
    assert effective(server.ecs, "fargateTaskRetirementWaitPeriod", principal=USER) == "14"

    # A principal's own setting wins over the default.
    server.ecs.put_account_setting(name="fargateTaskRetirementWaitPeriod", value="0", principalArn=USER)
    assert effective(server.ecs, "fargateTaskRetirementWaitPeriod", principal=USER) == "0"
    assert effective(server.ecs, "fargateTaskRetirementWaitPeriod") == "14"
    listed = server.ecs.list_account_settings(principalArn=USER)["settings"]
    assert [(s["name"], s["value"], s["principalArn"]) for s in listed] == [
        ("fargateTaskRetirementWaitPeriod", "0", USER)
    ]


def test_account_default_container_insights_applies_to_new_clusters(server, clean_settings):
    server.ecs.put_account_setting_default(name="containerInsights", value="enhanced")
    cluster = server.ecs.create_cluster(clusterName="insights-by-default")["cluster"]
    assert cluster["settings"] == [{"name": "containerInsights", "value": "enhanced"}]


@pytest.mark.parametrize(
    "name,value",
    [("containerInsights", "maybe"), ("awsvpcTrunking", "on"), ("fargateTaskRetirementWaitPeriod", "3")],
)
def test_invalid_value_is_refused_and_changes_nothing(server, clean_settings, name, value):
    before = effective(server.ecs, name)
    for put in (server.ecs.put_account_setting, server.ecs.put_account_setting_default):
        with pytest.raises(ClientError) as caught:
            put(name=name, value=value)
        code, message = error_of(caught)
        assert code == "InvalidParameterException"
        assert name in message
    assert effective(server.ecs, name) == before
    assert server.ecs.list_account_settings()["settings"] == []


def test_unknown_setting_name_is_refused_by_the_cli(server, clean_settings):
    code, stderr = server.cli("put-account-setting", "--name", "notASetting", "--value", "enabled")
    assert code == 255, stderr
    assert "InvalidParameterException" in stderr
    assert server.ecs.list_account_settings()["settings"] == []
