//! Task usage into CloudWatch metrics, as ECS publishes them.
//!
//! ```text
//! agent TaskStats (per host, every interval) ─▶ record_task_stats: each task resolved
//!     to its cluster, service and reservation, kept as the host's latest set
//! every minute ─▶ publish_usage: one datum per running task into AWS/ECS
//!     CPUUtilization and MemoryUtilization by ClusterName+ServiceName and by ClusterName;
//!     CPUReservation and MemoryReservation by ClusterName from the instance records;
//!     for clusters with Container Insights, ECS/ContainerInsights per task (by
//!     ClusterName, ClusterName+ServiceName, ClusterName+TaskDefinitionFamily) and
//!     the task, service and instance counts from the cluster's records
//! ```
//!
//! ECS's definitions: utilization is what a task uses over what it reserved,
//! in percent; a service's Average over its tasks' datums is the service's
//! figure. A task that reserves no CPU is measured against one vCPU.
//!
//! *Architecture invariant:* what is kept is the latest set each host sent,
//! replaced whole by its next one, so it is bounded by the running tasks;
//! a host's set older than [`USAGE_FRESH_MS`] is not published.

use std::collections::HashMap;

use flotilla_metrics::aggregate::Aggregate;
use flotilla_metrics::put::Datum;
use flotilla_metrics::{MetricKey, Unit};
use flotilla_types::acs::{TaskUsage, STATS_TASKS_MAX};
use flotilla_types::ApiError;

use crate::agent_channel::AgentInstance;
use crate::Ecs;

/// A host's usage older than this (by the control plane's clock) is stale:
/// its agent is gone or silent, and its tasks are not published.
pub const USAGE_FRESH_MS: u64 = 60_000;
/// What a task that reserves no CPU is measured against: one vCPU.
pub const UNRESERVED_CPU_UNITS: f64 = 1024.0;
/// Namespace of the metrics ECS publishes.
pub const ECS_NAMESPACE: &str = "AWS/ECS";
/// Namespace of Container Insights, for clusters whose `containerInsights`
/// setting is `enabled` or `enhanced`.
pub const INSIGHTS_NAMESPACE: &str = "ECS/ContainerInsights";

/// One running task's last usage, resolved to what it belongs to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskUse {
    pub task_arn: String,
    pub cluster: String,
    /// The service's name, for a service's task.
    pub service: Option<String>,
    /// Its task definition's family: Container Insights' task-level dimension.
    pub family: String,
    pub cpu_percent: f64,
    pub memory_percent: f64,
    /// What Container Insights reports: CPU units and MiB used and
    /// reserved (no CPU reserved is 0: such a task has no CpuUtilized or
    /// CpuReserved, as ECS publishes none), network bytes per second over
    /// the sampling interval, storage bytes since the containers started.
    pub cpu_units_used: f64,
    pub cpu_units_reserved: f64,
    pub memory_mib_used: f64,
    pub memory_mib_reserved: f64,
    pub network_rx_bytes: f64,
    pub network_tx_bytes: f64,
    pub storage_read_bytes: f64,
    pub storage_write_bytes: f64,
}

impl TaskUse {
    /// This task with the figures of one report; `interval_s` since the
    /// host's previous report makes its network bytes a rate.
    fn measured(mut self, usage: &TaskUsage, interval_s: Option<f64>) -> TaskUse {
        let finite = |value: f64| {
            if value.is_finite() {
                value.max(0.0)
            } else {
                0.0
            }
        };
        let cpu_measured_against = match self.cpu_units_reserved {
            units if units > 0.0 => units,
            _ => UNRESERVED_CPU_UNITS,
        };
        self.cpu_percent = finite(usage.cpu_units_used / cpu_measured_against * 100.0);
        self.memory_percent = finite(usage.memory_mib_used / self.memory_mib_reserved * 100.0);
        self.cpu_units_used = finite(usage.cpu_units_used);
        self.memory_mib_used = finite(usage.memory_mib_used);
        self.network_rx_bytes = interval_s.map_or(0.0, |s| usage.network_rx_bytes as f64 / s);
        self.network_tx_bytes = interval_s.map_or(0.0, |s| usage.network_tx_bytes as f64 / s);
        self.storage_read_bytes = usage.storage_read_bytes as f64;
        self.storage_write_bytes = usage.storage_write_bytes as f64;
        self
    }
}

#[derive(Debug, Default)]
pub(crate) struct HostUsage {
    received_ms: u64,
    tasks: Vec<TaskUse>,
}

/// The latest usage each host reported, by instance ARN.
#[derive(Debug, Default)]
pub struct UsageBook {
    hosts: std::sync::Mutex<HashMap<String, HostUsage>>,
}

impl UsageBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostUsage>> {
        self.hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every fresh task's usage as of `now_ms`; stale hosts are forgotten.
    pub fn fresh(&self, now_ms: u64) -> Vec<TaskUse> {
        let mut hosts = self.lock();
        hosts.retain(|_, host| now_ms.saturating_sub(host.received_ms) <= USAGE_FRESH_MS);
        hosts
            .values()
            .flat_map(|host| host.tasks.iter().cloned())
            .collect()
    }
}

/// The datums one minute's publication makes of the tasks' usage, stamped
/// `timestamp_ms`. Pure.
pub fn usage_datums(tasks: &[TaskUse], timestamp_ms: i64) -> Vec<Datum> {
    let mut datums = Vec::with_capacity(tasks.len() * 4);
    for task in tasks {
        for (name, value) in [
            ("CPUUtilization", task.cpu_percent),
            ("MemoryUtilization", task.memory_percent),
        ] {
            let mut keys = vec![MetricKey::new(
                ECS_NAMESPACE,
                name,
                &[("ClusterName", task.cluster.as_str())],
            )];
            if let Some(service) = &task.service {
                keys.push(MetricKey::new(
                    ECS_NAMESPACE,
                    name,
                    &[
                        ("ClusterName", task.cluster.as_str()),
                        ("ServiceName", service.as_str()),
                    ],
                ));
            }
            for key in keys {
                datums.push(Datum {
                    key,
                    unit: Unit::Percent,
                    timestamp_ms,
                    high_resolution: false,
                    aggregate: Aggregate::of_value(value, 1.0),
                });
            }
        }
    }
    datums
}

/// What a cluster's live container instances registered, and what their
/// tasks hold of it: the figures ECS's CPUReservation and MemoryReservation
/// are made of.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClusterReservation {
    pub cpu_units_registered: f64,
    pub cpu_units_reserved: f64,
    pub memory_mib_registered: f64,
    pub memory_mib_reserved: f64,
}

impl ClusterReservation {
    /// Adds one instance: what it registered, and what it has left.
    pub fn add_instance(&mut self, registered: (i64, i64), remaining: (i64, i64)) {
        let (cpu, memory) = (registered.0.max(0), registered.1.max(0));
        self.cpu_units_registered += cpu as f64;
        self.memory_mib_registered += memory as f64;
        self.cpu_units_reserved += (cpu - remaining.0.clamp(0, cpu)) as f64;
        self.memory_mib_reserved += (memory - remaining.1.clamp(0, memory)) as f64;
    }
}

/// `AWS/ECS` CPUReservation and MemoryReservation by ClusterName for one
/// minute: the percentage of the cluster's registered CPU and memory its
/// tasks reserve. A cluster that registered none of a resource has no
/// datum for it, as ECS publishes none. Pure.
pub fn reservation_datums(
    cluster: &str,
    reservation: &ClusterReservation,
    timestamp_ms: i64,
) -> Vec<Datum> {
    [
        (
            "CPUReservation",
            reservation.cpu_units_reserved,
            reservation.cpu_units_registered,
        ),
        (
            "MemoryReservation",
            reservation.memory_mib_reserved,
            reservation.memory_mib_registered,
        ),
    ]
    .into_iter()
    .filter(|(_, _, registered)| *registered > 0.0)
    .map(|(name, reserved, registered)| Datum {
        key: MetricKey::new(ECS_NAMESPACE, name, &[("ClusterName", cluster)]),
        unit: Unit::Percent,
        timestamp_ms,
        high_resolution: false,
        aggregate: Aggregate::of_value(reserved / registered * 100.0, 1.0),
    })
    .collect()
}

/// One service's counts, as Container Insights publishes them by
/// ClusterName+ServiceName.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceCounts {
    pub service: String,
    pub desired: i64,
    pub running: i64,
    pub pending: i64,
    /// PRIMARY and ACTIVE deployments.
    pub deployments: i64,
    /// Its task sets (EXTERNAL deployment controller).
    pub task_sets: i64,
}

/// A cluster with Container Insights enabled, and its counts as
/// DescribeClusters and DescribeServices tell them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterInsights {
    pub cluster: String,
    /// Registered (ACTIVE or DRAINING) container instances.
    pub container_instances: i64,
    pub services: i64,
    /// RUNNING tasks.
    pub tasks: i64,
    pub service_counts: Vec<ServiceCounts>,
}

/// Container Insights' datums for one minute: per task of `tasks` (all of
/// clusters that have it enabled), by ClusterName, by
/// ClusterName+ServiceName and by ClusterName+TaskDefinitionFamily,
/// CpuUtilized, CpuReserved, MemoryUtilized, MemoryReserved,
/// NetworkRxBytes, NetworkTxBytes, StorageReadBytes and StorageWriteBytes
/// (Sum is the cluster's, service's or family's figure); per cluster of
/// `clusters` ContainerInstanceCount, ServiceCount and TaskCount, and per
/// service DesiredTaskCount, RunningTaskCount, PendingTaskCount,
/// DeploymentCount and TaskSetCount. Pure.
pub fn insights_datums(
    tasks: &[TaskUse],
    clusters: &[ClusterInsights],
    timestamp_ms: i64,
) -> Vec<Datum> {
    let mut datums = Vec::new();
    let datum = |name: &str, dimensions: &[(&str, &str)], unit: Unit, value: f64| Datum {
        key: MetricKey::new(INSIGHTS_NAMESPACE, name, dimensions),
        unit,
        timestamp_ms,
        high_resolution: false,
        aggregate: Aggregate::of_value(value, 1.0),
    };
    for task in tasks {
        let mut dimension_sets = vec![
            vec![("ClusterName", task.cluster.as_str())],
            vec![
                ("ClusterName", task.cluster.as_str()),
                ("TaskDefinitionFamily", task.family.as_str()),
            ],
        ];
        if let Some(service) = &task.service {
            dimension_sets.push(vec![
                ("ClusterName", task.cluster.as_str()),
                ("ServiceName", service.as_str()),
            ]);
        }
        let cpu_reserved = task.cpu_units_reserved > 0.0;
        for (name, unit, value) in [
            ("CpuUtilized", Unit::None, task.cpu_units_used),
            ("CpuReserved", Unit::None, task.cpu_units_reserved),
            ("MemoryUtilized", Unit::Megabytes, task.memory_mib_used),
            ("MemoryReserved", Unit::Megabytes, task.memory_mib_reserved),
            (
                "NetworkRxBytes",
                Unit::BytesPerSecond,
                task.network_rx_bytes,
            ),
            (
                "NetworkTxBytes",
                Unit::BytesPerSecond,
                task.network_tx_bytes,
            ),
            ("StorageReadBytes", Unit::Bytes, task.storage_read_bytes),
            ("StorageWriteBytes", Unit::Bytes, task.storage_write_bytes),
        ] {
            if name.starts_with("Cpu") && !cpu_reserved {
                continue;
            }
            for dimensions in &dimension_sets {
                datums.push(datum(name, dimensions, unit, value));
            }
        }
    }
    for cluster in clusters {
        let by_cluster = [("ClusterName", cluster.cluster.as_str())];
        for (name, value) in [
            ("ContainerInstanceCount", cluster.container_instances),
            ("ServiceCount", cluster.services),
            ("TaskCount", cluster.tasks),
        ] {
            datums.push(datum(name, &by_cluster, Unit::Count, value as f64));
        }
        for counts in &cluster.service_counts {
            let by_service = [
                ("ClusterName", cluster.cluster.as_str()),
                ("ServiceName", counts.service.as_str()),
            ];
            for (name, value) in [
                ("DesiredTaskCount", counts.desired),
                ("RunningTaskCount", counts.running),
                ("PendingTaskCount", counts.pending),
                ("DeploymentCount", counts.deployments),
                ("TaskSetCount", counts.task_sets),
            ] {
                datums.push(datum(name, &by_service, Unit::Count, value as f64));
            }
        }
    }
    datums
}

/// Whether a cluster's `containerInsights` setting asks for Container
/// Insights' metrics (`enabled`, or `enhanced`, of which the same metrics
/// are published).
pub fn insights_enabled(cluster: &flotilla_types::ecs::Cluster) -> bool {
    cluster.settings.iter().flatten().any(|setting| {
        setting.name == Some(flotilla_types::ecs::ClusterSettingName::ContainerInsights)
            && matches!(setting.value.as_deref(), Some("enabled" | "enhanced"))
    })
}

impl Ecs {
    /// Every active cluster with Container Insights enabled, with its
    /// counts and its services' (those not yet deleted).
    pub(crate) fn insights_clusters(&self) -> Result<Vec<ClusterInsights>, ApiError> {
        let clusters = crate::instances::scan::<flotilla_types::ecs::Cluster>(
            self.store.as_ref(),
            crate::records::keys::CLUSTERS,
        )?;
        let mut out = Vec::new();
        for cluster in clusters {
            let cluster = cluster.value;
            if !crate::clusters::is_active(&cluster) || !insights_enabled(&cluster) {
                continue;
            }
            let name = cluster.cluster_name.unwrap_or_default();
            let counts = self.cluster_counts(&name)?;
            let services = crate::instances::scan::<crate::services::ServiceRecord>(
                self.store.as_ref(),
                &crate::records::keys::services_of(&name),
            )?;
            let count = |value: Option<i32>| i64::from(value.unwrap_or(0));
            out.push(ClusterInsights {
                container_instances: i64::from(counts.instances),
                services: i64::from(counts.active_services),
                tasks: i64::from(counts.running_tasks),
                service_counts: services
                    .into_iter()
                    .map(|found| {
                        let record = found.value;
                        ServiceCounts {
                            desired: count(record.service.desired_count),
                            running: count(record.service.running_count),
                            pending: count(record.service.pending_count),
                            deployments: record.deployments.len() as i64,
                            task_sets: record.task_sets.len() as i64,
                            service: record.name,
                        }
                    })
                    .collect(),
                cluster: name,
            });
        }
        Ok(out)
    }

    /// Each active cluster's reservation over its live container instances
    /// (ACTIVE and DRAINING, as ECS counts them).
    pub(crate) fn cluster_reservations(
        &self,
    ) -> Result<Vec<(String, ClusterReservation)>, ApiError> {
        let clusters = crate::instances::scan::<flotilla_types::ecs::Cluster>(
            self.store.as_ref(),
            crate::records::keys::CLUSTERS,
        )?;
        let mut out = Vec::new();
        for cluster in clusters {
            let cluster = cluster.value;
            if !crate::clusters::is_active(&cluster) {
                continue;
            }
            let name = cluster.cluster_name.unwrap_or_default();
            let mut reservation = ClusterReservation::default();
            for instance in self.instances_of(&name)? {
                let instance = instance.value;
                if !instance.is_live() {
                    continue;
                }
                let registered = |resource: &str| {
                    instance
                        .instance
                        .registered_resources
                        .iter()
                        .flatten()
                        .find(|found| found.name.as_deref() == Some(resource))
                        .and_then(|found| found.integer_value)
                        .map_or(0, i64::from)
                };
                reservation.add_instance(
                    (registered("CPU"), registered("MEMORY")),
                    (instance.remaining.cpu_units, instance.remaining.memory_mib),
                );
            }
            out.push((name, reservation));
        }
        Ok(out)
    }

    /// Takes one host's usage report: each task is resolved to its cluster,
    /// service and reservation; the set replaces what the host sent before.
    /// Tasks that are not the host's, or not running, are left out.
    pub async fn record_task_stats(
        &self,
        instance: &AgentInstance,
        tasks: &[TaskUsage],
    ) -> Result<(), ApiError> {
        let received_ms = self.clock.now_ms();
        // The agent reports bytes over its interval: the time since its
        // last report makes them a rate. Tasks it reported last time are
        // not looked up again: what they belong to and reserve does not
        // change while they run.
        let (interval_s, known) = {
            let hosts = self.usage.lock();
            let previous = hosts.get(&instance.instance_arn);
            let interval_s = previous
                .map(|previous| received_ms.saturating_sub(previous.received_ms) as f64 / 1000.0)
                .filter(|seconds| *seconds > 0.0 && *seconds <= USAGE_FRESH_MS as f64 / 1000.0);
            let known: HashMap<String, TaskUse> = previous
                .into_iter()
                .flat_map(|host| host.tasks.iter())
                .map(|task| (task.task_arn.clone(), task.clone()))
                .collect();
            (interval_s, known)
        };
        let mut resolved = Vec::with_capacity(tasks.len().min(STATS_TASKS_MAX));
        for usage in tasks.iter().take(STATS_TASKS_MAX) {
            let task = match known.get(&usage.task_arn) {
                Some(task) => task.clone(),
                None => match self.resolve_task(instance, &usage.task_arn)? {
                    Some(task) => task,
                    None => continue,
                },
            };
            resolved.push(task.measured(usage, interval_s));
        }
        self.usage.lock().insert(
            instance.instance_arn.clone(),
            HostUsage {
                received_ms,
                tasks: resolved,
            },
        );
        Ok(())
    }

    /// What a reported task belongs to and reserves, from its record; None
    /// for a task that is not the host's or not RUNNING.
    fn resolve_task(
        &self,
        instance: &AgentInstance,
        task_arn: &str,
    ) -> Result<Option<TaskUse>, ApiError> {
        let Some(task_id) = self.task_id_in(&instance.cluster, task_arn) else {
            return Ok(None);
        };
        let Some(record) = self.get_task(&instance.cluster, &task_id)? else {
            return Ok(None);
        };
        let record = record.value;
        if record.instance_id != instance.instance_id
            || record.last_status() != flotilla_types::ecs::DesiredStatus::Running.as_str()
        {
            return Ok(None);
        }
        Ok(Some(TaskUse {
            task_arn: task_arn.to_owned(),
            cluster: instance.cluster.clone(),
            service: record
                .task
                .group
                .as_deref()
                .and_then(|group| group.strip_prefix("service:"))
                .map(str::to_owned),
            family: record.definition.family.clone().unwrap_or_default(),
            cpu_units_reserved: record.reservation.cpu_units.max(0) as f64,
            memory_mib_reserved: record.reservation.memory_mib.max(1) as f64,
            ..TaskUse::default()
        }))
    }

    /// Forgets a host's usage (its agent disconnected).
    pub fn forget_task_stats(&self, instance: &AgentInstance) {
        self.usage.lock().remove(&instance.instance_arn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(service: Option<&str>, cpu_percent: f64, memory_percent: f64) -> TaskUse {
        TaskUse {
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/prod/t".into(),
            cluster: "prod".into(),
            service: service.map(str::to_owned),
            family: "web".into(),
            cpu_percent,
            memory_percent,
            cpu_units_used: cpu_percent * 2.56,
            cpu_units_reserved: 256.0,
            memory_mib_used: memory_percent * 5.12,
            memory_mib_reserved: 512.0,
            network_rx_bytes: 100.0,
            network_tx_bytes: 50.0,
            storage_read_bytes: 4096.0,
            storage_write_bytes: 1024.0,
        }
    }

    #[test]
    fn a_report_is_measured_against_what_the_task_reserves() {
        let report = TaskUsage {
            task_arn: "t".into(),
            cpu_units_used: 128.0,
            memory_mib_used: 64.0,
            network_rx_bytes: 1_000,
            network_tx_bytes: 500,
            storage_read_bytes: 4_096,
            storage_write_bytes: 0,
        };
        let reserved = TaskUse {
            cpu_units_reserved: 256.0,
            memory_mib_reserved: 128.0,
            ..TaskUse::default()
        };
        let measured = reserved.clone().measured(&report, Some(10.0));
        assert_eq!(
            (measured.cpu_percent, measured.memory_percent),
            (50.0, 50.0)
        );
        assert_eq!(
            (measured.network_rx_bytes, measured.network_tx_bytes),
            (100.0, 50.0)
        );
        assert_eq!(measured.storage_read_bytes, 4_096.0);
        // No CPU reserved: measured against one vCPU. No interval yet: no rate.
        let unreserved = TaskUse {
            cpu_units_reserved: 0.0,
            ..reserved
        }
        .measured(&report, None);
        assert_eq!(unreserved.cpu_percent, 12.5);
        assert_eq!(unreserved.network_rx_bytes, 0.0);
    }

    #[test]
    fn reservation_is_what_tasks_hold_of_what_instances_registered() {
        let mut reservation = ClusterReservation::default();
        reservation.add_instance((2048, 4096), (1024, 4096));
        reservation.add_instance((2048, 4096), (0, 2048));
        let datums = reservation_datums("prod", &reservation, 60_000);
        let figure = |name: &str| {
            datums
                .iter()
                .find(|datum| {
                    datum.key == MetricKey::new(ECS_NAMESPACE, name, &[("ClusterName", "prod")])
                })
                .map(|datum| datum.aggregate.sum)
        };
        assert_eq!(figure("CPUReservation"), Some(75.0));
        assert_eq!(figure("MemoryReservation"), Some(25.0));
    }

    #[test]
    fn a_cluster_without_registered_resources_publishes_no_reservation() {
        assert!(reservation_datums("empty", &ClusterReservation::default(), 0).is_empty());
        let mut odd = ClusterReservation::default();
        // An instance that reports more left than it registered reserves nothing.
        odd.add_instance((1024, 0), (4096, -5));
        let datums = reservation_datums("odd", &odd, 0);
        assert_eq!(datums.len(), 1);
        assert_eq!(datums[0].aggregate.sum, 0.0);
    }

    fn figures(datums: &[Datum], name: &str, dimensions: &[(&str, &str)]) -> Vec<f64> {
        let key = MetricKey::new(INSIGHTS_NAMESPACE, name, dimensions);
        datums
            .iter()
            .filter(|d| d.key == key)
            .map(|d| d.aggregate.average())
            .collect()
    }

    #[test]
    fn container_insights_per_task_by_cluster_service_and_family() {
        let mut unreserved = task(None, 1.0, 1.0);
        unreserved.family = "batch".into();
        unreserved.cpu_units_reserved = 0.0;
        let tasks = [
            task(Some("web"), 90.0, 25.0),
            task(Some("web"), 10.0, 5.0),
            unreserved,
        ];
        let datums = insights_datums(&tasks, &[], 60_000);
        let web = [("ClusterName", "prod"), ("ServiceName", "web")];
        let family = [("ClusterName", "prod"), ("TaskDefinitionFamily", "web")];
        let sum = |values: Vec<f64>| values.iter().sum::<f64>();
        assert!((sum(figures(&datums, "CpuUtilized", &web)) - 256.0).abs() < 1e-9);
        assert!((sum(figures(&datums, "CpuUtilized", &family)) - 256.0).abs() < 1e-9);
        assert_eq!(
            figures(&datums, "CpuReserved", &[("ClusterName", "prod")]).len(),
            2
        );
        // A task without a CPU reservation has memory figures, not CPU ones.
        let batch = [("ClusterName", "prod"), ("TaskDefinitionFamily", "batch")];
        assert!(figures(&datums, "CpuUtilized", &batch).is_empty());
        assert_eq!(figures(&datums, "MemoryReserved", &batch), vec![512.0]);
        assert_eq!(figures(&datums, "StorageReadBytes", &batch), vec![4096.0]);
        let storage = datums
            .iter()
            .find(|d| d.key.name == "StorageWriteBytes")
            .map(|d| d.unit);
        assert_eq!(storage, Some(Unit::Bytes));
        // Counts come from the records, not from the tasks' usage.
        assert!(figures(&datums, "RunningTaskCount", &web).is_empty());
    }

    #[test]
    fn container_insights_counts_come_from_the_cluster_and_its_services() {
        let cluster = ClusterInsights {
            cluster: "prod".into(),
            container_instances: 3,
            services: 1,
            tasks: 4,
            service_counts: vec![ServiceCounts {
                service: "web".into(),
                desired: 5,
                running: 3,
                pending: 2,
                deployments: 2,
                task_sets: 0,
            }],
        };
        let datums = insights_datums(&[], &[cluster], 60_000);
        let by_cluster = [("ClusterName", "prod")];
        let web = [("ClusterName", "prod"), ("ServiceName", "web")];
        for (name, dimensions, value) in [
            ("ContainerInstanceCount", &by_cluster[..], 3.0),
            ("ServiceCount", &by_cluster[..], 1.0),
            ("TaskCount", &by_cluster[..], 4.0),
            ("DesiredTaskCount", &web[..], 5.0),
            ("RunningTaskCount", &web[..], 3.0),
            ("PendingTaskCount", &web[..], 2.0),
            ("DeploymentCount", &web[..], 2.0),
            ("TaskSetCount", &web[..], 0.0),
        ] {
            assert_eq!(figures(&datums, name, dimensions), vec![value], "{name}");
        }
        assert_eq!(datums.len(), 8);
        assert!(datums.iter().all(|d| d.unit == Unit::Count));
    }

    #[test]
    fn a_service_task_counts_for_its_service_and_its_cluster() {
        let tasks = [task(Some("web"), 90.0, 25.0), task(None, 10.0, 5.0)];
        let datums = usage_datums(&tasks, 60_000);
        assert_eq!(datums.len(), 6);
        let service_cpu = MetricKey::new(
            ECS_NAMESPACE,
            "CPUUtilization",
            &[("ClusterName", "prod"), ("ServiceName", "web")],
        );
        let found: Vec<&Datum> = datums.iter().filter(|d| d.key == service_cpu).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].unit, Unit::Percent);
        let cluster_cpu =
            MetricKey::new(ECS_NAMESPACE, "CPUUtilization", &[("ClusterName", "prod")]);
        assert_eq!(datums.iter().filter(|d| d.key == cluster_cpu).count(), 2);
    }
}
