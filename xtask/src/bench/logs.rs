//! `cargo xtask bench logs [--seconds N] [--events M]`: the CloudWatch Logs
//! store, against the local peers a user has.
//!
//! ```text
//! ingest (API)      flotilla server; 16 clients, each its own stream, PutLogEvents
//!                   batches of 1,000 lines of 100 bytes, signed, for N seconds
//! ingest (engine)   the same batches straight into LogStore::put from 16 threads
//! peer: fsync file  16 threads appending the same lines, as Docker's json-file
//!                   driver frames them, to one file, fdatasync after every batch
//! peer: docker      a container printing the same number of lines through
//!                   Docker's json-file driver (not fsynced), minus an empty run
//! filter            M events (default 10 M) over 16 streams, 1 per ms; FilterLogEvents
//!                   over a 1% time range with a term pattern, paged to the end,
//!                   through LogsService::handle; peer: grep -c over the same lines
//! agent             the agent's CPU with and without awslogs for a container
//!                   printing 10,000 lines a second (`logs_agent.rs`)
//! ```
//!
//! Every figure is a JSON line with `"bench":"logs"`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use flotilla_aws::logs::LogsRequest;
use flotilla_logs::{LogStore, LogsService};
use flotilla_sigv4::{sha256_hex, sign, PayloadSigning, RequestParts, SigningParams};
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use serde_json::{json, Value};

use super::servers::{self, TempDir};

pub const USAGE: &str =
    "usage: cargo xtask bench logs [--seconds N] [--events M] [--only ingest|filter|agent]";
const SIGNING: SigningParams<'static> = SigningParams {
    access_key_id: "test",
    secret_access_key: "test",
    region: "us-east-1",
    service: "logs",
};
const CLIENTS: usize = 16;
const BATCH_EVENTS: usize = 1_000;
const LINE_BYTES: usize = 100;
const GROUP: &str = "bench";
const SECONDS_MAX: u64 = 600;
const EVENTS_MAX: u64 = 100_000_000;
/// Events per put while loading the filter data set (AWS's batch maximum).
const LOAD_BATCH_EVENTS: usize = 10_000;

pub struct Options {
    seconds: u64,
    events: u64,
    /// Runs one case only.
    only: Option<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            seconds: 10,
            events: 10_000_000,
            only: None,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--seconds" => options.seconds = super::bounded(flag, value, 1, SECONDS_MAX)?,
                "--events" => options.events = super::bounded(flag, value, 100_000, EVENTS_MAX)?,
                "--only" if ["ingest", "filter", "agent"].contains(&value.as_str()) => {
                    options.only = Some(value.clone());
                }
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

#[allow(clippy::disallowed_methods)] // A client stamps events with the wall clock.
fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Line `index` of a client: 100 bytes, one in ten an ERROR.
fn line(client: usize, index: u64) -> String {
    let level = if index.is_multiple_of(10) {
        "ERROR"
    } else {
        "INFO "
    };
    let mut text = format!("{level} client={client:02} seq={index:012} ");
    while text.len() < LINE_BYTES {
        text.push('x');
    }
    text
}

fn signed(address: SocketAddr, operation: &str, body: &Bytes) -> Result<Request<Full<Bytes>>> {
    signed_with_hash(address, operation, body, sha256_hex(body).as_str())
}

fn signed_with_hash(
    address: SocketAddr,
    operation: &str,
    body: &Bytes,
    hash: &str,
) -> Result<Request<Full<Bytes>>> {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_str(&address.to_string())?);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    headers.insert(
        HeaderName::from_static("x-amz-target"),
        HeaderValue::from_str(&format!("Logs_20140328.{operation}"))?,
    );
    let parts = RequestParts {
        method: &Method::POST,
        path: "/",
        query: "",
        headers: &headers,
        body_sha256_hex: hash,
    };
    let signature = sign(
        &parts,
        &SIGNING,
        PayloadSigning::Signed,
        (unix_now_ms() / 1000) as u64,
    )
    .context("signing")?;
    let mut request = Request::new(Full::new(body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_static("/");
    *request.headers_mut() = headers;
    signature.insert_into(request.headers_mut());
    Ok(request)
}

fn call(address: SocketAddr, operation: &str, body: Value) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = Bytes::from(body.to_string());
    runtime.block_on(async {
        let mut sender = super::load::connect(address).await?;
        let (status, answer) =
            super::load::exchange(&mut sender, signed(address, operation, &body)?).await?;
        if status != StatusCode::OK {
            bail!("{operation}: {status} {}", String::from_utf8_lossy(&answer));
        }
        Ok(())
    })
}

fn cpu_cores(pid: u32, seconds_before: Option<f64>, elapsed: f64) -> Option<f64> {
    let after = servers::cpu_seconds(&pid.to_string())?;
    Some(super::round((after - seconds_before?) / elapsed, 2))
}

fn ingest_api(target_dir: &Path, seconds: u64) -> Result<()> {
    let logs_dir = TempDir::new("flotilla-bench-logs")?;
    let server = servers::start_flotilla(&target_dir.join("release/flotilla"), logs_dir.path())?;
    let address = server.address;
    call(address, "CreateLogGroup", json!({"logGroupName": GROUP}))?;
    for client in 0..CLIENTS {
        call(
            address,
            "CreateLogStream",
            json!({"logGroupName": GROUP, "logStreamName": format!("client-{client}")}),
        )?;
    }
    let events = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = servers::cpu_seconds(&server.pid().to_string());
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let events = Arc::clone(&events);
            let errors = Arc::clone(&errors);
            std::thread::spawn(move || -> Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                // One body per client, built and hashed once, so that the
                // generator (on the same two cores) spends its time sending.
                let now = unix_now_ms();
                let log_events: Vec<Value> = (0..BATCH_EVENTS as u64)
                    .map(|i| json!({"timestamp": now, "message": line(client, i)}))
                    .collect();
                let body = Bytes::from(
                    json!({"logGroupName": GROUP, "logStreamName": format!("client-{client}"), "logEvents": log_events})
                        .to_string(),
                );
                let hash = sha256_hex(&body);
                runtime.block_on(async {
                    let mut sender = super::load::connect(address).await?;
                    while Instant::now() < deadline {
                        let request =
                            signed_with_hash(address, "PutLogEvents", &body, hash.as_str())?;
                        match super::load::exchange(&mut sender, request).await {
                            Ok((StatusCode::OK, _)) => {
                                events.fetch_add(BATCH_EVENTS as u64, Ordering::Relaxed);
                            }
                            Ok((status, body)) => {
                                if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("PutLogEvents: {status} {}", String::from_utf8_lossy(&body));
                                }
                            }
                            Err(error) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                eprintln!("PutLogEvents: {error}");
                                sender = super::load::connect(address).await?;
                            }
                        }
                    }
                    Ok(())
                })
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow!("a client thread panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = events.load(Ordering::Relaxed) as f64;
    println!(
        "{}",
        json!({"bench": "logs", "case": "ingest", "path": "PutLogEvents over HTTP, signed, 16 clients", "durable": "fdatasync before each answer",
            "events": events, "errors": errors.load(Ordering::Relaxed), "seconds": super::round(elapsed, 2),
            "events_per_sec": (events / elapsed).round(), "mb_per_sec": super::round(events * LINE_BYTES as f64 / elapsed / 1e6, 1),
            "server_cpu_cores": cpu_cores(server.pid(), cpu_before, elapsed)})
    );
    Ok(())
}

fn ingest_engine(seconds: u64) -> Result<()> {
    let dir = TempDir::new("flotilla-bench-logs-engine")?;
    let store = Arc::new(LogStore::open(dir.path())?);
    let now = unix_now_ms();
    store.create_group(GROUP, Default::default(), now)?;
    for client in 0..CLIENTS {
        store.create_stream(GROUP, &format!("client-{client}"), now)?;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> Result<u64> {
                let stream = format!("client-{client}");
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let lines: Vec<String> = (0..BATCH_EVENTS as u64)
                        .map(|i| line(client, done + i))
                        .collect();
                    let now = unix_now_ms();
                    let events: Vec<(i64, &str)> =
                        lines.iter().map(|l| (now, l.as_str())).collect();
                    store.put(GROUP, &stream, &events, now)?;
                    done += BATCH_EVENTS as u64;
                }
                Ok(done)
            })
        })
        .collect();
    let mut events = 0u64;
    for thread in threads {
        events += thread
            .join()
            .map_err(|_| anyhow!("a writer thread panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "logs", "case": "ingest", "path": "LogStore::put in process, 16 threads", "durable": "fdatasync before each answer",
            "events": events, "seconds": super::round(elapsed, 2),
            "events_per_sec": (events as f64 / elapsed).round(), "mb_per_sec": super::round(events as f64 * LINE_BYTES as f64 / elapsed / 1e6, 1)})
    );
    Ok(())
}

/// A line framed as Docker's json-file driver writes it.
fn json_file_line(message: &str) -> String {
    format!(
        "{{\"log\":\"{message}\\n\",\"stream\":\"stdout\",\"time\":\"2026-06-01T00:00:00.000000000Z\"}}\n"
    )
}

fn ingest_fsync_file(seconds: u64) -> Result<()> {
    let dir = TempDir::new("flotilla-bench-logs-file")?;
    let path = dir.path().join("container-json.log");
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?,
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let file = Arc::clone(&file);
            std::thread::spawn(move || -> Result<u64> {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let mut buffer = String::with_capacity(BATCH_EVENTS * 180);
                    for i in 0..BATCH_EVENTS as u64 {
                        buffer.push_str(&json_file_line(&line(client, done + i)));
                    }
                    (&*file).write_all(buffer.as_bytes())?;
                    file.sync_data()?;
                    done += BATCH_EVENTS as u64;
                }
                Ok(done)
            })
        })
        .collect();
    let mut events = 0u64;
    for thread in threads {
        events += thread
            .join()
            .map_err(|_| anyhow!("a writer thread panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "logs", "case": "ingest", "path": "peer: json-file lines appended to one file, 16 threads, fdatasync per batch", "durable": "fdatasync before each batch returns",
            "events": events, "seconds": super::round(elapsed, 2),
            "events_per_sec": (events as f64 / elapsed).round(), "mb_per_sec": super::round(events as f64 * LINE_BYTES as f64 / elapsed / 1e6, 1)})
    );
    Ok(())
}

fn docker_run_seconds(name: &str, lines: u64) -> Result<f64> {
    let script = format!(
        "i=0; l={}; while [ $i -lt {lines} ]; do echo \"$l\"; i=$((i+1)); done",
        "x".repeat(LINE_BYTES)
    );
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", name])
        .output();
    let started = Instant::now();
    // Detached, so that the lines go only to the log driver, not also
    // through an attached client.
    let output = std::process::Command::new("docker")
        .args([
            "run",
            "--detach",
            "--name",
            name,
            "--log-driver",
            "json-file",
            "flotilla-test/busybox",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .context("running docker")?;
    if !output.status.success() {
        bail!(
            "docker run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = std::process::Command::new("docker")
        .args(["wait", name])
        .output()
        .context("waiting for the container")?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", name])
        .output();
    if !output.status.success() {
        bail!(
            "docker wait failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(elapsed)
}

fn ingest_docker() -> Result<()> {
    let lines = 1_000_000u64;
    let name = format!("flotilla-bench-logs-{}", std::process::id());
    let empty = docker_run_seconds(&name, 0)?;
    let full = docker_run_seconds(&name, lines)?;
    let seconds = (full - empty).max(0.001);
    println!(
        "{}",
        json!({"bench": "logs", "case": "ingest", "path": "peer: docker run --log-driver json-file, one container printing 1 M lines (busybox sh loop), minus an empty run", "durable": "no (json-file does not fsync)",
            "events": lines, "seconds": super::round(seconds, 2),
            "events_per_sec": (lines as f64 / seconds).round(), "mb_per_sec": super::round(lines as f64 * LINE_BYTES as f64 / seconds / 1e6, 1)})
    );
    Ok(())
}

fn filter(total_events: u64) -> Result<()> {
    let dir = TempDir::new("flotilla-bench-logs-filter")?;
    let service = LogsService {
        store: LogStore::open(dir.path())?,
        region: "us-east-1".into(),
        account_id: "000000000000".into(),
    };
    let now = unix_now_ms();
    // One event per millisecond, ending a minute ago.
    let t0 = now - total_events as i64 - 60_000;
    service.store.create_group(GROUP, Default::default(), now)?;
    for client in 0..CLIENTS {
        service
            .store
            .create_stream(GROUP, &format!("client-{client}"), now)?;
    }
    let flat_path = dir.path().join("lines.txt");
    let mut flat = std::io::BufWriter::new(std::fs::File::create(&flat_path)?);
    let loading = Instant::now();
    let per_client = total_events / CLIENTS as u64;
    let mut index = 0u64;
    // Streams take turns in blocks of 10,000 ms, so every stream spans the
    // whole range, as busy containers do.
    while index < per_client {
        for client in 0..CLIENTS {
            let count = LOAD_BATCH_EVENTS.min((per_client - index) as usize);
            let lines: Vec<String> = (0..count as u64).map(|i| line(client, index + i)).collect();
            let events: Vec<(i64, &str)> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let at = (index + i as u64) * CLIENTS as u64 + client as u64;
                    (t0 + at as i64, l.as_str())
                })
                .collect();
            service
                .store
                .put(GROUP, &format!("client-{client}"), &events, now)?;
            for l in &lines {
                flat.write_all(l.as_bytes())?;
                flat.write_all(b"\n")?;
            }
        }
        index += LOAD_BATCH_EVENTS as u64;
    }
    flat.flush()?;
    drop(flat);
    let loaded = per_client * CLIENTS as u64;
    eprintln!(
        "loaded {loaded} events in {:.1}s ({} bytes of segments)",
        loading.elapsed().as_secs_f64(),
        service.store.disk_bytes()?
    );
    // 1% of the range, in the middle.
    let span = loaded as i64;
    let start = t0 + span / 2;
    let end = start + span / 100 - 1;
    let started = Instant::now();
    let mut matched = 0u64;
    let mut calls = 0u64;
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"logGroupName": GROUP, "startTime": start, "endTime": end, "filterPattern": "ERROR"});
        if let Some(token) = &token {
            body["nextToken"] = json!(token);
        }
        let request = LogsRequest::decode("FilterLogEvents", body.to_string().as_bytes())
            .context("FilterLogEvents is an operation")?
            .map_err(|e| anyhow!("{e}"))?;
        let answer = service
            .handle(request, now)
            .map_err(|e| anyhow!("FilterLogEvents: {e}"))?;
        let answer = serde_json::to_value(answer)?;
        calls += 1;
        matched += answer["events"].as_array().map_or(0, Vec::len) as u64;
        match answer["nextToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    let filter_seconds = started.elapsed().as_secs_f64();
    let grep_started = Instant::now();
    let grep = std::process::Command::new("grep")
        .args(["-c", "ERROR"])
        .arg(&flat_path)
        .output()
        .context("running grep")?;
    let grep_seconds = grep_started.elapsed().as_secs_f64();
    let grep_count: u64 = String::from_utf8_lossy(&grep.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    println!(
        "{}",
        json!({"bench": "logs", "case": "filter", "events_stored": loaded, "time_range_share": 0.01, "pattern": "ERROR",
            "matched": matched, "calls": calls, "seconds": super::round(filter_seconds, 3),
            "path": "FilterLogEvents through LogsService::handle, paged with nextToken, warm page cache"})
    );
    println!(
        "{}",
        json!({"bench": "logs", "case": "filter", "path": "peer: grep -c ERROR over the same lines (whole file, grep has no time index)", "events_stored": loaded,
            "matched": grep_count, "seconds": super::round(grep_seconds, 3),
            "ratio_filter_over_grep": super::round(filter_seconds / grep_seconds.max(1e-9), 3)})
    );
    Ok(())
}

pub fn run(target_dir: &Path, options: &Options) -> Result<()> {
    let runs = |case: &str| options.only.as_deref().is_none_or(|only| only == case);
    if runs("ingest") {
        ingest_api(target_dir, options.seconds)?;
        ingest_engine(options.seconds)?;
        ingest_fsync_file(options.seconds)?;
        if let Err(error) = ingest_docker() {
            eprintln!("the docker json-file peer did not run: {error}");
        }
    }
    if runs("agent") {
        let binary = target_dir.join("release/flotilla");
        if let Err(error) = super::logs_agent::run(&binary, options.seconds.max(10)) {
            eprintln!("the agent's awslogs case did not run: {error}");
        }
    }
    if runs("filter") {
        filter(options.events)?;
    }
    Ok(())
}
