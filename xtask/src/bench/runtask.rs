//! `cargo xtask bench runtask [--instances N] [--seconds S] [--clients C]`:
//! end-to-end placement throughput. Signed RunTask calls (count 10, spread
//! over zones then binpack on memory) against `flotilla server` with N
//! simulated instances, then a check that no instance was overcommitted.
//!
//! ```text
//! flotilla server (temp data dir) ◀── C clients, RunTask count 10, signed (load::run)
//!   └─ flotilla agent --simulate N --simulate-zones a,b,c --simulate-start-delay-ms 0
//!        (fake runtime: every placed task is started and reported RUNNING)
//! wait: N instances ACTIVE and agentConnected
//! warm-up 1 s, measured S s
//!   → {"bench":"runtask","tasks_placed":…,"tasks_per_sec":…,"p50_ms":…,"p99_ms":…,…}
//! verify: ListTasks + DescribeTasks (every task), DescribeContainerInstances (every instance):
//!   remaining ≥ 0, tasks × reservation ≤ registered, registered − remaining = tasks × reservation
//!   → {"bench":"runtask","check":"overcommit","instances_checked":…,"violations":0}
//! ```
//!
//! A "task placed" is a task in a successful RunTask answer inside the
//! window; `failures` counts the tasks RunTask answered with a failure
//! (no capacity) plus the calls that were not HTTP 200. The published
//! figures printed beside ours are context, not a peer run on this machine:
//! Nomad's C2M (3,750 containers/s, 2020) and Kubernetes' scheduler
//! throughput SLO work (~750 pods/s) measured other things on other hardware.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::{json, Value};

use super::load::{self, LoadOptions, Workload};
use super::servers::{self, TempDir};

pub const USAGE: &str =
    "usage: cargo xtask bench runtask [--instances N] [--seconds S] [--clients C]";

const DEFAULT_INSTANCES: usize = 1_000;
const DEFAULT_SECONDS: u64 = 10;
const DEFAULT_CLIENTS: usize = 64;
const INSTANCES_MAX: usize = 10_000;
const CLIENTS_MAX: usize = 1_024;

pub(super) const CLUSTER: &str = "bench-runtask";
const FAMILY: &str = "bench-runtask";
const TASKS_PER_CALL: u32 = 10;
const TASK_CPU_UNITS: i64 = 16;
const TASK_MEMORY_MIB: i64 = 32;
/// Room for 512 tasks per instance: a thousand instances hold far more tasks
/// than a ten-second run places, so `failures` means a bug, not a full cluster.
const INSTANCE_CPU_UNITS: i64 = 8_192;
const INSTANCE_MEMORY_MIB: i64 = 16_384;
const ZONES: &str = "a,b,c";

const WARMUP: Duration = Duration::from_secs(1);
const READY_TIMEOUT: Duration = Duration::from_secs(180);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(500);
const PAGE_SIZE: usize = 100;

const NOMAD_PUBLISHED_TASKS_PER_SEC: u64 = 3_750;
const KUBERNETES_PUBLISHED_PODS_PER_SEC: u64 = 750;

pub struct Options {
    instances: usize,
    seconds: u64,
    clients: usize,
}

impl Options {
    /// Parses what follows `runtask`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            instances: DEFAULT_INSTANCES,
            seconds: DEFAULT_SECONDS,
            clients: DEFAULT_CLIENTS,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--instances" => options.instances = super::bounded(flag, value, 1, INSTANCES_MAX)?,
                "--seconds" => {
                    options.seconds = super::bounded(flag, value, 1, super::SECONDS_MAX)?
                }
                "--clients" => options.clients = super::bounded(flag, value, 1, CLIENTS_MAX)?,
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

/// The simulated hosts' process, killed when dropped.
pub(super) struct Agent {
    pub(super) child: Child,
    log: std::path::PathBuf,
    _data_dir: TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) struct Api {
    pub(super) address: SocketAddr,
}

impl Api {
    pub(super) fn call(&self, operation: &'static str, body: Value) -> Result<Value> {
        let (status, answer) = load::call_once(self.address, operation, &body.to_string())
            .with_context(|| format!("calling {operation}"))?;
        if !status.is_success() {
            bail!(
                "{operation} answered HTTP {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        serde_json::from_slice(&answer).with_context(|| format!("parsing {operation}'s answer"))
    }

    /// Every page of a List operation's `key`.
    pub(super) fn list_all(
        &self,
        operation: &'static str,
        body: Value,
        key: &str,
    ) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut page = body.clone();
            page["maxResults"] = json!(PAGE_SIZE);
            if let Some(token) = &token {
                page["nextToken"] = json!(token);
            }
            let answer = self.call(operation, page)?;
            found.extend(
                answer[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned),
            );
            match answer["nextToken"].as_str() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => return Ok(found),
            }
        }
    }
}

/// RunTask's answer: tasks placed and tasks refused.
fn placed_and_refused(body: &[u8]) -> (u64, u64) {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        tasks: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        failures: Vec<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(answer) => (answer.tasks.len() as u64, answer.failures.len() as u64),
        Err(_) => (0, u64::from(TASKS_PER_CALL)),
    }
}

pub fn run(target_dir: &Path, options: &Options) -> Result<()> {
    let binary = target_dir.join("release/flotilla");
    let log_dir = target_dir.join("bench");
    let server = servers::start_flotilla(&binary, &log_dir)?;
    let api = Api {
        address: server.address,
    };
    api.call("CreateCluster", json!({"clusterName": CLUSTER}))?;
    api.call(
        "RegisterTaskDefinition",
        json!({
            "family": FAMILY,
            "containerDefinitions": [{
                "name": "app", "image": "sim/any", "essential": true,
                "cpu": TASK_CPU_UNITS, "memory": TASK_MEMORY_MIB,
            }],
        }),
    )?;
    let agent = start_agent(&binary, &log_dir, server.address, options.instances, &[])?;
    let ready_in = wait_ready(&api, options.instances, &agent)?;
    eprintln!(
        "{} instances registered and connected in {:.1} s",
        options.instances,
        ready_in.as_secs_f64()
    );

    let body = json!({
        "cluster": CLUSTER,
        "taskDefinition": FAMILY,
        "count": TASKS_PER_CALL,
        "placementStrategy": [
            {"type": "spread", "field": "attribute:ecs.availability-zone"},
            {"type": "binpack", "field": "memory"},
        ],
    });
    let workload = Workload {
        operation: "RunTask",
        bodies: vec![Bytes::from(body.to_string().into_bytes())],
        items_in_answer: Some(placed_and_refused),
    };
    let load_options = LoadOptions {
        connections: options.clients,
        generator_threads: 1,
        warmup: WARMUP,
        measured: Duration::from_secs(options.seconds),
    };
    let server_pid = server.pid().to_string();
    let agent_pid = agent.child.id().to_string();
    let cpu_before =
        [&server_pid, &agent_pid, &"self".to_owned()].map(|pid| servers::cpu_seconds(pid));
    let wall = Instant::now();
    let measurement = load::run(
        "runtask".to_owned(),
        server.address,
        &workload,
        load_options,
    )?;
    let wall_seconds = wall.elapsed().as_secs_f64();
    let cpu_after =
        [&server_pid, &agent_pid, &"self".to_owned()].map(|pid| servers::cpu_seconds(pid));
    let cores = |which: usize| match (cpu_before[which], cpu_after[which]) {
        (Some(before), Some(after)) => Some(super::round((after - before) / wall_seconds, 2)),
        _ => None,
    };
    let tasks_per_sec = measurement.items as f64 / measurement.seconds;
    println!(
        "{}",
        json!({
            "bench": "runtask",
            "instances": options.instances,
            "clients": options.clients,
            "tasks_per_call": TASKS_PER_CALL,
            "seconds": options.seconds,
            "calls": measurement.requests,
            "tasks_placed": measurement.items,
            "tasks_per_sec": super::round(tasks_per_sec, 1),
            "p50_ms": super::round(measurement.histogram.quantile_ms(0.50), 3),
            "p99_ms": super::round(measurement.histogram.quantile_ms(0.99), 3),
            "failures": measurement.items_refused + measurement.errors,
            "failed_calls": measurement.errors,
            "server_cpu_cores": cores(0),
            "agent_cpu_cores": cores(1),
            "generator_cpu_cores": cores(2),
            "nomad_published_tasks_per_sec": NOMAD_PUBLISHED_TASKS_PER_SEC,
            "kubernetes_published_pods_per_sec": KUBERNETES_PUBLISHED_PODS_PER_SEC,
        })
    );
    verify_no_overcommit(&api)?;
    drop(agent);
    drop(server);
    Ok(())
}

/// `flotilla agent --simulate N` in the benchmark's cluster, with `extra`
/// arguments.
pub(super) fn start_agent(
    binary: &Path,
    log_dir: &Path,
    address: SocketAddr,
    instances: usize,
    extra: &[String],
) -> Result<Agent> {
    let data_dir = TempDir::new("flotilla-bench-runtask-agent")?;
    std::fs::create_dir_all(log_dir)?;
    let log = log_dir.join("runtask-agent.log");
    let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let metadata_port = TcpListener::bind("0.0.0.0:0")?.local_addr()?.port();
    let mut command = Command::new(binary);
    command
        .arg("agent")
        .args(["--endpoint", &format!("http://{address}")])
        .args(["--cluster", CLUSTER, "--region", "us-east-1"])
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["--metadata-port", &metadata_port.to_string()])
        .args(["--simulate", &instances.to_string()])
        .args(["--simulate-start-delay-ms", "0"])
        .args(["--simulate-zones", ZONES])
        .args(["--simulate-cpu", &INSTANCE_CPU_UNITS.to_string()])
        .args(["--simulate-memory", &INSTANCE_MEMORY_MIB.to_string()])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("NO_COLOR", "1")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    eprintln!(
        "simulated agent started (pid {}, log {})",
        child.id(),
        log.display()
    );
    Ok(Agent {
        child,
        log,
        _data_dir: data_dir,
    })
}

/// Waits until every simulated instance is ACTIVE with its agent connected.
pub(super) fn wait_ready(api: &Api, instances: usize, agent: &Agent) -> Result<Duration> {
    let began = Instant::now();
    loop {
        let connected = api
            .list_all(
                "ListContainerInstances",
                json!({"cluster": CLUSTER, "status": "ACTIVE", "filter": "agentConnected == true"}),
                "containerInstanceArns",
            )?
            .len();
        if connected >= instances {
            return Ok(began.elapsed());
        }
        if began.elapsed() > READY_TIMEOUT {
            bail!(
                "only {connected} of {instances} instances connected within {READY_TIMEOUT:?}; see {}",
                agent.log.display()
            );
        }
        std::thread::sleep(READY_POLL_INTERVAL);
    }
}

fn integer_resource(instance: &Value, member: &str, name: &str) -> Option<i64> {
    instance[member]
        .as_array()?
        .iter()
        .find(|resource| resource["name"] == name)?["integerValue"]
        .as_i64()
}

/// Every task's instance against every instance's resources: nothing may
/// be negative, and what an instance lost is exactly its tasks' reservations.
fn verify_no_overcommit(api: &Api) -> Result<()> {
    let task_arns = api.list_all("ListTasks", json!({"cluster": CLUSTER}), "taskArns")?;
    let mut tasks_on: std::collections::HashMap<String, i64> = Default::default();
    for chunk in task_arns.chunks(PAGE_SIZE) {
        let answer = api.call("DescribeTasks", json!({"cluster": CLUSTER, "tasks": chunk}))?;
        for task in answer["tasks"].as_array().into_iter().flatten() {
            let instance = task["containerInstanceArn"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *tasks_on.entry(instance).or_default() += 1;
        }
    }
    let instance_arns = api.list_all(
        "ListContainerInstances",
        json!({"cluster": CLUSTER}),
        "containerInstanceArns",
    )?;
    let mut violations = Vec::new();
    let mut busiest = 0;
    for chunk in instance_arns.chunks(PAGE_SIZE) {
        let answer = api.call(
            "DescribeContainerInstances",
            json!({"cluster": CLUSTER, "containerInstances": chunk}),
        )?;
        for instance in answer["containerInstances"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let arn = instance["containerInstanceArn"]
                .as_str()
                .unwrap_or_default();
            let tasks = tasks_on.get(arn).copied().unwrap_or(0);
            busiest = busiest.max(tasks);
            for (name, per_task) in [("CPU", TASK_CPU_UNITS), ("MEMORY", TASK_MEMORY_MIB)] {
                let registered = integer_resource(instance, "registeredResources", name);
                let remaining = integer_resource(instance, "remainingResources", name);
                let (Some(registered), Some(remaining)) = (registered, remaining) else {
                    violations.push(format!("{arn}: no {name} resource"));
                    continue;
                };
                let reserved = tasks * per_task;
                if remaining < 0 || reserved > registered || registered - remaining != reserved {
                    violations.push(format!(
                        "{arn} {name}: registered {registered}, remaining {remaining}, {tasks} tasks reserve {reserved}"
                    ));
                }
            }
        }
    }
    println!(
        "{}",
        json!({
            "bench": "runtask",
            "check": "overcommit",
            "instances_checked": instance_arns.len(),
            "tasks_checked": task_arns.len(),
            "most_tasks_on_one_instance": busiest,
            "violations": violations.len(),
        })
    );
    if !violations.is_empty() {
        bail!(
            "instances overcommitted or out of step with their tasks:\n{}",
            violations.join("\n")
        );
    }
    Ok(())
}
