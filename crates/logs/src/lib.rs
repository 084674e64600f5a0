//! A CloudWatch Logs-compatible store: log groups and streams, events kept
//! in segment files with an in-memory index, and the Logs API over them.
//!
//! - [`segment`]: the chunk format on disk.
//! - [`engine`]: [`LogStore`], group commit, queries, retention and
//!   compaction.
//! - [`pattern`]: filter patterns.
//! - [`api`]: [`LogsService`], AWS's operations, limits and errors.
//!
//! *API boundary:* this crate sees typed requests and answers typed
//! responses; HTTP, signatures and the wall clock belong to the edge.

pub mod api;
pub mod engine;
mod error;
pub mod pattern;
pub mod segment;

pub use api::LogsService;
pub use engine::{EventKey, EventQuery, LogStore, MaintenanceReport};
pub use error::LogsError;
pub use pattern::Pattern;
