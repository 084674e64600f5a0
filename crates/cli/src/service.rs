//! `flotilla service deploy`: UpdateService, then the rollout live: a bar of
//! the new deployment's running tasks over its desired count, the older
//! deployments' tasks still draining, and the service's events as they come.
//! The exit status says how it ended: 0 completed, 2 failed, 3 rolled back,
//! 4 timed out.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use flotilla_agent::api::{AgentCredentials, ApiClient, Endpoint};
use flotilla_types::ecs::{
    DeploymentConfiguration, DeploymentRolloutState, DescribeServicesRequest,
    DescribeServicesResponse, Service, UpdateServiceRequest, UpdateServiceResponse,
};

/// How often the rollout is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const BAR_WIDTH: usize = 30;

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Update a service (task definition, desired count, ...) and follow the
    /// rollout until it completes, fails or is rolled back.
    Deploy(DeployArgs),
}

#[derive(Args)]
pub struct DeployArgs {
    /// The control plane's API.
    #[arg(long, default_value = "http://127.0.0.1:8440")]
    endpoint: String,
    /// Region to sign requests for [default: as the AWS CLI finds it].
    #[arg(long)]
    region: Option<String>,
    /// Cluster (name or ARN).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Service (name or ARN).
    #[arg(long)]
    service: String,
    /// Task definition to roll out (family, family:revision or ARN).
    #[arg(long)]
    task_definition: Option<String>,
    /// Tasks the service keeps running (REPLICA services; unchanged when not given).
    #[arg(long, value_name = "N")]
    desired_count: Option<i32>,
    /// Start a new deployment even when nothing else changes.
    #[arg(long)]
    force_new_deployment: bool,
    /// Healthy tasks kept during the rollout, in percent of the desired count
    /// (rounded up); the service's setting when not given.
    #[arg(long, value_name = "PERCENT")]
    minimum_healthy_percent: Option<i32>,
    /// Tasks running or pending during the rollout, in percent of the desired
    /// count (rounded down): how many new tasks start at once; the service's
    /// setting when not given.
    #[arg(long, value_name = "PERCENT")]
    maximum_percent: Option<i32>,
    /// Give up following after this long (the deployment goes on).
    #[arg(long, default_value_t = 900)]
    timeout_seconds: u64,
}

/// How a followed rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    RolledBack,
    TimedOut,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Completed => 0,
            Outcome::Failed => 2,
            Outcome::RolledBack => 3,
            Outcome::TimedOut => 4,
        }
    }
}

/// What one look at the service says about the followed deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Which deployment the counts are of.
    pub following: Following,
    pub running: i32,
    pub desired: i32,
    pub pending: i32,
    /// Tasks of the other deployments still running or pending.
    pub draining: i32,
    pub outcome: Option<Outcome>,
}

/// The deployment the bar follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Following {
    /// The deployment being rolled out, while it is PRIMARY.
    New,
    /// The deployment the circuit breaker rolled back to, still rolling out.
    RollingBack,
    /// The same, once it completed.
    RolledBack,
    /// Another deployment that replaced the followed one.
    Replaced,
}

/// Where the deployment `id` stands in `service`. Pure. Once it is no
/// longer PRIMARY (rolled back or replaced), the counts are the PRIMARY's:
/// the deployment that runs the service now.
pub fn progress(service: &Service, id: &str) -> Progress {
    let deployments = service.deployments.clone().unwrap_or_default();
    let ours = deployments.iter().find(|d| d.id.as_deref() == Some(id));
    let primary = deployments.first();
    let shown = match primary {
        Some(p) if p.id.as_deref() != Some(id) => Some(p),
        _ => ours,
    };
    let shown_id = shown.and_then(|d| d.id.as_deref());
    let draining = deployments
        .iter()
        .filter(|d| d.id.as_deref() != shown_id)
        .map(|d| d.running_count.unwrap_or(0) + d.pending_count.unwrap_or(0))
        .sum();
    let scaled = service.running_count == service.desired_count;
    let outcome = match ours {
        Some(d)
            if d.rollout_state == Some(DeploymentRolloutState::Completed)
                && deployments.len() == 1
                && scaled =>
        {
            Some(Outcome::Completed)
        }
        Some(d) if d.rollout_state == Some(DeploymentRolloutState::Failed) => {
            let rolled_back = primary.is_some_and(|p| p.id.as_deref() != Some(id));
            match (rolled_back, primary) {
                // Rolled back once the rollback itself completed.
                (true, Some(p))
                    if p.rollout_state == Some(DeploymentRolloutState::Completed)
                        && deployments.len() == 1
                        && scaled =>
                {
                    Some(Outcome::RolledBack)
                }
                (true, _) => None,
                (false, _) => Some(Outcome::Failed),
            }
        }
        Some(_) => None,
        // Gone from the list: it failed and its tasks drained, or another
        // deployment replaced it.
        None => match primary {
            Some(p)
                if p.rollout_state == Some(DeploymentRolloutState::Completed)
                    && deployments.len() == 1
                    && scaled =>
            {
                Some(Outcome::RolledBack)
            }
            _ => None,
        },
    };
    let ours_failed = ours.is_none_or(|d| d.rollout_state == Some(DeploymentRolloutState::Failed));
    let following = match shown {
        Some(d) if d.id.as_deref() == Some(id) => Following::New,
        _ if outcome == Some(Outcome::RolledBack) => Following::RolledBack,
        _ if ours_failed => Following::RollingBack,
        _ => Following::Replaced,
    };
    Progress {
        following,
        running: shown.and_then(|d| d.running_count).unwrap_or(0),
        desired: shown.and_then(|d| d.desired_count).unwrap_or(0),
        pending: shown.and_then(|d| d.pending_count).unwrap_or(0),
        draining,
        outcome,
    }
}

/// `[#########.........] 3/4 new running, 1 pending, 2 old draining`; after
/// a rollback, the deployment rolled back to:
/// `[######################........] 3/4 running, rolling back, 1 pending, 1 draining`.
pub fn bar(progress: &Progress) -> String {
    let filled = if progress.desired > 0 {
        (progress.running.clamp(0, progress.desired) as usize * BAR_WIDTH)
            / progress.desired as usize
    } else {
        BAR_WIDTH
    };
    let (running, draining) = match progress.following {
        Following::New => ("new running", "old draining"),
        Following::RollingBack => ("running, rolling back", "draining"),
        Following::RolledBack => ("running after the rollback", "draining"),
        Following::Replaced => ("running in the deployment that replaced it", "draining"),
    };
    format!(
        "[{}{}] {}/{} {running}, {} pending, {} {draining}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        progress.running,
        progress.desired,
        progress.pending,
        progress.draining
    )
}

pub async fn run(command: ServiceCommand) -> Result<i32> {
    let ServiceCommand::Deploy(args) = command;
    let endpoint = Endpoint::parse(&args.endpoint)?;
    let credentials = AgentCredentials {
        access_key_id: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".to_owned()),
        secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY")
            .unwrap_or_else(|_| "test".to_owned()),
    };
    let client = ApiClient::new(
        endpoint,
        credentials,
        crate::resolve_region(args.region.as_deref())?.name,
        Arc::new(flotilla_agent::clock::SystemClock),
    );
    let configuration = (args.minimum_healthy_percent.is_some() || args.maximum_percent.is_some())
        .then(|| DeploymentConfiguration {
            minimum_healthy_percent: args.minimum_healthy_percent,
            maximum_percent: args.maximum_percent,
            ..Default::default()
        });
    let request = UpdateServiceRequest {
        cluster: Some(args.cluster.clone()),
        service: Some(args.service.clone()),
        task_definition: args.task_definition.clone(),
        desired_count: args.desired_count,
        force_new_deployment: Some(args.force_new_deployment),
        deployment_configuration: configuration,
        ..Default::default()
    };
    let updated: UpdateServiceResponse = client
        .call("UpdateService", &request)
        .await
        .context("updating the service")?;
    let service = updated.service.unwrap_or_default();
    let deployment = service
        .deployments
        .as_ref()
        .and_then(|d| d.first())
        .and_then(|d| d.id.clone())
        .unwrap_or_default();
    let mut seen_events: HashSet<String> = service
        .events
        .iter()
        .flatten()
        .filter_map(|e| e.id.clone())
        .collect();
    let name = service
        .service_name
        .clone()
        .unwrap_or_else(|| args.service.clone());
    println!(
        "deploying {} to service {name} (deployment {deployment})",
        service.task_definition.as_deref().unwrap_or("?")
    );
    let live = std::io::stdout().is_terminal();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut last_bar = String::new();
    let outcome = loop {
        let described: DescribeServicesResponse = client
            .call(
                "DescribeServices",
                &DescribeServicesRequest {
                    cluster: Some(args.cluster.clone()),
                    services: Some(vec![args.service.clone()]),
                    include: None,
                },
            )
            .await
            .context("describing the service")?;
        let service = described
            .services
            .and_then(|s| s.into_iter().next())
            .unwrap_or_default();
        let mut fresh: Vec<_> = service
            .events
            .iter()
            .flatten()
            .filter(|e| e.id.as_ref().is_some_and(|id| !seen_events.contains(id)))
            .cloned()
            .collect();
        fresh.reverse();
        let now = progress(&service, &deployment);
        let line = bar(&now);
        let mut out = std::io::stdout().lock();
        if !fresh.is_empty() && live {
            write!(out, "\r\x1b[2K")?;
        }
        for event in fresh {
            if let Some(id) = &event.id {
                seen_events.insert(id.clone());
            }
            writeln!(out, "  {}", event.message.as_deref().unwrap_or_default())?;
        }
        if live {
            write!(out, "\r\x1b[2K{line}")?;
        } else if line != last_bar {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        last_bar = line;
        if let Some(outcome) = now.outcome {
            break outcome;
        }
        if Instant::now() >= deadline {
            break Outcome::TimedOut;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    if live {
        println!();
    }
    match outcome {
        Outcome::Completed => println!("deployment {deployment} completed"),
        Outcome::Failed => println!("deployment {deployment} failed"),
        Outcome::RolledBack => println!("deployment {deployment} failed and was rolled back"),
        Outcome::TimedOut => println!(
            "stopped following deployment {deployment} after {} s; it goes on",
            args.timeout_seconds
        ),
    }
    Ok(outcome.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_types::ecs::Deployment;

    fn deployment(id: &str, state: DeploymentRolloutState, running: i32) -> Deployment {
        Deployment {
            id: Some(id.to_owned()),
            rollout_state: Some(state),
            running_count: Some(running),
            pending_count: Some(0),
            desired_count: Some(4),
            ..Default::default()
        }
    }

    fn service(deployments: Vec<Deployment>) -> Service {
        Service {
            deployments: Some(deployments),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_follow_the_deployments() {
        use DeploymentRolloutState::*;
        let rolling = service(vec![
            deployment("new", InProgress, 2),
            deployment("old", Completed, 2),
        ]);
        assert_eq!(progress(&rolling, "new").outcome, None);
        assert_eq!(progress(&rolling, "new").draining, 2);
        assert_eq!(
            bar(&progress(&rolling, "new")),
            format!(
                "[{}{}] 2/4 new running, 0 pending, 2 old draining",
                "#".repeat(15),
                ".".repeat(15)
            )
        );
        let done = service(vec![deployment("new", Completed, 4)]);
        assert_eq!(progress(&done, "new").outcome, Some(Outcome::Completed));
        let failed = service(vec![
            deployment("new", Failed, 0),
            deployment("old", Completed, 4),
        ]);
        assert_eq!(progress(&failed, "new").outcome, Some(Outcome::Failed));
        let rolling_back = service(vec![
            deployment("old", InProgress, 3),
            deployment("new", Failed, 0),
        ]);
        assert_eq!(progress(&rolling_back, "new").outcome, None);
        // Rolling back: the bar follows the deployment rolled back to, not
        // the failed one's 0/0.
        let mut failed_drained = deployment("new", Failed, 0);
        failed_drained.desired_count = Some(0);
        let rolling_back = service(vec![deployment("old", InProgress, 3), failed_drained]);
        assert_eq!(
            bar(&progress(&rolling_back, "new")),
            format!(
                "[{}{}] 3/4 running, rolling back, 0 pending, 0 draining",
                "#".repeat(22),
                ".".repeat(8)
            )
        );
        let rolled_back = service(vec![deployment("old", Completed, 4)]);
        assert_eq!(
            progress(&rolled_back, "new").outcome,
            Some(Outcome::RolledBack)
        );
        assert_eq!(
            bar(&progress(&rolled_back, "new")),
            format!(
                "[{}] 4/4 running after the rollback, 0 pending, 0 draining",
                "#".repeat(30)
            )
        );
    }
}
