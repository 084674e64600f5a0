//! CloudWatch's errors as plain values: the code AWS sends (the Query
//! protocol's `Code`, e.g. `InvalidParameterValue`) and its message, worded
//! as CloudWatch words it. The edge maps the code to the wire once.

use thiserror::Error;

/// The error codes of CloudWatch's model that this crate produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidParameterValue,
    InvalidParameterCombination,
    MissingParameter,
    /// GetMetricData's validation failures (its model has no other error).
    ValidationError,
    InvalidNextToken,
    LimitExceeded,
    ResourceNotFound,
    InternalServiceFault,
}

impl ErrorCode {
    /// The code as the Query protocol spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParameterValue => "InvalidParameterValue",
            ErrorCode::InvalidParameterCombination => "InvalidParameterCombination",
            ErrorCode::MissingParameter => "MissingParameter",
            ErrorCode::ValidationError => "ValidationError",
            ErrorCode::InvalidNextToken => "InvalidNextToken",
            ErrorCode::LimitExceeded => "LimitExceeded",
            ErrorCode::ResourceNotFound => "ResourceNotFound",
            ErrorCode::InternalServiceFault => "InternalServiceFault",
        }
    }
}

/// A refused request: nothing was changed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{code:?}: {message}")]
pub struct CloudWatchError {
    pub code: ErrorCode,
    pub message: String,
}

impl CloudWatchError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CloudWatchError {
            code,
            message: message.into(),
        }
    }

    /// CloudWatch's most common wording: `The value X for parameter P is invalid.`
    pub fn invalid_value(value: impl std::fmt::Display, parameter: &str) -> Self {
        Self::new(
            ErrorCode::InvalidParameterValue,
            format!("The value {value} for parameter {parameter} is invalid."),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, message)
    }

    pub fn combination(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterCombination, message)
    }

    pub fn missing(parameter: &str) -> Self {
        Self::new(
            ErrorCode::MissingParameter,
            format!("The parameter {parameter} is required."),
        )
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }
}

/// A failure of the store's disk, not of the request.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("metrics storage at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics storage at {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: String,
        offset: u64,
        reason: String,
    },
}

impl StorageError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
