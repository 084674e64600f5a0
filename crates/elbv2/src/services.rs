//! What a container orchestrator's services need of target groups: a
//! group's type and whether a load balancer uses it, registering and
//! deregistering many targets at once, and a target's health without
//! reading the whole state.
//!
//! *API boundary:* typed values in and out, in ELBv2's terms; the process
//! that composes the ELBv2 API with a control plane adapts them.

use flotilla_aws::elbv2::{
    Action, ActionTypeEnum, ForwardActionConfig, ProtocolEnum, TargetGroupTuple, TargetHealth,
    TargetTypeEnum,
};
use flotilla_types::ApiError;

use crate::listeners::RuleRef;
use crate::records::{change, DrainingTarget, State, TargetRecord};
use crate::target_groups::within_target_limit;
use crate::Elbv2;

/// A target group as a service sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTargetGroup {
    pub target_type: TargetTypeEnum,
    /// Whether a listener of a load balancer forwards to it.
    pub has_load_balancer: bool,
    pub deregistration_delay_ms: u64,
}

/// The deregistration delay a group's attributes hold (300 s by default).
fn deregistration_delay_ms(attributes: &std::collections::BTreeMap<String, String>) -> u64 {
    attributes
        .get("deregistration_delay.timeout_seconds")
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(300)
        * 1_000
}

impl Elbv2 {
    /// The target group with this ARN, if there is one.
    pub fn service_target_group(&self, arn: &str) -> Result<Option<ServiceTargetGroup>, ApiError> {
        let state = State::read(&**self.store())?;
        Ok(self
            .find_target_group(&state, arn)
            .map(|record| ServiceTargetGroup {
                target_type: record
                    .description
                    .target_type
                    .unwrap_or(TargetTypeEnum::Instance),
                has_load_balancer: !crate::snapshot::load_balancers_using(&state, arn).is_empty(),
                deregistration_delay_ms: deregistration_delay_ms(&record.attributes),
            }))
    }

    /// Registers `targets` (id, port) in one change; those registered
    /// already stay as they are.
    pub async fn register_service_targets(
        &self,
        arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), ApiError> {
        change(
            &**self.store(),
            |state| {
                let name = self
                    .find_target_group(state, arn)
                    .and_then(|record| record.description.target_group_name.clone())
                    .ok_or_else(|| Self::target_group_not_found(arn))?;
                let Some(record) = state.target_groups.get_mut(&name) else {
                    return Err(Self::target_group_not_found(arn));
                };
                for (id, port) in targets {
                    record
                        .draining
                        .retain(|d| (&d.target.id, d.target.port) != (id, *port));
                    if !record
                        .targets
                        .iter()
                        .any(|t| (&t.id, t.port) == (id, *port))
                    {
                        record.targets.push(TargetRecord {
                            id: id.clone(),
                            port: *port,
                            availability_zone: None,
                        });
                    }
                }
                within_target_limit(record)
            },
            |state| self.check(state),
        )
        .await
    }

    /// Deregisters `targets` in one change: each drains for the group's
    /// deregistration delay. Targets not registered are passed over, so
    /// that a retried deregistration succeeds; a group that is gone has
    /// nothing left to deregister.
    pub async fn deregister_service_targets(
        &self,
        arn: &str,
        targets: &[(String, u16)],
        now_ms: u64,
    ) -> Result<(), ApiError> {
        change(
            &**self.store(),
            |state| {
                let Some(name) = self
                    .find_target_group(state, arn)
                    .and_then(|record| record.description.target_group_name.clone())
                else {
                    return Ok(());
                };
                let Some(record) = state.target_groups.get_mut(&name) else {
                    return Ok(());
                };
                let delay_ms = deregistration_delay_ms(&record.attributes);
                record.draining.retain(|d| d.until_ms > now_ms);
                for (id, port) in targets {
                    let Some(at) = record
                        .targets
                        .iter()
                        .position(|t| (&t.id, t.port) == (id, *port))
                    else {
                        continue;
                    };
                    let target = record.targets.remove(at);
                    if delay_ms > 0 {
                        record.draining.push(DrainingTarget {
                            target,
                            until_ms: now_ms + delay_ms,
                        });
                    }
                }
                Ok(())
            },
            |state| self.check(state),
        )
        .await
    }

    /// What a data plane last found about a registered target, if any has
    /// checked it yet.
    pub fn registered_target_health(
        &self,
        arn: &str,
        id: &str,
        port: u16,
        now_ms: u64,
    ) -> Option<TargetHealth> {
        self.health
            .as_ref()
            .and_then(|source| source.target_health(arn, id, port))
            .or_else(|| self.reported.target_health(arn, id, port, now_ms))
    }
}

/// A listener rule as a traffic shift sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceListenerRule {
    pub load_balancer_arn: String,
    /// The target groups its forward action sends to, with their weights.
    pub forward: Vec<(String, i32)>,
}

/// The forward action's target groups and weights.
fn forwarded(actions: &[Action]) -> Vec<(String, i32)> {
    actions
        .iter()
        .filter(|action| action.r#type == Some(ActionTypeEnum::Forward))
        .flat_map(|action| match &action.forward_config {
            Some(config) => config
                .target_groups
                .iter()
                .flatten()
                .map(|tuple| {
                    (
                        tuple.target_group_arn.clone().unwrap_or_default(),
                        tuple.weight.unwrap_or(1),
                    )
                })
                .collect::<Vec<_>>(),
            None => action
                .target_group_arn
                .iter()
                .map(|arn| (arn.clone(), 1))
                .collect(),
        })
        .collect()
}

impl Elbv2 {
    /// The ARNs of the load balancers whose listeners forward to the group.
    pub fn target_group_load_balancer_arns(&self, arn: &str) -> Result<Vec<String>, ApiError> {
        let state = State::read(&**self.store())?;
        Ok(crate::snapshot::load_balancers_using(&state, arn))
    }

    /// A listener rule (a listener's default rule too), if there is one.
    pub fn service_listener_rule(
        &self,
        arn: &str,
    ) -> Result<Option<ServiceListenerRule>, ApiError> {
        let state = State::read(&**self.store())?;
        let Some((name, index, which)) = self.find_any_rule(&state, arn) else {
            return Ok(None);
        };
        let balancer = &state.load_balancers[&name];
        let listener = &balancer.listeners[index];
        let actions = match which {
            RuleRef::Default => listener
                .description
                .default_actions
                .clone()
                .unwrap_or_default(),
            RuleRef::At(at) => listener.rules[at].actions.clone(),
        };
        Ok(Some(ServiceListenerRule {
            load_balancer_arn: balancer
                .description
                .load_balancer_arn
                .clone()
                .unwrap_or_default(),
            forward: forwarded(&actions),
        }))
    }

    /// Makes a listener rule (or a listener's default rule) forward to
    /// these target groups with these weights, in one change checked as
    /// ModifyRule checks it; its stickiness stays as it was.
    pub async fn set_rule_forward_weights(
        &self,
        arn: &str,
        weights: &[(String, i32)],
    ) -> Result<(), ApiError> {
        change(
            &**self.store(),
            |state| {
                let not_found = || {
                    crate::error(
                        "RuleNotFoundException",
                        format!("One or more rules not found: '{arn}'"),
                    )
                };
                let (name, index, which) = self.find_any_rule(state, arn).ok_or_else(not_found)?;
                let balancer = &state.load_balancers[&name];
                let listener = &balancer.listeners[index];
                let current = match which {
                    RuleRef::Default => listener
                        .description
                        .default_actions
                        .clone()
                        .unwrap_or_default(),
                    RuleRef::At(at) => listener.rules[at].actions.clone(),
                };
                let stickiness = current
                    .iter()
                    .find_map(|a| a.forward_config.as_ref())
                    .and_then(|c| c.target_group_stickiness_config.clone());
                let action = Action {
                    r#type: Some(ActionTypeEnum::Forward),
                    forward_config: Some(ForwardActionConfig {
                        target_groups: Some(
                            weights
                                .iter()
                                .map(|(arn, weight)| TargetGroupTuple {
                                    target_group_arn: Some(arn.clone()),
                                    weight: Some(*weight),
                                })
                                .collect(),
                        ),
                        target_group_stickiness_config: stickiness,
                    }),
                    ..Default::default()
                };
                let protocol = listener.description.protocol.unwrap_or(ProtocolEnum::Http);
                let actions = self.normalized_actions(state, balancer, protocol, &[action])?;
                let balancer = state.load_balancers.get_mut(&name).ok_or_else(not_found)?;
                let listener = &mut balancer.listeners[index];
                match which {
                    RuleRef::Default => listener.description.default_actions = Some(actions),
                    RuleRef::At(at) => listener.rules[at].actions = actions,
                }
                Ok(())
            },
            |state| self.check(state),
        )
        .await
    }
}
