//! Application Auto Scaling's decisions as pure functions: scalable
//! targets, target tracking and step scaling policies, scheduled actions,
//! and the scaling activities they produce, for ECS services
//! (`ecs:service:DesiredCount`).
//!
//! *API boundary:* plain types mapping one to one onto Application Auto
//! Scaling's concepts; no HTTP, no store, no clock (`now_ms` is passed in),
//! no ids made here (the caller passes them). The control plane persists
//! `TargetState` and carries a `Decision` out through UpdateService.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod engine;
pub mod policy;
pub mod schedule;
pub mod target;

use thiserror::Error;

/// Application Auto Scaling's ValidationException, with its message.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ValidationError(pub String);

/// The errors of Application Auto Scaling's model this crate produces.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AutoScalingError {
    #[error("{0}")]
    Validation(#[from] ValidationError),
    #[error("{0}")]
    ObjectNotFound(String),
    #[error("{0}")]
    LimitExceeded(String),
}

impl AutoScalingError {
    /// The exception's name as the JSON protocol sends it.
    pub fn code(&self) -> &'static str {
        match self {
            AutoScalingError::Validation(_) => "ValidationException",
            AutoScalingError::ObjectNotFound(_) => "ObjectNotFoundException",
            AutoScalingError::LimitExceeded(_) => "LimitExceededException",
        }
    }
}
