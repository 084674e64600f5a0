//! The servers under test, each a child process that is killed when its
//! handle drops, so that an error or a panic in the benchmark never leaves
//! one running.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a server may take to accept connections; moto imports a lot of
/// Python before it listens.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const STARTUP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How much of a server's log to show when it fails to start.
const LOG_TAIL_BYTES: usize = 4_000;

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Result<Self> {
        let nanos = std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |elapsed| elapsed.as_nanos());
        let path = std::env::temp_dir().join(format!("{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server; dropping it kills the process and waits for it.
pub struct Server {
    pub name: &'static str,
    pub address: SocketAddr,
    child: Child,
    /// Dropped after the process is killed, so the data goes after its owner.
    _data_dir: Option<TempDir>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now. Another process could take it
/// before the server binds it; the server then fails to start, visibly.
fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// `flotilla server` on a fresh data directory, with its defaults otherwise
/// (its own tokio runtime, one worker per core; the credentials test/test).
pub fn start_flotilla(binary: &Path, log_dir: &Path) -> Result<Server> {
    let data_dir = TempDir::new("flotilla-bench-data")?;
    let port = free_loopback_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(binary);
    command
        .args(["server", "--listen", &address.to_string(), "--data-dir"])
        .arg(data_dir.path());
    start("flotilla", command, address, log_dir, Some(data_dir))
}

/// [`start_flotilla`] with more server arguments.
pub fn start_flotilla_with(binary: &Path, log_dir: &Path, extra: &[String]) -> Result<Server> {
    let data_dir = TempDir::new("flotilla-bench-data")?;
    let port = free_loopback_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(binary);
    command
        .args(["server", "--listen", &address.to_string(), "--data-dir"])
        .arg(data_dir.path())
        .args(extra);
    start("flotilla", command, address, log_dir, Some(data_dir))
}

/// Debian's `etcd` (package etcd-server), one member on loopback ports and
/// a fresh data directory, with the auto-compaction the README advises;
/// returned once it answers `/health`.
pub fn start_etcd(log_dir: &Path) -> Result<Server> {
    let data_dir = TempDir::new("etcd-bench-data")?;
    let client_port = free_loopback_port()?;
    let peer_port = free_loopback_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], client_port));
    let client_url = format!("http://{address}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut command = Command::new("etcd");
    command
        .args(["--name", "bench", "--data-dir"])
        .arg(data_dir.path().join("member"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("bench={peer_url}"),
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1h",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]);
    let server = start("etcd", command, address, log_dir, Some(data_dir))?;
    let started = Instant::now();
    while !etcd_healthy(address) {
        if started.elapsed() > STARTUP_TIMEOUT {
            bail!("etcd did not become healthy within {STARTUP_TIMEOUT:?}");
        }
        std::thread::sleep(STARTUP_POLL_INTERVAL);
    }
    Ok(server)
}

fn etcd_healthy(address: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&address, STARTUP_POLL_INTERVAL) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

/// `flotilla server` as [`start_flotilla`] starts it, its state in `etcd`.
pub fn start_flotilla_on_etcd(binary: &Path, log_dir: &Path, etcd: SocketAddr) -> Result<Server> {
    let data_dir = TempDir::new("flotilla-etcd-bench-data")?;
    let port = free_loopback_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(binary);
    command
        .args(["server", "--listen", &address.to_string(), "--data-dir"])
        .arg(data_dir.path())
        .args(["--store", &format!("etcd://{etcd}")]);
    start("flotilla-etcd", command, address, log_dir, Some(data_dir))
}

/// moto's server from the pinned venv: the peer every figure is compared to.
pub fn start_moto(moto_server: &Path, log_dir: &Path) -> Result<Server> {
    let port = free_loopback_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(moto_server);
    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    start("moto", command, address, log_dir, None)
}

fn start(
    name: &'static str,
    mut command: Command,
    address: SocketAddr,
    log_dir: &Path,
    data_dir: Option<TempDir>,
) -> Result<Server> {
    std::fs::create_dir_all(log_dir)?;
    let log_path = log_dir.join(format!("{name}.log"));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = command
        .spawn()
        .with_context(|| format!("starting {name}: {command:?}"))?;
    let mut server = Server {
        name,
        address,
        child,
        _data_dir: data_dir,
    };
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "{name} exited with {status} before listening; log:\n{}",
                log_tail(&log_path)
            );
        }
        if TcpStream::connect_timeout(&address, STARTUP_POLL_INTERVAL).is_ok() {
            eprintln!(
                "{name} is listening on {address} (pid {}, log {})",
                server.pid(),
                log_path.display()
            );
            return Ok(server);
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            bail!(
                "{name} did not listen on {address} within {STARTUP_TIMEOUT:?}; log:\n{}",
                log_tail(&log_path)
            );
        }
        std::thread::sleep(STARTUP_POLL_INTERVAL);
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(LOG_TAIL_BYTES);
    let start = (start..text.len())
        .find(|&at| text.is_char_boundary(at))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// Linux reports process CPU times in these ticks to user space, whatever the
/// kernel's own timer frequency (`USER_HZ`, what `getconf CLK_TCK` prints).
const USER_HZ: f64 = 100.0;

/// CPU time (user plus system) a process has used so far, from
/// `/proc/<pid>/stat`; `None` where there is no such file.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces; fields follow it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user_ticks: f64 = fields.get(11)?.parse().ok()?;
    let system_ticks: f64 = fields.get(12)?.parse().ok()?;
    Some((user_ticks + system_ticks) / USER_HZ)
}

/// Debian's `docker-registry` (the CNCF distribution registry) on a fresh
/// directory, with filesystem storage and no authentication: the peer of
/// `bench registry`.
pub fn start_docker_registry(binary: &Path, log_dir: &Path) -> Result<Server> {
    let data_dir = TempDir::new("docker-registry-bench-data")?;
    let port = free_loopback_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let config = data_dir.path().join("config.yml");
    let storage = data_dir.path().join("storage");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
            storage.display()
        ),
    )?;
    let mut command = Command::new(binary);
    command.arg("serve").arg(&config);
    start("docker-registry", command, address, log_dir, Some(data_dir))
}
