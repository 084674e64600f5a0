"""TagResource, UntagResource and ListTagsForResource on clusters and task
definitions."""

import pytest
from botocore.exceptions import ClientError

from support import cluster_arn, error_of, task_definition_arn, unique


def tag_map(tags):
    return {t["key"]: t["value"] for t in tags}


def created_cluster(server):
    name = unique("tagged")
    return server.ecs.create_cluster(clusterName=name, tags=[{"key": "origin", "value": "create"}])["cluster"]["clusterArn"]


def registered_task_definition(server):
    family = unique("tagged-td")
    server.ecs.register_task_definition(
        family=family,
        containerDefinitions=[{"name": "app", "image": "busybox", "memory": 64}],
        tags=[{"key": "origin", "value": "create"}],
    )
    return task_definition_arn(family, 1)


RESOURCES = {"cluster": created_cluster, "task definition": registered_task_definition}


@pytest.mark.parametrize("kind", list(RESOURCES))
def test_tag_untag_and_list(server, kind):
    arn = RESOURCES[kind](server)
    ecs = server.ecs
    assert tag_map(ecs.list_tags_for_resource(resourceArn=arn)["tags"]) == {"origin": "create"}

    ecs.tag_resource(resourceArn=arn, tags=[{"key": "team", "value": "a"}, {"key": "env", "value": "dev"}])
    assert tag_map(ecs.list_tags_for_resource(resourceArn=arn)["tags"]) == {"origin": "create", "team": "a", "env": "dev"}

    # The same key again replaces the value.
    code, out = server.cli("tag-resource", "--resource-arn", arn, "--tags", "key=team,value=b")
    assert code == 0, out
    ecs.untag_resource(resourceArn=arn, tagKeys=["env", "origin"])
    code, out = server.cli("list-tags-for-resource", "--resource-arn", arn)
    assert code == 0, out
    assert out["tags"] == [{"key": "team", "value": "b"}]

    # Untagging a key that is not there is not an error.
    ecs.untag_resource(resourceArn=arn, tagKeys=["never-set"])
    assert tag_map(ecs.list_tags_for_resource(resourceArn=arn)["tags"]) == {"team": "b"}


@pytest.mark.parametrize("kind", list(RESOURCES))
@pytest.mark.parametrize("key", ["aws:owner", "AWS:owner", "aws:"])
def test_reserved_aws_prefix_is_refused_and_changes_nothing(server, kind, key):
    arn = RESOURCES[kind](server)
    with pytest.raises(ClientError) as caught:
        server.ecs.tag_resource(resourceArn=arn, tags=[{"key": "ok", "value": "1"}, {"key": key, "value": "x"}])
    code, message = error_of(caught)
    assert code == "InvalidParameterException"
    assert "aws:" in message.lower()
    assert tag_map(server.ecs.list_tags_for_resource(resourceArn=arn)["tags"]) == {"origin": "create"}


def test_tags_on_a_cluster_show_in_describe(server):
    arn = created_cluster(server)
    server.ecs.tag_resource(resourceArn=arn, tags=[{"key": "cost-center", "value": "42"}])
    described = server.ecs.describe_clusters(clusters=[arn], include=["TAGS"])["clusters"][0]
    assert tag_map(described["tags"]) == {"origin": "create", "cost-center": "42"}


def test_tagging_a_missing_cluster_fails_and_creates_nothing(server):
    name = unique("ghost")
    with pytest.raises(ClientError) as caught:
        server.ecs.tag_resource(resourceArn=cluster_arn(name), tags=[{"key": "a", "value": "b"}])
    assert error_of(caught)[0] in {"ClusterNotFoundException", "InvalidParameterException", "ResourceNotFoundException"}
    assert server.ecs.describe_clusters(clusters=[name])["clusters"] == []


def test_too_many_tags_are_refused(server):
    arn = created_cluster(server)
    with pytest.raises(ClientError) as caught:
        server.ecs.tag_resource(resourceArn=arn, tags=[{"key": f"k{i}", "value": "v"} for i in range(50)])
    assert error_of(caught)[0] == "InvalidParameterException"
    assert tag_map(server.ecs.list_tags_for_resource(resourceArn=arn)["tags"]) == {"origin": "create"}
