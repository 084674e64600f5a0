//! Error bodies of the AWS JSON protocols (1.0 and 1.1 alike).

/// `{"__type":"Code","message":"..."}`, as botocore's JSON parser reads it.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::json!({ "__type": code, "message": message })
        .to_string()
        .into_bytes()
}

/// The `x-amzn-query-error` header value (`Code;Sender`) of services that
/// moved from Query to JSON and keep their old error codes for old clients.
pub fn query_error_header(code: &str, sender_fault: bool) -> String {
    format!(
        "{code};{}",
        if sender_fault { "Sender" } else { "Receiver" }
    )
}
