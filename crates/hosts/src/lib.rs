//! Cluster auto scaling, the parts that need no store and no API.
//!
//! - [`scaling`]: managed scaling as ECS documents it, a pure function from
//!   what a host group holds and what its tasks need to how many hosts to
//!   launch and which to drain. Time comes in as a parameter.
//! - [`group`]: host groups, the stand-ins for EC2 Auto Scaling groups:
//!   a name, a host provider, min, max and a host size.
//! - [`provider`]: the [`HostProvider`] trait ("give me a host / take this
//!   host back") and its implementations: `docker`, `command` and
//!   `simulated`.
//!
//! *Architecture invariant:* nothing here reads the store or the clock; the
//! control plane's scaling loop (`flotilla_control::host_groups`) owns the
//! host records and calls in.

pub mod group;
pub mod provider;
pub mod scaling;

pub use group::{HostGroup, HostGroupError, ProviderKind};
pub use provider::{HostError, HostProvider, HostSpec};
