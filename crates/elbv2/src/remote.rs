//! Flotilla's own operations for data planes on other hosts (`flotilla lb
//! --control URL`), JSON 1.1 under the target prefix
//! [`TARGET_PREFIX`], signed for `elasticloadbalancing` like ELBv2's:
//!
//! - `GetSnapshot {KnownVersion}`: the snapshot to serve, or none when the
//!   caller's version is current. Data planes poll it; they keep serving
//!   the last one they applied while the control plane is unreachable.
//! - `ReportTargetHealth {Targets: [...]}`: what their health checks
//!   found, which DescribeTargetHealth answers when no data plane runs in
//!   the control plane's own process.

use std::collections::HashMap;
use std::sync::RwLock;

use flotilla_aws::elbv2::TargetHealth;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::records::State;
use crate::{snapshot, Elbv2};

pub const TARGET_PREFIX: &str = "FlotillaLoadBalancerV1";
pub const OPERATIONS: &[&str] = &["GetSnapshot", "ReportTargetHealth"];

/// How long a reported health stands without a newer report: a data plane
/// host that stopped reporting stops vouching for its targets.
pub const REPORT_VALID_MS: u64 = 30_000;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetSnapshotRequest {
    #[serde(default)]
    pub known_version: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetSnapshotResponse {
    /// Absent when `KnownVersion` is the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<flotilla_lb::Snapshot>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReportTargetHealthRequest {
    pub targets: Vec<ReportedTarget>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReportedTarget {
    pub target_group_arn: String,
    pub id: String,
    pub port: u16,
    pub health: TargetHealth,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReportTargetHealthResponse {}

type Key = (String, String, u16);

/// The latest report about each registered target.
#[derive(Default)]
pub struct ReportedHealth {
    targets: RwLock<HashMap<Key, (TargetHealth, u64)>>,
}

impl ReportedHealth {
    pub(crate) fn target_health(
        &self,
        target_group_arn: &str,
        target_id: &str,
        port: u16,
        now_ms: u64,
    ) -> Option<TargetHealth> {
        let key = (target_group_arn.to_owned(), target_id.to_owned(), port);
        let targets = self
            .targets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (health, at_ms) = targets.get(&key)?;
        (now_ms.saturating_sub(*at_ms) <= REPORT_VALID_MS).then(|| health.clone())
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            "SerializationException",
            400,
            format!("request body: {error}"),
        )
    })
}

impl Elbv2 {
    /// One data plane operation; `None` for an operation that is not one.
    pub fn handle_data_plane(
        &self,
        operation: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Option<Result<serde_json::Value, ApiError>> {
        Some(match operation {
            "GetSnapshot" => self.get_snapshot(body),
            "ReportTargetHealth" => self.report_target_health(body, now_ms),
            _ => return None,
        })
    }

    fn get_snapshot(&self, body: &[u8]) -> Result<serde_json::Value, ApiError> {
        let request: GetSnapshotRequest = decode(if body.is_empty() { b"{}" } else { body })?;
        let state = State::read(&**self.store())?;
        let snapshot = if request.known_version == state.generation {
            None
        } else {
            Some(snapshot::build(&state, self.settings()).map_err(|error| {
                ApiError::server(format!(
                    "stored configuration does not make a snapshot: {error}"
                ))
            })?)
        };
        crate::to_value(Ok(GetSnapshotResponse { snapshot }))
    }

    fn report_target_health(
        &self,
        body: &[u8],
        now_ms: u64,
    ) -> Result<serde_json::Value, ApiError> {
        let request: ReportTargetHealthRequest = decode(body)?;
        let state = State::read(&**self.store())?;
        // Only registered targets are kept, so reports cannot grow memory
        // beyond what the store holds.
        let registered = |target: &ReportedTarget| {
            self.find_target_group(&state, &target.target_group_arn)
                .is_some_and(|group| {
                    group
                        .targets
                        .iter()
                        .any(|known| known.id == target.id && known.port == target.port)
                })
        };
        let mut targets = self
            .reported
            .targets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        targets.retain(|_, (_, at_ms)| now_ms.saturating_sub(*at_ms) <= REPORT_VALID_MS);
        for target in request
            .targets
            .into_iter()
            .filter(|target| registered(target))
        {
            targets.insert(
                (target.target_group_arn, target.id, target.port),
                (target.health, now_ms),
            );
        }
        crate::to_value(Ok(ReportTargetHealthResponse {}))
    }
}
