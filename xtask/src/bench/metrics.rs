//! `cargo xtask bench metrics [--minutes N] [--control-plane]`: the metrics
//! store in process or, with `--control-plane` (minutes of setup; run on
//! its own), the server's own cost of the agents' reports.
//!
//! ```text
//! ingest      PutMetricData batches of 1,000 datapoints, fsync every put and every second
//! query       10,000 series × a day of minutes; GetMetricData, 20 calls of 500 MetricStats
//! alarms      1,000 alarms evaluated over one minute's data
//! tasks       10,000 tasks (1,000 hosts × 10) sampled every 10 s for N virtual minutes:
//!             CPU seconds per virtual second (share of a core) and resident memory
//! control_plane  flotilla server + flotilla agent --simulate 1000, 10,000 tasks RUNNING
//!             in a cluster with Container Insights; the server's CPU over two minutes
//!             and its resident memory, once with reports every 10 s and once with none
//! ```
//!
//! No peer runs beside it: Debian's `prometheus` takes remote-write (snappy
//! protobuf, which xtask cannot encode without new dependencies) or
//! OpenMetrics backfill through promtool (an offline block builder, not an
//! ingest path), so the figures are absolute, next to the targets (10% of a
//! core, 100 MiB, 50 ms).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flotilla_metrics::alarm::{check_put_metric_alarm, evaluate, AlarmStatus, PutMetricAlarmInput};
use flotilla_metrics::metric_data::{
    get_metric_data, GetMetricDataInput, MetricDataQuery, MetricStat,
};
use flotilla_metrics::put::{check_put_metric_data, MetricDatumInput, PutMetricDataInput};
use flotilla_metrics::store::{Durability, MetricStore, StoreLimits};
use flotilla_metrics::Dimension;
use serde_json::{json, Value};

use super::load;
use super::runtask::{self, Api, CLUSTER};
use super::servers;

pub const USAGE: &str = "usage: cargo xtask bench metrics [--minutes N] [--control-plane]";
const T0: i64 = 1_717_372_800_000;
const MINUTE: i64 = 60_000;
const MINUTES_MAX: i64 = 1_440;

pub struct Options {
    minutes: i64,
    /// Whether to run the server with simulated agents instead.
    pub control_plane: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            minutes: 30,
            control_plane: false,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            if flag == "--control-plane" {
                options.control_plane = true;
                continue;
            }
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--minutes" => options.minutes = super::bounded(flag, value, 1, MINUTES_MAX)?,
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

fn datum(name: &str, dims: &[(&str, String)], at_ms: i64, value: f64) -> MetricDatumInput {
    MetricDatumInput {
        metric_name: name.into(),
        dimensions: dims
            .iter()
            .map(|(n, v)| Dimension::new(*n, v.clone()))
            .collect(),
        timestamp_ms: Some(at_ms),
        value: Some(value),
        ..Default::default()
    }
}

fn put(
    store: &mut MetricStore,
    namespace: &str,
    data: Vec<MetricDatumInput>,
    now: i64,
) -> Result<()> {
    let request = PutMetricDataInput {
        namespace: namespace.into(),
        metric_data: data,
    };
    let datums =
        check_put_metric_data(&request, now, true).map_err(|e| anyhow::anyhow!(e.message))?;
    store
        .put(&datums, now)
        .map_err(|e| anyhow::anyhow!(e.message))
}

fn self_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

fn ingest(durability: Durability, label: &str) -> Result<()> {
    let dir = tempdir()?;
    let mut store = MetricStore::open(&dir, durability, StoreLimits::default(), T0)?;
    let batches = 200;
    let started = Instant::now();
    for batch in 0..batches {
        let now = T0 + batch * 1_000;
        let data = (0..1_000)
            .map(|i| {
                datum(
                    "Latency",
                    &[("Service", format!("svc-{}", i % 100))],
                    now,
                    (i % 97) as f64,
                )
            })
            .collect();
        put(&mut store, "Bench", data, now)?;
        store.tick(now)?;
    }
    store.commit(T0 + batches * 1_000)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "metrics", "case": "ingest", "durability": label, "datapoints": batches * 1_000, "datapoints_per_sec": (batches as f64 * 1_000.0 / seconds).round(), "peer": null})
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("flotilla-bench-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn query() -> Result<()> {
    let mut store = MetricStore::in_memory(StoreLimits::default());
    let now = T0 + 1_440 * MINUTE;
    let started = Instant::now();
    for minute in 0..1_440 {
        for chunk in 0..10 {
            let data = (0..1_000)
                .map(|i| {
                    datum(
                        "CPUUtilization",
                        &[("ServiceName", format!("svc-{}", chunk * 1_000 + i))],
                        T0 + minute * MINUTE,
                        ((minute + i) % 100) as f64,
                    )
                })
                .collect();
            put(&mut store, "Bench", data, now)?;
        }
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut points = 0usize;
    for call in 0..20 {
        let queries = (0..500)
            .map(|i| MetricDataQuery {
                id: format!("m{i}"),
                metric_stat: Some(MetricStat {
                    namespace: "Bench".into(),
                    metric_name: "CPUUtilization".into(),
                    dimensions: vec![Dimension::new(
                        "ServiceName",
                        format!("svc-{}", call * 500 + i),
                    )],
                    period_s: 300,
                    stat: "Average".into(),
                    unit: None,
                }),
                ..Default::default()
            })
            .collect();
        let input = GetMetricDataInput {
            queries,
            start_time_ms: T0,
            end_time_ms: now,
            ..Default::default()
        };
        let output =
            get_metric_data(&store, &input, now).map_err(|e| anyhow::anyhow!(e.message))?;
        points += output.results.iter().map(|r| r.values.len()).sum::<usize>();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "metrics", "case": "get_metric_data", "series": 10_000, "points_per_series": 1_440, "load_datapoints_per_sec": (14_400_000.0 / load_seconds).round(), "calls": 20, "datapoints_returned": points, "seconds": (seconds * 1000.0).round() / 1000.0, "peer": null})
    );
    Ok(())
}

fn alarms() -> Result<()> {
    let mut store = MetricStore::in_memory(StoreLimits::default());
    let mut definitions = Vec::new();
    for service in 0..1_000 {
        let dims = [
            ("ClusterName", "prod".to_string()),
            ("ServiceName", format!("svc-{service}")),
        ];
        let data = (0..20)
            .map(|m| {
                datum(
                    "CPUUtilization",
                    &dims,
                    T0 + m * MINUTE,
                    (service % 100) as f64,
                )
            })
            .collect();
        put(&mut store, "AWS/ECS", data, T0 + 20 * MINUTE)?;
        let input = PutMetricAlarmInput {
            alarm_name: format!("a{service}"),
            metric_name: Some("CPUUtilization".into()),
            namespace: Some("AWS/ECS".into()),
            statistic: Some("Average".into()),
            dimensions: dims
                .iter()
                .map(|(n, v)| Dimension::new(*n, v.clone()))
                .collect(),
            period_s: Some(60),
            evaluation_periods: Some(if service % 2 == 0 { 3 } else { 15 }),
            threshold: Some(70.0),
            comparison_operator: Some("GreaterThanThreshold".into()),
            ..Default::default()
        };
        definitions
            .push(check_put_metric_alarm(&input, "arn").map_err(|e| anyhow::anyhow!(e.message))?);
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        for definition in &definitions {
            evaluate(
                definition,
                &AlarmStatus::created(T0),
                &store,
                T0 + 20 * MINUTE,
            )
            .map_err(|e| anyhow::anyhow!(e.message))?;
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        json!({"bench": "metrics", "case": "alarms", "alarms": 1_000, "milliseconds": (best * 1e5).round() / 100.0, "target_milliseconds": 50, "peer": null})
    );
    Ok(())
}

/// 10,000 tasks on 1,000 hosts, one batch per host every 10 s: per task,
/// AWS/ECS CPU and memory by service and by cluster, and Container
/// Insights' eight per-task metrics by service, family and cluster (28
/// datapoints per task sample). Every sample is stored, where the control
/// plane stores one a minute: an upper bound on the store's share.
fn tasks(minutes: i64) -> Result<()> {
    let dir = tempdir()?;
    let mut store = MetricStore::open(
        &dir,
        Durability::IntervalMs(1_000),
        StoreLimits::default(),
        T0,
    )?;
    let cpu_before = super::servers::cpu_seconds("self").unwrap_or(0.0);
    let started = Instant::now();
    let intervals = minutes * 6;
    let mut datapoints = 0u64;
    for interval in 0..intervals {
        let now = T0 + interval * 10_000;
        for host in 0..1_000 {
            let mut data = Vec::with_capacity(160);
            for slot in 0..10 {
                let task = host * 10 + slot;
                let cluster = format!("c{}", task % 10);
                let service = format!("s{}", task % 100);
                let value = ((task + interval) % 100) as f64;
                for (metric, dims) in [
                    (
                        "CPUUtilization",
                        vec![
                            ("ClusterName", cluster.clone()),
                            ("ServiceName", service.clone()),
                        ],
                    ),
                    (
                        "MemoryUtilization",
                        vec![
                            ("ClusterName", cluster.clone()),
                            ("ServiceName", service.clone()),
                        ],
                    ),
                    ("CPUUtilization", vec![("ClusterName", cluster.clone())]),
                    ("MemoryUtilization", vec![("ClusterName", cluster.clone())]),
                ] {
                    data.push(datum(metric, &dims, now, value));
                }
                if data.len() >= 40 {
                    datapoints += data.len() as u64;
                    put(&mut store, "AWS/ECS", std::mem::take(&mut data), now)?;
                }
            }
            let mut insights = Vec::with_capacity(240);
            for slot in 0..10 {
                let task = host * 10 + slot;
                let cluster = format!("c{}", task % 10);
                for metric in [
                    "CpuUtilized",
                    "CpuReserved",
                    "MemoryUtilized",
                    "MemoryReserved",
                    "NetworkRxBytes",
                    "NetworkTxBytes",
                    "StorageReadBytes",
                    "StorageWriteBytes",
                ] {
                    for dims in [
                        vec![
                            ("ClusterName", cluster.clone()),
                            ("ServiceName", format!("s{}", task % 100)),
                        ],
                        vec![
                            ("ClusterName", cluster.clone()),
                            ("TaskDefinitionFamily", format!("f{}", task % 50)),
                        ],
                        vec![("ClusterName", cluster.clone())],
                    ] {
                        insights.push(datum(metric, &dims, now, (task % 100) as f64));
                    }
                }
            }
            datapoints += insights.len() as u64;
            put(&mut store, "ECS/ContainerInsights", insights, now)?;
        }
        store.tick(now)?;
    }
    let cpu_seconds = super::servers::cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    let virtual_seconds = (intervals * 10) as f64;
    println!(
        "{}",
        json!({
            "bench": "metrics", "case": "tasks_every_10s", "tasks": 10_000, "virtual_minutes": minutes,
            "datapoints": datapoints, "series": store.series_count(),
            "core_share": (cpu_seconds / virtual_seconds * 10_000.0).round() / 10_000.0, "target_core_share": 0.10,
            "rss_mib": self_rss_mib().map(|m| m.round()), "target_rss_mib": 100,
            "wall_seconds": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0, "peer": null,
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Simulated hosts and tasks of the control plane case.
const HOSTS: usize = 1_000;
const TASKS_PER_HOST: usize = 10;
/// RunTask calls in flight while the tasks are placed.
const PLACING_THREADS: usize = 8;
const RUNNING_TIMEOUT: Duration = Duration::from_secs(600);
/// Two of the control plane's minute publications, and what it does between.
const MEASURED: Duration = Duration::from_secs(125);
/// Time for the first reports to arrive before the measurement starts.
const SETTLE: Duration = Duration::from_secs(15);
/// A stats interval no run lasts: the agents report nothing.
const NO_REPORTS_INTERVAL_MS: u64 = 86_400_000;

/// The server's CPU share and resident memory with 10,000 running tasks on
/// 1,000 simulated hosts reporting every `stats_interval_ms`.
fn control_plane_run(binary: &Path, log_dir: &Path, stats_interval_ms: u64) -> Result<Value> {
    let server = servers::start_flotilla(binary, log_dir)?;
    let api = Api {
        address: server.address,
    };
    api.call(
        "CreateCluster",
        json!({"clusterName": CLUSTER, "settings": [{"name": "containerInsights", "value": "enabled"}]}),
    )?;
    api.call(
        "RegisterTaskDefinition",
        json!({
            "family": "bench-metrics",
            "containerDefinitions": [{
                "name": "app", "image": "sim/cpu:50", "essential": true, "cpu": 16, "memory": 32,
            }],
        }),
    )?;
    let agent = runtask::start_agent(
        binary,
        log_dir,
        server.address,
        HOSTS,
        &[
            "--stats-interval-ms".to_owned(),
            stats_interval_ms.to_string(),
        ],
    )?;
    runtask::wait_ready(&api, HOSTS, &agent)?;
    // Ten per host: RunTask spread over instances, from a few threads.
    let calls = HOSTS * TASKS_PER_HOST / 10;
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..PLACING_THREADS)
            .map(|worker| {
                let api = &api;
                scope.spawn(move || -> Result<()> {
                    for _ in (worker..calls).step_by(PLACING_THREADS) {
                        api.call(
                            "RunTask",
                            json!({
                                "cluster": CLUSTER, "taskDefinition": "bench-metrics", "count": 10,
                                "placementStrategy": [{"type": "spread", "field": "instanceId"}],
                            }),
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a RunTask thread panicked"))??;
        }
        Ok(())
    })?;
    let began = Instant::now();
    loop {
        let cluster = api.call("DescribeClusters", json!({"clusters": [CLUSTER]}))?;
        let running = cluster["clusters"][0]["runningTasksCount"]
            .as_u64()
            .unwrap_or(0);
        if running as usize >= HOSTS * TASKS_PER_HOST {
            break;
        }
        if began.elapsed() > RUNNING_TIMEOUT {
            bail!("only {running} tasks RUNNING after {RUNNING_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(SETTLE);
    let pid = server.pid().to_string();
    let before = servers::cpu_seconds(&pid).context("reading the server's CPU time")?;
    let started = Instant::now();
    std::thread::sleep(MEASURED);
    let cpu = servers::cpu_seconds(&pid).context("reading the server's CPU time")? - before;
    let seconds = started.elapsed().as_secs_f64();
    // What the minutes published: Container Insights' metrics of the
    // cluster (the first page, up to 500).
    let (_, listed) = load::query_once(
        server.address,
        "monitoring",
        "Action=ListMetrics&Version=2010-08-01&Namespace=ECS%2FContainerInsights",
    )?;
    let insights_metrics = String::from_utf8_lossy(&listed)
        .matches("<MetricName>")
        .count();
    Ok(json!({
        "stats_interval_ms": stats_interval_ms,
        "core_share": super::round(cpu / seconds, 4),
        "rss_mib": process_rss_mib(&pid).map(f64::round),
        "insights_metrics_listed": insights_metrics,
    }))
}

fn process_rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// The control plane's share of the agents' reports: the server with and
/// without them, the difference being what they cost.
fn control_plane(target_dir: &Path) -> Result<()> {
    let (binary, build) = match target_dir.join("release/flotilla") {
        release if release.exists() => (release, "release"),
        _ => (target_dir.join("debug/flotilla"), "debug"),
    };
    let log_dir = target_dir.join("bench");
    let without = control_plane_run(&binary, &log_dir, NO_REPORTS_INTERVAL_MS)?;
    let with = control_plane_run(&binary, &log_dir, 10_000)?;
    let share = |run: &Value| run["core_share"].as_f64().unwrap_or(0.0);
    let rss = |run: &Value| run["rss_mib"].as_f64().unwrap_or(0.0);
    println!(
        "{}",
        json!({
            "bench": "metrics", "case": "control_plane", "build": build,
            "hosts": HOSTS, "tasks": HOSTS * TASKS_PER_HOST,
            "with_reports": with, "without_reports": without,
            "reports_core_share": super::round(share(&with) - share(&without), 4), "target_core_share": 0.10,
            "reports_rss_mib": super::round(rss(&with) - rss(&without), 0), "target_rss_mib": 100,
            "peer": null,
        })
    );
    Ok(())
}

pub fn run(target_dir: &Path, options: &Options) -> Result<()> {
    if options.control_plane {
        return control_plane(target_dir);
    }
    // The task sampling case runs first, in a fresh process' memory.
    tasks(options.minutes)?;
    ingest(Durability::IntervalMs(1_000), "fsync_every_second")?;
    ingest(Durability::EveryPut, "fsync_every_put")?;
    alarms()?;
    query()?;
    Ok(())
}
