//! The managed task's hooks for shipping its containers' lines with the
//! awslogs driver ([`crate::awslogs`]): the log stream is made before a
//! container starts, a shipper follows it once started (or once re-adopted
//! after an agent restart), and a container's stop is reported only after
//! its last lines were sent.

use std::sync::Arc;
use std::time::Duration;

use super::ManagedTask;
use crate::awslogs::AwslogsConfig;
use crate::engine::status::ContainerStatus;

/// How long a stopped container's report waits for its last lines.
pub const LOG_FLUSH_WAIT_MAX: Duration = Duration::from_secs(90);

impl ManagedTask {
    fn awslogs_config(&self, index: usize) -> Result<Option<AwslogsConfig>, String> {
        let container = &self.record.containers[index];
        let Some(definition) = self.record.definition(&container.name) else {
            return Ok(None);
        };
        let engine_id = container.runtime_id.as_deref().unwrap_or_default();
        AwslogsConfig::of(definition, self.record.task_id(), engine_id)
    }

    /// Makes the container's log group and stream before it starts. Err is
    /// the task's stop reason.
    pub(super) async fn prepare_logs(&mut self, index: usize) -> Result<(), String> {
        let config = self
            .awslogs_config(index)
            .map_err(|reason| format!("CannotStartContainerError: {reason}"))?;
        let Some(config) = config else {
            return Ok(());
        };
        let Some(shipping) = self.context.settings.log_shipping.clone() else {
            return Err(
                "CannotStartContainerError: this agent cannot ship logs with the awslogs driver"
                    .to_owned(),
            );
        };
        shipping.prepare(&config).await
    }

    /// Starts shipping a running container's lines from `since_ms`.
    pub(super) fn follow_logs(&mut self, index: usize, since_ms: Option<u64>) {
        if self.log_shippers.contains_key(&index) {
            return;
        }
        let Some(shipping) = self.context.settings.log_shipping.clone() else {
            return;
        };
        let Ok(Some(config)) = self.awslogs_config(index) else {
            return;
        };
        let Some(engine_id) = self.record.containers[index].runtime_id.clone() else {
            return;
        };
        let shipper = shipping.ship(
            Arc::clone(&self.context.runtime),
            engine_id,
            config,
            since_ms,
        );
        self.log_shippers.insert(index, shipper);
    }

    /// Running containers nobody ships for yet: re-adopted after a restart.
    /// Their lines are shipped from now on.
    pub(super) fn follow_adopted_logs(&mut self) {
        if self.context.settings.log_shipping.is_none() {
            return;
        }
        let now_ms = self.context.clock.now_ms();
        for index in 0..self.record.containers.len() {
            if self.record.containers[index].known == ContainerStatus::Running
                && !self.log_shippers.contains_key(&index)
            {
                self.follow_logs(index, Some(now_ms));
            }
        }
    }

    /// Waits until a stopped container's last lines are sent.
    pub(super) async fn flush_logs(&mut self, index: usize) {
        let Some(shipper) = self.log_shippers.get_mut(&index) else {
            return;
        };
        if !shipper.flushed(LOG_FLUSH_WAIT_MAX).await {
            tracing::warn!(task = %self.record.task_arn(), container = %self.record.containers[index].name, "a stopped container's last lines were not all shipped in time");
        }
        self.log_shippers.remove(&index);
    }
}
