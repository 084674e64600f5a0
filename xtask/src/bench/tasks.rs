//! `cargo xtask bench tasks [--runs N]`: how long a task takes from RunTask
//! to RUNNING on the local Docker engine, as a ratio against `docker run`
//! starting the same container on the same machine in the same run, and how
//! much memory an agent keeps resident.
//!
//! ```text
//! flotilla server (temp data dir, loopback port)          ◀── signed ECS calls (load::call_once)
//!   ├─ flotilla agent #1 (own data dir, metadata port)    ── latency runs land here
//!   └─ flotilla agent #2 (started for the memory part)    ── 50 tasks via StartTask, VmRSS
//!
//! warm-up: one unmeasured run of each side
//! run i = 1..N, the side going first alternating:
//!   flotilla:   RunTask ─▶ DescribeTasks every 5 ms until lastStatus RUNNING   (timed)
//!               StopTask ─▶ DescribeTasks until STOPPED                          (not timed)
//!   docker_run: spawn `docker run -d --rm -p 8080 IMAGE httpd …` ─▶ CLI exits     (timed)
//!               docker rm -f                                                     (not timed)
//! → {"bench":"tasks","side":…,"runs":N,"p50_ms":…,"p90_ms":…,"max_ms":…}
//! → {"bench":"tasks","ratio_p50_flotilla_over_docker_run":…}
//! agent #2: VmRSS 5 s after it connected, then with 50 tasks RUNNING on it
//! → {"bench":"tasks","metric":"agent_rss_mib","idle":…,"with_50_tasks":…}
//! ```
//!
//! `flotilla up` runs its local agent inside the control plane's process and
//! has no flag for that agent's metadata port (it binds the default 51679,
//! which another agent on the machine may hold), so the benchmark runs
//! `flotilla server` and separate `flotilla agent` processes instead. That
//! also keeps an agent's resident memory apart from the control plane's.
//!
//! The tasks run in a cluster of their own (`bench-tasks-{pid}`); every
//! container labelled with it, every `docker run` container and every
//! process is removed when the benchmark ends, also on error. Every wait is
//! bounded.
//!
//! Logs go to `target/bench/{flotilla,agent-1,agent-2}.log`; the processes
//! inherit `RUST_LOG`, so `RUST_LOG=flotilla_agent=debug,info` gives a
//! timestamped account of each task's steps to compare with the run lines
//! this command prints on stderr.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::load;
use super::servers::{self, TempDir};

const DEFAULT_RUNS: usize = 20;
const RUNS_MAX: usize = 1_000;

/// Built from Debian's static busybox when missing, as the runtime crate's
/// tests build it (`crates/runtime/src/testing.rs`).
const IMAGE: &str = "flotilla-test/busybox:latest";
const BUSYBOX_PATH: &str = "/bin/busybox";
const DOCKERFILE: &str = "FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/tmp\", \"/www\", \"/etc\", \"/usr/bin\", \"/sbin\", \"/usr/sbin\"]
RUN [\"/bin/busybox\", \"--install\", \"-s\"]
COPY passwd /etc/passwd
COPY group /etc/group
COPY index.html /www/index.html
CMD [\"sh\"]
";
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const TEST_PAGE: &str = "flotilla test page\n";

/// The container both sides start.
const HTTPD_COMMAND: [&str; 6] = ["httpd", "-f", "-p", "8080", "-h", "/www"];
const CONTAINER_PORT: u16 = 8080;
const MEMORY_MIB: u32 = 32;
/// busybox httpd as PID 1 ignores SIGTERM: a short stop timeout keeps the
/// untimed StopTask quick.
const STOP_TIMEOUT_SECONDS: u32 = 2;
const FAMILY: &str = "bench-tasks-httpd";
/// The label the agent puts on every container it creates.
const CLUSTER_LABEL: &str = "com.flotilla.cluster";

/// How often DescribeTasks is asked while a task starts (the timed part).
const START_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How often it is asked while waiting for anything untimed.
const SLOW_POLL_INTERVAL: Duration = Duration::from_millis(100);
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(60);
const TASK_START_TIMEOUT: Duration = Duration::from_secs(60);
const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(60);
const MANY_TASKS_TIMEOUT: Duration = Duration::from_secs(300);
const DOCKER_RUN_TIMEOUT: Duration = Duration::from_secs(60);
const DOCKER_CLI_TIMEOUT: Duration = Duration::from_secs(120);
const IMAGE_BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the second agent sits connected before its idle RSS is read.
const IDLE_SETTLE: Duration = Duration::from_secs(5);
/// After the 50 tasks are RUNNING, time for their reports to drain.
const LOADED_SETTLE: Duration = Duration::from_secs(2);
/// The memory part: StartTask calls, each naming the instance this often
/// (ECS's limit of instances per call).
const MANY_TASK_CALLS: usize = 5;
const MANY_TASKS_PER_CALL: usize = 10;
const DESCRIBE_TASKS_MAX: usize = 100;
const LOG_TAIL_BYTES: usize = 4_000;

pub const USAGE: &str = "usage: cargo xtask bench tasks [--runs N]";

pub struct Options {
    runs: usize,
}

impl Options {
    /// Parses what follows `tasks`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options { runs: DEFAULT_RUNS };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--runs" => options.runs = super::bounded(flag, value, 1, RUNS_MAX)?,
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

pub fn run(target_dir: &Path, options: &Options) -> Result<()> {
    ensure_image()?;
    let log_dir = target_dir.join("bench");
    let binary = target_dir.join("release/flotilla");
    let cluster = format!("bench-tasks-{}", std::process::id());
    // Declared first, so dropped last: after the agents and containers.
    let server = servers::start_flotilla(&binary, &log_dir)?;
    // Dropped before the server: kills the agents, then removes containers.
    let mut cleanup = Cleanup {
        cluster: cluster.clone(),
        agents: Vec::new(),
        peer_containers: Vec::new(),
    };
    let api = Api {
        address: server.address,
    };
    api.call("CreateCluster", json!({"clusterName": cluster}))?;

    let instance = start_agent(&api, &binary, &log_dir, &cluster, 1, &mut cleanup)?;
    eprintln!("agent 1 is connected as {instance}");
    let definition = api.call("RegisterTaskDefinition", task_definition())?;
    let definition_arn = string_at(&definition, &["taskDefinition", "taskDefinitionArn"])?;

    // Warm-up: the first start of each side pays for caches nobody measures.
    flotilla_start(&api, &cluster, &definition_arn, &mut cleanup).context("warm-up RunTask")?;
    docker_run_start(&mut cleanup).context("warm-up docker run")?;

    let mut flotilla_ms = Vec::with_capacity(options.runs);
    let mut docker_ms = Vec::with_capacity(options.runs);
    for run in 0..options.runs {
        let flotilla_first = run % 2 == 0;
        for side in 0..2 {
            if (side == 0) == flotilla_first {
                let elapsed = flotilla_start(&api, &cluster, &definition_arn, &mut cleanup)
                    .with_context(|| format!("run {} of Flotilla", run + 1))?;
                flotilla_ms.push(milliseconds(elapsed));
            } else {
                let elapsed = docker_run_start(&mut cleanup)
                    .with_context(|| format!("run {} of docker run", run + 1))?;
                docker_ms.push(milliseconds(elapsed));
            }
        }
    }
    let flotilla_p50 = print_side("flotilla", &flotilla_ms);
    let docker_p50 = print_side("docker_run", &docker_ms);
    let ratio = (docker_p50 > 0.0).then(|| round(flotilla_p50 / docker_p50, 2));
    println!(
        "{}",
        json!({"bench": "tasks", "ratio_p50_flotilla_over_docker_run": ratio})
    );

    agent_memory(
        &api,
        &binary,
        &log_dir,
        &cluster,
        &definition_arn,
        &mut cleanup,
    )?;
    drop(cleanup);
    drop(server);
    Ok(())
}

/// A second, standalone agent: its VmRSS idle, then with 50 tasks on it.
fn agent_memory(
    api: &Api,
    binary: &Path,
    log_dir: &Path,
    cluster: &str,
    definition_arn: &str,
    cleanup: &mut Cleanup,
) -> Result<()> {
    let instance = start_agent(api, binary, log_dir, cluster, 2, cleanup)?;
    let pid = cleanup
        .agents
        .last()
        .map(|agent| agent.child.id())
        .context("the second agent is gone")?;
    eprintln!("agent 2 is connected as {instance} (pid {pid})");
    std::thread::sleep(IDLE_SETTLE);
    let idle = rss_mib(pid)?;
    cleanup.check_agents()?;

    let mut task_arns = Vec::new();
    for _ in 0..MANY_TASK_CALLS {
        let answer = api.call(
            "StartTask",
            json!({
                "cluster": cluster,
                "taskDefinition": definition_arn,
                "containerInstances": vec![instance.as_str(); MANY_TASKS_PER_CALL],
            }),
        )?;
        let started = task_arns_of(&answer)?;
        if started.len() != MANY_TASKS_PER_CALL {
            bail!(
                "StartTask started {} of {MANY_TASKS_PER_CALL} tasks on {instance}; failures: {}",
                started.len(),
                answer.get("failures").unwrap_or(&Value::Null)
            );
        }
        task_arns.extend(started);
    }
    let wanted = task_arns.len();
    let began = Instant::now();
    loop {
        let mut running = 0;
        for chunk in task_arns.chunks(DESCRIBE_TASKS_MAX) {
            for task in describe(api, cluster, chunk)? {
                match last_status(&task) {
                    "RUNNING" => running += 1,
                    "STOPPED" => bail!("a task of the memory part stopped: {task}"),
                    _ => {}
                }
            }
        }
        if running == wanted {
            break;
        }
        cleanup.check_agents()?;
        if began.elapsed() > MANY_TASKS_TIMEOUT {
            bail!("only {running} of {wanted} tasks were RUNNING after {MANY_TASKS_TIMEOUT:?}");
        }
        std::thread::sleep(SLOW_POLL_INTERVAL);
    }
    eprintln!(
        "{wanted} tasks RUNNING on agent 2 after {:.1} s",
        began.elapsed().as_secs_f64()
    );
    std::thread::sleep(LOADED_SETTLE);
    let loaded = rss_mib(pid)?;
    println!(
        "{}",
        json!({"bench": "tasks", "metric": "agent_rss_mib", "idle": idle, "with_50_tasks": loaded})
    );
    Ok(())
}

/// The task definition both sides' container follows.
fn task_definition() -> Value {
    json!({
        "family": FAMILY,
        "networkMode": "bridge",
        "containerDefinitions": [{
            "name": "httpd",
            "image": IMAGE,
            "memory": MEMORY_MIB,
            "essential": true,
            "command": HTTPD_COMMAND,
            "portMappings": [{"containerPort": CONTAINER_PORT, "hostPort": 0, "protocol": "tcp"}],
            "stopTimeout": STOP_TIMEOUT_SECONDS,
        }],
    })
}

/// RunTask until DescribeTasks says RUNNING (timed), then StopTask until
/// STOPPED (not timed).
fn flotilla_start(
    api: &Api,
    cluster: &str,
    definition_arn: &str,
    cleanup: &mut Cleanup,
) -> Result<Duration> {
    let began = Instant::now();
    let answer = api.call(
        "RunTask",
        json!({"cluster": cluster, "taskDefinition": definition_arn, "count": 1}),
    )?;
    let task_arn = task_arns_of(&answer)?.into_iter().next().with_context(|| {
        format!(
            "RunTask started no task; failures: {}",
            answer.get("failures").unwrap_or(&Value::Null)
        )
    })?;
    let elapsed = loop {
        let tick = Instant::now();
        let task = describe_one(api, cluster, &task_arn)?;
        match last_status(&task) {
            "RUNNING" => break began.elapsed(),
            "STOPPED" => bail!("task {task_arn} stopped before it ran: {task}"),
            _ => {}
        }
        cleanup.check_agents()?;
        if began.elapsed() > TASK_START_TIMEOUT {
            bail!("task {task_arn} was not RUNNING after {TASK_START_TIMEOUT:?}: {task}");
        }
        std::thread::sleep(START_POLL_INTERVAL.saturating_sub(tick.elapsed()));
    };
    eprintln!(
        "flotilla   {:8.1} ms  {task_arn} (RunTask sent at unix {:.3})",
        milliseconds(elapsed),
        unix_seconds_at(began)
    );
    api.call(
        "StopTask",
        json!({"cluster": cluster, "task": task_arn, "reason": "benchmark run over"}),
    )?;
    let stopping = Instant::now();
    loop {
        let task = describe_one(api, cluster, &task_arn)?;
        if last_status(&task) == "STOPPED" {
            break;
        }
        cleanup.check_agents()?;
        if stopping.elapsed() > TASK_STOP_TIMEOUT {
            bail!("task {task_arn} was not STOPPED {TASK_STOP_TIMEOUT:?} after StopTask: {task}");
        }
        std::thread::sleep(SLOW_POLL_INTERVAL);
    }
    Ok(elapsed)
}

/// `docker run -d --rm -p 8080 IMAGE httpd …` from spawning the CLI to its
/// exit, when the container has started (timed), then `docker rm -f`.
fn docker_run_start(cleanup: &mut Cleanup) -> Result<Duration> {
    let mut command = Command::new("docker");
    command
        .args([
            "run",
            "-d",
            "--rm",
            "-p",
            &CONTAINER_PORT.to_string(),
            IMAGE,
        ])
        .args(HTTPD_COMMAND);
    let (elapsed, output) = run_bounded(&mut command, DOCKER_RUN_TIMEOUT)?;
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || id.is_empty() {
        bail!(
            "{command:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    eprintln!(
        "docker_run {:8.1} ms  {}",
        milliseconds(elapsed),
        &id[..id.len().min(12)]
    );
    cleanup.peer_containers.push(id.clone());
    docker(&["rm", "-f", &id])?;
    cleanup.peer_containers.retain(|kept| *kept != id);
    Ok(elapsed)
}

/// The signed ECS client: every call a fresh connection through the API
/// benchmark's `call_once`, which bounds it by its request timeout.
struct Api {
    address: SocketAddr,
}

impl Api {
    fn call(&self, operation: &'static str, body: Value) -> Result<Value> {
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
}

fn describe(api: &Api, cluster: &str, task_arns: &[String]) -> Result<Vec<Value>> {
    let answer = api.call(
        "DescribeTasks",
        json!({"cluster": cluster, "tasks": task_arns}),
    )?;
    Ok(answer
        .get("tasks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

fn describe_one(api: &Api, cluster: &str, task_arn: &str) -> Result<Value> {
    describe(api, cluster, &[task_arn.to_owned()])?
        .into_iter()
        .next()
        .with_context(|| format!("DescribeTasks does not know {task_arn}"))
}

fn last_status(task: &Value) -> &str {
    task.get("lastStatus").and_then(Value::as_str).unwrap_or("")
}

fn task_arns_of(answer: &Value) -> Result<Vec<String>> {
    answer
        .get("tasks")
        .and_then(Value::as_array)
        .context("the answer holds no tasks list")?
        .iter()
        .map(|task| string_at(task, &["taskArn"]))
        .collect()
}

fn string_at(value: &Value, path: &[&str]) -> Result<String> {
    let mut at = value;
    for key in path {
        at = at
            .get(key)
            .with_context(|| format!("no {} in {value}", path.join(".")))?;
    }
    at.as_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not a string in {value}", path.join(".")))
}

/// A `flotilla agent` process and what it owns.
struct Agent {
    number: usize,
    child: Child,
    log: PathBuf,
    /// Removed after the process is killed.
    _data_dir: TempDir,
}

/// Everything the benchmark started besides the server, removed on drop.
struct Cleanup {
    cluster: String,
    agents: Vec<Agent>,
    /// `docker run` containers not yet removed.
    peer_containers: Vec<String>,
}

impl Cleanup {
    /// Fails when an agent has exited, with the end of its log.
    fn check_agents(&mut self) -> Result<()> {
        for agent in &mut self.agents {
            if let Some(status) = agent.child.try_wait()? {
                bail!(
                    "agent {} exited with {status}; log {}:\n{}",
                    agent.number,
                    agent.log.display(),
                    log_tail(&agent.log)
                );
            }
        }
        Ok(())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Agents first, so none restarts or reports what is removed next.
        for agent in &mut self.agents {
            let _ = agent.child.kill();
            let _ = agent.child.wait();
        }
        let filter = format!("label={CLUSTER_LABEL}={}", self.cluster);
        let mut ids = std::mem::take(&mut self.peer_containers);
        match docker(&["ps", "-aq", "--filter", &filter]) {
            Ok(output) => ids.extend(
                String::from_utf8_lossy(&output.stdout)
                    .split_whitespace()
                    .map(str::to_owned),
            ),
            Err(error) => eprintln!("listing the benchmark's containers: {error:#}"),
        }
        if ids.is_empty() {
            return;
        }
        let mut arguments = vec!["rm", "-f"];
        arguments.extend(ids.iter().map(String::as_str));
        match docker(&arguments) {
            Ok(_) => eprintln!("removed {} containers", ids.len()),
            Err(error) => eprintln!("removing the benchmark's containers: {error:#}"),
        }
    }
}

/// Starts `flotilla agent` number `number` in `cluster` and waits until its
/// container instance is ACTIVE and connected; returns the instance's ARN.
fn start_agent(
    api: &Api,
    binary: &Path,
    log_dir: &Path,
    cluster: &str,
    number: usize,
    cleanup: &mut Cleanup,
) -> Result<String> {
    let known = instance_arns(api, cluster)?;
    let data_dir = TempDir::new(&format!("flotilla-bench-agent-{number}"))?;
    std::fs::create_dir_all(log_dir)?;
    let log = log_dir.join(format!("agent-{number}.log"));
    let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new(binary);
    command
        .arg("agent")
        .args(["--endpoint", &format!("http://{}", api.address)])
        .args(["--cluster", cluster, "--region", "us-east-1"])
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["--metadata-port", &free_port()?.to_string()])
        .args(["--image-pull-behavior", "prefer-cached"])
        // The server's default credentials, whatever the caller's environment holds.
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    eprintln!(
        "agent {number} started (pid {}, log {})",
        child.id(),
        log.display()
    );
    cleanup.agents.push(Agent {
        number,
        child,
        log,
        _data_dir: data_dir,
    });
    let began = Instant::now();
    loop {
        cleanup.check_agents()?;
        let fresh: Vec<String> = instance_arns(api, cluster)?
            .into_iter()
            .filter(|arn| !known.contains(arn))
            .collect();
        if !fresh.is_empty() {
            let answer = api.call(
                "DescribeContainerInstances",
                json!({"cluster": cluster, "containerInstances": fresh}),
            )?;
            let ready = answer
                .get("containerInstances")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|instance| {
                    instance.get("agentConnected") == Some(&Value::Bool(true))
                        && instance.get("status").and_then(Value::as_str) == Some("ACTIVE")
                });
            if let Some(instance) = ready {
                return string_at(instance, &["containerInstanceArn"]);
            }
        }
        if began.elapsed() > AGENT_READY_TIMEOUT {
            bail!("agent {number} was not registered and connected within {AGENT_READY_TIMEOUT:?}");
        }
        std::thread::sleep(SLOW_POLL_INTERVAL);
    }
}

fn instance_arns(api: &Api, cluster: &str) -> Result<Vec<String>> {
    let answer = api.call("ListContainerInstances", json!({"cluster": cluster}))?;
    Ok(answer
        .get("containerInstanceArns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect())
}

/// A port nobody listens on right now, on every address (the agent's
/// metadata endpoint binds 0.0.0.0).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("0.0.0.0:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A process's resident memory in MiB, from `/proc/PID/status`.
fn rss_mib(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|number| number.trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(round(kib / 1024.0, 1))
}

/// Builds the image unless the engine has it.
fn ensure_image() -> Result<()> {
    if docker(&["image", "inspect", IMAGE]).is_ok() {
        return Ok(());
    }
    if !Path::new(BUSYBOX_PATH).exists() {
        bail!("{IMAGE} is missing and so is {BUSYBOX_PATH} to build it from: apt-get install busybox-static");
    }
    let context = TempDir::new("flotilla-bench-image")?;
    let dir = context.path();
    std::fs::copy(BUSYBOX_PATH, dir.join("busybox"))?;
    for (name, text) in [
        ("Dockerfile", DOCKERFILE),
        ("passwd", PASSWD),
        ("group", GROUP),
        ("index.html", TEST_PAGE),
    ] {
        std::fs::write(dir.join(name), text)?;
    }
    eprintln!("building {IMAGE}");
    // The classic builder needs no base image and no buildx plugin.
    let mut command = Command::new("docker");
    command
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "--tag", IMAGE])
        .arg(dir);
    let (_, output) = run_bounded(&mut command, IMAGE_BUILD_TIMEOUT)?;
    if !output.status.success() {
        bail!(
            "building {IMAGE} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs the docker CLI, bounded, and fails unless it succeeds.
fn docker(arguments: &[&str]) -> Result<Output> {
    let mut command = Command::new("docker");
    command.args(arguments);
    let (_, output) = run_bounded(&mut command, DOCKER_CLI_TIMEOUT)?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Runs `command` to its exit, killing it after `timeout`; returns the time
/// from spawning it to its exit, and what it printed.
fn run_bounded(command: &mut Command, timeout: Duration) -> Result<(Duration, Output)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let began = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    // The waiter takes the exit time itself, so that this thread waking up
    // late cannot stretch the figure.
    std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = sender.send((began.elapsed(), output));
    });
    match receiver.recv_timeout(timeout) {
        Ok((elapsed, output)) => Ok((
            elapsed,
            output.with_context(|| format!("waiting for {command:?}"))?,
        )),
        Err(_) => {
            // The child is the waiter's; kill it by its pid, which cannot have
            // been reused while the waiter has not reaped it.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            Err(anyhow!("{command:?} did not finish within {timeout:?}"))
        }
    }
}

/// Prints one side's figures and returns its median.
fn print_side(side: &str, samples_ms: &[f64]) -> f64 {
    let p50 = quantile(samples_ms, 0.50);
    println!(
        "{}",
        json!({
            "bench": "tasks",
            "side": side,
            "runs": samples_ms.len(),
            "p50_ms": round(p50, 1),
            "p90_ms": round(quantile(samples_ms, 0.90), 1),
            "max_ms": round(quantile(samples_ms, 1.0), 1),
        })
    );
    p50
}

/// Nearest-rank quantile.
fn quantile(samples: &[f64], quantile: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn milliseconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

fn round(value: f64, decimals: i32) -> f64 {
    super::round(value, decimals)
}

/// The wall-clock time of `instant`, to line runs up with the agent's log.
#[allow(clippy::disallowed_methods)] // A benchmark's report, not a state transition.
fn unix_seconds_at(instant: Instant) -> f64 {
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
        - instant.elapsed().as_secs_f64()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(LOG_TAIL_BYTES);
    let start = (start..text.len())
        .find(|&at| text.is_char_boundary(at))
        .unwrap_or(text.len());
    text[start..].to_owned()
}
