//! The Query protocol's request decoding, which reads an unauthenticated
//! caller's bytes before any handler runs: `Form::parse` on the body, then
//! `query::decode` against a real service model (lists, maps, nested
//! structures, timestamps), then the generated STS types from the value.
//! Each must answer `Ok` or `Err` for any input and never panic, and a form
//! that decodes must write back as XML without panicking.
//!
//! Input layout: the first byte picks the model (STS, ELBv2, IAM); the rest
//! is the form body.

#![no_main]

use flotilla_protocol::{form, query, xml, ServiceModel};
use libfuzzer_sys::fuzz_target;

const MODELS: [&ServiceModel; 3] = [
    &flotilla_aws::sts::MODEL,
    &flotilla_aws::elbv2::MODEL,
    &flotilla_aws::iam::MODEL,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let model = MODELS[usize::from(selector) % MODELS.len()];
    let Ok(parsed) = form::Form::parse(body, &form::LIMITS) else {
        return;
    };
    let Ok((operation, value)) = query::decode(model, &parsed, &form::LIMITS) else {
        return;
    };
    if model.name == "sts" {
        let decoded = flotilla_aws::sts::StsRequest::from_value(operation.name, value.clone());
        assert!(decoded.is_some(), "{} is in the model but not in StsRequest", operation.name);
    }
    // The input shape written as if it were an output: the XML writer must
    // take any value the decoder makes.
    let echo = flotilla_protocol::Operation {
        name: operation.name,
        input: None,
        output: operation.input,
        result_wrapper: None,
    };
    let _ = xml::response(model, &echo, &value, "request-id");
});
