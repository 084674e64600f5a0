//! CreateLoadBalancer, DescribeLoadBalancers, DeleteLoadBalancer, their
//! attributes, SetSecurityGroups and SetSubnets.

use flotilla_aws::elbv2::{
    AvailabilityZone, CreateLoadBalancerInput, CreateLoadBalancerOutput, DeleteLoadBalancerInput,
    DeleteLoadBalancerOutput, DescribeLoadBalancerAttributesInput,
    DescribeLoadBalancerAttributesOutput, DescribeLoadBalancersInput, DescribeLoadBalancersOutput,
    IpAddressType, LoadBalancer, LoadBalancerAddress, LoadBalancerAttribute,
    LoadBalancerSchemeEnum, LoadBalancerState, LoadBalancerStateEnum, LoadBalancerTypeEnum,
    ModifyLoadBalancerAttributesInput, ModifyLoadBalancerAttributesOutput, SetSecurityGroupsInput,
    SetSecurityGroupsOutput, SetSubnetsInput, SetSubnetsOutput, SubnetMapping,
};
use flotilla_types::ApiError;

use crate::records::{change, LoadBalancerRecord, State};
use crate::{arn_parts, attributes, error, page, require, tags, validation, CallContext, Elbv2};

/// ELBv2's default quota of load balancers per region.
pub const LOAD_BALANCERS_MAX: usize = 50;
/// Names of load balancers and target groups.
pub const NAME_LENGTH_MAX: usize = 32;
/// The zone a load balancer created without subnets is in: the one a
/// Flotilla agent registers in by default.
const DEFAULT_ZONE: &str = "local-1a";
/// The hosted zone that DNSNames are answered in (no Route 53 here).
const CANONICAL_HOSTED_ZONE_ID: &str = "ZFLOTILLA0LOCAL";

/// ELBv2's rules for a load balancer's or target group's name.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > NAME_LENGTH_MAX {
        return Err(validation(format!(
            "{what} name '{name}' cannot be longer than '{NAME_LENGTH_MAX}' characters"
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(validation(format!(
            "{what} name '{name}' can only contain characters that are alphanumeric characters or hyphens(-)"
        )));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(validation(format!(
            "{what} name '{name}' cannot begin or end with a hyphen"
        )));
    }
    Ok(())
}

/// The part of a load balancer's ARN and listener ARNs naming its type.
pub(crate) fn type_segment(kind: LoadBalancerTypeEnum) -> &'static str {
    match kind {
        LoadBalancerTypeEnum::Network => "net",
        LoadBalancerTypeEnum::Gateway => "gwy",
        LoadBalancerTypeEnum::Application => "app",
    }
}

fn zones(subnets: &[String], mappings: &[SubnetMapping], region: &str) -> Vec<AvailabilityZone> {
    let given: Vec<(&str, Option<&SubnetMapping>)> = subnets
        .iter()
        .map(|subnet| (subnet.as_str(), None))
        .chain(mappings.iter().map(|mapping| {
            (
                mapping.subnet_id.as_deref().unwrap_or_default(),
                Some(mapping),
            )
        }))
        .collect();
    if given.is_empty() {
        return vec![AvailabilityZone {
            zone_name: Some(DEFAULT_ZONE.to_owned()),
            ..Default::default()
        }];
    }
    given
        .iter()
        .enumerate()
        .map(|(index, (subnet, mapping))| {
            // A mapping's addresses are kept and answered as ELBv2 answers them.
            let addresses = mapping
                .filter(|m| {
                    m.allocation_id.is_some()
                        || m.private_i_pv4_address.is_some()
                        || m.i_pv6_address.is_some()
                })
                .map(|m| {
                    vec![LoadBalancerAddress {
                        allocation_id: m.allocation_id.clone(),
                        i_pv6_address: m.i_pv6_address.clone(),
                        private_i_pv4_address: m.private_i_pv4_address.clone(),
                        ..Default::default()
                    }]
                })
                .unwrap_or_default();
            AvailabilityZone {
                subnet_id: Some((*subnet).to_owned()),
                zone_name: Some(format!("{region}{}", (b'a' + (index % 26) as u8) as char)),
                load_balancer_addresses: Some(addresses),
                source_nat_ipv6_prefixes: mapping
                    .and_then(|m| m.source_nat_ipv6_prefix.clone())
                    .map(|prefix| vec![prefix]),
                ..Default::default()
            }
        })
        .collect()
}

impl Elbv2 {
    pub(crate) fn find_load_balancer<'a>(
        &self,
        state: &'a State,
        arn: &str,
    ) -> Option<&'a LoadBalancerRecord> {
        let parts = arn_parts(&self.arn_prefix(), arn, "loadbalancer")?;
        let [_, name, id] = parts.as_slice() else {
            return None;
        };
        state.load_balancers.get(*name).filter(|record| {
            record.id == *id && record.description.load_balancer_arn.as_deref() == Some(arn)
        })
    }

    pub(crate) fn load_balancer_not_found(arn: &str) -> ApiError {
        error(
            "LoadBalancerNotFoundException",
            format!("Load balancers '[{arn}]' not found"),
        )
    }

    fn load_balancer_name_of(&self, state: &State, arn: &str) -> Result<String, ApiError> {
        self.find_load_balancer(state, arn)
            .and_then(|record| record.description.load_balancer_name.clone())
            .ok_or_else(|| Self::load_balancer_not_found(arn))
    }

    pub(crate) async fn create_load_balancer(
        &self,
        input: CreateLoadBalancerInput,
        call: &CallContext,
    ) -> Result<CreateLoadBalancerOutput, ApiError> {
        require(input.missing_required())?;
        let name = input.name.clone().unwrap_or_default();
        check_name("Load balancer", &name)?;
        if name.starts_with("internal-") {
            return Err(validation(format!(
                "Load balancer name '{name}' cannot begin with 'internal-'"
            )));
        }
        let kind = input.r#type.unwrap_or(LoadBalancerTypeEnum::Application);
        if kind == LoadBalancerTypeEnum::Gateway {
            return Err(validation(
                "Load balancer type 'gateway' is not supported: Flotilla serves 'application' and 'network' load balancers",
            ));
        }
        if input.customer_owned_ipv4_pool.is_some() || input.ipam_pools.is_some() {
            return Err(validation(
                "CustomerOwnedIpv4Pool and IpamPools are not supported by Flotilla",
            ));
        }
        let scheme = input
            .scheme
            .unwrap_or(LoadBalancerSchemeEnum::InternetFacing);
        let ip_address_type = input.ip_address_type.unwrap_or(IpAddressType::Ipv4);
        let tags = tags::checked(input.tags.as_deref().unwrap_or_default())?;
        let id = call.id(0);
        let arn = self.scope.arn(
            crate::SERVICE,
            &format!("loadbalancer/{}/{name}/{id}", type_segment(kind)),
        );
        let number = u64::from_str_radix(&id[..10], 16).unwrap_or_default() % 10_000_000_000;
        let internal = if scheme == LoadBalancerSchemeEnum::Internal {
            "internal-"
        } else {
            ""
        };
        let dns_name = format!(
            "{internal}{name}-{number}.{}.{}",
            self.scope.region, self.settings.dns_suffix
        );
        let subnets = input.subnets.clone().unwrap_or_default();
        let mappings = input.subnet_mappings.clone().unwrap_or_default();
        if !subnets.is_empty() && !mappings.is_empty() {
            return Err(validation(
                "You can specify subnets or subnet mappings, not both",
            ));
        }
        let security_groups = match kind {
            LoadBalancerTypeEnum::Application => {
                Some(input.security_groups.clone().unwrap_or_default())
            }
            _ => input.security_groups.clone(),
        };
        let description = LoadBalancer {
            availability_zones: Some(zones(&subnets, &mappings, &self.scope.region)),
            canonical_hosted_zone_id: Some(CANONICAL_HOSTED_ZONE_ID.to_owned()),
            created_time: Some(call.now_ms as f64 / 1000.0),
            dns_name: Some(dns_name),
            ip_address_type: Some(ip_address_type),
            load_balancer_arn: Some(arn),
            load_balancer_name: Some(name.clone()),
            scheme: Some(scheme),
            security_groups,
            state: Some(LoadBalancerState {
                code: Some(LoadBalancerStateEnum::Active),
                reason: None,
            }),
            r#type: Some(kind),
            enable_prefix_for_ipv6_source_nat: input.enable_prefix_for_ipv6_source_nat,
            ..Default::default()
        };
        let record = LoadBalancerRecord {
            id,
            kind,
            description,
            attributes: attributes::load_balancer_defaults(kind),
            tags,
            listeners: Vec::new(),
        };
        let created = change(
            &**self.store(),
            |state| {
                if let Some(existing) = state.load_balancers.get(&name) {
                    // CreateLoadBalancer is idempotent: the same name with the
                    // same settings answers the load balancer that exists.
                    let same = existing.kind == kind
                        && existing.description.scheme == Some(scheme);
                    if same {
                        return Ok(existing.description.clone());
                    }
                    return Err(error(
                        "DuplicateLoadBalancerNameException",
                        format!("A load balancer with the same name '{name}' exists, but with different settings"),
                    ));
                }
                if state.load_balancers.len() >= LOAD_BALANCERS_MAX {
                    return Err(error(
                        "TooManyLoadBalancersException",
                        "The quota for the number of load balancers has been reached",
                    ));
                }
                state.load_balancers.insert(name.clone(), record.clone());
                let mut answered = record.description.clone();
                answered.state = Some(LoadBalancerState {
                    code: Some(LoadBalancerStateEnum::Provisioning),
                    reason: None,
                });
                Ok(answered)
            },
            |state| self.check(state),
        )
        .await?;
        Ok(CreateLoadBalancerOutput {
            load_balancers: Some(vec![created]),
        })
    }

    pub(crate) fn describe_load_balancers(
        &self,
        input: DescribeLoadBalancersInput,
    ) -> Result<DescribeLoadBalancersOutput, ApiError> {
        let state = State::read(&**self.store())?;
        let arns = input.load_balancer_arns.unwrap_or_default();
        let names = input.names.unwrap_or_default();
        if !arns.is_empty() && !names.is_empty() {
            return Err(validation(
                "Load balancer names and load balancer ARNs cannot be specified at the same time",
            ));
        }
        let mut chosen: Vec<(String, LoadBalancer)> = Vec::new();
        if !arns.is_empty() {
            let missing: Vec<&str> = arns
                .iter()
                .filter(|arn| self.find_load_balancer(&state, arn).is_none())
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(Self::load_balancer_not_found(&missing.join(", ")));
            }
            for arn in &arns {
                if let Some(record) = self.find_load_balancer(&state, arn) {
                    chosen.push((arn.clone(), record.description.clone()));
                }
            }
        } else if !names.is_empty() {
            let missing: Vec<&str> = names
                .iter()
                .filter(|name| !state.load_balancers.contains_key(*name))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(error(
                    "LoadBalancerNotFoundException",
                    format!("Load balancers '[{}]' not found", missing.join(", ")),
                ));
            }
            for name in &names {
                if let Some(record) = state.load_balancers.get(name) {
                    chosen.push((name.clone(), record.description.clone()));
                }
            }
        } else {
            chosen = state
                .load_balancers
                .iter()
                .map(|(name, record)| (name.clone(), record.description.clone()))
                .collect();
        }
        chosen.sort_by(|a, b| a.0.cmp(&b.0));
        chosen.dedup_by(|a, b| a.0 == b.0);
        let (load_balancers, next_marker) =
            page(&chosen, input.marker.as_deref(), input.page_size)?;
        Ok(DescribeLoadBalancersOutput {
            load_balancers: Some(load_balancers),
            next_marker,
        })
    }

    pub(crate) async fn delete_load_balancer(
        &self,
        input: DeleteLoadBalancerInput,
    ) -> Result<DeleteLoadBalancerOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.load_balancer_arn.unwrap_or_default();
        change(
            &**self.store(),
            |state| {
                // Deleting a load balancer that is not there succeeds, as in ELBv2.
                let Some(record) = self.find_load_balancer(state, &arn) else {
                    return Ok(());
                };
                if record
                    .attributes
                    .get("deletion_protection.enabled")
                    .is_some_and(|value| value == "true")
                {
                    return Err(error(
                        "OperationNotPermittedException",
                        format!("Load balancer '{arn}' cannot be deleted because deletion protection is enabled"),
                    ));
                }
                let name = record.description.load_balancer_name.clone().unwrap_or_default();
                state.load_balancers.remove(&name);
                Ok(())
            },
            |state| self.check(state),
        )
        .await?;
        Ok(DeleteLoadBalancerOutput {})
    }

    pub(crate) fn describe_load_balancer_attributes(
        &self,
        input: DescribeLoadBalancerAttributesInput,
    ) -> Result<DescribeLoadBalancerAttributesOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.load_balancer_arn.unwrap_or_default();
        let state = State::read(&**self.store())?;
        let record = self
            .find_load_balancer(&state, &arn)
            .ok_or_else(|| Self::load_balancer_not_found(&arn))?;
        Ok(DescribeLoadBalancerAttributesOutput {
            attributes: Some(load_balancer_attributes(&record.attributes)),
        })
    }

    pub(crate) async fn modify_load_balancer_attributes(
        &self,
        input: ModifyLoadBalancerAttributesInput,
    ) -> Result<ModifyLoadBalancerAttributesOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.load_balancer_arn.unwrap_or_default();
        let changes: Vec<(Option<String>, Option<String>)> = input
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|attribute| (attribute.key, attribute.value))
            .collect();
        let attributes = change(
            &**self.store(),
            |state| {
                let name = self.load_balancer_name_of(state, &arn)?;
                let Some(record) = state.load_balancers.get_mut(&name) else {
                    return Err(Self::load_balancer_not_found(&arn));
                };
                record.attributes =
                    attributes::modify_load_balancer(record.kind, &record.attributes, &changes)?;
                Ok(record.attributes.clone())
            },
            |state| self.check(state),
        )
        .await?;
        Ok(ModifyLoadBalancerAttributesOutput {
            attributes: Some(load_balancer_attributes(&attributes)),
        })
    }

    pub(crate) async fn set_security_groups(
        &self,
        input: SetSecurityGroupsInput,
    ) -> Result<SetSecurityGroupsOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.load_balancer_arn.unwrap_or_default();
        let groups = input.security_groups.unwrap_or_default();
        if input
            .enforce_security_group_inbound_rules_on_private_link_traffic
            .is_some()
        {
            return Err(validation(
                "EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic is not supported by Flotilla",
            ));
        }
        let kept = change(
            &**self.store(),
            |state| {
                let name = self.load_balancer_name_of(state, &arn)?;
                let Some(record) = state.load_balancers.get_mut(&name) else {
                    return Err(Self::load_balancer_not_found(&arn));
                };
                record.description.security_groups = Some(groups.clone());
                Ok(groups.clone())
            },
            |state| self.check(state),
        )
        .await?;
        Ok(SetSecurityGroupsOutput {
            security_group_ids: Some(kept),
            ..Default::default()
        })
    }

    pub(crate) async fn set_subnets(
        &self,
        input: SetSubnetsInput,
    ) -> Result<SetSubnetsOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.load_balancer_arn.unwrap_or_default();
        let subnets = input.subnets.unwrap_or_default();
        let mappings = input.subnet_mappings.unwrap_or_default();
        if subnets.is_empty() && mappings.is_empty() {
            return Err(validation("You must specify subnets or subnet mappings"));
        }
        if !subnets.is_empty() && !mappings.is_empty() {
            return Err(validation(
                "You can specify subnets or subnet mappings, not both",
            ));
        }
        let zones = zones(&subnets, &mappings, &self.scope.region);
        let (zones, ip_address_type) = change(
            &**self.store(),
            |state| {
                let name = self.load_balancer_name_of(state, &arn)?;
                let Some(record) = state.load_balancers.get_mut(&name) else {
                    return Err(Self::load_balancer_not_found(&arn));
                };
                record.description.availability_zones = Some(zones.clone());
                if let Some(kind) = input.ip_address_type {
                    record.description.ip_address_type = Some(kind);
                }
                Ok((zones.clone(), record.description.ip_address_type))
            },
            |state| self.check(state),
        )
        .await?;
        Ok(SetSubnetsOutput {
            availability_zones: Some(zones),
            ip_address_type,
            ..Default::default()
        })
    }
}

fn load_balancer_attributes(
    attributes: &std::collections::BTreeMap<String, String>,
) -> Vec<LoadBalancerAttribute> {
    attributes
        .iter()
        .map(|(key, value)| LoadBalancerAttribute {
            key: Some(key.clone()),
            value: Some(value.clone()),
        })
        .collect()
}
