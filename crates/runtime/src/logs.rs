//! What a container prints, as [`crate::ContainerRuntime::follow_logs`] yields it.

use std::pin::Pin;

use futures_util::Stream;

use crate::RuntimeError;

/// A container's output, one line at a time, until it stops.
pub type LogStream<'a> = Pin<Box<dyn Stream<Item = Result<LogLine, RuntimeError>> + Send + 'a>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    Stdout,
    Stderr,
}

/// One line a container printed, without its line ending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub source: LogSource,
    /// When the engine read it, in Unix milliseconds.
    pub timestamp_ms: u64,
    pub message: String,
}

/// A line as the engine frames it with timestamps on
/// (`2026-01-02T03:04:05.123456789Z text\n`); `None` when the timestamp
/// cannot be read.
pub(crate) fn parse_timestamped(source: LogSource, bytes: &[u8]) -> Option<LogLine> {
    let space = bytes.iter().position(|b| *b == b' ')?;
    let timestamp = std::str::from_utf8(&bytes[..space]).ok()?;
    let timestamp_ms = crate::docker::parse_rfc3339_ms(timestamp)?;
    let mut text = &bytes[space + 1..];
    if let Some(rest) = text.strip_suffix(b"\n") {
        text = rest;
    }
    Some(LogLine {
        source,
        timestamp_ms,
        message: String::from_utf8_lossy(text).into_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn engine_lines_lose_their_timestamp_and_newline() {
        let line = parse_timestamped(
            LogSource::Stderr,
            b"2026-01-02T03:04:05.123456789Z hello world\n",
        )
        .unwrap();
        assert_eq!(line.source, LogSource::Stderr);
        assert_eq!(line.message, "hello world");
        assert_eq!(line.timestamp_ms % 1000, 123);
        assert_eq!(
            parse_timestamped(LogSource::Stdout, b"2026-01-02T03:04:05Z \n")
                .unwrap()
                .message,
            ""
        );
        assert!(parse_timestamped(LogSource::Stdout, b"no timestamp").is_none());
    }
}
