//! `cargo xtask bench api [--seconds N] [--connections C]`: the ECS API's
//! throughput and latency, as a ratio against moto's server run on the same
//! machine in the same run.
//!
//! ```text
//! cargo build --release -p flotilla -p xtask
//!   └─▶ target/release/xtask bench api …   (the generator must not be a debug build)
//!         ├─ start flotilla (temp data dir) and moto_server (pinned venv) on loopback
//!         ├─ per server: CreateCluster ×5, RegisterTaskDefinition bench-read
//!         ├─ per workload, per server: warm-up, then the measured window
//!         │     → {"bench":"api","server":…,"operation":…,"requests_per_sec":…}
//!         ├─ per workload: {"bench":"api","operation":…,"ratio_flotilla_over_moto":…}
//!         │     and, for flotilla-etcd (`flotilla server --store etcd://…` on
//!         │     Debian's etcd, started too), "ratio_etcd_over_embedded"
//!         └─ both servers killed, also on error
//! ```
//!
//! Figures: `requests` are the answers received in the measured window,
//! `errors` those that were not HTTP 200 (or never came), and
//! `requests_per_sec` counts only the successful ones, so that a server that
//! fails fast does not look fast. Latencies cover every counted request.
//! `server_cpu_cores` and `generator_cpu_cores` are the cores each process
//! kept busy on average (from /proc): on a shared two-core machine they tell
//! whether a low figure came from the server, the generator or a neighbour.
//!
//! Options beyond the two above, for profiling one case at a time:
//! `--generator-threads T`, `--servers flotilla,flotilla-etcd,moto` (any
//! of them; flotilla-etcd is left out by default where there is no `etcd`) and
//! `--operations NAME,…` (the `operation` values of the JSON lines).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::json;

mod histogram;
mod lb;
mod load;
mod logs;
mod logs_agent;
mod metrics;
mod placement;
mod registry;
mod runtask;
mod scaling;
mod servers;
mod services;
mod tasks;

use load::{LoadOptions, Measurement, Workload};
use servers::Server;

/// Set on the release child so that it neither rebuilds nor re-executes.
const PREBUILT_ENV: &str = "XTASK_BENCH_PREBUILT";

const DEFAULT_SECONDS: u64 = 10;
const DEFAULT_CONNECTIONS: usize = 64;
const DEFAULT_GENERATOR_THREADS: usize = 1;
/// Bounds on the options, so that a typo cannot start an hour-long run or
/// exhaust file descriptors.
const SECONDS_MAX: u64 = 600;
const CONNECTIONS_MAX: usize = 1_024;
const GENERATOR_THREADS_MAX: usize = 16;
/// Unmeasured time at the start of each window: connections warm up, the
/// server's allocator and caches settle.
const WARMUP: Duration = Duration::from_secs(1);

/// Clusters created before ListClusters is measured.
const SETUP_CLUSTERS: usize = 5;
/// The family DescribeTaskDefinition reads.
const READ_FAMILY: &str = "bench-read";
/// The family every connection registers into in the single-family run.
const SHARED_FAMILY: &str = "bench-shared";

const SERVER_NAMES: [&str; 3] = ["flotilla", "flotilla-etcd", "moto"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    DescribeTaskDefinition,
    /// DescribeTaskDefinition signed by an IAM user holding
    /// `ENFORCED_POLICIES` managed policies of `ENFORCED_STATEMENTS`
    /// statements: the cost of authorization, against the root's requests
    /// (never evaluated) of the same run. Flotilla only.
    DescribeTaskDefinitionEnforced,
    ListClusters,
    RegisterDistinctFamilies,
    RegisterSingleFamily,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::DescribeTaskDefinition,
        Kind::DescribeTaskDefinitionEnforced,
        Kind::ListClusters,
        Kind::RegisterDistinctFamilies,
        Kind::RegisterSingleFamily,
    ];

    /// The name the JSON lines carry.
    fn label(self) -> &'static str {
        match self {
            Kind::DescribeTaskDefinition => "DescribeTaskDefinition",
            Kind::DescribeTaskDefinitionEnforced => "DescribeTaskDefinition.enforced",
            Kind::ListClusters => "ListClusters",
            Kind::RegisterDistinctFamilies => "RegisterTaskDefinition.distinct_families",
            Kind::RegisterSingleFamily => "RegisterTaskDefinition.single_family",
        }
    }

    fn workload(self, connections: usize) -> Workload {
        let bytes = |text: String| Bytes::from(text.into_bytes());
        match self {
            Kind::DescribeTaskDefinition | Kind::DescribeTaskDefinitionEnforced => Workload {
                operation: "DescribeTaskDefinition",
                items_in_answer: None,
                bodies: vec![bytes(format!(r#"{{"taskDefinition":"{READ_FAMILY}"}}"#))],
            },
            Kind::ListClusters => Workload {
                operation: "ListClusters",
                items_in_answer: None,
                bodies: vec![bytes("{}".into())],
            },
            // Many teams registering at once: one family per connection.
            Kind::RegisterDistinctFamilies => Workload {
                operation: "RegisterTaskDefinition",
                items_in_answer: None,
                bodies: (0..connections)
                    .map(|connection| bytes(task_definition(&format!("bench-team-{connection}"))))
                    .collect(),
            },
            // One busy family: every registration contends for its revision counter.
            Kind::RegisterSingleFamily => Workload {
                operation: "RegisterTaskDefinition",
                items_in_answer: None,
                bodies: vec![bytes(task_definition(SHARED_FAMILY))],
            },
        }
    }
}

/// A small but realistic task definition: one web container with a port,
/// an environment variable and limits, as `aws ecs register-task-definition`
/// sends it.
fn task_definition(family: &str) -> String {
    json!({
        "family": family,
        "networkMode": "bridge",
        "containerDefinitions": [{
            "name": "web",
            "image": "public.ecr.aws/nginx/nginx:1.27",
            "cpu": 256,
            "memory": 512,
            "essential": true,
            "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}],
            "environment": [{"name": "MODE", "value": "bench"}],
        }],
    })
    .to_string()
}

struct Options {
    seconds: u64,
    connections: usize,
    generator_threads: usize,
    servers: Vec<&'static str>,
    kinds: Vec<Kind>,
}

const USAGE: &str = "usage: cargo xtask bench api [--seconds N] [--connections C] \
[--generator-threads T] [--servers flotilla,flotilla-etcd,moto] \
[--operations DescribeTaskDefinition,DescribeTaskDefinition.enforced,ListClusters,RegisterTaskDefinition.distinct_families,RegisterTaskDefinition.single_family]";

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            seconds: DEFAULT_SECONDS,
            connections: DEFAULT_CONNECTIONS,
            generator_threads: DEFAULT_GENERATOR_THREADS,
            servers: SERVER_NAMES
                .into_iter()
                .filter(|name| *name != "flotilla-etcd" || etcd_available())
                .collect(),
            kinds: Kind::ALL.to_vec(),
        };
        match args.first().map(String::as_str) {
            Some("api") => {}
            _ => bail!("{USAGE}"),
        }
        let mut rest = args[1..].iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--seconds" => options.seconds = bounded(flag, value, 1, SECONDS_MAX)?,
                "--connections" => options.connections = bounded(flag, value, 1, CONNECTIONS_MAX)?,
                "--generator-threads" => {
                    options.generator_threads = bounded(flag, value, 1, GENERATOR_THREADS_MAX)?
                }
                "--servers" => {
                    options.servers = value
                        .split(',')
                        .map(|name| {
                            SERVER_NAMES
                                .into_iter()
                                .find(|known| *known == name)
                                .with_context(|| format!("unknown server {name:?}\n{USAGE}"))
                        })
                        .collect::<Result<_>>()?
                }
                "--operations" => {
                    options.kinds = value
                        .split(',')
                        .map(|name| {
                            Kind::ALL
                                .into_iter()
                                .find(|kind| kind.label() == name)
                                .with_context(|| format!("unknown operation {name:?}\n{USAGE}"))
                        })
                        .collect::<Result<_>>()?
                }
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

fn bounded<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    flag: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T> {
    let parsed: T = value
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} {value:?} is not a number"))?;
    if parsed < min || parsed > max {
        bail!("{flag} must be between {min} and {max}, not {parsed}");
    }
    Ok(parsed)
}

/// Which benchmark, with its options, parsed before anything is built.
enum Bench {
    Api(Options),
    Tasks(tasks::Options),
    Placement(placement::Options),
    RunTask(runtask::Options),
    Registry(registry::Options),
    Services(services::Options),
    Scaling(scaling::Options),
    Metrics(metrics::Options),
    Lb(lb::Options),
    Logs(logs::Options),
}

pub fn run(args: &[String]) -> Result<()> {
    let bench = match args.first().map(String::as_str) {
        Some("tasks") => Bench::Tasks(tasks::Options::parse(&args[1..])?),
        Some("api") => Bench::Api(Options::parse(args)?),
        Some("placement") => Bench::Placement(placement::Options::parse(&args[1..])?),
        Some("runtask") => Bench::RunTask(runtask::Options::parse(&args[1..])?),
        Some("registry") => Bench::Registry(registry::Options::parse(&args[1..])?),
        Some("services") => Bench::Services(services::Options::parse(&args[1..])?),
        Some("scaling") => Bench::Scaling(scaling::Options::parse(&args[1..])?),
        Some("metrics") => Bench::Metrics(metrics::Options::parse(&args[1..])?),
        Some("lb") => Bench::Lb(lb::Options::parse(&args[1..])?),
        Some("logs") => Bench::Logs(logs::Options::parse(&args[1..])?),
        _ => bail!(
            "{USAGE}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            tasks::USAGE,
            placement::USAGE,
            runtask::USAGE,
            registry::USAGE,
            services::USAGE,
            scaling::USAGE,
            metrics::USAGE,
            lb::USAGE,
            logs::USAGE
        ),
    };
    // The placement benchmark runs in this process: it needs no server binary.
    let packages: &[&str] = match &bench {
        Bench::Metrics(options) if options.control_plane => &["-p", "flotilla", "-p", "xtask"],
        Bench::Placement(_) | Bench::Metrics(_) => &["-p", "xtask"],
        _ => &["-p", "flotilla", "-p", "xtask"],
    };
    let root = crate::root();
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    if std::env::var_os(PREBUILT_ENV).is_none() {
        // One cargo invocation, so the dependencies both share build once.
        run_checked(
            Command::new("cargo")
                .current_dir(&root)
                .args(["build", "--release", "--quiet"])
                .args(packages),
        )?;
        if cfg!(debug_assertions) {
            // A debug generator would measure itself; hand over to the release one.
            return run_checked(
                Command::new(target_dir.join("release/xtask"))
                    .arg("bench")
                    .args(args)
                    .env(PREBUILT_ENV, "1"),
            );
        }
    }
    match bench {
        Bench::Api(options) => api(&root, &target_dir, &options),
        Bench::Tasks(options) => tasks::run(&target_dir, &options),
        Bench::Placement(options) => placement::run(&options),
        Bench::RunTask(options) => runtask::run(&target_dir, &options),
        Bench::Registry(options) => registry::run(&root, &target_dir, &options),
        Bench::Services(options) => services::run(&target_dir, &options),
        Bench::Scaling(options) => scaling::run(&target_dir, &options),
        Bench::Metrics(options) => metrics::run(&target_dir, &options),
        Bench::Lb(options) => lb::run(&target_dir, &options),
        Bench::Logs(options) => logs::run(&target_dir, &options),
    }
}

fn run_checked(command: &mut Command) -> Result<()> {
    eprintln!("+ {command:?}");
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Whether Debian's `etcd` is on `PATH`, for the flotilla-etcd row.
fn etcd_available() -> bool {
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("no `etcd` on PATH (Debian package etcd-server): no flotilla-etcd row");
    }
    found
}

fn api(root: &Path, target_dir: &Path, options: &Options) -> Result<()> {
    let log_dir = target_dir.join("bench");
    // Servers are dropped, so killed, when this function returns, error or
    // not; etcd after the server on it.
    let mut backing: Vec<Server> = Vec::new();
    let mut running: Vec<Server> = Vec::new();
    for &name in &options.servers {
        let server = match name {
            "flotilla" => servers::start_flotilla(&target_dir.join("release/flotilla"), &log_dir)?,
            "flotilla-etcd" => {
                let etcd = servers::start_etcd(&log_dir)?;
                let address = etcd.address;
                backing.push(etcd);
                servers::start_flotilla_on_etcd(
                    &target_dir.join("release/flotilla"),
                    &log_dir,
                    address,
                )?
            }
            _ => {
                crate::test::ensure_venv(root)?;
                servers::start_moto(&root.join(".venv/bin/moto_server"), &log_dir)?
            }
        };
        set_up(&server);
        running.push(server);
    }
    let enforced = options
        .kinds
        .contains(&Kind::DescribeTaskDefinitionEnforced);
    let user_key = match running.iter().find(|server| server.name == "flotilla") {
        Some(server) if enforced => Some(set_up_user(server)?),
        _ => None,
    };
    let mut flotilla_rates: Vec<(Kind, f64)> = Vec::new();
    let load_options = LoadOptions {
        connections: options.connections,
        generator_threads: options.generator_threads,
        warmup: WARMUP,
        measured: Duration::from_secs(options.seconds),
    };
    for &kind in &options.kinds {
        let workload = kind.workload(options.connections);
        let mut per_server_rate = Vec::new();
        for server in &running {
            let key = match kind {
                Kind::DescribeTaskDefinitionEnforced if server.name == "flotilla" => {
                    user_key.as_ref()
                }
                // moto authorizes nothing: the row is Flotilla's alone.
                Kind::DescribeTaskDefinitionEnforced => continue,
                _ => None,
            };
            let label = format!("{} {}", server.name, kind.label());
            let server_pid = server.pid().to_string();
            let cpu_before = [
                servers::cpu_seconds(&server_pid),
                servers::cpu_seconds("self"),
            ];
            let wall = std::time::Instant::now();
            let measurement = load::run_as(label, server.address, &workload, load_options, key)?;
            let wall_seconds = wall.elapsed().as_secs_f64();
            let cpu_after = [
                servers::cpu_seconds(&server_pid),
                servers::cpu_seconds("self"),
            ];
            // Cores busy on average over warm-up plus window: tells whether the
            // server or the generator had the machine's two cores.
            let [server_cores, generator_cores] =
                [0, 1].map(|which| match (cpu_before[which], cpu_after[which]) {
                    (Some(before), Some(after)) => Some(round((after - before) / wall_seconds, 2)),
                    _ => None,
                });
            if measurement.reconnects > 0 {
                eprintln!(
                    "{} {}: {} connections were closed by the server and reopened",
                    server.name,
                    kind.label(),
                    measurement.reconnects
                );
            }
            let cores = CoresBusy {
                server: server_cores,
                generator: generator_cores,
            };
            let rate =
                print_measurement(server.name, kind, options.connections, &measurement, cores);
            per_server_rate.push((server.name, rate));
            if server.name == "flotilla" {
                flotilla_rates.push((kind, rate));
            }
        }
        let rate_of = |name| {
            per_server_rate
                .iter()
                .find(|(server, _)| *server == name)
                .map(|(_, rate)| *rate)
        };
        if let (Some(flotilla), Some(moto)) = (rate_of("flotilla"), rate_of("moto")) {
            let ratio = (moto > 0.0).then(|| round(flotilla / moto, 2));
            println!(
                "{}",
                json!({"bench": "api", "operation": kind.label(), "ratio_flotilla_over_moto": ratio})
            );
        }
        if let (Some(embedded), Some(etcd)) = (rate_of("flotilla"), rate_of("flotilla-etcd")) {
            let ratio = (embedded > 0.0).then(|| round(etcd / embedded, 2));
            println!(
                "{}",
                json!({"bench": "api", "operation": kind.label(), "ratio_etcd_over_embedded": ratio})
            );
        }
    }
    let flotilla_rate = |wanted: Kind| {
        flotilla_rates
            .iter()
            .find(|(kind, _)| *kind == wanted)
            .map(|(_, rate)| *rate)
    };
    if let (Some(enforced), Some(root)) = (
        flotilla_rate(Kind::DescribeTaskDefinitionEnforced),
        flotilla_rate(Kind::DescribeTaskDefinition),
    ) {
        let ratio = (root > 0.0).then(|| round(enforced / root, 2));
        println!(
            "{}",
            json!({"bench": "api", "operation": Kind::DescribeTaskDefinitionEnforced.label(),
                   "policies": ENFORCED_POLICIES, "statements_per_policy": ENFORCED_STATEMENTS,
                   "ratio_enforced_over_unenforced": ratio})
        );
    }
    Ok(())
}

/// The enforced row's user: this many managed policies attached (IAM's
/// quota per user), of this many statements each.
const ENFORCED_POLICIES: usize = 10;
const ENFORCED_STATEMENTS: usize = 10;

/// Creates the enforced row's user through IAM's Query API, signed with the
/// server's own (root) key, and answers its new access key. Every statement
/// but the last one's is a near miss (another action and resource, with a
/// condition), so that evaluation looks at all of them.
fn set_up_user(server: &Server) -> Result<load::Key> {
    let iam = |form: String| -> Result<String> {
        let (status, body) = load::query_once(server.address, "iam", &form)?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if !status.is_success() {
            bail!("setting up the enforced benchmark's user answered HTTP {status}: {text}");
        }
        Ok(text)
    };
    let user = "bench-user";
    iam(format!(
        "Action=CreateUser&Version=2010-05-08&UserName={user}"
    ))?;
    for policy in 0..ENFORCED_POLICIES {
        let statements: Vec<serde_json::Value> = (0..ENFORCED_STATEMENTS)
            .map(|statement| {
                if policy + 1 == ENFORCED_POLICIES && statement + 1 == ENFORCED_STATEMENTS {
                    json!({"Sid": "Read", "Effect": "Allow",
                           "Action": ["ecs:Describe*", "ecs:List*"], "Resource": "*"})
                } else {
                    json!({"Sid": format!("P{policy}S{statement}"), "Effect": "Allow",
                           "Action": ["ecs:RunTask", "ecs:StopTask", "ecs:UpdateService"],
                           "Resource": format!("arn:aws:ecs:*:*:cluster/team-{policy}-{statement}*"),
                           "Condition": {"StringEquals": {"aws:RequestedRegion": ["us-east-1", "eu-west-1"]}}})
                }
            })
            .collect();
        let document = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
        let created = iam(format!(
            "Action=CreatePolicy&Version=2010-05-08&PolicyName=bench-{policy}&PolicyDocument={}",
            form_encode(&document)
        ))?;
        let arn = xml_value(&created, "Arn")
            .with_context(|| format!("CreatePolicy answered no Arn: {created}"))?;
        iam(format!(
            "Action=AttachUserPolicy&Version=2010-05-08&UserName={user}&PolicyArn={}",
            form_encode(&arn)
        ))?;
    }
    let key = iam(format!(
        "Action=CreateAccessKey&Version=2010-05-08&UserName={user}"
    ))?;
    Ok(load::Key {
        access_key_id: xml_value(&key, "AccessKeyId").context("CreateAccessKey answered no key")?,
        secret_access_key: xml_value(&key, "SecretAccessKey")
            .context("CreateAccessKey answered no secret")?,
    })
}

/// The text of the first `<name>` element of an XML answer.
fn xml_value(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].to_owned())
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Creates the state the read workloads read. Failures are reported and the
/// run goes on: a missing operation then shows up as errors in its figures.
fn set_up(server: &Server) {
    let mut calls: Vec<(&'static str, String)> = (0..SETUP_CLUSTERS)
        .map(|index| {
            (
                "CreateCluster",
                json!({"clusterName": format!("bench-cluster-{index}")}).to_string(),
            )
        })
        .collect();
    calls.push(("RegisterTaskDefinition", task_definition(READ_FAMILY)));
    for (operation, body) in calls {
        match load::call_once(server.address, operation, &body) {
            Ok((status, _)) if status.is_success() => {}
            Ok((status, answer)) => eprintln!(
                "{}: setting up with {operation} answered HTTP {status}: {}",
                server.name,
                String::from_utf8_lossy(&answer)
            ),
            Err(error) => eprintln!(
                "{}: setting up with {operation} failed: {error:#}",
                server.name
            ),
        }
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Average CPU cores each side used during a run.
struct CoresBusy {
    server: Option<f64>,
    generator: Option<f64>,
}

/// Prints one server's figures and returns its successful requests per second.
fn print_measurement(
    server: &str,
    kind: Kind,
    connections: usize,
    measurement: &Measurement,
    cores: CoresBusy,
) -> f64 {
    let successes = measurement.requests - measurement.errors;
    let rate = successes as f64 / measurement.seconds;
    println!(
        "{}",
        json!({
            "bench": "api",
            "server": server,
            "operation": kind.label(),
            "connections": connections,
            "requests": measurement.requests,
            "errors": measurement.errors,
            "seconds": round(measurement.seconds, 3),
            "requests_per_sec": round(rate, 1),
            "p50_ms": round(measurement.histogram.quantile_ms(0.50), 3),
            "p99_ms": round(measurement.histogram.quantile_ms(0.99), 3),
            "server_cpu_cores": cores.server,
            "generator_cpu_cores": cores.generator,
        })
    );
    rate
}
