//! What the fixture-driven tests share: reading policies and principals as
//! the fixtures write them.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use flotilla_iam_policy::{managed, CompiledPolicy, PolicyKind, Principal};
use serde_json::Value;

pub const ACCOUNT: &str = "123456789012";

pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn seed_text(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seeds")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A policy as a fixture writes it: a document, `managed:NAME` or `seed:FILE`.
pub fn policy(value: &Value, kind: PolicyKind, name: &str) -> Arc<CompiledPolicy> {
    match value {
        Value::String(reference) if reference.starts_with("managed:") => {
            let wanted = &reference["managed:".len()..];
            let policy = managed::AWS_MANAGED_POLICIES
                .iter()
                .find(|p| p.name == wanted)
                .unwrap_or_else(|| panic!("no managed policy {wanted}"));
            managed::compiled(&policy.arn()).unwrap_or_else(|| panic!("{wanted} does not compile"))
        }
        Value::String(reference) if reference.starts_with("seed:") => {
            let text = seed_text(&reference["seed:".len()..]);
            Arc::new(
                CompiledPolicy::parse(name, &text, kind)
                    .unwrap_or_else(|e| panic!("{reference}: {e}")),
            )
        }
        document => Arc::new(
            CompiledPolicy::parse(name, &document.to_string(), kind)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{document}")),
        ),
    }
}

/// `{"user": NAME}`, `{"role": NAME, "session": NAME}`, `{"root": true}`,
/// `{"service": NAME}`; a user `alice` when absent.
pub fn principal(value: Option<&Value>) -> Principal {
    let Some(value) = value else {
        return Principal::user(ACCOUNT, "/", "alice", "AIDAALICE");
    };
    let text = |key: &str| value.get(key).and_then(Value::as_str);
    if value.get("root").is_some() {
        Principal::root(ACCOUNT)
    } else if let Some(service) = text("service") {
        Principal::service(service)
    } else if let Some(role) = text("role") {
        let session = text("session").unwrap_or("session");
        Principal::assumed_role(
            ACCOUNT,
            "/",
            role,
            &format!("AROA{}", role.to_uppercase()),
            session,
        )
    } else {
        let user = text("user").unwrap_or("alice");
        Principal::user(ACCOUNT, "/", user, &format!("AIDA{}", user.to_uppercase()))
    }
}

pub fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        other => vec![other.to_string()],
    }
}
