//! Listeners and their rules: Create/Describe/Modify/DeleteListener(s),
//! Create/Describe/Modify/DeleteRule(s) and SetRulePriorities.

use flotilla_aws::elbv2::{
    Action, ActionTypeEnum, CreateListenerInput, CreateListenerOutput, CreateRuleInput,
    CreateRuleOutput, DeleteListenerInput, DeleteListenerOutput, DeleteRuleInput, DeleteRuleOutput,
    DescribeListenersInput, DescribeListenersOutput, DescribeRulesInput, DescribeRulesOutput,
    ForwardActionConfig, HostHeaderConditionConfig, HttpRequestMethodConditionConfig, Listener,
    LoadBalancerTypeEnum, ModifyListenerInput, ModifyListenerOutput, ModifyRuleInput,
    ModifyRuleOutput, PathPatternConditionConfig, ProtocolEnum, RedirectActionConfig, Rule,
    RuleCondition, SetRulePrioritiesInput, SetRulePrioritiesOutput, SourceIpConditionConfig,
    TargetGroupStickinessConfig, TargetGroupTuple,
};
use flotilla_types::ApiError;

use crate::certificates::TlsRequest;
use crate::load_balancers::type_segment;
use crate::records::{change, ListenerRecord, LoadBalancerRecord, RuleRecord, State};
use crate::{arn_parts, error, page, require, tags, validation, CallContext, Elbv2};

/// ELBv2's quotas.
pub const LISTENERS_PER_LOAD_BALANCER_MAX: usize = 50;
pub const RULES_PER_LOAD_BALANCER_MAX: usize = 100;
pub const RULE_PRIORITY_MAX: i32 = 50_000;
/// Condition values per rule, over all its conditions.
pub const CONDITION_VALUES_PER_RULE_MAX: usize = 5;
/// Conditions a request may carry; beyond this the request is refused
/// before any is looked at.
pub const CONDITIONS_PER_RULE_MAX: usize = 10;

/// Which rule of a listener an ARN names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RuleRef {
    Default,
    At(usize),
}

const CONDITION_FIELDS: [&str; 6] = [
    "http-header",
    "http-request-method",
    "host-header",
    "path-pattern",
    "query-string",
    "source-ip",
];

fn listener_not_found(arn: &str) -> ApiError {
    error(
        "ListenerNotFoundException",
        format!("Listener '{arn}' not found"),
    )
}

fn rule_not_found(arn: &str) -> ApiError {
    error("RuleNotFoundException", format!("Rule '{arn}' not found"))
}

/// A condition in the shape ELBv2 describes: the legacy `Values` moved into
/// the field's own configuration, and both answered, as ELBv2 answers them.
fn normalized_condition(condition: &RuleCondition) -> Result<RuleCondition, ApiError> {
    let field = condition.field.clone().unwrap_or_default();
    if field.is_empty() {
        return Err(validation("A condition field must be specified"));
    }
    if !CONDITION_FIELDS.contains(&field.as_str()) {
        return Err(validation(format!(
            "Condition field '{field}' must be one of '[{}]'",
            CONDITION_FIELDS.join(", ")
        )));
    }
    let regex = condition.regex_values.is_some()
        || [
            condition
                .host_header_config
                .as_ref()
                .and_then(|c| c.regex_values.as_ref()),
            condition
                .path_pattern_config
                .as_ref()
                .and_then(|c| c.regex_values.as_ref()),
            condition
                .http_header_config
                .as_ref()
                .and_then(|c| c.regex_values.as_ref()),
        ]
        .iter()
        .any(Option::is_some);
    if regex {
        return Err(validation(
            "RegexValues conditions are not supported by Flotilla; use Values with wildcards",
        ));
    }
    let mut normalized = RuleCondition {
        field: Some(field.clone()),
        ..Default::default()
    };
    let legacy = condition.values.clone();
    let config_given = match field.as_str() {
        "host-header" => condition.host_header_config.is_some(),
        "path-pattern" => condition.path_pattern_config.is_some(),
        "http-header" => condition.http_header_config.is_some(),
        "query-string" => condition.query_string_config.is_some(),
        "http-request-method" => condition.http_request_method_config.is_some(),
        _ => condition.source_ip_config.is_some(),
    };
    if legacy.is_some() && config_given {
        return Err(validation(format!(
            "Condition '{field}' cannot have both Values and a {field} configuration"
        )));
    }
    match field.as_str() {
        "host-header" => {
            let values = legacy
                .or_else(|| {
                    condition
                        .host_header_config
                        .as_ref()
                        .and_then(|c| c.values.clone())
                })
                .unwrap_or_default();
            normalized.values = Some(values.clone());
            normalized.host_header_config = Some(HostHeaderConditionConfig {
                values: Some(values),
                regex_values: None,
            });
        }
        "path-pattern" => {
            let values = legacy
                .or_else(|| {
                    condition
                        .path_pattern_config
                        .as_ref()
                        .and_then(|c| c.values.clone())
                })
                .unwrap_or_default();
            normalized.values = Some(values.clone());
            normalized.path_pattern_config = Some(PathPatternConditionConfig {
                values: Some(values),
                regex_values: None,
            });
        }
        "http-header" => {
            let Some(config) = &condition.http_header_config else {
                return Err(validation(
                    "An http-header condition needs an HttpHeaderConfig",
                ));
            };
            normalized.http_header_config = Some(config.clone());
        }
        "query-string" => {
            let Some(config) = &condition.query_string_config else {
                return Err(validation(
                    "A query-string condition needs a QueryStringConfig",
                ));
            };
            normalized.query_string_config = Some(config.clone());
        }
        "http-request-method" => {
            let values = condition
                .http_request_method_config
                .as_ref()
                .and_then(|c| c.values.clone())
                .or(legacy)
                .unwrap_or_default();
            normalized.http_request_method_config = Some(HttpRequestMethodConditionConfig {
                values: Some(values),
            });
        }
        _ => {
            let given = condition.source_ip_config.clone();
            let values = given
                .as_ref()
                .and_then(|c| c.values.clone())
                .or(legacy)
                .unwrap_or_default();
            normalized.source_ip_config = Some(SourceIpConditionConfig {
                values: Some(values),
                ip_address_type: given.and_then(|c| c.ip_address_type),
            });
        }
    }
    Ok(normalized)
}

fn normalized_conditions(conditions: &[RuleCondition]) -> Result<Vec<RuleCondition>, ApiError> {
    if conditions.is_empty() {
        return Err(validation("A rule must have at least one condition"));
    }
    if conditions.len() > CONDITIONS_PER_RULE_MAX {
        return Err(validation(format!(
            "A rule can only have '{CONDITION_VALUES_PER_RULE_MAX}' condition values; {} conditions were given",
            conditions.len()
        )));
    }
    let normalized = conditions
        .iter()
        .map(normalized_condition)
        .collect::<Result<Vec<_>, _>>()?;
    let values: usize = normalized.iter().map(condition_value_count).sum();
    if values > CONDITION_VALUES_PER_RULE_MAX {
        return Err(validation(format!(
            "A rule can only have '{CONDITION_VALUES_PER_RULE_MAX}' condition values; this one has {values}"
        )));
    }
    Ok(normalized)
}

fn condition_value_count(condition: &RuleCondition) -> usize {
    let lengths = [
        condition
            .host_header_config
            .as_ref()
            .and_then(|c| c.values.as_ref())
            .map(Vec::len),
        condition
            .path_pattern_config
            .as_ref()
            .and_then(|c| c.values.as_ref())
            .map(Vec::len),
        condition
            .http_header_config
            .as_ref()
            .and_then(|c| c.values.as_ref())
            .map(Vec::len),
        condition
            .query_string_config
            .as_ref()
            .and_then(|c| c.values.as_ref())
            .map(Vec::len),
        condition
            .http_request_method_config
            .as_ref()
            .and_then(|c| c.values.as_ref())
            .map(Vec::len),
        condition
            .source_ip_config
            .as_ref()
            .and_then(|c| c.values.as_ref())
            .map(Vec::len),
    ];
    lengths.iter().flatten().sum()
}

impl Elbv2 {
    pub(crate) fn find_listener(&self, state: &State, arn: &str) -> Option<(String, usize)> {
        let parts = arn_parts(&self.arn_prefix(), arn, "listener")?;
        let [_, name, balancer_id, listener_id] = parts.as_slice() else {
            return None;
        };
        let balancer = state.load_balancers.get(*name)?;
        if balancer.id != *balancer_id {
            return None;
        }
        let index = balancer
            .listeners
            .iter()
            .position(|listener| listener.id == *listener_id)?;
        Some(((*name).to_owned(), index))
    }

    pub(crate) fn find_rule(&self, state: &State, arn: &str) -> Option<(String, usize, usize)> {
        match self.find_any_rule(state, arn)? {
            (balancer, listener, RuleRef::At(rule)) => Some((balancer, listener, rule)),
            (_, _, RuleRef::Default) => None,
        }
    }

    pub(crate) fn find_any_rule(
        &self,
        state: &State,
        arn: &str,
    ) -> Option<(String, usize, RuleRef)> {
        let parts = arn_parts(&self.arn_prefix(), arn, "listener-rule")?;
        let [_, name, balancer_id, listener_id, rule_id] = parts.as_slice() else {
            return None;
        };
        let balancer = state.load_balancers.get(*name)?;
        if balancer.id != *balancer_id {
            return None;
        }
        let listener_index = balancer
            .listeners
            .iter()
            .position(|listener| listener.id == *listener_id)?;
        let listener = &balancer.listeners[listener_index];
        if listener.default_rule_id == *rule_id {
            return Some(((*name).to_owned(), listener_index, RuleRef::Default));
        }
        let rule = listener.rules.iter().position(|rule| rule.id == *rule_id)?;
        Some(((*name).to_owned(), listener_index, RuleRef::At(rule)))
    }

    fn listener_arn(&self, balancer: &LoadBalancerRecord, listener_id: &str) -> String {
        let name = balancer
            .description
            .load_balancer_name
            .as_deref()
            .unwrap_or_default();
        self.scope.arn(
            crate::SERVICE,
            &format!(
                "listener/{}/{name}/{}/{listener_id}",
                type_segment(balancer.kind),
                balancer.id
            ),
        )
    }

    fn rule_arn(&self, balancer: &LoadBalancerRecord, listener_id: &str, rule_id: &str) -> String {
        let name = balancer
            .description
            .load_balancer_name
            .as_deref()
            .unwrap_or_default();
        self.scope.arn(
            crate::SERVICE,
            &format!(
                "listener-rule/{}/{name}/{}/{listener_id}/{rule_id}",
                type_segment(balancer.kind),
                balancer.id
            ),
        )
    }

    fn describe_rule(
        &self,
        balancer: &LoadBalancerRecord,
        listener: &ListenerRecord,
        rule: RuleRef,
    ) -> Rule {
        match rule {
            RuleRef::Default => Rule {
                actions: listener.description.default_actions.clone(),
                conditions: Some(Vec::new()),
                is_default: Some(true),
                priority: Some("default".to_owned()),
                rule_arn: Some(self.rule_arn(balancer, &listener.id, &listener.default_rule_id)),
                transforms: None,
            },
            RuleRef::At(index) => {
                let rule = &listener.rules[index];
                Rule {
                    actions: Some(rule.actions.clone()),
                    conditions: Some(rule.conditions.clone()),
                    is_default: Some(false),
                    priority: Some(rule.priority.to_string()),
                    rule_arn: Some(self.rule_arn(balancer, &listener.id, &rule.id)),
                    transforms: None,
                }
            }
        }
    }

    /// Actions as ELBv2 keeps them: checked against the load balancer's type
    /// and the target groups they name, with a forward action's
    /// `ForwardConfig` filled in.
    pub(crate) fn normalized_actions(
        &self,
        state: &State,
        balancer: &LoadBalancerRecord,
        protocol: ProtocolEnum,
        actions: &[Action],
    ) -> Result<Vec<Action>, ApiError> {
        if actions.is_empty() {
            return Err(validation("At least one action must be specified"));
        }
        if actions.len() > 1 {
            return Err(error(
                "TooManyActionsException",
                "Only one action (forward, redirect or fixed-response) is supported per rule by Flotilla",
            ));
        }
        let balancer_arn = balancer
            .description
            .load_balancer_arn
            .clone()
            .unwrap_or_default();
        let mut normalized = Vec::new();
        for action in actions {
            let Some(kind) = action.r#type else {
                return Err(validation("An action type must be specified"));
            };
            let mut action = action.clone();
            match kind {
                ActionTypeEnum::Forward => {
                    let tuples = match (&action.target_group_arn, &action.forward_config) {
                        (Some(arn), None) => vec![TargetGroupTuple {
                            target_group_arn: Some(arn.clone()),
                            weight: Some(1),
                        }],
                        (arn, Some(config)) => {
                            let tuples = config.target_groups.clone().unwrap_or_default();
                            if let Some(arn) = arn {
                                let single = tuples.len() == 1
                                    && tuples[0].target_group_arn.as_ref() == Some(arn);
                                if !single {
                                    return Err(error(
                                        "InvalidLoadBalancerActionException",
                                        "You cannot specify both a target group ARN and a forward config with different target groups",
                                    ));
                                }
                            }
                            tuples
                        }
                        (None, None) => return Err(error(
                            "InvalidLoadBalancerActionException",
                            "A forward action must specify a target group ARN or a forward config",
                        )),
                    };
                    if tuples.is_empty() || tuples.len() > 5 {
                        return Err(error(
                            "InvalidLoadBalancerActionException",
                            "A forward action must have from 1 to 5 target groups",
                        ));
                    }
                    let mut filled = Vec::new();
                    for tuple in &tuples {
                        let arn = tuple.target_group_arn.clone().unwrap_or_default();
                        let group = self
                            .find_target_group(state, &arn)
                            .ok_or_else(|| Self::target_group_not_found(&arn))?;
                        let group_protocol =
                            group.description.protocol.unwrap_or(ProtocolEnum::Http);
                        let compatible = match balancer.kind {
                            LoadBalancerTypeEnum::Network => {
                                group_protocol == protocol
                                    || (protocol == ProtocolEnum::Tcp
                                        && group_protocol == ProtocolEnum::Tcp)
                            }
                            _ => matches!(group_protocol, ProtocolEnum::Http | ProtocolEnum::Https),
                        };
                        if !compatible {
                            return Err(error(
                                "IncompatibleProtocolsException",
                                format!("Listener protocol '{protocol}' is not supported with a target group with the protocol '{group_protocol}'"),
                            ));
                        }
                        let others: Vec<String> =
                            crate::snapshot::load_balancers_using(state, &arn)
                                .into_iter()
                                .filter(|using| *using != balancer_arn)
                                .collect();
                        if !others.is_empty() {
                            return Err(error(
                                "TargetGroupAssociationLimitException",
                                format!("The following target groups cannot be associated with more than one load balancer: '{arn}'"),
                            ));
                        }
                        let weight = tuple.weight.unwrap_or(1);
                        if !(0..=999).contains(&weight) {
                            return Err(validation(format!(
                                "Target group weight '{weight}' must be from 0 to 999"
                            )));
                        }
                        filled.push(TargetGroupTuple {
                            target_group_arn: Some(arn),
                            weight: Some(weight),
                        });
                    }
                    let stickiness = action
                        .forward_config
                        .as_ref()
                        .and_then(|config| config.target_group_stickiness_config.clone())
                        .unwrap_or(TargetGroupStickinessConfig {
                            enabled: Some(false),
                            duration_seconds: None,
                        });
                    if filled.len() == 1 && action.target_group_arn.is_none() {
                        action.target_group_arn = filled[0].target_group_arn.clone();
                    }
                    action.forward_config = Some(ForwardActionConfig {
                        target_groups: Some(filled),
                        target_group_stickiness_config: Some(stickiness),
                    });
                }
                ActionTypeEnum::Redirect | ActionTypeEnum::FixedResponse
                    if balancer.kind == LoadBalancerTypeEnum::Network =>
                {
                    return Err(error(
                        "InvalidLoadBalancerActionException",
                        format!("Action type '{kind}' is not supported for network load balancers"),
                    ));
                }
                ActionTypeEnum::Redirect => {
                    let Some(config) = &action.redirect_config else {
                        return Err(error(
                            "InvalidLoadBalancerActionException",
                            "A redirect action must have a redirect config",
                        ));
                    };
                    if config.status_code.is_none() {
                        return Err(validation("A redirect status code must be specified"));
                    }
                    let keep = |given: &Option<String>, default: &str| {
                        Some(given.clone().unwrap_or_else(|| default.to_owned()))
                    };
                    action.redirect_config = Some(RedirectActionConfig {
                        protocol: keep(&config.protocol, "#{protocol}"),
                        port: keep(&config.port, "#{port}"),
                        host: keep(&config.host, "#{host}"),
                        path: keep(&config.path, "/#{path}"),
                        query: keep(&config.query, "#{query}"),
                        status_code: config.status_code,
                    });
                }
                ActionTypeEnum::FixedResponse => {
                    let Some(config) = &action.fixed_response_config else {
                        return Err(error(
                            "InvalidLoadBalancerActionException",
                            "A fixed-response action must have a fixed response config",
                        ));
                    };
                    let code = config.status_code.clone().unwrap_or_default();
                    let valid = code.len() == 3
                        && code.bytes().all(|b| b.is_ascii_digit())
                        && matches!(code.as_bytes()[0], b'2' | b'4' | b'5');
                    if !valid {
                        return Err(validation(format!(
                            "Fixed response status code '{code}' must match '^(2|4|5)\\d\\d$'"
                        )));
                    }
                }
                other => {
                    return Err(error(
                        "InvalidLoadBalancerActionException",
                        format!("Action type '{other}' is not supported by Flotilla"),
                    ))
                }
            }
            normalized.push(action);
        }
        Ok(normalized)
    }

    /// ELBv2's checks of a listener's protocol and port, and whether the port
    /// is free on the serving machine (another load balancer's listener
    /// there holds it too).
    fn check_listener_port(
        state: &State,
        balancer: &LoadBalancerRecord,
        own_listener: Option<&str>,
        protocol: ProtocolEnum,
        port: i32,
    ) -> Result<(), ApiError> {
        let allowed: &[ProtocolEnum] = match balancer.kind {
            LoadBalancerTypeEnum::Network => &[ProtocolEnum::Tcp, ProtocolEnum::Udp],
            _ => &[ProtocolEnum::Http, ProtocolEnum::Https],
        };
        if !allowed.contains(&protocol) {
            let names: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
            return Err(error(
                "UnsupportedProtocolException",
                format!(
                    "Listener protocol '{protocol}' must be one of '{}'",
                    names.join(", ")
                ),
            ));
        }
        if !(1..=65_535).contains(&port) {
            return Err(validation(format!(
                "1 validation error detected: Value '{port}' at 'port' failed to satisfy constraint: Member must have value between 1 and 65535"
            )));
        }
        let udp = protocol == ProtocolEnum::Udp;
        for other in state.load_balancers.values() {
            for listener in &other.listeners {
                if Some(listener.id.as_str()) == own_listener && other.id == balancer.id {
                    continue;
                }
                let other_udp = listener.description.protocol == Some(ProtocolEnum::Udp);
                if listener.description.port != Some(port) || other_udp != udp {
                    continue;
                }
                if other.id == balancer.id {
                    return Err(error(
                        "DuplicateListenerException",
                        "A listener already exists on this port for this load balancer",
                    ));
                }
                return Err(error(
                    "DuplicateListenerException",
                    format!(
                        "Port {port} is already taken on the serving host by a listener of load balancer '{}'",
                        other.description.load_balancer_name.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) async fn create_listener(
        &self,
        input: CreateListenerInput,
        call: &CallContext,
    ) -> Result<CreateListenerOutput, ApiError> {
        require(input.missing_required())?;
        let balancer_arn = input.load_balancer_arn.clone().unwrap_or_default();
        let tls = TlsRequest {
            certificates: input.certificates.as_deref(),
            ssl_policy: input.ssl_policy.as_deref(),
            alpn_policy: input.alpn_policy.as_deref(),
            mutual_authentication: input.mutual_authentication.as_ref(),
        };
        let tags = tags::checked(input.tags.as_deref().unwrap_or_default())?;
        let listener_id = call.id(0);
        let default_rule_id = call.id(1);
        let created = change(
            &**self.store(),
            |state| {
                let balancer = self
                    .find_load_balancer(state, &balancer_arn)
                    .ok_or_else(|| Self::load_balancer_not_found(&balancer_arn))?;
                let protocol = input.protocol.unwrap_or(match balancer.kind {
                    LoadBalancerTypeEnum::Network => ProtocolEnum::Tcp,
                    _ => ProtocolEnum::Http,
                });
                let Some(port) = input.port else {
                    return Err(validation("A listener port must be specified"));
                };
                let actions = self.normalized_actions(
                    state,
                    balancer,
                    protocol,
                    input.default_actions.as_deref().unwrap_or_default(),
                )?;
                // CreateListener is idempotent: the same settings answer the
                // listener that exists.
                if let Some(existing) = balancer.listeners.iter().find(|listener| {
                    listener.description.port == Some(port)
                        && listener.description.protocol == Some(protocol)
                        && listener.description.default_actions.as_ref() == Some(&actions)
                }) {
                    return Ok(existing.description.clone());
                }
                Self::check_listener_port(state, balancer, None, protocol, port)?;
                let tls = self.tls_settings(protocol, &tls, None)?;
                if balancer.listeners.len() >= LISTENERS_PER_LOAD_BALANCER_MAX {
                    return Err(error(
                        "TooManyListenersException",
                        "The quota for the number of listeners per load balancer has been reached",
                    ));
                }
                let description = Listener {
                    default_actions: Some(actions),
                    listener_arn: Some(self.listener_arn(balancer, &listener_id)),
                    load_balancer_arn: Some(balancer_arn.clone()),
                    port: Some(port),
                    protocol: Some(protocol),
                    certificates: tls.certificates,
                    ssl_policy: tls.ssl_policy,
                    alpn_policy: tls.alpn_policy,
                    ..Default::default()
                };
                let name = balancer
                    .description
                    .load_balancer_name
                    .clone()
                    .unwrap_or_default();
                if let Some(balancer) = state.load_balancers.get_mut(&name) {
                    balancer.listeners.push(ListenerRecord {
                        id: listener_id.clone(),
                        default_rule_id: default_rule_id.clone(),
                        description: description.clone(),
                        tags: tags.clone(),
                        rules: Vec::new(),
                        served: tls.served,
                    });
                }
                Ok(description)
            },
            |state| self.check(state),
        )
        .await?;
        Ok(CreateListenerOutput {
            listeners: Some(vec![created]),
        })
    }

    pub(crate) fn describe_listeners(
        &self,
        input: DescribeListenersInput,
    ) -> Result<DescribeListenersOutput, ApiError> {
        let state = State::read(&**self.store())?;
        let arns = input.listener_arns.unwrap_or_default();
        let mut chosen: Vec<(String, Listener)> = Vec::new();
        match (&input.load_balancer_arn, arns.is_empty()) {
            (Some(_), false) => {
                return Err(validation(
                    "Listener ARNs and a load balancer ARN cannot be specified at the same time",
                ))
            }
            (None, true) => {
                return Err(validation(
                    "You must specify either listener ARNs or a load balancer ARN",
                ))
            }
            (Some(balancer_arn), true) => {
                let balancer = self
                    .find_load_balancer(&state, balancer_arn)
                    .ok_or_else(|| Self::load_balancer_not_found(balancer_arn))?;
                for listener in &balancer.listeners {
                    chosen.push((listener.id.clone(), listener.description.clone()));
                }
            }
            (None, false) => {
                for arn in &arns {
                    let (name, index) = self
                        .find_listener(&state, arn)
                        .ok_or_else(|| listener_not_found(arn))?;
                    let listener = &state.load_balancers[&name].listeners[index];
                    chosen.push((arn.clone(), listener.description.clone()));
                }
            }
        }
        chosen.sort_by(|a, b| a.0.cmp(&b.0));
        chosen.dedup_by(|a, b| a.0 == b.0);
        let (listeners, next_marker) = page(&chosen, input.marker.as_deref(), input.page_size)?;
        Ok(DescribeListenersOutput {
            listeners: Some(listeners),
            next_marker,
        })
    }

    pub(crate) async fn modify_listener(
        &self,
        input: ModifyListenerInput,
    ) -> Result<ModifyListenerOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.listener_arn.clone().unwrap_or_default();
        let tls = TlsRequest {
            certificates: input.certificates.as_deref(),
            ssl_policy: input.ssl_policy.as_deref(),
            alpn_policy: input.alpn_policy.as_deref(),
            mutual_authentication: input.mutual_authentication.as_ref(),
        };
        let modified = change(
            &**self.store(),
            |state| {
                let (name, index) = self
                    .find_listener(state, &arn)
                    .ok_or_else(|| listener_not_found(&arn))?;
                let balancer = &state.load_balancers[&name];
                let current = &balancer.listeners[index];
                let protocol = input
                    .protocol
                    .or(current.description.protocol)
                    .unwrap_or(ProtocolEnum::Http);
                let port = input.port.or(current.description.port).unwrap_or(80);
                Self::check_listener_port(state, balancer, Some(&current.id), protocol, port)?;
                let tls = self.tls_settings(protocol, &tls, Some(current))?;
                let actions = match &input.default_actions {
                    Some(actions) => self.normalized_actions(state, balancer, protocol, actions)?,
                    None => current
                        .description
                        .default_actions
                        .clone()
                        .unwrap_or_default(),
                };
                let mut description = current.description.clone();
                description.protocol = Some(protocol);
                description.port = Some(port);
                description.default_actions = Some(actions);
                description.certificates = tls.certificates;
                description.ssl_policy = tls.ssl_policy;
                description.alpn_policy = tls.alpn_policy;
                if let Some(balancer) = state.load_balancers.get_mut(&name) {
                    balancer.listeners[index].description = description.clone();
                    balancer.listeners[index].served = tls.served;
                }
                Ok(description)
            },
            |state| self.check(state),
        )
        .await?;
        Ok(ModifyListenerOutput {
            listeners: Some(vec![modified]),
        })
    }

    pub(crate) async fn delete_listener(
        &self,
        input: DeleteListenerInput,
    ) -> Result<DeleteListenerOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.listener_arn.unwrap_or_default();
        change(
            &**self.store(),
            |state| {
                let (name, index) = self
                    .find_listener(state, &arn)
                    .ok_or_else(|| listener_not_found(&arn))?;
                if let Some(balancer) = state.load_balancers.get_mut(&name) {
                    balancer.listeners.remove(index);
                }
                Ok(())
            },
            |state| self.check(state),
        )
        .await?;
        Ok(DeleteListenerOutput {})
    }

    pub(crate) async fn create_rule(
        &self,
        input: CreateRuleInput,
        call: &CallContext,
    ) -> Result<CreateRuleOutput, ApiError> {
        require(input.missing_required())?;
        if input.transforms.is_some() {
            return Err(validation("Rule transforms are not supported by Flotilla"));
        }
        let listener_arn = input.listener_arn.clone().unwrap_or_default();
        let priority = input.priority.unwrap_or_default();
        if !(1..=RULE_PRIORITY_MAX).contains(&priority) {
            return Err(validation(format!(
                "1 validation error detected: Value '{priority}' at 'priority' failed to satisfy constraint: Member must have value between 1 and {RULE_PRIORITY_MAX}"
            )));
        }
        let conditions = normalized_conditions(input.conditions.as_deref().unwrap_or_default())?;
        let tags = tags::checked(input.tags.as_deref().unwrap_or_default())?;
        let rule_id = call.id(0);
        let created = change(
            &**self.store(),
            |state| {
                let (name, index) = self
                    .find_listener(state, &listener_arn)
                    .ok_or_else(|| listener_not_found(&listener_arn))?;
                let balancer = &state.load_balancers[&name];
                if balancer.kind == LoadBalancerTypeEnum::Network {
                    return Err(validation(
                        "Rules are not supported for network load balancers' listeners",
                    ));
                }
                let listener = &balancer.listeners[index];
                let protocol = listener.description.protocol.unwrap_or(ProtocolEnum::Http);
                let actions = self.normalized_actions(
                    state,
                    balancer,
                    protocol,
                    input.actions.as_deref().unwrap_or_default(),
                )?;
                if listener
                    .rules
                    .iter()
                    .any(|rule| rule.priority == priority as u32)
                {
                    return Err(error(
                        "PriorityInUseException",
                        format!("Priority '{priority}' is currently in use"),
                    ));
                }
                let rules: usize = balancer.listeners.iter().map(|l| l.rules.len()).sum();
                if rules >= RULES_PER_LOAD_BALANCER_MAX {
                    return Err(error(
                        "TooManyRulesException",
                        "The quota for the number of rules per load balancer has been reached",
                    ));
                }
                let rule = RuleRecord {
                    id: rule_id.clone(),
                    priority: priority as u32,
                    conditions: conditions.clone(),
                    actions,
                    tags: tags.clone(),
                };
                let balancer = state
                    .load_balancers
                    .get_mut(&name)
                    .ok_or_else(|| listener_not_found(&listener_arn))?;
                balancer.listeners[index].rules.push(rule);
                let at = balancer.listeners[index].rules.len() - 1;
                let balancer = &state.load_balancers[&name];
                Ok(self.describe_rule(balancer, &balancer.listeners[index], RuleRef::At(at)))
            },
            |state| self.check(state),
        )
        .await?;
        Ok(CreateRuleOutput {
            rules: Some(vec![created]),
        })
    }

    pub(crate) fn describe_rules(
        &self,
        input: DescribeRulesInput,
    ) -> Result<DescribeRulesOutput, ApiError> {
        let state = State::read(&**self.store())?;
        let arns = input.rule_arns.unwrap_or_default();
        let mut chosen: Vec<(String, Rule)> = Vec::new();
        let sort_key = |rule: &Rule| match rule.priority.as_deref() {
            Some("default") | None => "99999".to_owned(),
            Some(priority) => format!("{priority:0>5}"),
        };
        match (&input.listener_arn, arns.is_empty()) {
            (Some(_), false) => {
                return Err(validation(
                    "Rule ARNs and a listener ARN cannot be specified at the same time",
                ))
            }
            (None, true) => {
                return Err(validation(
                    "You must specify either rule ARNs or a listener ARN",
                ))
            }
            (Some(listener_arn), true) => {
                let (name, index) = self
                    .find_listener(&state, listener_arn)
                    .ok_or_else(|| listener_not_found(listener_arn))?;
                let balancer = &state.load_balancers[&name];
                let listener = &balancer.listeners[index];
                for at in 0..listener.rules.len() {
                    let rule = self.describe_rule(balancer, listener, RuleRef::At(at));
                    chosen.push((sort_key(&rule), rule));
                }
                let rule = self.describe_rule(balancer, listener, RuleRef::Default);
                chosen.push((sort_key(&rule), rule));
            }
            (None, false) => {
                for arn in &arns {
                    let (name, index, which) = self
                        .find_any_rule(&state, arn)
                        .ok_or_else(|| rule_not_found(arn))?;
                    let balancer = &state.load_balancers[&name];
                    let rule = self.describe_rule(balancer, &balancer.listeners[index], which);
                    chosen.push((format!("{}{arn}", sort_key(&rule)), rule));
                }
            }
        }
        chosen.sort_by(|a, b| a.0.cmp(&b.0));
        let (rules, next_marker) = page(&chosen, input.marker.as_deref(), input.page_size)?;
        Ok(DescribeRulesOutput {
            rules: Some(rules),
            next_marker,
        })
    }

    pub(crate) async fn modify_rule(
        &self,
        input: ModifyRuleInput,
    ) -> Result<ModifyRuleOutput, ApiError> {
        require(input.missing_required())?;
        if input.transforms.is_some() || input.reset_transforms == Some(true) {
            return Err(validation("Rule transforms are not supported by Flotilla"));
        }
        let arn = input.rule_arn.clone().unwrap_or_default();
        let conditions = match &input.conditions {
            Some(conditions) => Some(normalized_conditions(conditions)?),
            None => None,
        };
        let modified = change(
            &**self.store(),
            |state| {
                let (name, index, which) = self
                    .find_any_rule(state, &arn)
                    .ok_or_else(|| rule_not_found(&arn))?;
                let RuleRef::At(at) = which else {
                    return Err(error(
                        "OperationNotPermittedException",
                        "The default rule cannot be modified with ModifyRule; change its actions with ModifyListener",
                    ));
                };
                let balancer = &state.load_balancers[&name];
                let listener = &balancer.listeners[index];
                let protocol = listener.description.protocol.unwrap_or(ProtocolEnum::Http);
                let actions = match &input.actions {
                    Some(actions) => Some(self.normalized_actions(state, balancer, protocol, actions)?),
                    None => None,
                };
                let balancer = state.load_balancers.get_mut(&name).ok_or_else(|| rule_not_found(&arn))?;
                let rule = &mut balancer.listeners[index].rules[at];
                if let Some(conditions) = &conditions {
                    rule.conditions = conditions.clone();
                }
                if let Some(actions) = actions {
                    rule.actions = actions;
                }
                let balancer = &state.load_balancers[&name];
                Ok(self.describe_rule(balancer, &balancer.listeners[index], which))
            },
            |state| self.check(state),
        )
        .await?;
        Ok(ModifyRuleOutput {
            rules: Some(vec![modified]),
        })
    }

    pub(crate) async fn delete_rule(
        &self,
        input: DeleteRuleInput,
    ) -> Result<DeleteRuleOutput, ApiError> {
        require(input.missing_required())?;
        let arn = input.rule_arn.unwrap_or_default();
        change(
            &**self.store(),
            |state| {
                let (name, index, which) = self
                    .find_any_rule(state, &arn)
                    .ok_or_else(|| rule_not_found(&arn))?;
                let RuleRef::At(at) = which else {
                    return Err(error(
                        "OperationNotPermittedException",
                        "Default rule cannot be deleted",
                    ));
                };
                if let Some(balancer) = state.load_balancers.get_mut(&name) {
                    balancer.listeners[index].rules.remove(at);
                }
                Ok(())
            },
            |state| self.check(state),
        )
        .await?;
        Ok(DeleteRuleOutput {})
    }

    pub(crate) async fn set_rule_priorities(
        &self,
        input: SetRulePrioritiesInput,
    ) -> Result<SetRulePrioritiesOutput, ApiError> {
        require(input.missing_required())?;
        let pairs = input.rule_priorities.unwrap_or_default();
        if pairs.is_empty() {
            return Err(validation("At least one rule priority must be specified"));
        }
        let mut requested = std::collections::HashSet::new();
        for pair in &pairs {
            let priority = pair.priority.unwrap_or_default();
            if !(1..=RULE_PRIORITY_MAX).contains(&priority) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{priority}' at 'rulePriorities.member.priority' failed to satisfy constraint: Member must have value between 1 and {RULE_PRIORITY_MAX}"
                )));
            }
            if !requested.insert(priority) {
                return Err(error(
                    "PriorityInUseException",
                    format!("Priority '{priority}' is given to more than one rule"),
                ));
            }
        }
        let rules = change(
            &**self.store(),
            |state| {
                let mut touched = Vec::new();
                for pair in &pairs {
                    let arn = pair.rule_arn.clone().unwrap_or_default();
                    let (name, index, which) = self
                        .find_any_rule(state, &arn)
                        .ok_or_else(|| rule_not_found(&arn))?;
                    let RuleRef::At(at) = which else {
                        return Err(error(
                            "OperationNotPermittedException",
                            "Default rule priority cannot be modified",
                        ));
                    };
                    if let Some(balancer) = state.load_balancers.get_mut(&name) {
                        balancer.listeners[index].rules[at].priority =
                            pair.priority.unwrap_or_default() as u32;
                    }
                    touched.push((name, index, at));
                }
                for (name, index, _) in &touched {
                    let listener = &state.load_balancers[name].listeners[*index];
                    let mut seen = std::collections::HashSet::new();
                    for rule in &listener.rules {
                        if !seen.insert(rule.priority) {
                            return Err(error(
                                "PriorityInUseException",
                                format!("Priority '{}' is currently in use", rule.priority),
                            ));
                        }
                    }
                }
                Ok(touched
                    .iter()
                    .map(|(name, index, at)| {
                        let balancer = &state.load_balancers[name];
                        self.describe_rule(balancer, &balancer.listeners[*index], RuleRef::At(*at))
                    })
                    .collect::<Vec<_>>())
            },
            |state| self.check(state),
        )
        .await?;
        Ok(SetRulePrioritiesOutput { rules: Some(rules) })
    }
}
