//! The instance's task network: the engine network its awsvpc tasks join,
//! on the /24 task subnet the control plane gives the instance.
//!
//! One engine may serve several Flotilla installations (and other
//! software), each numbering its task subnets from the same range, so the
//! subnet is settled at registration rather than at the first awsvpc task:
//!
//! ```text
//! list the engine's networks ──▶ register, reporting the subnets they hold
//!        ▲                                │ the control plane gives a subnet clear of them
//!        │                                ▼
//!        └── refused: another ──── create the task network now
//!            network got there            (the engine's claim on the subnet)
//!            first; report that one too
//! ```
//!
//! Creating the network at once is what makes the subnet this instance's:
//! the engine refuses a second network that overlaps it, whoever asks.

use std::future::Future;
use std::time::Duration;

use flotilla_runtime::{ContainerRuntime, NetworkInfo, RuntimeError};
use flotilla_types::ecs::ContainerInstance;

use crate::host::{subnets_in_use, task_subnet_of};
use crate::AgentError;

/// How many times an instance registers again for another task subnet
/// when the engine refused the one it was given: each refusal means
/// another network took that subnet between the listing and the claim,
/// which needs another installation registering at the same moment.
pub const TASK_SUBNET_CLAIMS_MAX: usize = 8;

/// What registering once returned: the instance as the control plane
/// answered, and which ARN to register with next time.
pub struct Registered {
    pub instance: ContainerInstance,
    pub arn: String,
}

/// Registers through `register` (called with the subnets to report and the
/// ARN to register again with) until the instance's task network exists on
/// the subnet the control plane gave it. Returns the instance's ARN.
pub async fn register_with_task_network<F, Fut>(
    runtime: &dyn ContainerRuntime,
    network: &str,
    existing_arn: Option<String>,
    mut register: F,
) -> Result<String, AgentError>
where
    F: FnMut(Vec<String>, Option<String>) -> Fut,
    Fut: Future<Output = Result<Registered, AgentError>>,
{
    let mut existing_arn = existing_arn;
    let mut refused: Vec<String> = Vec::new();
    loop {
        let networks = match runtime.list_networks().await {
            Ok(networks) => networks,
            Err(error) => {
                // Registering matters more: the claim below, or the first
                // awsvpc task, meets any conflict and says so.
                tracing::warn!(network, %error, "cannot list the engine's networks; registering without them");
                Vec::new()
            }
        };
        let reported = subnets_in_use(&networks, network, &refused);
        let registered = register(reported, existing_arn.clone()).await?;
        existing_arn = Some(registered.arn.clone());
        let Some(subnet) = task_subnet_of(&registered.instance) else {
            tracing::warn!(
                network,
                "the control plane named no task subnet; the task network is made at the first awsvpc task"
            );
            return Ok(registered.arn);
        };
        match claim(runtime, network, &subnet, &networks).await {
            Ok(()) => {
                tracing::info!(network, %subnet, "task network ready");
                return Ok(registered.arn);
            }
            Err(RuntimeError::SubnetInUse { reason, .. })
                if refused.len() + 1 < TASK_SUBNET_CLAIMS_MAX =>
            {
                tracing::warn!(network, %subnet, %reason, "another network took the task subnet first; registering for another");
                refused.push(subnet);
            }
            Err(error @ RuntimeError::SubnetInUse { .. }) => {
                return Err(AgentError::TaskNetwork {
                    network: network.to_owned(),
                    reason: format!(
                        "{error}; gave up after {TASK_SUBNET_CLAIMS_MAX} subnets were taken by other networks first"
                    ),
                })
            }
            Err(error) => {
                // Not the subnet: the engine itself (down, or the network
                // still used by containers of an earlier registration). The
                // instance serves its other tasks; awsvpc tasks make the
                // network when they start, or fail saying why.
                tracing::warn!(network, %subnet, %error, "cannot make the task network now");
                return Ok(registered.arn);
            }
        }
    }
}

/// Makes `network` exist on `subnet`. A network of that name on another
/// subnet is left from an earlier registration: it is made again.
async fn claim(
    runtime: &dyn ContainerRuntime,
    network: &str,
    subnet: &str,
    listed: &[NetworkInfo],
) -> Result<(), RuntimeError> {
    if let Some(own) = listed.iter().find(|info| info.name == network) {
        if own.ipv4_subnets.iter().any(|held| held == subnet) {
            return Ok(());
        }
        tracing::info!(network, held = ?own.ipv4_subnets, %subnet, "the task network is on another subnet; making it again");
        runtime.remove_network(network).await?;
    }
    runtime.ensure_network(network, subnet).await
}

/// How many times removing the task network is tried at deregistration:
/// tasks are reported stopped before their pause containers have left the
/// network, and the engine refuses to remove a network they are still on.
pub const TASK_NETWORK_REMOVAL_ATTEMPTS: u32 = 40;
/// Pause between those attempts.
pub const TASK_NETWORK_REMOVAL_RETRY_DELAY: Duration = Duration::from_millis(250);

/// Removes the task network once the instance is deregistered and its
/// tasks are stopped, as ECS deletes a trunk interface at deregistration.
pub async fn release(runtime: &dyn ContainerRuntime, network: &str) {
    for attempt in 1..=TASK_NETWORK_REMOVAL_ATTEMPTS {
        match runtime.remove_network(network).await {
            Ok(()) => {
                tracing::info!(network, "task network removed");
                return;
            }
            Err(error) if attempt == TASK_NETWORK_REMOVAL_ATTEMPTS => {
                tracing::warn!(network, %error, "cannot remove the task network");
            }
            Err(error) => {
                tracing::debug!(network, %error, attempt, "task network still in use; retrying");
                tokio::time::sleep(TASK_NETWORK_REMOVAL_RETRY_DELAY).await;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use flotilla_runtime::{FakeRuntime, ManualClock};
    use flotilla_types::ecs::{Attachment, KeyValuePair};

    use super::*;

    const NETWORK: &str = "flotilla-awsvpc-i-0123";

    fn answer(arn: &str, subnet: &str) -> Registered {
        Registered {
            arn: arn.to_owned(),
            instance: ContainerInstance {
                attachments: Some(vec![Attachment {
                    r#type: Some("ElasticNetworkInterface".to_owned()),
                    details: Some(vec![KeyValuePair {
                        name: Some("subnetCidrBlock".to_owned()),
                        value: Some(subnet.to_owned()),
                    }]),
                    ..Attachment::default()
                }]),
                ..ContainerInstance::default()
            },
        }
    }

    /// What one registration reported, and the ARN it came back with.
    type Seen = (Vec<String>, Option<String>);

    /// A control plane that hands out the first /24 of 100.64.0.0/16 not
    /// reported, recording what each registration said.
    #[derive(Clone, Default)]
    struct ControlPlane {
        seen: Arc<Mutex<Vec<Seen>>>,
        /// Subnets given whatever is reported, first to last.
        forced: Arc<Mutex<Vec<String>>>,
    }

    impl ControlPlane {
        fn register(
            &self,
            reported: Vec<String>,
            existing: Option<String>,
        ) -> impl Future<Output = Result<Registered, AgentError>> {
            self.seen
                .lock()
                .unwrap()
                .push((reported.clone(), existing.clone()));
            let forced = self.forced.lock().unwrap().pop();
            async move {
                let subnet = forced.unwrap_or_else(|| {
                    (0..256)
                        .map(|i| format!("100.64.{i}.0/24"))
                        .find(|s| !reported.contains(s))
                        .unwrap()
                });
                Ok(answer("arn:instance", &subnet))
            }
        }
    }

    fn engine() -> FakeRuntime {
        FakeRuntime::new(ManualClock::new(0))
    }

    async fn subnets(runtime: &FakeRuntime) -> Vec<(String, Vec<String>)> {
        runtime
            .list_networks()
            .await
            .unwrap()
            .into_iter()
            .map(|info| (info.name, info.ipv4_subnets))
            .collect()
    }

    #[tokio::test]
    async fn the_subnet_avoids_other_installations_networks_and_is_claimed() {
        let runtime = engine();
        runtime
            .ensure_network("flotilla-awsvpc-i-other", "100.64.0.0/24")
            .await
            .unwrap();
        let control = ControlPlane::default();
        let arn = register_with_task_network(&runtime, NETWORK, None, |reported, existing| {
            control.register(reported, existing)
        })
        .await
        .unwrap();
        assert_eq!(arn, "arn:instance");
        assert_eq!(
            *control.seen.lock().unwrap(),
            [(vec!["100.64.0.0/24".to_owned()], None)]
        );
        assert!(subnets(&runtime)
            .await
            .contains(&(NETWORK.to_owned(), vec!["100.64.1.0/24".to_owned()])));
    }

    #[tokio::test]
    async fn a_subnet_taken_before_the_claim_is_reported_and_another_one_given() {
        let runtime = engine();
        // Another installation's host on this engine claims the subnet
        // after the listing: our control plane, unaware, hands it out.
        runtime
            .ensure_network("flotilla-awsvpc-i-other", "100.64.0.0/24")
            .await
            .unwrap();
        let control = ControlPlane::default();
        control
            .forced
            .lock()
            .unwrap()
            .push("100.64.0.0/24".to_owned());
        let arn = register_with_task_network(
            &runtime,
            NETWORK,
            Some("arn:stored".to_owned()),
            |reported, existing| control.register(reported, existing),
        )
        .await
        .unwrap();
        assert_eq!(arn, "arn:instance");
        let seen = control.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].1.as_deref(), Some("arn:stored"));
        // The second registration brings the same instance back.
        assert_eq!(seen[1].1.as_deref(), Some("arn:instance"));
        assert!(subnets(&runtime)
            .await
            .contains(&(NETWORK.to_owned(), vec!["100.64.1.0/24".to_owned()])));
    }

    #[tokio::test]
    async fn a_task_network_left_on_another_subnet_is_made_again() {
        let runtime = engine();
        runtime
            .ensure_network(NETWORK, "100.64.9.0/24")
            .await
            .unwrap();
        let control = ControlPlane::default();
        register_with_task_network(&runtime, NETWORK, None, |reported, existing| {
            control.register(reported, existing)
        })
        .await
        .unwrap();
        // Its own network is not reported.
        assert_eq!(control.seen.lock().unwrap()[0].0, Vec::<String>::new());
        assert!(subnets(&runtime)
            .await
            .contains(&(NETWORK.to_owned(), vec!["100.64.0.0/24".to_owned()])));
        release(&runtime, NETWORK).await;
        assert!(!subnets(&runtime)
            .await
            .iter()
            .any(|(name, _)| name == NETWORK));
    }

    #[tokio::test]
    async fn an_engine_that_cannot_answer_does_not_stop_registration() {
        let runtime = engine();
        runtime.set_unavailable(true);
        let control = ControlPlane::default();
        let arn = register_with_task_network(&runtime, NETWORK, None, |reported, existing| {
            control.register(reported, existing)
        })
        .await
        .unwrap();
        assert_eq!(arn, "arn:instance");
        assert_eq!(control.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn claims_stop_after_the_bound() {
        let runtime = engine();
        runtime
            .ensure_network("wide", "100.64.0.0/16")
            .await
            .unwrap();
        let control = ControlPlane::default();
        // A control plane that keeps handing out taken subnets.
        control
            .forced
            .lock()
            .unwrap()
            .extend((0..TASK_SUBNET_CLAIMS_MAX).map(|i| format!("100.64.{i}.0/24")));
        let error = register_with_task_network(&runtime, NETWORK, None, |reported, existing| {
            control.register(reported, existing)
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&error, AgentError::TaskNetwork { reason, .. } if reason.contains("gave up after 8 subnets")),
            "{error}"
        );
        assert_eq!(control.seen.lock().unwrap().len(), TASK_SUBNET_CLAIMS_MAX);
    }
}
