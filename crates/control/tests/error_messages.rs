//! Every user-facing error the control plane answers, pinned word for word.
//!
//! `error_messages.json` holds a setup (requests that make a cluster, task
//! definitions, a container instance and a service) and cases: an operation,
//! its request (or a raw body), and the code and message it must answer.
//! Each case runs here against the control plane on the in-memory store,
//! through `EcsRequest::decode` and `Ecs::handle` as the edge calls them;
//! `tests/e2e/test_error_messages.py` runs the same table against a real
//! server with signed requests and checks every code against botocore's
//! model of the operation. A message changed on purpose is changed in the
//! table: `FLOTILLA_BLESS_ERRORS=1` rewrites it with what the code answers
//! now, for review in the diff.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flotilla_control::{Caller, Clock, Ecs, IdSource};
use flotilla_store::MemoryStore;
use flotilla_types::arn::Scope;
use flotilla_types::ecs::EcsRequest;
use flotilla_types::ApiError;
use serde_json::Value;

const TABLE: &str = "tests/error_messages.json";

struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        1_700_000_000_000
    }
}

struct CountingIds(AtomicU64);

impl IdSource for CountingIds {
    fn uuid(&self) -> String {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }
}

fn caller() -> Caller {
    Caller {
        access_key_id: "test".to_owned(),
        principal_arn: "arn:aws:iam::000000000000:root".to_owned(),
    }
}

/// `${NAME}` replaced by what the setup captured.
fn substitute(text: &str, captured: &BTreeMap<String, String>) -> String {
    captured
        .iter()
        .fold(text.to_owned(), |text, (name, value)| {
            text.replace(&format!("${{{name}}}"), value)
        })
}

fn body_of(case: &Value, captured: &BTreeMap<String, String>) -> String {
    let body = match &case["body"] {
        Value::String(raw) => raw.clone(),
        _ => case["request"].to_string(),
    };
    substitute(&body, captured)
}

async fn call(ecs: &Ecs, operation: &str, body: &str) -> Result<Value, ApiError> {
    let request = match EcsRequest::decode(operation, body.as_bytes()) {
        None => {
            return Err(ApiError::unknown_operation(&format!(
                "{}.{operation}",
                flotilla_types::ecs::TARGET_PREFIX
            )))
        }
        Some(decoded) => decoded?,
    };
    let response = ecs.handle(&caller(), request).await?;
    Ok(serde_json::to_value(response).expect("responses serialize"))
}

#[tokio::test]
async fn every_error_message_is_pinned() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE);
    let text = std::fs::read_to_string(&path).expect("the table");
    let mut table: Value = serde_json::from_str(&text).expect("the table is JSON");
    let ecs = Ecs::new(
        Arc::new(MemoryStore::new()),
        Scope::new("us-east-1", "000000000000"),
        Arc::new(FixedClock),
        Arc::new(CountingIds(AtomicU64::new(1))),
    );
    let mut captured = BTreeMap::new();
    for step in table["setup"].as_array().expect("setup") {
        let operation = step["operation"].as_str().expect("operation");
        let response = call(&ecs, operation, &body_of(step, &captured))
            .await
            .unwrap_or_else(|error| panic!("setup {operation}: {error}"));
        for (name, pointer) in step["capture"].as_object().into_iter().flatten() {
            let pointer = format!("/{}", pointer.as_str().expect("path").replace('.', "/"));
            let value = response
                .pointer(&pointer)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("setup {operation} answered no {pointer}: {response}"));
            captured.insert(name.clone(), value.to_owned());
        }
    }
    let bless = std::env::var_os("FLOTILLA_BLESS_ERRORS").is_some();
    let mut mismatches = Vec::new();
    for case in table["cases"].as_array_mut().expect("cases") {
        let operation = case["operation"].as_str().expect("operation").to_owned();
        let body = body_of(case, &captured);
        let (code, message) = match call(&ecs, &operation, &body).await {
            Ok(response) => ("(none)".to_owned(), response.to_string()),
            Err(error) => (error.code.to_owned(), error.message),
        };
        let expected_code = case["code"].as_str().unwrap_or_default();
        let expected = substitute(case["message"].as_str().unwrap_or_default(), &captured);
        if (code.as_str(), message.as_str()) != (expected_code, expected.as_str()) {
            mismatches.push(format!(
                "{operation} {body}\n  expected {expected_code}: {expected}\n  answered {code}: {message}"
            ));
            if bless {
                let pinned = captured.iter().fold(message, |text, (name, value)| {
                    text.replace(value.as_str(), &format!("${{{name}}}"))
                });
                case["code"] = Value::String(code);
                case["message"] = Value::String(pinned);
            }
        }
    }
    if bless && !mismatches.is_empty() {
        let text = serde_json::to_string_pretty(&table).expect("serializes") + "\n";
        std::fs::write(&path, text).expect("rewrites the table");
    }
    assert!(
        mismatches.is_empty(),
        "{} of the pinned errors changed:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
