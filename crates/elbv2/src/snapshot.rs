//! ELBv2's records as the data plane's [`Snapshot`]: one pure function,
//! [`build`], used both to check every change before it is committed and
//! to feed the data planes after.

use std::net::IpAddr;

use flotilla_aws::elbv2::{
    Action as WireAction, LoadBalancerTypeEnum, ProtocolEnum, RuleCondition, TargetTypeEnum,
};
use flotilla_lb::config::{
    self, ConfigError, Listener, LoadBalancer, LoadBalancerAttributes, Protocol, RegistrationState,
    Rule, Snapshot, Target, TargetGroup, TargetGroupAttributes, TargetType,
};
use flotilla_types::ApiError;

use crate::records::{LoadBalancerRecord, State, TargetGroupRecord};
use crate::{error, validation, Elbv2};

/// What a DNSName ends with, after the region. Names under `.localhost`
/// resolve to the loopback address on the machine that serves them (curl,
/// browsers and systemd-resolved resolve them without any DNS server).
pub const DNS_SUFFIX: &str = "elb.localhost";

/// How records become a snapshot on this installation.
#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    /// The domain DNSNames end with, after the region.
    pub dns_suffix: String,
    /// The address listeners bind on the data plane's host.
    pub bind_address: IpAddr,
    /// Where the data plane reaches targets of `instance` target groups:
    /// the container instances of `flotilla up` are the serving machine.
    pub instance_address: IpAddr,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            dns_suffix: DNS_SUFFIX.to_owned(),
            bind_address: IpAddr::from([0, 0, 0, 0]),
            instance_address: IpAddr::from([127, 0, 0, 1]),
        }
    }
}

/// What the data plane found about a target, for DescribeTargetHealth.
pub trait HealthSource: Send + Sync {
    fn target_health(
        &self,
        target_group_arn: &str,
        target_id: &str,
        port: u16,
    ) -> Option<flotilla_aws::elbv2::TargetHealth>;
}

fn forwarded_groups(action: &WireAction) -> impl Iterator<Item = &str> {
    let single = action.target_group_arn.as_deref();
    let weighted = action
        .forward_config
        .iter()
        .flat_map(|config| config.target_groups.iter().flatten())
        .filter_map(|tuple| tuple.target_group_arn.as_deref());
    single.into_iter().chain(weighted)
}

fn record_uses(balancer: &LoadBalancerRecord, target_group_arn: &str) -> bool {
    balancer.listeners.iter().any(|listener| {
        listener
            .description
            .default_actions
            .iter()
            .flatten()
            .chain(listener.rules.iter().flat_map(|rule| &rule.actions))
            .any(|action| forwarded_groups(action).any(|arn| arn == target_group_arn))
    })
}

/// The ARNs of the load balancers whose listeners or rules forward to the group.
pub fn load_balancers_using(state: &State, target_group_arn: &str) -> Vec<String> {
    state
        .load_balancers
        .values()
        .filter(|balancer| record_uses(balancer, target_group_arn))
        .filter_map(|balancer| balancer.description.load_balancer_arn.clone())
        .collect()
}

/// Why records do not make a snapshot.
#[derive(Debug)]
pub enum BuildError {
    /// A record the translation cannot read (a shape the API would have refused).
    Unreadable(String),
    /// A snapshot the data plane would refuse.
    Invalid(ConfigError),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Unreadable(reason) => f.write_str(reason),
            BuildError::Invalid(error) => write!(f, "{error}"),
        }
    }
}

fn protocol(wire: Option<ProtocolEnum>, location: &str) -> Result<Protocol, BuildError> {
    match wire {
        Some(ProtocolEnum::Http) => Ok(Protocol::Http),
        Some(ProtocolEnum::Https) => Ok(Protocol::Https),
        Some(ProtocolEnum::Tcp) => Ok(Protocol::Tcp),
        Some(ProtocolEnum::Udp) => Ok(Protocol::Udp),
        other => Err(BuildError::Unreadable(format!(
            "{location}: protocol {other:?} is not served by the data plane"
        ))),
    }
}

/// A wire shape as the data plane's, through their shared JSON names.
fn convert<T: serde::de::DeserializeOwned>(
    value: &impl serde::Serialize,
    location: &str,
) -> Result<T, BuildError> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|error| BuildError::Unreadable(format!("{location}: {error}")))
}

fn action(wire: &WireAction, location: &str) -> Result<config::Action, BuildError> {
    let mut wire = wire.clone();
    wire.order = None;
    convert(&wire, location)
}

fn condition(wire: &RuleCondition, location: &str) -> Result<config::Condition, BuildError> {
    let mut wire = wire.clone();
    // The legacy `Values` repeat the configuration; the data plane reads the latter.
    wire.values = None;
    if let Some(config) = &mut wire.source_ip_config {
        config.ip_address_type = None;
    }
    convert(&wire, location)
}

fn load_balancer(
    record: &LoadBalancerRecord,
    settings: &SnapshotSettings,
) -> Result<LoadBalancer, BuildError> {
    let name = record
        .description
        .load_balancer_name
        .clone()
        .unwrap_or_default();
    let mut listeners = Vec::new();
    for listener in &record.listeners {
        let location = format!("load balancer {name} listener {}", listener.id);
        let default_actions = listener
            .description
            .default_actions
            .iter()
            .flatten()
            .map(|wire| action(wire, &location))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rules = Vec::new();
        for rule in &listener.rules {
            rules.push(Rule {
                priority: rule.priority,
                conditions: rule
                    .conditions
                    .iter()
                    .map(|wire| condition(wire, &location))
                    .collect::<Result<_, _>>()?,
                actions: rule
                    .actions
                    .iter()
                    .map(|wire| action(wire, &location))
                    .collect::<Result<_, _>>()?,
            });
        }
        rules.sort_by_key(|rule| rule.priority);
        listeners.push(Listener {
            port: listener
                .description
                .port
                .unwrap_or_default()
                .clamp(0, 65_535) as u16,
            protocol: protocol(listener.description.protocol, &location)?,
            certificates: listener.served.clone(),
            default_actions,
            rules,
        });
    }
    let idle_timeout_seconds = record
        .attributes
        .get("idle_timeout.timeout_seconds")
        .and_then(|value| value.parse().ok())
        .unwrap_or(config::defaults::IDLE_TIMEOUT_SECONDS);
    Ok(LoadBalancer {
        name,
        kind: match record.kind {
            LoadBalancerTypeEnum::Network => config::LoadBalancerType::Network,
            _ => config::LoadBalancerType::Application,
        },
        bind_address: settings.bind_address,
        listeners,
        attributes: LoadBalancerAttributes {
            idle_timeout_seconds,
        },
    })
}

/// The target group attributes the data plane acts on.
const DATA_PLANE_ATTRIBUTES: [&str; 4] = [
    "deregistration_delay.timeout_seconds",
    "load_balancing.algorithm.type",
    "slow_start.duration_seconds",
    "stickiness.lb_cookie.duration_seconds",
];

fn target_group(
    record: &TargetGroupRecord,
    settings: &SnapshotSettings,
) -> Result<TargetGroup, BuildError> {
    let group = &record.description;
    let arn = group.target_group_arn.clone().unwrap_or_default();
    let location = format!("target group {arn}");
    let group_protocol = protocol(group.protocol, &location)?;
    let mut attributes: std::collections::BTreeMap<String, String> = record
        .attributes
        .iter()
        .filter(|(key, _)| DATA_PLANE_ATTRIBUTES.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    // Network target groups' stickiness is by source IP, which the data
    // plane does not do; application ones' is the load balancer's cookie.
    if !matches!(group_protocol, Protocol::Tcp | Protocol::Udp) {
        if let Some(enabled) = record.attributes.get("stickiness.enabled") {
            attributes.insert("stickiness.enabled".to_owned(), enabled.clone());
        }
    }
    let attributes = TargetGroupAttributes::try_from(attributes)
        .map_err(|reason| BuildError::Unreadable(format!("{location}: {reason}")))?;
    let ip = group.target_type == Some(TargetTypeEnum::Ip);
    let mut targets = Vec::new();
    for target in &record.targets {
        let address = if ip {
            target.id.parse().map_err(|_| {
                BuildError::Unreadable(format!(
                    "{location}: target {} is not an IP address",
                    target.id
                ))
            })?
        } else {
            settings.instance_address
        };
        targets.push(Target {
            id: target.id.clone(),
            address,
            port: Some(target.port),
            state: RegistrationState::Registered,
        });
    }
    Ok(TargetGroup {
        target_group_arn: arn,
        protocol: group_protocol,
        port: group.port.unwrap_or(80).clamp(1, 65_535) as u16,
        target_type: if ip {
            TargetType::Ip
        } else {
            TargetType::Instance
        },
        health_check_enabled: group.health_check_enabled.unwrap_or(true),
        health_check_protocol: match group.health_check_protocol {
            Some(wire) => Some(protocol(Some(wire), &location)?),
            None => None,
        },
        health_check_port: group
            .health_check_port
            .clone()
            .unwrap_or_else(|| "traffic-port".to_owned()),
        health_check_path: group.health_check_path.clone(),
        health_check_interval_seconds: group
            .health_check_interval_seconds
            .map_or(config::defaults::HEALTH_CHECK_INTERVAL_SECONDS, |seconds| {
                seconds.max(1) as u32
            }),
        health_check_timeout_seconds: group
            .health_check_timeout_seconds
            .map(|seconds| seconds.max(1) as u32),
        healthy_threshold_count: group
            .healthy_threshold_count
            .map_or(config::defaults::HEALTHY_THRESHOLD_COUNT, |count| {
                count.max(1) as u32
            }),
        unhealthy_threshold_count: group
            .unhealthy_threshold_count
            .map_or(config::defaults::UNHEALTHY_THRESHOLD_COUNT, |count| {
                count.max(1) as u32
            }),
        matcher: group
            .matcher
            .as_ref()
            .and_then(|matcher| matcher.http_code.clone())
            .map(|http_code| config::Matcher { http_code }),
        attributes,
        targets,
    })
}

/// The snapshot of `state`, versioned by its generation, checked as the
/// data plane checks it.
pub fn build(state: &State, settings: &SnapshotSettings) -> Result<Snapshot, BuildError> {
    let snapshot = Snapshot {
        version: state.generation,
        load_balancers: state
            .load_balancers
            .values()
            .map(|record| load_balancer(record, settings))
            .collect::<Result<_, _>>()?,
        target_groups: state
            .target_groups
            .values()
            .map(|record| target_group(record, settings))
            .collect::<Result<_, _>>()?,
    };
    snapshot.validate().map_err(BuildError::Invalid)?;
    Ok(snapshot)
}

impl Elbv2 {
    /// Refuses a change whose state the data plane would not serve.
    pub(crate) fn check(&self, state: &State) -> Result<(), ApiError> {
        match build(state, &self.settings) {
            Ok(_) => Ok(()),
            Err(BuildError::Invalid(ConfigError::PriorityInUse { priority, .. })) => Err(error(
                "PriorityInUseException",
                format!("Priority '{priority}' is currently in use"),
            )),
            Err(BuildError::Invalid(ConfigError::DuplicatePort { port, .. })) => Err(error(
                "DuplicateListenerException",
                format!("Port {port} is already taken on the serving host"),
            )),
            Err(BuildError::Invalid(ConfigError::UnknownTargetGroup { target_group, .. })) => {
                Err(crate::Elbv2::target_group_not_found(&target_group))
            }
            Err(other) => Err(validation(other.to_string())),
        }
    }
}
