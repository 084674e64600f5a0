//! Where snapshots come from. Today a file (JSON or YAML) watched for
//! changes and re-read on SIGHUP; the control plane will push the same
//! [`Snapshot`] type over its own transport, applied the same way.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::Snapshot;
use crate::plane::DataPlane;

/// How often the file's modification time and size are looked at.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A configuration file larger than this is refused unread.
pub const CONFIG_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {bytes} bytes, more than the limit of {CONFIG_FILE_MAX_BYTES}")]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error("parsing {path} as JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("parsing {path} as YAML: {message}")]
    Yaml { path: PathBuf, message: String },
}

/// Reads a snapshot: YAML for `.yaml`/`.yml`, JSON otherwise.
pub fn read_file(path: &Path) -> Result<Snapshot, SourceError> {
    let read = |source| SourceError::Read {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(read)?.len();
    if bytes > CONFIG_FILE_MAX_BYTES {
        return Err(SourceError::TooLarge {
            path: path.to_owned(),
            bytes,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse(path, &text)
}

/// Parses a snapshot's text, naming the field that is wrong.
pub fn parse(path: &Path, text: &str) -> Result<Snapshot, SourceError> {
    let yaml = matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml")
    );
    if yaml {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| SourceError::Yaml {
            path: path.to_owned(),
            message: error.to_string(),
        })
    } else {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| SourceError::Json {
            path: path.to_owned(),
            message: error.to_string(),
        })
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Reads the file and applies it; an unversioned file gets the next version.
/// Logs what changed, or why the file was refused (the previous snapshot
/// keeps serving).
pub async fn load_and_apply(plane: &DataPlane, path: &Path) -> bool {
    let mut snapshot = match read_file(path) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            tracing::error!(%error, "configuration refused; still serving version {}", plane.version());
            return false;
        }
    };
    if snapshot.version == 0 {
        snapshot.version = plane.version() + 1;
    }
    match plane.apply(snapshot).await {
        Ok(report) => {
            tracing::info!(path = %path.display(), "configuration applied: {report}");
            true
        }
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "configuration refused; still serving version {}", plane.version());
            false
        }
    }
}

/// Applies the file again whenever it changes or `reload` fires (the
/// caller applied it once already).
pub async fn follow_file(
    plane: DataPlane,
    path: PathBuf,
    mut reload: tokio::sync::mpsc::Receiver<()>,
) {
    let mut last = stamp(&path);
    let mut poll = tokio::time::interval(FILE_POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = poll.tick() => false,
            signal = reload.recv() => match signal {
                Some(()) => true,
                None => return,
            },
        };
        let now = stamp(&path);
        if forced || now != last {
            last = now;
            load_and_apply(&plane, &path).await;
        }
    }
}
