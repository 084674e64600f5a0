//! The configuration snapshot: plain data, serde, in ELBv2's own names and
//! shapes (`DefaultActions`, `Field: host-header`, `HealthCheckIntervalSeconds`,
//! `deregistration_delay.timeout_seconds`, ...) with ELBv2's defaults, so that
//! a snapshot reads like what `aws elbv2 describe-*` prints and the ELBv2 API
//! can build one without translation tables.
//!
//! A snapshot is the whole configuration of one data plane. It is validated
//! here, purely ([`Snapshot::validate`]), before anything is bound or swapped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::pattern::{self, Cidr};

/// ELBv2's limits that a snapshot is held to (its documented quotas).
pub mod limits {
    /// Listeners per load balancer.
    pub const LISTENERS_PER_LOAD_BALANCER_MAX: usize = 50;
    /// Rules per listener, the default rule not counted (ELBv2 counts 100 per load balancer).
    pub const RULES_PER_LISTENER_MAX: usize = 100;
    /// Condition values per rule, over all its conditions.
    pub const CONDITION_VALUES_PER_RULE_MAX: usize = 5;
    /// `*` and `?` per rule, over all its condition values.
    pub const WILDCARDS_PER_RULE_MAX: usize = 5;
    /// Length of one host, path, header or query-string condition value.
    pub const CONDITION_VALUE_LENGTH_MAX: usize = 128;
    /// Length of an http-header condition's header name and of a method.
    pub const HEADER_NAME_LENGTH_MAX: usize = 40;
    /// Target groups one forward action spreads over.
    pub const TARGET_GROUPS_PER_ACTION_MAX: usize = 5;
    /// A target group's weight in a forward action.
    pub const TARGET_GROUP_WEIGHT_MAX: u32 = 999;
    /// Registered targets per target group (instance and ip).
    pub const TARGETS_PER_TARGET_GROUP_MAX: usize = 1_000;
    /// Rule priorities run from 1 to this.
    pub const RULE_PRIORITY_MAX: u32 = 50_000;
    /// A fixed response's body.
    pub const FIXED_RESPONSE_BODY_MAX_BYTES: usize = 1_024;
    /// Group stickiness duration.
    pub const STICKINESS_DURATION_SECONDS_MAX: u32 = 604_800;
    /// Load balancers and target groups one snapshot may hold, so that a
    /// snapshot from anywhere cannot grow the data plane without bound.
    pub const LOAD_BALANCERS_MAX: usize = 1_000;
    pub const TARGET_GROUPS_MAX: usize = 3_000;
}

/// ELBv2's defaults for what a snapshot may leave out.
pub mod defaults {
    pub const HEALTH_CHECK_INTERVAL_SECONDS: u32 = 30;
    pub const HEALTH_CHECK_TIMEOUT_SECONDS_HTTP: u32 = 5;
    pub const HEALTH_CHECK_TIMEOUT_SECONDS_TCP: u32 = 10;
    pub const HEALTHY_THRESHOLD_COUNT: u32 = 5;
    pub const UNHEALTHY_THRESHOLD_COUNT: u32 = 2;
    pub const HEALTH_CHECK_PATH: &str = "/";
    pub const MATCHER_HTTP_CODE: &str = "200";
    pub const DEREGISTRATION_DELAY_SECONDS: u32 = 300;
    pub const STICKINESS_DURATION_SECONDS: u32 = 86_400;
    pub const IDLE_TIMEOUT_SECONDS: u32 = 60;
}

/// One whole configuration. `version` orders snapshots: a data plane applies
/// only a version newer than the one it serves, so a late delivery from a
/// lagging source cannot roll it back. Version 0 means "unversioned" and is
/// given the next number by the source that reads it (a file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Snapshot {
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancer>,
    #[serde(default)]
    pub target_groups: Vec<TargetGroup>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadBalancerType {
    Application,
    Network,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// The load balancer's name (or ARN): what metrics and logs call it.
    pub name: String,
    #[serde(rename = "Type")]
    pub kind: LoadBalancerType,
    /// The local address its listeners bind; every address by default.
    #[serde(default = "unspecified_address")]
    pub bind_address: IpAddr,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub attributes: LoadBalancerAttributes,
}

fn unspecified_address() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}

/// ELBv2's load balancer attributes the data plane acts on, keyed as
/// ModifyLoadBalancerAttributes keys them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct LoadBalancerAttributes {
    /// `idle_timeout.timeout_seconds` (application load balancers).
    pub idle_timeout_seconds: u32,
}

impl Default for LoadBalancerAttributes {
    fn default() -> Self {
        LoadBalancerAttributes {
            idle_timeout_seconds: defaults::IDLE_TIMEOUT_SECONDS,
        }
    }
}

impl TryFrom<BTreeMap<String, String>> for LoadBalancerAttributes {
    type Error = String;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, String> {
        let mut attributes = LoadBalancerAttributes::default();
        for (key, value) in map {
            match key.as_str() {
                "idle_timeout.timeout_seconds" => {
                    attributes.idle_timeout_seconds = parse_ranged(&key, &value, 1, 4_000)?
                }
                _ => return Err(format!("unsupported load balancer attribute {key:?}")),
            }
        }
        Ok(attributes)
    }
}

impl From<LoadBalancerAttributes> for BTreeMap<String, String> {
    fn from(attributes: LoadBalancerAttributes) -> Self {
        BTreeMap::from([(
            "idle_timeout.timeout_seconds".to_owned(),
            attributes.idle_timeout_seconds.to_string(),
        )])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Http,
    Https,
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Listener {
    pub port: u16,
    pub protocol: Protocol,
    /// HTTPS only: the server certificate chain and its key, in PEM. The
    /// first is the default certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    pub default_actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// A certificate and its private key. The key is kept out of `Debug`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Certificate {
    pub certificate_pem: String,
    pub private_key_pem: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("certificate_pem_bytes", &self.certificate_pem.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Rule {
    pub priority: u32,
    pub conditions: Vec<Condition>,
    pub actions: Vec<Action>,
}

/// A rule condition, in ELBv2's shape: `{"Field": "host-header",
/// "HostHeaderConfig": {"Values": [...]}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Field")]
pub enum Condition {
    #[serde(rename = "host-header")]
    HostHeader {
        #[serde(rename = "HostHeaderConfig")]
        config: ValuesConfig,
    },
    #[serde(rename = "path-pattern")]
    PathPattern {
        #[serde(rename = "PathPatternConfig")]
        config: ValuesConfig,
    },
    #[serde(rename = "http-header")]
    HttpHeader {
        #[serde(rename = "HttpHeaderConfig")]
        config: HttpHeaderConfig,
    },
    #[serde(rename = "query-string")]
    QueryString {
        #[serde(rename = "QueryStringConfig")]
        config: QueryStringConfig,
    },
    #[serde(rename = "http-request-method")]
    HttpRequestMethod {
        #[serde(rename = "HttpRequestMethodConfig")]
        config: ValuesConfig,
    },
    #[serde(rename = "source-ip")]
    SourceIp {
        #[serde(rename = "SourceIpConfig")]
        config: ValuesConfig,
    },
}

impl Condition {
    pub fn field(&self) -> &'static str {
        match self {
            Condition::HostHeader { .. } => "host-header",
            Condition::PathPattern { .. } => "path-pattern",
            Condition::HttpHeader { .. } => "http-header",
            Condition::QueryString { .. } => "query-string",
            Condition::HttpRequestMethod { .. } => "http-request-method",
            Condition::SourceIp { .. } => "source-ip",
        }
    }

    /// The patterns whose length and wildcards count against the rule's limits.
    fn patterns(&self) -> Vec<&str> {
        match self {
            Condition::HostHeader { config }
            | Condition::PathPattern { config }
            | Condition::HttpRequestMethod { config }
            | Condition::SourceIp { config } => config.values.iter().map(String::as_str).collect(),
            Condition::HttpHeader { config } => config.values.iter().map(String::as_str).collect(),
            Condition::QueryString { config } => config
                .values
                .iter()
                .flat_map(|pair| pair.key.as_deref().into_iter().chain([pair.value.as_str()]))
                .collect(),
        }
    }

    fn value_count(&self) -> usize {
        match self {
            Condition::HostHeader { config }
            | Condition::PathPattern { config }
            | Condition::HttpRequestMethod { config }
            | Condition::SourceIp { config } => config.values.len(),
            Condition::HttpHeader { config } => config.values.len(),
            Condition::QueryString { config } => config.values.len(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ValuesConfig {
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HttpHeaderConfig {
    pub http_header_name: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct QueryStringConfig {
    pub values: Vec<QueryStringKeyValue>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct QueryStringKeyValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub value: String,
}

/// A listener's or rule's action, in ELBv2's shape (`{"Type": "forward", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum Action {
    #[serde(rename = "forward", rename_all = "PascalCase")]
    Forward {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_group_arn: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forward_config: Option<ForwardConfig>,
    },
    #[serde(rename = "fixed-response", rename_all = "PascalCase")]
    FixedResponse {
        fixed_response_config: FixedResponseConfig,
    },
    #[serde(rename = "redirect", rename_all = "PascalCase")]
    Redirect { redirect_config: RedirectConfig },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ForwardConfig {
    pub target_groups: Vec<WeightedTargetGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_stickiness_config: Option<TargetGroupStickinessConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct WeightedTargetGroup {
    pub target_group_arn: String,
    /// ELBv2 treats a missing weight as 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TargetGroupStickinessConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FixedResponseConfig {
    /// `2XX`, `4XX` or `5XX` as three digits.
    pub status_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_body: Option<String>,
}

/// The content types ELBv2 allows a fixed response.
pub const FIXED_RESPONSE_CONTENT_TYPES: [&str; 5] = [
    "text/plain",
    "text/css",
    "text/html",
    "application/javascript",
    "application/json",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RedirectConfig {
    #[serde(default = "keep_protocol")]
    pub protocol: String,
    #[serde(default = "keep_port")]
    pub port: String,
    #[serde(default = "keep_host")]
    pub host: String,
    #[serde(default = "keep_path")]
    pub path: String,
    #[serde(default = "keep_query")]
    pub query: String,
    /// `HTTP_301` or `HTTP_302`.
    pub status_code: RedirectStatus,
}

fn keep_protocol() -> String {
    "#{protocol}".to_owned()
}
fn keep_port() -> String {
    "#{port}".to_owned()
}
fn keep_host() -> String {
    "#{host}".to_owned()
}
fn keep_path() -> String {
    "/#{path}".to_owned()
}
fn keep_query() -> String {
    "#{query}".to_owned()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirectStatus {
    #[serde(rename = "HTTP_301")]
    Permanent,
    #[serde(rename = "HTTP_302")]
    Found,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    Instance,
    Ip,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TargetGroup {
    /// The target group's ARN, or any unique name in a hand-written file.
    pub target_group_arn: String,
    pub protocol: Protocol,
    pub port: u16,
    #[serde(default = "instance")]
    pub target_type: TargetType,
    #[serde(default = "yes")]
    pub health_check_enabled: bool,
    /// HTTP or HTTPS for application target groups, also TCP for network
    /// ones; defaults to the group's own protocol family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_protocol: Option<Protocol>,
    /// `traffic-port` or a port number.
    #[serde(default = "traffic_port")]
    pub health_check_port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    #[serde(default = "interval")]
    pub health_check_interval_seconds: u32,
    /// Defaults to 5 s for HTTP checks and 10 s for TCP ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_timeout_seconds: Option<u32>,
    #[serde(default = "healthy_threshold")]
    pub healthy_threshold_count: u32,
    #[serde(default = "unhealthy_threshold")]
    pub unhealthy_threshold_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<Matcher>,
    #[serde(default)]
    pub attributes: TargetGroupAttributes,
    #[serde(default)]
    pub targets: Vec<Target>,
}

fn instance() -> TargetType {
    TargetType::Instance
}
fn yes() -> bool {
    true
}
fn traffic_port() -> String {
    "traffic-port".to_owned()
}
fn interval() -> u32 {
    defaults::HEALTH_CHECK_INTERVAL_SECONDS
}
fn healthy_threshold() -> u32 {
    defaults::HEALTHY_THRESHOLD_COUNT
}
fn unhealthy_threshold() -> u32 {
    defaults::UNHEALTHY_THRESHOLD_COUNT
}

impl TargetGroup {
    /// The health check's protocol once defaults are applied.
    pub fn effective_health_check_protocol(&self) -> Protocol {
        self.health_check_protocol.unwrap_or(match self.protocol {
            Protocol::Udp => Protocol::Tcp,
            other => other,
        })
    }

    pub fn effective_health_check_timeout_seconds(&self) -> u32 {
        self.health_check_timeout_seconds
            .unwrap_or(match self.effective_health_check_protocol() {
                Protocol::Http | Protocol::Https => defaults::HEALTH_CHECK_TIMEOUT_SECONDS_HTTP,
                Protocol::Tcp | Protocol::Udp => defaults::HEALTH_CHECK_TIMEOUT_SECONDS_TCP,
            })
    }

    pub fn effective_health_check_path(&self) -> &str {
        self.health_check_path
            .as_deref()
            .unwrap_or(defaults::HEALTH_CHECK_PATH)
    }

    pub fn effective_matcher(&self) -> &str {
        self.matcher
            .as_ref()
            .map_or(defaults::MATCHER_HTTP_CODE, |matcher| &matcher.http_code)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Matcher {
    /// `200`, `200,202` or `200-299`.
    pub http_code: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "round_robin")]
    RoundRobin,
    #[serde(rename = "least_outstanding_requests")]
    LeastOutstandingRequests,
}

/// ELBv2's target group attributes the data plane acts on, keyed as
/// ModifyTargetGroupAttributes keys them; any other key is refused by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct TargetGroupAttributes {
    pub deregistration_delay_seconds: u32,
    pub algorithm: Algorithm,
    pub slow_start_seconds: u32,
    pub stickiness_enabled: bool,
    pub stickiness_duration_seconds: u32,
}

impl Default for TargetGroupAttributes {
    fn default() -> Self {
        TargetGroupAttributes {
            deregistration_delay_seconds: defaults::DEREGISTRATION_DELAY_SECONDS,
            algorithm: Algorithm::RoundRobin,
            slow_start_seconds: 0,
            stickiness_enabled: false,
            stickiness_duration_seconds: defaults::STICKINESS_DURATION_SECONDS,
        }
    }
}

fn parse_ranged(key: &str, value: &str, min: u32, max: u32) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(parsed) if (min..=max).contains(&parsed) => Ok(parsed),
        _ => Err(format!(
            "attribute {key:?} must be an integer from {min} to {max}, not {value:?}"
        )),
    }
}

impl TryFrom<BTreeMap<String, String>> for TargetGroupAttributes {
    type Error = String;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, String> {
        let mut attributes = TargetGroupAttributes::default();
        for (key, value) in &map {
            match key.as_str() {
                "deregistration_delay.timeout_seconds" => {
                    attributes.deregistration_delay_seconds = parse_ranged(key, value, 0, 3_600)?
                }
                "load_balancing.algorithm.type" => {
                    attributes.algorithm = match value.as_str() {
                        "round_robin" => Algorithm::RoundRobin,
                        "least_outstanding_requests" => Algorithm::LeastOutstandingRequests,
                        _ => return Err(format!(
                            "attribute {key:?} must be round_robin or least_outstanding_requests, not {value:?}"
                        )),
                    }
                }
                "slow_start.duration_seconds" => {
                    let seconds = parse_ranged(key, value, 0, 900)?;
                    if seconds != 0 && seconds < 30 {
                        return Err(format!(
                            "attribute {key:?} must be 0 (off) or from 30 to 900, not {value:?}"
                        ));
                    }
                    attributes.slow_start_seconds = seconds;
                }
                "stickiness.enabled" => {
                    attributes.stickiness_enabled = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(format!(
                                "attribute {key:?} must be true or false, not {value:?}"
                            ))
                        }
                    }
                }
                "stickiness.type" => {
                    if value != "lb_cookie" {
                        return Err(format!(
                            "attribute {key:?}: only lb_cookie is supported, not {value:?}"
                        ));
                    }
                }
                "stickiness.lb_cookie.duration_seconds" => {
                    attributes.stickiness_duration_seconds = parse_ranged(
                        key,
                        value,
                        1,
                        limits::STICKINESS_DURATION_SECONDS_MAX,
                    )?
                }
                _ => return Err(format!("unsupported target group attribute {key:?}")),
            }
        }
        Ok(attributes)
    }
}

impl From<TargetGroupAttributes> for BTreeMap<String, String> {
    fn from(attributes: TargetGroupAttributes) -> Self {
        let algorithm = match attributes.algorithm {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastOutstandingRequests => "least_outstanding_requests",
        };
        [
            (
                "deregistration_delay.timeout_seconds",
                attributes.deregistration_delay_seconds.to_string(),
            ),
            ("load_balancing.algorithm.type", algorithm.to_owned()),
            (
                "slow_start.duration_seconds",
                attributes.slow_start_seconds.to_string(),
            ),
            (
                "stickiness.enabled",
                attributes.stickiness_enabled.to_string(),
            ),
            ("stickiness.type", "lb_cookie".to_owned()),
            (
                "stickiness.lb_cookie.duration_seconds",
                attributes.stickiness_duration_seconds.to_string(),
            ),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Target {
    /// The instance id or IP the control plane registered.
    pub id: String,
    /// Where the data plane connects: the instance's address, or the IP.
    pub address: IpAddr,
    /// The target's port; the target group's port when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub state: RegistrationState,
}

/// Whether the control plane still registers a target. A draining target
/// takes no new requests; a target that leaves the snapshot drains too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationState {
    #[default]
    Registered,
    Draining,
}

/// What is wrong with a snapshot, naming where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{kind} {name:?} appears more than once")]
    Duplicate { kind: &'static str, name: String },
    #[error("listener port {port} is used twice on bind address {address}")]
    DuplicatePort { address: IpAddr, port: u16 },
    #[error("{location}: priority {priority} is in use by another rule")]
    PriorityInUse { location: String, priority: u32 },
    #[error("{location}: target group {target_group:?} is not in the snapshot")]
    UnknownTargetGroup {
        location: String,
        target_group: String,
    },
    #[error("{location}: {field} {value:?} is invalid: {expected}")]
    InvalidValue {
        location: String,
        field: &'static str,
        value: String,
        expected: String,
    },
    #[error("{location}: {count} {what} is more than the limit of {max}")]
    TooMany {
        location: String,
        what: &'static str,
        count: usize,
        max: usize,
    },
}

fn invalid(
    location: &str,
    field: &'static str,
    value: impl ToString,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::InvalidValue {
        location: location.to_owned(),
        field,
        value: value.to_string(),
        expected: expected.into(),
    }
}

fn at_most(
    location: &str,
    what: &'static str,
    count: usize,
    max: usize,
) -> Result<(), ConfigError> {
    if count > max {
        return Err(ConfigError::TooMany {
            location: location.to_owned(),
            what,
            count,
            max,
        });
    }
    Ok(())
}

impl Snapshot {
    /// Checks everything that can be checked without binding a port or
    /// parsing a certificate, as ELBv2's API checks a request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_most(
            "snapshot",
            "load balancers",
            self.load_balancers.len(),
            limits::LOAD_BALANCERS_MAX,
        )?;
        at_most(
            "snapshot",
            "target groups",
            self.target_groups.len(),
            limits::TARGET_GROUPS_MAX,
        )?;
        let mut groups = HashMap::new();
        for group in &self.target_groups {
            if groups
                .insert(group.target_group_arn.as_str(), group)
                .is_some()
            {
                return Err(ConfigError::Duplicate {
                    kind: "target group",
                    name: group.target_group_arn.clone(),
                });
            }
            validate_target_group(group)?;
        }
        let mut names = HashSet::new();
        let mut ports = HashSet::new();
        for balancer in &self.load_balancers {
            if !names.insert(balancer.name.as_str()) {
                return Err(ConfigError::Duplicate {
                    kind: "load balancer",
                    name: balancer.name.clone(),
                });
            }
            let location = format!("load balancer {:?}", balancer.name);
            at_most(
                &location,
                "listeners",
                balancer.listeners.len(),
                limits::LISTENERS_PER_LOAD_BALANCER_MAX,
            )?;
            for listener in &balancer.listeners {
                // Two listeners on one port conflict whatever their load balancer,
                // unless both the addresses are specific and differ.
                let conflicts = ports.iter().any(|&(address, port): &(IpAddr, u16)| {
                    port == listener.port
                        && (address == balancer.bind_address
                            || address.is_unspecified()
                            || balancer.bind_address.is_unspecified())
                });
                if conflicts {
                    return Err(ConfigError::DuplicatePort {
                        address: balancer.bind_address,
                        port: listener.port,
                    });
                }
                ports.insert((balancer.bind_address, listener.port));
                validate_listener(balancer, listener, &groups)?;
            }
        }
        Ok(())
    }
}

fn validate_listener(
    balancer: &LoadBalancer,
    listener: &Listener,
    groups: &HashMap<&str, &TargetGroup>,
) -> Result<(), ConfigError> {
    let location = format!(
        "load balancer {:?} listener {}",
        balancer.name, listener.port
    );
    if listener.port == 0 {
        return Err(invalid(&location, "Port", 0, "a port from 1 to 65535"));
    }
    let allowed = match balancer.kind {
        LoadBalancerType::Application => [Protocol::Http, Protocol::Https].as_slice(),
        LoadBalancerType::Network => [Protocol::Tcp, Protocol::Udp].as_slice(),
    };
    if !allowed.contains(&listener.protocol) {
        return Err(invalid(
            &location,
            "Protocol",
            listener.protocol.as_str(),
            format!(
                "a {:?} load balancer's listeners are {allowed:?}",
                balancer.kind
            ),
        ));
    }
    match (listener.protocol, listener.certificates.is_empty()) {
        (Protocol::Https, true) => {
            return Err(invalid(
                &location,
                "Certificates",
                "[]",
                "an HTTPS listener needs a certificate",
            ))
        }
        (Protocol::Http | Protocol::Tcp | Protocol::Udp, false) => {
            return Err(invalid(
                &location,
                "Certificates",
                "...",
                "only HTTPS listeners take certificates",
            ))
        }
        _ => {}
    }
    validate_actions(
        &location,
        &listener.default_actions,
        balancer,
        listener,
        groups,
    )?;
    if balancer.kind == LoadBalancerType::Network && !listener.rules.is_empty() {
        return Err(invalid(
            &location,
            "Rules",
            listener.rules.len(),
            "network load balancers' listeners have no rules",
        ));
    }
    at_most(
        &location,
        "rules",
        listener.rules.len(),
        limits::RULES_PER_LISTENER_MAX,
    )?;
    let mut priorities = HashSet::new();
    for rule in &listener.rules {
        let rule_location = format!("{location} rule {}", rule.priority);
        if !(1..=limits::RULE_PRIORITY_MAX).contains(&rule.priority) {
            return Err(invalid(
                &rule_location,
                "Priority",
                rule.priority,
                format!("a priority from 1 to {}", limits::RULE_PRIORITY_MAX),
            ));
        }
        if !priorities.insert(rule.priority) {
            return Err(ConfigError::PriorityInUse {
                location,
                priority: rule.priority,
            });
        }
        validate_conditions(&rule_location, &rule.conditions)?;
        validate_actions(&rule_location, &rule.actions, balancer, listener, groups)?;
    }
    Ok(())
}

fn validate_conditions(location: &str, conditions: &[Condition]) -> Result<(), ConfigError> {
    if conditions.is_empty() {
        return Err(invalid(
            location,
            "Conditions",
            "[]",
            "a rule needs at least one condition",
        ));
    }
    let values: usize = conditions.iter().map(Condition::value_count).sum();
    at_most(
        location,
        "condition values",
        values,
        limits::CONDITION_VALUES_PER_RULE_MAX,
    )?;
    let wildcards: usize = conditions
        .iter()
        .flat_map(Condition::patterns)
        .map(|value| value.bytes().filter(|b| *b == b'*' || *b == b'?').count())
        .sum();
    at_most(
        location,
        "wildcards",
        wildcards,
        limits::WILDCARDS_PER_RULE_MAX,
    )?;
    let mut fields = HashSet::new();
    for condition in conditions {
        let field = condition.field();
        // Only http-header and query-string may repeat within a rule.
        let repeatable = matches!(
            condition,
            Condition::HttpHeader { .. } | Condition::QueryString { .. }
        );
        if !repeatable && !fields.insert(field) {
            return Err(invalid(
                location,
                "Field",
                field,
                "each condition type other than http-header and query-string may appear once per rule",
            ));
        }
        if condition.value_count() == 0 {
            return Err(invalid(
                location,
                "Values",
                "[]",
                format!("{field} needs a value"),
            ));
        }
        for value in condition.patterns() {
            if value.len() > limits::CONDITION_VALUE_LENGTH_MAX {
                return Err(invalid(
                    location,
                    "Values",
                    value,
                    format!(
                        "values are at most {} characters",
                        limits::CONDITION_VALUE_LENGTH_MAX
                    ),
                ));
            }
        }
        match condition {
            Condition::HttpHeader { config } => {
                let name = &config.http_header_name;
                if name.is_empty()
                    || name.len() > limits::HEADER_NAME_LENGTH_MAX
                    || http::HeaderName::from_bytes(name.as_bytes()).is_err()
                {
                    return Err(invalid(
                        location,
                        "HttpHeaderName",
                        name,
                        format!(
                            "a header name of 1 to {} token characters",
                            limits::HEADER_NAME_LENGTH_MAX
                        ),
                    ));
                }
            }
            Condition::HttpRequestMethod { config } => {
                for method in &config.values {
                    let valid = !method.is_empty()
                        && method.len() <= limits::HEADER_NAME_LENGTH_MAX
                        && method
                            .bytes()
                            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
                    if !valid {
                        return Err(invalid(
                            location,
                            "HttpRequestMethodConfig.Values",
                            method,
                            "methods are A-Z, hyphen and underscore, without wildcards",
                        ));
                    }
                }
            }
            Condition::SourceIp { config } => {
                for cidr in &config.values {
                    if cidr.parse::<Cidr>().is_err() {
                        return Err(invalid(
                            location,
                            "SourceIpConfig.Values",
                            cidr,
                            "an IPv4 or IPv6 CIDR block such as 10.0.0.0/8",
                        ));
                    }
                }
            }
            Condition::PathPattern { config } => {
                for path in &config.values {
                    if !(path.starts_with('/') || path.starts_with('*') || path.starts_with('?')) {
                        return Err(invalid(
                            location,
                            "PathPatternConfig.Values",
                            path,
                            "a path pattern starts with / or a wildcard",
                        ));
                    }
                }
            }
            Condition::HostHeader { .. } | Condition::QueryString { .. } => {}
        }
    }
    Ok(())
}

fn validate_actions(
    location: &str,
    actions: &[Action],
    balancer: &LoadBalancer,
    listener: &Listener,
    groups: &HashMap<&str, &TargetGroup>,
) -> Result<(), ConfigError> {
    // Authentication actions, which would precede the terminal one, are not
    // part of the data plane; so exactly one action.
    if actions.len() != 1 {
        return Err(invalid(
            location,
            "Actions",
            actions.len(),
            "exactly one action (forward, fixed-response or redirect)",
        ));
    }
    let action = &actions[0];
    if balancer.kind == LoadBalancerType::Network && !matches!(action, Action::Forward { .. }) {
        return Err(invalid(
            location,
            "Type",
            "fixed-response/redirect",
            "a network load balancer only forwards",
        ));
    }
    match action {
        Action::Forward {
            target_group_arn,
            forward_config,
        } => {
            let weighted = forward_targets(target_group_arn.as_deref(), forward_config.as_ref());
            let Some(weighted) = weighted else {
                return Err(invalid(
                    location,
                    "ForwardConfig",
                    "",
                    "a forward action names a TargetGroupArn or ForwardConfig.TargetGroups (the same group if both)",
                ));
            };
            if weighted.is_empty() {
                return Err(invalid(
                    location,
                    "TargetGroups",
                    "[]",
                    "at least one target group",
                ));
            }
            at_most(
                location,
                "target groups in a forward action",
                weighted.len(),
                limits::TARGET_GROUPS_PER_ACTION_MAX,
            )?;
            let mut seen = HashSet::new();
            for (name, weight) in &weighted {
                if !seen.insert(*name) {
                    return Err(ConfigError::Duplicate {
                        kind: "target group in a forward action",
                        name: (*name).to_owned(),
                    });
                }
                if *weight > limits::TARGET_GROUP_WEIGHT_MAX {
                    return Err(invalid(
                        location,
                        "Weight",
                        weight,
                        format!("a weight from 0 to {}", limits::TARGET_GROUP_WEIGHT_MAX),
                    ));
                }
                let Some(group) = groups.get(name) else {
                    return Err(ConfigError::UnknownTargetGroup {
                        location: location.to_owned(),
                        target_group: (*name).to_owned(),
                    });
                };
                let compatible = match listener.protocol {
                    Protocol::Http | Protocol::Https => {
                        matches!(group.protocol, Protocol::Http | Protocol::Https)
                    }
                    Protocol::Tcp => group.protocol == Protocol::Tcp,
                    Protocol::Udp => group.protocol == Protocol::Udp,
                };
                if !compatible {
                    return Err(invalid(
                        location,
                        "TargetGroupArn",
                        name,
                        format!(
                            "a {} listener cannot forward to a {} target group",
                            listener.protocol.as_str(),
                            group.protocol.as_str()
                        ),
                    ));
                }
            }
            if balancer.kind == LoadBalancerType::Network && weighted.len() > 1 {
                return Err(invalid(
                    location,
                    "TargetGroups",
                    weighted.len(),
                    "a network load balancer forwards to one target group",
                ));
            }
            if let Some(stickiness) = forward_config
                .as_ref()
                .and_then(|config| config.target_group_stickiness_config.as_ref())
            {
                if let Some(duration) = stickiness.duration_seconds {
                    if !(1..=limits::STICKINESS_DURATION_SECONDS_MAX).contains(&duration) {
                        return Err(invalid(
                            location,
                            "DurationSeconds",
                            duration,
                            format!(
                                "from 1 to {} seconds",
                                limits::STICKINESS_DURATION_SECONDS_MAX
                            ),
                        ));
                    }
                }
            }
        }
        Action::FixedResponse {
            fixed_response_config: config,
        } => {
            let code_valid = config.status_code.len() == 3
                && config.status_code.bytes().all(|b| b.is_ascii_digit())
                && matches!(config.status_code.as_bytes()[0], b'2' | b'4' | b'5');
            if !code_valid {
                return Err(invalid(
                    location,
                    "StatusCode",
                    &config.status_code,
                    "a 2XX, 4XX or 5XX status code",
                ));
            }
            if let Some(kind) = &config.content_type {
                if !FIXED_RESPONSE_CONTENT_TYPES.contains(&kind.as_str()) {
                    return Err(invalid(
                        location,
                        "ContentType",
                        kind,
                        format!("one of {FIXED_RESPONSE_CONTENT_TYPES:?}"),
                    ));
                }
            }
            let length = config.message_body.as_ref().map_or(0, String::len);
            if length > limits::FIXED_RESPONSE_BODY_MAX_BYTES {
                return Err(ConfigError::TooMany {
                    location: location.to_owned(),
                    what: "bytes of MessageBody",
                    count: length,
                    max: limits::FIXED_RESPONSE_BODY_MAX_BYTES,
                });
            }
        }
        Action::Redirect {
            redirect_config: config,
        } => {
            if !matches!(config.protocol.as_str(), "#{protocol}" | "HTTP" | "HTTPS") {
                return Err(invalid(
                    location,
                    "Protocol",
                    &config.protocol,
                    "HTTP, HTTPS or #{protocol}",
                ));
            }
            let port_valid =
                config.port == "#{port}" || config.port.parse::<u16>().is_ok_and(|port| port != 0);
            if !port_valid {
                return Err(invalid(
                    location,
                    "Port",
                    &config.port,
                    "1 to 65535 or #{port}",
                ));
            }
            if !config.path.starts_with('/') {
                return Err(invalid(
                    location,
                    "Path",
                    &config.path,
                    "a path starting with /",
                ));
            }
            let unchanged = config.protocol == "#{protocol}"
                && config.port == "#{port}"
                && config.host == "#{host}"
                && config.path == "/#{path}"
                && config.query == "#{query}";
            if unchanged {
                // ELBv2 refuses a redirect to the request's own URL: a loop.
                return Err(invalid(
                    location,
                    "RedirectConfig",
                    "#{protocol}://#{host}:#{port}/#{path}?#{query}",
                    "a redirect must change at least one of protocol, host, port, path or query",
                ));
            }
            for (field, value) in [
                ("Host", &config.host),
                ("Path", &config.path),
                ("Query", &config.query),
            ] {
                if let Err(error) = pattern::check_placeholders(value) {
                    return Err(ConfigError::InvalidValue {
                        location: location.to_owned(),
                        field,
                        value: value.clone(),
                        expected: error,
                    });
                }
            }
        }
    }
    Ok(())
}

/// A forward action's target groups and weights, from either of ELBv2's two
/// spellings; `None` when the two disagree or neither is given.
pub fn forward_targets<'a>(
    target_group_arn: Option<&'a str>,
    forward_config: Option<&'a ForwardConfig>,
) -> Option<Vec<(&'a str, u32)>> {
    match (target_group_arn, forward_config) {
        (Some(arn), None) => Some(vec![(arn, 1)]),
        (None, Some(config)) => Some(
            config
                .target_groups
                .iter()
                .map(|group| (group.target_group_arn.as_str(), group.weight))
                .collect(),
        ),
        (Some(arn), Some(config))
            if config.target_groups.len() == 1
                && config.target_groups[0].target_group_arn == arn =>
        {
            Some(vec![(arn, config.target_groups[0].weight)])
        }
        _ => None,
    }
}

fn validate_target_group(group: &TargetGroup) -> Result<(), ConfigError> {
    let location = format!("target group {:?}", group.target_group_arn);
    if group.port == 0 {
        return Err(invalid(&location, "Port", 0, "a port from 1 to 65535"));
    }
    at_most(
        &location,
        "targets",
        group.targets.len(),
        limits::TARGETS_PER_TARGET_GROUP_MAX,
    )?;
    let health_protocol = group.effective_health_check_protocol();
    let allowed_health = match group.protocol {
        Protocol::Http | Protocol::Https => [Protocol::Http, Protocol::Https].as_slice(),
        Protocol::Tcp | Protocol::Udp => {
            [Protocol::Tcp, Protocol::Http, Protocol::Https].as_slice()
        }
    };
    if !allowed_health.contains(&health_protocol) {
        return Err(invalid(
            &location,
            "HealthCheckProtocol",
            health_protocol.as_str(),
            format!(
                "one of {allowed_health:?} for a {} target group",
                group.protocol.as_str()
            ),
        ));
    }
    if health_protocol == Protocol::Https {
        return Err(invalid(
            &location,
            "HealthCheckProtocol",
            "HTTPS",
            "health checks over HTTPS are not supported by this data plane; use HTTP",
        ));
    }
    if group.protocol == Protocol::Https {
        return Err(invalid(
            &location,
            "Protocol",
            "HTTPS",
            "target groups speak HTTP to their targets in this data plane",
        ));
    }
    if group.health_check_port != "traffic-port"
        && group
            .health_check_port
            .parse::<u16>()
            .map_or(true, |port| port == 0)
    {
        return Err(invalid(
            &location,
            "HealthCheckPort",
            &group.health_check_port,
            "traffic-port or a port from 1 to 65535",
        ));
    }
    let path = group.effective_health_check_path();
    if !path.starts_with('/') || path.len() > 1_024 {
        return Err(invalid(
            &location,
            "HealthCheckPath",
            path,
            "a path starting with / of at most 1024 characters",
        ));
    }
    if !(5..=300).contains(&group.health_check_interval_seconds) {
        return Err(invalid(
            &location,
            "HealthCheckIntervalSeconds",
            group.health_check_interval_seconds,
            "from 5 to 300",
        ));
    }
    let timeout = group.effective_health_check_timeout_seconds();
    if !(2..=120).contains(&timeout) {
        return Err(invalid(
            &location,
            "HealthCheckTimeoutSeconds",
            timeout,
            "from 2 to 120",
        ));
    }
    if timeout >= group.health_check_interval_seconds {
        return Err(invalid(
            &location,
            "HealthCheckTimeoutSeconds",
            timeout,
            "the health check timeout must be smaller than the interval",
        ));
    }
    for (field, count) in [
        ("HealthyThresholdCount", group.healthy_threshold_count),
        ("UnhealthyThresholdCount", group.unhealthy_threshold_count),
    ] {
        if !(2..=10).contains(&count) {
            return Err(ConfigError::InvalidValue {
                location: location.clone(),
                field,
                value: count.to_string(),
                expected: "from 2 to 10".to_owned(),
            });
        }
    }
    if let Err(expected) = crate::health::HttpCodeMatcher::parse(group.effective_matcher()) {
        return Err(invalid(
            &location,
            "Matcher.HttpCode",
            group.effective_matcher(),
            expected,
        ));
    }
    let mut keys = HashSet::new();
    for target in &group.targets {
        let port = target.port.unwrap_or(group.port);
        if port == 0 {
            return Err(invalid(
                &location,
                "Port",
                0,
                "a target port from 1 to 65535",
            ));
        }
        if !keys.insert((target.id.as_str(), port)) {
            return Err(ConfigError::Duplicate {
                kind: "target",
                name: format!("{}:{port} in {location}", target.id),
            });
        }
        if group.target_type == TargetType::Ip && target.id.parse::<IpAddr>() != Ok(target.address)
        {
            return Err(invalid(
                &location,
                "Targets.Id",
                &target.id,
                "a target of an ip target group is identified by its IP address",
            ));
        }
    }
    Ok(())
}
