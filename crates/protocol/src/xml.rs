//! XML responses and errors of the Query protocol, in the layout botocore's
//! query parser reads:
//!
//! ```text
//! <GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
//!   <GetCallerIdentityResult><Account>…</Account>…</GetCallerIdentityResult>
//!   <ResponseMetadata><RequestId>…</RequestId></ResponseMetadata>
//! </GetCallerIdentityResponse>
//! ```

use std::fmt::Write as _;

use serde_json::Value;

use crate::model::{Kind, Operation, ServiceModel, ShapeId};
use crate::timestamp::format_iso8601;

/// Whether the caller or the server is at fault, as `<Type>` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Sender,
    Receiver,
}

/// An operation's response: `output` is the output shape as a JSON value
/// keyed by member names (what serde makes of the generated type).
pub fn response(
    model: &ServiceModel,
    operation: &Operation,
    output: &Value,
    request_id: &str,
) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let root = format!("{}Response", operation.name);
    out.push('<');
    out.push_str(&root);
    if let Some(namespace) = model.xml_namespace {
        out.push_str(" xmlns=\"");
        escape_into(&mut out, namespace);
        out.push('"');
    }
    out.push('>');
    if let Some(shape) = operation.output {
        match operation.result_wrapper {
            Some(wrapper) => {
                open(&mut out, wrapper);
                members(&mut out, model, shape, output);
                close(&mut out, wrapper);
            }
            None => members(&mut out, model, shape, output),
        }
    }
    out.push_str("<ResponseMetadata><RequestId>");
    escape_into(&mut out, request_id);
    out.push_str("</RequestId></ResponseMetadata>");
    close(&mut out, &root);
    out
}

/// `<ErrorResponse>` with the error's type, code and message.
pub fn error(
    model: Option<&ServiceModel>,
    fault: Fault,
    code: &str,
    message: &str,
    request_id: &str,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse");
    if let Some(namespace) = model.and_then(|model| model.xml_namespace) {
        out.push_str(" xmlns=\"");
        escape_into(&mut out, namespace);
        out.push('"');
    }
    out.push_str("><Error><Type>");
    out.push_str(match fault {
        Fault::Sender => "Sender",
        Fault::Receiver => "Receiver",
    });
    out.push_str("</Type><Code>");
    escape_into(&mut out, code);
    out.push_str("</Code><Message>");
    escape_into(&mut out, message);
    out.push_str("</Message></Error><RequestId>");
    escape_into(&mut out, request_id);
    out.push_str("</RequestId></ErrorResponse>");
    out
}

fn open(out: &mut String, name: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
}

fn close(out: &mut String, name: &str) {
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// The members of a structure, without an element around them.
fn members(out: &mut String, model: &ServiceModel, shape: ShapeId, value: &Value) {
    let (Kind::Structure { members }, Value::Object(object)) = (&model.shape(shape).kind, value)
    else {
        return;
    };
    for member in *members {
        match object.get(member.name) {
            None | Some(Value::Null) => {}
            Some(value) => element(
                out,
                model,
                member.shape,
                member.wire_name(),
                member.flattened,
                value,
            ),
        }
    }
}

fn element(
    out: &mut String,
    model: &ServiceModel,
    shape: ShapeId,
    name: &str,
    member_flattened: bool,
    value: &Value,
) {
    match &model.shape(shape).kind {
        Kind::Structure { .. } => {
            open(out, name);
            members(out, model, shape, value);
            close(out, name);
        }
        Kind::List {
            member,
            member_name,
            flattened,
        } => {
            let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
            if *flattened || member_flattened {
                for item in items {
                    element(
                        out,
                        model,
                        *member,
                        member_name.unwrap_or(name),
                        false,
                        item,
                    );
                }
            } else {
                open(out, name);
                for item in items {
                    element(
                        out,
                        model,
                        *member,
                        member_name.unwrap_or("member"),
                        false,
                        item,
                    );
                }
                close(out, name);
            }
        }
        Kind::Map {
            key,
            value: value_shape,
            key_name,
            value_name,
            flattened,
        } => {
            let Some(entries) = value.as_object() else {
                return;
            };
            let flattened = *flattened || member_flattened;
            if !flattened {
                open(out, name);
            }
            for (entry_key, entry_value) in entries {
                open(out, if flattened { name } else { "entry" });
                element(
                    out,
                    model,
                    *key,
                    key_name.unwrap_or("key"),
                    false,
                    &Value::String(entry_key.clone()),
                );
                element(
                    out,
                    model,
                    *value_shape,
                    value_name.unwrap_or("value"),
                    false,
                    entry_value,
                );
                close(out, if flattened { name } else { "entry" });
            }
            if !flattened {
                close(out, name);
            }
        }
        Kind::Timestamp => {
            open(out, name);
            match value {
                Value::Number(number) => {
                    out.push_str(&format_iso8601(number.as_f64().unwrap_or_default()));
                }
                Value::String(text) => escape_into(out, text),
                _ => {}
            }
            close(out, name);
        }
        _ => {
            open(out, name);
            match value {
                Value::String(text) => escape_into(out, text),
                Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
                Value::Number(number) => {
                    let _ = write!(out, "{number}");
                }
                _ => {}
            }
            close(out, name);
        }
    }
}

/// Escapes text for element content and attribute values alike.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                out.push('\u{FFFD}');
            }
            c => out.push(c),
        }
    }
}
