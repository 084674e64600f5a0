//! The storage engine: log groups and streams, events in segment files,
//! group commit, queries and retention.
//!
//! ```text
//!  put ─▶ encode chunk ─▶ channel ─▶ writer thread: append all pending chunks,
//!                                    one fdatasync, index them, answer each put
//!  query ─▶ chunks overlapping the range (index, in memory) ─▶ pread ─▶ merge by key
//!  maintain ─▶ drop expired chunks ─▶ delete dead segments, compact sparse ones
//! ```
//!
//! *Architecture invariant:* an event is visible to queries only after the
//! fdatasync that made it durable, and a put is answered only after that
//! fdatasync: what a client saw acknowledged survives kill -9.
//!
//! *Architecture invariant:* the engine never reads the clock; every
//! operation that depends on time takes `now_ms`.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::LogsError;
use crate::pattern::Pattern;
use crate::segment::{self, ChunkHeader, CHUNK_HEADER_BYTES};

/// A segment is sealed and a new one started once it reaches this size.
pub const SEGMENT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Most bytes one group commit writes before its fdatasync.
const COMMIT_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Puts waiting for the writer; a full queue makes callers wait.
const WRITER_QUEUE_MAX: usize = 256;
/// A sealed segment whose live bytes fall under this fraction is rewritten.
const COMPACT_LIVE_FRACTION: f64 = 0.5;
const DAY_MS: i64 = 86_400_000;

/// Orders events: by timestamp, then stream, then the stream's sequence
/// number. Its decimal form is the event id, stable for the event's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    pub timestamp: i64,
    pub stream_id: u64,
    pub seq: u64,
}

impl EventKey {
    /// 56 decimal digits, as CloudWatch Logs' event ids are.
    pub fn event_id(&self) -> String {
        format!(
            "{:020}{:018}{:018}",
            self.timestamp.max(0),
            self.stream_id % 1_000_000_000_000_000_000,
            self.seq % 1_000_000_000_000_000_000
        )
    }

    pub fn parse_event_id(id: &str) -> Option<EventKey> {
        if id.len() != 56 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(EventKey {
            timestamp: id[..20].parse().ok()?,
            stream_id: id[20..38].parse().ok()?,
            seq: id[38..].parse().ok()?,
        })
    }

    /// The same order reversed, so that a backward scan is a forward one.
    fn mirrored(self) -> EventKey {
        EventKey {
            timestamp: -self.timestamp,
            stream_id: !self.stream_id,
            seq: !self.seq,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub creation_ms: i64,
    pub retention_days: Option<i32>,
    pub tags: BTreeMap<String, String>,
    pub stored_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamInfo {
    pub name: String,
    pub creation_ms: i64,
    pub first_event_ms: Option<i64>,
    pub last_event_ms: Option<i64>,
    pub last_ingestion_ms: Option<i64>,
    pub stored_bytes: u64,
    /// Events accepted so far; the upload sequence token.
    pub next_seq: u64,
}

/// One event a query found.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundEvent {
    pub key: EventKey,
    pub stream_name: String,
    pub ingestion_ms: i64,
    pub message: String,
}

pub struct EventQuery<'a> {
    pub group: &'a str,
    /// The streams to read; `None` is every stream of the group.
    pub streams: Option<Vec<String>>,
    pub stream_prefix: Option<String>,
    /// Inclusive bounds on timestamps.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Resume strictly after this key (in the query's direction).
    pub after: Option<EventKey>,
    pub forward: bool,
    pub limit: usize,
    pub pattern: &'a Pattern,
    /// Stop after decoding about this many bytes, answering with a resume key.
    pub scan_budget_bytes: u64,
    /// Stop once the events found hold this many message bytes.
    pub response_budget_bytes: usize,
    pub now_ms: i64,
}

#[derive(Debug, Default, PartialEq)]
pub struct QueryResult {
    pub events: Vec<FoundEvent>,
    /// Where to resume when the query stopped before the end of its range.
    pub resume: Option<EventKey>,
    pub searched_streams: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub chunks_expired: usize,
    pub segments_deleted: usize,
    pub segments_compacted: usize,
    pub bytes_reclaimed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChunkRef {
    segment: u64,
    offset: u64,
    header: ChunkHeader,
}

impl ChunkRef {
    fn bytes(&self) -> u64 {
        CHUNK_HEADER_BYTES as u64 + u64::from(self.header.payload_len)
    }
}

struct Stream {
    group: String,
    name: String,
    creation_ms: i64,
    chunks: Vec<ChunkRef>,
    next_seq: u64,
    last_ingestion_ms: Option<i64>,
}

impl Stream {
    fn info(&self) -> StreamInfo {
        StreamInfo {
            name: self.name.clone(),
            creation_ms: self.creation_ms,
            first_event_ms: self.chunks.iter().map(|c| c.header.min_timestamp).min(),
            last_event_ms: self.chunks.iter().map(|c| c.header.max_timestamp).max(),
            last_ingestion_ms: self.last_ingestion_ms,
            stored_bytes: self.chunks.iter().map(ChunkRef::bytes).sum(),
            next_seq: self.next_seq,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Group {
    name: String,
    creation_ms: i64,
    retention_days: Option<i32>,
    tags: BTreeMap<String, String>,
    /// Stream name to stream id.
    streams: BTreeMap<String, u64>,
}

impl Group {
    fn cutoff_ms(&self, now_ms: i64) -> i64 {
        match self.retention_days {
            Some(days) => now_ms - i64::from(days) * DAY_MS,
            None => i64::MIN,
        }
    }
}

struct SegmentFile {
    path: PathBuf,
    file: File,
}

struct State {
    groups: BTreeMap<String, Group>,
    streams: HashMap<u64, Stream>,
    next_stream_id: u64,
    segments: BTreeMap<u64, Arc<SegmentFile>>,
    active_segment: u64,
}

/// What `meta.json` holds: everything but the events and the index, which
/// are rebuilt from the segments.
#[derive(Serialize, Deserialize)]
struct MetaFile {
    next_stream_id: u64,
    groups: Vec<MetaGroup>,
}

#[derive(Serialize, Deserialize)]
struct MetaGroup {
    name: String,
    creation_ms: i64,
    retention_days: Option<i32>,
    tags: BTreeMap<String, String>,
    streams: Vec<MetaStream>,
}

#[derive(Serialize, Deserialize)]
struct MetaStream {
    id: u64,
    name: String,
    creation_ms: i64,
}

struct PendingChunk {
    header: ChunkHeader,
    bytes: Vec<u8>,
    /// Set when compaction moves the chunk out of this segment.
    moved_from: Option<u64>,
}

enum Job {
    Append {
        chunks: Vec<PendingChunk>,
        reply: mpsc::Sender<Result<(), String>>,
    },
    Roll {
        reply: mpsc::Sender<Result<(), String>>,
    },
}

/// The CloudWatch Logs store of one server.
pub struct LogStore {
    dir: PathBuf,
    state: Arc<RwLock<State>>,
    jobs: SyncSender<Job>,
    maintenance: Mutex<()>,
}

type Undo = Box<dyn FnOnce(&mut State)>;

fn lock_error<T>(_: T) -> LogsError {
    LogsError::WriterStopped
}

impl LogStore {
    /// Opens (or creates) the store in `dir`, rebuilding the index from the
    /// segments and cutting a torn tail off the last one.
    pub fn open(dir: &Path) -> Result<LogStore, LogsError> {
        let segments_dir = dir.join("segments");
        std::fs::create_dir_all(&segments_dir)
            .map_err(|e| LogsError::io("creating", &segments_dir, e))?;
        let meta_path = dir.join("meta.json");
        let meta = match std::fs::read(&meta_path) {
            Ok(bytes) => {
                serde_json::from_slice::<MetaFile>(&bytes).map_err(|e| LogsError::Metadata {
                    path: meta_path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetaFile {
                next_stream_id: 1,
                groups: Vec::new(),
            },
            Err(e) => return Err(LogsError::io("reading", &meta_path, e)),
        };
        let mut state = State {
            groups: BTreeMap::new(),
            streams: HashMap::new(),
            next_stream_id: meta.next_stream_id.max(1),
            segments: BTreeMap::new(),
            active_segment: 0,
        };
        for group in meta.groups {
            let mut streams = BTreeMap::new();
            for stream in group.streams {
                streams.insert(stream.name.clone(), stream.id);
                state.streams.insert(
                    stream.id,
                    Stream {
                        group: group.name.clone(),
                        name: stream.name,
                        creation_ms: stream.creation_ms,
                        chunks: Vec::new(),
                        next_seq: 0,
                        last_ingestion_ms: None,
                    },
                );
            }
            state.groups.insert(
                group.name.clone(),
                Group {
                    name: group.name,
                    creation_ms: group.creation_ms,
                    retention_days: group.retention_days,
                    tags: group.tags,
                    streams,
                },
            );
        }
        let mut ids: Vec<u64> = std::fs::read_dir(&segments_dir)
            .map_err(|e| LogsError::io("listing", &segments_dir, e))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        ids.sort_unstable();
        let last = ids.last().copied();
        for id in &ids {
            let path = segment_path(&segments_dir, *id);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| LogsError::io("opening", &path, e))?;
            recover_segment(&mut state, *id, &file, &path, Some(*id) == last)?;
            state
                .segments
                .insert(*id, Arc::new(SegmentFile { path, file }));
        }
        let (active_id, active_file, active_size) = match last {
            Some(id) => {
                let segment = &state.segments[&id];
                let file = OpenOptions::new()
                    .append(true)
                    .open(&segment.path)
                    .map_err(|e| LogsError::io("opening", &segment.path, e))?;
                let size = file
                    .metadata()
                    .map_err(|e| LogsError::io("reading", &segment.path, e))?
                    .len();
                (id, file, size)
            }
            None => {
                let (file, segment) = create_segment(&segments_dir, 1)?;
                state.segments.insert(1, Arc::new(segment));
                (1, file, 0)
            }
        };
        state.active_segment = active_id;
        let state = Arc::new(RwLock::new(state));
        let (jobs, receiver) = mpsc::sync_channel(WRITER_QUEUE_MAX);
        let writer = Writer {
            dir: segments_dir,
            state: Arc::clone(&state),
            active_id,
            active: active_file,
            active_size,
        };
        std::thread::Builder::new()
            .name("logs-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|e| LogsError::io("starting the writer for", dir, e))?;
        Ok(LogStore {
            dir: dir.to_owned(),
            state,
            jobs,
            maintenance: Mutex::new(()),
        })
    }

    fn persist_meta(&self, state: &State) -> Result<(), LogsError> {
        let meta = MetaFile {
            next_stream_id: state.next_stream_id,
            groups: state
                .groups
                .values()
                .map(|group| MetaGroup {
                    name: group.name.clone(),
                    creation_ms: group.creation_ms,
                    retention_days: group.retention_days,
                    tags: group.tags.clone(),
                    streams: group
                        .streams
                        .iter()
                        .map(|(name, id)| MetaStream {
                            id: *id,
                            name: name.clone(),
                            creation_ms: state.streams.get(id).map_or(0, |s| s.creation_ms),
                        })
                        .collect(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&meta).map_err(|e| LogsError::Metadata {
            path: self.dir.join("meta.json"),
            reason: e.to_string(),
        })?;
        write_atomically(&self.dir, "meta.json", &bytes)
    }

    /// Applies `change` to the state and persists the metadata; when that
    /// fails, the undo `change` returned puts the state back as it was.
    fn change_meta<R>(
        &self,
        change: impl FnOnce(&mut State) -> Result<(R, Undo), LogsError>,
    ) -> Result<R, LogsError> {
        let mut state = self.state.write().map_err(lock_error)?;
        let (result, undo) = change(&mut state)?;
        if let Err(error) = self.persist_meta(&state) {
            undo(&mut state);
            return Err(error);
        }
        Ok(result)
    }

    pub fn create_group(
        &self,
        name: &str,
        tags: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<(), LogsError> {
        self.change_meta(|state| {
            if state.groups.contains_key(name) {
                return Err(LogsError::GroupExists {
                    group: name.to_owned(),
                });
            }
            state.groups.insert(
                name.to_owned(),
                Group {
                    name: name.to_owned(),
                    creation_ms: now_ms,
                    retention_days: None,
                    tags,
                    streams: BTreeMap::new(),
                },
            );
            let name = name.to_owned();
            Ok((
                (),
                Box::new(move |state: &mut State| {
                    state.groups.remove(&name);
                }) as Undo,
            ))
        })
    }

    /// Deletes a group and its streams; their segments' space is reclaimed by
    /// the next [`LogStore::maintain`].
    pub fn delete_group(&self, name: &str) -> Result<(), LogsError> {
        let mut removed_streams = Vec::new();
        let result = {
            let mut state = self.state.write().map_err(lock_error)?;
            let Some(group) = state.groups.remove(name) else {
                return Err(LogsError::GroupNotFound {
                    group: name.to_owned(),
                });
            };
            if let Err(error) = self.persist_meta(&state) {
                state.groups.insert(name.to_owned(), group);
                Err(error)
            } else {
                for id in group.streams.values() {
                    if let Some(stream) = state.streams.remove(id) {
                        removed_streams.push(stream);
                    }
                }
                Ok(())
            }
        };
        drop(removed_streams);
        result
    }

    pub fn group(&self, name: &str) -> Result<GroupInfo, LogsError> {
        let state = self.state.read().map_err(lock_error)?;
        let group = state
            .groups
            .get(name)
            .ok_or_else(|| LogsError::GroupNotFound {
                group: name.to_owned(),
            })?;
        Ok(group_info(&state, group))
    }

    /// Groups in name order, from `after` (exclusive), at most `limit`.
    pub fn groups(
        &self,
        accept: impl Fn(&str) -> bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<GroupInfo>, bool), LogsError> {
        let state = self.state.read().map_err(lock_error)?;
        let mut found = Vec::new();
        let mut more = false;
        for group in state.groups.values() {
            if after.is_some_and(|after| group.name.as_str() <= after) || !accept(&group.name) {
                continue;
            }
            if found.len() == limit {
                more = true;
                break;
            }
            found.push(group_info(&state, group));
        }
        Ok((found, more))
    }

    pub fn set_retention(&self, group: &str, retention_days: Option<i32>) -> Result<(), LogsError> {
        self.change_meta(|state| {
            let entry = state
                .groups
                .get_mut(group)
                .ok_or_else(|| LogsError::GroupNotFound {
                    group: group.to_owned(),
                })?;
            let previous = std::mem::replace(&mut entry.retention_days, retention_days);
            let group = group.to_owned();
            Ok((
                (),
                Box::new(move |state: &mut State| {
                    if let Some(entry) = state.groups.get_mut(&group) {
                        entry.retention_days = previous;
                    }
                }) as Undo,
            ))
        })
    }

    /// Adds `add` to the group's tags and removes `remove`; `check` sees the
    /// resulting set and may refuse it.
    pub fn change_tags(
        &self,
        group: &str,
        add: &BTreeMap<String, String>,
        remove: &[String],
        check: impl FnOnce(&BTreeMap<String, String>) -> Result<(), String>,
    ) -> Result<Result<(), String>, LogsError> {
        self.change_meta(|state| {
            let entry = state
                .groups
                .get_mut(group)
                .ok_or_else(|| LogsError::GroupNotFound {
                    group: group.to_owned(),
                })?;
            let mut tags = entry.tags.clone();
            tags.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
            for key in remove {
                tags.remove(key);
            }
            if let Err(refusal) = check(&tags) {
                return Ok((Err(refusal), Box::new(|_: &mut State| {}) as Undo));
            }
            let previous = std::mem::replace(&mut entry.tags, tags);
            let group = group.to_owned();
            Ok((
                Ok(()),
                Box::new(move |state: &mut State| {
                    if let Some(entry) = state.groups.get_mut(&group) {
                        entry.tags = previous;
                    }
                }) as Undo,
            ))
        })
    }

    pub fn create_stream(&self, group: &str, name: &str, now_ms: i64) -> Result<(), LogsError> {
        self.change_meta(|state| {
            let id = state.next_stream_id;
            let entry = state
                .groups
                .get_mut(group)
                .ok_or_else(|| LogsError::GroupNotFound {
                    group: group.to_owned(),
                })?;
            if entry.streams.contains_key(name) {
                return Err(LogsError::StreamExists {
                    group: group.to_owned(),
                    stream: name.to_owned(),
                });
            }
            entry.streams.insert(name.to_owned(), id);
            state.next_stream_id += 1;
            state.streams.insert(
                id,
                Stream {
                    group: group.to_owned(),
                    name: name.to_owned(),
                    creation_ms: now_ms,
                    chunks: Vec::new(),
                    next_seq: 0,
                    last_ingestion_ms: None,
                },
            );
            let (group, name) = (group.to_owned(), name.to_owned());
            Ok((
                (),
                Box::new(move |state: &mut State| {
                    state.streams.remove(&id);
                    if let Some(entry) = state.groups.get_mut(&group) {
                        entry.streams.remove(&name);
                    }
                }) as Undo,
            ))
        })
    }

    pub fn delete_stream(&self, group: &str, name: &str) -> Result<(), LogsError> {
        let mut state = self.state.write().map_err(lock_error)?;
        let entry = state
            .groups
            .get_mut(group)
            .ok_or_else(|| LogsError::GroupNotFound {
                group: group.to_owned(),
            })?;
        let Some(id) = entry.streams.remove(name) else {
            return Err(LogsError::StreamNotFound {
                group: group.to_owned(),
                stream: name.to_owned(),
            });
        };
        if let Err(error) = self.persist_meta(&state) {
            if let Some(entry) = state.groups.get_mut(group) {
                entry.streams.insert(name.to_owned(), id);
            }
            return Err(error);
        }
        state.streams.remove(&id);
        Ok(())
    }

    pub fn stream(&self, group: &str, name: &str) -> Result<StreamInfo, LogsError> {
        let state = self.state.read().map_err(lock_error)?;
        let id = stream_id(&state, group, name)?;
        Ok(state.streams[&id].info())
    }

    /// Every stream of a group.
    pub fn streams(&self, group: &str) -> Result<Vec<StreamInfo>, LogsError> {
        let state = self.state.read().map_err(lock_error)?;
        let entry = state
            .groups
            .get(group)
            .ok_or_else(|| LogsError::GroupNotFound {
                group: group.to_owned(),
            })?;
        Ok(entry
            .streams
            .values()
            .filter_map(|id| state.streams.get(id).map(Stream::info))
            .collect())
    }

    /// Appends events (already checked: non-empty, in timestamp order) to a
    /// stream and returns once they are durable. Returns the stream's next
    /// sequence number.
    pub fn put(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, &str)],
        now_ms: i64,
    ) -> Result<u64, LogsError> {
        let (id, first_seq) = {
            let mut state = self.state.write().map_err(lock_error)?;
            let id = stream_id(&state, group, stream)?;
            let entry = state.streams.get_mut(&id).ok_or(LogsError::WriterStopped)?;
            let first_seq = entry.next_seq;
            entry.next_seq += events.len() as u64;
            (id, first_seq)
        };
        let (header, bytes) = segment::encode_chunk(id, first_seq, now_ms, events);
        let (reply, answer) = mpsc::channel();
        self.jobs
            .send(Job::Append {
                chunks: vec![PendingChunk {
                    header,
                    bytes,
                    moved_from: None,
                }],
                reply,
            })
            .map_err(|_| LogsError::WriterStopped)?;
        match answer.recv() {
            Ok(Ok(())) => Ok(first_seq + events.len() as u64),
            Ok(Err(reason)) => Err(LogsError::io(
                "appending to",
                &self.dir.join("segments"),
                std::io::Error::other(reason),
            )),
            Err(_) => Err(LogsError::WriterStopped),
        }
    }

    /// Finds events in time order (or reverse time order), across streams.
    pub fn query(&self, query: &EventQuery<'_>) -> Result<QueryResult, LogsError> {
        struct Candidate {
            /// Bounds of the chunk in the query's direction.
            low: i64,
            high: i64,
            chunk: ChunkRef,
            file: Arc<SegmentFile>,
            stream_name: Arc<str>,
            floor_ms: i64,
        }
        let mut searched_streams = Vec::new();
        let mut candidates = Vec::new();
        {
            let state = self.state.read().map_err(lock_error)?;
            let group = state
                .groups
                .get(query.group)
                .ok_or_else(|| LogsError::GroupNotFound {
                    group: query.group.to_owned(),
                })?;
            let floor_ms = group
                .cutoff_ms(query.now_ms)
                .max(query.start_ms.unwrap_or(i64::MIN));
            let ceiling_ms = query.end_ms.unwrap_or(i64::MAX);
            let ids: Vec<(&String, u64)> = match &query.streams {
                Some(names) => {
                    let mut ids = Vec::new();
                    for name in names {
                        let id = group.streams.get(name).copied().ok_or_else(|| {
                            LogsError::StreamNotFound {
                                group: query.group.to_owned(),
                                stream: name.clone(),
                            }
                        })?;
                        ids.push((name, id));
                    }
                    ids
                }
                None => group
                    .streams
                    .iter()
                    .filter(|(name, _)| {
                        query
                            .stream_prefix
                            .as_deref()
                            .is_none_or(|prefix| name.starts_with(prefix))
                    })
                    .map(|(name, id)| (name, *id))
                    .collect(),
            };
            let after = query
                .after
                .map(|key| if query.forward { key } else { key.mirrored() });
            for (name, id) in ids {
                searched_streams.push(name.clone());
                let Some(stream) = state.streams.get(&id) else {
                    continue;
                };
                let stream_name: Arc<str> = Arc::from(name.as_str());
                for chunk in &stream.chunks {
                    let header = &chunk.header;
                    if header.max_timestamp < floor_ms || header.min_timestamp > ceiling_ms {
                        continue;
                    }
                    let (low, high) = if query.forward {
                        (header.min_timestamp, header.max_timestamp)
                    } else {
                        (-header.max_timestamp, -header.min_timestamp)
                    };
                    if after.is_some_and(|after| high < after.timestamp) {
                        continue;
                    }
                    let Some(file) = state.segments.get(&chunk.segment) else {
                        continue;
                    };
                    candidates.push(Candidate {
                        low,
                        high,
                        chunk: *chunk,
                        file: Arc::clone(file),
                        stream_name: Arc::clone(&stream_name),
                        floor_ms,
                    });
                }
            }
        }
        candidates.sort_by_key(|c| (c.low, c.high));
        let ceiling_ms = query.end_ms.unwrap_or(i64::MAX);
        let after = query
            .after
            .map(|key| if query.forward { key } else { key.mirrored() });
        // Events loaded but not yet known to be next, smallest key first.
        let mut pending: BinaryHeap<std::cmp::Reverse<(EventKey, usize)>> = BinaryHeap::new();
        let mut loaded: Vec<Option<FoundEvent>> = Vec::new();
        let mut out = QueryResult {
            searched_streams,
            ..QueryResult::default()
        };
        let mut scanned_bytes = 0u64;
        let mut response_bytes = 0usize;
        let mut buffer = Vec::new();
        let forward = query.forward;
        let original = |key: EventKey| if forward { key } else { key.mirrored() };
        // Moves pending events below `bound` to the answer; true when the
        // answer is full.
        let emit_below = |bound: Option<i64>,
                          pending: &mut BinaryHeap<std::cmp::Reverse<(EventKey, usize)>>,
                          loaded: &mut Vec<Option<FoundEvent>>,
                          out: &mut QueryResult,
                          response_bytes: &mut usize|
         -> bool {
            while let Some(std::cmp::Reverse((key, _))) = pending.peek() {
                if bound.is_some_and(|bound| key.timestamp >= bound) {
                    break;
                }
                let Some(std::cmp::Reverse((key, index))) = pending.pop() else {
                    break;
                };
                if let Some(event) = loaded[index].take() {
                    *response_bytes += event.message.len() + 26;
                    out.events.push(event);
                }
                if out.events.len() >= query.limit || *response_bytes >= query.response_budget_bytes
                {
                    out.resume = Some(original(key));
                    return true;
                }
            }
            false
        };
        for candidate in &candidates {
            if emit_below(
                Some(candidate.low),
                &mut pending,
                &mut loaded,
                &mut out,
                &mut response_bytes,
            ) {
                return Ok(out);
            }
            if scanned_bytes >= query.scan_budget_bytes {
                let resume = EventKey {
                    timestamp: candidate.low - 1,
                    stream_id: u64::MAX,
                    seq: u64::MAX,
                };
                if after.is_none_or(|after| resume > after) {
                    out.resume = Some(original(resume));
                    return Ok(out);
                }
            }
            let length = candidate.chunk.bytes() as usize;
            buffer.resize(length, 0);
            candidate
                .file
                .file
                .read_exact_at(&mut buffer, candidate.chunk.offset)
                .map_err(|e| LogsError::io("reading", &candidate.file.path, e))?;
            scanned_bytes += length as u64;
            let header = &candidate.chunk.header;
            for event in segment::decode_events(header, &buffer[CHUNK_HEADER_BYTES..]) {
                if event.timestamp < candidate.floor_ms || event.timestamp > ceiling_ms {
                    continue;
                }
                let key = EventKey {
                    timestamp: event.timestamp,
                    stream_id: header.stream_id,
                    seq: event.seq,
                };
                let ordered = if forward { key } else { key.mirrored() };
                if after.is_some_and(|after| ordered <= after) {
                    continue;
                }
                if !query.pattern.matches(event.message) {
                    continue;
                }
                loaded.push(Some(FoundEvent {
                    key,
                    stream_name: candidate.stream_name.to_string(),
                    ingestion_ms: header.ingestion_ms,
                    message: event.message.to_owned(),
                }));
                pending.push(std::cmp::Reverse((ordered, loaded.len() - 1)));
            }
        }
        emit_below(
            None,
            &mut pending,
            &mut loaded,
            &mut out,
            &mut response_bytes,
        );
        Ok(out)
    }

    /// Forgets events older than their group's retention and reclaims the
    /// space of deleted groups, streams and expired events: a segment with
    /// nothing live is deleted, one mostly dead is rewritten.
    pub fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport, LogsError> {
        let _only_one = self.maintenance.lock().map_err(lock_error)?;
        let mut report = MaintenanceReport::default();
        let (live_bytes, active) = {
            let mut state = self.state.write().map_err(lock_error)?;
            let cutoffs: HashMap<String, i64> = state
                .groups
                .values()
                .map(|g| (g.name.clone(), g.cutoff_ms(now_ms)))
                .collect();
            for stream in state.streams.values_mut() {
                let cutoff = cutoffs.get(&stream.group).copied().unwrap_or(i64::MIN);
                let before = stream.chunks.len();
                stream.chunks.retain(|c| c.header.max_timestamp >= cutoff);
                report.chunks_expired += before - stream.chunks.len();
            }
            (live_bytes_by_segment(&state), state.active_segment)
        };
        let active_size = self.segment_size(active)?;
        if active_size > 0 && live_bytes.get(&active).copied().unwrap_or(0) < active_size {
            self.roll()?;
        }
        let sealed: Vec<(u64, Arc<SegmentFile>)> = {
            let state = self.state.read().map_err(lock_error)?;
            state
                .segments
                .iter()
                .filter(|(id, _)| **id != state.active_segment)
                .map(|(id, file)| (*id, Arc::clone(file)))
                .collect()
        };
        for (id, segment) in sealed {
            let size = segment
                .file
                .metadata()
                .map_err(|e| LogsError::io("reading", &segment.path, e))?
                .len();
            let live = {
                let state = self.state.read().map_err(lock_error)?;
                live_bytes_by_segment(&state).get(&id).copied().unwrap_or(0)
            };
            if live == 0 {
                self.drop_segment(id, &segment)?;
                report.segments_deleted += 1;
                report.bytes_reclaimed += size;
            } else if (live as f64) < (size as f64) * COMPACT_LIVE_FRACTION {
                self.compact(id, &segment)?;
                self.drop_segment(id, &segment)?;
                report.segments_compacted += 1;
                report.bytes_reclaimed += size - live;
            }
        }
        Ok(report)
    }

    fn segment_size(&self, id: u64) -> Result<u64, LogsError> {
        let state = self.state.read().map_err(lock_error)?;
        match state.segments.get(&id) {
            Some(segment) => Ok(segment
                .file
                .metadata()
                .map_err(|e| LogsError::io("reading", &segment.path, e))?
                .len()),
            None => Ok(0),
        }
    }

    fn roll(&self) -> Result<(), LogsError> {
        let (reply, answer) = mpsc::channel();
        self.jobs
            .send(Job::Roll { reply })
            .map_err(|_| LogsError::WriterStopped)?;
        match answer.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(LogsError::io(
                "starting a segment in",
                &self.dir,
                std::io::Error::other(reason),
            )),
            Err(_) => Err(LogsError::WriterStopped),
        }
    }

    /// Copies a segment's live chunks, unchanged, to the active segment.
    fn compact(&self, id: u64, segment: &SegmentFile) -> Result<(), LogsError> {
        let live: Vec<ChunkRef> = {
            let state = self.state.read().map_err(lock_error)?;
            state
                .streams
                .values()
                .flat_map(|s| s.chunks.iter())
                .filter(|c| c.segment == id)
                .copied()
                .collect()
        };
        let mut chunks = Vec::with_capacity(live.len());
        for chunk in live {
            let mut bytes = vec![0u8; chunk.bytes() as usize];
            segment
                .file
                .read_exact_at(&mut bytes, chunk.offset)
                .map_err(|e| LogsError::io("reading", &segment.path, e))?;
            chunks.push(PendingChunk {
                header: chunk.header,
                bytes,
                moved_from: Some(id),
            });
        }
        let (reply, answer) = mpsc::channel();
        self.jobs
            .send(Job::Append { chunks, reply })
            .map_err(|_| LogsError::WriterStopped)?;
        match answer.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(LogsError::io(
                "compacting",
                &segment.path,
                std::io::Error::other(reason),
            )),
            Err(_) => Err(LogsError::WriterStopped),
        }
    }

    fn drop_segment(&self, id: u64, segment: &SegmentFile) -> Result<(), LogsError> {
        {
            let mut state = self.state.write().map_err(lock_error)?;
            state.segments.remove(&id);
            for stream in state.streams.values_mut() {
                stream.chunks.retain(|c| c.segment != id);
            }
        }
        std::fs::remove_file(&segment.path)
            .map_err(|e| LogsError::io("removing", &segment.path, e))?;
        sync_dir(segment.path.parent().unwrap_or(&self.dir))
    }

    /// Bytes the segment files take on disk.
    pub fn disk_bytes(&self) -> Result<u64, LogsError> {
        let state = self.state.read().map_err(lock_error)?;
        let mut total = 0;
        for segment in state.segments.values() {
            total += segment
                .file
                .metadata()
                .map_err(|e| LogsError::io("reading", &segment.path, e))?
                .len();
        }
        Ok(total)
    }
}

fn group_info(state: &State, group: &Group) -> GroupInfo {
    GroupInfo {
        name: group.name.clone(),
        creation_ms: group.creation_ms,
        retention_days: group.retention_days,
        tags: group.tags.clone(),
        stored_bytes: group
            .streams
            .values()
            .filter_map(|id| state.streams.get(id))
            .flat_map(|s| s.chunks.iter())
            .map(ChunkRef::bytes)
            .sum(),
    }
}

fn stream_id(state: &State, group: &str, stream: &str) -> Result<u64, LogsError> {
    let entry = state
        .groups
        .get(group)
        .ok_or_else(|| LogsError::GroupNotFound {
            group: group.to_owned(),
        })?;
    entry
        .streams
        .get(stream)
        .copied()
        .ok_or_else(|| LogsError::StreamNotFound {
            group: group.to_owned(),
            stream: stream.to_owned(),
        })
}

fn live_bytes_by_segment(state: &State) -> HashMap<u64, u64> {
    let mut live = HashMap::new();
    for stream in state.streams.values() {
        for chunk in &stream.chunks {
            *live.entry(chunk.segment).or_insert(0) += chunk.bytes();
        }
    }
    live
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn create_segment(dir: &Path, id: u64) -> Result<(File, SegmentFile), LogsError> {
    let path = segment_path(dir, id);
    let writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| LogsError::io("creating", &path, e))?;
    sync_dir(dir)?;
    let reader = File::open(&path).map_err(|e| LogsError::io("opening", &path, e))?;
    Ok((writer, SegmentFile { path, file: reader }))
}

fn sync_dir(dir: &Path) -> Result<(), LogsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogsError::io("syncing", dir, e))
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogsError> {
    let temporary = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let mut file =
        File::create(&temporary).map_err(|e| LogsError::io("creating", &temporary, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| LogsError::io("writing", &temporary, e))?;
    std::fs::rename(&temporary, &target).map_err(|e| LogsError::io("renaming", &target, e))?;
    sync_dir(dir)
}

/// Reads a segment's chunk headers into the index. A chunk that is cut short
/// or (in the last segment, the only one written to without a seal) fails
/// its checksum ends the segment: it and anything after it was never
/// acknowledged, and the file is truncated there.
fn recover_segment(
    state: &mut State,
    id: u64,
    file: &File,
    path: &Path,
    is_last: bool,
) -> Result<(), LogsError> {
    let size = file
        .metadata()
        .map_err(|e| LogsError::io("reading", path, e))?
        .len();
    let mut offset = 0u64;
    let mut header_bytes = [0u8; CHUNK_HEADER_BYTES];
    let mut chunk_bytes = Vec::new();
    while offset + CHUNK_HEADER_BYTES as u64 <= size {
        file.read_exact_at(&mut header_bytes, offset)
            .map_err(|e| LogsError::io("reading", path, e))?;
        let Some(header) = segment::decode_header(&header_bytes) else {
            break;
        };
        let length = CHUNK_HEADER_BYTES as u64 + u64::from(header.payload_len);
        if offset + length > size {
            break;
        }
        if is_last {
            chunk_bytes.resize(length as usize, 0);
            file.read_exact_at(&mut chunk_bytes, offset)
                .map_err(|e| LogsError::io("reading", path, e))?;
            if !segment::chunk_is_intact(&chunk_bytes) {
                break;
            }
        }
        if let Some(stream) = state.streams.get_mut(&header.stream_id) {
            stream.next_seq = stream
                .next_seq
                .max(header.first_seq + u64::from(header.count));
            stream.last_ingestion_ms = stream.last_ingestion_ms.max(Some(header.ingestion_ms));
            stream.chunks.push(ChunkRef {
                segment: id,
                offset,
                header,
            });
        }
        offset += length;
    }
    if offset < size {
        tracing::warn!(segment = %path.display(), kept_bytes = offset, dropped_bytes = size - offset, "cutting an unacknowledged tail off a log segment");
        file.set_len(offset)
            .and_then(|()| file.sync_all())
            .map_err(|e| LogsError::io("truncating", path, e))?;
    }
    Ok(())
}

/// The one thread that appends to segments.
struct Writer {
    dir: PathBuf,
    state: Arc<RwLock<State>>,
    active_id: u64,
    active: File,
    active_size: u64,
}

impl Writer {
    fn run(mut self, jobs: Receiver<Job>) {
        let mut buffer = Vec::new();
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            let mut bytes: usize = batch.iter().map(job_bytes).sum();
            while bytes < COMMIT_MAX_BYTES {
                match jobs.try_recv() {
                    Ok(job) => {
                        bytes += job_bytes(&job);
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            let result = self.commit(&batch, &mut buffer);
            let mut roll_requested = false;
            for job in batch {
                match job {
                    Job::Append { reply, .. } => {
                        let _ = reply.send(result.clone());
                    }
                    Job::Roll { reply } => {
                        roll_requested = true;
                        let answer = if self.active_size > 0 {
                            self.roll().map_err(|e| e.to_string())
                        } else {
                            Ok(())
                        };
                        let _ = reply.send(answer);
                    }
                }
            }
            if !roll_requested && self.active_size >= SEGMENT_MAX_BYTES {
                if let Err(error) = self.roll() {
                    tracing::error!(%error, "could not start a new log segment");
                }
            }
        }
    }

    /// Appends every chunk of the batch, syncs once, then indexes them.
    fn commit(&mut self, batch: &[Job], buffer: &mut Vec<u8>) -> Result<(), String> {
        buffer.clear();
        let mut placed = Vec::new();
        for job in batch {
            if let Job::Append { chunks, .. } = job {
                for chunk in chunks {
                    placed.push((self.active_size + buffer.len() as u64, chunk));
                    buffer.extend_from_slice(&chunk.bytes);
                }
            }
        }
        if buffer.is_empty() {
            return Ok(());
        }
        let written = self
            .active
            .write_all(buffer)
            .and_then(|()| self.active.sync_data());
        if let Err(error) = written {
            // Nothing of this batch was acknowledged; cut it off so the file
            // holds only whole, answered chunks.
            let _ = self.active.set_len(self.active_size);
            return Err(error.to_string());
        }
        self.active_size += buffer.len() as u64;
        let Ok(mut state) = self.state.write() else {
            return Err("the store's state is poisoned".to_owned());
        };
        for (offset, chunk) in placed {
            let Some(stream) = state.streams.get_mut(&chunk.header.stream_id) else {
                continue;
            };
            let located = ChunkRef {
                segment: self.active_id,
                offset,
                header: chunk.header,
            };
            match chunk.moved_from {
                Some(from) => {
                    if let Some(existing) = stream
                        .chunks
                        .iter_mut()
                        .find(|c| c.segment == from && c.header.first_seq == chunk.header.first_seq)
                    {
                        *existing = located;
                    }
                }
                None => {
                    stream.last_ingestion_ms = stream
                        .last_ingestion_ms
                        .max(Some(chunk.header.ingestion_ms));
                    stream.chunks.push(located);
                }
            }
        }
        Ok(())
    }

    fn roll(&mut self) -> Result<(), LogsError> {
        let id = self.active_id + 1;
        let (file, segment) = create_segment(&self.dir, id)?;
        let mut state = self.state.write().map_err(|_| LogsError::WriterStopped)?;
        state.segments.insert(id, Arc::new(segment));
        state.active_segment = id;
        drop(state);
        self.active = file;
        self.active_id = id;
        self.active_size = 0;
        Ok(())
    }
}

fn job_bytes(job: &Job) -> usize {
    match job {
        Job::Append { chunks, .. } => chunks.iter().map(|c| c.bytes.len()).sum(),
        Job::Roll { .. } => 0,
    }
}
