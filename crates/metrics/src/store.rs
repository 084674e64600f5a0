//! The series store: ingest, retention tiers, durability and the reads
//! every query is built on.
//!
//! ```text
//! PutMetricData ─▶ check_put_metric_data ─▶ MetricStore::put
//!                                              │ WAL append (+ fsync: per put, or per interval)
//!                                              ▼
//!                    memory: per series, 1-second points (3 h, high resolution only)
//!                            and 1-minute points not yet sealed (≤ 2 h)
//!                                              │ checkpoint (tick): hours older than an hour
//!                                              ▼
//!                    disk:   m1 (15 days) ─rollup─▶ m5 (63 days) ─rollup─▶ h1 (455 days)
//! ```
//!
//! Without a directory the store keeps 1-minute points in memory for 15
//! days (simulation and tests); with one, memory holds only what is not
//! yet sealed, and the disk is bounded by `StoreLimits::disk_bytes_max`
//! (oldest days dropped first).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::aggregate::Aggregate;
use crate::disk::{Chunk, Disk, DiskTier, SeriesDefinition, WalEntry, WAL_MINUTES, WAL_SECONDS};
use crate::error::{CloudWatchError, ErrorCode, StorageError};
use crate::names::MetricKey;
use crate::put::Datum;
use crate::time::{floor_to, DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS};
use crate::units::Unit;

/// High-resolution (1-second) points are kept for 3 hours.
pub const SECONDS_RETENTION_MS: i64 = 3 * HOUR_MS;
/// 1-minute points: 15 days.
pub const MINUTES_RETENTION_MS: i64 = 15 * DAY_MS;
/// 5-minute points: 63 days.
pub const FIVE_MINUTES_RETENTION_MS: i64 = 63 * DAY_MS;
/// 1-hour points: 455 days.
pub const HOURS_RETENTION_MS: i64 = 455 * DAY_MS;
/// Minutes stay in memory until their hour ended this long ago, so that
/// alarms and recent queries read memory, and late datums (a few seconds
/// to minutes) mostly land before the hour is sealed.
pub const SEAL_DELAY_MS: i64 = HOUR_MS;
/// How often a checkpoint seals hours and rotates the WAL.
pub const CHECKPOINT_INTERVAL_MS: i64 = 10 * MINUTE_MS;
/// ListMetrics: metrics without data for this long are not listed.
pub const LIST_ACTIVE_MS: i64 = 14 * DAY_MS;
/// ListMetrics with RecentlyActive=PT3H.
pub const RECENTLY_ACTIVE_MS: i64 = 3 * HOUR_MS;
/// ListMetrics' page.
pub const LIST_METRICS_PAGE: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every `put` is on disk before it returns (group commit is the
    /// caller's: hand several requests to one `put_batches`).
    EveryPut,
    /// The WAL is fsynced by `tick` at most this long after a put: a kill -9
    /// loses at most this much acknowledged data.
    IntervalMs(i64),
}

#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    /// Series (metric and unit) the store holds; PutMetricData creating
    /// more is refused.
    pub series_max: usize,
    /// Bytes of segment files; past it the oldest days are dropped.
    pub disk_bytes_max: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            series_max: 200_000,
            disk_bytes_max: 16 << 30,
        }
    }
}

pub type SeriesId = u32;

struct Series {
    key: MetricKey,
    unit: Unit,
    last_seen_ms: i64,
    /// 1-second points, high-resolution datums only.
    seconds: BTreeMap<i64, Aggregate>,
    /// 1-minute points not yet sealed (all of them without a disk).
    minutes: BTreeMap<i64, Aggregate>,
}

pub struct MetricStore {
    series: Vec<Series>,
    by_metric: BTreeMap<MetricKey, Vec<SeriesId>>,
    disk: Option<Disk>,
    durability: Durability,
    limits: StoreLimits,
    last_commit_ms: i64,
    last_checkpoint_ms: i64,
}

/// Which tier a query reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Second,
    Minute,
    FiveMinutes,
    Hour,
}

impl Tier {
    pub fn resolution_ms(self) -> i64 {
        match self {
            Tier::Second => SECOND_MS,
            Tier::Minute => MINUTE_MS,
            Tier::FiveMinutes => 5 * MINUTE_MS,
            Tier::Hour => HOUR_MS,
        }
    }

    /// The tier CloudWatch serves a query from, by the age of its start and
    /// its period; None when the period does not fit the tier the data is in
    /// ("no data points in that time range is returned").
    pub fn for_query(start_ms: i64, period_s: i64, now_ms: i64) -> Option<Tier> {
        let age = now_ms - start_ms;
        let period_ms = period_s * SECOND_MS;
        let tier = if period_s < 60 {
            Tier::Second
        } else if age <= MINUTES_RETENTION_MS {
            Tier::Minute
        } else if age <= FIVE_MINUTES_RETENTION_MS {
            Tier::FiveMinutes
        } else {
            Tier::Hour
        };
        (period_ms % tier.resolution_ms() == 0).then_some(tier)
    }
}

impl MetricStore {
    /// A store in memory only (simulation, tests).
    pub fn in_memory(limits: StoreLimits) -> MetricStore {
        MetricStore {
            series: Vec::new(),
            by_metric: BTreeMap::new(),
            disk: None,
            durability: Durability::EveryPut,
            limits,
            last_commit_ms: 0,
            last_checkpoint_ms: 0,
        }
    }

    /// Opens a store directory, recovering what the last run acknowledged.
    pub fn open(
        dir: &Path,
        durability: Durability,
        limits: StoreLimits,
        now_ms: i64,
    ) -> Result<MetricStore, StorageError> {
        let (disk, recovered) = Disk::open(dir)?;
        let mut store = MetricStore {
            disk: None,
            durability,
            last_commit_ms: now_ms,
            last_checkpoint_ms: now_ms,
            ..MetricStore::in_memory(limits)
        };
        for definition in recovered.series {
            if definition.id as usize != store.series.len() {
                return Err(StorageError::Corrupt {
                    path: dir.join("series.log").display().to_string(),
                    offset: 0,
                    reason: format!("series {} out of order", definition.id),
                });
            }
            store.add_series(definition.key, definition.unit);
        }
        for entry in recovered.wal {
            store.apply(&entry);
        }
        store.disk = Some(disk);
        Ok(store)
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Points held in memory (1-second and 1-minute), for accounting.
    pub fn points_in_memory(&self) -> usize {
        self.series
            .iter()
            .map(|series| series.seconds.len() + series.minutes.len())
            .sum()
    }

    pub fn disk_bytes(&self) -> u64 {
        self.disk.as_ref().map_or(0, Disk::bytes)
    }

    fn add_series(&mut self, key: MetricKey, unit: Unit) -> SeriesId {
        let id = self.series.len() as SeriesId;
        self.by_metric.entry(key.clone()).or_default().push(id);
        self.series.push(Series {
            key,
            unit,
            last_seen_ms: i64::MIN,
            seconds: BTreeMap::new(),
            minutes: BTreeMap::new(),
        });
        id
    }

    fn series_id(&self, key: &MetricKey, unit: Unit) -> Option<SeriesId> {
        self.by_metric
            .get(key)?
            .iter()
            .copied()
            .find(|id| self.series[*id as usize].unit == unit)
    }

    fn apply(&mut self, entry: &WalEntry) {
        let Some(series) = self.series.get_mut(entry.series as usize) else {
            return;
        };
        series.last_seen_ms = series.last_seen_ms.max(entry.timestamp_ms);
        if entry.tiers & WAL_SECONDS != 0 {
            merge_into(
                &mut series.seconds,
                floor_to(entry.timestamp_ms, SECOND_MS),
                &entry.aggregate,
            );
        }
        if entry.tiers & WAL_MINUTES != 0 {
            merge_into(
                &mut series.minutes,
                floor_to(entry.timestamp_ms, MINUTE_MS),
                &entry.aggregate,
            );
        }
    }

    /// Stores checked datums (one PutMetricData). With `Durability::EveryPut`
    /// they are on disk when this returns.
    pub fn put(&mut self, datums: &[Datum], now_ms: i64) -> Result<(), CloudWatchError> {
        self.put_batches(&[datums], now_ms)
    }

    /// Stores several requests with one commit: the edge's group commit.
    /// All are refused if the series limit would be passed.
    pub fn put_batches(
        &mut self,
        batches: &[&[Datum]],
        now_ms: i64,
    ) -> Result<(), CloudWatchError> {
        let new_series = batches
            .iter()
            .flat_map(|batch| batch.iter())
            .filter(|datum| self.series_id(&datum.key, datum.unit).is_none())
            .count();
        if self.series.len() + new_series > self.limits.series_max {
            return Err(CloudWatchError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "The maximum number of metrics ({}) has been reached; no datum of this request was stored.",
                    self.limits.series_max
                ),
            ));
        }
        let mut entries = Vec::with_capacity(batches.iter().map(|b| b.len()).sum());
        for datum in batches.iter().flat_map(|batch| batch.iter()) {
            let id = match self.series_id(&datum.key, datum.unit) {
                Some(id) => id,
                None => {
                    let id = self.add_series(datum.key.clone(), datum.unit);
                    if let Some(disk) = &mut self.disk {
                        disk.append_series(&SeriesDefinition {
                            id,
                            key: datum.key.clone(),
                            unit: datum.unit,
                        });
                    }
                    id
                }
            };
            let tiers = if datum.high_resolution {
                WAL_SECONDS | WAL_MINUTES
            } else {
                WAL_MINUTES
            };
            entries.push(WalEntry {
                series: id,
                tiers,
                timestamp_ms: datum.timestamp_ms,
                aggregate: datum.aggregate.clone(),
            });
        }
        for entry in &entries {
            self.apply(entry);
        }
        if let Some(disk) = &mut self.disk {
            disk.append_wal(&entries);
            if self.durability == Durability::EveryPut {
                disk.commit().map_err(internal)?;
                self.last_commit_ms = now_ms;
            }
        }
        Ok(())
    }

    /// Periodic work: the interval fsync, checkpoints, rollups and
    /// retention. Call it every second or so with the current time.
    pub fn tick(&mut self, now_ms: i64) -> Result<(), StorageError> {
        if let (Some(disk), Durability::IntervalMs(interval)) = (&mut self.disk, self.durability) {
            if disk.has_pending() && now_ms - self.last_commit_ms >= interval {
                disk.commit()?;
                self.last_commit_ms = now_ms;
            }
        }
        if now_ms - self.last_checkpoint_ms >= CHECKPOINT_INTERVAL_MS {
            self.checkpoint(now_ms)?;
        }
        Ok(())
    }

    /// Drops what retention no longer keeps, seals old hours to disk,
    /// rotates the WAL and rolls up old days.
    pub fn checkpoint(&mut self, now_ms: i64) -> Result<(), StorageError> {
        self.last_checkpoint_ms = now_ms;
        let seconds_horizon = now_ms - SECONDS_RETENTION_MS;
        let minutes_horizon = now_ms - MINUTES_RETENTION_MS;
        for series in &mut self.series {
            series.seconds = series.seconds.split_off(&seconds_horizon);
            if series
                .minutes
                .first_key_value()
                .is_some_and(|(t, _)| *t < minutes_horizon)
            {
                series.minutes = series.minutes.split_off(&minutes_horizon);
            }
        }
        let Some(disk) = &mut self.disk else {
            return Ok(());
        };
        disk.commit()?;
        let seal_before = floor_to(now_ms - SEAL_DELAY_MS, HOUR_MS);
        let mut chunks = Vec::new();
        for (id, series) in self.series.iter_mut().enumerate() {
            if series
                .minutes
                .first_key_value()
                .is_none_or(|(t, _)| *t >= seal_before)
            {
                continue;
            }
            let keep = series.minutes.split_off(&seal_before);
            let sealed = std::mem::replace(&mut series.minutes, keep);
            let mut current: Option<Chunk> = None;
            for (time, aggregate) in sealed {
                let hour = floor_to(time, HOUR_MS);
                if current.as_ref().is_some_and(|chunk| chunk.start_ms != hour) {
                    chunks.extend(current.take());
                }
                current
                    .get_or_insert_with(|| Chunk {
                        series: id as u32,
                        start_ms: hour,
                        points: Vec::new(),
                    })
                    .points
                    .push((time, aggregate));
            }
            chunks.extend(current);
        }
        disk.write_chunks(DiskTier::Minute, &chunks)?;
        let mut remaining = Vec::new();
        for (id, series) in self.series.iter().enumerate() {
            for (time, aggregate) in &series.minutes {
                remaining.push(WalEntry {
                    series: id as u32,
                    tiers: WAL_MINUTES,
                    timestamp_ms: *time,
                    aggregate: aggregate.clone(),
                });
            }
            for (time, aggregate) in &series.seconds {
                remaining.push(WalEntry {
                    series: id as u32,
                    tiers: WAL_SECONDS,
                    timestamp_ms: *time,
                    aggregate: aggregate.clone(),
                });
            }
        }
        disk.rotate_wal(&remaining)?;
        self.last_commit_ms = now_ms;
        self.roll_up(now_ms)
    }

    fn roll_up(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let Some(disk) = &mut self.disk else {
            return Ok(());
        };
        let steps = [
            (
                DiskTier::Minute,
                Some(DiskTier::FiveMinutes),
                MINUTES_RETENTION_MS,
            ),
            (
                DiskTier::FiveMinutes,
                Some(DiskTier::Hour),
                FIVE_MINUTES_RETENTION_MS,
            ),
            (DiskTier::Hour, None, HOURS_RETENTION_MS),
        ];
        for (from, to, retention) in steps {
            for day in disk.days(from) {
                if (day + 1) * DAY_MS > now_ms - retention {
                    break;
                }
                match to {
                    Some(to) => {
                        let chunks = roll_chunks(disk.read_day(from, day)?, to, day);
                        disk.roll_day(from, to, day, &chunks)?;
                    }
                    None => disk.delete_day(from, day)?,
                }
            }
        }
        // The disk bound: oldest days first, whatever their tier.
        while disk.bytes() > self.limits.disk_bytes_max {
            let oldest = DiskTier::ALL
                .iter()
                .filter_map(|tier| disk.days(*tier).first().map(|day| (*day, *tier)))
                .min();
            match oldest {
                Some((day, tier)) => disk.delete_day(tier, day)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Forces everything acknowledged to disk (shutdown, tests).
    pub fn commit(&mut self, now_ms: i64) -> Result<(), StorageError> {
        self.last_commit_ms = now_ms;
        match &mut self.disk {
            Some(disk) => disk.commit(),
            None => Ok(()),
        }
    }

    /// Series of a metric: one per unit it was published with, or the one
    /// of `unit`.
    pub fn series_of(&self, key: &MetricKey, unit: Option<Unit>) -> Vec<SeriesId> {
        self.by_metric.get(key).map_or_else(Vec::new, |ids| {
            ids.iter()
                .copied()
                .filter(|id| unit.is_none_or(|unit| self.series[*id as usize].unit == unit))
                .collect()
        })
    }

    pub fn unit_of(&self, id: SeriesId) -> Unit {
        self.series[id as usize].unit
    }

    pub fn key_of(&self, id: SeriesId) -> &MetricKey {
        &self.series[id as usize].key
    }

    /// Bucket-level points of one series in [start, end) from one tier.
    pub fn points(
        &self,
        id: SeriesId,
        tier: Tier,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<(i64, Aggregate)>, StorageError> {
        let series = &self.series[id as usize];
        let mut out = Vec::new();
        if start_ms >= end_ms {
            return Ok(out);
        }
        match tier {
            Tier::Second => {
                out.extend(
                    series
                        .seconds
                        .range(start_ms..end_ms)
                        .map(|(t, a)| (*t, a.clone())),
                );
            }
            Tier::Minute => {
                if let Some(disk) = &self.disk {
                    disk.read(DiskTier::Minute, id, start_ms, end_ms, &mut out)?;
                }
                out.extend(
                    series
                        .minutes
                        .range(start_ms..end_ms)
                        .map(|(t, a)| (*t, a.clone())),
                );
            }
            Tier::FiveMinutes | Tier::Hour => {
                let disk_tier = if tier == Tier::Hour {
                    DiskTier::Hour
                } else {
                    DiskTier::FiveMinutes
                };
                if let Some(disk) = &self.disk {
                    disk.read(disk_tier, id, start_ms, end_ms, &mut out)?;
                    // Data not yet rolled up answers from the finer tier.
                    disk.read(DiskTier::Minute, id, start_ms, end_ms, &mut out)?;
                    if tier == Tier::Hour {
                        disk.read(DiskTier::FiveMinutes, id, start_ms, end_ms, &mut out)?;
                    }
                }
                out.extend(
                    series
                        .minutes
                        .range(start_ms..end_ms)
                        .map(|(t, a)| (*t, a.clone())),
                );
            }
        }
        Ok(out)
    }

    /// Aggregates of the given series merged into periods of `period_s`
    /// starting at `start_ms` (already rounded), keyed by period start.
    pub fn period_aggregates(
        &self,
        ids: &[SeriesId],
        start_ms: i64,
        end_ms: i64,
        period_s: i64,
        now_ms: i64,
    ) -> Result<BTreeMap<i64, Aggregate>, StorageError> {
        let mut periods: BTreeMap<i64, Aggregate> = BTreeMap::new();
        let Some(tier) = Tier::for_query(start_ms, period_s, now_ms) else {
            return Ok(periods);
        };
        let period_ms = period_s * SECOND_MS;
        for id in ids {
            for (time, aggregate) in self.points(*id, tier, start_ms, end_ms)? {
                let period = start_ms + (time - start_ms).div_euclid(period_ms) * period_ms;
                merge_into(&mut periods, period, &aggregate);
            }
        }
        Ok(periods)
    }

    /// Metrics in key order, after `after`, matching `filter`, active since
    /// `active_since_ms`; at most `limit`.
    pub fn metrics(
        &self,
        after: Option<&MetricKey>,
        active_since_ms: i64,
        limit: usize,
        filter: impl Fn(&MetricKey) -> bool,
    ) -> Vec<MetricKey> {
        let range = match after {
            Some(after) => self.by_metric.range::<MetricKey, _>((
                std::ops::Bound::Excluded(after),
                std::ops::Bound::Unbounded,
            )),
            None => self.by_metric.range::<MetricKey, _>(..),
        };
        range
            .filter(|(key, ids)| {
                filter(key)
                    && ids
                        .iter()
                        .any(|id| self.series[*id as usize].last_seen_ms >= active_since_ms)
            })
            .take(limit)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Metrics of a namespace, for SEARCH.
    pub fn metrics_in_namespace<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a MetricKey> + 'a {
        let start = MetricKey {
            namespace: namespace.to_string(),
            name: String::new(),
            dimensions: Vec::new(),
        };
        self.by_metric
            .range(start..)
            .map(|(key, _)| key)
            .take_while(move |key| key.namespace == namespace)
    }
}

fn merge_into(map: &mut BTreeMap<i64, Aggregate>, time: i64, aggregate: &Aggregate) {
    match map.get_mut(&time) {
        Some(existing) => existing.merge(aggregate),
        None => {
            map.insert(time, aggregate.clone());
        }
    }
}

/// A day's chunks of a finer tier as one chunk per series of `to`'s points.
fn roll_chunks(chunks: Vec<Chunk>, to: DiskTier, day: i64) -> Vec<Chunk> {
    let mut by_series: HashMap<u32, BTreeMap<i64, Aggregate>> = HashMap::new();
    for chunk in chunks {
        let points = by_series.entry(chunk.series).or_default();
        for (time, aggregate) in chunk.points {
            merge_into(points, floor_to(time, to.resolution_ms()), &aggregate);
        }
    }
    let mut rolled: Vec<Chunk> = by_series
        .into_iter()
        .map(|(series, points)| Chunk {
            series,
            start_ms: day * DAY_MS,
            points: points.into_iter().collect(),
        })
        .collect();
    rolled.sort_by_key(|chunk| chunk.series);
    rolled
}

fn internal(error: StorageError) -> CloudWatchError {
    CloudWatchError::new(ErrorCode::InternalServiceFault, error.to_string())
}
