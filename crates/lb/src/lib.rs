//! Flotilla's load balancer data plane: application (HTTP, HTTPS, h2) and
//! network (TCP, UDP) load balancers served from versioned configuration
//! snapshots in ELBv2's own shapes.
//!
//! It knows neither the store, nor ECS, nor the ELBv2 wire protocol: a
//! [`Snapshot`] comes in (from a file today, from the control plane later),
//! [`DataPlane::apply`] swaps it in atomically or refuses it whole, and
//! target health flows out through [`DataPlane::subscribe_health`] and
//! [`DataPlane::target_health`]; metrics through [`DataPlane::metrics`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
mod checker;
pub mod config;
pub mod edge;
pub mod health;
mod listener;
pub mod metrics;
pub mod pattern;
mod plane;
mod proxy;
pub mod rules;
pub mod source;
mod stream;
mod target;
mod tls;
mod workers;

pub use config::Snapshot;
pub use plane::{ApplyError, ApplyReport, DataPlane, TargetHealthDescription};
pub use target::{HealthEvent, TargetKey};
pub use workers::WORKERS_MAX;
