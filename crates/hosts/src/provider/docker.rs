//! The `docker` provider: each host is a container on this machine's Docker
//! engine running `flotilla agent`, for a laptop or CI.
//!
//! The container runs the control plane's own `flotilla` binary, mounted
//! read-only, in `image` (which must be able to run it: same libc), on the
//! host network so the agent reaches the API at the address the control
//! plane advertises. Two modes:
//!
//! - `simulated=true`: the agent runs one simulated instance of the group's
//!   size (a fake runtime inside the container). Hosts cost a few MiB each;
//!   tasks reach RUNNING without containers. Good for trying scaling out.
//! - otherwise the agent shares the machine's Docker engine through the
//!   mounted `/var/run/docker.sock`: its tasks are real containers, siblings
//!   of the host container, and they stay when the host is terminated only
//!   if the host is terminated while they run (managed termination
//!   protection prevents that). Each such agent serves its task metadata
//!   endpoint on a port of its own, chosen by the system.
//!
//! Docker is reached through its CLI, as an operator's script would: this
//! provider is the `command` provider with the commands built in.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::{HostError, HostFuture, HostProvider, HostSpec};

/// What a group's hosts run in unless it names an image.
pub const IMAGE_DEFAULT: &str = "debian:stable-slim";
/// Where the `flotilla` binary is mounted in a host container.
const AGENT_PATH: &str = "/usr/local/bin/flotilla";
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Label every host container carries, for finding them by hand.
const GROUP_LABEL: &str = "flotilla.host-group";

pub struct Docker {
    pub image: String,
    pub agent_program: PathBuf,
    pub simulated: bool,
}

/// The container a host is.
pub fn container_name(host_id: &str) -> String {
    format!("flotilla-host-{host_id}")
}

impl Docker {
    /// `docker run` arguments for `host`.
    pub fn run_args(&self, host: &HostSpec) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--name".into(),
            container_name(&host.host_id),
            "--label".into(),
            format!("{GROUP_LABEL}={}", host.group),
            "--label".into(),
            format!("{}={}", super::HOST_ID_ATTRIBUTE, host.host_id),
            "--network".into(),
            "host".into(),
            "--volume".into(),
            format!("{}:{AGENT_PATH}:ro", self.agent_program.display()),
        ];
        if !self.simulated {
            args.extend([
                "--volume".into(),
                format!(
                    "{socket}:{socket}",
                    socket = flotilla_runtime::DEFAULT_SOCKET_PATH
                ),
            ]);
        }
        args.extend([self.image.clone(), AGENT_PATH.into()]);
        if self.simulated {
            args.extend(host.simulated_agent_args());
        } else {
            args.extend(host.agent_args());
            args.extend(["--metadata-port".into(), "0".into()]);
        }
        args.extend(["--data-dir".into(), "/var/lib/flotilla-agent".into()]);
        args
    }

    async fn docker(
        &self,
        action: &'static str,
        host: &HostSpec,
        args: Vec<String>,
        done_if: &str,
    ) -> Result<(), HostError> {
        let child = tokio::process::Command::new("docker")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(CALL_TIMEOUT, child)
            .await
            .map_err(|_| HostError::TimedOut {
                program: "docker".into(),
                action,
                host_id: host.host_id.clone(),
                timeout_ms: CALL_TIMEOUT.as_millis() as u64,
            })?
            .map_err(|source| HostError::Spawn {
                program: "docker".into(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Idempotence: a host that already runs (or is already gone) is done.
        if output.status.success() || stderr.contains(done_if) {
            return Ok(());
        }
        Err(HostError::Failed {
            program: "docker".into(),
            action,
            host_id: host.host_id.clone(),
            status: output.status.to_string(),
            stderr: stderr
                .chars()
                .take(2048)
                .collect::<String>()
                .trim()
                .to_owned(),
        })
    }
}

impl HostProvider for Docker {
    fn launch<'a>(&'a self, host: &'a HostSpec) -> HostFuture<'a> {
        Box::pin(self.docker("launch", host, self.run_args(host), "is already in use"))
    }

    fn terminate<'a>(&'a self, host: &'a HostSpec) -> HostFuture<'a> {
        let args = vec!["rm".into(), "--force".into(), container_name(&host.host_id)];
        Box::pin(self.docker("terminate", host, args, "No such container"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_host_container_runs_a_simulated_agent_of_the_group_size() {
        let docker = Docker {
            image: "img".into(),
            agent_program: "/bin/flotilla".into(),
            simulated: true,
        };
        let host = HostSpec {
            host_id: "web-1".into(),
            group: "web".into(),
            cluster: "c".into(),
            capacity_provider: "cp".into(),
            endpoint: "http://127.0.0.1:8440".into(),
            region: "us-east-1".into(),
            cpu_units: 1024,
            memory_mib: 2048,
        };
        let args = docker.run_args(&host).join(" ");
        assert!(args.contains("--name flotilla-host-web-1"), "{args}");
        assert!(
            args.contains(
                "img /usr/local/bin/flotilla agent --endpoint http://127.0.0.1:8440 --cluster c"
            ),
            "{args}"
        );
        assert!(
            args.contains("--capacity-provider cp --attribute flotilla.host-id=web-1"),
            "{args}"
        );
        assert!(
            args.contains("--simulate 1 --simulate-cpu 1024 --simulate-memory 2048"),
            "{args}"
        );
        assert!(!args.contains("docker.sock"), "{args}");
    }
}
