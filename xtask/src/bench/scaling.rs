//! `cargo xtask bench scaling [--tasks T]`: cluster auto scaling at scale.
//! A cluster with no instance, a capacity provider with managed scaling over
//! a host group of the simulated host provider (hosts that exist the moment
//! they are asked for, so this measures Flotilla), and a service of T tasks:
//! the time from CreateService until every task is placed on a newly
//! launched host, and until every task runs.
//!
//! ```text
//! flotilla server --host-group name=bench,provider=simulated,... (temp data dir)
//! CreateCapacityProvider (managedScaling ENABLED, target 100) + CreateCluster
//! CreateService desiredCount T → poll DescribeServices and the host count
//!   → {"bench":"scaling","tasks":T,"hosts_launched":…,"seconds_to_placed":…,
//!      "seconds_to_running":…,"target_seconds":30}
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::runtask::Api;
use super::servers;

pub const USAGE: &str = "usage: cargo xtask bench scaling [--tasks T]";

const DEFAULT_TASKS: usize = 10_000;
const TASKS_MAX: usize = 100_000;
const CLUSTER: &str = "bench-scaling";
const PROVIDER: &str = "bench-scaling";
const GROUP: &str = "bench";
const TASK_CPU_UNITS: i64 = 256;
const TASK_MEMORY_MIB: i64 = 512;
/// 32 tasks a host.
const HOST_CPU_UNITS: i64 = 8_192;
const HOST_MEMORY_MIB: i64 = 16_384;
const HOSTS_MAX: usize = 10_000;
/// How often the server scales its host group in this run.
const SCALING_INTERVAL_MS: u64 = 1_000;
const TARGET_SECONDS: f64 = 30.0;
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub struct Options {
    tasks: usize,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            tasks: DEFAULT_TASKS,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--tasks" => options.tasks = super::bounded(flag, value, 1, TASKS_MAX)?,
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

pub fn run(target_dir: &Path, options: &Options) -> Result<()> {
    let binary = target_dir.join("release/flotilla");
    let log_dir = target_dir.join("bench");
    let group = format!(
        "name={GROUP},provider=simulated,min=0,max={HOSTS_MAX},cpu={HOST_CPU_UNITS},memory={HOST_MEMORY_MIB}"
    );
    let extra = [
        "--host-group".to_owned(),
        group,
        "--host-scaling-interval-ms".to_owned(),
        SCALING_INTERVAL_MS.to_string(),
        "--service-stabilization-ms".to_owned(),
        "0".to_owned(),
    ];
    let server = servers::start_flotilla_with(&binary, &log_dir, &extra)?;
    let api = Api {
        address: server.address,
    };
    api.call(
        "CreateCapacityProvider",
        json!({"name": PROVIDER, "autoScalingGroupProvider": {
            "autoScalingGroupArn": GROUP,
            "managedScaling": {"status": "ENABLED", "targetCapacity": 100, "instanceWarmupPeriod": 60},
            "managedTerminationProtection": "ENABLED",
        }}),
    )?;
    api.call(
        "CreateCluster",
        json!({"clusterName": CLUSTER, "capacityProviders": [PROVIDER]}),
    )?;
    api.call(
        "RegisterTaskDefinition",
        json!({"family": CLUSTER, "containerDefinitions": [{
            "name": "app", "image": "sim/app", "essential": true,
            "cpu": TASK_CPU_UNITS, "memory": TASK_MEMORY_MIB,
        }]}),
    )?;
    let began = Instant::now();
    api.call(
        "CreateService",
        json!({
            "cluster": CLUSTER, "serviceName": "bench", "taskDefinition": CLUSTER,
            "desiredCount": options.tasks,
            "capacityProviderStrategy": [{"capacityProvider": PROVIDER, "weight": 1}],
            "placementStrategy": [{"type": "binpack", "field": "memory"}],
        }),
    )?;
    let mut seconds_to_placed = None;
    loop {
        if began.elapsed() > PHASE_TIMEOUT {
            bail!("the tasks were not all running within {PHASE_TIMEOUT:?}");
        }
        let answer = api.call(
            "DescribeServices",
            json!({"cluster": CLUSTER, "services": ["bench"]}),
        )?;
        let service = &answer["services"][0];
        let running = service["runningCount"].as_u64().unwrap_or(0) as usize;
        let pending = service["pendingCount"].as_u64().unwrap_or(0) as usize;
        if seconds_to_placed.is_none() && running + pending >= options.tasks {
            seconds_to_placed = Some(began.elapsed().as_secs_f64());
        }
        if running >= options.tasks {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let seconds_to_running = began.elapsed().as_secs_f64();
    let hosts = api
        .list_all(
            "ListContainerInstances",
            json!({"cluster": CLUSTER}),
            "containerInstanceArns",
        )?
        .len();
    println!(
        "{}",
        json!({
            "bench": "scaling",
            "tasks": options.tasks,
            "hosts_launched": hosts,
            "seconds_to_placed": seconds_to_placed,
            "seconds_to_running": seconds_to_running,
            "target_seconds": TARGET_SECONDS,
        })
    );
    drop(server);
    Ok(())
}
