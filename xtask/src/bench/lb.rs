//! `cargo xtask bench lb [--runs N] [--seconds S] [--connections C]`: the
//! load balancer data plane against HAProxy and nginx, all three in front of
//! the same two backends in the same run.
//!
//! ```text
//! backends: two nginx processes (1 worker each) answering `return 200 "a\n"` / "b\n"
//! proxies:  flotilla lb (--workers 2) │ haproxy (nbthread 2) │ nginx (worker_processes 2)
//!           each: round robin over both backends, keep-alive to the backends,
//!           X-Forwarded-For added, no access log
//! per run, per proxy (and the direct backend as the floor):
//!   wrk  -t2 -cC -dS --latency   HTTP/1.1 keep-alive  → requests/s, p50, p99
//!   h2load -t2 -c16 -m10         HTTP/2 cleartext      → requests/s, mean
//!   paced load at half of the slowest proxy's peak    → p50, p99, added p99 over direct
//! once per proxy: RSS with 1,000 idle keep-alive client connections
//! flotilla: time from a target added to the snapshot to its first answer
//! ```
//!
//! The backends are nginx rather than a server of our own so that every
//! proxy faces a well-known, fast static server. All of it shares the
//! machine's two cores with the load generators; `load_average` in each
//! line says how busy the machine was.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::histogram::Histogram;
use super::servers::TempDir;

pub const USAGE: &str = "usage: cargo xtask bench lb [--runs N] [--seconds S] [--connections C]";
const DEFAULT_RUNS: usize = 3;
const RUNS_MAX: usize = 20;
const DEFAULT_SECONDS: u64 = 10;
const SECONDS_MAX: u64 = 300;
const DEFAULT_CONNECTIONS: usize = 64;
const CONNECTIONS_MAX: usize = 1_000;
/// Workers (threads or processes) of every proxy: the machine's two cores.
const WORKERS: usize = 2;
/// Debian packages the benchmark runs.
const APT_PACKAGES: &[&str] = &["haproxy", "nginx", "wrk", "nghttp2-client"];
/// Idle keep-alive client connections held open while resident memory is read.
const IDLE_CONNECTIONS: usize = 1_000;
/// Connections of the paced (fixed-rate) generator.
const PACED_CONNECTIONS: usize = 8;
/// h2load's clients and streams per client.
const H2_CLIENTS: usize = 16;
const H2_STREAMS_PER_CLIENT: usize = 10;
/// Repetitions of the first-request measurement, per health check setting.
const FIRST_REQUEST_TRIALS: usize = 5;

pub struct Options {
    runs: usize,
    seconds: u64,
    connections: usize,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            runs: DEFAULT_RUNS,
            seconds: DEFAULT_SECONDS,
            connections: DEFAULT_CONNECTIONS,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--runs" => options.runs = super::bounded(flag, value, 1, RUNS_MAX)?,
                "--seconds" => options.seconds = super::bounded(flag, value, 1, SECONDS_MAX)?,
                "--connections" => {
                    options.connections = super::bounded(flag, value, 1, CONNECTIONS_MAX)?
                }
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

/// A child process killed when dropped, with the directory it runs in.
struct Process {
    child: Child,
    address: SocketAddr,
    _dir: Option<TempDir>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn start(
        name: &'static str,
        mut command: Command,
        address: SocketAddr,
        dir: Option<TempDir>,
        log: &Path,
    ) -> Result<Process> {
        let log_file = std::fs::File::create(log)?;
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let mut process = Process {
            child,
            address,
            _dir: dir,
        };
        let started = Instant::now();
        while TcpStream::connect_timeout(&address, Duration::from_millis(50)).is_err() {
            if let Some(status) = process.child.try_wait()? {
                bail!(
                    "{name} exited with {status}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("{name} did not listen on {address}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(process)
    }

    /// CPU seconds used by the process and its descendants so far.
    fn cpu_seconds(&self) -> f64 {
        descendants(self.child.id())
            .into_iter()
            .filter_map(|pid| super::servers::cpu_seconds(&pid.to_string()))
            .sum()
    }

    /// Resident memory of the process and all its descendants (nginx's workers).
    fn rss_kib(&self) -> u64 {
        fn tree(pid: u32) -> u64 {
            let own = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    status
                        .lines()
                        .find_map(|line| line.strip_prefix("VmRSS:"))
                        .and_then(|rest| {
                            rest.trim()
                                .trim_end_matches("kB")
                                .trim()
                                .parse::<u64>()
                                .ok()
                        })
                })
                .unwrap_or(0);
            let children: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
                .flat_map(|text| {
                    text.split_whitespace()
                        .filter_map(|child| child.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
                .map(tree)
                .sum();
            own + children
        }
        tree(self.child.id())
    }
}

/// `pid` and every process below it.
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let children: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    for child in children {
        all.extend(descendants(child));
    }
    all
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn round(value: f64, decimals: i32) -> f64 {
    super::round(value, decimals)
}

pub fn run(target_dir: &Path, options: &Options) -> Result<()> {
    crate::test::ensure_apt_packages(APT_PACKAGES)?;
    let work = TempDir::new("flotilla-bench-lb")?;
    let dir = work.path();
    let backends = [start_backend(dir, "a")?, start_backend(dir, "b")?];
    let backend_ports = [backends[0].address.port(), backends[1].address.port()];
    let flotilla_bin = target_dir.join("release/flotilla");
    let flotilla = start_flotilla(&flotilla_bin, dir, backend_ports, false)?;
    let haproxy = start_haproxy(dir, backend_ports)?;
    let nginx = start_nginx_proxy(dir, backend_ports)?;
    // nginx serves cleartext HTTP/2 on a port of its own (`listen ... http2`
    // takes only h2 there); flotilla and HAProxy detect the h2 preface.
    let h2_ports = [
        ("flotilla", flotilla.0.address.port()),
        ("haproxy", haproxy.address.port()),
        ("nginx", nginx.1),
    ];
    let proxies: [(&str, u16); 3] = [
        ("flotilla", flotilla.0.address.port()),
        ("haproxy", haproxy.address.port()),
        ("nginx", nginx.0.address.port()),
    ];
    let cpu_of = |name: &str| match name {
        "flotilla" => flotilla.0.cpu_seconds(),
        "haproxy" => haproxy.cpu_seconds(),
        _ => nginx.0.cpu_seconds(),
    };
    for (name, port) in proxies {
        let body = get_once(loopback(port)).with_context(|| format!("{name} does not answer"))?;
        if !(body == "a\n" || body == "b\n") {
            bail!("{name} answered {body:?}");
        }
    }
    for run in 1..=options.runs {
        // HTTP/1.1 keep-alive at fixed concurrency.
        let direct = wrk(backend_ports[0], options)?;
        print_line(
            json!({"bench": "lb", "run": run, "protocol": "http1", "server": "direct-backend",
            "requests_per_sec": direct.rate, "p50_ms": direct.p50_ms, "p99_ms": direct.p99_ms, "load_average": load_average()}),
        );
        let mut rates = Vec::new();
        for (name, port) in proxies {
            let cpu_before = cpu_of(name);
            let result = wrk(port, options)?;
            // CPU time per request: what the proxy itself spent, which
            // neighbours on the machine disturb far less than throughput.
            let cpu_us_per_request = round(
                (cpu_of(name) - cpu_before) * 1e6 / (result.rate * options.seconds as f64).max(1.0),
                1,
            );
            print_line(
                json!({"bench": "lb", "run": run, "protocol": "http1", "server": name, "connections": options.connections,
                "requests_per_sec": result.rate, "cpu_us_per_request": cpu_us_per_request, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                "added_p50_ms": round(result.p50_ms - direct.p50_ms, 3), "added_p99_ms": round(result.p99_ms - direct.p99_ms, 3),
                "errors": result.errors, "load_average": load_average()}),
            );
            rates.push((name, result.rate));
        }
        print_ratios(run, "http1", &rates);
        // HTTP/2 cleartext with prior knowledge.
        let mut h2_rates = Vec::new();
        for (name, port) in h2_ports {
            let (rate, mean_ms) = h2load(port, options.seconds)?;
            print_line(
                json!({"bench": "lb", "run": run, "protocol": "h2c", "server": name, "clients": H2_CLIENTS,
                "streams_per_client": H2_STREAMS_PER_CLIENT, "requests_per_sec": rate, "mean_ms": mean_ms, "load_average": load_average()}),
            );
            h2_rates.push((name, rate));
        }
        print_ratios(run, "h2c", &h2_rates);
        // Latency added at half load: a fixed request rate, half the slowest peak.
        let peak = rates
            .iter()
            .map(|(_, rate)| *rate)
            .fold(f64::INFINITY, f64::min);
        let rate = (peak / 2.0).max(100.0);
        let direct = paced(loopback(backend_ports[0]), rate, options.seconds)?;
        print_line(
            json!({"bench": "lb", "run": run, "protocol": "http1-paced", "server": "direct-backend", "requests_per_sec": round(rate, 0),
            "p50_ms": direct.quantile_ms(0.5), "p99_ms": direct.quantile_ms(0.99), "load_average": load_average()}),
        );
        for (name, port) in proxies {
            let measured = paced(loopback(port), rate, options.seconds)?;
            print_line(
                json!({"bench": "lb", "run": run, "protocol": "http1-paced", "server": name, "requests_per_sec": round(rate, 0),
                "p50_ms": round(measured.quantile_ms(0.5), 3), "p99_ms": round(measured.quantile_ms(0.99), 3),
                "added_p99_ms": round(measured.quantile_ms(0.99) - direct.quantile_ms(0.99), 3), "load_average": load_average()}),
            );
        }
    }
    // Resident memory with 1,000 idle keep-alive client connections.
    let processes: [(&str, &Process); 3] = [
        ("flotilla", &flotilla.0),
        ("haproxy", &haproxy),
        ("nginx", &nginx.0),
    ];
    for (name, process) in processes {
        let before = process.rss_kib();
        let held = hold_idle(process.address, IDLE_CONNECTIONS)?;
        std::thread::sleep(Duration::from_millis(500));
        let with = process.rss_kib();
        print_line(
            json!({"bench": "lb", "measure": "rss_idle_keepalive", "server": name, "connections": held.len(),
            "rss_mib": round(with as f64 / 1024.0, 1), "rss_before_mib": round(before as f64 / 1024.0, 1)}),
        );
        drop(held);
    }
    drop(flotilla);
    drop(haproxy);
    drop(nginx);
    // From a target added to the snapshot to its first answer.
    for checks in [true, false] {
        let mut samples = Vec::new();
        for _ in 0..FIRST_REQUEST_TRIALS {
            samples.push(first_request(&flotilla_bin, dir, backend_ports, checks)?);
        }
        samples.sort_by(f64::total_cmp);
        print_line(
            json!({"bench": "lb", "measure": "target_added_to_first_request", "server": "flotilla",
            "health_checks": if checks { "interval 5 s, healthy threshold 2" } else { "disabled" },
            "trials": samples.len(), "min_ms": samples[0], "median_ms": samples[samples.len() / 2], "max_ms": samples[samples.len() - 1]}),
        );
    }
    Ok(())
}

fn print_line(value: Value) {
    println!("{value}");
}

fn print_ratios(run: usize, protocol: &str, rates: &[(&str, f64)]) {
    let rate = |name| {
        rates
            .iter()
            .find(|(server, _)| *server == name)
            .map(|(_, rate)| *rate)
            .unwrap_or(0.0)
    };
    let flotilla = rate("flotilla");
    let ratio = |peer: f64| {
        if peer > 0.0 {
            Some(round(flotilla / peer, 2))
        } else {
            None
        }
    };
    print_line(json!({"bench": "lb", "run": run, "protocol": protocol,
        "ratio_flotilla_over_haproxy": ratio(rate("haproxy")), "ratio_flotilla_over_nginx": ratio(rate("nginx"))}));
}

fn start_backend(dir: &Path, name: &str) -> Result<Process> {
    let port = free_port()?;
    let prefix = dir.join(format!("backend-{name}"));
    std::fs::create_dir_all(prefix.join("logs"))?;
    let config = format!(
        "user root; worker_processes 1; daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server {{ listen 127.0.0.1:{port}; location / {{ default_type text/plain; return 200 \"{name}\\n\"; }} }} }}\n",
        prefix = prefix.display()
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, config)?;
    let mut command = Command::new("nginx");
    command.arg("-p").arg(&prefix).arg("-c").arg(&path);
    Process::start(
        "backend",
        command,
        loopback(port),
        None,
        &prefix.join("stderr.log"),
    )
}

fn flotilla_config(listen: u16, backends: [u16; 2], checks: bool) -> Value {
    json!({
        "LoadBalancers": [{"Name": "bench", "Type": "application", "BindAddress": "127.0.0.1", "Listeners": [
            {"Port": listen, "Protocol": "HTTP", "DefaultActions": [{"Type": "forward", "TargetGroupArn": "backends"}]}]}],
        "TargetGroups": [{"TargetGroupArn": "backends", "Protocol": "HTTP", "Port": 80,
            "HealthCheckEnabled": checks, "HealthCheckIntervalSeconds": 5, "HealthCheckTimeoutSeconds": 2, "HealthyThresholdCount": 2,
            "Targets": backends.iter().enumerate().map(|(index, port)| json!({"Id": format!("backend-{index}"), "Address": "127.0.0.1", "Port": port})).collect::<Vec<_>>()}]
    })
}

/// `flotilla lb` on two worker threads; returns it and its config file.
fn start_flotilla(
    binary: &Path,
    dir: &Path,
    backends: [u16; 2],
    checks: bool,
) -> Result<(Process, std::path::PathBuf)> {
    let port = free_port()?;
    let path = dir.join(format!("flotilla-lb-{port}.json"));
    std::fs::write(&path, flotilla_config(port, backends, checks).to_string())?;
    let mut command = Command::new(binary);
    command
        .args([
            "lb",
            "--workers",
            &WORKERS.to_string(),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()?),
            "--config",
        ])
        .arg(&path)
        // Configuration and health checks run on a runtime of their own.
        .env("TOKIO_WORKER_THREADS", "1")
        .env("RUST_LOG", "warn");
    let process = Process::start(
        "flotilla",
        command,
        loopback(port),
        None,
        &dir.join("flotilla.log"),
    )?;
    Ok((process, path))
}

fn start_haproxy(dir: &Path, backends: [u16; 2]) -> Result<Process> {
    let port = free_port()?;
    let config = format!(
        "global
  nbthread {WORKERS}
  maxconn 8000
defaults
  mode http
  timeout connect 10s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  option forwardfor
  http-reuse always
frontend front
  bind 127.0.0.1:{port}
  default_backend backends
backend backends
  balance roundrobin
  server a 127.0.0.1:{}
  server b 127.0.0.1:{}
",
        backends[0], backends[1]
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config)?;
    let mut command = Command::new("haproxy");
    command.arg("-db").arg("-f").arg(&path);
    Process::start(
        "haproxy",
        command,
        loopback(port),
        None,
        &dir.join("haproxy.log"),
    )
}

/// nginx as the proxy; returns it and its HTTP/2 port.
fn start_nginx_proxy(dir: &Path, backends: [u16; 2]) -> Result<(Process, u16)> {
    let (port, h2_port) = (free_port()?, free_port()?);
    let prefix = dir.join("nginx-proxy");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let config = format!(
        "user root; worker_processes {WORKERS}; daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 60s;
  upstream backends {{ server 127.0.0.1:{}; server 127.0.0.1:{}; keepalive 256; }}
  server {{ listen 127.0.0.1:{port}; listen 127.0.0.1:{h2_port} http2;
    location / {{ proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection \"\";
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }} }}\n",
        backends[0],
        backends[1],
        prefix = prefix.display()
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, config)?;
    let mut command = Command::new("nginx");
    command.arg("-p").arg(&prefix).arg("-c").arg(&path);
    Ok((
        Process::start(
            "nginx",
            command,
            loopback(port),
            None,
            &prefix.join("stderr.log"),
        )?,
        h2_port,
    ))
}

struct WrkResult {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn wrk(port: u16, options: &Options) -> Result<WrkResult> {
    let output = Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            &options.connections.to_string(),
            "-d",
            &format!("{}s", options.seconds),
            "--latency",
        ])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        text.lines().find_map(|line| {
            line.trim()
                .strip_prefix(prefix)
                .map(|rest| rest.trim().to_owned())
        })
    };
    let rate = field("Requests/sec:")
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("wrk printed:\n{text}"))?;
    let errors = text
        .lines()
        .filter(|line| line.contains("Non-2xx") || line.contains("Socket errors"))
        .flat_map(|line| {
            line.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
        })
        .sum();
    Ok(WrkResult {
        rate,
        p50_ms: field("50%").map(|value| duration_ms(&value)).unwrap_or(0.0),
        p99_ms: field("99%").map(|value| duration_ms(&value)).unwrap_or(0.0),
        errors,
    })
}

/// wrk's `123.45us`, `1.20ms`, `2.00s`.
fn duration_ms(text: &str) -> f64 {
    let (number, scale) = if let Some(us) = text.strip_suffix("us") {
        (us, 0.001)
    } else if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000.0)
    } else {
        (text, 1.0)
    };
    number
        .parse::<f64>()
        .map_or(0.0, |value| round(value * scale, 3))
}

fn h2load(port: u16, seconds: u64) -> Result<(f64, f64)> {
    let output = Command::new("h2load")
        .args([
            "-t",
            "2",
            "-c",
            &H2_CLIENTS.to_string(),
            "-m",
            &H2_STREAMS_PER_CLIENT.to_string(),
            "-D",
            &seconds.to_string(),
        ])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running h2load")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("finished in")
                .and_then(|rest| rest.split(',').nth(1))
                .and_then(|part| part.trim().strip_suffix("req/s"))
                .and_then(|n| n.trim().parse().ok())
        })
        .with_context(|| format!("h2load printed:\n{text}"))?;
    let mean_ms = text
        .lines()
        .find(|line| line.starts_with("time for request:"))
        .and_then(|line| line.split_whitespace().nth(5))
        .map_or(0.0, duration_ms);
    Ok((rate, mean_ms))
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

/// Reads one response (headers and a Content-Length body) from a keep-alive connection.
fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<String> {
    buffer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                if !head.starts_with("http/1.1 200") {
                    bail!("answer was {}", head.lines().next().unwrap_or(""));
                }
                return Ok(String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned());
            }
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            bail!("connection closed");
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

fn get_once(address: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(REQUEST)?;
    read_response(&mut stream, &mut Vec::new())
}

/// An open-loop load at `rate` requests per second over a few keep-alive
/// connections; latency counts from when each request was due, so a stall
/// shows in full (no coordinated omission).
fn paced(address: SocketAddr, rate: f64, seconds: u64) -> Result<Histogram> {
    let per_connection = Duration::from_secs_f64(PACED_CONNECTIONS as f64 / rate);
    let threads: Vec<_> = (0..PACED_CONNECTIONS)
        .map(|index| {
            std::thread::spawn(move || -> Result<Histogram> {
                let mut histogram = Histogram::default();
                let mut stream = TcpStream::connect(address)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut buffer = Vec::new();
                let start = Instant::now()
                    + per_connection.mul_f64(index as f64 / PACED_CONNECTIONS as f64);
                let end = Instant::now() + Duration::from_secs(seconds);
                let mut due = start;
                while due < end {
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    stream.write_all(REQUEST)?;
                    read_response(&mut stream, &mut buffer)?;
                    histogram.record(due.elapsed());
                    due += per_connection;
                }
                Ok(histogram)
            })
        })
        .collect();
    let mut total = Histogram::default();
    for thread in threads {
        let histogram = thread
            .join()
            .map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
        total.merge(&histogram);
    }
    Ok(total)
}

/// Opens `count` connections, each having made one request, and keeps them open.
fn hold_idle(address: SocketAddr, count: usize) -> Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(count);
    let mut buffer = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(REQUEST)?;
        read_response(&mut stream, &mut buffer)?;
        held.push(stream);
    }
    Ok(held)
}

/// Milliseconds from rewriting the snapshot with target b added (and SIGHUP
/// to read it at once) to the first answer from b, seen by a client sending
/// requests back to back. Includes writing and parsing the file, applying
/// it, the new target's first health check (when checks are on) and the
/// client's next request.
fn first_request(binary: &Path, dir: &Path, backends: [u16; 2], checks: bool) -> Result<f64> {
    let (process, path) = start_flotilla(binary, dir, [backends[0], backends[0]], checks)?;
    // Only a at first (twice in the file under two ids would be two targets; rewrite with one).
    let port = process.address.port();
    let mut only_a = flotilla_config(port, backends, checks);
    only_a["TargetGroups"][0]["Targets"]
        .as_array_mut()
        .context("targets")?
        .truncate(1);
    std::fs::write(&path, only_a.to_string())?;
    signal_hangup(process.child.id())?;
    let mut stream = TcpStream::connect(process.address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buffer = Vec::new();
    // Wait until only a answers (the reload applied and the file target is healthy).
    let settle = Instant::now() + Duration::from_secs(15);
    let mut a_in_a_row = 0;
    while a_in_a_row < 20 {
        if Instant::now() > settle {
            bail!("flotilla never served only a");
        }
        stream.write_all(REQUEST)?;
        a_in_a_row = if read_response(&mut stream, &mut buffer)? == "a\n" {
            a_in_a_row + 1
        } else {
            0
        };
    }
    let both = flotilla_config(port, backends, checks);
    let started = Instant::now();
    std::fs::write(&path, both.to_string())?;
    signal_hangup(process.child.id())?;
    let deadline = started + Duration::from_secs(30);
    loop {
        stream.write_all(REQUEST)?;
        if read_response(&mut stream, &mut buffer)? == "b\n" {
            return Ok(round(started.elapsed().as_secs_f64() * 1000.0, 1));
        }
        if Instant::now() > deadline {
            bail!("target b never answered");
        }
    }
}

fn signal_hangup(pid: u32) -> Result<()> {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -HUP {pid} failed");
    }
    Ok(())
}
