//! Flotilla's Elastic Load Balancing API (ELBv2, `elasticloadbalancing`):
//! application and network load balancers, listeners, rules, target groups
//! and their targets, kept in the control plane's store.
//!
//! ```text
//! edge (Query) ─▶ Elbv2Request ─▶ Elbv2::handle ─▶ records::change(state ▶ decide ▶ check)
//!                                                    │ check: snapshot::build(state).validate()
//!                                                    ▼
//!                                   store: elbv2/generation, load-balancers/, target-groups/
//!                                                    │ (the embedding process watches)
//!                                                    ▼
//!                        snapshot::build ─▶ flotilla_lb::Snapshot ─▶ DataPlane::apply
//! ```
//!
//! *API boundary:* no HTTP, no XML: typed requests in, output shapes (as
//! JSON values the edge writes as XML) or `ApiError`s whose codes are the
//! model's exception shapes out. Time and ids come in with each call.
//!
//! *Architecture invariant:* a change that would give the data plane a
//! snapshot it refuses is refused here, so configuration requests never
//! stop the data plane serving.

#![forbid(unsafe_code)]

use std::sync::Arc;

use flotilla_aws::elbv2::{Elbv2Request, MODEL};
use flotilla_store::Store;
use flotilla_types::arn::Scope;
use flotilla_types::ApiError;

mod attributes;
mod certificates;
pub mod cloudwatch;
mod listeners;
mod load_balancers;
pub mod plane;
pub mod records;
pub mod remote;
pub mod services;
pub mod snapshot;
mod tags;
mod target_groups;
#[cfg(test)]
mod tests;

pub use certificates::{CertificateSource, SSL_POLICY_DEFAULT};
pub use snapshot::{HealthSource, SnapshotSettings};

/// The service name in ELBv2's ARNs.
const SERVICE: &str = "elasticloadbalancing";

/// The largest page DescribeLoadBalancers, DescribeTargetGroups,
/// DescribeListeners and DescribeRules answer, and their default.
pub const PAGE_SIZE_MAX: usize = 400;

/// One call's time and fresh identifier, from the edge.
pub struct CallContext {
    pub now_ms: u64,
    /// A fresh random UUID; new resources take their ids from it.
    pub fresh_id: String,
}

impl CallContext {
    /// 16 hexadecimal digits: the last part of a new resource's ARN.
    fn id(&self, which: usize) -> String {
        let hex: String = self
            .fresh_id
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect();
        let start = (which * 16) % hex.len().max(1);
        let mut id: String = hex.chars().cycle().skip(start).take(16).collect();
        id.make_ascii_lowercase();
        id
    }
}

/// The ELBv2 API over the store.
pub struct Elbv2 {
    store: Arc<dyn Store>,
    scope: Scope,
    settings: SnapshotSettings,
    health: Option<Arc<dyn HealthSource>>,
    /// Where HTTPS listeners' certificates come from.
    certificates: Option<Arc<dyn CertificateSource>>,
    /// What data planes on other hosts (`flotilla lb --control`) reported.
    reported: remote::ReportedHealth,
}

impl Elbv2 {
    pub fn new(store: Arc<dyn Store>, scope: Scope) -> Self {
        Elbv2 {
            store,
            scope,
            settings: SnapshotSettings::default(),
            health: None,
            certificates: None,
            reported: remote::ReportedHealth::default(),
        }
    }

    /// Where HTTPS listeners' certificate ARNs are resolved.
    pub fn with_certificates(mut self, certificates: Arc<dyn CertificateSource>) -> Self {
        self.certificates = Some(certificates);
        self
    }

    /// Where DescribeTargetHealth learns what the data plane found.
    pub fn with_health(mut self, health: Arc<dyn HealthSource>) -> Self {
        self.health = Some(health);
        self
    }

    pub fn with_settings(mut self, settings: SnapshotSettings) -> Self {
        self.settings = settings;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn settings(&self) -> &SnapshotSettings {
        &self.settings
    }

    fn arn_prefix(&self) -> String {
        self.scope.arn(SERVICE, "")
    }

    /// Carries out one request; `None` for an operation Flotilla does not
    /// implement (the edge answers the service's own error for it).
    pub async fn handle(
        &self,
        request: Elbv2Request,
        call: &CallContext,
    ) -> Option<Result<serde_json::Value, ApiError>> {
        use Elbv2Request as R;
        let answer = match request {
            R::CreateLoadBalancer(input) => to_value(self.create_load_balancer(input, call).await),
            R::DescribeLoadBalancers(input) => to_value(self.describe_load_balancers(input)),
            R::DeleteLoadBalancer(input) => to_value(self.delete_load_balancer(input).await),
            R::DescribeLoadBalancerAttributes(input) => {
                to_value(self.describe_load_balancer_attributes(input))
            }
            R::ModifyLoadBalancerAttributes(input) => {
                to_value(self.modify_load_balancer_attributes(input).await)
            }
            R::SetSecurityGroups(input) => to_value(self.set_security_groups(input).await),
            R::SetSubnets(input) => to_value(self.set_subnets(input).await),
            R::CreateTargetGroup(input) => to_value(self.create_target_group(input, call).await),
            R::DescribeTargetGroups(input) => to_value(self.describe_target_groups(input)),
            R::ModifyTargetGroup(input) => to_value(self.modify_target_group(input).await),
            R::DeleteTargetGroup(input) => to_value(self.delete_target_group(input).await),
            R::DescribeTargetGroupAttributes(input) => {
                to_value(self.describe_target_group_attributes(input))
            }
            R::ModifyTargetGroupAttributes(input) => {
                to_value(self.modify_target_group_attributes(input).await)
            }
            R::RegisterTargets(input) => to_value(self.register_targets(input).await),
            R::DeregisterTargets(input) => to_value(self.deregister_targets(input, call).await),
            R::DescribeTargetHealth(input) => to_value(self.describe_target_health(input, call)),
            R::CreateListener(input) => to_value(self.create_listener(input, call).await),
            R::DescribeListeners(input) => to_value(self.describe_listeners(input)),
            R::ModifyListener(input) => to_value(self.modify_listener(input).await),
            R::DeleteListener(input) => to_value(self.delete_listener(input).await),
            R::CreateRule(input) => to_value(self.create_rule(input, call).await),
            R::DescribeRules(input) => to_value(self.describe_rules(input)),
            R::ModifyRule(input) => to_value(self.modify_rule(input).await),
            R::DeleteRule(input) => to_value(self.delete_rule(input).await),
            R::SetRulePriorities(input) => to_value(self.set_rule_priorities(input).await),
            R::AddTags(input) => to_value(self.add_tags(input).await),
            R::RemoveTags(input) => to_value(self.remove_tags(input).await),
            R::DescribeTags(input) => to_value(self.describe_tags(input)),
            _ => return None,
        };
        Some(answer)
    }
}

fn to_value<T: serde::Serialize>(
    result: Result<T, ApiError>,
) -> Result<serde_json::Value, ApiError> {
    result.and_then(|output| {
        serde_json::to_value(output)
            .map_err(|error| ApiError::server(format!("response did not serialize: {error}")))
    })
}

/// An error of ELBv2's model (`shape` is the exception's shape name; the
/// edge answers the model's code for it), or a Query `ValidationError`.
pub(crate) fn error(shape: &'static str, message: impl Into<String>) -> ApiError {
    let status = MODEL.error(shape).map_or(400, |error| error.status);
    ApiError::new(shape, status, message)
}

pub(crate) fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new("ValidationError", 400, message)
}

/// A member the model requires, missing.
pub(crate) fn require(missing: Option<&'static str>) -> Result<(), ApiError> {
    match missing {
        Some(member) => Err(validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            lower_first(member)
        ))),
        None => Ok(()),
    }
}

fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One page of `items` (sorted) after `marker`, and the marker of the next.
pub(crate) fn page<T: Clone>(
    items: &[(String, T)],
    marker: Option<&str>,
    page_size: Option<i32>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let size = match page_size {
        None => PAGE_SIZE_MAX,
        Some(size) if (1..=PAGE_SIZE_MAX as i32).contains(&size) => size as usize,
        Some(size) => {
            return Err(validation(format!(
                "1 validation error detected: Value '{size}' at 'pageSize' failed to satisfy constraint: Member must have value between 1 and {PAGE_SIZE_MAX}"
            )))
        }
    };
    let start = match marker {
        None => 0,
        Some(marker) => items.partition_point(|(key, _)| key.as_str() <= marker),
    };
    let rest = &items[start.min(items.len())..];
    let taken: Vec<T> = rest
        .iter()
        .take(size)
        .map(|(_, item)| item.clone())
        .collect();
    let next = (rest.len() > size).then(|| items[start + size - 1].0.clone());
    Ok((taken, next))
}

/// The parts of an ELBv2 ARN after `arn:...:elasticloadbalancing:REGION:ACCOUNT:`.
pub(crate) fn arn_parts<'a>(prefix: &str, arn: &'a str, kind: &str) -> Option<Vec<&'a str>> {
    let resource = arn.strip_prefix(prefix)?;
    let rest = resource.strip_prefix(kind)?.strip_prefix('/')?;
    Some(rest.split('/').collect())
}
