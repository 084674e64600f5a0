//! Load balancer and target group attributes: ELBv2's keys, their
//! defaults, and the values each accepts. Every key ELBv2 documents for the
//! types Flotilla serves is kept and returned; the data plane acts on those
//! `snapshot.rs` passes on.

use std::collections::BTreeMap;

use flotilla_aws::elbv2::LoadBalancerTypeEnum;
use flotilla_types::ApiError;

use crate::validation;

/// What a value must be.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Range(u64, u64),
    OneOf(&'static [&'static str]),
    Text,
}

type Attribute = (&'static str, &'static str, Kind);

const S3_LOGS: [Attribute; 3] = [
    ("access_logs.s3.enabled", "false", Kind::Bool),
    ("access_logs.s3.bucket", "", Kind::Text),
    ("access_logs.s3.prefix", "", Kind::Text),
];

const APPLICATION: &[Attribute] = &[
    S3_LOGS[0],
    S3_LOGS[1],
    S3_LOGS[2],
    (
        "client_keep_alive.seconds",
        "3600",
        Kind::Range(60, 604_800),
    ),
    ("connection_logs.s3.enabled", "false", Kind::Bool),
    ("connection_logs.s3.bucket", "", Kind::Text),
    ("connection_logs.s3.prefix", "", Kind::Text),
    ("deletion_protection.enabled", "false", Kind::Bool),
    ("idle_timeout.timeout_seconds", "60", Kind::Range(1, 4_000)),
    (
        "routing.http.desync_mitigation_mode",
        "defensive",
        Kind::OneOf(&["monitor", "defensive", "strictest"]),
    ),
    (
        "routing.http.drop_invalid_header_fields.enabled",
        "false",
        Kind::Bool,
    ),
    (
        "routing.http.preserve_host_header.enabled",
        "false",
        Kind::Bool,
    ),
    (
        "routing.http.x_amzn_tls_version_and_cipher_suite.enabled",
        "false",
        Kind::Bool,
    ),
    ("routing.http.xff_client_port.enabled", "false", Kind::Bool),
    (
        "routing.http.xff_header_processing.mode",
        "append",
        Kind::OneOf(&["append", "preserve", "remove"]),
    ),
    ("routing.http2.enabled", "true", Kind::Bool),
    ("waf.fail_open.enabled", "false", Kind::Bool),
    ("zonal_shift.config.enabled", "false", Kind::Bool),
];

const NETWORK: &[Attribute] = &[
    S3_LOGS[0],
    S3_LOGS[1],
    S3_LOGS[2],
    ("deletion_protection.enabled", "false", Kind::Bool),
    (
        "dns_record.client_routing_policy",
        "any_availability_zone",
        Kind::OneOf(&[
            "availability_zone_affinity",
            "partial_availability_zone_affinity",
            "any_availability_zone",
        ]),
    ),
    ("load_balancing.cross_zone.enabled", "false", Kind::Bool),
    ("zonal_shift.config.enabled", "false", Kind::Bool),
];

const TARGET_GROUP: &[Attribute] = &[
    (
        "deregistration_delay.timeout_seconds",
        "300",
        Kind::Range(0, 3_600),
    ),
    ("stickiness.enabled", "false", Kind::Bool),
    ("stickiness.type", "lb_cookie", Kind::OneOf(&["lb_cookie"])),
    (
        "stickiness.lb_cookie.duration_seconds",
        "86400",
        Kind::Range(1, 604_800),
    ),
    (
        "load_balancing.algorithm.type",
        "round_robin",
        Kind::OneOf(&["round_robin", "least_outstanding_requests"]),
    ),
    ("slow_start.duration_seconds", "0", Kind::Range(0, 900)),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
        Kind::OneOf(&["true", "false", "use_load_balancer_configuration"]),
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.count",
        "1",
        Kind::Text,
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.percentage",
        "off",
        Kind::Text,
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
        "1",
        Kind::Text,
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
        "off",
        Kind::Text,
    ),
];

/// Network target groups' own keys, besides the shared ones they have.
const NETWORK_TARGET_GROUP: &[Attribute] = &[
    (
        "deregistration_delay.timeout_seconds",
        "300",
        Kind::Range(0, 3_600),
    ),
    (
        "deregistration_delay.connection_termination.enabled",
        "false",
        Kind::Bool,
    ),
    ("preserve_client_ip.enabled", "false", Kind::Bool),
    ("proxy_protocol_v2.enabled", "false", Kind::Bool),
    ("stickiness.enabled", "false", Kind::Bool),
    ("stickiness.type", "source_ip", Kind::OneOf(&["source_ip"])),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
        Kind::OneOf(&["true", "false", "use_load_balancer_configuration"]),
    ),
];

fn table(kind: LoadBalancerTypeEnum) -> &'static [Attribute] {
    match kind {
        LoadBalancerTypeEnum::Network => NETWORK,
        _ => APPLICATION,
    }
}

fn target_group_table(network: bool) -> &'static [Attribute] {
    if network {
        NETWORK_TARGET_GROUP
    } else {
        TARGET_GROUP
    }
}

fn defaults(table: &[Attribute]) -> BTreeMap<String, String> {
    table
        .iter()
        .map(|(key, value, _)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

pub fn load_balancer_defaults(kind: LoadBalancerTypeEnum) -> BTreeMap<String, String> {
    defaults(table(kind))
}

pub fn target_group_defaults(network: bool) -> BTreeMap<String, String> {
    defaults(target_group_table(network))
}

/// `changes` applied over `current`, each key known and each value valid,
/// or the first problem as ELBv2's ValidationError.
fn apply(
    table: &[Attribute],
    what: &str,
    current: &BTreeMap<String, String>,
    changes: &[(Option<String>, Option<String>)],
) -> Result<BTreeMap<String, String>, ApiError> {
    if changes.is_empty() {
        return Err(validation("At least one attribute must be specified"));
    }
    let mut next = current.clone();
    for (key, value) in changes {
        let key = key.as_deref().unwrap_or_default();
        let value = value.as_deref().unwrap_or_default();
        let Some((_, _, kind)) = table.iter().find(|(known, _, _)| *known == key) else {
            return Err(validation(format!(
                "{what} attribute key '{key}' is not recognized"
            )));
        };
        let valid = match kind {
            Kind::Bool => value == "true" || value == "false",
            Kind::Range(min, max) => value
                .parse::<u64>()
                .is_ok_and(|number| (*min..=*max).contains(&number)),
            Kind::OneOf(allowed) => allowed.contains(&value),
            Kind::Text => value.len() <= 1_024,
        };
        if !valid {
            let expected = match kind {
                Kind::Bool => "'true' or 'false'".to_owned(),
                Kind::Range(min, max) => format!("an integer from {min} to {max}"),
                Kind::OneOf(allowed) => allowed
                    .iter()
                    .map(|value| format!("'{value}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                Kind::Text => "at most 1024 characters".to_owned(),
            };
            return Err(validation(format!(
                "{what} attribute '{key}' value '{value}' is not valid: must be {expected}"
            )));
        }
        if key == "slow_start.duration_seconds"
            && value != "0"
            && value.parse::<u64>().is_ok_and(|seconds| seconds < 30)
        {
            return Err(validation(format!(
                "{what} attribute '{key}' value '{value}' is not valid: must be 0 or from 30 to 900"
            )));
        }
        next.insert(key.to_owned(), value.to_owned());
    }
    Ok(next)
}

pub fn modify_load_balancer(
    kind: LoadBalancerTypeEnum,
    current: &BTreeMap<String, String>,
    changes: &[(Option<String>, Option<String>)],
) -> Result<BTreeMap<String, String>, ApiError> {
    apply(table(kind), "Load balancer", current, changes)
}

pub fn modify_target_group(
    network: bool,
    current: &BTreeMap<String, String>,
    changes: &[(Option<String>, Option<String>)],
) -> Result<BTreeMap<String, String>, ApiError> {
    apply(
        target_group_table(network),
        "Target group",
        current,
        changes,
    )
}
