//! `cargo xtask bench services [--instances N] [--tasks T]`: the service
//! scheduler at scale. A service of T tasks on N simulated instances goes
//! from CreateService to steady state, then a rolling deployment of it
//! (minimumHealthyPercent 50, maximumPercent 200) runs to completion.
//!
//! ```text
//! flotilla server (temp data dir)
//!   └─ flotilla agent --simulate N --simulate-start-delay-ms 0 (fake runtime)
//! wait: N instances ACTIVE and agentConnected
//! CreateService desiredCount T     → poll DescribeServices until steady
//!   → {"bench":"services","phase":"create_to_steady","seconds_to_running":…,"seconds_to_completed":…,
//!      "server_rss_mib_max":…,"server_cpu_cores":…}
//! UpdateService taskDefinition v2  → poll until the new deployment completed and alone
//!   → {"bench":"services","phase":"rolling_deployment","seconds_to_running":…,"seconds_to_completed":…,…}
//! ```
//!
//! Each phase reports two times: until the deployment first runs all T
//! tasks (its `runningCount`), and until the service is steady: what `aws
//! ecs wait services-stable` waits for (one deployment, runningCount =
//! desiredCount) with the deployment COMPLETED. The second includes the
//! stabilization period a deployment must hold its steady state for before
//! it completes. The server's resident memory is sampled at every poll (the
//! largest is reported) and its CPU is the cores it kept busy on average
//! over the phase.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::runtask::Api;
use super::servers::{self, TempDir};

pub const USAGE: &str = "usage: cargo xtask bench services [--instances N] [--tasks T]";

const DEFAULT_INSTANCES: usize = 1_000;
const DEFAULT_TASKS: usize = 10_000;
const INSTANCES_MAX: usize = 10_000;
const TASKS_MAX: usize = 100_000;

const CLUSTER: &str = "bench-services";
const FAMILY: &str = "bench-services";
const SERVICE: &str = "bench";
const TASK_CPU_UNITS: i64 = 16;
const TASK_MEMORY_MIB: i64 = 32;
const INSTANCE_CPU_UNITS: i64 = 8_192;
const INSTANCE_MEMORY_MIB: i64 = 16_384;
const ZONES: &str = "a,b,c";

const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest a phase may take before the run gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub struct Options {
    instances: usize,
    tasks: usize,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            instances: DEFAULT_INSTANCES,
            tasks: DEFAULT_TASKS,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--instances" => options.instances = super::bounded(flag, value, 1, INSTANCES_MAX)?,
                "--tasks" => options.tasks = super::bounded(flag, value, 1, TASKS_MAX)?,
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

struct Agent {
    child: Child,
    log: std::path::PathBuf,
    _data_dir: TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    for image in ["sim/app:v1", "sim/app:v2"] {
        api.call(
            "RegisterTaskDefinition",
            json!({
                "family": FAMILY,
                "containerDefinitions": [{
                    "name": "app", "image": image, "essential": true,
                    "cpu": TASK_CPU_UNITS, "memory": TASK_MEMORY_MIB,
                }],
            }),
        )?;
    }
    let agent = start_agent(&binary, &log_dir, server.address, options.instances)?;
    wait_ready(&api, options.instances, &agent)?;
    let pid = server.pid().to_string();

    let began = Phase::start(&pid);
    api.call(
        "CreateService",
        json!({
            "cluster": CLUSTER, "serviceName": SERVICE, "taskDefinition": format!("{FAMILY}:1"),
            "desiredCount": options.tasks,
            "placementStrategy": [{"type": "spread", "field": "attribute:ecs.availability-zone"},
                                  {"type": "spread", "field": "instanceId"}],
        }),
    )?;
    let first = began.wait(&api, &pid, options.tasks, None)?;
    first.print("create_to_steady", options);

    let began = Phase::start(&pid);
    let updated = api.call(
        "UpdateService",
        json!({
            "cluster": CLUSTER, "service": SERVICE, "taskDefinition": format!("{FAMILY}:2"),
            "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 200},
        }),
    )?;
    let deployment = updated["service"]["deployments"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let second = began.wait(&api, &pid, options.tasks, Some(&deployment))?;
    second.print("rolling_deployment", options);
    drop(agent);
    drop(server);
    Ok(())
}

struct Phase {
    began: Instant,
    cpu_before: Option<f64>,
}

struct Finished {
    /// Until the deployment first ran every task.
    seconds_to_running: f64,
    /// Until it completed, alone, with every task running.
    seconds: f64,
    rss_mib_max: f64,
    cpu_cores: Option<f64>,
    polls: usize,
}

impl Phase {
    fn start(pid: &str) -> Phase {
        Phase {
            began: Instant::now(),
            cpu_before: servers::cpu_seconds(pid),
        }
    }

    /// Polls until the service is steady (on `deployment`, when given).
    fn wait(
        self,
        api: &Api,
        pid: &str,
        tasks: usize,
        deployment: Option<&str>,
    ) -> Result<Finished> {
        let mut rss_mib_max: f64 = 0.0;
        let mut polls = 0;
        let mut seconds_to_running: Option<f64> = None;
        loop {
            rss_mib_max = rss_mib_max.max(rss_mib(pid).unwrap_or(0.0));
            let answer = api.call(
                "DescribeServices",
                json!({"cluster": CLUSTER, "services": [SERVICE]}),
            )?;
            polls += 1;
            let service = &answer["services"][0];
            if seconds_to_running.is_none() && all_running(service, tasks, deployment) {
                seconds_to_running = Some(self.began.elapsed().as_secs_f64());
            }
            if steady(service, tasks, deployment) {
                let seconds = self.began.elapsed().as_secs_f64();
                let cpu_cores = match (self.cpu_before, servers::cpu_seconds(pid)) {
                    (Some(before), Some(after)) => {
                        Some(super::round((after - before) / seconds, 2))
                    }
                    _ => None,
                };
                return Ok(Finished {
                    seconds_to_running: seconds_to_running.unwrap_or(seconds),
                    seconds,
                    rss_mib_max,
                    cpu_cores,
                    polls,
                });
            }
            if self.began.elapsed() > PHASE_TIMEOUT {
                bail!(
                    "not steady after {PHASE_TIMEOUT:?}: running {}, pending {}, deployments {}",
                    service["runningCount"],
                    service["pendingCount"],
                    service["deployments"]
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Finished {
    fn print(&self, phase: &str, options: &Options) {
        println!(
            "{}",
            json!({
                "bench": "services",
                "phase": phase,
                "instances": options.instances,
                "tasks": options.tasks,
                "seconds_to_running": super::round(self.seconds_to_running, 2),
                "seconds_to_completed": super::round(self.seconds, 2),
                "server_rss_mib_max": super::round(self.rss_mib_max, 1),
                "server_cpu_cores": self.cpu_cores,
                "polls": self.polls,
            })
        );
    }
}

/// Whether the deployment (the PRIMARY, or `deployment` when given) runs
/// every task.
fn all_running(service: &Value, tasks: usize, deployment: Option<&str>) -> bool {
    service["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| deployment.map_or(d["status"] == "PRIMARY", |id| d["id"] == id))
        .is_some_and(|d| d["runningCount"].as_u64() == Some(tasks as u64))
}

fn steady(service: &Value, tasks: usize, deployment: Option<&str>) -> bool {
    let deployments = service["deployments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    deployments.len() == 1
        && deployments[0]["rolloutState"] == "COMPLETED"
        && deployment.is_none_or(|id| deployments[0]["id"] == id)
        && service["runningCount"].as_u64() == Some(tasks as u64)
        && service["desiredCount"].as_u64() == Some(tasks as u64)
}

/// Resident memory of a process, from `/proc/<pid>/status`.
fn rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn start_agent(
    binary: &Path,
    log_dir: &Path,
    address: SocketAddr,
    instances: usize,
) -> Result<Agent> {
    let data_dir = TempDir::new("flotilla-bench-services-agent")?;
    std::fs::create_dir_all(log_dir)?;
    let log = log_dir.join("services-agent.log");
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
        // Stopped tasks' containers go at once: 20,000 of them would
        // otherwise sit in the fakes for the whole run.
        .args(["--task-cleanup-wait-seconds", "0"])
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

fn wait_ready(api: &Api, instances: usize, agent: &Agent) -> Result<()> {
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
            eprintln!(
                "{instances} instances registered and connected in {:.1} s",
                began.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if began.elapsed() > READY_TIMEOUT {
            bail!("only {connected} of {instances} instances connected within {READY_TIMEOUT:?}; see {}", agent.log.display());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
