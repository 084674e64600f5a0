//! Application Auto Scaling's API (`AnyScaleFrontendService`) for ECS
//! services, and the scaling loop that acts on it.
//!
//! ```text
//! every evaluation (a minute of the metrics clock):
//!   publish_usage ─▶ metrics store (AWS/ECS CPUUtilization, MemoryUtilization)
//!   evaluate_alarms ─▶ alarm states stored ─▶ actions naming a scaling policy
//!   per scalable target: run_scheduled, decide_alarms (flotilla_autoscaling)
//!     ─▶ target record stored (cooldowns, activities) ─▶ UpdateService(desiredCount)
//!     ─▶ activity Successful / Failed stored
//! ```
//!
//! Each target is one record (`autoscaling/targets/{resource id}`): the
//! target, its policies, scheduled actions, cooldowns and latest activities.
//!
//! *Architecture invariant:* a decision's state (cooldowns, a scheduled
//! action's last run, the activity InProgress) is committed before the
//! desired count changes, so a restart between the two never scales twice;
//! at worst the change is lost and the activity says so on the next pass.

use std::collections::HashMap;
use std::time::Duration;

use flotilla_autoscaling::engine::{
    self, ActivityStatus, AlarmTrigger, Cooldowns, Decision, NotScaledReason, ScalingActivity,
    ScheduledAction, TargetState,
};
use flotilla_autoscaling::policy::{
    self, PolicyKind, ScalingPolicy, StepAdjustment, StepScalingInput, TargetTrackingInput,
    TrackedMetric,
};
use flotilla_autoscaling::target::{self, RegisterScalableTargetInput, SuspendedState};
use flotilla_autoscaling::{AutoScalingError, ValidationError};
use flotilla_aws::application_autoscaling as aas;
use flotilla_aws::application_autoscaling::{
    ApplicationAutoscalingRequest as Q, ApplicationAutoscalingResponse as R,
};
use flotilla_metrics::alarm::ActionInvocation;
use flotilla_records::Attempt;
use flotilla_store::Txn;
use flotilla_types::ecs::UpdateServiceRequest;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::cloudwatch;
use crate::records::{self, keys};
use crate::tag_set::{self, TagMap};
use crate::Ecs;

/// Scalable targets per account.
pub const SCALABLE_TARGETS_MAX: usize = 3_000;
/// Scaling activities kept per target, newest first.
pub const ACTIVITIES_MAX: usize = 100;
/// Describe pages: default and most.
pub const PAGE_DEFAULT: usize = 50;
pub const PAGE_MAX: usize = 50;
/// How often the scaling loop runs, in metrics-clock time: CloudWatch
/// evaluates alarms once a minute.
pub const EVALUATION_INTERVAL_MS: u64 = 60_000;

/// One scalable target and everything attached to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TargetRecord {
    pub state: TargetState,
    pub role_arn: Option<String>,
    /// Each policy as Describe answers it, by name.
    pub described: Vec<aas::ScalingPolicy>,
    /// Newest first, at most [`ACTIVITIES_MAX`].
    pub activities: Vec<ScalingActivity>,
    /// Given at registration (added to on a later one) and by TagResource.
    #[serde(default)]
    pub tags: TagMap,
}

fn error(error: AutoScalingError) -> ApiError {
    ApiError::new(error.code(), 400, error.to_string())
}

fn validation(message: impl Into<String>) -> ApiError {
    error(AutoScalingError::Validation(ValidationError(
        message.into(),
    )))
}

fn tag_pairs(tags: &TagMap) -> impl Iterator<Item = (&str, &str)> {
    tags.iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
}

/// Application Auto Scaling's words for a tag problem: too many tags is an
/// exception of its own.
fn tag_error(problem: tag_set::TagProblem) -> ApiError {
    let code = match problem {
        tag_set::TagProblem::TooMany { .. } => "TooManyTagsException",
        _ => "ValidationException",
    };
    ApiError::new(code, 400, problem.to_string())
}

fn not_found(message: impl Into<String>) -> ApiError {
    error(AutoScalingError::ObjectNotFound(message.into()))
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

/// The namespace and dimension as `flotilla_autoscaling` checks them.
fn namespace_and_dimension(
    namespace: Option<aas::ServiceNamespace>,
    dimension: Option<aas::ScalableDimension>,
) -> (String, String) {
    (
        namespace.map(|n| n.as_str().to_owned()).unwrap_or_default(),
        dimension.map(|d| d.as_str().to_owned()).unwrap_or_default(),
    )
}

fn check_resource(
    namespace: Option<aas::ServiceNamespace>,
    resource_id: &str,
    dimension: Option<aas::ScalableDimension>,
) -> Result<(), ApiError> {
    let (namespace, dimension) = namespace_and_dimension(namespace, dimension);
    target::check_resource(&namespace, resource_id, &dimension)
        .map_err(|e| error(AutoScalingError::Validation(e)))
}

fn activity_wire(activity: &ScalingActivity, target: &TargetState) -> aas::ScalingActivity {
    aas::ScalingActivity {
        activity_id: Some(activity.activity_id.clone()),
        resource_id: Some(activity.resource_id.clone()),
        service_namespace: Some(aas::ServiceNamespace::Ecs),
        scalable_dimension: Some(aas::ScalableDimension::EcsServiceDesiredCount),
        description: Some(activity.description.clone()),
        cause: Some(activity.cause.clone()),
        start_time: Some(seconds(activity.start_ms)),
        end_time: activity.end_ms.map(seconds),
        status_code: serde_json::from_value(serde_json::Value::String(
            activity.status.as_str().to_owned(),
        ))
        .ok(),
        status_message: activity.status_message.clone(),
        details: None,
        not_scaled_reasons: activity.not_scaled.map(|reason| {
            vec![aas::NotScaledReason {
                code: Some(
                    match reason {
                        NotScaledReason::AlreadyAtMaxCapacity => "AlreadyAtMaxCapacity",
                        NotScaledReason::AlreadyAtMinCapacity => "AlreadyAtMinCapacity",
                        NotScaledReason::AlreadyAtDesiredCapacity => "AlreadyAtDesiredCapacity",
                    }
                    .to_owned(),
                ),
                max_capacity: Some(target.target.max_capacity as i32),
                min_capacity: Some(target.target.min_capacity as i32),
                current_capacity: None,
            }]
        }),
    }
}

impl TargetRecord {
    fn push_activities(&mut self, activities: impl IntoIterator<Item = ScalingActivity>) {
        for activity in activities {
            self.activities.insert(0, activity);
        }
        self.activities.truncate(ACTIVITIES_MAX);
    }
}

impl Ecs {
    /// Carries out one Application Auto Scaling request.
    pub async fn handle_autoscaling(&self, request: Q) -> Result<R, ApiError> {
        if let Some(member) = request.missing_required() {
            return Err(validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                lower_first(member)
            )));
        }
        let now_ms = self.metrics_now_ms();
        Ok(match request {
            Q::RegisterScalableTarget(r) => {
                R::RegisterScalableTarget(self.register_scalable_target(r, now_ms).await?)
            }
            Q::DescribeScalableTargets(r) => {
                R::DescribeScalableTargets(self.describe_scalable_targets(r)?)
            }
            Q::DeregisterScalableTarget(r) => {
                R::DeregisterScalableTarget(self.deregister_scalable_target(r).await?)
            }
            Q::PutScalingPolicy(r) => {
                R::PutScalingPolicy(self.put_scaling_policy(r, now_ms).await?)
            }
            Q::DescribeScalingPolicies(r) => {
                R::DescribeScalingPolicies(self.describe_scaling_policies(r)?)
            }
            Q::DeleteScalingPolicy(r) => {
                R::DeleteScalingPolicy(self.delete_scaling_policy(r).await?)
            }
            Q::PutScheduledAction(r) => {
                R::PutScheduledAction(self.put_scheduled_action(r, now_ms).await?)
            }
            Q::DescribeScheduledActions(r) => {
                R::DescribeScheduledActions(self.describe_scheduled_actions(r)?)
            }
            Q::DeleteScheduledAction(r) => {
                R::DeleteScheduledAction(self.delete_scheduled_action(r).await?)
            }
            Q::DescribeScalingActivities(r) => {
                R::DescribeScalingActivities(self.describe_scaling_activities(r)?)
            }
            Q::TagResource(r) => {
                let tags = r.tags.unwrap_or_default();
                let arn = r.resource_arn.unwrap_or_default();
                self.change_target_tags(&arn, |current| {
                    tag_set::with_tags(current, tag_pairs(&tags))
                })
                .await?;
                R::TagResource(aas::TagResourceResponse {})
            }
            Q::UntagResource(r) => {
                let keys = r.tag_keys.unwrap_or_default();
                let arn = r.resource_arn.unwrap_or_default();
                self.change_target_tags(&arn, |current| {
                    tag_set::without_tags(current, keys.iter().map(String::as_str))
                })
                .await?;
                R::UntagResource(aas::UntagResourceResponse {})
            }
            Q::ListTagsForResource(r) => {
                let arn = r.resource_arn.unwrap_or_default();
                let (_, found) = self.tagged_target(&arn)?;
                R::ListTagsForResource(aas::ListTagsForResourceResponse {
                    tags: Some(found.value.tags),
                })
            }
            other => {
                return Err(validation(format!(
                    "{} is not supported by this Flotilla server yet",
                    other.operation()
                )))
            }
        })
    }

    fn target_arn(&self, resource_id: &str) -> String {
        // AWS's scalable target ARNs carry an id of their own; the resource
        // id, which names the target uniquely, stands in for it.
        format!(
            "arn:aws:application-autoscaling:{}:{}:scalable-target/{}",
            self.scope.region,
            self.scope.account_id,
            resource_id.replace('/', "-")
        )
    }

    /// The scalable target an ARN names (its key and record), or
    /// ResourceNotFoundException.
    fn tagged_target(
        &self,
        arn: &str,
    ) -> Result<(String, records::Versioned<TargetRecord>), ApiError> {
        let resource_id = self
            .all_targets()?
            .into_iter()
            .map(|record| record.state.target.resource_id)
            .find(|resource_id| self.target_arn(resource_id) == arn);
        let found = match &resource_id {
            Some(resource_id) => self.get_target(resource_id)?,
            None => None,
        };
        match (resource_id, found) {
            (Some(resource_id), Some(found)) => Ok((keys::scalable_target(&resource_id), found)),
            _ => Err(ApiError::new(
                "ResourceNotFoundException",
                400,
                format!("No scalable target found for {arn}"),
            )),
        }
    }

    async fn change_target_tags(
        &self,
        arn: &str,
        change: impl Fn(&TagMap) -> Result<TagMap, tag_set::TagProblem>,
    ) -> Result<(), ApiError> {
        records::mutate(self.store.as_ref(), || {
            let (key, found) = self.tagged_target(arn)?;
            let mut record = found.value;
            record.tags = change(&record.tags).map_err(tag_error)?;
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, ()))
        })
        .await
    }

    fn get_target(
        &self,
        resource_id: &str,
    ) -> Result<Option<records::Versioned<TargetRecord>>, ApiError> {
        records::get(self.store.as_ref(), &keys::scalable_target(resource_id))
    }

    fn all_targets(&self) -> Result<Vec<TargetRecord>, ApiError> {
        let page = self
            .store
            .list(keys::SCALABLE_TARGETS, None, SCALABLE_TARGETS_MAX)
            .map_err(records::store_error)?;
        page.entries.iter().map(records::decode).collect()
    }

    /// The service's desired count, or the error for a missing service.
    fn service_desired_count(&self, resource_id: &str) -> Result<i64, ApiError> {
        let mut parts = resource_id.splitn(3, '/').skip(1);
        let (cluster, service) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        match self.get_service(cluster, service)? {
            Some(found) if found.value.is_active() => {
                Ok(i64::from(found.value.service.desired_count.unwrap_or(0)))
            }
            _ => Err(error(AutoScalingError::Validation(
                target::missing_service(resource_id),
            ))),
        }
    }

    async fn register_scalable_target(
        &self,
        r: aas::RegisterScalableTargetRequest,
        now_ms: i64,
    ) -> Result<aas::RegisterScalableTargetResponse, ApiError> {
        let given_tags = r.tags.clone().unwrap_or_default();
        tag_set::with_tags(&TagMap::new(), tag_pairs(&given_tags)).map_err(tag_error)?;
        let resource_id = r.resource_id.clone().unwrap_or_default();
        let (namespace, dimension) =
            namespace_and_dimension(r.service_namespace, r.scalable_dimension);
        let input = RegisterScalableTargetInput {
            service_namespace: namespace,
            resource_id: resource_id.clone(),
            scalable_dimension: dimension,
            min_capacity: r.min_capacity.map(i64::from),
            max_capacity: r.max_capacity.map(i64::from),
            suspended: r.suspended_state.as_ref().map(|s| SuspendedState {
                dynamic_scaling_in_suspended: s.dynamic_scaling_in_suspended.unwrap_or(false),
                dynamic_scaling_out_suspended: s.dynamic_scaling_out_suspended.unwrap_or(false),
                scheduled_scaling_suspended: s.scheduled_scaling_suspended.unwrap_or(false),
            }),
        };
        target::check_resource(
            &input.service_namespace,
            &input.resource_id,
            &input.scalable_dimension,
        )
        .map_err(|e| error(AutoScalingError::Validation(e)))?;
        let current = self.service_desired_count(&resource_id)?;
        let key = keys::scalable_target(&resource_id);
        let activity_id = self.ids.uuid();
        let decision = records::mutate(self.store.as_ref(), || {
            let existing = self.get_target(&resource_id)?;
            let checked = target::register(
                &input,
                existing.as_ref().map(|e| &e.value.state.target),
                now_ms,
            )
            .map_err(|e| error(AutoScalingError::Validation(e)))?;
            let (mut record, revision) = match existing {
                Some(found) => (found.value, found.revision),
                None => {
                    let count = self
                        .store
                        .list(keys::SCALABLE_TARGETS, None, SCALABLE_TARGETS_MAX)
                        .map_err(records::store_error)?
                        .entries
                        .len();
                    if count >= SCALABLE_TARGETS_MAX {
                        return Err(error(AutoScalingError::LimitExceeded(format!(
                            "You have reached the maximum limit of {SCALABLE_TARGETS_MAX} scalable targets"
                        ))));
                    }
                    (
                        TargetRecord {
                            state: TargetState {
                                target: checked.clone(),
                                policies: Vec::new(),
                                scheduled: Vec::new(),
                                cooldowns: Cooldowns::default(),
                            },
                            role_arn: None,
                            described: Vec::new(),
                            activities: Vec::new(),
                            tags: TagMap::new(),
                        },
                        0,
                    )
                }
            };
            record.state.target = checked;
            record.tags = tag_set::with_tags(&record.tags, tag_pairs(&given_tags)).map_err(tag_error)?;
            if r.role_arn.is_some() {
                record.role_arn = r.role_arn.clone();
            }
            let decision = engine::clamp_after_register(&record.state, current, now_ms, &activity_id);
            record.push_activities(decision.activities.clone());
            let txn = Txn::new()
                .expect(&key, revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, decision))
        })
        .await?;
        if decision.desired.is_some() {
            self.carry_out(&resource_id, decision, now_ms).await;
        }
        Ok(aas::RegisterScalableTargetResponse {
            scalable_target_arn: Some(self.target_arn(&resource_id)),
        })
    }

    fn describe_target(&self, record: &TargetRecord) -> aas::ScalableTarget {
        let target = &record.state.target;
        aas::ScalableTarget {
            service_namespace: Some(aas::ServiceNamespace::Ecs),
            resource_id: Some(target.resource_id.clone()),
            scalable_dimension: Some(aas::ScalableDimension::EcsServiceDesiredCount),
            min_capacity: Some(target.min_capacity as i32),
            max_capacity: Some(target.max_capacity as i32),
            role_arn: Some(record.role_arn.clone().unwrap_or_else(|| {
                format!(
                    "arn:aws:iam::{}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService",
                    self.scope.account_id
                )
            })),
            creation_time: Some(seconds(target.created_ms)),
            suspended_state: Some(aas::SuspendedState {
                dynamic_scaling_in_suspended: Some(target.suspended.dynamic_scaling_in_suspended),
                dynamic_scaling_out_suspended: Some(
                    target.suspended.dynamic_scaling_out_suspended,
                ),
                scheduled_scaling_suspended: Some(target.suspended.scheduled_scaling_suspended),
            }),
            scalable_target_arn: Some(self.target_arn(&target.resource_id)),
            predicted_capacity: None,
        }
    }

    fn describe_scalable_targets(
        &self,
        r: aas::DescribeScalableTargetsRequest,
    ) -> Result<aas::DescribeScalableTargetsResponse, ApiError> {
        let wanted = r.resource_ids.unwrap_or_default();
        let mut targets: Vec<TargetRecord> = if r.service_namespace
            == Some(aas::ServiceNamespace::Ecs)
            && r.scalable_dimension
                .is_none_or(|d| d == aas::ScalableDimension::EcsServiceDesiredCount)
        {
            self.all_targets()?
        } else {
            Vec::new()
        };
        targets.retain(|t| wanted.is_empty() || wanted.contains(&t.state.target.resource_id));
        let (page, next_token) = paginate(
            targets,
            |t| t.state.target.resource_id.clone(),
            r.max_results,
            r.next_token.as_deref(),
        )?;
        Ok(aas::DescribeScalableTargetsResponse {
            scalable_targets: Some(page.iter().map(|t| self.describe_target(t)).collect()),
            next_token,
        })
    }

    async fn deregister_scalable_target(
        &self,
        r: aas::DeregisterScalableTargetRequest,
    ) -> Result<aas::DeregisterScalableTargetResponse, ApiError> {
        let resource_id = r.resource_id.unwrap_or_default();
        check_resource(r.service_namespace, &resource_id, r.scalable_dimension)?;
        let key = keys::scalable_target(&resource_id);
        records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_target(&resource_id)? else {
                return Err(not_found(format!(
                    "No scalable target registered for service namespace: ecs, resource ID: {resource_id}, scalable dimension: ecs:service:DesiredCount"
                )));
            };
            // Its policies' target tracking alarms go with it.
            let mut txn = Txn::new().expect(&key, found.revision).delete(&key);
            for policy in &found.value.state.policies {
                for (alarm, _) in &policy.alarms {
                    txn = txn.delete(keys::alarm(alarm));
                }
            }
            Ok(Attempt::Commit(txn, ()))
        })
        .await?;
        Ok(aas::DeregisterScalableTargetResponse {})
    }

    async fn put_scaling_policy(
        &self,
        r: aas::PutScalingPolicyRequest,
        now_ms: i64,
    ) -> Result<aas::PutScalingPolicyResponse, ApiError> {
        let resource_id = r.resource_id.clone().unwrap_or_default();
        check_resource(r.service_namespace, &resource_id, r.scalable_dimension)?;
        let name = r.policy_name.clone().unwrap_or_default();
        policy::check_policy_name(&name).map_err(|e| error(e.into()))?;
        let policy_type = r.policy_type.unwrap_or(aas::PolicyType::StepScaling);
        let kind = match policy_type {
            aas::PolicyType::TargetTrackingScaling => {
                if r.step_scaling_policy_configuration.is_some() {
                    return Err(validation("StepScalingPolicyConfiguration is not allowed for the policy type: TargetTrackingScaling"));
                }
                let Some(config) = &r.target_tracking_scaling_policy_configuration else {
                    return Err(validation("TargetTrackingScalingPolicyConfiguration is required for the policy type: TargetTrackingScaling"));
                };
                PolicyKind::TargetTracking(
                    policy::check_target_tracking(&tracking_input(config)?)
                        .map_err(|e| error(e.into()))?,
                )
            }
            aas::PolicyType::StepScaling => {
                if r.target_tracking_scaling_policy_configuration.is_some() {
                    return Err(validation("TargetTrackingScalingPolicyConfiguration is not allowed for the policy type: StepScaling"));
                }
                let Some(config) = &r.step_scaling_policy_configuration else {
                    return Err(validation(
                        "StepScalingPolicyConfiguration is required for the policy type: StepScaling",
                    ));
                };
                PolicyKind::Step(
                    policy::check_step_scaling(&step_input(config)).map_err(|e| error(e.into()))?,
                )
            }
            other => {
                return Err(validation(format!(
                    "Unsupported policy type {} for service namespace ecs",
                    other.as_str()
                )))
            }
        };
        let key = keys::scalable_target(&resource_id);
        let fresh_id = self.ids.uuid();
        let alarm_ids = [self.ids.uuid(), self.ids.uuid()];
        // Decide the policy (its ARN is kept across updates) and its alarms.
        let (policy_arn, alarms, old_alarms) = records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_target(&resource_id)? else {
                return Err(not_found(format!(
                    "No scalable target registered for service namespace: ecs, resource ID: {resource_id}, scalable dimension: ecs:service:DesiredCount"
                )));
            };
            let mut record = found.value;
            let existing = record.state.policies.iter().position(|p| p.name == name);
            policy::check_policy_count(record.state.policies.len(), existing.is_some())
                .map_err(error)?;
            let arn = match existing {
                Some(index) => record.state.policies[index].arn.clone(),
                None => policy::policy_arn(
                    &self.scope.region,
                    &self.scope.account_id,
                    &fresh_id,
                    &resource_id,
                    &name,
                ),
            };
            let old_alarms: Vec<String> = existing
                .map(|i| record.state.policies[i].alarms.iter().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default();
            let alarm_inputs = match &kind {
                PolicyKind::TargetTracking(tracking) => policy::target_tracking_alarms(
                    &resource_id,
                    &arn,
                    tracking,
                    [alarm_ids[0].as_str(), alarm_ids[1].as_str()],
                ),
                PolicyKind::Step(_) => Vec::new(),
            };
            let created_ms = existing.map_or(now_ms, |i| record.state.policies[i].created_ms);
            let policy = ScalingPolicy {
                name: name.clone(),
                arn: arn.clone(),
                kind: kind.clone(),
                alarms: alarm_inputs
                    .iter()
                    .map(|a| (a.alarm_name.clone(), a.alarm_name.contains("-AlarmHigh-")))
                    .collect(),
                created_ms,
            };
            let described = aas::ScalingPolicy {
                policy_arn: Some(arn.clone()),
                policy_name: Some(name.clone()),
                service_namespace: Some(aas::ServiceNamespace::Ecs),
                resource_id: Some(resource_id.clone()),
                scalable_dimension: Some(aas::ScalableDimension::EcsServiceDesiredCount),
                policy_type: Some(policy_type),
                step_scaling_policy_configuration: r.step_scaling_policy_configuration.clone(),
                target_tracking_scaling_policy_configuration: r
                    .target_tracking_scaling_policy_configuration
                    .clone(),
                predictive_scaling_policy_configuration: None,
                alarms: Some(
                    alarm_inputs
                        .iter()
                        .map(|a| aas::Alarm {
                            alarm_name: Some(a.alarm_name.clone()),
                            alarm_arn: Some(self.alarm_arn(&a.alarm_name)),
                        })
                        .collect(),
                ),
                creation_time: Some(seconds(created_ms)),
            };
            match existing {
                Some(index) => record.state.policies[index] = policy,
                None => record.state.policies.push(policy),
            }
            record.described.retain(|d| d.policy_name.as_deref() != Some(name.as_str()));
            record.described.push(described);
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, (arn, alarm_inputs, old_alarms)))
        })
        .await?;
        // The policy's alarms, as PutMetricAlarm would make them; an
        // update's old ones go.
        for name in old_alarms {
            if !alarms.iter().any(|a| a.alarm_name == name) {
                let _ = self
                    .store
                    .commit(Txn::new().delete(keys::alarm(&name)))
                    .await;
            }
        }
        for alarm in &alarms {
            self.store_alarm(cloudwatch::wire_alarm_input(alarm), now_ms)
                .await?;
        }
        Ok(aas::PutScalingPolicyResponse {
            policy_arn: Some(policy_arn),
            alarms: Some(
                alarms
                    .iter()
                    .map(|a| aas::Alarm {
                        alarm_name: Some(a.alarm_name.clone()),
                        alarm_arn: Some(self.alarm_arn(&a.alarm_name)),
                    })
                    .collect(),
            ),
        })
    }

    fn describe_scaling_policies(
        &self,
        r: aas::DescribeScalingPoliciesRequest,
    ) -> Result<aas::DescribeScalingPoliciesResponse, ApiError> {
        let names = r.policy_names.unwrap_or_default();
        let mut policies: Vec<aas::ScalingPolicy> =
            if r.service_namespace == Some(aas::ServiceNamespace::Ecs) {
                self.all_targets()?
                    .into_iter()
                    .filter(|t| {
                        r.resource_id
                            .as_deref()
                            .is_none_or(|id| id == t.state.target.resource_id)
                    })
                    .flat_map(|t| t.described)
                    .collect()
            } else {
                Vec::new()
            };
        policies.retain(|p| {
            names.is_empty() || names.iter().any(|n| Some(n) == p.policy_name.as_ref())
        });
        let (page, next_token) = paginate(
            policies,
            |p| p.policy_arn.clone().unwrap_or_default(),
            r.max_results,
            r.next_token.as_deref(),
        )?;
        Ok(aas::DescribeScalingPoliciesResponse {
            scaling_policies: Some(page),
            next_token,
        })
    }

    async fn delete_scaling_policy(
        &self,
        r: aas::DeleteScalingPolicyRequest,
    ) -> Result<aas::DeleteScalingPolicyResponse, ApiError> {
        let resource_id = r.resource_id.unwrap_or_default();
        check_resource(r.service_namespace, &resource_id, r.scalable_dimension)?;
        let name = r.policy_name.unwrap_or_default();
        let key = keys::scalable_target(&resource_id);
        records::mutate(self.store.as_ref(), || {
            let missing = || {
                not_found(format!(
                    "No scaling policy found for service namespace: ecs, resource ID: {resource_id}, scalable dimension: ecs:service:DesiredCount, policy name: {name}"
                ))
            };
            let Some(found) = self.get_target(&resource_id)? else {
                return Err(missing());
            };
            let mut record = found.value;
            let Some(index) = record.state.policies.iter().position(|p| p.name == name) else {
                return Err(missing());
            };
            let removed = record.state.policies.remove(index);
            record.described.retain(|d| d.policy_name.as_deref() != Some(name.as_str()));
            let mut txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            for (alarm, _) in &removed.alarms {
                txn = txn.delete(keys::alarm(alarm));
            }
            Ok(Attempt::Commit(txn, ()))
        })
        .await?;
        Ok(aas::DeleteScalingPolicyResponse {})
    }

    async fn put_scheduled_action(
        &self,
        r: aas::PutScheduledActionRequest,
        now_ms: i64,
    ) -> Result<aas::PutScheduledActionResponse, ApiError> {
        let resource_id = r.resource_id.clone().unwrap_or_default();
        check_resource(r.service_namespace, &resource_id, r.scalable_dimension)?;
        let name = r.scheduled_action_name.clone().unwrap_or_default();
        let key = keys::scalable_target(&resource_id);
        records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_target(&resource_id)? else {
                return Err(not_found(format!(
                    "No scalable target registered for service namespace: ecs, resource ID: {resource_id}, scalable dimension: ecs:service:DesiredCount"
                )));
            };
            let mut record = found.value;
            let existing = record.state.scheduled.iter().position(|a| a.name == name);
            let previous = existing.map(|i| record.state.scheduled[i].clone());
            // An update keeps what it does not give, as AWS does.
            let action = ScheduledAction {
                name: name.clone(),
                schedule: r
                    .schedule
                    .clone()
                    .or_else(|| previous.as_ref().map(|p| p.schedule.clone()))
                    .unwrap_or_default(),
                timezone: r
                    .timezone
                    .clone()
                    .or_else(|| previous.as_ref().and_then(|p| p.timezone.clone())),
                start_ms: r.start_time.map(ms).or(previous.as_ref().and_then(|p| p.start_ms)),
                end_ms: r.end_time.map(ms).or(previous.as_ref().and_then(|p| p.end_ms)),
                min_capacity: r
                    .scalable_target_action
                    .as_ref()
                    .and_then(|a| a.min_capacity)
                    .map(i64::from)
                    .or(previous.as_ref().and_then(|p| p.min_capacity)),
                max_capacity: r
                    .scalable_target_action
                    .as_ref()
                    .and_then(|a| a.max_capacity)
                    .map(i64::from)
                    .or(previous.as_ref().and_then(|p| p.max_capacity)),
                created_ms: previous.as_ref().map_or(now_ms, |p| p.created_ms),
                last_run_ms: None,
            };
            if action.schedule.is_empty() {
                return Err(validation("Schedule is required when creating a scheduled action"));
            }
            engine::check_scheduled_action(
                &action,
                record.state.scheduled.len(),
                existing.is_some(),
            )
            .map_err(error)?;
            match existing {
                Some(index) => record.state.scheduled[index] = action,
                None => record.state.scheduled.push(action),
            }
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, ()))
        })
        .await?;
        Ok(aas::PutScheduledActionResponse {})
    }

    fn describe_scheduled_actions(
        &self,
        r: aas::DescribeScheduledActionsRequest,
    ) -> Result<aas::DescribeScheduledActionsResponse, ApiError> {
        let names = r.scheduled_action_names.unwrap_or_default();
        let mut actions = Vec::new();
        if r.service_namespace == Some(aas::ServiceNamespace::Ecs) {
            for target in self.all_targets()? {
                let resource_id = target.state.target.resource_id.clone();
                if r.resource_id.as_deref().is_some_and(|id| id != resource_id) {
                    continue;
                }
                for action in &target.state.scheduled {
                    if !names.is_empty() && !names.contains(&action.name) {
                        continue;
                    }
                    actions.push(aas::ScheduledAction {
                        scheduled_action_name: Some(action.name.clone()),
                        scheduled_action_arn: Some(format!(
                            "arn:aws:autoscaling:{}:{}:scheduledAction:{}:resource/ecs/{}:scheduledActionName/{}",
                            self.scope.region,
                            self.scope.account_id,
                            resource_id.replace('/', "-"),
                            resource_id,
                            action.name
                        )),
                        service_namespace: Some(aas::ServiceNamespace::Ecs),
                        schedule: Some(action.schedule.clone()),
                        timezone: action.timezone.clone(),
                        resource_id: Some(resource_id.clone()),
                        scalable_dimension: Some(aas::ScalableDimension::EcsServiceDesiredCount),
                        start_time: action.start_ms.map(seconds),
                        end_time: action.end_ms.map(seconds),
                        scalable_target_action: Some(aas::ScalableTargetAction {
                            min_capacity: action.min_capacity.map(|c| c as i32),
                            max_capacity: action.max_capacity.map(|c| c as i32),
                        }),
                        creation_time: Some(seconds(action.created_ms)),
                    });
                }
            }
        }
        let (page, next_token) = paginate(
            actions,
            |a| a.scheduled_action_arn.clone().unwrap_or_default(),
            r.max_results,
            r.next_token.as_deref(),
        )?;
        Ok(aas::DescribeScheduledActionsResponse {
            scheduled_actions: Some(page),
            next_token,
        })
    }

    async fn delete_scheduled_action(
        &self,
        r: aas::DeleteScheduledActionRequest,
    ) -> Result<aas::DeleteScheduledActionResponse, ApiError> {
        let resource_id = r.resource_id.unwrap_or_default();
        check_resource(r.service_namespace, &resource_id, r.scalable_dimension)?;
        let name = r.scheduled_action_name.unwrap_or_default();
        let key = keys::scalable_target(&resource_id);
        records::mutate(self.store.as_ref(), || {
            let missing = || {
                not_found(format!(
                    "No scheduled action found for service namespace: ecs, resource ID: {resource_id}, scalable dimension: ecs:service:DesiredCount, scheduled action name: {name}"
                ))
            };
            let Some(found) = self.get_target(&resource_id)? else {
                return Err(missing());
            };
            let mut record = found.value;
            let before = record.state.scheduled.len();
            record.state.scheduled.retain(|a| a.name != name);
            if record.state.scheduled.len() == before {
                return Err(missing());
            }
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, ()))
        })
        .await?;
        Ok(aas::DeleteScheduledActionResponse {})
    }

    fn describe_scaling_activities(
        &self,
        r: aas::DescribeScalingActivitiesRequest,
    ) -> Result<aas::DescribeScalingActivitiesResponse, ApiError> {
        let include_not_scaled = r.include_not_scaled_activities.unwrap_or(false);
        let mut activities = Vec::new();
        if r.service_namespace == Some(aas::ServiceNamespace::Ecs) {
            for target in self.all_targets()? {
                if r.resource_id
                    .as_deref()
                    .is_some_and(|id| id != target.state.target.resource_id)
                {
                    continue;
                }
                for activity in &target.activities {
                    if activity.not_scaled.is_some() && !include_not_scaled {
                        continue;
                    }
                    activities.push(activity_wire(activity, &target.state));
                }
            }
        }
        activities.sort_by(|a, b| {
            b.start_time
                .partial_cmp(&a.start_time)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let skip: usize = match &r.next_token {
            Some(token) => token
                .parse()
                .map_err(|_| validation(format!("Invalid NextToken: {token}")))?,
            None => 0,
        };
        let page = page_size(r.max_results)?;
        let more = activities.len() > skip + page;
        Ok(aas::DescribeScalingActivitiesResponse {
            scaling_activities: Some(activities.into_iter().skip(skip).take(page).collect()),
            next_token: more.then(|| (skip + page).to_string()),
        })
    }

    /// Hands alarm actions that name scaling policies to their targets'
    /// decisions, and carries those out.
    pub(crate) async fn carry_out_alarm_actions(
        &self,
        actions: Vec<ActionInvocation>,
        now_ms: i64,
    ) {
        let actions: Vec<ActionInvocation> = actions
            .into_iter()
            .filter(|a| flotilla_metrics::alarm::is_auto_scaling_action(&a.action_arn))
            .collect();
        if actions.is_empty() {
            return;
        }
        // The resource id sits in the policy ARN: `...:resource/ecs/{id}:policyName/...`.
        let mut by_target: HashMap<String, Vec<AlarmTrigger>> = HashMap::new();
        for action in actions {
            let Some(resource_id) = action
                .action_arn
                .split(":resource/ecs/")
                .nth(1)
                .and_then(|rest| rest.split(":policyName/").next())
            else {
                continue;
            };
            by_target
                .entry(resource_id.to_owned())
                .or_default()
                .push(AlarmTrigger {
                    action_arn: action.action_arn.clone(),
                    alarm_name: action.alarm_name.clone(),
                    reason_data: action.reason_data.clone(),
                });
        }
        let states = match self.alarm_states() {
            Ok(states) => states,
            Err(error) => {
                tracing::warn!(%error, "alarm states unreadable; scaling waits");
                return;
            }
        };
        for (resource_id, triggers) in by_target {
            if let Err(error) = self
                .decide_and_scale(&resource_id, now_ms, |state, current, activity_id| {
                    engine::decide_alarms(
                        state,
                        &triggers,
                        &|name| states.get(name).copied(),
                        current,
                        now_ms,
                        activity_id,
                    )
                })
                .await
            {
                tracing::warn!(%error, %resource_id, "scaling decision failed");
            }
        }
    }

    /// Runs a decision on a target's stored state, commits the state it
    /// leaves, then carries the new desired count out.
    async fn decide_and_scale(
        &self,
        resource_id: &str,
        now_ms: i64,
        decide: impl Fn(&mut TargetState, i64, &str) -> Decision,
    ) -> Result<(), ApiError> {
        let current = match self.service_desired_count(resource_id) {
            Ok(current) => current,
            // The service is gone: nothing to scale.
            Err(_) => return Ok(()),
        };
        let key = keys::scalable_target(resource_id);
        let activity_id = self.ids.uuid();
        let decision = records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_target(resource_id)? else {
                return Ok(Attempt::Done(Decision::default()));
            };
            let mut record = found.value;
            let before = record.state.clone();
            let decision = decide(&mut record.state, current, &activity_id);
            if record.state == before && decision.activities.is_empty() {
                return Ok(Attempt::Done(decision));
            }
            record.push_activities(decision.activities.clone());
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, decision))
        })
        .await?;
        if decision.desired.is_some() {
            self.carry_out(resource_id, decision, now_ms).await;
        }
        Ok(())
    }

    /// Sets the service's desired count through UpdateService, then stores
    /// the activities' outcome.
    async fn carry_out(&self, resource_id: &str, decision: Decision, now_ms: i64) {
        let Some(desired) = decision.desired else {
            return;
        };
        let mut parts = resource_id.splitn(3, '/').skip(1);
        let (cluster, service) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let result = self
            .update_service(UpdateServiceRequest {
                cluster: Some(cluster),
                service: Some(service),
                desired_count: Some(desired as i32),
                ..Default::default()
            })
            .await;
        let ids: Vec<String> = decision
            .activities
            .iter()
            .filter(|a| a.status == ActivityStatus::InProgress)
            .map(|a| a.activity_id.clone())
            .collect();
        let key = keys::scalable_target(resource_id);
        let outcome = records::mutate(self.store.as_ref(), || {
            let Some(found) = self.get_target(resource_id)? else {
                return Ok(Attempt::Done(()));
            };
            let mut record = found.value;
            for activity in record
                .activities
                .iter_mut()
                .filter(|a| ids.contains(&a.activity_id))
            {
                match &result {
                    Ok(_) => activity.fulfilled(now_ms),
                    Err(error) => activity.failed(now_ms, &error.message),
                }
            }
            let txn = Txn::new()
                .expect(&key, found.revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, ()))
        })
        .await;
        match (&result, outcome) {
            (Ok(_), Ok(())) => tracing::info!(%resource_id, desired, "scaled"),
            (Err(error), _) => tracing::warn!(%resource_id, desired, %error, "scaling failed"),
            (_, Err(error)) => tracing::warn!(%resource_id, %error, "scaling activity not stored"),
        }
    }

    /// One pass of the scaling loop at metrics-clock `now_ms`: usage is
    /// published, alarms evaluated (their actions carried out), scheduled
    /// actions run.
    pub async fn autoscaling_pass(&self, now_ms: i64) -> Result<(), ApiError> {
        let usage = self.usage.fresh(self.clock.now_ms());
        let mut datums = crate::usage::usage_datums(&usage, now_ms - 1);
        // A store that cannot be read costs this minute's Container
        // Insights, not the alarms' evaluation.
        let insights = self.insights_clusters().unwrap_or_else(|error| {
            tracing::warn!(%error, "Container Insights not published");
            Vec::new()
        });
        let enabled: std::collections::HashSet<&str> = insights
            .iter()
            .map(|found| found.cluster.as_str())
            .collect();
        let with_insights: Vec<crate::usage::TaskUse> = usage
            .iter()
            .filter(|task| enabled.contains(task.cluster.as_str()))
            .cloned()
            .collect();
        datums.extend(crate::usage::insights_datums(
            &with_insights,
            &insights,
            now_ms - 1,
        ));
        let sources = self
            .minute_sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for source in sources {
            datums.extend(source.minute_datums(now_ms - 1));
        }
        for (cluster, reservation) in self.cluster_reservations()? {
            datums.extend(crate::usage::reservation_datums(
                &cluster,
                &reservation,
                now_ms - 1,
            ));
        }
        if !datums.is_empty() {
            let stored = self.metrics.lock().put(&datums, now_ms);
            if let Err(error) = stored {
                tracing::warn!(?error, "usage metrics not stored");
            }
        }
        if let Err(error) = self.metrics.lock().tick(now_ms) {
            tracing::warn!(%error, "metrics store upkeep failed");
        }
        self.evaluate_alarms(now_ms).await?;
        for target in self.all_targets()? {
            let resource_id = target.state.target.resource_id.clone();
            let fresh: Vec<String> = (0..4).map(|_| self.ids.uuid()).collect();
            self.decide_and_scale(&resource_id, now_ms, |state, current, _| {
                let mut index = 0usize;
                engine::run_scheduled(state, current, now_ms, &mut || {
                    let id = fresh
                        .get(index)
                        .cloned()
                        .unwrap_or_else(|| format!("{}-{index}", fresh[0]));
                    index += 1;
                    id
                })
            })
            .await?;
        }
        Ok(())
    }

    /// The scaling loop: a pass every [`EVALUATION_INTERVAL_MS`] of the
    /// metrics clock, until the process ends.
    pub async fn run_autoscaling(self: std::sync::Arc<Self>) {
        let real_interval_ms = (EVALUATION_INTERVAL_MS / self.metrics.time_scale()).max(100);
        let mut ticks = tokio::time::interval(Duration::from_millis(real_interval_ms));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now_ms = self.metrics_now_ms();
            if let Err(error) = self.autoscaling_pass(now_ms).await {
                tracing::warn!(%error, "auto scaling pass failed");
            }
        }
    }
}

fn lower_first(member: &str) -> String {
    let mut chars = member.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn page_size(max_results: Option<i32>) -> Result<usize, ApiError> {
    match max_results {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (1..=PAGE_MAX as i32).contains(&n) => Ok(n as usize),
        Some(n) => Err(validation(format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to {PAGE_MAX}"
        ))),
    }
}

/// A page of `items` sorted by `key`, after the token (the last key of the
/// previous page).
fn paginate<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> String,
    max_results: Option<i32>,
    next_token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let page = page_size(max_results)?;
    items.sort_by_key(|item| key(item));
    if let Some(token) = next_token {
        items.retain(|item| key(item).as_str() > token);
    }
    let more = items.len() > page;
    items.truncate(page);
    let token = more.then(|| items.last().map(&key)).flatten();
    Ok((items, token))
}

fn tracking_input(
    config: &aas::TargetTrackingScalingPolicyConfiguration,
) -> Result<TargetTrackingInput, ApiError> {
    let customized = match &config.customized_metric_specification {
        None => None,
        Some(spec) if spec.metrics.as_ref().is_some_and(|m| !m.is_empty()) => {
            let queries = spec
                .metrics
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|q| flotilla_metrics::metric_data::MetricDataQuery {
                    id: q.id.unwrap_or_default(),
                    metric_stat: q.metric_stat.map(|s| {
                        let metric = s.metric.unwrap_or_default();
                        flotilla_metrics::metric_data::MetricStat {
                            namespace: metric.namespace.unwrap_or_default(),
                            metric_name: metric.metric_name.unwrap_or_default(),
                            dimensions: metric
                                .dimensions
                                .unwrap_or_default()
                                .into_iter()
                                .map(|d| {
                                    flotilla_metrics::Dimension::new(
                                        d.name.unwrap_or_default(),
                                        d.value.unwrap_or_default(),
                                    )
                                })
                                .collect(),
                            period_s: 60,
                            stat: s.stat.unwrap_or_default(),
                            unit: s.unit,
                        }
                    }),
                    expression: q.expression,
                    label: q.label,
                    return_data: q.return_data,
                    period_s: None,
                })
                .collect();
            Some(TrackedMetric::Math(queries))
        }
        Some(spec) => Some(TrackedMetric::Customized {
            namespace: spec.namespace.clone().unwrap_or_default(),
            metric_name: spec.metric_name.clone().unwrap_or_default(),
            dimensions: spec
                .dimensions
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|d| {
                    flotilla_metrics::Dimension::new(
                        d.name.unwrap_or_default(),
                        d.value.unwrap_or_default(),
                    )
                })
                .collect(),
            statistic: spec
                .statistic
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            unit: spec.unit.clone(),
        }),
    };
    Ok(TargetTrackingInput {
        target_value: config.target_value,
        predefined_metric_type: config
            .predefined_metric_specification
            .as_ref()
            .and_then(|p| p.predefined_metric_type)
            .map(|t| t.as_str().to_owned()),
        resource_label: config
            .predefined_metric_specification
            .as_ref()
            .and_then(|p| p.resource_label.clone()),
        customized,
        scale_out_cooldown_s: config.scale_out_cooldown.map(i64::from),
        scale_in_cooldown_s: config.scale_in_cooldown.map(i64::from),
        disable_scale_in: config.disable_scale_in,
    })
}

fn step_input(config: &aas::StepScalingPolicyConfiguration) -> StepScalingInput {
    StepScalingInput {
        adjustment_type: config.adjustment_type.map(|t| t.as_str().to_owned()),
        steps: config
            .step_adjustments
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|s| StepAdjustment {
                lower_bound: s.metric_interval_lower_bound,
                upper_bound: s.metric_interval_upper_bound,
                scaling_adjustment: i64::from(s.scaling_adjustment.unwrap_or_default()),
            })
            .collect(),
        min_adjustment_magnitude: config.min_adjustment_magnitude.map(i64::from),
        cooldown_s: config.cooldown.map(i64::from),
        metric_aggregation_type: config
            .metric_aggregation_type
            .map(|t| t.as_str().to_owned()),
    }
}
