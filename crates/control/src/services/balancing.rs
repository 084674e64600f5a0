//! One pass's work on a cluster's load balancer targets: service tasks
//! that run are registered, tasks asked to stop are deregistered and held
//! DEACTIVATING for their target groups' deregistration delay, and tasks
//! that stopped on their own are deregistered at once. See
//! `target_groups.rs` for the picture.
//!
//! *Architecture invariant:* level-triggered from the task records, like
//! the rest of the scheduler. Registering is done before the task record
//! says so, and registering twice changes nothing, so a pass killed in
//! between is redone; a task that was stopped meanwhile is deregistered at
//! once rather than recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flotilla_types::ApiError;

use super::events;
use super::reconcile::TaskFacts;
use super::target_groups::{task_target, RegisteredTarget, Target, TargetGroupInfo, TargetGroups};
use super::ServiceRecord;
use crate::instances::InstanceRecord;
use crate::records::{self, Attempt, Versioned};
use crate::Ecs;

/// Target groups as read once in a pass.
struct GroupCache<'a> {
    groups: &'a dyn TargetGroups,
    known: HashMap<String, Option<TargetGroupInfo>>,
}

impl GroupCache<'_> {
    fn get(&mut self, arn: &str) -> Option<TargetGroupInfo> {
        if let Some(known) = self.known.get(arn) {
            return known.clone();
        }
        let info = match self.groups.target_group(arn) {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%arn, %error, "target group unreadable");
                None
            }
        };
        self.known.insert(arn.to_owned(), info.clone());
        info
    }
}

/// Targets grouped by target group.
fn by_group<'a>(
    targets: impl Iterator<Item = &'a RegisteredTarget>,
) -> BTreeMap<String, Vec<Target>> {
    let mut grouped: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    for registered in targets {
        grouped
            .entry(registered.target_group_arn.clone())
            .or_default()
            .push(registered.target.clone());
    }
    grouped
}

/// The service a task's group names.
fn service_of(facts: &TaskFacts) -> Option<&str> {
    facts.group.as_deref()?.strip_prefix("service:")
}

/// Registers and deregisters a cluster's service tasks. Returns whether it
/// changed any task record (the caller reads them again).
pub(crate) async fn sync_targets(
    ecs: &Ecs,
    groups: &dyn TargetGroups,
    cluster: &str,
    services: &[Versioned<ServiceRecord>],
    tasks_by_group: &HashMap<String, Vec<Versioned<Arc<TaskFacts>>>>,
    instances: &BTreeMap<String, InstanceRecord>,
    now_ms: u64,
) -> Result<bool, ApiError> {
    let mut cache = GroupCache {
        groups,
        known: HashMap::new(),
    };
    let mut told: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut changed = false;
    for service in services {
        changed |= register(
            ecs,
            &mut cache,
            cluster,
            &service.value,
            tasks_by_group,
            instances,
            &mut told,
        )
        .await?;
    }
    for tasks in tasks_by_group.values() {
        changed |= deregister(ecs, &mut cache, cluster, tasks, now_ms, &mut told).await?;
    }
    for (service, messages) in told {
        append_events(ecs, cluster, &service, messages).await?;
    }
    Ok(changed)
}

/// Registers the service's RUNNING tasks that are not registered yet.
async fn register(
    ecs: &Ecs,
    cache: &mut GroupCache<'_>,
    cluster: &str,
    service: &ServiceRecord,
    tasks_by_group: &HashMap<String, Vec<Versioned<Arc<TaskFacts>>>>,
    instances: &BTreeMap<String, InstanceRecord>,
    told: &mut BTreeMap<String, Vec<String>>,
) -> Result<bool, ApiError> {
    if service.status() == "INACTIVE" {
        return Ok(false);
    }
    let Some(tasks) = tasks_by_group.get(&service.group()) else {
        return Ok(false);
    };
    let mut wanted: Vec<(String, Vec<RegisteredTarget>)> = Vec::new();
    for found in tasks {
        let facts = &found.value;
        if facts.last_status() != "RUNNING"
            || facts.desired_status() != "RUNNING"
            || !facts.targets.is_empty()
        {
            continue;
        }
        let load_balancers = service.load_balancers_of(facts.started_by.as_deref());
        if load_balancers.is_empty() {
            continue;
        }
        let Some(task) = ecs.get_task(cluster, &facts.task_id)? else {
            continue;
        };
        let ec2_instance_id = instances
            .get(&facts.instance_id)
            .and_then(|i| i.instance.ec2_instance_id.clone())
            .unwrap_or_default();
        let mut targets = Vec::new();
        for load_balancer in load_balancers {
            let arn = load_balancer.target_group_arn.clone().unwrap_or_default();
            let Some(info) = cache.get(&arn) else { break };
            let Some(target) = task_target(
                &task.value,
                &ec2_instance_id,
                load_balancer,
                info.target_type,
            ) else {
                break;
            };
            targets.push(RegisteredTarget {
                target_group_arn: arn,
                target,
            });
        }
        // Registered in all of its target groups or in none yet.
        if targets.len() == load_balancers.len() {
            wanted.push((facts.task_id.clone(), targets));
        }
    }
    if wanted.is_empty() {
        return Ok(false);
    }
    let all = by_group(wanted.iter().flat_map(|(_, targets)| targets.iter()));
    for (arn, targets) in &all {
        cache.groups.register(arn, targets.clone()).await?;
    }
    let mut changed = false;
    let mut late: Vec<RegisteredTarget> = Vec::new();
    for (task_id, targets) in wanted {
        let recorded = AtomicBool::new(false);
        ecs.change_task(cluster, &task_id, |task, _| {
            recorded.store(false, Ordering::Relaxed);
            if task.desired_status() != "RUNNING"
                || task.last_status() != "RUNNING"
                || !task.targets.is_empty()
            {
                return false;
            }
            task.targets = targets.clone();
            recorded.store(true, Ordering::Relaxed);
            true
        })
        .await?;
        if recorded.load(Ordering::Relaxed) {
            changed = true;
        } else {
            late.extend(targets);
        }
    }
    // Stopped while it was being registered: out again at once.
    for (arn, targets) in by_group(late.iter()) {
        cache.groups.deregister(&arn, targets, 0).await?;
    }
    let messages = told.entry(service.name.clone()).or_default();
    for (arn, targets) in &all {
        messages.push(events::registered_targets(
            &service.name,
            targets.len(),
            arn,
        ));
    }
    Ok(changed)
}

/// Deregisters tasks asked to stop (then waits out the delay) or stopped.
async fn deregister(
    ecs: &Ecs,
    cache: &mut GroupCache<'_>,
    cluster: &str,
    tasks: &[Versioned<Arc<TaskFacts>>],
    now_ms: u64,
    told: &mut BTreeMap<String, Vec<String>>,
) -> Result<bool, ApiError> {
    let mut changed = false;
    for found in tasks {
        let facts = &found.value;
        if facts.targets.is_empty() {
            continue;
        }
        let stopped = facts.last_status() == "STOPPED";
        if !stopped && facts.desired_status() != "STOPPED" {
            continue;
        }
        match facts.deactivating_until_ms {
            Some(until_ms) if !stopped && now_ms < until_ms => continue,
            Some(_) => {}
            None => {
                let mut delay_ms = 0;
                for (arn, targets) in by_group(facts.targets.iter()) {
                    if !stopped {
                        delay_ms =
                            delay_ms.max(cache.get(&arn).map_or(0, |i| i.deregistration_delay_ms));
                    }
                    let count = targets.len();
                    cache.groups.deregister(&arn, targets, now_ms).await?;
                    if let Some(service) = service_of(facts) {
                        told.entry(service.to_owned())
                            .or_default()
                            .push(events::deregistered_targets(service, count, &arn));
                    }
                }
                if !stopped && delay_ms > 0 {
                    ecs.change_task(cluster, &facts.task_id, |task, _| {
                        if task.targets.is_empty() || task.deactivating_until_ms.is_some() {
                            return false;
                        }
                        task.deactivating_until_ms = Some(now_ms + delay_ms);
                        if task.last_status() != "STOPPED" {
                            task.task.last_status = Some("DEACTIVATING".to_owned());
                        }
                        true
                    })
                    .await?;
                    changed = true;
                    continue;
                }
            }
        }
        // Drained (or stopped): the agent may now stop it.
        ecs.change_task(cluster, &facts.task_id, |task, _| {
            if task.targets.is_empty() {
                return false;
            }
            task.targets.clear();
            task.deactivating_until_ms = None;
            if task.last_status() == "DEACTIVATING" {
                task.task.last_status = Some("STOPPING".to_owned());
            }
            task.touch();
            true
        })
        .await?;
        changed = true;
    }
    Ok(changed)
}

async fn append_events(
    ecs: &Ecs,
    cluster: &str,
    service: &str,
    messages: Vec<String>,
) -> Result<(), ApiError> {
    if messages.is_empty() {
        return Ok(());
    }
    let now_seconds = ecs.clock.now_ms() as f64 / 1000.0;
    let ids: Vec<String> = messages.iter().map(|_| ecs.ids.uuid()).collect();
    let key = records::keys::service(cluster, service);
    records::mutate(ecs.store.as_ref(), || {
        let Some(found) = ecs.get_service(cluster, service)? else {
            return Ok(Attempt::Done(()));
        };
        let mut record = found.value;
        for (message, id) in messages.iter().zip(&ids) {
            record.add_event(id.clone(), now_seconds, message.clone());
        }
        let txn = flotilla_store::Txn::new()
            .expect(&key, found.revision)
            .put(&key, records::encode(&record));
        Ok(Attempt::Commit(txn, ()))
    })
    .await
}
