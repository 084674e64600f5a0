//! FARGATE_SPOT interruptions: Flotilla's `ReclaimSpotCapacity` takes a
//! cluster's Spot capacity back, as AWS does when it needs it.
//!
//! Each FARGATE_SPOT task interrupted gets what ECS gives it: the warning
//! (desiredStatus STOPPED with stop code `SpotInterruption`, a task state
//! change that reaches EventBridge, and SIGTERM to its containers from the
//! agent), then the kill once its containers' `stopTimeout` runs out. ECS
//! allows Fargate containers up to 120 s, its two-minute warning. A service
//! replaces its interrupted tasks by its strategy's base and weight, as it
//! replaces any stopped task.

use std::sync::atomic::{AtomicBool, Ordering};

use flotilla_types::ecs::TaskStopCode;
use flotilla_types::flotilla::{ReclaimSpotCapacityRequest, ReclaimSpotCapacityResponse};
use flotilla_types::ApiError;

use crate::instances::scan;
use crate::records::keys;
use crate::tasks::TaskRecord;
use crate::Ecs;

/// The stopped reason ECS gives an interrupted Spot task.
pub const SPOT_INTERRUPTION_REASON: &str = "Your Spot Task was interrupted.";
const SPOT_PROVIDER: &str = "FARGATE_SPOT";

impl Ecs {
    pub(crate) async fn reclaim_spot_capacity(
        &self,
        request: ReclaimSpotCapacityRequest,
    ) -> Result<ReclaimSpotCapacityResponse, ApiError> {
        let cluster = self.active_cluster_name(request.cluster.as_deref())?;
        let limit = match request.count {
            None => usize::MAX,
            Some(count) if count >= 1 => count as usize,
            Some(count) => {
                return Err(ApiError::invalid_parameter(format!(
                    "count must be at least 1, got {count}"
                )))
            }
        };
        let running: Vec<String> =
            scan::<TaskRecord>(self.store.as_ref(), &keys::tasks_of(&cluster))?
                .into_iter()
                .map(|found| found.value)
                .filter(|record| {
                    record.desired_status() == "RUNNING"
                        && record.task.capacity_provider_name.as_deref() == Some(SPOT_PROVIDER)
                })
                .map(|record| record.task_id)
                .take(limit)
                .collect();
        let now_seconds = self.clock.now_ms() as f64 / 1000.0;
        let mut interrupted_tasks = Vec::with_capacity(running.len());
        for task_id in running {
            let changed = AtomicBool::new(false);
            let record = self
                .change_task(&cluster, &task_id, |record, _| {
                    if record.desired_status() == "STOPPED" {
                        return false;
                    }
                    record.request_stop(
                        now_seconds,
                        Some(TaskStopCode::SpotInterruption),
                        SPOT_INTERRUPTION_REASON,
                    );
                    record.touch();
                    changed.store(true, Ordering::Relaxed);
                    true
                })
                .await?;
            if let Some(record) = record.filter(|_| changed.load(Ordering::Relaxed)) {
                interrupted_tasks.push(record.arn());
            }
        }
        Ok(ReclaimSpotCapacityResponse { interrupted_tasks })
    }
}
