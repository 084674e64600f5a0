//! Usage sampling: every [`STATS_INTERVAL_MS`] the agent reads each running
//! container's counters from the runtime, turns two successive reads into
//! what the task used over the interval, and queues one `TaskStats` message
//! for the control channel (ECS's agent does the same over its telemetry
//! channel; the control plane turns them into CloudWatch metrics).
//!
//! ```text
//! every interval: engine.running_tasks ─▶ runtime.container_stats (each container)
//!     ─▶ Sampler::usage (delta of CPU ns / delta of time, memory now, network deltas,
//!        storage totals)
//!     ─▶ FromAgent::TaskStats ─▶ channel queue (dropped when full: the next one replaces it)
//! ```
//!
//! *Architecture invariant:* one message per instance per interval, at most
//! [`STATS_TASKS_MAX`] tasks in it; what the sampler remembers is bounded by
//! the containers running now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::{ContainerRuntime, ContainerStats};
use flotilla_types::acs::{FromAgent, TaskUsage, STATS_TASKS_MAX};
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::engine::Engine;

/// CPU units in one vCPU, as ECS counts them.
pub const CPU_UNITS_PER_VCPU: f64 = 1024.0;
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

/// The previous read of one container.
#[derive(Clone, Copy, Debug)]
struct Previous {
    at_ms: u64,
    cpu_ns: u64,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// Turns successive reads of containers' counters into usage over the
/// interval between them. Pure: the caller reads the runtime and the clock.
#[derive(Debug, Default)]
pub struct Sampler {
    previous: HashMap<String, Previous>,
}

impl Sampler {
    /// One task's usage from its containers' reads taken at `now_ms`. A
    /// container read for the first time counts from its start: nothing
    /// (its rate is known from the next read).
    pub fn usage(
        &mut self,
        task_arn: &str,
        reads: &[(String, ContainerStats)],
        now_ms: u64,
    ) -> Option<TaskUsage> {
        let mut usage = TaskUsage {
            task_arn: task_arn.to_owned(),
            cpu_units_used: 0.0,
            memory_mib_used: 0.0,
            network_rx_bytes: 0,
            network_tx_bytes: 0,
            storage_read_bytes: 0,
            storage_write_bytes: 0,
        };
        let mut measured = false;
        for (id, stats) in reads {
            usage.memory_mib_used += stats.memory_usage_bytes as f64 / BYTES_PER_MIB;
            // Storage is reported as the containers' running totals.
            usage.storage_read_bytes += stats.block_read_bytes;
            usage.storage_write_bytes += stats.block_write_bytes;
            let current = Previous {
                at_ms: now_ms,
                cpu_ns: stats.cpu_total_usage_ns,
                rx_bytes: stats.network_rx_bytes,
                tx_bytes: stats.network_tx_bytes,
            };
            if let Some(previous) = self.previous.insert(id.clone(), current) {
                let elapsed_ms = now_ms.saturating_sub(previous.at_ms);
                if elapsed_ms > 0 {
                    let cpu_ns = current.cpu_ns.saturating_sub(previous.cpu_ns) as f64;
                    // ns of CPU per ns of wall time is vCPUs used.
                    usage.cpu_units_used +=
                        cpu_ns / (elapsed_ms as f64 * 1_000_000.0) * CPU_UNITS_PER_VCPU;
                    usage.network_rx_bytes += current.rx_bytes.saturating_sub(previous.rx_bytes);
                    usage.network_tx_bytes += current.tx_bytes.saturating_sub(previous.tx_bytes);
                    measured = true;
                }
            }
        }
        measured.then_some(usage)
    }

    /// Forgets containers that are no longer running.
    pub fn retain(&mut self, running: &std::collections::HashSet<&str>) {
        self.previous.retain(|id, _| running.contains(id.as_str()));
    }
}

/// Samples the instance's tasks every `interval` and queues a `TaskStats`
/// message on `channel` until the engine's channel closes.
pub async fn run(
    engine: Arc<Engine>,
    runtime: Arc<dyn ContainerRuntime>,
    clock: Arc<dyn Clock>,
    channel: mpsc::Sender<FromAgent>,
    interval: Duration,
) {
    let mut sampler = Sampler::default();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if channel.is_closed() {
            return;
        }
        let running = engine.running_tasks();
        let now_ms = clock.now_ms();
        let mut tasks = Vec::new();
        for (task_arn, containers) in running.iter().take(STATS_TASKS_MAX) {
            let mut reads = Vec::with_capacity(containers.len());
            for id in containers {
                match runtime.container_stats(id).await {
                    Ok(stats) => reads.push((id.clone(), stats)),
                    Err(error) => tracing::debug!(%error, %id, "no stats for a container"),
                }
            }
            if let Some(usage) = sampler.usage(task_arn, &reads, now_ms) {
                tasks.push(usage);
            }
        }
        let ids: std::collections::HashSet<&str> = running
            .iter()
            .flat_map(|(_, containers)| containers.iter().map(String::as_str))
            .collect();
        sampler.retain(&ids);
        let message = FromAgent::TaskStats {
            sampled_at_ms: now_ms,
            tasks,
        };
        // A full queue means the channel is down or behind: this sample is
        // dropped, and the next one says the same thing more recently.
        if let Err(mpsc::error::TrySendError::Closed(_)) = channel.try_send(message) {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(cpu_ns: u64, memory_bytes: u64, rx: u64) -> ContainerStats {
        ContainerStats {
            cpu_total_usage_ns: cpu_ns,
            memory_usage_bytes: memory_bytes,
            network_rx_bytes: rx,
            block_read_bytes: rx * 2,
            block_write_bytes: rx,
            ..Default::default()
        }
    }

    #[test]
    fn usage_is_the_rate_between_two_reads() {
        let mut sampler = Sampler::default();
        let first = [("a".to_owned(), read(0, 64 << 20, 100))];
        assert_eq!(
            sampler.usage("t", &first, 1_000),
            None,
            "one read is no rate"
        );
        // Half a vCPU for 10 s, plus a second container at a quarter.
        let second = [
            ("a".to_owned(), read(5_000_000_000, 64 << 20, 1_100)),
            ("b".to_owned(), read(0, 32 << 20, 0)),
        ];
        let usage = sampler.usage("t", &second, 11_000).unwrap();
        assert!((usage.cpu_units_used - 512.0).abs() < 1e-6);
        assert!((usage.memory_mib_used - 96.0).abs() < 1e-6);
        assert_eq!(usage.network_rx_bytes, 1_000);
        // Storage is the containers' totals, not a rate: 2,200 + 0 read.
        assert_eq!(
            (usage.storage_read_bytes, usage.storage_write_bytes),
            (2_200, 1_100)
        );
        let third = [
            ("a".to_owned(), read(10_000_000_000, 64 << 20, 1_100)),
            ("b".to_owned(), read(2_500_000_000, 32 << 20, 0)),
        ];
        let usage = sampler.usage("t", &third, 21_000).unwrap();
        assert!((usage.cpu_units_used - 768.0).abs() < 1e-6);
        sampler.retain(&["b"].into_iter().collect());
        assert_eq!(sampler.previous.len(), 1);
    }
}
