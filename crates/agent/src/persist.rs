//! Durable JSON files in the data directory: each write goes to a temporary
//! file that is synced and then renamed over the old one, so a crash leaves
//! either the old or the new content, never a torn file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest state file the agent reads back; task records are kilobytes, so a
/// bigger file is damage, not data.
pub const STATE_FILE_MAX_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is larger than {STATE_FILE_MAX_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("background write of {path} failed: {reason}")]
    Join { path: PathBuf, reason: String },
}

/// Where and how state files are written.
#[derive(Clone, Debug)]
pub struct Persistence {
    /// Whether writes are synced to disk before they count.
    pub durable: bool,
    /// Whether task records and outbox entries are written at all. They are
    /// what a restarted agent re-adopts and re-sends; a simulated instance's
    /// "containers" die with its process, so it keeps them in memory only
    /// (creating and deleting a few files per task in a thousand instances
    /// cost more than everything else they do).
    pub task_files: bool,
}

impl Persistence {
    /// A real host: every state file synced before it counts.
    pub const DURABLE: Self = Self {
        durable: true,
        task_files: true,
    };
    /// A simulated host: its identity on disk, unsynced; task state in memory.
    pub const SIMULATED: Self = Self {
        durable: false,
        task_files: false,
    };

    /// Writes a task record or outbox entry, when those are kept on disk.
    /// Returns whether it was written.
    pub async fn write_task_file<T: Serialize>(
        &self,
        path: &Path,
        value: &T,
    ) -> Result<bool, PersistError> {
        if !self.task_files {
            return Ok(false);
        }
        self.write_json(path, value).await.map(|()| true)
    }

    /// Removes a task record or outbox entry written by [`Self::write_task_file`].
    pub async fn remove_task_file(&self, path: &Path) -> Result<(), PersistError> {
        if !self.task_files {
            return Ok(());
        }
        self.remove(path).await
    }

    /// Writes `value` as JSON to `path` atomically, off the async threads.
    pub async fn write_json<T: Serialize>(
        &self,
        path: &Path,
        value: &T,
    ) -> Result<(), PersistError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| PersistError::Decode {
            path: path.to_owned(),
            source,
        })?;
        let durable = self.durable;
        let owned = path.to_owned();
        tokio::task::spawn_blocking(move || write_atomic(&owned, &bytes, durable))
            .await
            .map_err(|error| PersistError::Join {
                path: path.to_owned(),
                reason: error.to_string(),
            })?
    }

    pub async fn remove(&self, path: &Path) -> Result<(), PersistError> {
        match tokio::fs::remove_file(path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(PersistError::Write {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), PersistError> {
    let error = |source| PersistError::Write {
        path: path.to_owned(),
        source,
    };
    let directory = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(directory).map_err(error)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    {
        let mut file = std::fs::File::create(&temporary).map_err(error)?;
        file.write_all(bytes).map_err(error)?;
        if durable {
            file.sync_all().map_err(error)?;
        }
    }
    std::fs::rename(&temporary, path).map_err(error)?;
    if durable {
        // The rename itself is durable only once the directory is synced.
        std::fs::File::open(directory)
            .and_then(|dir| dir.sync_all())
            .map_err(error)?;
    }
    Ok(())
}

/// Reads a JSON file written by [`write_atomic`]; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, PersistError> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    if metadata.len() > STATE_FILE_MAX_BYTES {
        return Err(PersistError::TooLarge {
            path: path.to_owned(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| PersistError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| PersistError::Decode {
            path: path.to_owned(),
            source,
        })
}

/// The `.json` files directly in `directory`, sorted by name; none when the
/// directory does not exist yet.
pub fn list_json_files(directory: &Path) -> Result<Vec<PathBuf>, PersistError> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PersistError::Read {
                path: directory.to_owned(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_reads_back() {
        let directory =
            std::env::temp_dir().join(format!("flotilla-agent-persist-{}", std::process::id()));
        let path = directory.join("nested/state.json");
        write_atomic(&path, br#"{"a":1}"#, true).unwrap();
        write_atomic(&path, br#"{"a":2}"#, false).unwrap();
        let value: Option<serde_json::Value> = read_json(&path).unwrap();
        assert_eq!(value, Some(serde_json::json!({"a": 2})));
        assert!(!directory.join("nested/state.json.tmp").exists());
        assert_eq!(
            list_json_files(&directory.join("nested")).unwrap(),
            vec![path.clone()]
        );
        let missing: Option<serde_json::Value> =
            read_json(&directory.join("missing.json")).unwrap();
        assert_eq!(missing, None);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
