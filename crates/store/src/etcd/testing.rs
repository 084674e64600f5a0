//! A single-member etcd for tests: Debian's `etcd` binary (package
//! `etcd-server`) on free loopback ports with a data directory of its own,
//! killed and removed when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The binary the tests run, found on `PATH`.
pub const ETCD_BINARY: &str = "etcd";
/// How many times readiness is polled, [`READY_POLL`] apart.
const READY_POLLS: u32 = 300;
const READY_POLL: Duration = Duration::from_millis(50);

/// A running etcd, stopped (kill -9) and its data removed on drop.
pub struct EtcdServer {
    child: Child,
    data_dir: PathBuf,
    client_address: SocketAddr,
    tls: bool,
}

/// Whether `etcd` is on `PATH`.
pub fn etcd_available() -> bool {
    Command::new(ETCD_BINARY)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// An etcd for `test`, or `None` (and a note on stderr) when the binary is
/// missing. Under CI (`CI` set) a missing binary fails the test instead:
/// the etcd backend must be tested there.
pub fn etcd_or_skip(test: &str) -> Option<EtcdServer> {
    if !etcd_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: CI is set but there is no `{ETCD_BINARY}` binary on PATH (Debian package etcd-server); the etcd tests must run in CI"
        );
        eprintln!("skipping {test}: no `{ETCD_BINARY}` on PATH (under CI this fails)");
        return None;
    }
    match EtcdServer::start(&[]) {
        Ok(server) => Some(server),
        Err(error) => panic!("{test}: {error}"),
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Starts etcd with `extra_args` after the flags that place it, and
    /// waits until it answers `/health`. Retries on fresh ports when etcd
    /// exits early (another process took a port between choice and bind).
    pub fn start(extra_args: &[&str]) -> Result<EtcdServer, String> {
        Self::start_with(None, extra_args)
    }

    /// Starts etcd serving clients over TLS with this certificate and key
    /// (PEM files). Ready once it accepts connections: `/health` is not
    /// asked over TLS here, so a caller retries its first request.
    pub fn start_tls(
        certificate: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<EtcdServer, String> {
        Self::start_with(Some((certificate, key)), &[])
    }

    fn start_with(
        tls: Option<(&std::path::Path, &std::path::Path)>,
        extra_args: &[&str],
    ) -> Result<EtcdServer, String> {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::start_once(tls, extra_args) {
                Ok(server) => return Ok(server),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    fn start_once(
        tls: Option<(&std::path::Path, &std::path::Path)>,
        extra_args: &[&str],
    ) -> Result<EtcdServer, String> {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let data_dir = std::env::temp_dir().join(format!(
            "flotilla-etcd-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&data_dir)
            .map_err(|error| format!("creating {}: {error}", data_dir.display()))?;
        let (client_port, peer_port) = (
            free_port().map_err(|error| error.to_string())?,
            free_port().map_err(|error| error.to_string())?,
        );
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
        let mut tls_args = Vec::new();
        if let Some((certificate, key)) = tls {
            tls_args.push("--cert-file".to_owned());
            tls_args.push(certificate.to_string_lossy().into_owned());
            tls_args.push("--key-file".to_owned());
            tls_args.push(key.to_string_lossy().into_owned());
        }
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(data_dir.join("etcd.log"))
            .map_err(|error| format!("creating etcd's log: {error}"))?;
        let log_err = log
            .try_clone()
            .map_err(|error| format!("opening etcd's log: {error}"))?;
        let child = Command::new(ETCD_BINARY)
            .args([
                "--name",
                "flotilla-test",
                "--data-dir",
                &data_dir.join("member").to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("flotilla-test={peer_url}"),
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ])
            .args(&tls_args)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|error| format!("starting {ETCD_BINARY}: {error}"))?;
        let mut server = EtcdServer {
            child,
            data_dir,
            client_address: SocketAddr::from(([127, 0, 0, 1], client_port)),
            tls: tls.is_some(),
        };
        for _ in 0..READY_POLLS {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "etcd exited with {status} before it was ready; its log:\n{}",
                    server.log()
                ));
            }
            if server.healthy() {
                return Ok(server);
            }
            std::thread::sleep(READY_POLL);
        }
        Err(format!(
            "etcd was not healthy after {:?}; its log:\n{}",
            READY_POLL * READY_POLLS,
            server.log()
        ))
    }

    /// `HOST:PORT` of the client URL, as [`crate::EtcdOptions`] takes it.
    pub fn endpoint(&self) -> String {
        self.client_address.to_string()
    }

    /// Options for a store on this server, in its own `namespace`.
    pub fn options(&self) -> crate::EtcdOptions {
        crate::EtcdOptions {
            endpoints: vec![self.endpoint()],
            namespace: crate::etcd::DEFAULT_NAMESPACE.to_owned(),
            user: None,
            tls: None,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("etcd.log")).unwrap_or_default()
    }

    /// Whether etcd's `/health` says so (it needs a leader); over TLS,
    /// whether it accepts connections.
    fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.client_address, READY_POLL * 4)
        else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.client_address
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.contains("\"health\":\"true\"")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
