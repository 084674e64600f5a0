//! `flotilla`: the one binary. Each subcommand wires the library crates
//! together; no logic of its own lives here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use flotilla_control::{Caller, Clock, Ecs};
use flotilla_edge::{Edge, Metrics, RandomIds, SystemClock};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use flotilla_sigv4::Credentials;
use flotilla_store::Store;
use flotilla_types::arn::Scope;

mod fargate;
mod hosts;
mod lb;
mod placement;
mod region;
mod service;
mod service_targets;
mod store;

const DEFAULT_LISTEN: &str = "127.0.0.1:8440";

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "A self-hosted container orchestrator that speaks the Amazon ECS API"
)]
struct Cli {
    /// Log format: `text` for people, `json` for machines.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane alone: the API edge on its store (embedded,
    /// or etcd with --store).
    Server(ServerArgs),
    /// Run the control plane plus every local part, for one machine.
    Up(UpArgs),
    /// Run an agent: this machine (or `--simulate N` simulated ones) as
    /// container instances of a cluster.
    Agent(AgentArgs),
    /// Ask the control plane about placement (Flotilla's ExplainPlacement).
    #[command(subcommand)]
    Placement(placement::PlacementCommand),
    /// Operate the Fargate pools: take FARGATE_SPOT capacity back.
    #[command(subcommand)]
    Fargate(fargate::FargateCommand),
    /// Change a service and follow its rollout.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Run a load balancer data plane from a configuration file.
    Lb(lb::LbArgs),
    /// Work on a store: copy an embedded data directory into etcd.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Show a control plane's replicas and which loops each leads.
    Status(StatusArgs),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy the embedded store of a data directory into an empty etcd
    /// namespace, for replicas to serve it.
    Migrate(store::MigrateArgs),
}

#[derive(Args)]
struct StatusArgs {
    /// The replicas to ask, comma-separated (any one that answers tells
    /// the others' addresses through the store).
    #[arg(long, default_value = "http://127.0.0.1:8440", value_delimiter = ',', num_args = 1..)]
    endpoint: Vec<String>,
}

#[derive(Args)]
struct AgentArgs {
    /// The control plane's API; several replicas' addresses
    /// comma-separated (or the option repeated): the agent moves to the
    /// next when its replica cannot be reached.
    #[arg(long, default_value = "http://127.0.0.1:8440", value_delimiter = ',', num_args = 1..)]
    endpoint: Vec<String>,
    /// Cluster to join (name or ARN).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Directory of the agent's identity and task state [default: $HOME/.local/share/flotilla/agent].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Region to sign requests for [default: as the AWS CLI finds it:
    /// AWS_REGION, AWS_DEFAULT_REGION, the profile's region in the AWS
    /// config file, else us-east-1].
    #[arg(long)]
    region: Option<String>,
    /// Availability zone to register in [default: local-1a].
    #[arg(long)]
    availability_zone: Option<String>,
    /// Instance type to register as [default: flotilla.local].
    #[arg(long)]
    instance_type: Option<String>,
    /// A custom attribute, KEY=VALUE; repeat for more.
    #[arg(long = "attribute", value_parser = flotilla_agent::parse_attribute)]
    attributes: Vec<(String, String)>,
    /// Register for launch type EXTERNAL.
    #[arg(long, conflicts_with = "fargate")]
    external: bool,
    /// Join the cluster's Fargate pool: the host takes launch type FARGATE
    /// tasks (FARGATE and FARGATE_SPOT capacity) only, each isolated with
    /// its task-level CPU and memory as hard limits, and is never listed as
    /// a container instance.
    #[arg(long, conflicts_with = "capacity_provider")]
    fargate: bool,
    /// Capacity provider the instance (every simulated one, with
    /// --simulate) belongs to, as an EC2 instance belongs to its Auto
    /// Scaling group's. Tasks of a strategy naming it may be placed here.
    #[arg(long, value_name = "NAME", conflicts_with = "external")]
    capacity_provider: Option<String>,
    /// Memory kept back from tasks for the host itself.
    #[arg(long, default_value_t = 0)]
    memory_reserved_mib: u64,
    /// Port of the task metadata endpoint.
    #[arg(long, default_value_t = 51679)]
    metadata_port: u16,
    /// Image of awsvpc tasks' pause containers (made from the host's static busybox when missing).
    #[arg(long, default_value = "flotilla/pause:latest")]
    pause_image: String,
    /// default, always, once or prefer-cached, as ECS_IMAGE_PULL_BEHAVIOR.
    #[arg(long, default_value = "default")]
    image_pull_behavior: flotilla_agent::engine::PullBehavior,
    /// How long a stopped task's containers are kept before removal.
    #[arg(long, default_value_t = 3 * 60 * 60)]
    task_cleanup_wait_seconds: u64,
    /// Address bridge-mode containers reach the host at [default: the docker0 gateway].
    #[arg(long)]
    bridge_gateway: Option<String>,
    /// Run this many simulated instances (fake runtime) instead of one real one.
    #[arg(long)]
    simulate: Option<usize>,
    /// CPU units of each simulated instance.
    #[arg(long, default_value_t = 4096)]
    simulate_cpu: u64,
    /// Memory (MiB) of each simulated instance.
    #[arg(long, default_value_t = 16_384)]
    simulate_memory: u64,
    /// Availability zones of the simulated instances, round-robin.
    #[arg(long, value_delimiter = ',')]
    simulate_zones: Vec<String>,
    /// Instance types of the simulated instances, round-robin.
    #[arg(long, value_delimiter = ',')]
    simulate_instance_types: Vec<String>,
    /// How long each simulated container start takes.
    #[arg(long, default_value_t = 0)]
    simulate_start_delay_ms: u64,
    /// How often running tasks' CPU, memory and network use is sampled and
    /// reported to the control plane (for its CloudWatch metrics).
    #[arg(long, value_name = "MS", default_value_t = flotilla_types::acs::STATS_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(100..))]
    stats_interval_ms: u64,
}

#[derive(Args)]
struct ServerArgs {
    /// Address the API listens on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory of the embedded store, and of what is kept on local disk
    /// whatever the store [default: $HOME/.local/share/flotilla].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    store: store::StoreArgs,
    /// Region every ARN names and every signature must be scoped to
    /// [default: as the AWS CLI finds it: AWS_REGION, AWS_DEFAULT_REGION,
    /// the profile's region in the AWS config file, else us-east-1].
    #[arg(long)]
    region: Option<String>,
    /// Account id every ARN names.
    #[arg(long, default_value = "000000000000")]
    account_id: String,
    /// JSON file of accepted credentials:
    /// {"credentials": [{"accessKeyId": "...", "secretAccessKey": "...", "principalArn": "..."}]}.
    /// Without it, the local pair test/test is accepted.
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// File holding the 256-bit key (64 hex digits) that seals secret
    /// values at rest. Without it, DATA_DIR/secrets.key, made on first start.
    #[arg(long, value_name = "FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Silence after which an agent's connection is closed and its instance
    /// shown as agentConnected false. Hidden: for tests that cannot wait the
    /// default 30 s. It must exceed the agents' heartbeat interval, or live
    /// agents would be cut off between two heartbeats.
    #[arg(long, hide = true, default_value_t = flotilla_types::acs::HEARTBEAT_TIMEOUT_MS,
          value_parser = parse_agent_heartbeat_timeout_ms)]
    agent_heartbeat_timeout_ms: u64,
    /// Host (and port) that repository URIs name and clients push to
    /// [default: localhost:PORT of --listen; Docker speaks plain HTTP to localhost].
    #[arg(long)]
    registry_host: Option<String>,
    /// How often lifecycle policies are applied and unreferenced blobs collected.
    #[arg(long, hide = true, default_value_t = REGISTRY_MAINTENANCE_INTERVAL_MS)]
    registry_maintenance_interval_ms: u64,
    /// How long an instance's agent may stay disconnected before the service
    /// scheduler replaces its service tasks elsewhere. Hidden: for tests that
    /// cannot wait the default 5 minutes.
    #[arg(long, hide = true, default_value_t = flotilla_control::AGENT_LOST_TIMEOUT_MS)]
    service_agent_lost_timeout_ms: u64,
    /// How long a service task must stay healthy before it counts as
    /// healthy: before a deployment retires the old tasks it replaces, and
    /// before it completes. ECS waits 40 s after a task without a health
    /// check reaches RUNNING; shorten it for tests and demos.
    #[arg(long, value_name = "MS", default_value_t = flotilla_control::services::STABILIZATION_MS)]
    service_stabilization_ms: u64,
    /// How long one minute of a service deployment's bake times and
    /// lifecycle hook timeouts lasts. Hidden: for tests that cannot wait
    /// whole minutes between the steps of a linear or canary deployment.
    #[arg(long, hide = true, value_name = "MS", default_value_t = 60_000)]
    service_deployment_minute_ms: u64,
    /// Runs CloudWatch's and Application Auto Scaling's clock this many
    /// times faster than the wall clock, from the server's start: alarms
    /// are evaluated every 60/N s, a target tracking policy scales out after
    /// 3 of these minutes and in after 15, cooldowns shrink alike, and
    /// timestamps the CloudWatch API takes and returns are on this clock.
    /// For tests and demos only; 1 outside them.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    metrics_time_scale: u64,
    /// Lifetime of the credentials of tasks' roles (`taskRoleArn`,
    /// `executionRoleArn`); agents get fresh ones halfway through. Hidden:
    /// for tests of their renewal, which cannot wait an hour.
    #[arg(long, hide = true, default_value_t = flotilla_edge::task_roles::TASK_CREDENTIALS_DURATION_SECONDS_DEFAULT,
          value_parser = clap::value_parser!(i32).range(5..=43_200))]
    task_credentials_duration_seconds: i32,
    /// Carry no load balancer traffic in this process: `flotilla lb
    /// --control URL` hosts serve the ELBv2 load balancers instead.
    #[arg(long)]
    no_load_balancer_data_plane: bool,
    /// A host group, Flotilla's Auto Scaling group:
    /// `name=NAME,provider=docker|command|simulated,min=N,max=N[,desired=N][,cpu=UNITS][,memory=MIB]`,
    /// with `command=PATH` for the command provider and `image=IMAGE`,
    /// `simulated=true` for docker. A capacity provider whose
    /// autoScalingGroupArn ends in NAME scales it. Repeat for more.
    #[arg(long = "host-group", value_name = "SETTINGS")]
    host_groups: Vec<flotilla_hosts::HostGroup>,
    /// How often host groups are scaled. Hidden: for tests that cannot
    /// wait the default.
    #[arg(long, hide = true, default_value_t = HOST_SCALING_INTERVAL_MS)]
    host_scaling_interval_ms: u64,
}

/// How often host groups are scaled by their capacity providers.
const HOST_SCALING_INTERVAL_MS: u64 = 15_000;

/// `up`: the server's options and the local agent's.
#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Port of the local agent's task metadata endpoint.
    #[arg(long, default_value_t = flotilla_agent::host::DEFAULT_METADATA_PORT)]
    agent_metadata_port: u16,
    /// Port of the task metadata endpoint of the local Fargate host.
    #[arg(long, default_value_t = flotilla_agent::host::DEFAULT_METADATA_PORT + 1)]
    fargate_metadata_port: u16,
    /// Serve no Fargate tasks: start no local Fargate host.
    #[arg(long)]
    no_fargate: bool,
}

/// What `up` runs beside the control plane.
struct LocalAgent {
    metadata_port: u16,
    /// The local Fargate host's metadata port, unless `--no-fargate`.
    fargate_metadata_port: Option<u16>,
}

fn parse_agent_heartbeat_timeout_ms(text: &str) -> Result<u64, String> {
    let interval_ms = flotilla_types::acs::HEARTBEAT_INTERVAL_MS;
    match text.parse::<u64>() {
        Ok(timeout_ms) if timeout_ms > interval_ms => Ok(timeout_ms),
        Ok(_) => Err(format!(
            "must be more than the agents' heartbeat interval, {interval_ms} ms"
        )),
        Err(error) => Err(error.to_string()),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Server(args) => serve(args, None).await,
            Command::Up(args) => {
                let local = LocalAgent {
                    metadata_port: args.agent_metadata_port,
                    fargate_metadata_port: (!args.no_fargate).then_some(args.fargate_metadata_port),
                };
                serve(args.server, Some(local)).await
            }
            Command::Agent(args) => agent(args).await,
            Command::Placement(command) => placement::run(command).await,
            Command::Fargate(command) => fargate::run(command).await,
            Command::Lb(args) => lb::run(args).await,
            Command::Store(StoreCommand::Migrate(args)) => store::migrate(args).await,
            Command::Status(args) => status(args).await,
            Command::Service(command) => {
                let code = service::run(command).await?;
                if code != 0 {
                    std::process::exit(code);
                }
                Ok(())
            }
        }
    })
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_wanted(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything
/// (<https://no-color.org>): a log file or a pipe gets plain text.
fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// The region from `--region` or the user's AWS configuration.
fn resolve_region(flag: Option<&str>) -> Result<region::Region> {
    Ok(region::resolve(flag, &region::Surroundings::process())?)
}

/// Where the metrics clock starts. Scaled (`--metrics-time-scale` above 1),
/// it counts from the first start with that scale, kept in
/// `DATA_DIR/metrics-clock.json`, so that a restart does not send it back
/// before the times it already stored (cooldowns, alarm states, datums).
fn metrics_clock_origin(data_dir: &std::path::Path, time_scale: u64) -> Result<u64> {
    let now_ms = SystemClock.now_ms();
    let path = data_dir.join("metrics-clock.json");
    if time_scale <= 1 {
        return Ok(now_ms);
    }
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(saved) = serde_json::from_str::<serde_json::Value>(&text) {
            if saved["timeScale"].as_u64() == Some(time_scale) {
                if let Some(origin_ms) = saved["originMs"].as_u64() {
                    return Ok(origin_ms);
                }
            }
        }
    }
    let saved = serde_json::json!({"timeScale": time_scale, "originMs": now_ms});
    std::fs::write(&path, saved.to_string())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(now_ms)
}

/// Longest wait at start for the replica's etcd lease.
const LEASE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// How long acknowledged PutMetricData may wait for its fsync: a kill -9
/// loses at most this much of it.
const METRICS_FSYNC_INTERVAL_MS: i64 = 1_000;

fn default_data_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/flotilla")
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialsFile {
    credentials: Vec<CredentialEntry>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialEntry {
    access_key_id: String,
    secret_access_key: String,
    principal_arn: Option<String>,
}

/// The accepted credentials and the principal each acts as.
fn load_credentials(path: Option<&Path>) -> Result<(Credentials, HashMap<String, String>)> {
    let entries = match path {
        None => vec![CredentialEntry {
            access_key_id: flotilla_edge::DEFAULT_ACCESS_KEY_ID.to_owned(),
            secret_access_key: flotilla_edge::DEFAULT_SECRET_ACCESS_KEY.to_owned(),
            principal_arn: None,
        }],
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading credentials file {}", path.display()))?;
            let file: CredentialsFile = serde_json::from_str(&text)
                .with_context(|| format!("parsing credentials file {}", path.display()))?;
            file.credentials
        }
    };
    let principals = entries
        .iter()
        .filter_map(|e| {
            e.principal_arn
                .clone()
                .map(|arn| (e.access_key_id.clone(), arn))
        })
        .collect();
    let pairs = entries
        .into_iter()
        .map(|e| (e.access_key_id, e.secret_access_key));
    let credentials = Credentials::from_pairs(pairs).context("loading credentials")?;
    Ok((credentials, principals))
}

async fn serve(args: ServerArgs, local_agent: Option<LocalAgent>) -> Result<()> {
    let region = resolve_region(args.region.as_deref())?;
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    let opened = store::open_replica(
        &args.store,
        &data_dir,
        address.to_string(),
        format!("http://{address}"),
    )
    .await?;
    let store: Arc<dyn Store> = opened.store;
    let election = opened.election;
    // Writes are refused until the replica holds its lease: wait for it
    // before anything below writes.
    let lease_deadline = tokio::time::Instant::now() + LEASE_WAIT_MAX;
    while !election.reachable() {
        if tokio::time::Instant::now() >= lease_deadline {
            anyhow::bail!("no etcd lease granted in {LEASE_WAIT_MAX:?}; is etcd's quorum up?");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let scope = Scope::new(&region.name, &args.account_id);
    let metrics_dir = data_dir.join("metrics");
    let started_ms = metrics_clock_origin(&data_dir, args.metrics_time_scale)?;
    let metrics_store = flotilla_metrics::MetricStore::open(
        &metrics_dir,
        flotilla_metrics::Durability::IntervalMs(METRICS_FSYNC_INTERVAL_MS),
        flotilla_metrics::StoreLimits::default(),
        flotilla_control::cloudwatch::scaled_time_ms(
            started_ms,
            args.metrics_time_scale,
            SystemClock.now_ms(),
        ),
    )
    .map_err(|error| {
        anyhow::anyhow!(
            "opening the metrics store in {}: {error}",
            metrics_dir.display()
        )
    })?;
    // Agents reach the agent channel at the API's own address.
    let ecs = Arc::new(
        Ecs::new(
            Arc::clone(&store),
            scope,
            Arc::new(SystemClock),
            Arc::new(RandomIds),
        )
        .with_advertised_endpoint(format!("http://{address}"))
        .with_election(Arc::clone(&election))
        .with_metrics(flotilla_control::cloudwatch::Metrics::new(
            metrics_store,
            args.metrics_time_scale,
            started_ms,
        )),
    );
    let (credentials, principals) = load_credentials(args.credentials_file.as_deref())?;
    // No agent connection outlives the process that held it. Replicas on
    // one etcd leave the connections alone: they may be another replica's.
    if !election.replicated() {
        ecs.reset_agent_connections()
            .await
            .map_err(|error| anyhow::anyhow!("resetting agent connections: {error}"))?;
    }
    let supervisor = ecs.supervisor().clone();
    // The loops below that write shared state run on one replica at a
    // time, the one that leads them; logs maintenance works on this
    // replica's own disk and runs everywhere.
    supervisor.spawn_led("collect_retained", Arc::clone(&election), {
        let ecs = Arc::clone(&ecs);
        move || collect_periodically(Arc::clone(&ecs))
    });
    let registry_host = args
        .registry_host
        .clone()
        .unwrap_or_else(|| format!("localhost:{}", address.port()));
    let registry_dir = data_dir.join("registry");
    let registry = Arc::new(
        flotilla_registry::Registry::open(
            Arc::clone(&store),
            Scope::new(&region.name, &args.account_id),
            &registry_dir,
            registry_host.clone(),
        )
        .map_err(|error| {
            anyhow::anyhow!(
                "opening the registry in {}: {error}",
                registry_dir.display()
            )
        })?,
    );
    supervisor.spawn_led("registry_maintenance", Arc::clone(&election), {
        let registry = Arc::clone(&registry);
        let period = std::time::Duration::from_millis(args.registry_maintenance_interval_ms.max(1));
        move || maintain_registry(Arc::clone(&registry), period)
    });
    let scheduler_settings = flotilla_control::SchedulerSettings {
        agent_lost_timeout_ms: args.service_agent_lost_timeout_ms,
        stabilization_ms: args.service_stabilization_ms,
        deployment_minute_ms: args.service_deployment_minute_ms.max(1),
        ..Default::default()
    };
    ecs.start_service_scheduler(scheduler_settings);
    let scaler = Arc::clone(&ecs);
    ecs.supervisor()
        .spawn_led("autoscaling", Arc::clone(&election), move || {
            Arc::clone(&scaler).run_autoscaling()
        });
    hosts::start(
        &ecs,
        Arc::clone(&election),
        args.host_groups.clone(),
        &region.name,
        &format!("http://{address}"),
        data_dir.clone(),
        std::time::Duration::from_millis(args.host_scaling_interval_ms.max(100)),
    )?;
    if let Some(local) = local_agent {
        ensure_default_cluster(&ecs).await?;
        start_local_agent(
            &supervisor,
            format!("http://{address}"),
            &args,
            &region.name,
            local.metadata_port,
            false,
            data_dir.join("agent"),
        );
        // A second instance on the same engine serves the default cluster's
        // FARGATE and FARGATE_SPOT tasks; users never see it.
        if let Some(port) = local.fargate_metadata_port {
            start_local_agent(
                &supervisor,
                format!("http://{address}"),
                &args,
                &region.name,
                port,
                true,
                data_dir.join("fargate-agent"),
            );
        }
    }
    let logs_dir = data_dir.join("logs");
    let logs = Arc::new(flotilla_logs::LogsService {
        store: flotilla_logs::LogStore::open(&logs_dir).map_err(|error| {
            anyhow::anyhow!("opening the logs store in {}: {error}", logs_dir.display())
        })?,
        region: region.name.clone(),
        account_id: ecs.scope().account_id.clone(),
    });
    let maintained = Arc::clone(&logs);
    ecs.supervisor().spawn("logs_maintenance", move || {
        maintain_logs(Arc::clone(&maintained), LOGS_MAINTENANCE_INTERVAL)
    });
    let secrets = Arc::new(open_secrets(
        Arc::clone(&store),
        &data_dir,
        args.secrets_key_file.as_deref(),
        Scope::new(&region.name, &args.account_id),
    )?);
    let purged = Arc::clone(&secrets);
    ecs.supervisor()
        .spawn_led("secrets_maintenance", Arc::clone(&election), move || {
            purge_secrets(Arc::clone(&purged), SECRETS_MAINTENANCE_INTERVAL)
        });
    let iam = Arc::new(flotilla_iam::Iam::new(
        Arc::clone(&store),
        ecs.scope().account_id.clone(),
    ));
    let elbv2 = lb::start_embedded_data_plane(
        &supervisor,
        &ecs,
        Arc::clone(&iam),
        Arc::clone(&store),
        Scope::new(&region.name, &args.account_id),
        !args.no_load_balancer_data_plane,
    )?;
    let collected = Arc::clone(&iam);
    supervisor.spawn_led("iam_sessions", Arc::clone(&election), move || {
        collect_iam_sessions(Arc::clone(&collected), IAM_SESSIONS_COLLECT_INTERVAL)
    });
    let s3_dir = data_dir.join("s3");
    let s3 = flotilla_s3::S3::open(Arc::clone(&store), &s3_dir, &region.name).map_err(|error| {
        anyhow::anyhow!("opening the object store in {}: {error}", s3_dir.display())
    })?;
    let edge = Arc::new(Edge {
        ecs,
        credentials: Arc::new(credentials),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
        metrics: Metrics::default(),
        principals,
        store: Arc::clone(&store),
        agent_heartbeat_timeout_ms: args.agent_heartbeat_timeout_ms,
        registry: Some(registry),
        logs: Some(logs),
        secrets: Some(secrets),
        elbv2: Some(elbv2),
        iam,
        s3: Some(Arc::new(s3)),
        task_credentials_duration_seconds: args.task_credentials_duration_seconds,
    });
    tracing::info!(%address, data_dir = %data_dir.display(), region = %region.name, region_from = %region.source, "flotilla is serving");
    println!("Flotilla is serving the ECS API at http://{address}");
    println!(
        "It serves region {} (from {}); requests signed for another region are refused",
        region.name, region.source
    );
    println!("Its image registry is {registry_host} (aws ecr get-login-password | docker login --username AWS --password-stdin {registry_host})");
    if args.credentials_file.is_none() {
        println!("Point the AWS CLI at it:");
        println!(
            "  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION={}",
            region.name
        );
        println!("  aws --endpoint-url http://{address} ecs list-clusters");
    }
    axum::serve(
        listener,
        flotilla_edge::router(edge).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving the API")?;
    // Hand the singleton loops to another replica now rather than when the
    // lease runs out.
    election.resign().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Secrets Manager and Parameter Store over the store, sealing values with
/// the operator's key file or the data directory's own.
fn open_secrets(
    store: Arc<dyn Store>,
    data_dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    scope: Scope,
) -> Result<flotilla_secrets::Services> {
    let sealer = match key_file {
        Some(path) => flotilla_secrets::Sealer::from_key_file(path),
        None => flotilla_secrets::Sealer::open_or_create(data_dir),
    }
    .context("loading the key that seals secret values")?;
    Ok(flotilla_secrets::Services::new(
        store,
        Arc::new(sealer),
        scope,
    ))
}

/// How often secrets past their recovery window are removed from the store.
const SECRETS_MAINTENANCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

async fn purge_secrets(secrets: Arc<flotilla_secrets::Services>, period: std::time::Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now_ms = flotilla_control::Clock::now_ms(&SystemClock);
        match secrets.manager.purge_expired(now_ms).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "removed secrets past their recovery window"),
            Err(error) => tracing::warn!(%error, "secrets maintenance failed"),
        }
    }
}

/// Runs an agent for this machine beside the control plane. A machine without
/// a container engine still gets a working control plane: the agent's failure
/// is logged, not fatal, and ends the agent; only a panic restarts it.
fn start_local_agent(
    supervisor: &flotilla_control::Supervisor,
    endpoint: String,
    args: &ServerArgs,
    region: &str,
    metadata_port: u16,
    fargate: bool,
    data_dir: PathBuf,
) {
    let mut config = flotilla_agent::AgentConfig::new(endpoint, "default".to_owned(), data_dir);
    config.region = region.to_owned();
    config.metadata_port = metadata_port;
    config.fargate = fargate;
    // With a credentials file, the local agent signs with the caller's own
    // environment credentials, as a remote agent would.
    let from_env = |name: &str, default: &str| match &args.credentials_file {
        Some(_) => std::env::var(name).unwrap_or_else(|_| default.to_owned()),
        None => default.to_owned(),
    };
    config.access_key_id = from_env("AWS_ACCESS_KEY_ID", flotilla_edge::DEFAULT_ACCESS_KEY_ID);
    config.secret_access_key = from_env(
        "AWS_SECRET_ACCESS_KEY",
        flotilla_edge::DEFAULT_SECRET_ACCESS_KEY,
    );
    // A local machine builds its images itself; a registry may not be reachable.
    config.pull_behavior = flotilla_agent::PullBehavior::PreferCached;
    let name = if config.fargate {
        "local_fargate_agent"
    } else {
        "local_agent"
    };
    supervisor.spawn(name, move || {
        let config = config.clone();
        async move {
            match flotilla_agent::run(config).await {
                Ok(exit) => tracing::info!(?exit, "local agent ended"),
                Err(error) => {
                    tracing::error!(%error, "local agent failed; the control plane keeps serving")
                }
            }
        }
    });
}

/// How often STS sessions past their expiry are removed from the store
/// (they stop working at their expiry regardless).
const IAM_SESSIONS_COLLECT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

async fn collect_iam_sessions(iam: Arc<flotilla_iam::Iam>, period: std::time::Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now_ms = flotilla_control::Clock::now_ms(&SystemClock);
        match iam.collect_expired_sessions(now_ms).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "expired STS sessions removed"),
            Err(error) => tracing::warn!(%error, "removing expired STS sessions failed"),
        }
    }
}

/// How often the logs store expires events past their retention and
/// reclaims the space of deleted and expired events.
const LOGS_MAINTENANCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

async fn maintain_logs(logs: Arc<flotilla_logs::LogsService>, period: std::time::Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now_ms = flotilla_control::Clock::now_ms(&SystemClock) as i64;
        let logs = Arc::clone(&logs);
        match tokio::task::spawn_blocking(move || logs.store.maintain(now_ms)).await {
            Ok(Ok(report)) if report.bytes_reclaimed > 0 => {
                tracing::info!(?report, "logs maintenance reclaimed space");
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "logs maintenance failed"),
            Err(error) => tracing::error!(%error, "logs maintenance panicked"),
        }
    }
}

/// How often the registry applies lifecycle policies and collects garbage.
const REGISTRY_MAINTENANCE_INTERVAL_MS: u64 = 10 * 60 * 1000;

async fn maintain_registry(
    registry: Arc<flotilla_registry::Registry>,
    period: std::time::Duration,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now_ms = flotilla_control::Clock::now_ms(&SystemClock);
        if let Err(error) = registry.apply_lifecycle_policies(now_ms).await {
            tracing::warn!(%error, "applying lifecycle policies failed");
        }
        if let Err(error) = registry
            .collect_garbage(now_ms, flotilla_registry::LAYER_LINK_GRACE_MS)
            .await
        {
            tracing::warn!(%error, "registry garbage collection failed");
        }
    }
}

/// How often stopped tasks, deregistered instances, inactive services and
/// deleted capacity providers past their retention are deleted.
const COLLECT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

async fn collect_periodically(ecs: Arc<Ecs>) {
    let mut interval = tokio::time::interval(COLLECT_INTERVAL);
    loop {
        interval.tick().await;
        if let Err(error) = ecs.collect_stopped_tasks().await {
            tracing::warn!(%error, "collecting stopped tasks failed");
        }
        if let Err(error) = ecs.collect_deregistered_instances().await {
            tracing::warn!(%error, "collecting deregistered instances failed");
        }
        if let Err(error) = ecs.collect_inactive_services().await {
            tracing::warn!(%error, "collecting inactive services failed");
        }
        if let Err(error) = ecs.collect_run_tokens().await {
            tracing::warn!(%error, "collecting RunTask client tokens failed");
        }
        if let Err(error) = ecs.collect_inactive_capacity_providers().await {
            tracing::warn!(%error, "collecting deleted capacity providers failed");
        }
    }
}

async fn agent(args: AgentArgs) -> Result<()> {
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| default_data_dir().join("agent"));
    let mut config =
        flotilla_agent::AgentConfig::new(args.endpoint.join(","), args.cluster, data_dir);
    let region = resolve_region(args.region.as_deref())?;
    tracing::info!(region = %region.name, region_from = %region.source, "signing for region");
    config.region = region.name;
    config.access_key_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".to_owned());
    config.secret_access_key =
        std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".to_owned());
    config.availability_zone = args.availability_zone;
    config.instance_type = args.instance_type;
    config.attributes = args.attributes;
    config.external = args.external;
    config.fargate = args.fargate;
    config.capacity_provider = args.capacity_provider;
    config.memory_mib_reserved = args.memory_reserved_mib;
    config.metadata_port = args.metadata_port;
    config.pause_image = args.pause_image;
    config.pull_behavior = args.image_pull_behavior;
    config.task_cleanup_wait = std::time::Duration::from_secs(args.task_cleanup_wait_seconds);
    config.bridge_gateway = args.bridge_gateway;
    config.stats_interval = std::time::Duration::from_millis(args.stats_interval_ms);
    let work = async move {
        match args.simulate {
            Some(instances) => {
                let simulation = flotilla_agent::SimulationConfig {
                    instances,
                    cpu_units: args.simulate_cpu,
                    memory_mib: args.simulate_memory,
                    zones: args.simulate_zones,
                    instance_types: args.simulate_instance_types,
                    start_delay_ms: args.simulate_start_delay_ms,
                };
                flotilla_agent::run_simulated(config, simulation).await
            }
            None => flotilla_agent::run(config)
                .await
                .map(|exit| tracing::info!(?exit, "agent finished")),
        }
    };
    tokio::select! {
        result = work => result.context("running the agent")?,
        // Containers keep running; the next start re-adopts them.
        () = shutdown_signal() => {}
    }
    Ok(())
}

/// `flotilla status`: each replica's `/health`, as a table.
async fn status(args: StatusArgs) -> Result<()> {
    println!("{:<28} {:<18} {:<6} LEADS", "REPLICA", "STATUS", "STORE");
    let mut answered = 0;
    for endpoint in &args.endpoint {
        match get_health(endpoint).await {
            Ok(health) => {
                answered += 1;
                let leads: Vec<&str> = health["leads"]
                    .as_array()
                    .map(|leads| leads.iter().filter_map(|lead| lead.as_str()).collect())
                    .unwrap_or_default();
                println!(
                    "{:<28} {:<18} {:<6} {}",
                    endpoint,
                    health["status"].as_str().unwrap_or("?"),
                    if health["storeReachable"] == true {
                        "ok"
                    } else {
                        "lost"
                    },
                    leads.join(",")
                );
            }
            Err(error) => println!(
                "{endpoint:<28} {:<18} {:<6} -",
                format!("down ({error})"),
                "-"
            ),
        }
    }
    if answered == 0 {
        anyhow::bail!("no replica answered");
    }
    // Every replica shares the store's view of the others and the leaders.
    for endpoint in &args.endpoint {
        if let Ok(health) = get_health(endpoint).await {
            if let Some(replicas) = health["replicas"].as_object() {
                println!("\nReplicas in the store:");
                for (id, address) in replicas {
                    println!("  {id:<28} {}", address.as_str().unwrap_or(""));
                }
            }
            if let Some(leaders) = health["leaders"].as_object() {
                println!("Leaders:");
                for (role, replica) in leaders {
                    println!("  {role:<28} {}", replica.as_str().unwrap_or(""));
                }
            }
            break;
        }
    }
    Ok(())
}

/// GET ENDPOINT/health as JSON, whatever its status code.
async fn get_health(endpoint: &str) -> Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = endpoint
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{endpoint} is not an http:// URL"))?;
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))??;
    let request = format!("GET /health HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut response),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))??;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(serde_json::from_str(body.trim())?)
}

/// The local machine gets the cluster ECS users expect to find.
async fn ensure_default_cluster(ecs: &Ecs) -> Result<()> {
    let local = Caller {
        access_key_id: flotilla_edge::DEFAULT_ACCESS_KEY_ID.to_owned(),
        principal_arn: format!("arn:aws:iam::{}:root", ecs.scope().account_id),
    };
    let request = flotilla_types::ecs::EcsRequest::CreateCluster(Default::default());
    ecs.handle(&local, request)
        .await
        .map_err(|error| anyhow::anyhow!("creating the default cluster: {error}"))?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour_wanted;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        // An empty NO_COLOR is no request, as no-color.org defines it.
        assert!(colour_wanted(true, Some(OsStr::new(""))));
    }
}
