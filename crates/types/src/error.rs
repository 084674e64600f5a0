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
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all, or truncated.
    #[error("malformed request body: {message}")]
    Malformed { message: String },
    /// JSON, but a member has the wrong type.
    #[error("{message} at '{path}'")]
    WrongType { path: String, message: String },
    /// A member of an enumerated type holds a value outside the set.
    #[error("invalid value at '{path}': {message}")]
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
        match error.classify() {
            Category::Data if message.starts_with("unknown variant") => {
                DecodeError::InvalidValue { path, message }
            }
            Category::Data => DecodeError::WrongType { path, message },
            Category::Syntax | Category::Eof | Category::Io => DecodeError::Malformed { message },
        }
    }
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
