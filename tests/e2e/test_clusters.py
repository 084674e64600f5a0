"""Clusters as a user of the AWS CLI and boto3 sees them."""

import pytest
from botocore.exceptions import ClientError

from support import all_pages, cluster_arn, error_of, unique

INCLUDE_FIELDS = {
    "SETTINGS": "settings",
    "STATISTICS": "statistics",
    "TAGS": "tags",
    "ATTACHMENTS": "attachments",
    "CONFIGURATIONS": "configuration",
}

EXECUTE_COMMAND_CONFIGURATION = {
    "executeCommandConfiguration": {
        "logging": "OVERRIDE",
        "logConfiguration": {"cloudWatchLogGroupName": "/ecs/exec", "cloudWatchEncryptionEnabled": True},
    }
}


def create_full_cluster(ecs, name):
    return ecs.create_cluster(
        clusterName=name,
        settings=[{"name": "containerInsights", "value": "enabled"}],
        configuration=EXECUTE_COMMAND_CONFIGURATION,
        tags=[{"key": "team", "value": "platform"}, {"key": "env", "value": "dev"}],
        capacityProviders=["FARGATE"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1, "base": 1}],
    )["cluster"]


def test_create_cluster_keeps_everything_given(server):
    name = unique("full")
    cluster = create_full_cluster(server.ecs, name)
    assert cluster["clusterName"] == name
    assert cluster["clusterArn"] == cluster_arn(name)
    assert cluster["status"] == "ACTIVE"
    assert cluster["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    assert cluster["configuration"] == EXECUTE_COMMAND_CONFIGURATION
    assert sorted(cluster["tags"], key=lambda t: t["key"]) == [
        {"key": "env", "value": "dev"},
        {"key": "team", "value": "platform"},
    ]
    assert cluster["capacityProviders"] == ["FARGATE"]
    assert cluster["defaultCapacityProviderStrategy"] == [{"capacityProvider": "FARGATE", "weight": 1, "base": 1}]
    for count in ("registeredContainerInstancesCount", "runningTasksCount", "pendingTasksCount", "activeServicesCount"):
        assert cluster[count] == 0, count


def test_create_cluster_with_the_cli(server):
    name = unique("cli")
    code, out = server.cli(
        "create-cluster", "--cluster-name", name,
        "--settings", "name=containerInsights,value=enhanced",
        "--tags", "key=owner,value=cli",
        "--capacity-providers", "FARGATE", "FARGATE_SPOT",
        "--default-capacity-provider-strategy", "capacityProvider=FARGATE_SPOT,weight=3",
    )
    assert code == 0, out
    cluster = out["cluster"]
    assert cluster["clusterArn"] == cluster_arn(name)
    assert cluster["settings"] == [{"name": "containerInsights", "value": "enhanced"}]
    assert cluster["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    assert cluster["defaultCapacityProviderStrategy"] == [{"capacityProvider": "FARGATE_SPOT", "weight": 3}]
    code, out = server.cli("describe-clusters", "--clusters", name, "--include", "TAGS")
    assert code == 0, out
    assert out["clusters"][0]["tags"] == [{"key": "owner", "value": "cli"}]


@pytest.mark.parametrize("include", sorted(INCLUDE_FIELDS))
def test_describe_clusters_include_adds_only_what_is_asked(server, include):
    name = unique(f"inc-{include.lower()}")
    create_full_cluster(server.ecs, name)
    plain = server.ecs.describe_clusters(clusters=[name])["clusters"][0]
    for field in INCLUDE_FIELDS.values():
        if field == "statistics":
            # AWS always returns the key, empty unless asked for.
            assert plain[field] == [], "statistics without include"
        else:
            assert field not in plain, f"{field} shown without include"
    assert plain["capacityProviders"] == ["FARGATE"]
    assert plain["status"] == "ACTIVE"

    described = server.ecs.describe_clusters(clusters=[name], include=[include])
    assert described["failures"] == []
    cluster = described["clusters"][0]
    for other, field in INCLUDE_FIELDS.items():
        if other != include and field == "statistics":
            assert cluster[field] == [], f"statistics filled with include {include}"
        elif other != include:
            assert field not in cluster, f"{field} shown with include {include}"
    if include == "SETTINGS":
        assert cluster["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    elif include == "TAGS":
        assert {t["key"]: t["value"] for t in cluster["tags"]} == {"team": "platform", "env": "dev"}
    elif include == "CONFIGURATIONS":
        assert cluster["configuration"] == EXECUTE_COMMAND_CONFIGURATION
    elif include == "STATISTICS":
        statistics = {s["name"]: s["value"] for s in cluster["statistics"]}
        assert statistics["runningEC2TasksCount"] == "0"
        assert statistics["pendingFargateTasksCount"] == "0"
        assert statistics["activeEC2ServiceCount"] == "0"
    elif include == "ATTACHMENTS":
        assert cluster.get("attachments", []) == []


def test_describe_clusters_all_includes_and_missing_names(server):
    name = unique("many")
    create_full_cluster(server.ecs, name)
    missing = unique("absent")
    described = server.ecs.describe_clusters(
        clusters=[name, missing, cluster_arn(unique("absent-arn"))], include=sorted(INCLUDE_FIELDS)
    )
    assert [c["clusterName"] for c in described["clusters"]] == [name]
    cluster = described["clusters"][0]
    for field in ("settings", "statistics", "tags", "configuration"):
        assert field in cluster, field
    failures = described["failures"]
    assert len(failures) == 2
    assert {f["reason"] for f in failures} == {"MISSING"}
    assert failures[0]["arn"] == cluster_arn(missing)


def test_describe_by_arn(server):
    name = unique("by-arn")
    server.ecs.create_cluster(clusterName=name)
    described = server.ecs.describe_clusters(clusters=[cluster_arn(name)])
    assert [c["clusterName"] for c in described["clusters"]] == [name]


def test_list_clusters_paginates_with_boto3_and_the_cli(server):
    names = [unique("page") for _ in range(7)]
    for name in names:
        server.ecs.create_cluster(clusterName=name)

    pages, token, seen = 0, None, []
    while True:
        kwargs = {"maxResults": 3}
        if token:
            kwargs["nextToken"] = token
        page = server.ecs.list_clusters(**kwargs)
        assert len(page["clusterArns"]) <= 3
        seen.extend(page["clusterArns"])
        pages += 1
        token = page.get("nextToken")
        if not token:
            break
    assert pages >= 3
    assert len(seen) == len(set(seen)), "a cluster was listed twice"
    assert {cluster_arn(n) for n in names} <= set(seen)
    assert seen == all_pages(server.ecs, "list_clusters", "clusterArns")

    paginated = [arn for page in server.ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 2})
                 for arn in page["clusterArns"]]
    assert paginated == seen

    # The CLI walks every page itself and prints them as one list.
    code, out = server.cli("list-clusters", "--page-size", "2")
    assert code == 0, out
    assert out["clusterArns"] == seen
    # --max-items stops early and hands back the CLI's own resume token.
    code, first = server.cli("list-clusters", "--page-size", "2", "--max-items", "3")
    assert code == 0, first
    assert first["clusterArns"] == seen[:3]
    assert first["NextToken"]
    code, rest = server.cli("list-clusters", "--page-size", "2", "--starting-token", first["NextToken"])
    assert code == 0, rest
    assert first["clusterArns"] + rest["clusterArns"] == seen


@pytest.mark.parametrize("max_results", [0, 101, -1])
def test_list_clusters_refuses_max_results_out_of_range(server, max_results):
    with pytest.raises(ClientError) as caught:
        server.ecs.list_clusters(maxResults=max_results)
    code, message = error_of(caught)
    assert code == "InvalidParameterException"
    assert "maxResults" in message


def test_list_clusters_refuses_a_forged_token(server):
    with pytest.raises(ClientError) as caught:
        server.ecs.list_clusters(nextToken="not-a-token-we-gave")
    code, message = error_of(caught)
    assert code == "InvalidParameterException"
    assert "nextToken" in message


def test_delete_cluster_makes_it_inactive_and_unlisted(server):
    name = unique("doomed")
    server.ecs.create_cluster(clusterName=name)
    code, out = server.cli("delete-cluster", "--cluster", name)
    assert code == 0, out
    assert out["cluster"]["status"] == "INACTIVE"
    assert out["cluster"]["clusterArn"] == cluster_arn(name)

    assert cluster_arn(name) not in all_pages(server.ecs, "list_clusters", "clusterArns")
    described = server.ecs.describe_clusters(clusters=[name])
    assert [c["status"] for c in described["clusters"]] == ["INACTIVE"]

    with pytest.raises(ClientError) as caught:
        server.ecs.delete_cluster(cluster=name)
    assert error_of(caught)[0] == "ClusterNotFoundException"
    with pytest.raises(ClientError) as caught:
        server.ecs.update_cluster_settings(cluster=name, settings=[{"name": "containerInsights", "value": "enabled"}])
    assert error_of(caught)[0] == "ClusterNotFoundException"

    # The name can be used again.
    again = server.ecs.create_cluster(clusterName=name)["cluster"]
    assert again["status"] == "ACTIVE"
    assert cluster_arn(name) in all_pages(server.ecs, "list_clusters", "clusterArns")


def test_deleting_a_missing_cluster_is_cluster_not_found(server):
    with pytest.raises(ClientError) as caught:
        server.ecs.delete_cluster(cluster=unique("never-was"))
    code, message = error_of(caught)
    assert code == "ClusterNotFoundException"
    assert "not found" in message.lower()
    code, stderr = server.cli("delete-cluster", "--cluster", unique("never-was"))
    assert code != 0
    assert "ClusterNotFoundException" in stderr


def test_update_cluster_changes_settings_and_configuration(server):
    name = unique("upd")
    create_full_cluster(server.ecs, name)
    new_configuration = {"executeCommandConfiguration": {"logging": "NONE"}}
    updated = server.ecs.update_cluster(
        cluster=name,
        settings=[{"name": "containerInsights", "value": "disabled"}],
        configuration=new_configuration,
    )["cluster"]
    assert updated["settings"] == [{"name": "containerInsights", "value": "disabled"}]
    assert updated["configuration"] == new_configuration
    described = server.ecs.describe_clusters(clusters=[name], include=["SETTINGS", "CONFIGURATIONS", "TAGS"])
    cluster = described["clusters"][0]
    assert cluster["settings"] == [{"name": "containerInsights", "value": "disabled"}]
    assert cluster["configuration"] == new_configuration
    # What was not in the update stays as it was.
    assert {t["key"] for t in cluster["tags"]} == {"team", "env"}
    assert cluster["capacityProviders"] == ["FARGATE"]


def test_update_cluster_settings_with_the_cli(server):
    name = unique("upd-cli")
    server.ecs.create_cluster(clusterName=name)
    code, out = server.cli(
        "update-cluster-settings", "--cluster", name, "--settings", "name=containerInsights,value=enhanced"
    )
    assert code == 0, out
    assert out["cluster"]["settings"] == [{"name": "containerInsights", "value": "enhanced"}]
    described = server.ecs.describe_clusters(clusters=[cluster_arn(name)], include=["SETTINGS"])
    assert described["clusters"][0]["settings"] == [{"name": "containerInsights", "value": "enhanced"}]


def test_update_of_a_missing_cluster_is_cluster_not_found(server):
    with pytest.raises(ClientError) as caught:
        server.ecs.update_cluster(cluster=unique("ghost"), settings=[{"name": "containerInsights", "value": "enabled"}])
    assert error_of(caught)[0] == "ClusterNotFoundException"


def test_create_cluster_is_idempotent(server):
    name = unique("twice")
    first = server.ecs.create_cluster(clusterName=name, tags=[{"key": "a", "value": "1"}])["cluster"]
    before = all_pages(server.ecs, "list_clusters", "clusterArns")
    second = server.ecs.create_cluster(clusterName=name)["cluster"]
    assert second["clusterArn"] == first["clusterArn"]
    assert second["status"] == "ACTIVE"
    after = all_pages(server.ecs, "list_clusters", "clusterArns")
    assert after == before
    assert after.count(cluster_arn(name)) == 1


def test_default_cluster_is_used_when_none_is_named(fresh_server):
    code, out = fresh_server.cli("describe-clusters")
    assert code == 0, out
    assert out["clusters"] == []
    assert out["failures"] == [{"arn": cluster_arn("default"), "reason": "MISSING"}]

    code, out = fresh_server.cli("create-cluster")
    assert code == 0, out
    assert out["cluster"]["clusterName"] == "default"
    assert out["cluster"]["clusterArn"] == cluster_arn("default")

    code, out = fresh_server.cli("describe-clusters")
    assert code == 0, out
    assert [c["clusterName"] for c in out["clusters"]] == ["default"]
    assert out["failures"] == []
    assert fresh_server.ecs.describe_clusters()["clusters"][0]["status"] == "ACTIVE"
    assert fresh_server.ecs.list_clusters()["clusterArns"] == [cluster_arn("default")]


INVALID_CREATES = {
    "name with a space": dict(clusterName="has space"),
    "name with a slash": dict(clusterName="a/b"),
    "name with a dot": dict(clusterName="a.b"),
    "name too long": dict(clusterName="x" * 256),
    "containerInsights value": dict(settings=[{"name": "containerInsights", "value": "maybe"}]),
    "setting name": dict(settings=[{"name": "notASetting", "value": "enabled"}]),
    "unknown capacity provider": dict(capacityProviders=["MY_ASG"]),
    "strategy provider not on the cluster": dict(
        capacityProviders=["FARGATE"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
    ),
    "aws: tag prefix": dict(tags=[{"key": "aws:owner", "value": "me"}]),
}


@pytest.mark.parametrize("case", list(INVALID_CREATES), ids=list(INVALID_CREATES))
def test_invalid_create_cluster_is_refused_and_changes_nothing(server, case):
    request = dict(INVALID_CREATES[case])
    request.setdefault("clusterName", unique("invalid"))
    before = all_pages(server.ecs, "list_clusters", "clusterArns")
    with pytest.raises(ClientError) as caught:
        server.ecs.create_cluster(**request)
    code, message = error_of(caught)
    assert code == "InvalidParameterException", message
    assert message
    assert all_pages(server.ecs, "list_clusters", "clusterArns") == before
    described = server.ecs.describe_clusters(clusters=[request["clusterName"]])
    assert described["clusters"] == []


def test_invalid_setting_value_on_update_is_refused_and_changes_nothing(server):
    name = unique("keep")
    server.ecs.create_cluster(clusterName=name, settings=[{"name": "containerInsights", "value": "enabled"}])
    with pytest.raises(ClientError) as caught:
        server.ecs.update_cluster_settings(cluster=name, settings=[{"name": "containerInsights", "value": "on"}])
    code, message = error_of(caught)
    assert code == "InvalidParameterException"
    assert "containerInsights" in message
    described = server.ecs.describe_clusters(clusters=[name], include=["SETTINGS"])
    assert described["clusters"][0]["settings"] == [{"name": "containerInsights", "value": "enabled"}]


def test_invalid_cluster_name_with_the_cli(server):
    code, stderr = server.cli("create-cluster", "--cluster-name", "no spaces please")
    assert code == 255, stderr
    assert "InvalidParameterException" in stderr
