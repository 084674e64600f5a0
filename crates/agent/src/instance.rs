//! One container instance from start to deregistration: identity,
//! registration, the engine and the control channel. A real agent runs one;
//! `--simulate N` runs N in one process through this same code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::ContainerRuntime;
use flotilla_types::acs::conventions;
use tokio::sync::{mpsc, Semaphore};

use crate::api::{ApiCallError, ApiClient};
use crate::backoff::backoff_delay_ms;
use crate::channel::{self, ChannelEnd, ChannelIdentity};
use crate::clock::{seed_from, Clock, IdSource, Jitter};
use crate::engine::{Engine, EngineParts, EngineSettings};
use crate::host::{cluster_name, registration_request, Identity, InstanceProfile};
use crate::metadata::{InstanceMetadata, MetadataRegistry};
use crate::pause::PauseImage;
use crate::persist::Persistence;
use crate::reporter::Reporter;
use crate::task_network::{self, Registered};
use crate::AgentError;

/// Health messages waiting for the control channel.
pub const HEALTH_QUEUE_MAX: usize = 256;
/// How long a deregistered instance waits for its tasks to stop and be reported.
pub const DEREGISTRATION_STOP_LIMIT: Duration = Duration::from_secs(5 * 60);

/// Everything one instance needs.
pub struct InstanceSetup {
    /// For logs: `agent`, or `sim-12`.
    pub label: String,
    pub data_dir: PathBuf,
    /// The cluster as the user named it.
    pub cluster: String,
    /// The registration, less the instance id (which comes from the identity).
    pub profile: InstanceProfile,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub api: ApiClient,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    pub persistence: Persistence,
    pub settings: EngineSettings,
    pub metadata: Option<Arc<MetadataRegistry>>,
    pub pause_image: Arc<PauseImage>,
    /// Limits registrations in flight across instances, so a thousand
    /// simulated instances do not all register in the same instant.
    pub registration_gate: Arc<Semaphore>,
}

/// How an instance ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceExit {
    Deregistered { reason: String },
}

/// The instance id a host reports: an external (ECS Anywhere) host is a
/// managed instance, whose ids start with `mi-` rather than EC2's `i-`.
fn reported_instance_id(instance_id: &str, external: bool) -> String {
    match instance_id.strip_prefix("i-") {
        Some(hex) if external => format!("mi-{hex}"),
        _ => instance_id.to_owned(),
    }
}

/// Runs one instance until it is deregistered.
pub async fn run_instance(setup: InstanceSetup) -> Result<InstanceExit, AgentError> {
    let jitter = Jitter::seeded(seed_from(&setup.label, &setup.clock));
    let mut identity = Identity::load_or_create(&setup.data_dir, &setup.cluster, &*setup.ids)?;
    let profile = InstanceProfile {
        instance_id: reported_instance_id(&identity.instance_id, setup.profile.external),
        ..setup.profile.clone()
    };
    let task_network = conventions::task_network_name(&identity.instance_id);
    let instance_arn = {
        let (setup, profile, jitter) = (&setup, &profile, &jitter);
        task_network::register_with_task_network(
            &*setup.runtime,
            &task_network,
            identity.container_instance_arn.clone(),
            |subnets_in_use, existing_arn| {
                let profile = InstanceProfile {
                    subnets_in_use,
                    ..profile.clone()
                };
                async move { register(setup, &profile, existing_arn, jitter).await }
            },
        )
        .await?
    };
    identity.container_instance_arn = Some(instance_arn.clone());
    identity.save(&setup.data_dir, &setup.persistence).await?;
    tracing::info!(instance = %setup.label, arn = %instance_arn, instance_id = %identity.instance_id, "registered");

    if let Some(metadata) = &setup.metadata {
        metadata.set_instance(InstanceMetadata {
            cluster: setup.cluster.clone(),
            container_instance_arn: instance_arn.clone(),
            availability_zone: profile.availability_zone.clone(),
            launch_type: if profile.fargate {
                "FARGATE".to_owned()
            } else if profile.external {
                "EXTERNAL".to_owned()
            } else {
                "EC2".to_owned()
            },
        });
    }
    let reporter = Reporter::start(
        Arc::new(setup.api.clone()),
        setup.data_dir.join("outbox"),
        setup.persistence.clone(),
        Jitter::seeded(seed_from(&instance_arn, &setup.clock)),
    )?;
    let (health_sender, mut health_receiver) = mpsc::channel(HEALTH_QUEUE_MAX);
    let stats_sender = health_sender.clone();
    let engine = start_engine(&setup, &identity, reporter, health_sender, &jitter).await?;
    let sampling = tokio::spawn(crate::usage::run(
        Arc::clone(&engine),
        Arc::clone(&setup.runtime),
        Arc::clone(&setup.clock),
        stats_sender,
        setup.settings.stats_interval,
    ));

    let channel_identity = ChannelIdentity {
        cluster: setup.cluster.clone(),
        container_instance_arn: instance_arn,
        label: setup.label.clone(),
    };
    let ChannelEnd::Deregistered { reason } = channel::run(
        &setup.api,
        &channel_identity,
        &engine,
        &mut health_receiver,
        &jitter,
    )
    .await;
    sampling.abort();
    tracing::info!(instance = %setup.label, %reason, "deregistered; stopping every task");
    if engine.stop_all(&reason, DEREGISTRATION_STOP_LIMIT).await {
        task_network::release(&*setup.runtime, &task_network).await;
    } else {
        tracing::warn!(instance = %setup.label, "not every task stopped and reported in time");
    }
    // A deregistered instance cannot come back under the same ARN.
    identity.container_instance_arn = None;
    identity.save(&setup.data_dir, &setup.persistence).await?;
    Ok(InstanceExit::Deregistered { reason })
}

/// Registers once, retrying what can be retried; `existing` brings the
/// stored instance back when the control plane still knows it.
async fn register(
    setup: &InstanceSetup,
    profile: &InstanceProfile,
    mut existing: Option<String>,
    jitter: &Jitter,
) -> Result<Registered, AgentError> {
    let mut attempt: u32 = 0;
    loop {
        let request = registration_request(profile, existing.as_deref());
        let result = {
            let _permit = setup.registration_gate.acquire().await;
            setup.api.register_container_instance(&request).await
        };
        let error = match result {
            Ok(response) => match response.container_instance {
                Some(instance) if instance.container_instance_arn.is_some() => {
                    let arn = instance.container_instance_arn.clone().unwrap_or_default();
                    return Ok(Registered { instance, arn });
                }
                _ => ApiCallError::Decode {
                    operation: "RegisterContainerInstance",
                    reason: "the answer names no containerInstanceArn".to_owned(),
                },
            },
            Err(error) => error,
        };
        if error.is_retryable() {
            let delay_ms = backoff_delay_ms(attempt, jitter.next_fraction());
            attempt = attempt.saturating_add(1);
            tracing::warn!(instance = %setup.label, %error, delay_ms, "cannot register yet; retrying");
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        } else if existing.is_some() {
            tracing::warn!(instance = %setup.label, %error, "the control plane refused the stored instance; registering as a new one");
            existing = None;
        } else {
            return Err(AgentError::Registration(error));
        }
    }
}

async fn start_engine(
    setup: &InstanceSetup,
    identity: &Identity,
    reporter: Reporter,
    health: mpsc::Sender<flotilla_types::acs::FromAgent>,
    jitter: &Jitter,
) -> Result<Arc<Engine>, AgentError> {
    let mut attempt: u32 = 0;
    loop {
        let parts = EngineParts {
            runtime: Arc::clone(&setup.runtime),
            reporter: reporter.clone(),
            clock: Arc::clone(&setup.clock),
            ids: Arc::clone(&setup.ids),
            persistence: setup.persistence.clone(),
            data_dir: setup.data_dir.clone(),
            instance_id: identity.instance_id.clone(),
            cluster_label: cluster_name(&setup.cluster).to_owned(),
            settings: setup.settings.clone(),
            health: health.clone(),
            metadata: setup.metadata.clone(),
            pause_image: Arc::clone(&setup.pause_image),
        };
        match Engine::start(parts).await {
            Ok(engine) => return Ok(engine),
            Err(crate::engine::EngineError::Runtime(error)) => {
                // The engine may still be coming up (the agent started first).
                let delay_ms = backoff_delay_ms(attempt, jitter.next_fraction());
                attempt = attempt.saturating_add(1);
                tracing::warn!(instance = %setup.label, %error, delay_ms, "container engine not ready; retrying");
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}
