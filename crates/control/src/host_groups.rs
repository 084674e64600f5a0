//! Cluster auto scaling: host groups scaled by their capacity providers.
//!
//! A host group (`flotilla_hosts::HostGroup`, declared with `flotilla server
//! --host-group ...`) is what an Auto Scaling group is to ECS. A capacity
//! provider whose `autoScalingGroupArn` ends in a group's name, associated
//! with a cluster, scales it: each pass of [`HostGroups::pass`]
//!
//! ```text
//!  finish intents ──▶ observe ──▶ flotilla_hosts::scaling::decide ──▶ launch / drain / terminate
//!  (LAUNCHING,        hosts, their      (reservation M/N×100,            (intent written first,
//!   TERMINATING)      instances, tasks,   target, steps, warm-up)          then the provider)
//!                     services short of tasks
//! ```
//!
//! Each host is one [`HostRecord`] under `keys::host(group, id)`:
//!
//! ```text
//! LAUNCHING ──provider.launch──▶ RUNNING ──scale-in──▶ DRAINING ──no tasks──▶ TERMINATING ──provider.terminate──▶ (deleted)
//! ```
//!
//! *Invariant:* a record in LAUNCHING (or TERMINATING) is committed before
//! the provider is asked to launch (or terminate) its host, and a pass
//! begins by repeating the call of every record still in that state.
//! Providers are idempotent per host id, so a control plane killed at any
//! point neither leaks a host (every host has a record) nor launches one
//! twice (a repeated launch of the same id is the same host).
//!
//! Tasks that could not be placed are the tasks a service still lacks: the
//! service scheduler tries to place them on every pass and reports "unable
//! to place" while it cannot, and places them as soon as a launched host
//! registers. With managed scaling DISABLED, a group is held at its
//! configured desired size. Without an associated capacity provider a
//! group launches nothing: its hosts would have no cluster to join.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flotilla_hosts::provider::HOST_ID_ATTRIBUTE;
use flotilla_hosts::scaling::{self, Bounds, HostView, Observation, ScalingSettings, Size};
use flotilla_hosts::{HostGroup, HostProvider, HostSpec};
use flotilla_store::Txn;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::capacity_providers::CapacityProviderRecord;
use crate::instances::{scan, InstanceRecord};
use crate::records::{self, keys, Versioned};
use crate::services::ServiceRecord;
use crate::tasks::TaskRecord;
use crate::Ecs;

/// Most hosts one pass launches into the store in one transaction.
const LAUNCH_RECORDS_PER_TXN: usize = 100;
/// Most provider calls one pass makes at once.
const PROVIDER_CALLS_CONCURRENT: usize = 16;

/// Where a host is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HostState {
    Launching,
    Running,
    Draining,
    Terminating,
}

/// One host of a group, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub spec: HostSpec,
    pub state: HostState,
    pub launched_at_ms: u64,
    /// The container instance its agent registered as, once it has.
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// The configured groups and their providers.
pub struct HostGroups {
    groups: Vec<(HostGroup, Arc<dyn HostProvider>)>,
    /// The region and endpoint a launched host's agent is given.
    region: String,
    endpoint: String,
}

/// What one pass did to one group, for tests and logs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassReport {
    pub reservation_percent: f64,
    pub launched: Vec<String>,
    pub draining: Vec<String>,
    pub terminated: Vec<String>,
}

/// A capacity provider that scales a group, as the pass reads it.
struct Scaler {
    name: String,
    cluster: String,
    settings: ScalingSettings,
    managed: bool,
    managed_draining: bool,
}

impl HostGroups {
    pub fn new(
        groups: Vec<(HostGroup, Arc<dyn HostProvider>)>,
        region: String,
        endpoint: String,
    ) -> Self {
        HostGroups {
            groups,
            region,
            endpoint,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// One pass over every group; a group that fails is logged and the
    /// others go on.
    pub async fn pass(&self, ecs: &Ecs) -> BTreeMap<String, PassReport> {
        let mut reports = BTreeMap::new();
        for (group, provider) in &self.groups {
            match self.pass_group(ecs, group, provider.as_ref()).await {
                Ok(report) => {
                    reports.insert(group.name.clone(), report);
                }
                Err(error) => {
                    tracing::warn!(group = %group.name, %error, "scaling a host group failed")
                }
            }
        }
        reports
    }

    /// Scales host groups until the process ends.
    pub async fn run(self: Arc<Self>, ecs: Arc<Ecs>, period: std::time::Duration) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.pass(&ecs).await;
        }
    }

    async fn pass_group(
        &self,
        ecs: &Ecs,
        group: &HostGroup,
        provider: &dyn HostProvider,
    ) -> Result<PassReport, ApiError> {
        let mut report = PassReport::default();
        let mut failures = Vec::new();
        self.finish_intents(ecs, group, provider, &mut report, &mut failures)
            .await?;
        let Some(scaler) = scaler_of(ecs, group)? else {
            return Ok(report);
        };
        let now_ms = ecs.clock.now_ms();
        let hosts = self.matched_hosts(ecs, group, &scaler).await?;
        let facts = ClusterFacts::read(ecs, &scaler.cluster)?;
        // Draining hosts whose tasks are gone are terminated.
        for host in hosts
            .iter()
            .filter(|h| h.value.state == HostState::Draining)
        {
            let busy = host
                .value
                .instance_id
                .as_deref()
                .is_some_and(|id| facts.tasks_on.contains_key(id));
            if !busy {
                self.set_state(ecs, group, host, HostState::Terminating)
                    .await?;
            }
        }
        let observation = Observation {
            hosts: hosts
                .iter()
                .filter(|h| matches!(h.value.state, HostState::Launching | HostState::Running))
                .map(|h| HostView {
                    id: h.value.spec.host_id.clone(),
                    launched_at_ms: h.value.launched_at_ms,
                    busy: h
                        .value
                        .instance_id
                        .as_deref()
                        .is_some_and(|id| facts.non_daemon_on.contains(id)),
                })
                .collect(),
            hosts_for_unplaced: facts.hosts_for_unplaced(
                ecs,
                &scaler,
                Size {
                    cpu_units: group.cpu_units,
                    memory_mib: group.memory_mib,
                },
            )?,
        };
        let bounds = Bounds {
            min: group.min,
            max: group.max,
        };
        let decision = if scaler.managed {
            scaling::decide(&scaler.settings, bounds, &observation, now_ms)
        } else {
            let fixed = ScalingSettings {
                minimum_step: 1,
                maximum_step: group.max.max(1),
                ..scaler.settings
            };
            let pinned = Bounds {
                min: group.desired,
                max: group.desired,
            };
            scaling::decide(&fixed, pinned, &observation, now_ms)
        };
        report.reservation_percent = decision.reservation_percent;
        // The intents are written here; the provider is called for them
        // below, with every other unfinished intent.
        report.launched = self
            .launch(ecs, group, &scaler, decision.launch, now_ms)
            .await?;
        for host_id in &decision.scale_in {
            let Some(host) = hosts.iter().find(|h| &h.value.spec.host_id == host_id) else {
                continue;
            };
            let drain = scaler.managed_draining && host.value.instance_id.is_some();
            if drain {
                set_instance_draining(
                    ecs,
                    &scaler.cluster,
                    host.value.instance_id.as_deref().unwrap_or_default(),
                )
                .await?;
                self.set_state(ecs, group, host, HostState::Draining)
                    .await?;
                report.draining.push(host_id.clone());
            } else {
                self.set_state(ecs, group, host, HostState::Terminating)
                    .await?;
            }
        }
        self.finish_intents(ecs, group, provider, &mut report, &mut failures)
            .await?;
        say(ecs, &scaler, &decision, &report, &failures).await?;
        Ok(report)
    }

    /// The group's hosts, each matched to the container instance its agent
    /// registered as (by the `flotilla.host-id` attribute), LAUNCHING hosts
    /// that registered becoming RUNNING.
    async fn matched_hosts(
        &self,
        ecs: &Ecs,
        group: &HostGroup,
        scaler: &Scaler,
    ) -> Result<Vec<Versioned<HostRecord>>, ApiError> {
        let instances =
            scan::<InstanceRecord>(ecs.store.as_ref(), &keys::instances_of(&scaler.cluster))?;
        let by_host: BTreeMap<String, String> = instances
            .iter()
            .filter(|i| i.value.is_live())
            .filter_map(|i| Some((host_id_of(&i.value)?, i.value.instance_id.clone())))
            .collect();
        let mut hosts = host_records(ecs, &group.name)?;
        for host in &mut hosts {
            let found = by_host.get(&host.value.spec.host_id);
            if found.is_some() && host.value.instance_id.as_ref() != found {
                let mut record = host.value.clone();
                record.instance_id = found.cloned();
                let key = keys::host(&group.name, &record.spec.host_id);
                let txn = Txn::new()
                    .expect(&key, host.revision)
                    .put(&key, records::encode(&record));
                if let Some(revision) = commit(ecs, txn).await? {
                    *host = Versioned {
                        value: record,
                        revision,
                    };
                }
            }
        }
        Ok(hosts)
    }

    /// Writes `count` LAUNCHING records: the intent, before any provider call.
    async fn launch(
        &self,
        ecs: &Ecs,
        group: &HostGroup,
        scaler: &Scaler,
        count: u32,
        now_ms: u64,
    ) -> Result<Vec<String>, ApiError> {
        let mut launched = Vec::new();
        // The id's random end: 16 hex digits, unique enough within a group.
        let ids: Vec<String> = (0..count)
            .map(|_| {
                let hex = ecs.ids.uuid().replace('-', "");
                format!("{}-{}", group.name, &hex[hex.len().saturating_sub(16)..])
            })
            .collect();
        for chunk in ids.chunks(LAUNCH_RECORDS_PER_TXN) {
            let mut txn = Txn::new();
            for host_id in chunk {
                let record = HostRecord {
                    spec: HostSpec {
                        host_id: host_id.clone(),
                        group: group.name.clone(),
                        cluster: scaler.cluster.clone(),
                        capacity_provider: scaler.name.clone(),
                        endpoint: self.endpoint.clone(),
                        region: self.region.clone(),
                        cpu_units: group.cpu_units,
                        memory_mib: group.memory_mib,
                    },
                    state: HostState::Launching,
                    launched_at_ms: now_ms,
                    instance_id: None,
                };
                let key = keys::host(&group.name, host_id);
                txn = txn.expect(&key, 0).put(&key, records::encode(&record));
            }
            if commit(ecs, txn).await?.is_some() {
                launched.extend(chunk.iter().cloned());
            }
        }
        Ok(launched)
    }

    /// Repeats the provider call of every host still in LAUNCHING or
    /// TERMINATING, and records what succeeded.
    async fn finish_intents(
        &self,
        ecs: &Ecs,
        group: &HostGroup,
        provider: &dyn HostProvider,
        report: &mut PassReport,
        failures: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let pending: Vec<Versioned<HostRecord>> = host_records(ecs, &group.name)?
            .into_iter()
            .filter(|h| matches!(h.value.state, HostState::Launching | HostState::Terminating))
            .collect();
        for chunk in pending.chunks(PROVIDER_CALLS_CONCURRENT) {
            let calls = chunk.iter().map(|host| async move {
                let state = host.value.state;
                (
                    host,
                    state,
                    self.call(provider, group, ecs, &host.value.spec.host_id, state)
                        .await,
                )
            });
            for (host, state, outcome) in join_all(calls).await {
                match (state, outcome) {
                    (HostState::Terminating, Ok(())) => {
                        report.terminated.push(host.value.spec.host_id.clone())
                    }
                    (_, Err(error)) => failures.push(error),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Asks the provider to bring the host to where its `state` says, then
    /// moves the record on: LAUNCHING → RUNNING, TERMINATING → deleted (and
    /// its container instance deregistered).
    async fn call(
        &self,
        provider: &dyn HostProvider,
        group: &HostGroup,
        ecs: &Ecs,
        host_id: &str,
        state: HostState,
    ) -> Result<(), String> {
        let key = keys::host(&group.name, host_id);
        let found = records::get::<HostRecord>(ecs.store.as_ref(), &key)
            .map_err(|e| e.message.clone())?
            .ok_or_else(|| format!("host {host_id} is no longer recorded"))?;
        let spec = found.value.spec.clone();
        let outcome = match state {
            HostState::Launching => provider.launch(&spec).await,
            HostState::Terminating => provider.terminate(&spec).await,
            _ => return Ok(()),
        };
        outcome.map_err(|error| error.to_string())?;
        if state == HostState::Terminating {
            if let Some(instance_id) = &found.value.instance_id {
                deregister(ecs, &spec.cluster, instance_id)
                    .await
                    .map_err(|e| e.message.clone())?;
            }
        }
        // The record moves on only if nobody changed it meanwhile; the next
        // pass repeats the (idempotent) call otherwise.
        let txn = Txn::new().expect(&key, found.revision);
        let txn = match state {
            HostState::Launching => {
                let mut record = found.value;
                if record.state == HostState::Launching {
                    record.state = HostState::Running;
                }
                txn.put(&key, records::encode(&record))
            }
            _ => txn.delete(&key),
        };
        commit(ecs, txn).await.map_err(|e| e.message.clone())?;
        Ok(())
    }

    async fn set_state(
        &self,
        ecs: &Ecs,
        group: &HostGroup,
        host: &Versioned<HostRecord>,
        state: HostState,
    ) -> Result<(), ApiError> {
        let key = keys::host(&group.name, &host.value.spec.host_id);
        let mut record = host.value.clone();
        record.state = state;
        let txn = Txn::new()
            .expect(&key, host.revision)
            .put(&key, records::encode(&record));
        commit(ecs, txn).await.map(|_| ())
    }
}

/// Runs `futures` together and collects their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Every host record of a group.
pub fn host_records(ecs: &Ecs, group: &str) -> Result<Vec<Versioned<HostRecord>>, ApiError> {
    scan::<HostRecord>(ecs.store.as_ref(), &keys::hosts_of(group))
}

fn host_id_of(instance: &InstanceRecord) -> Option<String> {
    instance
        .instance
        .attributes
        .as_deref()?
        .iter()
        .find(|a| a.name.as_deref() == Some(HOST_ID_ATTRIBUTE))
        .and_then(|a| a.value.clone())
}

/// The ACTIVE capacity provider, associated with a cluster, whose
/// autoScalingGroupArn names `group`.
fn scaler_of(ecs: &Ecs, group: &HostGroup) -> Result<Option<Scaler>, ApiError> {
    let providers = scan::<CapacityProviderRecord>(ecs.store.as_ref(), keys::CAPACITY_PROVIDERS)?;
    let found = providers.into_iter().map(|p| p.value).find(|p| {
        p.is_active()
            && p.cluster.is_some()
            && p.provider
                .auto_scaling_group_provider
                .as_ref()
                .and_then(|a| a.auto_scaling_group_arn.as_deref())
                .is_some_and(|arn| HostGroup::name_in_arn(arn) == group.name)
    });
    let Some(record) = found else {
        return Ok(None);
    };
    let asg = record
        .provider
        .auto_scaling_group_provider
        .clone()
        .unwrap_or_default();
    let scaling = asg.managed_scaling.clone().unwrap_or_default();
    let number =
        |value: Option<i32>, default: i32| u32::try_from(value.unwrap_or(default)).unwrap_or(0);
    Ok(Some(Scaler {
        name: record.provider.name.clone().unwrap_or_default(),
        cluster: record.cluster.clone().unwrap_or_default(),
        managed: scaling.status == Some(ManagedScalingStatus::Enabled),
        managed_draining: asg.managed_draining != Some(ManagedDraining::Disabled),
        settings: ScalingSettings {
            target_capacity_percent: number(scaling.target_capacity, 100),
            minimum_step: number(scaling.minimum_scaling_step_size, 1),
            maximum_step: number(scaling.maximum_scaling_step_size, 10_000),
            warmup_ms: u64::from(number(scaling.instance_warmup_period, 300)) * 1000,
            termination_protection: asg.managed_termination_protection
                == Some(ManagedTerminationProtection::Enabled),
        },
    }))
}

/// What a pass reads of the cluster's instances, tasks and services.
struct ClusterFacts {
    /// Live tasks per instance.
    tasks_on: BTreeMap<String, u32>,
    /// Instances running at least one task that is not a daemon service's.
    non_daemon_on: BTreeSet<String>,
    /// Live tasks per service group (`service:NAME`).
    live_by_group: BTreeMap<String, u64>,
    services: Vec<ServiceRecord>,
}

impl ClusterFacts {
    fn read(ecs: &Ecs, cluster: &str) -> Result<Self, ApiError> {
        let services: Vec<ServiceRecord> =
            scan::<ServiceRecord>(ecs.store.as_ref(), &keys::services_of(cluster))?
                .into_iter()
                .map(|s| s.value)
                .collect();
        let daemon_groups: BTreeSet<String> = services
            .iter()
            .filter(|s| s.is_daemon())
            .map(|s| format!("service:{}", s.name))
            .collect();
        let mut facts = ClusterFacts {
            tasks_on: BTreeMap::new(),
            non_daemon_on: BTreeSet::new(),
            live_by_group: BTreeMap::new(),
            services,
        };
        for task in scan::<TaskRecord>(ecs.store.as_ref(), &keys::tasks_of(cluster))? {
            let task = task.value;
            if task.last_status() == "STOPPED" {
                continue;
            }
            *facts.tasks_on.entry(task.instance_id.clone()).or_default() += 1;
            let group = task.task.group.clone().unwrap_or_default();
            if !daemon_groups.contains(&group) {
                facts.non_daemon_on.insert(task.instance_id.clone());
            }
            if task.desired_status() == "RUNNING" {
                *facts.live_by_group.entry(group).or_default() += 1;
            }
        }
        Ok(facts)
    }

    /// Hosts the tasks waiting for `scaler`'s capacity would need: for each
    /// replica service whose strategy names it, the tasks it lacks.
    fn hosts_for_unplaced(&self, ecs: &Ecs, scaler: &Scaler, host: Size) -> Result<u32, ApiError> {
        let mut hosts = 0u32;
        for service in &self.services {
            if service.is_daemon() || service.service.status.as_deref() != Some("ACTIVE") {
                continue;
            }
            let Some(primary) = service.deployments.first() else {
                continue;
            };
            let names_provider = primary
                .spec
                .capacity_provider_strategy
                .iter()
                .any(|item| item.capacity_provider.as_deref() == Some(scaler.name.as_str()));
            if !names_provider {
                continue;
            }
            let desired = u64::try_from(service.service.desired_count.unwrap_or(0)).unwrap_or(0);
            let live = self
                .live_by_group
                .get(&format!("service:{}", service.name))
                .copied()
                .unwrap_or(0);
            let lacking = desired.saturating_sub(live);
            if lacking == 0 {
                continue;
            }
            let size = task_size(ecs, &primary.spec.task_definition)?;
            hosts = hosts.saturating_add(scaling::hosts_for(lacking, size, host));
        }
        Ok(hosts)
    }
}

/// A task definition's CPU units and memory, as placement reserves them.
fn task_size(ecs: &Ecs, definition_arn: &str) -> Result<Size, ApiError> {
    let reference = definition_arn.rsplit('/').next().unwrap_or_default();
    let Some((family, revision)) = reference.rsplit_once(':') else {
        return Ok(Size {
            cpu_units: 0,
            memory_mib: 0,
        });
    };
    let revision = revision.parse::<i32>().unwrap_or(0);
    let key = keys::task_definition(family, revision);
    let Some(found) =
        records::get::<crate::task_definitions::TaskDefinitionRecord>(ecs.store.as_ref(), &key)?
    else {
        return Ok(Size {
            cpu_units: 0,
            memory_mib: 0,
        });
    };
    let needs = crate::tasks::needs_of(&found.value.definition);
    Ok(Size {
        cpu_units: u64::try_from(needs.cpu_units).unwrap_or(0),
        memory_mib: u64::try_from(needs.memory_mib).unwrap_or(0),
    })
}

async fn set_instance_draining(
    ecs: &Ecs,
    cluster: &str,
    instance_id: &str,
) -> Result<(), ApiError> {
    ecs.update_container_instances_state(UpdateContainerInstancesStateRequest {
        cluster: Some(cluster.to_owned()),
        container_instances: Some(vec![instance_id.to_owned()]),
        status: Some(ContainerInstanceStatus::Draining),
    })
    .await
    .map(|_| ())
}

/// A terminated host's instance goes INACTIVE at once, as ECS deregisters
/// the instances its Auto Scaling group terminates. An instance (or cluster)
/// already gone is as good as deregistered.
async fn deregister(ecs: &Ecs, cluster: &str, instance_id: &str) -> Result<(), ApiError> {
    let answer = ecs
        .deregister_container_instance(DeregisterContainerInstanceRequest {
            cluster: Some(cluster.to_owned()),
            container_instance: Some(instance_id.to_owned()),
            force: Some(true),
        })
        .await;
    match answer {
        Ok(_) => Ok(()),
        Err(error)
            if error.code.contains("ClusterNotFound") || error.message.contains("not found") =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Commits `txn`; `None` when a condition failed.
async fn commit(ecs: &Ecs, txn: Txn) -> Result<Option<u64>, ApiError> {
    match ecs.store.commit(txn).await {
        Ok(revision) => Ok(Some(revision)),
        Err(flotilla_store::StoreError::Conflict { .. }) => Ok(None),
        Err(error) => Err(records::store_error(error)),
    }
}

/// Tells what the pass did in the provider's `updateStatus` and
/// `updateStatusReason`, written only when something happened.
async fn say(
    ecs: &Ecs,
    scaler: &Scaler,
    decision: &scaling::Decision,
    report: &PassReport,
    failures: &[String],
) -> Result<(), ApiError> {
    let reason = if let Some(failure) = failures.first() {
        format!("managed scaling: {failure}")
    } else if !report.launched.is_empty() {
        format!(
            "managed scaling launched {} host(s) (CapacityProviderReservation {:.0}%, target {}%, desired {})",
            report.launched.len(),
            decision.reservation_percent,
            scaler.settings.target_capacity_percent,
            decision.desired
        )
    } else if !report.draining.is_empty() || !report.terminated.is_empty() {
        format!(
            "managed scaling draining {} and terminated {} idle host(s) (CapacityProviderReservation {:.0}%, desired {})",
            report.draining.len(),
            report.terminated.len(),
            decision.reservation_percent,
            decision.desired
        )
    } else {
        return Ok(());
    };
    let status = if failures.is_empty() {
        CapacityProviderUpdateStatus::UpdateComplete
    } else {
        CapacityProviderUpdateStatus::UpdateFailed
    };
    tracing::info!(provider = %scaler.name, %reason, "host group scaled");
    let key = keys::capacity_provider(&scaler.name);
    records::mutate(ecs.store.as_ref(), || {
        let Some(found) = records::get::<CapacityProviderRecord>(ecs.store.as_ref(), &key)? else {
            return Ok(records::Attempt::Done(()));
        };
        let mut record = found.value;
        record.provider.update_status = Some(status);
        record.provider.update_status_reason = Some(reason.clone());
        let txn = Txn::new()
            .expect(&key, found.revision)
            .put(&key, records::encode(&record));
        Ok(records::Attempt::Commit(txn, ()))
    })
    .await
}
