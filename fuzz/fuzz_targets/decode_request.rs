//! Request decoding, the first thing the edge does with bytes from the
//! network after the signature check: `EcsRequest::decode` for every operation
//! of the model, and the generic `decode_json` beneath it, must answer
//! `Ok` or `Err` for any input and never panic.
//!
//! Input layout: the first byte picks the operation (modulo the number of
//! operations), the rest is the request body.

#![no_main]

use std::sync::OnceLock;

use flotilla_types::ecs::EcsRequest;
use libfuzzer_sys::fuzz_target;

/// The generated wire types: the list of operations is read from their
/// `decode` match, so a regenerated model is fuzzed without editing this file.
const GENERATED: &str = include_str!("../../crates/types/src/ecs/generated.rs");

fn operations() -> &'static [&'static str] {
    static OPERATIONS: OnceLock<Vec<&'static str>> = OnceLock::new();
    OPERATIONS.get_or_init(|| {
        let start = GENERATED
            .find("pub fn decode(operation: &str")
            .expect("generated.rs has EcsRequest::decode");
        let end = start
            + GENERATED[start..]
                .find("_ => return None")
                .expect("EcsRequest::decode ends with a catch-all arm");
        let operations: Vec<&'static str> = GENERATED[start..end]
            .lines()
            .filter_map(|line| line.trim().strip_prefix('"')?.split_once("\" =>"))
            .map(|(name, _)| name)
            .collect();
        assert!(
            !operations.is_empty(),
            "no operations found in EcsRequest::decode"
        );
        operations
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let operations = operations();
    let operation = operations[usize::from(selector) % operations.len()];
    if EcsRequest::decode(operation, body).is_none() {
        panic!("{operation} is in the model but EcsRequest::decode does not know it");
    }
    // The generic decoder beneath, on the same bytes. (A round-trip check
    // here found that serde_json's default float parsing can be one ulp off;
    // see README.md. The target checks only that nothing panics.)
    let _ = flotilla_types::decode_json::<serde_json::Value>(body);
});
