//! `bench logs`' agent case: the CPU the agent spends shipping a container's
//! output with the awslogs driver.
//!
//! ```text
//! flotilla server + flotilla agent (real Docker), one busybox container
//! printing 10,000 lines of 100 bytes a second (a burst, then a second's sleep)
//!   run 1: logConfiguration json-file   ─▶ agent CPU seconds over N seconds
//!   run 2: logConfiguration awslogs     ─▶ agent CPU seconds over N seconds
//! extra = run 2 − run 1, as a share of one core (target: under 5%)
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use flotilla_sigv4::{sha256_hex, sign, PayloadSigning, RequestParts, SigningParams};
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use serde_json::{json, Value};

use super::servers::{self, TempDir};

const LINES_PER_SECOND: u64 = 10_000;
const LINE_BYTES: usize = 100;
const CLUSTER: &str = "bench-awslogs";
const GROUP: &str = "/bench/awslogs";
const IMAGE: &str = "flotilla-test/busybox";
/// How long the agent, and then each task, get to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Left after a task is RUNNING before measuring, so that start-up costs
/// are not counted.
const SETTLE: Duration = Duration::from_secs(3);

struct Agent {
    child: Child,
    _data_dir: TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::disallowed_methods)] // A client signs with the wall clock.
fn unix_now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// One signed JSON call; the answer's body.
fn call(address: SocketAddr, service: &'static str, target: &str, body: Value) -> Result<Value> {
    let body = Bytes::from(body.to_string());
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_str(&address.to_string())?);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    headers.insert(
        HeaderName::from_static("x-amz-target"),
        HeaderValue::from_str(target)?,
    );
    let hash = sha256_hex(&body);
    let parts = RequestParts {
        method: &Method::POST,
        path: "/",
        query: "",
        headers: &headers,
        body_sha256_hex: hash.as_str(),
    };
    let params = SigningParams {
        access_key_id: "test",
        secret_access_key: "test",
        region: "us-east-1",
        service,
    };
    let signature =
        sign(&parts, &params, PayloadSigning::Signed, unix_now_seconds()).context("signing")?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_static("/");
    *request.headers_mut() = headers;
    signature.insert_into(request.headers_mut());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, answer) = runtime.block_on(async {
        let mut sender = super::load::connect(address).await?;
        super::load::exchange(&mut sender, request).await
    })?;
    if status != StatusCode::OK {
        bail!("{target}: {status} {}", String::from_utf8_lossy(&answer));
    }
    Ok(serde_json::from_slice(&answer).unwrap_or(Value::Null))
}

fn ecs(address: SocketAddr, operation: &str, body: Value) -> Result<Value> {
    call(
        address,
        "ecs",
        &format!("AmazonEC2ContainerServiceV20141113.{operation}"),
        body,
    )
}

fn logs(address: SocketAddr, operation: &str, body: Value) -> Result<Value> {
    call(address, "logs", &format!("Logs_20140328.{operation}"), body)
}

fn wait_for(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if done()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("{what} did not happen within {READY_TIMEOUT:?}")
}

fn start_agent(binary: &Path, address: SocketAddr, log_dir: &Path) -> Result<Agent> {
    let data_dir = TempDir::new("flotilla-bench-agent")?;
    let metadata_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let stderr = std::fs::File::create(log_dir.join("agent.stderr.log"))?;
    let child = Command::new(binary)
        .args(["agent", "--endpoint", &format!("http://{address}")])
        .args(["--cluster", CLUSTER, "--data-dir"])
        .arg(data_dir.path())
        .args(["--metadata-port", &metadata_port.to_string()])
        .args(["--image-pull-behavior", "prefer-cached"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("starting flotilla agent")?;
    Ok(Agent {
        child,
        _data_dir: data_dir,
    })
}

/// Runs the printing task with `log_configuration` for `seconds` and tells
/// the agent's CPU seconds over that time.
fn measure(
    address: SocketAddr,
    agent_pid: u32,
    family: &str,
    log_configuration: Value,
    seconds: u64,
) -> Result<(f64, f64, String)> {
    let line = "x".repeat(LINE_BYTES - 1);
    let script = format!("while true; do yes {line} | head -n {LINES_PER_SECOND}; sleep 1; done");
    ecs(
        address,
        "RegisterTaskDefinition",
        json!({"family": family, "containerDefinitions": [{
            "name": "printer", "image": IMAGE, "memory": 64, "essential": true,
            "command": ["sh", "-c", script], "logConfiguration": log_configuration}]}),
    )?;
    let answer = ecs(
        address,
        "RunTask",
        json!({"cluster": CLUSTER, "taskDefinition": family}),
    )?;
    let task_arn = answer["tasks"][0]["taskArn"]
        .as_str()
        .context("RunTask placed no task")?
        .to_owned();
    wait_for("the printing task running", || {
        let tasks = ecs(
            address,
            "DescribeTasks",
            json!({"cluster": CLUSTER, "tasks": [task_arn]}),
        )?;
        match tasks["tasks"][0]["lastStatus"].as_str() {
            Some("STOPPED") => bail!("the printing task stopped: {}", tasks["tasks"][0]),
            status => Ok(status == Some("RUNNING")),
        }
    })?;
    std::thread::sleep(SETTLE);
    let pid = agent_pid.to_string();
    let before = servers::cpu_seconds(&pid).context("reading the agent's CPU time")?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let after = servers::cpu_seconds(&pid).context("reading the agent's CPU time")?;
    let elapsed = started.elapsed().as_secs_f64();
    ecs(
        address,
        "StopTask",
        json!({"cluster": CLUSTER, "task": task_arn}),
    )?;
    let task_id = task_arn.rsplit('/').next().unwrap_or_default().to_owned();
    Ok((after - before, elapsed, task_id))
}

/// Events of a stream, counted page by page.
fn count_events(address: SocketAddr, stream: &str) -> Result<u64> {
    let mut count = 0;
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"logGroupName": GROUP, "logStreamName": stream, "startFromHead": true, "limit": 1000});
        if let Some(token) = &token {
            body["nextToken"] = json!(token);
        }
        let page = logs(address, "GetLogEvents", body)?;
        count += page["events"].as_array().map_or(0, Vec::len) as u64;
        let next = page["nextForwardToken"].as_str().map(str::to_owned);
        if next == token || next.is_none() {
            return Ok(count);
        }
        token = next;
    }
}

pub fn run(binary: &Path, seconds: u64) -> Result<()> {
    let log_dir = TempDir::new("flotilla-bench-logs-agent")?;
    let server = servers::start_flotilla(binary, log_dir.path())?;
    let address = server.address;
    ecs(address, "CreateCluster", json!({"clusterName": CLUSTER}))?;
    logs(address, "CreateLogGroup", json!({"logGroupName": GROUP}))?;
    let agent = start_agent(binary, address, log_dir.path())?;
    wait_for("the agent registered", || {
        let instances = ecs(
            address,
            "ListContainerInstances",
            json!({"cluster": CLUSTER}),
        )?;
        Ok(instances["containerInstanceArns"]
            .as_array()
            .is_some_and(|arns| !arns.is_empty()))
    })?;
    let agent_pid = agent.child.id();
    let (plain_cpu, plain_elapsed, _) = measure(
        address,
        agent_pid,
        "bench-json-file",
        json!({"logDriver": "json-file"}),
        seconds,
    )?;
    let (shipping_cpu, shipping_elapsed, task_id) = measure(
        address,
        agent_pid,
        "bench-awslogs",
        json!({"logDriver": "awslogs", "options": {
            "awslogs-group": GROUP, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "bench"}}),
        seconds,
    )?;
    // The stop waits for the last lines, so the count is complete shortly after.
    std::thread::sleep(Duration::from_secs(5));
    let shipped = count_events(address, &format!("bench/printer/{task_id}"))
        .map_err(|error| eprintln!("cannot count the shipped lines: {error}"))
        .unwrap_or(0);
    let plain_cores = plain_cpu / plain_elapsed;
    let shipping_cores = shipping_cpu / shipping_elapsed;
    println!(
        "{}",
        json!({"bench": "logs", "case": "agent", "path": "flotilla agent, one busybox container printing 10,000 lines of 100 bytes a second, json-file then awslogs",
            "seconds": seconds, "lines_shipped": shipped,
            "agent_cpu_cores_json_file": super::round(plain_cores, 4),
            "agent_cpu_cores_awslogs": super::round(shipping_cores, 4),
            "extra_cpu_percent_of_a_core": super::round((shipping_cores - plain_cores) * 100.0, 2),
            "target_percent": 5})
    );
    drop(agent);
    drop(server);
    Ok(())
}
