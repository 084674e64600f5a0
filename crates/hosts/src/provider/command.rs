//! The `command` provider: the operator's executable launches and
//! terminates hosts, so any cloud, hypervisor or bare-metal tool plugs in.
//!
//! Contract (see `examples/host-provider.sh`):
//!
//! ```text
//! PROGRAM launch     < {"hostId": ..., "group": ..., "cluster": ..., "capacityProvider": ...,
//!                       "endpoint": ..., "region": ..., "cpuUnits": ..., "memoryMib": ...,
//!                       "agentProgram": "/path/to/flotilla", "agentArgs": ["agent", "--endpoint", ...]}
//! PROGRAM terminate  < the same description
//! ```
//!
//! Exit 0 means done; anything else is a failure (stderr is kept in the
//! error, and the control plane tries again on its next pass). Both must be
//! idempotent per `hostId`: the control plane repeats a call it cannot
//! confirm finished. `launch` returns once the host is started; the host's
//! agent registers on its own.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{HostError, HostFuture, HostProvider, HostSpec};

/// How long one call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of the program's stderr an error keeps.
const STDERR_KEPT_BYTES: usize = 2048;

pub struct Command {
    pub program: PathBuf,
    /// The `flotilla` binary, for the script to start an agent with.
    pub agent_program: PathBuf,
}

impl Command {
    async fn call(&self, action: &'static str, host: &HostSpec) -> Result<(), HostError> {
        let program = self.program.display().to_string();
        let mut description = serde_json::to_value(host).unwrap_or_default();
        description["agentProgram"] = self.agent_program.display().to_string().into();
        description["agentArgs"] = host.agent_args().into();
        let mut child = tokio::process::Command::new(&self.program)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HostError::Spawn {
                program: program.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read its input is its own business.
            let _ = stdin.write_all(description.to_string().as_bytes()).await;
        }
        let output = tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| HostError::TimedOut {
                program: program.clone(),
                action,
                host_id: host.host_id.clone(),
                timeout_ms: CALL_TIMEOUT.as_millis() as u64,
            })?
            .map_err(|source| HostError::Spawn {
                program: program.clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let start = stderr.len().saturating_sub(STDERR_KEPT_BYTES);
        let start = (start..stderr.len())
            .find(|i| stderr.is_char_boundary(*i))
            .unwrap_or(0);
        Err(HostError::Failed {
            program,
            action,
            host_id: host.host_id.clone(),
            status: output.status.to_string(),
            stderr: stderr[start..].trim().to_owned(),
        })
    }
}

impl HostProvider for Command {
    fn launch<'a>(&'a self, host: &'a HostSpec) -> HostFuture<'a> {
        Box::pin(self.call("launch", host))
    }

    fn terminate<'a>(&'a self, host: &'a HostSpec) -> HostFuture<'a> {
        Box::pin(self.call("terminate", host))
    }
}
