use std::path::PathBuf;

/// What the store refuses or fails at.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("log group {group} does not exist")]
    GroupNotFound { group: String },
    #[error("log stream {stream} does not exist in log group {group}")]
    StreamNotFound { group: String, stream: String },
    #[error("log group {group} already exists")]
    GroupExists { group: String },
    #[error("log stream {stream} already exists in log group {group}")]
    StreamExists { group: String, stream: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the segment writer has stopped")]
    WriterStopped,
    #[error("metadata in {path} is unreadable: {reason}")]
    Metadata { path: PathBuf, reason: String },
}

impl LogsError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        LogsError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}
