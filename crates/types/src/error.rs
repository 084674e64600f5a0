use std::fmt;

/// An error as AWS JSON clients parse it: a code (`__type`), a message and an
/// HTTP status. Built in the layers below the edge, rendered only by the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
    pub status: u16,
}

impl ApiError {
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status,
        }
    }

    /// The caller did something wrong: ECS's catch-all client error.
    pub fn client(message: impl Into<String>) -> Self {
        Self::new("ClientException", 400, message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", 400, message)
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self::new("ServerException", 500, message)
    }

    pub fn cluster_not_found() -> Self {
        Self::new("ClusterNotFoundException", 400, "Cluster not found.")
    }

    pub fn resource_not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", 400, message)
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new("SerializationException", 400, message)
    }

    pub fn unknown_operation(target: &str) -> Self {
        Self::new(
            "UnknownOperationException",
            400,
            format!("unknown operation {target}"),
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Why a request body could not be turned into a typed request.
///
/// The messages are AWS's own (its request validation's "1 validation error
/// detected: ..." and its deserializer's "... can not be converted to ..."),
/// with members named as AWS names them (`containerDefinitions.1.member.cpu`),
/// never serde's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all, or truncated.
    #[error("The request body is not valid JSON: {message}")]
    Malformed { message: String },
    /// JSON, but a member has the wrong type.
    #[error("{message}{}", at_member(.path))]
    WrongType { path: String, message: String },
    /// A member of an enumerated type holds a value outside the set.
    #[error("1 validation error detected: {message}")]
    InvalidValue { path: String, message: String },
}

impl DecodeError {
    pub(crate) fn from_serde(path: String, error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let message = error.to_string();
        // serde appends " at line L column C"; the member path says more.
        let message = match message.rfind(" at line ") {
            Some(at) if error.classify() == Category::Data => message[..at].to_owned(),
            _ => message,
        };
        // The body as a whole is "." to serde_path_to_error.
        let path = aws_member_path(path.trim_start_matches('.'));
        match error.classify() {
            Category::Data => match unknown_variant(&message) {
                Some((value, allowed)) => DecodeError::InvalidValue {
                    message: format!(
                        "Value '{value}' at '{path}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                        allowed.join(", ")
                    ),
                    path,
                },
                None => DecodeError::WrongType {
                    message: conversion_message(&message),
                    path,
                },
            },
            Category::Syntax | Category::Eof | Category::Io => DecodeError::Malformed { message },
        }
    }
}

/// " at 'member'", or nothing for the body as a whole.
fn at_member(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at '{path}'")
    }
}

/// A member path as serde_path_to_error writes it (`containerDefinitions[0].cpu`)
/// in AWS's notation: list items counted from 1 and followed by `member`
/// (`containerDefinitions.1.member.cpu`).
fn aws_member_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find(']')
            .map(|close| (close, after[..close].parse::<usize>()))
        {
            Some((close, Ok(index))) => {
                out.push_str(&format!(".{}.member", index.saturating_add(1)));
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The value and the allowed set of serde's "unknown variant `V`, expected
/// one of `A`, `B`" (or "expected `A`", "expected `A` or `B`", "there are no
/// variants").
fn unknown_variant(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown variant `")?;
    let (value, rest) = rest.split_once("`, ")?;
    let allowed = rest.split('`').skip(1).step_by(2).collect::<Vec<&str>>();
    Some((value, allowed))
}

/// serde's "invalid type: string \"x\", expected i32" in the words AWS's
/// deserializer uses for the same mistake.
fn conversion_message(message: &str) -> String {
    if message.starts_with("invalid length") && message.contains("expected struct") {
        // A list where a structure belongs: serde reads its items as the fields.
        return "Start of list found where not expected.".to_owned();
    }
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        if let Some(rest) = message.strip_prefix("invalid value: ") {
            // An integer out of the member's range.
            let found = rest.split(", expected").next().unwrap_or(rest);
            return format!("Numeric value {} out of range", found.replace('`', ""));
        }
        return message.to_owned();
    };
    let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
    let found = match found.split(' ').next().unwrap_or_default() {
        "string" => "STRING_VALUE",
        "integer" | "floating" => "NUMBER_VALUE",
        "boolean" if found.contains("true") => "TRUE_VALUE",
        "boolean" => "FALSE_VALUE",
        "map" => return "Start of structure or map found where not expected.".to_owned(),
        "sequence" => return "Start of list found where not expected.".to_owned(),
        "null" => "VALUE_NULL",
        _ => "Unexpected value",
    };
    let expected = match expected {
        "i32" | "u32" | "i16" | "u16" | "i8" | "u8" => "an Integer",
        "i64" | "u64" => "a Long",
        "f64" | "f32" => "a Double",
        "a boolean" => "a Boolean",
        "a string" => "a String",
        "a sequence" => "a List",
        "a map" => "a Map",
        variant if variant.contains("variant") => "a String",
        _ => "a Structure",
    };
    format!("{found} can not be converted to {expected}")
}

impl From<DecodeError> for ApiError {
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::InvalidValue { .. } => ApiError::invalid_parameter(error.to_string()),
            DecodeError::Malformed { .. } | DecodeError::WrongType { .. } => {
                ApiError::serialization(error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ecs::EcsRequest;

    fn message(operation: &str, body: &str) -> String {
        match EcsRequest::decode(operation, body.as_bytes()) {
            Some(Err(error)) => crate::ApiError::from(error).to_string(),
            other => panic!("{body} decoded: {other:?}"),
        }
    }

    #[test]
    fn decode_errors_use_aws_wording() {
        let cases = [
            ("RunTask", r#"{"launchType":"Fargate"}"#,
             "InvalidParameterException: 1 validation error detected: Value 'Fargate' at 'launchType' failed to satisfy constraint: Member must satisfy enum value set: [EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES]"),
            ("RegisterTaskDefinition", r#"{"containerDefinitions":[{},{"logConfiguration":{"logDriver":"x"}}]}"#,
             "InvalidParameterException: 1 validation error detected: Value 'x' at 'containerDefinitions.2.member.logConfiguration.logDriver' failed to satisfy constraint: Member must satisfy enum value set: [json-file, syslog, journald, gelf, fluentd, awslogs, splunk, awsfirelens]"),
            ("RegisterTaskDefinition", r#"{"containerDefinitions":[{"memory":"abc"}]}"#,
             "SerializationException: STRING_VALUE can not be converted to an Integer at 'containerDefinitions.1.member.memory'"),
            ("RunTask", r#"{"count":"2"}"#,
             "SerializationException: STRING_VALUE can not be converted to an Integer at 'count'"),
            ("RunTask", r#"{"cluster":5}"#,
             "SerializationException: NUMBER_VALUE can not be converted to a String at 'cluster'"),
            ("RunTask", r#"{"cluster":{}}"#,
             "SerializationException: Start of structure or map found where not expected. at 'cluster'"),
            ("RunTask", r#"{"tags":{}}"#,
             "SerializationException: Start of structure or map found where not expected. at 'tags'"),
            ("RunTask", r#"{"count":99999999999}"#,
             "SerializationException: Numeric value integer 99999999999 out of range at 'count'"),
            ("RunTask", r#"{"enableExecuteCommand":"yes"}"#,
             "SerializationException: STRING_VALUE can not be converted to a Boolean at 'enableExecuteCommand'"),
            ("RunTask", "[]", "SerializationException: Start of list found where not expected."),
            ("RunTask", "{", "SerializationException: The request body is not valid JSON: EOF while parsing an object at line 1 column 1"),
        ];
        for (operation, body, expected) in cases {
            assert_eq!(message(operation, body), expected, "{body}");
        }
    }
}
