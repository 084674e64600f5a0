//! Following a container's output from the engine's own json-file log, for
//! [`crate::ContainerRuntime::follow_logs`] on Docker. The engine's logs API
//! sends every line as its own HTTP chunk, a wake-up and a read per line;
//! the file is read in large blocks instead. Used when the container logs
//! with json-file and the agent can read the file; otherwise the API is.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::logs::{LogLine, LogSource};
use crate::RuntimeError;

/// Largest read of the log file.
const READ_BYTES_MAX: usize = 256 * 1024;
/// How often the end of the file is looked past for new lines.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A line longer than this without a newline is cut (the engine splits
/// lines at 16 KiB, so only a damaged file gets here).
const LINE_BYTES_MAX: usize = 1024 * 1024;

/// One record of the json-file driver.
#[derive(serde::Deserialize)]
struct Record {
    log: String,
    stream: String,
    time: String,
}

pub(crate) struct Tail {
    path: String,
    file: tokio::fs::File,
    /// Bytes read past the last complete record.
    carry: Vec<u8>,
    /// A line the engine split (no newline yet), by stream.
    partial: [Option<LogLine>; 2],
    since_ms: Option<u64>,
    pub(crate) pending: VecDeque<LogLine>,
}

impl Tail {
    pub(crate) async fn open(path: &str, since_ms: Option<u64>) -> std::io::Result<Tail> {
        Ok(Tail {
            path: path.to_owned(),
            file: tokio::fs::File::open(path).await?,
            carry: Vec::new(),
            partial: [None, None],
            since_ms,
            pending: VecDeque::new(),
        })
    }

    /// Reads what was appended since the last read into `pending`; false at
    /// the end of the file.
    pub(crate) async fn read_more(&mut self) -> Result<bool, RuntimeError> {
        let mut block = vec![0u8; READ_BYTES_MAX];
        let read = self
            .file
            .read(&mut block)
            .await
            .map_err(|error| io_error(&self.path, &error))?;
        if read == 0 {
            self.reopen_if_rotated().await?;
            return Ok(false);
        }
        self.carry.extend_from_slice(&block[..read]);
        let mut start = 0;
        while let Some(end) = self.carry[start..].iter().position(|b| *b == b'\n') {
            let record = &self.carry[start..start + end];
            start += end + 1;
            if let Ok(record) = serde_json::from_slice::<Record>(record) {
                self.take(record);
            }
        }
        self.carry.drain(..start);
        if self.carry.len() > LINE_BYTES_MAX {
            self.carry.clear();
        }
        Ok(true)
    }

    fn take(&mut self, record: Record) {
        let (source, slot) = match record.stream.as_str() {
            "stderr" => (LogSource::Stderr, 1),
            _ => (LogSource::Stdout, 0),
        };
        let Some(timestamp_ms) = crate::docker::parse_rfc3339_ms(&record.time) else {
            return;
        };
        let (text, complete) = match record.log.strip_suffix('\n') {
            Some(text) => (text, true),
            None => (record.log.as_str(), false),
        };
        let line = match self.partial[slot].take() {
            Some(mut line) => {
                line.message.push_str(text);
                line
            }
            None => LogLine {
                source,
                timestamp_ms,
                message: text.to_owned(),
            },
        };
        if !complete {
            self.partial[slot] = Some(line);
            return;
        }
        if self.since_ms.is_none_or(|since| line.timestamp_ms >= since) {
            self.pending.push_back(line);
        }
    }

    /// The engine rotated the file (a `max-size` option): carry on in the new one.
    async fn reopen_if_rotated(&mut self) -> Result<(), RuntimeError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ours = self
                .file
                .metadata()
                .await
                .map_err(|error| io_error(&self.path, &error))?;
            if let Ok(current) = tokio::fs::metadata(&self.path).await {
                if current.ino() != ours.ino() {
                    self.file = tokio::fs::File::open(&self.path)
                        .await
                        .map_err(|error| io_error(&self.path, &error))?;
                }
            }
        }
        Ok(())
    }
}

fn io_error(path: &str, error: &std::io::Error) -> RuntimeError {
    RuntimeError::Engine {
        operation: "follow logs",
        reason: format!("cannot read {path}: {error}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_become_lines_split_ones_joined_and_early_ones_skipped() {
        let path =
            std::env::temp_dir().join(format!("flotilla-json-file-{}.log", std::process::id()));
        let records = [
            r#"{"log":"before\n","stream":"stdout","time":"2026-01-02T03:04:04.000000000Z"}"#,
            r#"{"log":"hello\n","stream":"stdout","time":"2026-01-02T03:04:05.100000000Z"}"#,
            r#"{"log":"half ","stream":"stderr","time":"2026-01-02T03:04:05.200000000Z"}"#,
            r#"{"log":"and half\n","stream":"stderr","time":"2026-01-02T03:04:05.300000000Z"}"#,
            r#"{"log":"not yet complete"#,
        ];
        std::fs::write(&path, records.join("\n")).unwrap();
        let since = crate::docker::parse_rfc3339_ms("2026-01-02T03:04:05Z");
        let mut tail = Tail::open(path.to_str().unwrap(), since).await.unwrap();
        assert!(tail.read_more().await.unwrap());
        assert!(!tail.read_more().await.unwrap());
        let lines: Vec<_> = tail.pending.drain(..).collect();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0].message, "hello");
        assert_eq!(lines[1].message, "half and half");
        assert_eq!(lines[1].source, LogSource::Stderr);
        assert_eq!(tail.carry, br#"{"log":"not yet complete"#);
    }
}
