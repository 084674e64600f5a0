//! The store's files. Three kinds, all made of framed records
//! (`[payload length u32][CRC-32 u32][payload]`, little endian), so that a
//! torn write at the end of a file is found and cut off on recovery:
//!
//! ```text
//! DIR/series.log            one record per series: id, unit, key (append only)
//! DIR/wal-NNNNNNNNNN.log    datums since the last checkpoint (the write-ahead log)
//! DIR/m1/DAY.seg            sealed hours of 1-minute points, one record per series and hour
//! DIR/m5/DAY.seg            a day of 5-minute points per series, rolled up from m1
//! DIR/h1/DAY.seg            a day of 1-hour points per series, rolled up from m5
//! ```
//!
//! Checkpoint `k` seals data of WAL generation `k` into m1 records tagged
//! `k`, then writes generation `k + 1` (what is still in memory) to a
//! temporary file, renames it into place and only then deletes generation
//! `k`. Recovery replays the newest complete generation `m` and cuts every
//! segment record tagged `m` or later: those were written by a checkpoint
//! that did not finish, and the generation it would have replaced still
//! holds their data. Rollups write a whole new day file under a temporary
//! name, rename it, then delete the finer file; records they write carry
//! tag 0 and are never cut.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::aggregate::{decode_points, encode_points, Aggregate};
use crate::error::StorageError;
use crate::names::{Dimension, MetricKey};
use crate::sketch::{get_varint, put_varint};
use crate::time::DAY_MS;
use crate::units::Unit;

/// Largest record accepted when reading: a day of 5-minute points with full
/// sketches fits well within it; anything larger is corruption.
const RECORD_BYTES_MAX: usize = 64 << 20;
const RECORD_HEADER_BYTES: usize = 8;

/// The tiers kept on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiskTier {
    Minute,
    FiveMinutes,
    Hour,
}

impl DiskTier {
    pub fn directory(self) -> &'static str {
        match self {
            DiskTier::Minute => "m1",
            DiskTier::FiveMinutes => "m5",
            DiskTier::Hour => "h1",
        }
    }

    pub fn resolution_ms(self) -> i64 {
        match self {
            DiskTier::Minute => 60_000,
            DiskTier::FiveMinutes => 300_000,
            DiskTier::Hour => 3_600_000,
        }
    }

    pub const ALL: [DiskTier; 3] = [DiskTier::Minute, DiskTier::FiveMinutes, DiskTier::Hour];
}

pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for byte in bytes {
        crc = TABLE[((crc ^ *byte as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

pub(crate) fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads every intact record of a file; returns them with their offsets
/// and the length of the intact prefix.
/// Records with their offsets, and the length of the intact prefix.
type Records = (Vec<(u64, Vec<u8>)>, u64);

fn read_records(path: &Path) -> Result<Records, StorageError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes)
                .map_err(|e| StorageError::io(path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(StorageError::io(path, e)),
    }
    let mut records = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= RECORD_HEADER_BYTES {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        let end = at + RECORD_HEADER_BYTES + length;
        if length > RECORD_BYTES_MAX || end > bytes.len() {
            break;
        }
        let payload = &bytes[at + RECORD_HEADER_BYTES..end];
        if crc32(payload) != crc {
            break;
        }
        records.push((at as u64, payload.to_vec()));
        at = end;
    }
    Ok((records, at as u64))
}

fn truncate(path: &Path, length: u64) -> Result<(), StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))?;
    file.set_len(length)
        .map_err(|e| StorageError::io(path, e))?;
    file.sync_all().map_err(|e| StorageError::io(path, e))
}

fn sync_directory(path: &Path) -> Result<(), StorageError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| StorageError::io(path, e))
}

/// A series as the series log records it.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesDefinition {
    pub id: u32,
    pub key: MetricKey,
    pub unit: Unit,
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn get_text(input: &mut &[u8]) -> Option<String> {
    let length = get_varint(input)? as usize;
    if input.len() < length {
        return None;
    }
    let (text, rest) = input.split_at(length);
    *input = rest;
    String::from_utf8(text.to_vec()).ok()
}

fn encode_series(definition: &SeriesDefinition) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&definition.id.to_le_bytes());
    out.push(definition.unit.code());
    put_text(&mut out, &definition.key.namespace);
    put_text(&mut out, &definition.key.name);
    put_varint(&mut out, definition.key.dimensions.len() as u64);
    for dimension in &definition.key.dimensions {
        put_text(&mut out, &dimension.name);
        put_text(&mut out, &dimension.value);
    }
    out
}

fn decode_series(mut input: &[u8]) -> Option<SeriesDefinition> {
    let (id, rest) = input.split_first_chunk::<4>()?;
    let id = u32::from_le_bytes(*id);
    let (&unit, rest) = rest.split_first()?;
    input = rest;
    let namespace = get_text(&mut input)?;
    let name = get_text(&mut input)?;
    let count = get_varint(&mut input)? as usize;
    let mut dimensions = Vec::with_capacity(count.min(crate::names::DIMENSIONS_MAX));
    for _ in 0..count {
        dimensions.push(Dimension {
            name: get_text(&mut input)?,
            value: get_text(&mut input)?,
        });
    }
    Some(SeriesDefinition {
        id,
        key: MetricKey {
            namespace,
            name,
            dimensions,
        },
        unit: Unit::from_code(unit)?,
    })
}

/// What a WAL entry updates: the 1-second tier, the 1-minute tier, or both.
pub const WAL_SECONDS: u8 = 1;
pub const WAL_MINUTES: u8 = 2;

#[derive(Clone, Debug, PartialEq)]
pub struct WalEntry {
    pub series: u32,
    pub tiers: u8,
    pub timestamp_ms: i64,
    pub aggregate: Aggregate,
}

fn encode_wal_entry(entry: &WalEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(&entry.series.to_le_bytes());
    out.push(entry.tiers);
    out.extend_from_slice(&entry.timestamp_ms.to_le_bytes());
    entry.aggregate.encode(out);
}

fn decode_wal_payload(mut input: &[u8]) -> Option<Vec<WalEntry>> {
    let mut entries = Vec::new();
    while !input.is_empty() {
        let (series, rest) = input.split_first_chunk::<4>()?;
        let (&tiers, rest) = rest.split_first()?;
        let (timestamp, rest) = rest.split_first_chunk::<8>()?;
        input = rest;
        let aggregate = Aggregate::decode(&mut input)?;
        entries.push(WalEntry {
            series: u32::from_le_bytes(*series),
            tiers,
            timestamp_ms: i64::from_le_bytes(*timestamp),
            aggregate,
        });
    }
    Some(entries)
}

/// One sealed run of points of one series.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub series: u32,
    pub start_ms: i64,
    pub points: Vec<(i64, Aggregate)>,
}

fn encode_chunk(checkpoint: u64, tier: DiskTier, chunk: &Chunk) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + chunk.points.len() * 48);
    out.extend_from_slice(&checkpoint.to_le_bytes());
    out.extend_from_slice(&chunk.series.to_le_bytes());
    out.extend_from_slice(&chunk.start_ms.to_le_bytes());
    let resolution = tier.resolution_ms();
    let offsets: Vec<(u32, &Aggregate)> = chunk
        .points
        .iter()
        .map(|(time, aggregate)| (((time - chunk.start_ms) / resolution) as u32, aggregate))
        .collect();
    encode_points(&offsets, &mut out);
    out
}

struct ChunkHeader {
    checkpoint: u64,
    series: u32,
}

fn chunk_header(payload: &[u8]) -> Option<ChunkHeader> {
    Some(ChunkHeader {
        checkpoint: u64::from_le_bytes(*payload.first_chunk::<8>()?),
        series: u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?),
    })
}

fn decode_chunk(tier: DiskTier, payload: &[u8]) -> Option<Chunk> {
    let header = chunk_header(payload)?;
    let start_ms = i64::from_le_bytes(payload.get(12..20)?.try_into().ok()?);
    let mut input = payload.get(20..)?;
    let points = decode_points(&mut input)?
        .into_iter()
        .map(|(offset, aggregate)| (start_ms + offset as i64 * tier.resolution_ms(), aggregate))
        .collect();
    Some(Chunk {
        series: header.series,
        start_ms,
        points,
    })
}

/// Where each series' records are in one day file.
#[derive(Default)]
struct DayFile {
    length: u64,
    by_series: HashMap<u32, Vec<(u64, u32)>>,
}

pub struct Disk {
    dir: PathBuf,
    series_log: File,
    series_pending: Vec<u8>,
    wal: File,
    wal_generation: u64,
    wal_pending: Vec<u8>,
    days: BTreeMap<(DiskTier, i64), DayFile>,
}

/// What recovery found: series, and the WAL's entries to replay.
pub struct Recovered {
    pub series: Vec<SeriesDefinition>,
    pub wal: Vec<WalEntry>,
}

fn wal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("wal-{generation:010}.log"))
}

fn day_path(dir: &Path, tier: DiskTier, day: i64) -> PathBuf {
    dir.join(tier.directory()).join(format!("{day}.seg"))
}

impl Disk {
    /// Opens (creating if needed) a store directory and recovers it.
    pub fn open(dir: &Path) -> Result<(Disk, Recovered), StorageError> {
        for tier in DiskTier::ALL {
            fs::create_dir_all(dir.join(tier.directory())).map_err(|e| StorageError::io(dir, e))?;
        }
        // Series.
        let series_path = dir.join("series.log");
        let (records, intact) = read_records(&series_path)?;
        let mut series = Vec::with_capacity(records.len());
        for (_, payload) in &records {
            match decode_series(payload) {
                Some(definition) => series.push(definition),
                None => {
                    return Err(StorageError::Corrupt {
                        path: series_path.display().to_string(),
                        offset: 0,
                        reason: "a series record does not decode".into(),
                    })
                }
            }
        }
        let series_log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&series_path)
            .map_err(|e| StorageError::io(&series_path, e))?;
        series_log
            .set_len(intact)
            .map_err(|e| StorageError::io(&series_path, e))?;
        // The newest complete WAL generation; older ones are leftovers of a
        // checkpoint that stopped after renaming the new one.
        let mut generations: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| StorageError::io(dir, e))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("wal-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        generations.sort_unstable();
        let generation = generations.last().copied().unwrap_or(1);
        for old in generations.iter().filter(|g| **g < generation) {
            let _ = fs::remove_file(wal_path(dir, *old));
        }
        for entry in fs::read_dir(dir)
            .map_err(|e| StorageError::io(dir, e))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        let path = wal_path(dir, generation);
        let (records, intact) = read_records(&path)?;
        let mut wal_entries = Vec::new();
        for (_, payload) in records {
            if let Some(entries) = decode_wal_payload(&payload) {
                wal_entries.extend(entries);
            }
        }
        let wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        wal.set_len(intact)
            .map_err(|e| StorageError::io(&path, e))?;
        let mut disk = Disk {
            dir: dir.to_path_buf(),
            series_log,
            series_pending: Vec::new(),
            wal,
            wal_generation: generation,
            wal_pending: Vec::new(),
            days: BTreeMap::new(),
        };
        disk.index_days(generation)?;
        Ok((
            disk,
            Recovered {
                series,
                wal: wal_entries,
            },
        ))
    }

    fn index_days(&mut self, generation: u64) -> Result<(), StorageError> {
        for tier in DiskTier::ALL {
            let directory = self.dir.join(tier.directory());
            let mut days: Vec<i64> = fs::read_dir(&directory)
                .map_err(|e| StorageError::io(&directory, e))?
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name().into_string().ok()?;
                    name.strip_suffix(".seg")?.parse().ok()
                })
                .collect();
            days.sort_unstable();
            for day in days {
                // A finer file whose rollup already landed is a leftover.
                if let Some(coarser) = coarser(tier) {
                    if day_path(&self.dir, coarser, day).exists() {
                        let _ = fs::remove_file(day_path(&self.dir, tier, day));
                        continue;
                    }
                }
                let path = day_path(&self.dir, tier, day);
                let (records, intact) = read_records(&path)?;
                let mut file = DayFile::default();
                let mut valid_length = 0u64;
                for (offset, payload) in &records {
                    let Some(header) = chunk_header(payload) else {
                        break;
                    };
                    if header.checkpoint != 0 && header.checkpoint >= generation {
                        break;
                    }
                    file.by_series
                        .entry(header.series)
                        .or_default()
                        .push((*offset, payload.len() as u32));
                    valid_length = offset + (RECORD_HEADER_BYTES + payload.len()) as u64;
                }
                if valid_length != intact || records.is_empty() {
                    truncate(&path, valid_length)?;
                }
                file.length = valid_length;
                self.days.insert((tier, day), file);
            }
        }
        Ok(())
    }

    pub fn wal_generation(&self) -> u64 {
        self.wal_generation
    }

    pub fn append_series(&mut self, definition: &SeriesDefinition) {
        frame(&encode_series(definition), &mut self.series_pending);
    }

    pub fn append_wal(&mut self, entries: &[WalEntry]) {
        if entries.is_empty() {
            return;
        }
        let mut payload = Vec::with_capacity(entries.len() * 40);
        for entry in entries {
            encode_wal_entry(entry, &mut payload);
        }
        frame(&payload, &mut self.wal_pending);
    }

    pub fn has_pending(&self) -> bool {
        !self.wal_pending.is_empty() || !self.series_pending.is_empty()
    }

    /// Writes and fsyncs everything appended since the last commit: series
    /// first, so that every WAL record names a series that survives.
    pub fn commit(&mut self) -> Result<(), StorageError> {
        if !self.series_pending.is_empty() {
            let path = self.dir.join("series.log");
            self.series_log
                .write_all(&self.series_pending)
                .and_then(|_| self.series_log.sync_data())
                .map_err(|e| StorageError::io(&path, e))?;
            self.series_pending.clear();
        }
        if !self.wal_pending.is_empty() {
            let path = wal_path(&self.dir, self.wal_generation);
            self.wal
                .write_all(&self.wal_pending)
                .and_then(|_| self.wal.sync_data())
                .map_err(|e| StorageError::io(&path, e))?;
            self.wal_pending.clear();
        }
        Ok(())
    }

    /// Appends chunks to their day files, tagged with the current
    /// generation, and fsyncs every file touched.
    pub fn write_chunks(&mut self, tier: DiskTier, chunks: &[Chunk]) -> Result<(), StorageError> {
        let mut by_day: BTreeMap<i64, Vec<&Chunk>> = BTreeMap::new();
        for chunk in chunks {
            by_day
                .entry(chunk.start_ms.div_euclid(DAY_MS))
                .or_default()
                .push(chunk);
        }
        for (day, chunks) in by_day {
            let path = day_path(&self.dir, tier, day);
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| StorageError::io(&path, e))?;
            let index = self.days.entry((tier, day)).or_default();
            let mut bytes = Vec::new();
            let mut placed = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                let payload = encode_chunk(self.wal_generation, tier, chunk);
                placed.push((
                    chunk.series,
                    index.length + bytes.len() as u64,
                    payload.len() as u32,
                ));
                frame(&payload, &mut bytes);
            }
            file.write_all(&bytes)
                .and_then(|_| file.sync_data())
                .map_err(|e| StorageError::io(&path, e))?;
            index.length += bytes.len() as u64;
            for (series, offset, length) in placed {
                index
                    .by_series
                    .entry(series)
                    .or_default()
                    .push((offset, length));
            }
        }
        Ok(())
    }

    /// Points of one series in [start, end) from one tier's files.
    pub fn read(
        &self,
        tier: DiskTier,
        series: u32,
        start_ms: i64,
        end_ms: i64,
        out: &mut Vec<(i64, Aggregate)>,
    ) -> Result<(), StorageError> {
        let first_day = start_ms.div_euclid(DAY_MS);
        let last_day = (end_ms - 1).div_euclid(DAY_MS);
        for ((_, day), file) in self.days.range((tier, first_day)..=(tier, last_day)) {
            let Some(places) = file.by_series.get(&series) else {
                continue;
            };
            let path = day_path(&self.dir, tier, *day);
            let handle = File::open(&path).map_err(|e| StorageError::io(&path, e))?;
            for (offset, length) in places {
                let mut payload = vec![0u8; *length as usize];
                handle
                    .read_exact_at(&mut payload, offset + RECORD_HEADER_BYTES as u64)
                    .map_err(|e| StorageError::io(&path, e))?;
                let chunk = decode_chunk(tier, &payload).ok_or_else(|| StorageError::Corrupt {
                    path: path.display().to_string(),
                    offset: *offset,
                    reason: "a chunk does not decode".into(),
                })?;
                out.extend(
                    chunk
                        .points
                        .into_iter()
                        .filter(|(time, _)| *time >= start_ms && *time < end_ms),
                );
            }
        }
        Ok(())
    }

    /// Starts WAL generation `current + 1` holding `entries` (what memory
    /// still holds), then removes the current one.
    pub fn rotate_wal(&mut self, entries: &[WalEntry]) -> Result<(), StorageError> {
        self.commit()?;
        let next = self.wal_generation + 1;
        let path = wal_path(&self.dir, next);
        let temporary = path.with_extension("log.tmp");
        let mut bytes = Vec::new();
        for batch in entries.chunks(4_096) {
            let mut payload = Vec::new();
            for entry in batch {
                encode_wal_entry(entry, &mut payload);
            }
            frame(&payload, &mut bytes);
        }
        let mut file = File::create(&temporary).map_err(|e| StorageError::io(&temporary, e))?;
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| StorageError::io(&temporary, e))?;
        fs::rename(&temporary, &path).map_err(|e| StorageError::io(&path, e))?;
        sync_directory(&self.dir)?;
        let old = wal_path(&self.dir, self.wal_generation);
        let _ = fs::remove_file(&old);
        self.wal = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        self.wal_generation = next;
        Ok(())
    }

    /// Days of a tier on disk, oldest first.
    pub fn days(&self, tier: DiskTier) -> Vec<i64> {
        self.days
            .keys()
            .filter(|(t, _)| *t == tier)
            .map(|(_, day)| *day)
            .collect()
    }

    pub fn bytes(&self) -> u64 {
        self.days.values().map(|file| file.length).sum()
    }

    /// Every chunk of a day file.
    pub fn read_day(&self, tier: DiskTier, day: i64) -> Result<Vec<Chunk>, StorageError> {
        let path = day_path(&self.dir, tier, day);
        let (records, _) = read_records(&path)?;
        Ok(records
            .iter()
            .filter_map(|(_, payload)| decode_chunk(tier, payload))
            .collect())
    }

    /// Replaces `from`'s day file by `chunks` in tier `to`: the new file
    /// lands whole (temporary name, fsync, rename) before the old goes.
    pub fn roll_day(
        &mut self,
        from: DiskTier,
        to: DiskTier,
        day: i64,
        chunks: &[Chunk],
    ) -> Result<(), StorageError> {
        let path = day_path(&self.dir, to, day);
        let temporary = path.with_extension("seg.tmp");
        let mut bytes = Vec::new();
        let mut index = DayFile::default();
        for chunk in chunks {
            let payload = encode_chunk(0, to, chunk);
            index
                .by_series
                .entry(chunk.series)
                .or_default()
                .push((bytes.len() as u64, payload.len() as u32));
            frame(&payload, &mut bytes);
        }
        index.length = bytes.len() as u64;
        let mut file = File::create(&temporary).map_err(|e| StorageError::io(&temporary, e))?;
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| StorageError::io(&temporary, e))?;
        fs::rename(&temporary, &path).map_err(|e| StorageError::io(&path, e))?;
        sync_directory(&self.dir.join(to.directory()))?;
        self.days.insert((to, day), index);
        self.delete_day(from, day)
    }

    pub fn delete_day(&mut self, tier: DiskTier, day: i64) -> Result<(), StorageError> {
        let path = day_path(&self.dir, tier, day);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&path, e)),
        }
        self.days.remove(&(tier, day));
        Ok(())
    }
}

fn coarser(tier: DiskTier) -> Option<DiskTier> {
    match tier {
        DiskTier::Minute => Some(DiskTier::FiveMinutes),
        DiskTier::FiveMinutes => Some(DiskTier::Hour),
        DiskTier::Hour => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut bytes = Vec::new();
        frame(b"one", &mut bytes);
        frame(b"two", &mut bytes);
        bytes.truncate(bytes.len() - 1);
        fs::write(&path, &bytes).unwrap();
        let (records, intact) = read_records(&path).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(intact, 11);
    }

    #[test]
    fn series_definitions_round_trip() {
        let definition = SeriesDefinition {
            id: 7,
            key: MetricKey::new(
                "AWS/ECS",
                "CPUUtilization",
                &[("ClusterName", "c"), ("ServiceName", "s")],
            ),
            unit: Unit::Percent,
        };
        assert_eq!(decode_series(&encode_series(&definition)), Some(definition));
    }
}
