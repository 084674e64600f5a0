//! The `awslogs` log driver, done by the agent: a container's lines are read
//! from the engine ([`ContainerRuntime::follow_logs`]) and sent to the
//! control plane's CloudWatch Logs API with signed PutLogEvents calls.
//!
//! ```text
//! start: [CreateLogGroup if awslogs-create-group] ─▶ CreateLogStream ─▶ container starts
//! follow_logs ─▶ multiline join ─▶ buffer (bounded) ─▶ batches within AWS's limits
//!             ─▶ PutLogEvents every second, or at once when a batch is full
//! container stops ─▶ stream ends ─▶ last batches sent ─▶ flushed ─▶ task reports STOPPED
//! ```
//!
//! The engine keeps the container's output in its own log (json-file), so a
//! container never waits on the shipping: in `blocking` mode the shipper
//! stops reading while its buffer is full and nothing is lost; in
//! `non-blocking` mode it reads on and drops the oldest lines beyond
//! `max-buffer-size`, as Docker's driver does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::{ContainerRuntime, LogLine};
use flotilla_types::awslogs::{self, Mode};
use flotilla_types::ecs::{ContainerDefinition, LogDriver};
use futures_util::StreamExt;
use regex::Regex;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::api::{ApiCallError, ApiClient};
use crate::backoff::backoff_delay_ms;

/// The JSON protocol's target prefix for CloudWatch Logs.
pub const LOGS_TARGET_PREFIX: &str = "Logs_20140328";
/// PutLogEvents' limits: events per call, bytes per call (each event's
/// message plus 26), one event's message, and the span of one call.
pub const BATCH_EVENTS_MAX: usize = 10_000;
pub const BATCH_BYTES_MAX: usize = 1_048_576;
pub const EVENT_OVERHEAD_BYTES: usize = 26;
pub const EVENT_MESSAGE_BYTES_MAX: usize = 262_144 - EVENT_OVERHEAD_BYTES;
pub const BATCH_SPAN_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// How long a line waits at most before it is sent (Docker's driver waits
/// 5 s; lines must reach the store within that).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Lines taken from the engine in one go; the buffer may pass its bound by
/// this many.
pub const READ_LINES_MAX: usize = 1_024;
/// Buffer of a `blocking` container: a few full batches.
pub const BLOCKING_BUFFER_BYTES_MAX: u64 = 4 * BATCH_BYTES_MAX as u64;
/// Tries of CreateLogGroup/CreateLogStream while the control plane is away.
pub const PREPARE_ATTEMPTS_MAX: u32 = 5;
/// Tries of each of a stopped container's last batches, with backoff.
pub const FINAL_FLUSH_ATTEMPTS_MAX: u32 = 10;
/// Most flush ticks a failed send waits before it is tried again.
pub const RETRY_TICKS_MAX: u32 = 5;

/// What a container's `logConfiguration` asks of the awslogs driver.
#[derive(Clone, Debug)]
pub struct AwslogsConfig {
    pub group: String,
    pub stream: String,
    pub create_group: bool,
    pub mode: Mode,
    pub buffer_bytes_max: u64,
    /// A line that matches starts a new event; others join the one before.
    pub event_start: Option<Regex>,
}

impl AwslogsConfig {
    /// The container's awslogs settings, `None` when it uses another driver.
    /// Err is why the options cannot be acted on (registration checks them;
    /// this guards definitions stored before it did).
    pub fn of(
        definition: &ContainerDefinition,
        task_id: &str,
        engine_id: &str,
    ) -> Result<Option<AwslogsConfig>, String> {
        let Some(log) = &definition.log_configuration else {
            return Ok(None);
        };
        if log.log_driver != Some(LogDriver::Awslogs) {
            return Ok(None);
        }
        let empty = Default::default();
        let options = log.options.as_ref().unwrap_or(&empty);
        let get = |name: &str| options.get(name).map(String::as_str);
        let group = get(awslogs::GROUP)
            .filter(|group| !group.is_empty())
            .ok_or_else(|| format!("log driver awslogs needs option {}", awslogs::GROUP))?;
        let mode = get(awslogs::MODE).map_or(Some(Mode::Blocking), Mode::parse);
        let mode =
            mode.ok_or_else(|| "log option mode must be blocking or non-blocking".to_owned())?;
        let buffer_bytes_max = match mode {
            Mode::Blocking => BLOCKING_BUFFER_BYTES_MAX,
            Mode::NonBlocking => get(awslogs::MAX_BUFFER_SIZE)
                .map_or(
                    Some(awslogs::DEFAULT_MAX_BUFFER_BYTES),
                    awslogs::parse_size_bytes,
                )
                .ok_or_else(|| "log option max-buffer-size is not a size".to_owned())?,
        };
        let pattern = match (
            get(awslogs::DATETIME_FORMAT),
            get(awslogs::MULTILINE_PATTERN),
        ) {
            (Some(format), _) => Some(awslogs::datetime_format_pattern(format).map_err(
                |directive| format!("awslogs-datetime-format: unknown directive {directive}"),
            )?),
            (None, Some(pattern)) => Some(pattern.to_owned()),
            (None, None) => None,
        };
        let event_start = pattern
            .map(|pattern| {
                Regex::new(&pattern).map_err(|error| format!("awslogs-multiline-pattern: {error}"))
            })
            .transpose()?;
        Ok(Some(AwslogsConfig {
            group: group.to_owned(),
            stream: awslogs::stream_name(
                get(awslogs::STREAM_PREFIX),
                definition.name.as_deref().unwrap_or_default(),
                task_id,
                engine_id,
            ),
            create_group: get(awslogs::CREATE_GROUP)
                .and_then(awslogs::parse_bool)
                .unwrap_or(false),
            mode,
            buffer_bytes_max,
            event_start,
        }))
    }
}

/// Sends containers' lines to the control plane's logs API.
#[derive(Clone, Debug)]
pub struct LogShipping {
    api: ApiClient,
}

impl LogShipping {
    pub fn new(api: ApiClient) -> LogShipping {
        LogShipping { api }
    }

    /// Makes the container's log group (when asked) and stream, before the
    /// container starts. Err is the task's stop reason, worded as ECS words
    /// the engine's refusal.
    pub async fn prepare(&self, config: &AwslogsConfig) -> Result<(), String> {
        let refusal = |what: &str, error: ApiCallError| {
            match error {
            ApiCallError::Service { code, message, .. } => format!(
                "CannotStartContainerError: Error response from daemon: failed to initialize logging driver: failed to {what}: {code}: {message}"
            ),
            other => format!(
                "CannotStartContainerError: Error response from daemon: failed to initialize logging driver: failed to {what}: {other}"
            ),
        }
        };
        if config.create_group {
            let request = json!({"logGroupName": config.group});
            match self.call("CreateLogGroup", &request).await {
                Ok(_) => {}
                Err(error) if is_code(&error, "ResourceAlreadyExistsException") => {}
                Err(error) => return Err(refusal("create Cloudwatch log group", error)),
            }
        }
        let request = json!({"logGroupName": config.group, "logStreamName": config.stream});
        match self.call("CreateLogStream", &request).await {
            Ok(_) => Ok(()),
            Err(error) if is_code(&error, "ResourceAlreadyExistsException") => Ok(()),
            Err(error) => Err(refusal("create Cloudwatch log stream", error)),
        }
    }

    /// Follows the container's output and ships it until the container stops
    /// and its last line is sent.
    pub fn ship(
        &self,
        runtime: Arc<dyn ContainerRuntime>,
        engine_id: String,
        config: AwslogsConfig,
        since_ms: Option<u64>,
    ) -> Shipper {
        let (done_sender, done) = watch::channel(false);
        let api = self.clone();
        let task = tokio::spawn(async move {
            api.run(&*runtime, &engine_id, &config, since_ms).await;
            let _ = done_sender.send(true);
        });
        Shipper { done, task }
    }

    /// A call with a few tries while the control plane is away.
    async fn call(&self, operation: &'static str, request: &Value) -> Result<Value, ApiCallError> {
        let mut attempt = 0;
        loop {
            match self
                .api
                .call_signed(LOGS_TARGET_PREFIX, "logs", operation, request)
                .await
            {
                Err(error) if error.is_retryable() && attempt + 1 < PREPARE_ATTEMPTS_MAX => {
                    tokio::time::sleep(Duration::from_millis(backoff_delay_ms(attempt, 0.5))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn run(
        &self,
        runtime: &dyn ContainerRuntime,
        engine_id: &str,
        config: &AwslogsConfig,
        since_ms: Option<u64>,
    ) {
        // Every line the engine has ready at once, in one item.
        let mut lines = runtime
            .follow_logs(engine_id, since_ms)
            .ready_chunks(READ_LINES_MAX);
        let mut buffer = Buffer::new(config);
        let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures: u32 = 0;
        // Ticks to let pass before the next try, after a failed send.
        let mut ticks_to_skip: u32 = 0;
        loop {
            let may_read = config.mode == Mode::NonBlocking || !buffer.is_full();
            tokio::select! {
                ready = lines.next(), if may_read => match ready {
                    Some(ready) => {
                        let mut ended = false;
                        for line in ready {
                            match line {
                                Ok(line) => buffer.push(line),
                                Err(error) => {
                                    tracing::warn!(container = %engine_id, %error, "cannot read the container's output; its last lines may not be shipped");
                                    ended = true;
                                }
                            }
                        }
                        // A full batch goes at once rather than at the next tick.
                        while ticks_to_skip == 0 && buffer.has_full_batch() {
                            if self.send_batch(config, &mut buffer).await.is_err() {
                                failures = failures.saturating_add(1);
                                ticks_to_skip = failures.min(RETRY_TICKS_MAX);
                            }
                        }
                        if ended {
                            break;
                        }
                    }
                    None => break,
                },
                _ = ticks.tick() => {
                    if ticks_to_skip > 0 {
                        ticks_to_skip -= 1;
                        continue;
                    }
                    buffer.close_event();
                    match self.send_batch(config, &mut buffer).await {
                        Ok(()) => failures = 0,
                        Err(()) => {
                            failures = failures.saturating_add(1);
                            ticks_to_skip = failures.min(RETRY_TICKS_MAX);
                        }
                    }
                }
            }
        }
        buffer.close_event();
        let mut failures: u32 = 0;
        while !buffer.events.is_empty() {
            if self.send_batch(config, &mut buffer).await.is_err() {
                failures = failures.saturating_add(1);
                if failures >= FINAL_FLUSH_ATTEMPTS_MAX {
                    tracing::warn!(container = %engine_id, lost = buffer.events.len(), "giving up shipping a stopped container's last lines");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(backoff_delay_ms(
                    failures.min(5),
                    0.5,
                )))
                .await;
            }
        }
    }

    /// Sends the oldest batch; Err when it should be tried again.
    async fn send_batch(&self, config: &AwslogsConfig, buffer: &mut Buffer) -> Result<(), ()> {
        let count = buffer.batch_len();
        if count == 0 {
            return Ok(());
        }
        let request = PutLogEvents {
            log_group_name: &config.group,
            log_stream_name: &config.stream,
            log_events: buffer.events.iter().take(count).collect(),
        };
        match self
            .api
            .call_signed::<_, Value>(LOGS_TARGET_PREFIX, "logs", "PutLogEvents", &request)
            .await
        {
            Ok(answer) => {
                if let Some(rejected) = answer.get("rejectedLogEventsInfo") {
                    tracing::warn!(group = %config.group, stream = %config.stream, %rejected, "the logs store rejected some lines");
                }
                buffer.drop_front(count);
                Ok(())
            }
            Err(error) if error.is_retryable() => {
                tracing::debug!(%error, "cannot ship log lines yet");
                Err(())
            }
            Err(error) => {
                tracing::warn!(group = %config.group, stream = %config.stream, %error, lines = count, "log lines refused; dropped");
                buffer.drop_front(count);
                Ok(())
            }
        }
    }
}

/// A running shipper; dropping it stops the shipping.
#[derive(Debug)]
pub struct Shipper {
    done: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Shipper {
    /// Waits, at most `timeout`, until the container's last line is sent.
    pub async fn flushed(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.done.wait_for(|done| *done))
            .await
            .is_ok_and(|result| result.is_ok())
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
struct Event {
    #[serde(rename = "timestamp")]
    timestamp_ms: u64,
    message: String,
}

/// PutLogEvents' request, borrowing the buffered events.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PutLogEvents<'a> {
    log_group_name: &'a str,
    log_stream_name: &'a str,
    log_events: Vec<&'a Event>,
}

/// Events waiting to be sent, oldest first, with the bytes they count for.
struct Buffer {
    events: VecDeque<Event>,
    bytes: u64,
    bytes_max: u64,
    mode: Mode,
    event_start: Option<Regex>,
    /// The multiline event still being joined.
    open: Option<Event>,
    last_timestamp_ms: u64,
    dropped: u64,
}

impl Buffer {
    fn new(config: &AwslogsConfig) -> Buffer {
        Buffer {
            events: VecDeque::new(),
            bytes: 0,
            bytes_max: config.buffer_bytes_max,
            mode: config.mode,
            event_start: config.event_start.clone(),
            open: None,
            last_timestamp_ms: 0,
            dropped: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.bytes >= self.bytes_max
    }

    fn push(&mut self, line: LogLine) {
        let Some(start) = &self.event_start else {
            self.enqueue(Event {
                timestamp_ms: line.timestamp_ms,
                message: line.message,
            });
            return;
        };
        match &mut self.open {
            Some(open) if !start.is_match(&line.message) => {
                open.message.push('\n');
                open.message.push_str(&line.message);
                if open.message.len() >= EVENT_MESSAGE_BYTES_MAX {
                    self.close_event();
                }
            }
            _ => {
                self.close_event();
                self.open = Some(Event {
                    timestamp_ms: line.timestamp_ms,
                    message: line.message,
                });
            }
        }
    }

    /// Queues the multiline event being joined.
    fn close_event(&mut self) {
        if let Some(event) = self.open.take() {
            self.enqueue(event);
        }
    }

    fn enqueue(&mut self, mut event: Event) {
        truncate_to(&mut event.message, EVENT_MESSAGE_BYTES_MAX);
        // One stream's events go out in the order they were printed; the
        // engine's clock may step back between stdout and stderr.
        event.timestamp_ms = event.timestamp_ms.max(self.last_timestamp_ms);
        self.last_timestamp_ms = event.timestamp_ms;
        self.bytes += event_bytes(&event);
        self.events.push_back(event);
        while self.mode == Mode::NonBlocking && self.bytes > self.bytes_max {
            self.drop_front(1);
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.dropped,
                    "non-blocking log buffer full; dropping the oldest lines"
                );
            }
        }
    }

    /// How many of the oldest events fit in one PutLogEvents call.
    fn batch_len(&self) -> usize {
        let Some(first) = self.events.front() else {
            return 0;
        };
        let mut bytes = 0;
        let mut count = 0;
        for event in &self.events {
            let size = usize::try_from(event_bytes(event)).unwrap_or(usize::MAX);
            if count == BATCH_EVENTS_MAX
                || bytes + size > BATCH_BYTES_MAX
                || event.timestamp_ms - first.timestamp_ms > BATCH_SPAN_MS_MAX
            {
                break;
            }
            bytes += size;
            count += 1;
        }
        count
    }

    /// Whether a call's worth of events waits: kept O(1), since it is asked
    /// after every line (the span limit is left to [`Buffer::batch_len`]).
    fn has_full_batch(&self) -> bool {
        self.events.len() >= BATCH_EVENTS_MAX || self.bytes > BATCH_BYTES_MAX as u64
    }

    fn drop_front(&mut self, count: usize) {
        for event in self.events.drain(..count.min(self.events.len())) {
            self.bytes = self.bytes.saturating_sub(event_bytes(&event));
        }
    }
}

fn event_bytes(event: &Event) -> u64 {
    (event.message.len() + EVENT_OVERHEAD_BYTES) as u64
}

fn truncate_to(text: &mut String, bytes_max: usize) {
    if text.len() > bytes_max {
        let mut end = bytes_max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

fn is_code(error: &ApiCallError, wanted: &str) -> bool {
    matches!(error, ApiCallError::Service { code, .. } if code == wanted)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use flotilla_runtime::LogSource;

    fn config(options: serde_json::Value) -> Option<AwslogsConfig> {
        let definition: ContainerDefinition = serde_json::from_value(json!({
            "name": "web",
            "logConfiguration": {"logDriver": "awslogs", "options": options},
        }))
        .unwrap();
        AwslogsConfig::of(&definition, "task1", "engine1").unwrap()
    }

    fn line(timestamp_ms: u64, message: &str) -> LogLine {
        LogLine {
            source: LogSource::Stdout,
            timestamp_ms,
            message: message.to_owned(),
        }
    }

    #[test]
    fn options_name_the_stream_and_the_buffer() {
        let with_prefix = config(json!({"awslogs-group": "g", "awslogs-region": "r", "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"})).unwrap();
        assert_eq!(with_prefix.stream, "ecs/web/task1");
        assert!(with_prefix.create_group);
        assert_eq!(with_prefix.mode, Mode::Blocking);
        let plain = config(json!({"awslogs-group": "g", "awslogs-region": "r", "mode": "non-blocking", "max-buffer-size": "2m"})).unwrap();
        assert_eq!(plain.stream, "engine1");
        assert!(!plain.create_group);
        assert_eq!(plain.buffer_bytes_max, 2 << 20);
        let json_file: ContainerDefinition = serde_json::from_value(
            json!({"name": "web", "logConfiguration": {"logDriver": "json-file"}}),
        )
        .unwrap();
        assert!(AwslogsConfig::of(&json_file, "t", "e").unwrap().is_none());
    }

    #[test]
    fn batches_keep_within_aws_limits_and_order() {
        let mut buffer = Buffer::new(&config(json!({"awslogs-group": "g"})).unwrap());
        for index in 0..25_000u64 {
            buffer.push(line(1_000 + index / 10, &format!("line {index}")));
        }
        assert_eq!(buffer.batch_len(), BATCH_EVENTS_MAX);
        assert!(buffer.has_full_batch());
        let mut big = Buffer::new(&config(json!({"awslogs-group": "g"})).unwrap());
        for _ in 0..10 {
            big.push(line(5, &"x".repeat(200_000)));
        }
        assert_eq!(big.batch_len(), 5, "five 200 kB events fill a megabyte");
        buffer.push(line(10, "earlier"));
        assert_eq!(
            buffer.events.back().unwrap().timestamp_ms,
            1_000 + 24_999 / 10
        );
    }

    #[test]
    fn multiline_patterns_join_lines_and_non_blocking_drops_the_oldest() {
        let mut buffer = Buffer::new(
            &config(json!({"awslogs-group": "g", "awslogs-datetime-format": "%Y-%m-%d"})).unwrap(),
        );
        buffer.push(line(1, "2026-01-02 boom"));
        buffer.push(line(2, "  at frame 1"));
        buffer.push(line(3, "2026-01-02 next"));
        buffer.close_event();
        let messages: Vec<_> = buffer.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            ["2026-01-02 boom\n  at frame 1", "2026-01-02 next"]
        );

        let mut lossy = Buffer::new(
            &config(json!({"awslogs-group": "g", "mode": "non-blocking", "max-buffer-size": "1k"}))
                .unwrap(),
        );
        for index in 0..100 {
            lossy.push(line(index, &format!("{index:0>50}")));
        }
        assert!(lossy.bytes <= 1024);
        assert_eq!(lossy.events.back().unwrap().message, format!("{:0>50}", 99));
        assert!(lossy.events.len() < 100);
    }
}
