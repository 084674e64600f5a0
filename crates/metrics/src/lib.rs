//! CloudWatch's metrics, metric math and alarms as a library: a series store
//! with CloudWatch's retention tiers and durability, GetMetricStatistics,
//! ListMetrics and GetMetricData (with metric math) over it, and metric
//! alarms evaluated as CloudWatch evaluates them.
//!
//! *API boundary:* plain types that map one to one onto CloudWatch's
//! concepts; no HTTP, no wire types. Time is passed in (`now_ms`), never
//! read here; the only I/O is the store's own directory.

#![forbid(unsafe_code)]
// Tests may unwrap: a panic is their failure report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod aggregate;
pub mod alarm;
pub mod disk;
pub mod error;
pub mod math;
pub mod metric_data;
pub mod names;
pub mod put;
pub mod query;
pub mod sketch;
pub mod statistic;
pub mod store;
pub mod time;
pub mod units;

pub use error::{CloudWatchError, ErrorCode, StorageError};
pub use names::{Dimension, DimensionFilter, MetricKey};
pub use store::{Durability, MetricStore, StoreLimits};
pub use units::Unit;
