//! StopServiceDeployment and ContinueServiceDeployment: what a user says to
//! a deployment in flight. Each only writes what was asked into the
//! deployment record (a rollback requested, a hook answered); the
//! scheduler's next pass acts on it, as it acts on everything else.

use flotilla_store::Txn;
use flotilla_types::arn::Arn;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;

use super::ServiceRecord;
use crate::records::{self, keys, Attempt};
use crate::Ecs;

fn deployment_not_found() -> ApiError {
    ApiError::new(
        "ServiceDeploymentNotFoundException",
        400,
        "The service deployment does not exist.",
    )
}

fn not_in_progress(arn: &str) -> ApiError {
    ApiError::new(
        "ConflictException",
        400,
        format!("The service deployment {arn} is not in progress."),
    )
}

impl Ecs {
    /// The cluster, service name and deployment id a service deployment
    /// ARN of this account and region names.
    fn deployment_arn_parts(&self, arn: &str) -> Option<(String, String, String)> {
        let parsed = Arn::parse(arn)?;
        if !self.is_own_ecs_arn(&parsed) {
            return None;
        }
        let ("service-deployment", rest) = parsed.resource_parts() else {
            return None;
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(cluster), Some(name), Some(number)) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some((
            cluster.to_owned(),
            name.to_owned(),
            format!("ecs-svc/{number}"),
        ))
    }

    /// Changes the live deployment an ARN names, in one commit; `change`
    /// says what is wrong with it instead.
    async fn change_deployment(
        &self,
        arn: &str,
        change: impl Fn(&mut ServiceRecord, usize) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let (cluster, name, id) = self
            .deployment_arn_parts(arn)
            .ok_or_else(deployment_not_found)?;
        let key = keys::service(&cluster, &name);
        records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_service(&cluster, &name)? else {
                return Err(deployment_not_found());
            };
            let mut record = found.value;
            let Some(index) = record.deployments.iter().position(|d| d.id() == id) else {
                let finished = record.finished.iter().any(|d| d.id() == id);
                return Err(if finished {
                    not_in_progress(arn)
                } else {
                    deployment_not_found()
                });
            };
            change(&mut record, index)?;
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, ()))
        })
        .await
    }

    pub(crate) async fn stop_service_deployment(
        &self,
        request: StopServiceDeploymentRequest,
    ) -> Result<StopServiceDeploymentResponse, ApiError> {
        let arn = request.service_deployment_arn.clone().unwrap_or_default();
        if request.stop_type == Some(StopServiceDeploymentStopType::Abort) {
            return Err(ApiError::invalid_parameter(
                "stopType ABORT is not supported by this Flotilla server: use ROLLBACK",
            ));
        }
        self.change_deployment(&arn, |record, index| {
            let deployment = &record.deployments[index];
            let in_progress = index == 0
                && deployment.lifecycle == ServiceDeploymentStatus::InProgress
                && deployment.rollout_state() == DeploymentRolloutState::InProgress;
            if !in_progress {
                return Err(not_in_progress(&arn));
            }
            let target = record
                .last_completed
                .as_ref()
                .filter(|c| c.id != deployment.id());
            if target.is_none() || deployment.rollback_of.is_some() {
                return Err(ApiError::new(
                    "ConflictException",
                    400,
                    "The service has no earlier service revision to roll back to.",
                ));
            }
            record.deployments[index].rollback_requested = true;
            Ok(())
        })
        .await?;
        Ok(StopServiceDeploymentResponse {
            service_deployment_arn: Some(arn),
        })
    }

    pub(crate) async fn continue_service_deployment(
        &self,
        request: ContinueServiceDeploymentRequest,
    ) -> Result<ContinueServiceDeploymentResponse, ApiError> {
        let arn = request.service_deployment_arn.clone().unwrap_or_default();
        let hook_id = request.hook_id.clone().unwrap_or_default();
        let answer = match request
            .action
            .unwrap_or(DeploymentLifecycleHookAction::Continue)
        {
            DeploymentLifecycleHookAction::Continue => DeploymentLifecycleHookStatus::Succeeded,
            DeploymentLifecycleHookAction::Rollback => DeploymentLifecycleHookStatus::Failed,
        };
        self.change_deployment(&arn, |record, index| {
            let deployment = &mut record.deployments[index];
            let hook = deployment
                .progress
                .as_mut()
                .and_then(|p| p.hooks.iter_mut().find(|h| h.hook_id == hook_id));
            let Some(hook) = hook else {
                return Err(ApiError::invalid_parameter(format!(
                    "The lifecycle hook {hook_id} does not exist in service deployment {arn}."
                )));
            };
            if hook.status != DeploymentLifecycleHookStatus::AwaitingAction {
                return Err(ApiError::new(
                    "ConflictException",
                    400,
                    format!(
                        "The lifecycle hook {hook_id} is {} and awaits no action.",
                        hook.status.as_str()
                    ),
                ));
            }
            hook.status = answer;
            Ok(())
        })
        .await?;
        Ok(ContinueServiceDeploymentResponse {
            service_deployment_arn: Some(arn),
        })
    }
}
