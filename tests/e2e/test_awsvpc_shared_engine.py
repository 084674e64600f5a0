"""awsvpc tasks on a Docker engine that others use too.

Every installation cuts its hosts' task subnets from 100.64.0.0/10. On an
engine that already has a network there (left by an earlier installation or
test run, or held by another installation running now), a host's task
subnet must be one the engine does not use, and awsvpc tasks must run.
A host that cannot get one is told why when it registers.

Heavy (marked `docker`), except the registration refusal.
"""

from __future__ import annotations

import json
import os
import threading

import pytest

from support import (
    HTTPD_COMMAND,
    TEST_IMAGE,
    TEST_PAGE,
    cidrs_overlap,
    create_network_on_first_free_task_subnet,
    curl_until_ok,
    engine_ipv4_subnets,
    error_of,
    instance_task_subnet,
    private_ipv4_of,
    register_task_definition,
    remove_network,
    run_tasks,
    unique,
    wait_tasks_status,
    wait_until,
)

AWSVPC_CONFIGURATION = {"awsvpcConfiguration": {"subnets": ["subnet-0123456789abcdef0"]}}


def httpd_definition(ecs) -> str:
    return register_task_definition(ecs, unique("shared-engine-web"), [{
        "name": "web", "image": TEST_IMAGE, "memory": 32, "essential": True,
        "command": HTTPD_COMMAND, "portMappings": [{"containerPort": 8080}],
    }], networkMode="awsvpc")


def describe_instance(ecs, cluster: str, arn: str) -> dict:
    [instance] = ecs.describe_container_instances(cluster=cluster, containerInstances=[arn])["containerInstances"]
    return instance


def assert_clear_of_other_networks(subnet: str, own_network: str) -> None:
    """The instance's task network holds `subnet`, and no other network of
    the engine overlaps it."""
    networks = engine_ipv4_subnets()
    assert networks.get(own_network) == [subnet], (own_network, networks.get(own_network))
    clashing = {name: subnets for name, subnets in networks.items()
                if name != own_network and any(cidrs_overlap(subnet, s) for s in subnets)}
    assert clashing == {}, clashing


def run_and_reach(ecs, cluster: str, count: int) -> list[dict]:
    """Runs `count` awsvpc httpd tasks, waits for RUNNING and fetches the
    page at each one's private address."""
    arn = httpd_definition(ecs)
    tasks = run_tasks(ecs, cluster, arn, count=count, networkConfiguration=AWSVPC_CONFIGURATION)
    tasks = wait_tasks_status(ecs, cluster, [t["taskArn"] for t in tasks], "RUNNING")
    for task in tasks:
        assert curl_until_ok(f"http://{private_ipv4_of(task)}:8080/") == TEST_PAGE
    return tasks


@pytest.fixture
def leftover_network():
    """A task network as an earlier installation leaves it behind, on the
    subnet a fresh installation would hand out first."""
    name = f"flotilla-awsvpc-i-leftover{os.getpid()}{unique('n').split('-')[-1]}"
    subnet = create_network_on_first_free_task_subnet(name)
    try:
        yield name, subnet
    finally:
        remove_network(name)


@pytest.mark.docker
def test_awsvpc_tasks_run_beside_a_network_left_on_the_first_task_subnet(
        docker_ready, fresh_server, agent_fleet, leftover_network):
    leftover_name, leftover_subnet = leftover_network
    cluster = unique("shared-engine")
    fresh_server.ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(fresh_server, cluster)
    own_network = f"flotilla-awsvpc-{agent.instance_ids[0]}"

    tasks = run_and_reach(fresh_server.ecs, cluster, count=3)

    subnet = instance_task_subnet(describe_instance(fresh_server.ecs, cluster, agent.instance_arn))
    assert not cidrs_overlap(subnet, leftover_subnet), (subnet, leftover_subnet)
    assert_clear_of_other_networks(subnet, own_network)
    for task in tasks:
        assert cidrs_overlap(f"{private_ipv4_of(task)}/32", subnet), (private_ipv4_of(task), subnet)
    # The leftover is untouched: it is not this installation's.
    assert engine_ipv4_subnets().get(leftover_name) == [leftover_subnet]


@pytest.mark.docker
def test_two_installations_on_one_engine_run_awsvpc_tasks_at_once(docker_ready, server_factory, agent_fleet):
    """Two control planes, each numbering its subnets from the start of the
    range, with their agents registering at the same moment."""
    servers = [server_factory(), server_factory()]
    cluster = unique("shared-engine-pair")
    for server in servers:
        server.ecs.create_cluster(clusterName=cluster)
    agents = [agent_fleet.start(server, cluster, wait=False) for server in servers]
    for agent in agents:
        agent.wait_connected()

    results: dict[int, object] = {}

    def run(index: int) -> None:
        try:
            results[index] = run_and_reach(servers[index].ecs, cluster, count=2)
        except BaseException as error:  # noqa: BLE001 - reported below
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for index in range(2):
        outcome = results.get(index)
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None, f"installation {index} did not finish"

    subnets = [instance_task_subnet(describe_instance(server.ecs, cluster, agent.instance_arn))
               for server, agent in zip(servers, agents)]
    assert not cidrs_overlap(*subnets), subnets
    for index, (agent, subnet) in enumerate(zip(agents, subnets)):
        assert_clear_of_other_networks(subnet, f"flotilla-awsvpc-{agent.instance_ids[0]}")
        assert len(results[index]) == 2
        for task in results[index]:
            assert cidrs_overlap(f"{private_ipv4_of(task)}/32", subnet)


@pytest.mark.docker
def test_a_deregistered_instance_removes_its_task_network(docker_ready, fresh_server, agent_fleet):
    cluster = unique("shared-engine-bye")
    fresh_server.ecs.create_cluster(clusterName=cluster)
    agent = agent_fleet.start(fresh_server, cluster)
    own_network = f"flotilla-awsvpc-{agent.instance_ids[0]}"
    # Made at registration, before any task needs it: the engine's claim on
    # the subnet.
    subnet = instance_task_subnet(describe_instance(fresh_server.ecs, cluster, agent.instance_arn))
    assert engine_ipv4_subnets().get(own_network) == [subnet]
    [task] = run_and_reach(fresh_server.ecs, cluster, count=1)

    fresh_server.ecs.deregister_container_instance(
        cluster=cluster, containerInstance=agent.instance_arn, force=True)
    wait_tasks_status(fresh_server.ecs, cluster, [task["taskArn"]], "STOPPED")
    wait_until(lambda: own_network not in engine_ipv4_subnets(), 30, f"{own_network} to be removed")


def register_reporting(server, subnets_in_use):
    document = {"instanceId": "i-0feedfacecafe0001", "subnetsInUse": subnets_in_use}
    return server.ecs.register_container_instance(
        cluster="default",
        instanceIdentityDocument=json.dumps(document),
        totalResources=[{"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                        {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}],
    )


def test_a_host_whose_engine_holds_every_task_subnet_is_told_why(fresh_server):
    ecs = fresh_server.ecs
    with pytest.raises(ecs.exceptions.ClientException) as refused:
        register_reporting(fresh_server, ["172.17.0.0/16", "100.64.0.0/10"])
    code, message = error_of(refused)
    assert code == "ClientException"
    assert message.startswith(
        "No task subnet is free for this container instance: of the 16384 /24 subnets of 100.64.0.0/10, "
        "0 are held by registered container instances and 16384 overlap networks of the instance's "
        "container engine (it reported 172.17.0.0/16, 100.64.0.0/10)"), message
    assert ecs.list_container_instances(cluster="default")["containerInstanceArns"] == []

    with pytest.raises(ecs.exceptions.InvalidParameterException) as malformed:
        register_reporting(fresh_server, ["100.64.0.0/33"])
    assert '"100.64.0.0/33" is not an IPv4 CIDR block' in error_of(malformed)[1]

    # With room left, the host gets a subnet clear of what it reported.
    registered = register_reporting(fresh_server, ["100.64.0.0/23"])["containerInstance"]
    assert instance_task_subnet(registered) == "100.64.2.0/24"
