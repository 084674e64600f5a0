//! [`DockerRuntime`] against the real engine on this machine. Every test is
//! skipped (with a note) when there is no Docker socket. Each test labels
//! what it creates with its own run label and removes it all afterwards,
//! panics included, through the Docker CLI.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_runtime::testing::{docker_or_skip, ensure_test_image, TEST_IMAGE, TEST_PAGE};
use flotilla_runtime::{
    ContainerRuntime, ContainerSpec, DockerRuntime, Health, HealthCheck, Mount, NetworkMode,
    PortBinding, Protocol, PullPolicy, RuntimeError, Status, Ulimit,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RUN_LABEL: &str = "com.flotilla.test-run";
/// How long a test waits for a container to reach a state.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One test's engine connection and the things it must clean up.
struct Harness {
    runtime: DockerRuntime,
    run: String,
    started: Instant,
}

impl Harness {
    /// `None` (after printing why) when this machine has no Docker engine.
    async fn new(test: &str) -> Option<Harness> {
        if !docker_or_skip(test) {
            return None;
        }
        ensure_test_image().expect("test image");
        let run = format!("flotilla-rt-{}-{test}", std::process::id()).replace('_', "-");
        cleanup(&run);
        let runtime = DockerRuntime::connect().await.expect("connect to docker");
        Some(Harness {
            runtime,
            run,
            started: Instant::now(),
        })
    }

    /// A spec for the test image carrying this run's label.
    fn spec(&self, name: &str, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: format!("{}-{name}", self.run),
            image: TEST_IMAGE.to_owned(),
            command: Some(command.iter().map(|part| (*part).to_owned()).collect()),
            labels: BTreeMap::from([(RUN_LABEL.to_owned(), self.run.clone())]),
            ..Default::default()
        }
    }

    async fn run(&self, spec: &ContainerSpec) -> String {
        let id = self.runtime.create_container(spec).await.expect("create");
        self.runtime.start_container(&id).await.expect("start");
        id
    }

    /// Polls until `done` holds for the container's state.
    async fn wait_for(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&flotilla_runtime::ContainerState) -> bool,
    ) -> flotilla_runtime::ContainerState {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let state = self.runtime.inspect_container(id).await.expect("inspect");
            if done(&state) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not reached within {WAIT_LIMIT:?}: {state:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn exit_code(&self, id: &str) -> i64 {
        let state = self
            .wait_for(id, "exit", |state| {
                matches!(state.status, Status::Exited { .. })
            })
            .await;
        match state.status {
            Status::Exited { exit_code } => exit_code,
            other => unreachable!("waited for exit, got {other:?}"),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        cleanup(&self.run);
        eprintln!("{} took {:?}", self.run, self.started.elapsed());
    }
}

/// Removes every container, network and volume of a run (named or labelled
/// after it), whatever state the test left them in.
fn cleanup(run: &str) {
    let list = |args: &[&str]| -> Vec<String> {
        Command::new("docker")
            .args(args)
            .output()
            .map(|output| {
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = list(&["ps", "-aq", "--filter", &format!("label={RUN_LABEL}={run}")]);
    if !containers.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-fv"])
            .args(&containers)
            .output();
    }
    for network in list(&["network", "ls", "-q", "--filter", &format!("name={run}")]) {
        let _ = Command::new("docker")
            .args(["network", "rm", &network])
            .output();
    }
    for volume in list(&["volume", "ls", "-q", "--filter", &format!("name={run}")]) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &volume])
            .output();
    }
}

/// A minimal HTTP/1.0 GET over a raw socket: (status line, body).
async fn http_get(port: u16) -> std::io::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response"))??;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

fn docker_inspect(id: &str) -> serde_json::Value {
    let output = Command::new("docker")
        .args(["inspect", id])
        .output()
        .expect("docker inspect");
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("inspect json");
    parsed[0].clone()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

#[tokio::test]
async fn negotiates_the_engine_api_version() {
    let Some(harness) = Harness::new("version").await else {
        return;
    };
    let version = harness.runtime.api_version();
    let (major, minor) = version.split_once('.').expect("major.minor");
    assert_eq!(major, "1");
    // bollard defaults to a newer API than an older engine speaks; a
    // negotiated client never asks for more than the engine offers.
    assert!(minor.parse::<u32>().expect("minor") >= 41, "{version}");
    let missing = harness
        .runtime
        .inspect_container("flotilla-no-such-container")
        .await;
    assert!(
        matches!(missing, Err(RuntimeError::NoSuchContainer { .. })),
        "{missing:?}"
    );
    let missing = harness
        .runtime
        .remove_container("flotilla-no-such-container")
        .await;
    assert!(
        matches!(missing, Err(RuntimeError::NoSuchContainer { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn httpd_answers_on_an_ephemeral_host_port() {
    let Some(harness) = Harness::new("httpd").await else {
        return;
    };
    let spec = ContainerSpec {
        port_bindings: vec![PortBinding {
            container_port: 8080,
            protocol: Protocol::Tcp,
            host_port: None,
            host_ip: None,
        }],
        ..harness.spec("web", &["httpd", "-f", "-p", "8080", "-h", "/www"])
    };
    let id = harness.run(&spec).await;
    let state = harness
        .runtime
        .inspect_container(&id)
        .await
        .expect("inspect");
    assert_eq!(state.status, Status::Running);
    assert_eq!(state.name, spec.name);
    assert_eq!(state.image, TEST_IMAGE);
    assert_eq!(state.labels, spec.labels);
    assert!(state.ip_addresses.contains_key("bridge"), "{state:?}");
    assert!(
        state
            .started_at_ms
            .is_some_and(|started| started > 1_600_000_000_000),
        "{state:?}"
    );
    assert_eq!(state.finished_at_ms, None);
    let port = state
        .bound_ports
        .iter()
        .find(|bound| bound.container_port == 8080 && bound.host_ip == "0.0.0.0")
        .unwrap_or_else(|| panic!("no IPv4 binding: {state:?}"))
        .host_port;
    assert_ne!(port, 0);

    let deadline = Instant::now() + WAIT_LIMIT;
    let (status_line, body) = loop {
        match http_get(port).await {
            Ok((status_line, body)) if !status_line.is_empty() => break (status_line, body),
            outcome => assert!(
                Instant::now() < deadline,
                "httpd never answered: {outcome:?}"
            ),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    assert!(status_line.contains("200"), "{status_line}");
    assert_eq!(body, TEST_PAGE);

    let stats = harness.runtime.container_stats(&id).await.expect("stats");
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    assert!(stats.cpu_total_usage_ns > 0, "{stats:?}");

    // httpd as PID 1 has no SIGTERM handler, so a short stop ends in a kill.
    harness
        .runtime
        .stop_container(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    harness
        .runtime
        .stop_container(&id, Duration::from_secs(1))
        .await
        .expect("stopping again is fine");
    harness.runtime.remove_container(&id).await.expect("remove");
}

#[tokio::test]
async fn spec_fields_reach_the_container() {
    let Some(harness) = Harness::new("fields").await else {
        return;
    };
    // Each check exits with its own code, so a failure names the field.
    let script = r#"
        test "$GREETING" = "hello world" || exit 10
        test "$(pwd)" = /www || exit 11
        test "$(hostname)" = flotilla-host || exit 12
        grep -q "10.1.2.3[[:space:]]*db.internal" /etc/hosts || exit 13
        grep -q "nameserver 127.0.0.1" /etc/resolv.conf || exit 14
        grep -q "search svc.flotilla" /etc/resolv.conf || exit 15
        touch /rootfs-probe 2>/dev/null && exit 16
        touch /scratch/ok || exit 17
        grep -q " /scratch tmpfs .*size=1024k" /proc/mounts || exit 18
        test "$(ulimit -n)" = 1000 || exit 19
        chown 65534 /scratch/ok 2>/dev/null && exit 20
        grep -q " /dev/shm .*size=8192k" /proc/mounts || exit 21
        test "$(id -u)" = 0 || exit 22
        exit 0
    "#;
    let spec = ContainerSpec {
        entry_point: Some(strings(&["sh", "-c"])),
        environment: BTreeMap::from([("GREETING".to_owned(), "hello world".to_owned())]),
        working_directory: Some("/www".to_owned()),
        user: Some("0:0".to_owned()),
        cpu_shares: Some(256),
        memory_bytes: Some(64 << 20),
        memory_reservation_bytes: Some(32 << 20),
        network_mode: Some(NetworkMode::Bridge),
        mounts: vec![Mount::Tmpfs {
            target: "/scratch".to_owned(),
            size_bytes: Some(1 << 20),
            options: strings(&["rw"]),
        }],
        health_check: Some(HealthCheck {
            test: strings(&["CMD-SHELL", "true"]),
            interval: Duration::from_secs(7),
            timeout: Duration::from_secs(3),
            retries: 2,
            start_period: Duration::from_secs(1),
        }),
        stop_timeout: Some(Duration::from_secs(4)),
        ulimits: vec![Ulimit {
            name: "nofile".to_owned(),
            soft: 1000,
            hard: 2000,
        }],
        read_only_root_filesystem: true,
        capabilities_add: strings(&["NET_ADMIN"]),
        capabilities_drop: strings(&["CHOWN"]),
        init_process: true,
        shared_memory_bytes: Some(8 << 20),
        hostname: Some("flotilla-host".to_owned()),
        extra_hosts: strings(&["db.internal:10.1.2.3"]),
        dns_servers: strings(&["127.0.0.1"]),
        dns_search_domains: strings(&["svc.flotilla"]),
        ..harness.spec("fields", &[script])
    };
    let id = harness.run(&spec).await;
    assert_eq!(
        harness.exit_code(&id).await,
        0,
        "a field did not reach the container (see the script's codes)"
    );

    // What the container cannot see for itself, the engine's own CLI reports.
    let inspected = docker_inspect(&id);
    let host = &inspected["HostConfig"];
    assert_eq!(host["CpuShares"], 256);
    assert_eq!(host["Memory"], 64 << 20);
    assert_eq!(host["MemoryReservation"], 32 << 20);
    assert_eq!(host["Init"], true);
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["CapAdd"], serde_json::json!(["NET_ADMIN"]));
    let config = &inspected["Config"];
    assert_eq!(config["User"], "0:0");
    assert_eq!(config["StopTimeout"], 4);
    assert_eq!(config["Healthcheck"]["Interval"], 7_000_000_000_i64);
    assert_eq!(config["Healthcheck"]["Retries"], 2);
}

#[tokio::test]
async fn exit_codes_and_times_are_captured() {
    let Some(harness) = Harness::new("exit").await else {
        return;
    };
    let id = harness
        .run(&harness.spec("exit", &["sh", "-c", "sleep 0.2; exit 7"]))
        .await;
    assert_eq!(harness.exit_code(&id).await, 7);
    let state = harness
        .runtime
        .inspect_container(&id)
        .await
        .expect("inspect");
    let (started, finished) = (
        state.started_at_ms.expect("started"),
        state.finished_at_ms.expect("finished"),
    );
    assert!(finished >= started + 150, "{started} .. {finished}");
    assert_eq!(state.error, None);
}

#[tokio::test]
async fn stop_kills_a_process_that_ignores_sigterm_after_the_timeout() {
    let Some(harness) = Harness::new("stop").await else {
        return;
    };
    let stubborn = harness
        .run(&harness.spec("stubborn", &["sh", "-c", "trap '' TERM; sleep 1000"]))
        .await;
    // With init, SIGTERM reaches `sleep`, which dies of it at once.
    let polite = harness
        .run(&ContainerSpec {
            init_process: true,
            ..harness.spec("polite", &["sleep", "1000"])
        })
        .await;

    let started = Instant::now();
    harness
        .runtime
        .stop_container(&stubborn, Duration::from_secs(2))
        .await
        .expect("stop");
    let stubborn_took = started.elapsed();
    let started = Instant::now();
    harness
        .runtime
        .stop_container(&polite, Duration::from_secs(10))
        .await
        .expect("stop");
    let polite_took = started.elapsed();
    eprintln!("stop ignoring SIGTERM took {stubborn_took:?}; honouring it took {polite_took:?}");

    assert!(
        stubborn_took >= Duration::from_millis(1900) && stubborn_took < Duration::from_secs(15),
        "{stubborn_took:?}"
    );
    assert_eq!(harness.exit_code(&stubborn).await, 137);
    assert!(polite_took < Duration::from_secs(5), "{polite_took:?}");
    assert_eq!(harness.exit_code(&polite).await, 143);
}

#[tokio::test]
async fn health_checks_report_healthy_and_unhealthy() {
    let Some(harness) = Harness::new("health").await else {
        return;
    };
    let checked = |name: &str, test: &[&str]| ContainerSpec {
        health_check: Some(HealthCheck {
            test: strings(test),
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            retries: 1,
            start_period: Duration::ZERO,
        }),
        ..harness.spec(name, &["sleep", "1000"])
    };
    let healthy = harness
        .run(&checked("healthy", &["CMD-SHELL", "test -d /www"]))
        .await;
    let unhealthy = harness.run(&checked("unhealthy", &["CMD", "false"])).await;
    let unchecked = harness
        .run(&harness.spec("unchecked", &["sleep", "1000"]))
        .await;
    harness
        .wait_for(&healthy, "healthy", |state| state.health == Health::Healthy)
        .await;
    harness
        .wait_for(&unhealthy, "unhealthy", |state| {
            state.health == Health::Unhealthy
        })
        .await;
    let state = harness
        .runtime
        .inspect_container(&unchecked)
        .await
        .expect("inspect");
    assert_eq!(state.health, Health::Unknown);
}

#[tokio::test]
async fn pulls_fail_with_the_engines_reason() {
    let Some(harness) = Harness::new("pull").await else {
        return;
    };
    // Nothing listens on port 1, so the engine's registry client is refused.
    let unreachable = "127.0.0.1:1/flotilla/missing:latest";
    let started = Instant::now();
    let pulled = harness
        .runtime
        .pull_image(unreachable, PullPolicy::Always, None)
        .await;
    eprintln!("failed pull took {:?}: {pulled:?}", started.elapsed());
    match pulled {
        Err(RuntimeError::Pull { image, reason }) => {
            assert_eq!(image, unreachable);
            assert!(reason.contains("connection refused"), "{reason}");
        }
        other => panic!("expected a pull error, got {other:?}"),
    }
    let never = harness
        .runtime
        .pull_image(unreachable, PullPolicy::Never, None)
        .await;
    assert!(matches!(never, Err(RuntimeError::Pull { .. })), "{never:?}");
    let if_not_present = harness
        .runtime
        .pull_image(unreachable, PullPolicy::IfNotPresent, None)
        .await;
    assert!(
        matches!(if_not_present, Err(RuntimeError::Pull { .. })),
        "{if_not_present:?}"
    );
    // The local image satisfies both policies without touching a registry;
    // built here, it has no registry digest.
    let digest = harness
        .runtime
        .pull_image(TEST_IMAGE, PullPolicy::IfNotPresent, None)
        .await
        .expect("local image");
    assert_eq!(digest, None);
    harness
        .runtime
        .pull_image(TEST_IMAGE, PullPolicy::Never, None)
        .await
        .expect("local image");

    let missing_image = ContainerSpec {
        image: "flotilla-test/absent:1".to_owned(),
        ..harness.spec("absent", &[])
    };
    let created = harness.runtime.create_container(&missing_image).await;
    assert!(
        matches!(created, Err(RuntimeError::Engine { .. })),
        "{created:?}"
    );
}

#[tokio::test]
async fn lists_containers_by_label() {
    let Some(harness) = Harness::new("labels").await else {
        return;
    };
    let labelled = |name: &str, task: &str| {
        let mut spec = harness.spec(name, &["true"]);
        spec.labels
            .insert("com.flotilla.task-arn".to_owned(), task.to_owned());
        spec
    };
    let first = harness
        .runtime
        .create_container(&labelled("a", "task-1"))
        .await
        .expect("create");
    let second = harness.run(&labelled("b", "task-1")).await;
    harness
        .runtime
        .create_container(&labelled("c", "task-2"))
        .await
        .expect("create");

    let mut listed = harness
        .runtime
        .list_containers(&[
            (RUN_LABEL, harness.run.as_str()),
            ("com.flotilla.task-arn", "task-1"),
        ])
        .await
        .expect("list");
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let ids: Vec<&str> = listed.iter().map(|state| state.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert_eq!(listed[0].status, Status::Created);
    let all = harness
        .runtime
        .list_containers(&[(RUN_LABEL, harness.run.as_str())])
        .await
        .expect("list");
    assert_eq!(all.len(), 3);
}

#[tokio::test]
async fn network_with_fixed_address_and_a_joined_namespace() {
    let Some(harness) = Harness::new("network").await else {
        return;
    };
    let network = format!("{}-net", harness.run);
    // Other test runs on this engine may hold subnets; try a few.
    let mut subnet_octet = None;
    for attempt in 0..20 {
        let octet = (std::process::id() + attempt) % 200 + 20;
        match harness
            .runtime
            .ensure_network(&network, &format!("10.199.{octet}.0/24"))
            .await
        {
            Ok(()) => {
                subnet_octet = Some(octet);
                break;
            }
            Err(RuntimeError::SubnetInUse { .. }) => continue,
            Err(error) => panic!("ensure network: {error}"),
        }
    }
    let octet = subnet_octet.expect("a free subnet");
    let address = format!("10.199.{octet}.10");
    let subnet = format!("10.199.{octet}.0/24");
    harness
        .runtime
        .ensure_network(&network, &subnet)
        .await
        .expect("idempotent");
    let listed = harness.runtime.list_networks().await.expect("list");
    let mine = listed
        .iter()
        .find(|info| info.name == network)
        .expect("the new network is listed");
    assert_eq!(mine.ipv4_subnets, std::slice::from_ref(&subnet));
    assert!(
        listed
            .iter()
            .any(|info| info.name == "bridge" && !info.ipv4_subnets.is_empty()),
        "{listed:?}"
    );
    // Another network cannot take addresses the first one holds.
    let overlapping = format!("{}-overlap", harness.run);
    let refused = harness
        .runtime
        .ensure_network(&overlapping, &format!("10.199.{octet}.128/25"))
        .await;
    assert!(
        matches!(&refused, Err(RuntimeError::SubnetInUse { network, .. }) if *network == overlapping),
        "{refused:?}"
    );

    let server = ContainerSpec {
        network_mode: Some(NetworkMode::Network {
            name: network.clone(),
            ipv4_address: Some(address.clone()),
        }),
        ..harness.spec("server", &["httpd", "-f", "-p", "8080", "-h", "/www"])
    };
    let server = harness.run(&server).await;
    let state = harness
        .runtime
        .inspect_container(&server)
        .await
        .expect("inspect");
    assert_eq!(
        state.ip_addresses,
        BTreeMap::from([(network.clone(), address.clone())])
    );

    let fetch = |url: String| {
        format!("for i in $(seq 100); do wget -q -O /tmp/page {url} && grep -q flotilla /tmp/page && exit 0; sleep 0.1; done; exit 1")
    };
    let joined = ContainerSpec {
        network_mode: Some(NetworkMode::Container { id: server.clone() }),
        ..harness.spec(
            "joined",
            &["sh", "-c", &fetch("http://127.0.0.1:8080/".to_owned())],
        )
    };
    let joined = harness.run(&joined).await;
    let neighbour = ContainerSpec {
        network_mode: Some(NetworkMode::Network {
            name: network.clone(),
            ipv4_address: None,
        }),
        ..harness.spec(
            "neighbour",
            &["sh", "-c", &fetch(format!("http://{address}:8080/"))],
        )
    };
    let neighbour = harness.run(&neighbour).await;
    assert_eq!(
        harness.exit_code(&joined).await,
        0,
        "the joined container did not reach localhost:8080"
    );
    assert_eq!(
        harness.exit_code(&neighbour).await,
        0,
        "a neighbour did not reach {address}:8080"
    );
    let state = harness
        .runtime
        .inspect_container(&joined)
        .await
        .expect("inspect");
    assert!(state.ip_addresses.is_empty(), "{state:?}");

    for id in [&joined, &neighbour, &server] {
        harness.runtime.remove_container(id).await.expect("remove");
    }
    harness
        .runtime
        .remove_network(&network)
        .await
        .expect("remove network");
    harness
        .runtime
        .remove_network(&network)
        .await
        .expect("a removed network is already removed");
    let listed = harness.runtime.list_networks().await.expect("list");
    assert!(
        !listed.iter().any(|info| info.name == network),
        "{listed:?}"
    );
}

/// An instance's first awsvpc tasks start together, and each makes sure the
/// instance's task network exists: every one of them must succeed.
#[tokio::test]
async fn concurrent_ensures_of_one_network_all_succeed() {
    const CALLERS: usize = 8;
    let Some(harness) = Harness::new("network-race").await else {
        return;
    };
    let network = format!("{}-net", harness.run);
    for attempt in 0..20 {
        let octet = (std::process::id() + attempt) % 200 + 20;
        let subnet = format!("10.198.{octet}.0/24");
        let results = futures_util::future::join_all(
            (0..CALLERS).map(|_| harness.runtime.ensure_network(&network, &subnet)),
        )
        .await;
        let refused: Vec<String> = results
            .iter()
            .filter_map(|result| result.as_ref().err().map(ToString::to_string))
            .collect();
        if refused.len() == CALLERS && refused.iter().all(|reason| reason.contains("overlap")) {
            // Another run on this engine holds the subnet; try the next.
            continue;
        }
        assert!(
            refused.is_empty(),
            "{} of {CALLERS} refused: {refused:?}",
            refused.len()
        );
        return;
    }
    panic!("no free subnet");
}

#[tokio::test]
async fn named_volume_is_shared_between_containers() {
    let Some(harness) = Harness::new("volume").await else {
        return;
    };
    let volume = format!("{}-data", harness.run);
    let labels = BTreeMap::from([(RUN_LABEL.to_owned(), harness.run.clone())]);
    harness
        .runtime
        .ensure_volume(&volume, &labels)
        .await
        .expect("volume");
    harness
        .runtime
        .ensure_volume(&volume, &labels)
        .await
        .expect("idempotent");
    let mounted = |name: &str, read_only: bool, script: &str| ContainerSpec {
        mounts: vec![Mount::Volume {
            name: volume.clone(),
            target: "/data".to_owned(),
            read_only,
        }],
        ..harness.spec(name, &["sh", "-c", script])
    };
    let writer = harness
        .run(&mounted("writer", false, "echo shared > /data/file"))
        .await;
    assert_eq!(harness.exit_code(&writer).await, 0);
    let reader = harness
        .run(&mounted(
            "reader",
            true,
            "test \"$(cat /data/file)\" = shared && ! touch /data/x",
        ))
        .await;
    assert_eq!(harness.exit_code(&reader).await, 0);

    let in_use = harness.runtime.remove_volume(&volume).await;
    assert!(
        matches!(in_use, Err(RuntimeError::Engine { .. })),
        "{in_use:?}"
    );
    harness
        .runtime
        .remove_container(&writer)
        .await
        .expect("remove");
    harness
        .runtime
        .remove_container(&reader)
        .await
        .expect("remove");
    harness
        .runtime
        .remove_volume(&volume)
        .await
        .expect("remove volume");
    harness
        .runtime
        .remove_volume(&volume)
        .await
        .expect("removing a missing volume is fine");
}

#[tokio::test]
async fn follow_logs_yields_every_line_until_the_container_exits() {
    use flotilla_runtime::LogSource;
    use futures_util::StreamExt;
    let Some(harness) = Harness::new("follow-logs").await else {
        return;
    };
    let id = harness
        .run(&harness.spec(
            "talker",
            &[
                "sh",
                "-c",
                "seq 1 5000; echo oops >&2; sleep 0.5; echo last",
            ],
        ))
        .await;
    let lines: Vec<_> = tokio::time::timeout(
        WAIT_LIMIT,
        harness.runtime.follow_logs(&id, None).collect::<Vec<_>>(),
    )
    .await
    .expect("the stream ends once the container exits");
    let lines: Vec<_> = lines
        .into_iter()
        .map(|line| line.expect("a line"))
        .collect();
    // The engine copies stdout and stderr from two pipes: each stream keeps
    // its order, the two interleave as the engine read them.
    let of = |source| {
        lines
            .iter()
            .filter(|line| line.source == source)
            .collect::<Vec<_>>()
    };
    let stdout = of(LogSource::Stdout);
    let mut expected: Vec<String> = (1..=5000).map(|n| n.to_string()).collect();
    expected.push("last".to_owned());
    assert_eq!(
        stdout
            .iter()
            .map(|line| line.message.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(stdout
        .windows(2)
        .all(|pair| pair[0].timestamp_ms <= pair[1].timestamp_ms));
    let stderr = of(LogSource::Stderr);
    assert_eq!(stderr.len(), 1);
    assert_eq!(stderr[0].message, "oops");
    let last_ms = stdout.last().expect("a last line").timestamp_ms;
    let later: Vec<_> = harness
        .runtime
        .follow_logs(&id, Some(last_ms))
        .collect()
        .await;
    assert_eq!(later.len(), 1, "only what came at or after `since`");
}
