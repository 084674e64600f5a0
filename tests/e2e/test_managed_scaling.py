"""Cluster auto scaling end to end: a host group of the `command` host
provider (examples/host-provider.sh, which starts each host as a
`flotilla agent` process), scaled by a capacity provider with managed
scaling and managed termination protection. A service that asks for more
than the cluster holds gets hosts launched and its tasks run; scaled down,
idle hosts are drained and terminated while the host with a task is kept.
A host group with min > max is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from support import ACCOUNT_ID, FLOTILLA_BIN, REGION, REPO_ROOT, unique, wait_until

SCRIPT = REPO_ROOT / "examples" / "host-provider.sh"
SCALE_TIMEOUT_S = 90.0
# Hosts of 1024 CPU units and 2048 MiB: four tasks of 256 / 512 each.
HOST_CPU = 1024
HOST_MEMORY = 2048


def asg_arn(group: str) -> str:
    return f"arn:aws:autoscaling:{REGION}:{ACCOUNT_ID}:autoScalingGroup:1:autoScalingGroupName/{group}"


def live_hosts(hosts_dir: Path) -> list[str]:
    """Host ids whose agent process the script started and that still runs."""
    alive = []
    for pid_file in hosts_dir.glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (ProcessLookupError, ValueError):
            continue
        alive.append(pid_file.stem)
    return sorted(alive)


def kill_hosts(hosts_dir: Path) -> None:
    for pid_file in hosts_dir.glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass


def instances(ecs, cluster: str) -> list[dict]:
    arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    if not arns:
        return []
    return ecs.describe_container_instances(cluster=cluster, containerInstances=arns)["containerInstances"]


def test_a_service_short_of_room_gets_hosts_and_idle_hosts_go(server_factory, tmp_path):
    hosts_dir = tmp_path / "hosts"
    group = unique("hostprov-pool")
    server = server_factory(
        extra_args=(
            "--host-group",
            f"name={group},provider=command,command={SCRIPT},min=0,max=4,cpu={HOST_CPU},memory={HOST_MEMORY}",
            "--host-scaling-interval-ms", "1000",
            "--service-stabilization-ms", "0",
        ),
        extra_env={"FLOTILLA_HOSTS_DIR": str(hosts_dir)},
    )
    try:
        ecs = server.ecs
        provider = unique("scaled")
        code, created = server.cli(
            "create-capacity-provider", "--name", provider,
            "--auto-scaling-group-provider", json.dumps({
                "autoScalingGroupArn": asg_arn(group),
                "managedScaling": {"status": "ENABLED", "targetCapacity": 100,
                                   "minimumScalingStepSize": 1, "maximumScalingStepSize": 10,
                                   "instanceWarmupPeriod": 5},
                "managedTerminationProtection": "ENABLED",
            }),
        )
        assert code == 0, created
        cluster = unique("hostprov-scaling")
        ecs.create_cluster(clusterName=cluster, capacityProviders=[provider])
        ecs.register_task_definition(
            family="hostprov-app",
            containerDefinitions=[{"name": "app", "image": "sim/any", "cpu": 256, "memory": 512}],
        )
        # No host yet: nothing is launched for a cluster without demand.
        assert instances(ecs, cluster) == []
        assert live_hosts(hosts_dir) == []

        ecs.create_service(
            cluster=cluster, serviceName="web", taskDefinition="hostprov-app", desiredCount=6,
            capacityProviderStrategy=[{"capacityProvider": provider, "weight": 1}],
            placementStrategy=[{"type": "binpack", "field": "memory"}],
        )

        def service():
            return ecs.describe_services(cluster=cluster, services=["web"])["services"][0]

        wait_until(lambda: service()["runningCount"] == 6, SCALE_TIMEOUT_S, "six tasks running on launched hosts")
        # Six tasks of four per host: two hosts, each a registered instance of the provider.
        registered = [i for i in instances(ecs, cluster) if i["status"] == "ACTIVE"]
        assert len(registered) == 2, registered
        assert {i["capacityProviderName"] for i in registered} == {provider}
        assert len(live_hosts(hosts_dir)) == 2
        host_ids = {a["value"] for i in registered for a in i["attributes"] if a["name"] == "flotilla.host-id"}
        assert host_ids == set(live_hosts(hosts_dir))
        described = ecs.describe_capacity_providers(capacityProviders=[provider])["capacityProviders"][0]
        assert described["updateStatus"] == "UPDATE_COMPLETE"
        assert "launched" in described["updateStatusReason"], described

        # Down to one task: one host keeps it, the idle one is drained and terminated.
        ecs.update_service(cluster=cluster, service="web", desiredCount=1)
        wait_until(lambda: len(live_hosts(hosts_dir)) == 1, SCALE_TIMEOUT_S, "the idle host terminated")
        wait_until(lambda: len([i for i in instances(ecs, cluster) if i["status"] == "ACTIVE"]) == 1,
                   SCALE_TIMEOUT_S, "one instance left")
        kept = [i for i in instances(ecs, cluster) if i["status"] == "ACTIVE"][0]
        assert kept["runningTasksCount"] + kept["pendingTasksCount"] == 1, kept
        kept_host = [a["value"] for a in kept["attributes"] if a["name"] == "flotilla.host-id"]
        assert kept_host == live_hosts(hosts_dir)
        assert service()["runningCount"] == 1
        described = ecs.describe_capacity_providers(capacityProviders=[provider])["capacityProviders"][0]
        assert "terminated" in described["updateStatusReason"] or "draining" in described["updateStatusReason"], described
    finally:
        kill_hosts(hosts_dir)


def test_a_host_group_with_min_above_max_is_refused(tmp_path):
    done = subprocess.run(
        [str(FLOTILLA_BIN), "server", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
         "--host-group", "name=hostprov-bad,provider=simulated,min=3,max=2"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode != 0
    assert "Max bound, 2, must be greater than or equal to min bound, 3" in done.stderr, done.stderr
    assert not (tmp_path / "store").exists() or "serving" not in done.stdout
