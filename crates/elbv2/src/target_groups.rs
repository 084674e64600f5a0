//! Target groups, their attributes, their targets and their health.

use std::net::IpAddr;

use flotilla_aws::elbv2::{
    CreateTargetGroupInput, CreateTargetGroupOutput, DeleteTargetGroupInput,
    DeleteTargetGroupOutput, DeregisterTargetsInput, DeregisterTargetsOutput,
    DescribeTargetGroupAttributesInput, DescribeTargetGroupAttributesOutput,
    DescribeTargetGroupsInput, DescribeTargetGroupsOutput, DescribeTargetHealthInput,
    DescribeTargetHealthOutput, Matcher, ModifyTargetGroupAttributesInput,
    ModifyTargetGroupAttributesOutput, ModifyTargetGroupInput, ModifyTargetGroupOutput,
    ProtocolEnum, RegisterTargetsInput, RegisterTargetsOutput, TargetDescription, TargetGroup,
    TargetGroupAttribute, TargetGroupIpAddressTypeEnum, TargetHealth, TargetHealthDescription,
    TargetTypeEnum,
};
use flotilla_lb::health::TargetHealth as PlaneHealth;
use flotilla_types::ApiError;

use crate::load_balancers::check_name;
use crate::records::{change, DrainingTarget, State, TargetGroupRecord, TargetRecord};
use crate::{arn_parts, attributes, error, page, require, tags, validation, CallContext, Elbv2};

/// ELBv2's default quota of target groups per region.
pub const TARGET_GROUPS_MAX: usize = 3_000;
/// Targets one target group may hold.
pub const TARGETS_PER_TARGET_GROUP_MAX: usize =
    flotilla_lb::config::limits::TARGETS_PER_TARGET_GROUP_MAX;

/// The health check settings of a target group, as given or defaulted.
struct HealthCheck {
    enabled: bool,
    protocol: ProtocolEnum,
    port: String,
    path: Option<String>,
    interval_seconds: i32,
    timeout_seconds: i32,
    healthy_threshold: i32,
    unhealthy_threshold: i32,
    matcher: Option<Matcher>,
}

fn is_network(protocol: ProtocolEnum) -> bool {
    matches!(protocol, ProtocolEnum::Tcp | ProtocolEnum::Udp)
}

fn check_range(member: &str, value: i32, min: i32, max: i32) -> Result<(), ApiError> {
    if !(min..=max).contains(&value) {
        return Err(validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must have value between {min} and {max}"
        )));
    }
    Ok(())
}

/// The fields a CreateTargetGroup or ModifyTargetGroup may set.
#[derive(Default)]
struct HealthCheckInput {
    enabled: Option<bool>,
    protocol: Option<ProtocolEnum>,
    port: Option<String>,
    path: Option<String>,
    interval_seconds: Option<i32>,
    timeout_seconds: Option<i32>,
    healthy_threshold: Option<i32>,
    unhealthy_threshold: Option<i32>,
    matcher: Option<Matcher>,
}

/// `input` over `current` (or over ELBv2's defaults for a group of
/// `protocol`), checked as ELBv2 checks it.
fn health_check(
    protocol: ProtocolEnum,
    current: Option<&TargetGroup>,
    input: HealthCheckInput,
) -> Result<HealthCheck, ApiError> {
    let network = is_network(protocol);
    let protocol_default = if network { ProtocolEnum::Tcp } else { protocol };
    let check_protocol = input
        .protocol
        .or(current.and_then(|group| group.health_check_protocol))
        .unwrap_or(protocol_default);
    let allowed: &[ProtocolEnum] = if network {
        &[ProtocolEnum::Tcp, ProtocolEnum::Http, ProtocolEnum::Https]
    } else {
        &[ProtocolEnum::Http, ProtocolEnum::Https]
    };
    if !allowed.contains(&check_protocol) {
        return Err(validation(format!(
            "Health check protocol '{check_protocol}' is not supported for target groups with the protocol '{protocol}'"
        )));
    }
    let http_check = check_protocol != ProtocolEnum::Tcp;
    let protocol_changed =
        current.is_some_and(|group| group.health_check_protocol != Some(check_protocol));
    let port = input
        .port
        .or(current.and_then(|group| group.health_check_port.clone()))
        .unwrap_or_else(|| "traffic-port".to_owned());
    if port != "traffic-port" && !port.parse::<u16>().is_ok_and(|port| port >= 1) {
        return Err(validation(format!(
            "Health check port '{port}' must be 'traffic-port' or a port from 1 to 65535"
        )));
    }
    let path = if http_check {
        let path = input
            .path
            .or(current.and_then(|group| group.health_check_path.clone()))
            .unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') || path.len() > 1_024 {
            return Err(validation(format!(
                "Health check path '{path}' must begin with '/' and be at most 1024 characters"
            )));
        }
        Some(path)
    } else {
        if input.path.is_some() {
            return Err(validation(
                "A health check path can only be specified for HTTP and HTTPS health checks",
            ));
        }
        None
    };
    let timeout_default = if http_check && !network {
        5
    } else if http_check {
        6
    } else {
        10
    };
    let interval_seconds = input
        .interval_seconds
        .or(current.and_then(|group| group.health_check_interval_seconds))
        .unwrap_or(30);
    check_range("healthCheckIntervalSeconds", interval_seconds, 5, 300)?;
    let timeout_seconds = input
        .timeout_seconds
        .or(if protocol_changed {
            None
        } else {
            current.and_then(|group| group.health_check_timeout_seconds)
        })
        .unwrap_or(timeout_default);
    check_range("healthCheckTimeoutSeconds", timeout_seconds, 2, 120)?;
    if timeout_seconds >= interval_seconds {
        return Err(validation(format!(
            "Health check timeout '{timeout_seconds}' must be smaller than the interval '{interval_seconds}'"
        )));
    }
    let healthy_threshold = input
        .healthy_threshold
        .or(current.and_then(|group| group.healthy_threshold_count))
        .unwrap_or(5);
    check_range("healthyThresholdCount", healthy_threshold, 2, 10)?;
    let unhealthy_threshold = input
        .unhealthy_threshold
        .or(current.and_then(|group| group.unhealthy_threshold_count))
        .unwrap_or(2);
    check_range("unhealthyThresholdCount", unhealthy_threshold, 2, 10)?;
    let matcher = if http_check {
        let matcher = input
            .matcher
            .or(if protocol_changed {
                None
            } else {
                current.and_then(|group| group.matcher.clone())
            })
            .unwrap_or_else(|| Matcher {
                http_code: Some(if network { "200-399" } else { "200" }.to_owned()),
                grpc_code: None,
            });
        if matcher.grpc_code.is_some() {
            return Err(validation(
                "GrpcCode matchers are not supported by Flotilla",
            ));
        }
        let code = matcher.http_code.clone().unwrap_or_default();
        if flotilla_lb::health::HttpCodeMatcher::parse(&code).is_err() {
            return Err(validation(format!(
                "Health check matcher HTTP code '{code}' must be a code from 200 to 499, a list such as '200,202' or a range such as '200-299'"
            )));
        }
        Some(matcher)
    } else {
        if input.matcher.is_some() {
            return Err(validation(
                "A health check matcher can only be specified for HTTP and HTTPS health checks",
            ));
        }
        None
    };
    Ok(HealthCheck {
        enabled: input
            .enabled
            .or(current.and_then(|group| group.health_check_enabled))
            .unwrap_or(true),
        protocol: check_protocol,
        port,
        path,
        interval_seconds,
        timeout_seconds,
        healthy_threshold,
        unhealthy_threshold,
        matcher,
    })
}

fn with_health_check(mut group: TargetGroup, check: HealthCheck) -> TargetGroup {
    group.health_check_enabled = Some(check.enabled);
    group.health_check_protocol = Some(check.protocol);
    group.health_check_port = Some(check.port);
    group.health_check_path = check.path;
    group.health_check_interval_seconds = Some(check.interval_seconds);
    group.health_check_timeout_seconds = Some(check.timeout_seconds);
    group.healthy_threshold_count = Some(check.healthy_threshold);
    group.unhealthy_threshold_count = Some(check.unhealthy_threshold);
    group.matcher = check.matcher;
    group
}

/// Whether a target of an `ip` group may be registered: the private ranges
/// ELBv2 accepts, and loopback, which on a self-hosted machine is where
/// published container ports are.
fn registrable_ip(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_loopback() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

fn instance_id_shaped(id: &str) -> bool {
    let hex = id.strip_prefix("i-").or_else(|| id.strip_prefix("mi-"));
    hex.is_some_and(|hex| {
        !hex.is_empty() && hex.len() <= 17 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

impl Elbv2 {
    pub(crate) fn find_target_group<'a>(
        &self,
        state: &'a State,
        arn: &str,
    ) -> Option<&'a TargetGroupRecord> {
        let parts = arn_parts(&self.arn_prefix(), arn, "targetgroup")?;
        let [name, id] = parts.as_slice() else {
            return None;
        };
        state
            .target_groups
            .get(*name)
            .filter(|record| record.id == *id)
    }

    pub(crate) fn target_group_not_found(arn: &str) -> ApiError {
        error(
            "TargetGroupNotFoundException",
            format!("Target groups '[{arn}]' not found"),
        )
    }

    fn target_group_name_of(&self, state: &State, arn: &str) -> Result<String, ApiError> {
        self.find_target_group(state, arn)
            .and_then(|record| record.description.target_group_name.clone())
            .ok_or_else(|| Self::target_group_not_found(arn))
    }

    /// The group as DescribeTargetGroups answers it, with the load
    /// balancers whose listeners forward to it.
    fn describe_group(&self, state: &State, record: &TargetGroupRecord) -> TargetGroup {
        let arn = record
            .description
            .target_group_arn
            .clone()
            .unwrap_or_default();
        let mut group = record.description.clone();
        group.load_balancer_arns = Some(crate::snapshot::load_balancers_using(state, &arn));
        group
    }

    pub(crate) async fn create_target_group(
        &self,
        input: CreateTargetGroupInput,
        call: &CallContext,
    ) -> Result<CreateTargetGroupOutput, ApiError> {
        require(input.missing_required())?;
        let name = input.name.clone().unwrap_or_default();
        check_name("Target group", &name)?;
        let target_type = input.target_type.unwrap_or(TargetTypeEnum::Instance);
        if !matches!(target_type, TargetTypeEnum::Instance | TargetTypeEnum::Ip) {
            return Err(validation(format!(
                "Target type '{target_type}' is not supported: Flotilla's target groups have target type 'instance' or 'ip'"
            )));
        }
        let Some(protocol) = input.protocol else {
            return Err(validation("A protocol must be specified"));
        };
        if !matches!(
            protocol,
            ProtocolEnum::Http | ProtocolEnum::Https | ProtocolEnum::Tcp | ProtocolEnum::Udp
        ) {
            return Err(validation(format!(
                "Protocol '{protocol}' is not supported: Flotilla's target groups use HTTP, HTTPS, TCP or UDP"
            )));
        }
        let Some(port) = input.port else {
            return Err(validation("A port must be specified"));
        };
        check_range("port", port, 1, 65_535)?;
        let protocol_version = match (&input.protocol_version, is_network(protocol)) {
            (Some(version), true) => {
                return Err(validation(format!(
                    "Protocol version '{version}' can only be specified for HTTP and HTTPS target groups"
                )))
            }
            (Some(version), false) if version != "HTTP1" => {
                return Err(validation(format!(
                    "Protocol version '{version}' is not supported: Flotilla speaks HTTP1 to targets"
                )))
            }
            (_, false) => Some("HTTP1".to_owned()),
            (None, true) => None,
        };
        if input.target_control_port.is_some() {
            return Err(validation("TargetControlPort is not supported by Flotilla"));
        }
        if input.ip_address_type == Some(TargetGroupIpAddressTypeEnum::Ipv6) {
            return Err(validation(
                "Target groups of IP address type 'ipv6' are not supported by Flotilla",
            ));
        }
        let check = health_check(
            protocol,
            None,
            HealthCheckInput {
                enabled: input.health_check_enabled,
                protocol: input.health_check_protocol,
                port: input.health_check_port.clone(),
                path: input.health_check_path.clone(),
                interval_seconds: input.health_check_interval_seconds,
                timeout_seconds: input.health_check_timeout_seconds,
                healthy_threshold: input.healthy_threshold_count,
                unhealthy_threshold: input.unhealthy_threshold_count,
                matcher: input.matcher.clone(),
            },
        )?;
        let tags = tags::checked(input.tags.as_deref().unwrap_or_default())?;
        let id = call.id(1);
        let arn = self
            .scope
            .arn(crate::SERVICE, &format!("targetgroup/{name}/{id}"));
        let description = with_health_check(
            TargetGroup {
                ip_address_type: Some(TargetGroupIpAddressTypeEnum::Ipv4),
                port: Some(port),
                protocol: Some(protocol),
                protocol_version,
                target_group_arn: Some(arn),
                target_group_name: Some(name.clone()),
                target_type: Some(target_type),
                vpc_id: input.vpc_id.clone(),
                ..Default::default()
            },
            check,
        );
        let record = TargetGroupRecord {
            id,
            description,
            attributes: attributes::target_group_defaults(is_network(protocol)),
            tags,
            targets: Vec::new(),
            draining: Vec::new(),
        };
        let created = change(
            &**self.store(),
            |state| {
                if let Some(existing) = state.target_groups.get(&name) {
                    let mut same = existing.description.clone();
                    same.target_group_arn = record.description.target_group_arn.clone();
                    if same == record.description {
                        return Ok(self.describe_group(state, existing));
                    }
                    return Err(error(
                        "DuplicateTargetGroupNameException",
                        format!("A target group with the same name '{name}' exists, but with different settings"),
                    ));
                }
                if state.target_groups.len() >= TARGET_GROUPS_MAX {
                    return Err(error(
                        "TooManyTargetGroupsException",
                        "The quota for the number of target groups has been reached",
                    ));
                }
                state.target_groups.insert(name.clone(), record.clone());
                Ok(self.describe_group(state, &record))
            },
            |state| self.check(state),
        )
        .await?;
        Ok(CreateTargetGroupOutput {
            target_groups: Some(vec![created]),
        })
    }

    pub(crate) fn describe_target_groups(
        &self,
        input: DescribeTargetGroupsInput,
    ) -> Result<DescribeTargetGroupsOutput, ApiError> {
        let state = State::read(&**self.store())?;
        let arns = input.target_group_arns.unwrap_or_default();
        let names = input.names.unwrap_or_default();
        let filters = [
            !arns.is_empty(),
            !names.is_empty(),
            input.load_balancer_arn.is_some(),
        ];
        if filters.iter().filter(|given| **given).count() > 1 {
            return Err(validation(
                "Target group names, target group ARNs, and a load balancer ARN cannot be specified at the same time",
            ));
        }
        let mut chosen: Vec<(String, TargetGroup)> = Vec::new();
        if !arns.is_empty() {
            let missing: Vec<&str> = arns
                .iter()
                .filter(|arn| self.find_target_group(&state, arn).is_none())
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(Self::target_group_not_found(&missing.join(", ")));
            }
            for arn in &arns {
                if let Some(record) = self.find_target_group(&state, arn) {
                    chosen.push((arn.clone(), self.describe_group(&state, record)));
                }
            }
        } else if !names.is_empty() {
            let missing: Vec<&str> = names
                .iter()
                .filter(|name| !state.target_groups.contains_key(*name))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(error(
                    "TargetGroupNotFoundException",
                    format!("Target groups '[{}]' not found", missing.join(", ")),
                ));
            }
            for name in &names {
                if let Some(record) = state.target_groups.get(name) {
                    chosen.push((name.clone(), self.describe_group(&state, record)));
                }
            }
        } else {
            if let Some(arn) = &input.load_balancer_arn {
                if self.find_load_balancer(&state, arn).is_none() {
                    return Err(Self::load_balancer_not_found(arn));
                }
            }
            for (name, record) in &state.target_groups {
                let group = self.describe_group(&state, record);
                let wanted = match &input.load_balancer_arn {
                    Some(arn) => group
                        .load_balancer_arns
                        .as_ref()
                        .is_some_and(|arns| arns.contains(arn)),
                    None => true,
                };
                if wanted {
                    chosen.push((name.clone(), group));
                }
            }
        }
        chosen.sort_by(|a, b| a.0.cmp(&b.0));
        chosen.dedup_by(|a, b| a.0 == b.0);
        let (target_groups, next_marker) = page(&chosen, input.marker.as_deref(), input.page_size)?;
        Ok(DescribeTargetGroupsOutput {
            target_groups: Some(target_groups),
            next_marker,
        })
    }

    pub(crate) async fn modify_target_group(
        &self,
        input: ModifyTargetGroupInput,
    ) -> Result<ModifyTargetGroupOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.target_group_arn.clone().unwrap_or_default();
        let group = change(
            &**self.store(),
            |state| {
                let name = self.target_group_name_of(state, &arn)?;
                let Some(record) = state.target_groups.get(&name) else {
                    return Err(Self::target_group_not_found(&arn));
                };
                let protocol = record.description.protocol.unwrap_or(ProtocolEnum::Http);
                let check = health_check(
                    protocol,
                    Some(&record.description),
                    HealthCheckInput {
                        enabled: input.health_check_enabled,
                        protocol: input.health_check_protocol,
                        port: input.health_check_port.clone(),
                        path: input.health_check_path.clone(),
                        interval_seconds: input.health_check_interval_seconds,
                        timeout_seconds: input.health_check_timeout_seconds,
                        healthy_threshold: input.healthy_threshold_count,
                        unhealthy_threshold: input.unhealthy_threshold_count,
                        matcher: input.matcher.clone(),
                    },
                )?;
                let mut updated = record.clone();
                updated.description = with_health_check(updated.description, check);
                let described = self.describe_group(state, &updated);
                state.target_groups.insert(name, updated);
                Ok(described)
            },
            |state| self.check(state),
        )
        .await?;
        Ok(ModifyTargetGroupOutput {
            target_groups: Some(vec![group]),
        })
    }

    pub(crate) async fn delete_target_group(
        &self,
        input: DeleteTargetGroupInput,
    ) -> Result<DeleteTargetGroupOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.target_group_arn.unwrap_or_default();
        change(
            &**self.store(),
            |state| {
                let Some(record) = self.find_target_group(state, &arn) else {
                    return Ok(());
                };
                if !crate::snapshot::load_balancers_using(state, &arn).is_empty() {
                    return Err(error(
                        "ResourceInUseException",
                        format!("Target group '{arn}' is currently in use by a listener or a rule"),
                    ));
                }
                let name = record
                    .description
                    .target_group_name
                    .clone()
                    .unwrap_or_default();
                state.target_groups.remove(&name);
                Ok(())
            },
            |state| self.check(state),
        )
        .await?;
        Ok(DeleteTargetGroupOutput {})
    }

    pub(crate) fn describe_target_group_attributes(
        &self,
        input: DescribeTargetGroupAttributesInput,
    ) -> Result<DescribeTargetGroupAttributesOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.target_group_arn.unwrap_or_default();
        let state = State::read(&**self.store())?;
        let record = self
            .find_target_group(&state, &arn)
            .ok_or_else(|| Self::target_group_not_found(&arn))?;
        Ok(DescribeTargetGroupAttributesOutput {
            attributes: Some(target_group_attributes(&record.attributes)),
        })
    }

    pub(crate) async fn modify_target_group_attributes(
        &self,
        input: ModifyTargetGroupAttributesInput,
    ) -> Result<ModifyTargetGroupAttributesOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.target_group_arn.unwrap_or_default();
        let changes: Vec<(Option<String>, Option<String>)> = input
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|attribute| (attribute.key, attribute.value))
            .collect();
        let attributes = change(
            &**self.store(),
            |state| {
                let name = self.target_group_name_of(state, &arn)?;
                let Some(record) = state.target_groups.get_mut(&name) else {
                    return Err(Self::target_group_not_found(&arn));
                };
                let network = record.description.protocol.is_some_and(is_network);
                record.attributes =
                    attributes::modify_target_group(network, &record.attributes, &changes)?;
                Ok(record.attributes.clone())
            },
            |state| self.check(state),
        )
        .await?;
        Ok(ModifyTargetGroupAttributesOutput {
            attributes: Some(target_group_attributes(&attributes)),
        })
    }

    /// The targets of a Register/DeregisterTargets call, checked against the
    /// group's target type, with the group's port where none is given.
    fn targets_of(
        record: &TargetGroupRecord,
        given: &[TargetDescription],
    ) -> Result<Vec<TargetRecord>, ApiError> {
        if given.is_empty() {
            return Err(validation("At least one target must be specified"));
        }
        let group_port = record.description.port.unwrap_or(80);
        let ip = record.description.target_type == Some(TargetTypeEnum::Ip);
        let mut targets = Vec::new();
        for target in given {
            let id = target.id.clone().unwrap_or_default();
            let port = target.port.unwrap_or(group_port);
            check_range("port", port, 1, 65_535)?;
            if ip {
                match id.parse::<IpAddr>() {
                    Ok(address) if registrable_ip(address) => {}
                    Ok(_) => {
                        return Err(error(
                            "InvalidTargetException",
                            format!("The IP address '{id}' is not in a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10) or loopback"),
                        ))
                    }
                    Err(_) => {
                        return Err(error(
                            "InvalidTargetException",
                            format!("The IP address '{id}' is not a valid IPv4 address; target group type is 'ip'"),
                        ))
                    }
                }
            } else if !instance_id_shaped(&id) {
                return Err(error(
                    "InvalidTargetException",
                    format!("The following targets are not valid instances: '{id}'; target group type is 'instance'"),
                ));
            }
            if target.quic_server_id.is_some() {
                return Err(validation("QuicServerId is not supported by Flotilla"));
            }
            targets.push(TargetRecord {
                id,
                port: port as u16,
                availability_zone: target.availability_zone.clone(),
            });
        }
        Ok(targets)
    }

    pub(crate) async fn register_targets(
        &self,
        input: RegisterTargetsInput,
    ) -> Result<RegisterTargetsOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.target_group_arn.unwrap_or_default();
        let given = input.targets.unwrap_or_default();
        change(
            &**self.store(),
            |state| {
                let name = self.target_group_name_of(state, &arn)?;
                let Some(record) = state.target_groups.get_mut(&name) else {
                    return Err(Self::target_group_not_found(&arn));
                };
                let targets = Self::targets_of(record, &given)?;
                for target in targets {
                    record.draining.retain(|draining| {
                        (&draining.target.id, draining.target.port) != (&target.id, target.port)
                    });
                    let registered = record
                        .targets
                        .iter_mut()
                        .find(|known| (&known.id, known.port) == (&target.id, target.port));
                    match registered {
                        Some(known) => *known = target,
                        None => record.targets.push(target),
                    }
                }
                within_target_limit(record)
            },
            |state| self.check(state),
        )
        .await?;
        Ok(RegisterTargetsOutput {})
    }

    pub(crate) async fn deregister_targets(
        &self,
        input: DeregisterTargetsInput,
        call: &CallContext,
    ) -> Result<DeregisterTargetsOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.target_group_arn.unwrap_or_default();
        let given = input.targets.unwrap_or_default();
        change(
            &**self.store(),
            |state| {
                let name = self.target_group_name_of(state, &arn)?;
                let Some(record) = state.target_groups.get_mut(&name) else {
                    return Err(Self::target_group_not_found(&arn));
                };
                let targets = Self::targets_of(record, &given)?;
                let missing: Vec<String> = targets
                    .iter()
                    .filter(|target| {
                        !record
                            .targets
                            .iter()
                            .any(|known| (&known.id, known.port) == (&target.id, target.port))
                    })
                    .map(|target| format!("{}:{}", target.id, target.port))
                    .collect();
                if !missing.is_empty() {
                    return Err(error(
                        "InvalidTargetException",
                        format!(
                            "The following targets are not registered in target group '{arn}': '{}'",
                            missing.join("', '")
                        ),
                    ));
                }
                let delay_ms = record
                    .attributes
                    .get("deregistration_delay.timeout_seconds")
                    .and_then(|value| value.parse::<u64>().ok())
                    .unwrap_or(300)
                    * 1_000;
                record.draining.retain(|draining| draining.until_ms > call.now_ms);
                for target in targets {
                    record
                        .targets
                        .retain(|known| (&known.id, known.port) != (&target.id, target.port));
                    if delay_ms > 0 {
                        record.draining.push(DrainingTarget {
                            target,
                            until_ms: call.now_ms + delay_ms,
                        });
                    }
                }
                Ok(())
            },
            |state| self.check(state),
        )
        .await?;
        Ok(DeregisterTargetsOutput {})
    }

    pub(crate) fn describe_target_health(
        &self,
        input: DescribeTargetHealthInput,
        call: &CallContext,
    ) -> Result<DescribeTargetHealthOutput, ApiError> {
        require(input.missing_required())?;
        if input
            .include
            .as_ref()
            .is_some_and(|include| !include.is_empty())
        {
            return Err(validation(
                "Include (AnomalyDetection, All) is not supported by Flotilla: there is no anomaly detection",
            ));
        }
        let arn = input.target_group_arn.unwrap_or_default();
        let state = State::read(&**self.store())?;
        let record = self
            .find_target_group(&state, &arn)
            .ok_or_else(|| Self::target_group_not_found(&arn))?;
        let in_use = !crate::snapshot::load_balancers_using(&state, &arn).is_empty();
        let checks_enabled = record.description.health_check_enabled != Some(false);
        let draining: Vec<&TargetRecord> = record
            .draining
            .iter()
            .filter(|draining| draining.until_ms > call.now_ms)
            .map(|draining| &draining.target)
            .collect();
        let wanted: Vec<TargetRecord> = match input.targets {
            Some(targets) if !targets.is_empty() => {
                let group_port = record.description.port.unwrap_or(80) as u16;
                targets
                    .iter()
                    .map(|target| TargetRecord {
                        id: target.id.clone().unwrap_or_default(),
                        port: target.port.map_or(group_port, |port| port as u16),
                        availability_zone: target.availability_zone.clone(),
                    })
                    .collect()
            }
            _ => record
                .targets
                .iter()
                .chain(draining.iter().copied())
                .cloned()
                .collect(),
        };
        let mut descriptions = Vec::new();
        for target in wanted {
            let key = (&target.id, target.port);
            let registered = record
                .targets
                .iter()
                .find(|known| (&known.id, known.port) == key);
            let is_draining = draining.iter().any(|known| (&known.id, known.port) == key);
            let from_plane = self
                .health
                .as_ref()
                .and_then(|source| source.target_health(&arn, &target.id, target.port))
                .or_else(|| {
                    self.reported
                        .target_health(&arn, &target.id, target.port, call.now_ms)
                });
            let health = match (registered.is_some(), is_draining, from_plane) {
                (true, _, Some(health)) if in_use => health,
                (true, _, _) if !in_use => wire_health(&PlaneHealth::not_in_use()),
                (true, _, _) if !checks_enabled => wire_health(&PlaneHealth::checks_disabled()),
                (true, _, _) => wire_health(&PlaneHealth::registering()),
                (false, true, _) => wire_health(&PlaneHealth::draining()),
                (false, false, _) => wire_health(&PlaneHealth::not_registered()),
            };
            let shown = registered.cloned().unwrap_or(target);
            let check_port = match record.description.health_check_port.as_deref() {
                Some("traffic-port") | None => shown.port.to_string(),
                Some(port) => port.to_owned(),
            };
            descriptions.push(TargetHealthDescription {
                health_check_port: Some(check_port),
                target: Some(TargetDescription {
                    id: Some(shown.id.clone()),
                    port: Some(i32::from(shown.port)),
                    availability_zone: shown.availability_zone.clone(),
                    quic_server_id: None,
                }),
                target_health: Some(health),
                ..Default::default()
            });
        }
        Ok(DescribeTargetHealthOutput {
            target_health_descriptions: Some(descriptions),
        })
    }
}

/// The data plane's health in the wire's shape: both use ELBv2's names.
pub(crate) fn wire_health(health: &PlaneHealth) -> TargetHealth {
    serde_json::to_value(health)
        .ok()
        .and_then(|value| serde_json::from_value(value).ok())
        .unwrap_or_default()
}

fn target_group_attributes(
    attributes: &std::collections::BTreeMap<String, String>,
) -> Vec<TargetGroupAttribute> {
    attributes
        .iter()
        .map(|(key, value)| TargetGroupAttribute {
            key: Some(key.clone()),
            value: Some(value.clone()),
        })
        .collect()
}

/// ELBv2's limit on the targets of one target group, checked after a
/// registration changed `record`.
pub(crate) fn within_target_limit(
    record: &crate::records::TargetGroupRecord,
) -> Result<(), ApiError> {
    if record.targets.len() > TARGETS_PER_TARGET_GROUP_MAX {
        return Err(error(
            "TooManyTargetsException",
            format!("You've reached the limit on the number of targets per target group ({TARGETS_PER_TARGET_GROUP_MAX})"),
        ));
    }
    Ok(())
}
