//! Policy documents, which IAM users write and the IAM API receives as text:
//! `document::parse` must answer `Ok` or `Err` for any input and never panic,
//! and a document it accepts must compile and be evaluated against requests
//! of every kind of principal without panicking.
//!
//! Input layout: the first byte picks the kind of policy (managed, inline,
//! session, trust, resource), the rest is the document.

#![no_main]

use std::sync::Arc;

use flotilla_iam_policy::{
    denial_message, document, evaluate, evaluate_assume_role, CompiledPolicy, Decision, PolicyKind, Principal,
    PrincipalPolicies, RequestContext,
};
use libfuzzer_sys::fuzz_target;

const KINDS: &[PolicyKind] =
    &[PolicyKind::Managed, PolicyKind::Inline, PolicyKind::Session, PolicyKind::Trust, PolicyKind::Resource];
const NOW_MS: i64 = 1_714_564_800_000;

fn requests() -> Vec<RequestContext> {
    let principals = [
        Principal::user("123456789012", "/", "alice", "AIDAALICE"),
        Principal::assumed_role("123456789012", "/", "deployer", "AROADEPLOYER", "ci"),
        Principal::service("ecs-tasks.amazonaws.com"),
        Principal::root("123456789012"),
        Principal::anonymous(),
    ];
    principals
        .into_iter()
        .map(|principal| {
            RequestContext::new(principal, "ecs:RunTask", "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1", NOW_MS)
                .with_source_ip("203.0.113.9")
                .with_request_tags([("env", "dev")])
                .with_principal_tags([("team", "blue")])
                .with("ecs:cluster", vec!["arn:aws:ecs:us-east-1:123456789012:cluster/dev".to_string()])
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else { return };
    let kind = KINDS[usize::from(*first) % KINDS.len()];
    let Ok(text) = std::str::from_utf8(body) else { return };
    let Ok(parsed) = document::parse(text, kind) else { return };
    let policy = Arc::new(CompiledPolicy::compile("fuzzed", &parsed));
    let policies = PrincipalPolicies {
        identity: vec![Arc::clone(&policy)],
        permissions_boundary: Some(Arc::clone(&policy)),
        session: Some(vec![Arc::clone(&policy)]),
    };
    for request in requests() {
        for decision in [evaluate(&request, &policies, Some(&policy)), evaluate_assume_role(&request, Some(&policies), &policy)] {
            if let Decision::Deny(denied) = decision {
                let _ = denial_message(&request, &denied);
            }
        }
    }
});
