//! IAM's policy language and authorization decision, as a pure library.
//!
//! - [`document`]: read and validate policy documents as IAM does
//!   (`MalformedPolicyDocument` with IAM's messages, size quotas).
//! - [`CompiledPolicy`]: a validated document compiled for evaluation.
//! - [`RequestContext`]: the principal, action, resource and condition keys
//!   of one request; the time is one of its inputs.
//! - [`evaluate`] and [`evaluate_assume_role`]: AWS's evaluation logic for
//!   one account, giving a [`Decision`] that names the statement or the
//!   missing allow it rests on; [`denial_message`] words a denial as AWS does.
//! - [`managed`]: the AWS managed policies Flotilla ships.
//! - [`operations`]: which action, resources and condition keys each ECS and
//!   ECR operation is authorized with.
//!
//! Nothing here performs I/O or reads a clock.

#![forbid(unsafe_code)]

mod arn;
mod condition;
mod context;
pub mod document;
mod error;
mod evaluate;
pub mod managed;
pub mod operations;
mod pattern;
mod policy;
mod time;
mod variables;

pub use context::{Principal, PrincipalKind, RequestContext};
pub use document::{PolicyDocument, PolicyKind};
pub use error::{PolicyError, IAM_RESOURCE_PATH_PREFIXES};
pub use evaluate::{
    denial_message, evaluate, evaluate_assume_role, Allowed, Decision, Denied, PolicyType,
    PrincipalPolicies, StatementRef,
};
pub use pattern::Pattern;
pub use policy::CompiledPolicy;
pub use time::{format_iso8601, parse_date_ms};
