//! `--host-group`: the host groups the control plane scales, each with the
//! provider that launches its hosts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use flotilla_control::host_groups::HostGroups;
use flotilla_control::Ecs;
use flotilla_hosts::provider::simulated::{Happened, Simulated};
use flotilla_hosts::HostGroup;

/// Builds the providers of `groups` and starts the scaling loop. Simulated
/// hosts are agents started in this process (and gone with it).
pub fn start(
    ecs: &Arc<Ecs>,
    election: Arc<dyn flotilla_store::Election>,
    groups: Vec<HostGroup>,
    region: &str,
    endpoint: &str,
    data_dir: PathBuf,
    period: std::time::Duration,
) -> Result<()> {
    if groups.is_empty() {
        return Ok(());
    }
    flotilla_hosts::group::check_all(&groups)?;
    let agent_program = std::env::current_exe().context("finding the flotilla binary")?;
    let simulated = Arc::new(Simulated::default());
    let happened = simulated.watch();
    let with_providers = groups
        .into_iter()
        .map(|group| {
            let provider =
                flotilla_hosts::provider::for_kind(&group.provider, &agent_program, &simulated);
            (group, provider)
        })
        .collect();
    let host_groups = Arc::new(HostGroups::new(
        with_providers,
        region.to_owned(),
        endpoint.to_owned(),
    ));
    let supervisor = ecs.supervisor().clone();
    // A receiver is single-use: the simulated hosts' loop is not restarted.
    tokio::spawn(run_simulated_hosts(
        happened,
        data_dir.join("simulated-hosts"),
    ));
    let scaled = Arc::clone(ecs);
    supervisor.spawn_led("host_groups", election, move || {
        Arc::clone(&host_groups).run(Arc::clone(&scaled), period)
    });
    Ok(())
}

/// Starts a simulated agent for each simulated host launched, and stops it
/// when the host is terminated.
async fn run_simulated_hosts(
    mut happened: tokio::sync::mpsc::UnboundedReceiver<Happened>,
    data_dir: PathBuf,
) {
    let mut agents: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    while let Some(event) = happened.recv().await {
        match event {
            Happened::Launched(host) => {
                let mut config = flotilla_agent::AgentConfig::new(
                    host.endpoint.clone(),
                    host.cluster.clone(),
                    data_dir.join(&host.host_id),
                );
                config.region = host.region.clone();
                config.capacity_provider = Some(host.capacity_provider.clone());
                config.attributes = vec![(
                    flotilla_hosts::provider::HOST_ID_ATTRIBUTE.to_owned(),
                    host.host_id.clone(),
                )];
                let simulation = flotilla_agent::SimulationConfig {
                    instances: 1,
                    cpu_units: host.cpu_units,
                    memory_mib: host.memory_mib,
                    ..Default::default()
                };
                let host_id = host.host_id.clone();
                let handle = tokio::spawn(async move {
                    if let Err(error) = flotilla_agent::run_simulated(config, simulation).await {
                        tracing::warn!(host = %host_id, %error, "simulated host's agent ended");
                    }
                });
                agents.insert(host.host_id, handle);
            }
            Happened::Terminated(host) => {
                if let Some(handle) = agents.remove(&host.host_id) {
                    handle.abort();
                }
            }
        }
    }
}
