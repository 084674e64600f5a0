"""Task definitions: the seeds our users know register as they are, ECS's
validation refuses what ECS refuses, and revisions behave as ECS's do."""

import copy
import json
import re

import pytest
from botocore.exceptions import ClientError

from support import all_pages, error_of, strip_line_comments, task_definition_arn, unique

VALIDATION_CODES = {"ClientException", "InvalidParameterException"}


def simple_containers(name="app", image="public.ecr.aws/nginx/nginx:latest", memory=128, **extra):
    return [dict(name=name, image=image, memory=memory, **extra)]


def register(ecs, family, containers=None, **extra):
    return ecs.register_task_definition(
        family=family, containerDefinitions=containers or simple_containers(), **extra
    )


def every_task_definition_arn(ecs, family=None):
    """ACTIVE and INACTIVE revisions, of one family or of all."""
    filters = {"familyPrefix": family} if family else {}
    return {
        status: all_pages(ecs, "list_task_definitions", "taskDefinitionArns", status=status, **filters)
        for status in ("ACTIVE", "INACTIVE")
    }


def every_family(ecs):
    return all_pages(ecs, "list_task_definition_families", "families", status="ALL")


# ---- the seeds -----------------------------------------------------------------


def test_seed_nginx_task_definition_registers_with_the_cli(server, seeds_dir, tmp_path):
    """000: the nginx example, pasted into a file with its comment removed."""
    text = strip_line_comments((seeds_dir / "nginx-task-def.jsonc").read_text())
    request = json.loads(text)
    path = tmp_path / "nginx-task-def.json"
    path.write_text(text)

    code, out = server.cli("register-task-definition", "--cli-input-json", f"file://{path}")
    assert code == 0, out
    definition = out["taskDefinition"]
    assert definition["family"] == "nginx-task-def"
    assert definition["revision"] == 1
    assert definition["taskDefinitionArn"] == task_definition_arn("nginx-task-def", 1)
    assert definition["status"] == "ACTIVE"
    assert definition["networkMode"] == "bridge"
    assert "EC2" in definition["compatibilities"]
    [container] = definition["containerDefinitions"]
    sent = request["containerDefinitions"][0]
    for key in ("name", "image", "memory", "cpu", "essential", "logConfiguration"):
        assert container[key] == sent[key], key
    [mapping] = container["portMappings"]
    assert (mapping["containerPort"], mapping["hostPort"]) == (80, 80)
    assert mapping.get("protocol", "tcp") == "tcp"

    described = server.ecs.describe_task_definition(taskDefinition="nginx-task-def")["taskDefinition"]
    assert described["taskDefinitionArn"] == definition["taskDefinitionArn"]
    assert described["containerDefinitions"] == definition["containerDefinitions"]


def test_seed_wordpress_container_definitions_register_as_family_wordpress(server, seeds_dir, tmp_path):
    """003: containerDefinitions only; the family comes from the command line."""
    path = tmp_path / "wordpress.json"
    path.write_text((seeds_dir / "wordpress-container-definitions.json").read_text())
    code, out = server.cli("register-task-definition", "--family", "wordpress", "--cli-input-json", f"file://{path}")
    assert code == 0, out
    definition = out["taskDefinition"]
    assert definition["family"] == "wordpress"
    assert definition["taskDefinitionArn"] == task_definition_arn("wordpress", definition["revision"])
    [container] = definition["containerDefinitions"]
    assert container["name"] == "wordpress"
    assert container["image"] == "wordpress"
    assert container["links"] == ["mysql"]
    assert (container["memory"], container["cpu"], container["essential"]) == (500, 10, True)

    code, out = server.cli("describe-task-definition", "--task-definition", "wordpress")
    assert code == 0, out
    assert out["taskDefinition"]["containerDefinitions"][0]["links"] == ["mysql"]


def two_container_fargate(family, backend_memory=1934):
    """004: the frontend/backend sketch, written as the valid request it means."""
    return dict(
        family=family,
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="2048",
        memory="4096",
        containerDefinitions=[
            {"name": "frontend-react-app", "image": "node", "memory": 2048, "cpu": 1024, "essential": True},
            {"name": "backend-python", "image": "python", "memory": backend_memory, "cpu": 999, "essential": True},
        ],
    )


def test_seed_two_container_fargate_task_registers(server):
    family = unique("frontend-backend")
    definition = server.ecs.register_task_definition(**two_container_fargate(family))["taskDefinition"]
    assert "FARGATE" in definition["compatibilities"]
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert (definition["cpu"], definition["memory"]) == ("2048", "4096")
    assert definition["networkMode"] == "awsvpc"
    containers = {c["name"]: c for c in definition["containerDefinitions"]}
    assert (containers["frontend-react-app"]["memory"], containers["frontend-react-app"]["cpu"]) == (2048, 1024)
    assert (containers["backend-python"]["memory"], containers["backend-python"]["cpu"]) == (1934, 999)


def test_seed_two_container_task_over_its_memory_is_refused(server):
    family = unique("frontend-backend-too-big")
    before = every_task_definition_arn(server.ecs)
    with pytest.raises(ClientError) as caught:
        # 2048 + 2049 MiB of containers in a 4096 MiB task.
        server.ecs.register_task_definition(**two_container_fargate(family, backend_memory=2049))
    code, message = error_of(caught)
    assert code in VALIDATION_CODES, message
    assert re.search(r"memory", message, re.I), message
    assert re.search(r"exceed|greater|larger|more than", message, re.I), message
    assert every_task_definition_arn(server.ecs) == before


# ---- revisions, describe, list -------------------------------------------------------


def test_revisions_increment(server):
    family = unique("rev")
    revisions = [register(server.ecs, family)["taskDefinition"]["revision"] for _ in range(3)]
    assert revisions == [1, 2, 3]
    latest = server.ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    assert latest["revision"] == 3
    assert latest["taskDefinitionArn"] == task_definition_arn(family, 3)


def test_describe_by_family_revision_and_arn_with_tags(server):
    family = unique("desc")
    tags = [{"key": "team", "value": "web"}]
    first = register(server.ecs, family, simple_containers(image="busybox:1"), tags=tags)["taskDefinition"]
    register(server.ecs, family, simple_containers(image="busybox:2"))

    by_revision = server.ecs.describe_task_definition(taskDefinition=f"{family}:1", include=["TAGS"])
    assert by_revision["taskDefinition"]["containerDefinitions"][0]["image"] == "busybox:1"
    assert by_revision["tags"] == tags
    by_arn = server.ecs.describe_task_definition(taskDefinition=first["taskDefinitionArn"], include=["TAGS"])
    assert by_arn["taskDefinition"] == by_revision["taskDefinition"]
    assert by_arn["tags"] == tags
    untagged = server.ecs.describe_task_definition(taskDefinition=first["taskDefinitionArn"])
    assert untagged.get("tags", []) == []
    by_family = server.ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    assert by_family["revision"] == 2
    assert by_family["containerDefinitions"][0]["image"] == "busybox:2"


@pytest.mark.parametrize("name", ["{family}:9", "{family}", "arn:aws:ecs:us-east-1:000000000000:task-definition/{family}:1"])
def test_describe_of_a_missing_task_definition_is_a_client_exception(server, name):
    with pytest.raises(ClientError) as caught:
        server.ecs.describe_task_definition(taskDefinition=name.format(family=unique("nothing")))
    code, message = error_of(caught)
    assert code in VALIDATION_CODES, message


def test_list_task_definitions_filters_sorts_and_paginates(server):
    family = unique("lst")
    sibling = f"{family}-sidecar"  # shares `family` as a prefix, but is another family
    for _ in range(5):
        register(server.ecs, family)
    register(server.ecs, sibling)
    expected = [task_definition_arn(family, n) for n in range(1, 6)]

    # ListTaskDefinitions' familyPrefix is the whole family name.
    listed = all_pages(server.ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family)
    assert listed == expected
    descending = all_pages(server.ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family, sort="DESC")
    assert descending == expected[::-1]

    first = server.ecs.list_task_definitions(familyPrefix=family, maxResults=2)
    assert first["taskDefinitionArns"] == expected[:2]
    assert first["nextToken"]
    second = server.ecs.list_task_definitions(familyPrefix=family, maxResults=2, nextToken=first["nextToken"])
    assert second["taskDefinitionArns"] == expected[2:4]
    third = server.ecs.list_task_definitions(familyPrefix=family, maxResults=2, nextToken=second["nextToken"])
    assert third["taskDefinitionArns"] == expected[4:]
    assert not third.get("nextToken")

    code, out = server.cli("list-task-definitions", "--family-prefix", family, "--page-size", "2")
    assert code == 0, out
    assert out["taskDefinitionArns"] == expected

    everything = all_pages(server.ecs, "list_task_definitions", "taskDefinitionArns")
    assert set(expected) | {task_definition_arn(sibling, 1)} <= set(everything)
    assert len(everything) == len(set(everything))


def test_list_task_definition_families(server):
    base = unique("fam")
    families = [base, f"{base}-api", f"{base}-worker"]
    for family in families:
        register(server.ecs, family)
    listed = all_pages(server.ecs, "list_task_definition_families", "families", familyPrefix=base)
    assert listed == sorted(families)
    page = server.ecs.list_task_definition_families(familyPrefix=base, maxResults=1)
    assert page["families"] == [sorted(families)[0]]
    assert page["nextToken"]
    code, out = server.cli("list-task-definition-families", "--family-prefix", base)
    assert code == 0, out
    assert out["families"] == sorted(families)


def test_deregister_makes_a_revision_inactive(server):
    family = unique("dereg")
    register(server.ecs, family)
    register(server.ecs, family)
    code, out = server.cli("deregister-task-definition", "--task-definition", f"{family}:1")
    assert code == 0, out
    assert out["taskDefinition"]["status"] == "INACTIVE"
    assert out["taskDefinition"]["taskDefinitionArn"] == task_definition_arn(family, 1)

    active = all_pages(server.ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family)
    assert active == [task_definition_arn(family, 2)]
    inactive = all_pages(server.ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family, status="INACTIVE")
    assert inactive == [task_definition_arn(family, 1)]
    described = server.ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]
    assert described["status"] == "INACTIVE"
    # The family's latest ACTIVE revision is what a bare family name means.
    assert server.ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["revision"] == 2

    # A family with no ACTIVE revision left is an INACTIVE family.
    server.ecs.deregister_task_definition(taskDefinition=task_definition_arn(family, 2))
    assert family not in all_pages(
        server.ecs, "list_task_definition_families", "families", familyPrefix=family, status="ACTIVE"
    )
    assert family in all_pages(server.ecs, "list_task_definition_families", "families", familyPrefix=family, status="ALL")
    inactive_families = all_pages(
        server.ecs, "list_task_definition_families", "families", familyPrefix=family, status="INACTIVE"
    )
    assert inactive_families == [family]
    # Registering again continues the numbering.
    assert register(server.ecs, family)["taskDefinition"]["revision"] == 3


def test_deregister_needs_a_revision(server):
    family = unique("dereg-bare")
    register(server.ecs, family)
    with pytest.raises(ClientError) as caught:
        server.ecs.deregister_task_definition(taskDefinition=family)
    code, message = error_of(caught)
    assert code in VALIDATION_CODES, message
    assert server.ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]["status"] == "ACTIVE"


def test_delete_task_definitions_of_an_inactive_revision(server):
    family = unique("del")
    register(server.ecs, family)
    register(server.ecs, family)
    arn = task_definition_arn(family, 1)
    server.ecs.deregister_task_definition(taskDefinition=arn)

    deleted = server.ecs.delete_task_definitions(taskDefinitions=[arn])
    assert deleted["failures"] == []
    [definition] = deleted["taskDefinitions"]
    assert definition["taskDefinitionArn"] == arn
    assert definition["status"] == "DELETE_IN_PROGRESS"
    for status, listed in every_task_definition_arn(server.ecs, family).items():
        assert arn not in listed, f"a deleted revision is listed as {status}"
    assert all_pages(
        server.ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family, status="DELETE_IN_PROGRESS"
    ) == [arn]
    described = server.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert described["status"] == "DELETE_IN_PROGRESS"
    # Deleting never renumbers: the next revision is still 3.
    assert register(server.ecs, family)["taskDefinition"]["revision"] == 3


def test_delete_task_definitions_of_an_active_revision_fails(server):
    family = unique("del-active")
    register(server.ecs, family)
    arn = task_definition_arn(family, 1)
    try:
        answer = server.ecs.delete_task_definitions(taskDefinitions=[arn])
    except ClientError as error:
        assert error.response["Error"]["Code"] in VALIDATION_CODES
    else:
        assert answer.get("taskDefinitions", []) == []
        assert [f["arn"] for f in answer["failures"]] == [arn]
    assert server.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]["status"] == "ACTIVE"


# ---- invalid definitions: a table --------------------------------------------------------


def _container(name, **extra):
    return dict(name=name, image="busybox", memory=64, **extra)


INVALID_DEFINITIONS = [
    # (id, request without family, a pattern the message must match: the field)
    ("no containers", dict(containerDefinitions=[]), r"container"),
    ("eleven containers", dict(containerDefinitions=[_container(f"c{i}") for i in range(11)]), r"container"),
    ("duplicate container names",
     dict(containerDefinitions=[_container("twin"), _container("twin")]), r"name"),
    ("missing image", dict(containerDefinitions=[dict(name="noimage", memory=64)]), r"image"),
    ("no essential container",
     dict(containerDefinitions=[_container("a", essential=False), _container("b", essential=False)]), r"essential"),
    ("no memory anywhere", dict(containerDefinitions=[dict(name="a", image="busybox")]), r"memory"),
    ("memoryReservation above memory",
     dict(containerDefinitions=[_container("a", memoryReservation=128)]), r"memory ?reservation"),
    ("FARGATE with bridge",
     dict(requiresCompatibilities=["FARGATE"], networkMode="bridge", cpu="256", memory="512",
          containerDefinitions=[_container("a")]), r"network ?mode|awsvpc"),
    ("FARGATE cpu and memory that no Fargate size has",
     dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="4096",
          containerDefinitions=[_container("a")]), r"cpu|memory"),
    ("awsvpc hostPort differs from containerPort",
     dict(networkMode="awsvpc",
          containerDefinitions=[_container("a", portMappings=[{"containerPort": 80, "hostPort": 8080}])]),
     r"host ?port"),
    ("links in awsvpc",
     dict(networkMode="awsvpc",
          containerDefinitions=[_container("a", links=["b"]), _container("b")]), r"link"),
    ("dependsOn an unknown container",
     dict(containerDefinitions=[_container("a", dependsOn=[{"containerName": "ghost", "condition": "START"}])]),
     r"depend"),
    ("mountPoints name an undeclared volume",
     dict(containerDefinitions=[_container("a", mountPoints=[{"sourceVolume": "data", "containerPath": "/data"}])]),
     r"volume"),
    ("distinctInstance placement constraint",
     dict(placementConstraints=[{"type": "distinctInstance"}], containerDefinitions=[_container("a")]),
     r"placement ?constraint|distinctInstance"),
    ("family with a space", dict(family="not a family", containerDefinitions=[_container("a")]), r"family"),
]


@pytest.mark.parametrize(
    "request_body,field_pattern",
    [pytest.param(body, pattern, id=case) for case, body, pattern in INVALID_DEFINITIONS],
)
def test_invalid_task_definition_is_refused_and_registers_nothing(server, request_body, field_pattern):
    request = copy.deepcopy(request_body)
    request.setdefault("family", unique("invalid"))
    before_arns = every_task_definition_arn(server.ecs)
    before_families = every_family(server.ecs)

    with pytest.raises(ClientError) as caught:
        server.ecs.register_task_definition(**request)
    code, message = error_of(caught)
    assert code in VALIDATION_CODES, f"{code}: {message}"
    assert re.search(field_pattern, message, re.I), f"message does not name the field: {message!r}"

    assert every_task_definition_arn(server.ecs) == before_arns
    assert every_family(server.ecs) == before_families
