//! The evaluator against `fixtures/evaluate.json`: each request of each group
//! is built as the edge would build it, decided, and the decision (and where
//! given, the denial message) compared with the fixture's.

mod support;

use flotilla_iam_policy::{
    denial_message, evaluate, evaluate_assume_role, parse_date_ms, Allowed, Decision, Denied,
    PolicyKind, PolicyType, PrincipalPolicies, RequestContext,
};
use serde_json::Value;
use support::{fixture, policy, principal, strings};

const DEFAULT_TIME: &str = "2024-05-01T12:00:00Z";

fn render(decision: &Decision) -> String {
    let kind = |policy_type: PolicyType| match policy_type {
        PolicyType::Identity => "identity",
        PolicyType::PermissionsBoundary => "boundary",
        PolicyType::Session => "session",
        PolicyType::Resource => "resource",
    };
    match decision {
        Decision::Allow(Allowed::Root) => "allow:root".to_string(),
        Decision::Allow(Allowed::Statement(s)) => {
            let which = s
                .sid
                .as_deref()
                .map(str::to_string)
                .unwrap_or_else(|| s.statement_index.to_string());
            format!("allow:{}#{which}", kind(s.policy_type))
        }
        Decision::Deny(Denied::Explicit(s)) => format!("deny:explicit:{}", kind(s.policy_type)),
        Decision::Deny(Denied::NoIdentityPolicyAllows) => "deny:no-identity".to_string(),
        Decision::Deny(Denied::NoPermissionsBoundaryAllows) => "deny:no-boundary".to_string(),
        Decision::Deny(Denied::NoSessionPolicyAllows) => "deny:no-session".to_string(),
        Decision::Deny(Denied::NoTrustPolicyAllows) => "deny:no-trust".to_string(),
        Decision::Deny(Denied::RootCannotAssumeRoles) => "deny:root-assume".to_string(),
    }
}

fn tags(value: Option<&Value>) -> Vec<(String, String)> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn context(group: &Value, request: &Value) -> RequestContext {
    let principal = principal(request.get("principal").or_else(|| group.get("principal")));
    let time = request
        .get("time")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_TIME);
    let now_ms = parse_date_ms(time).expect("a fixture time");
    let action = request["action"].as_str().expect("an action");
    let resource = request
        .get("resource")
        .and_then(Value::as_str)
        .unwrap_or("*");
    let mut context = RequestContext::new(principal, action, resource, now_ms);
    if let Some(region) = request.get("region").and_then(Value::as_str) {
        context = context.with_requested_region(region);
    }
    if let Some(ip) = request.get("source_ip").and_then(Value::as_str) {
        context = context.with_source_ip(ip);
    }
    if let Some(secure) = request.get("secure_transport").and_then(Value::as_bool) {
        context = context.with_secure_transport(secure);
    }
    if let Some(mfa) = request.get("mfa").and_then(Value::as_bool) {
        context = context.with_multi_factor_auth_present(mfa);
    }
    let principal_tags = tags(request.get("principal_tags"));
    let resource_tags = tags(request.get("resource_tags"));
    let request_tags = tags(request.get("request_tags"));
    context = context
        .with_principal_tags(principal_tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .with_resource_tags(resource_tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if !request_tags.is_empty() {
        context =
            context.with_request_tags(request_tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    for (key, values) in request
        .get("keys")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        context.set(key, strings(values));
    }
    context
}

fn policies(group: &Value, request: &Value) -> PrincipalPolicies {
    let identity = request.get("identity").or_else(|| group.get("identity"));
    PrincipalPolicies {
        identity: identity
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(i, p)| policy(p, PolicyKind::Inline, &format!("identity-{i}")))
                    .collect()
            })
            .unwrap_or_default(),
        permissions_boundary: group
            .get("boundary")
            .map(|p| policy(p, PolicyKind::Managed, "boundary")),
        session: group.get("session").and_then(Value::as_array).map(|list| {
            list.iter()
                .enumerate()
                .map(|(i, p)| policy(p, PolicyKind::Session, &format!("session-{i}")))
                .collect()
        }),
    }
}

#[test]
fn evaluation_fixtures() {
    let cases = fixture("evaluate.json");
    let mut failures = Vec::new();
    let mut count = 0;
    for group in cases["groups"].as_array().expect("groups") {
        let group_name = group["name"].as_str().unwrap_or_default();
        let resource_policy = group
            .get("resource_policy")
            .map(|p| policy(p, PolicyKind::Resource, "resource"));
        let trust = group
            .get("trust")
            .map(|p| policy(p, PolicyKind::Trust, "trust"));
        for request in group["requests"].as_array().expect("requests") {
            count += 1;
            let name = request["name"].as_str().unwrap_or_default();
            let context = context(group, request);
            let policies = policies(group, request);
            let decision = match &trust {
                Some(trust) => evaluate_assume_role(&context, Some(&policies), trust),
                None => evaluate(&context, &policies, resource_policy.as_deref()),
            };
            let got = render(&decision);
            let expected = request["expect"].as_str().unwrap_or_default();
            if got != expected {
                failures.push(format!(
                    "{group_name} / {name}: expected {expected}, got {got}"
                ));
                continue;
            }
            if let (Some(message), Decision::Deny(denied)) =
                (request.get("message").and_then(Value::as_str), &decision)
            {
                let rendered = denial_message(&context, denied);
                if rendered != message {
                    failures.push(format!("{group_name} / {name}: message\n  expected {message}\n  got      {rendered}"));
                }
            }
        }
    }
    assert!(count >= 150, "only {count} cases");
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
