//! The control plane's services register their tasks in ELBv2's target
//! groups through this adapter: the control plane sees only its
//! `TargetGroups` trait, the ELBv2 API only typed target lists, and this
//! binary, which composes both, joins them.

use std::sync::Arc;

use flotilla_aws::elbv2::{TargetHealthStateEnum, TargetTypeEnum};
use flotilla_control::services::target_groups::{
    BoxFuture, ListenerRuleInfo, Target, TargetGroupInfo, TargetGroups, TargetState, TargetType,
};
use flotilla_elbv2::Elbv2;
use flotilla_types::ApiError;

pub struct ServiceTargetGroups {
    pub elbv2: Arc<Elbv2>,
}

fn pairs(targets: Vec<Target>) -> Vec<(String, u16)> {
    targets.into_iter().map(|t| (t.id, t.port)).collect()
}

impl TargetGroups for ServiceTargetGroups {
    fn target_group(&self, arn: &str) -> Result<Option<TargetGroupInfo>, ApiError> {
        Ok(self
            .elbv2
            .service_target_group(arn)?
            .map(|group| TargetGroupInfo {
                target_type: match group.target_type {
                    TargetTypeEnum::Ip => TargetType::Ip,
                    _ => TargetType::Instance,
                },
                has_load_balancer: group.has_load_balancer,
                deregistration_delay_ms: group.deregistration_delay_ms,
            }))
    }

    fn register<'a>(
        &'a self,
        arn: &'a str,
        targets: Vec<Target>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            self.elbv2
                .register_service_targets(arn, &pairs(targets))
                .await
        })
    }

    fn deregister<'a>(
        &'a self,
        arn: &'a str,
        targets: Vec<Target>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            self.elbv2
                .deregister_service_targets(arn, &pairs(targets), now_ms)
                .await
        })
    }

    fn health(&self, arn: &str, target: &Target, now_ms: u64) -> TargetState {
        let Some(health) =
            self.elbv2
                .registered_target_health(arn, &target.id, target.port, now_ms)
        else {
            return TargetState::Initial;
        };
        match health.state {
            Some(TargetHealthStateEnum::Healthy) => TargetState::Healthy,
            Some(TargetHealthStateEnum::Initial) => TargetState::Initial,
            Some(TargetHealthStateEnum::Unhealthy) => TargetState::Unhealthy {
                description: health
                    .description
                    .unwrap_or_else(|| "Health checks failed".to_owned()),
            },
            _ => TargetState::Other,
        }
    }

    fn target_group_load_balancers(&self, arn: &str) -> Result<Vec<String>, ApiError> {
        self.elbv2.target_group_load_balancer_arns(arn)
    }

    fn listener_rule(&self, arn: &str) -> Result<Option<ListenerRuleInfo>, ApiError> {
        Ok(self
            .elbv2
            .service_listener_rule(arn)?
            .map(|rule| ListenerRuleInfo {
                load_balancer_arn: rule.load_balancer_arn,
                forward: rule.forward,
            }))
    }

    fn set_rule_weights<'a>(
        &'a self,
        arn: &'a str,
        weights: Vec<(String, i32)>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { self.elbv2.set_rule_forward_weights(arn, &weights).await })
    }
}
