//! Task placement for Flotilla: `place(snapshot, request) -> Plan`, with
//! ECS's placement strategies, constraints and Cluster Query Language.
//!
//! *Architecture invariant:* no I/O, no clock, no global randomness. The
//! `random` strategy draws from the request's seed. The same snapshot and
//! request always give the same plan; the control plane commits the plan
//! against the revisions its snapshot was read at and places again on conflict.
//!
//! *API boundary:* plain data in, plain data out. The control plane maps its
//! records to [`Instance`]s and its RunTask/StartTask input to a [`Request`],
//! and maps [`Plan::failures`] and [`ParseError`] to ECS's answers. Nothing
//! here knows the store, the wire types or HTTP.
//!
//! See README.md for the pipeline and its vocabulary.

#![forbid(unsafe_code)]

pub mod cql;
mod engine;
mod plan;
mod resource_index;
pub mod rng;
mod snapshot;

pub use cql::{Expression, ParseError};
pub use engine::{explain, place, Outcome, Verdict};
pub use plan::{
    BinpackField, Constraint, Delta, Failure, Plan, Reason, Request, RequestError, SpreadField,
    Strategy, StrategyError, CONSTRAINTS_MAX, FAILURES_MAX, STRATEGIES_MAX, TASKS_PER_REQUEST_MAX,
};
pub use snapshot::{Instance, InstanceIndex, InstanceStatus, LaunchKind, Resources, Snapshot};
