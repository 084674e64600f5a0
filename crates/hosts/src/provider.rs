//! Host providers: "give me a host / take this host back".
//!
//! The control plane writes its intent (a host record in LAUNCHING or
//! TERMINATING) before it calls a provider, and calls again after a crash,
//! so every provider must be idempotent per `host_id`: launching a host that
//! already runs, or terminating one already gone, succeeds and changes
//! nothing. That is what keeps a kill -9 from leaking or doubling hosts.
//!
//! A launched host runs `flotilla agent` with [`HostSpec::agent_args`]: it
//! registers into the cluster and the capacity provider, and carries the
//! attribute `flotilla.host-id`, by which the control plane knows which
//! container instance a host became.

use std::future::Future;
use std::pin::Pin;

pub mod command;
pub mod docker;
pub mod simulated;

/// The container instance attribute naming the host it runs on.
pub const HOST_ID_ATTRIBUTE: &str = "flotilla.host-id";

pub type HostFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HostError>> + Send + 'a>>;

/// One host to launch or terminate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    pub host_id: String,
    /// The host group (Auto Scaling group stand-in) it belongs to.
    pub group: String,
    pub cluster: String,
    pub capacity_provider: String,
    /// The control plane's API, as the host's agent should reach it.
    pub endpoint: String,
    pub region: String,
    /// Its size: what a simulated agent registers with, and what a real
    /// host is expected to have.
    pub cpu_units: u64,
    pub memory_mib: u64,
}

impl HostSpec {
    /// The `flotilla agent` arguments that join this host to its cluster
    /// and capacity provider (after the program name).
    pub fn agent_args(&self) -> Vec<String> {
        [
            "agent",
            "--endpoint",
            &self.endpoint,
            "--cluster",
            &self.cluster,
            "--region",
            &self.region,
            "--capacity-provider",
            &self.capacity_provider,
            "--attribute",
            &format!("{HOST_ID_ATTRIBUTE}={}", self.host_id),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// The same, for an agent that runs one simulated instance of this
    /// host's size.
    pub fn simulated_agent_args(&self) -> Vec<String> {
        let mut args = self.agent_args();
        args.extend([
            "--simulate".to_owned(),
            "1".to_owned(),
            "--simulate-cpu".to_owned(),
            self.cpu_units.to_string(),
            "--simulate-memory".to_owned(),
            self.memory_mib.to_string(),
        ]);
        args
    }
}

/// Why a provider could not launch or terminate a host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {action} {host_id} failed ({status}): {stderr}")]
    Failed {
        program: String,
        action: &'static str,
        host_id: String,
        status: String,
        stderr: String,
    },
    #[error("{program} {action} {host_id} did not finish within {timeout_ms} ms")]
    TimedOut {
        program: String,
        action: &'static str,
        host_id: String,
        timeout_ms: u64,
    },
    #[error("simulated provider refused {action} {host_id}")]
    Injected {
        action: &'static str,
        host_id: String,
    },
}

/// Launches and terminates hosts. Both calls are idempotent per host id.
pub trait HostProvider: Send + Sync {
    fn launch<'a>(&'a self, host: &'a HostSpec) -> HostFuture<'a>;
    fn terminate<'a>(&'a self, host: &'a HostSpec) -> HostFuture<'a>;
}

/// The provider a group's kind names. `agent_program` is the `flotilla`
/// binary a launched host runs; `simulated` is the one in-process provider
/// every simulated group shares.
pub fn for_kind(
    kind: &crate::ProviderKind,
    agent_program: &std::path::Path,
    simulated: &std::sync::Arc<simulated::Simulated>,
) -> std::sync::Arc<dyn HostProvider> {
    match kind {
        crate::ProviderKind::Docker {
            image,
            simulated: sim,
        } => std::sync::Arc::new(docker::Docker {
            image: image.clone(),
            agent_program: agent_program.to_owned(),
            simulated: *sim,
        }),
        crate::ProviderKind::Command { program } => std::sync::Arc::new(command::Command {
            program: program.clone(),
            agent_program: agent_program.to_owned(),
        }),
        crate::ProviderKind::Simulated => {
            std::sync::Arc::clone(simulated) as std::sync::Arc<dyn HostProvider>
        }
    }
}
