//! The service scheduler's decisions, as pure functions: given a service's
//! tasks (as [`TaskView`]s) and its bounds, which tasks to stop and how many
//! to start. No store, no clock; the reconciler builds the views from the
//! records it read and carries the actions out.
//!
//! Vocabulary:
//!
//! - *live*: desired RUNNING and not on a lost instance.
//! - *occupying*: not yet STOPPED and not on a lost instance (a task being
//!   stopped still runs, so it still counts against `maximumPercent`).
//! - *healthy*: live, RUNNING and, when it has container health checks, HEALTHY.
//! - *stable*: healthy, and so for the stabilization period (the reconciler
//!   decides that when it builds the view). Only stable tasks count towards
//!   the healthy floor and completion: a task that crashes a moment after
//!   RUNNING never lets the tasks it replaces go. A healthy task that is not
//!   yet stable is not stopped for free either: it may be about to count.
//! - *keeper*: a live task of the PRIMARY deployment on a usable instance.
//! - *retirable*: any other live task: an older deployment's, or one on a
//!   DRAINING or deregistered instance. Every retirable is stopped in time.

use std::collections::BTreeMap;

/// The bounds of a service's task counts, from its desired count and its
/// deployment configuration, rounded as ECS rounds them: the healthy floor
/// up, the total ceiling down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub desired: u32,
    pub min_healthy: u32,
    pub max_total: u32,
}

impl Bounds {
    pub fn new(desired: u32, minimum_healthy_percent: u32, maximum_percent: u32) -> Bounds {
        let desired64 = u64::from(desired);
        let min_healthy = (desired64 * u64::from(minimum_healthy_percent)).div_ceil(100);
        let max_total = desired64 * u64::from(maximum_percent) / 100;
        Bounds {
            desired,
            min_healthy: u32::try_from(min_healthy).unwrap_or(u32::MAX),
            // A ceiling below the desired count would keep the service from
            // ever reaching it.
            max_total: u32::try_from(max_total).unwrap_or(u32::MAX).max(desired),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// PROVISIONING, PENDING or ACTIVATING, desired RUNNING.
    Pending,
    /// RUNNING, desired RUNNING.
    Running,
    /// Asked to stop, not yet STOPPED.
    Stopping,
}

/// What the scheduler needs to know of one unstopped task of a service.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskView {
    pub task_id: String,
    /// Whether it belongs to the PRIMARY deployment.
    pub primary: bool,
    /// Position of its deployment among the service's (0 is PRIMARY); older
    /// deployments' tasks go first. `usize::MAX` for an unknown one.
    pub deployment_rank: usize,
    pub instance_id: String,
    /// Availability zone of its instance, for scale-in balance.
    pub zone: String,
    pub phase: Phase,
    /// RUNNING and, when it has health checks, HEALTHY.
    pub healthy: bool,
    /// Healthy, and so for the stabilization period: it counts towards the
    /// healthy floor and completion.
    pub stable: bool,
    /// Its health checks report UNHEALTHY and its grace period is over.
    pub unhealthy: bool,
    /// Its instance takes tasks: ACTIVE, registered, agent not lost.
    pub instance_usable: bool,
    /// Its instance's agent has been gone longer than the timeout: it is not
    /// counted at all, and is replaced.
    pub lost: bool,
    /// Scale-in protection is on.
    pub protected: bool,
}

impl TaskView {
    fn live(&self) -> bool {
        self.phase != Phase::Stopping && !self.lost
    }

    /// Whether it counts towards the healthy floor.
    fn counts_healthy(&self) -> bool {
        self.live() && self.healthy && self.stable && !self.unhealthy
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopWhy {
    /// Its health checks failed (counts as a failed task).
    Unhealthy,
    /// More tasks than desired.
    ScaleIn,
    /// An older deployment's, replaced by the PRIMARY's.
    Replaced,
    /// Its instance is DRAINING, deregistered or no longer eligible.
    Draining,
    /// Its instance's agent is lost.
    AgentLost,
}

/// What one reconciliation step does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Actions {
    /// Tasks of the PRIMARY deployment to start (REPLICA).
    pub start: u32,
    /// Instances to start one PRIMARY task on each (DAEMON).
    pub start_on: Vec<String>,
    /// Indexes into the views, with why.
    pub stop: Vec<(usize, StopWhy)>,
}

/// Counts the reconciler reports and checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Live, stable and not unhealthy: what the healthy floor counts.
    pub healthy: u32,
    pub occupying: u32,
    pub keepers: u32,
    pub retirables: u32,
}

pub fn counts(tasks: &[TaskView]) -> Counts {
    let mut counts = Counts::default();
    for task in tasks {
        if task.counts_healthy() {
            counts.healthy += 1;
        }
        if !task.lost {
            counts.occupying += 1;
        }
        if task.live() && !task.unhealthy {
            if task.primary && task.instance_usable {
                counts.keepers += 1;
            } else {
                counts.retirables += 1;
            }
        }
    }
    counts
}

/// One step of a REPLICA service. `may_launch` is false when the PRIMARY
/// deployment failed without a rollback: nothing new starts.
///
/// Unhealthy tasks and tasks of lost instances are stopped at once (they
/// count as healthy nowhere). Keepers beyond the desired count are stopped,
/// balanced over zones and instances. Retirables are stopped while the
/// stable healthy count stays at or above the floor (those not healthy at
/// once; healthy ones not yet stable only while the floor is met without them).
/// New tasks start while the keepers are fewer than desired and the
/// occupying tasks fewer than the ceiling. Protected tasks are never chosen.
pub fn plan_replica(tasks: &[TaskView], bounds: Bounds, may_launch: bool) -> Actions {
    let mut actions = Actions::default();
    let mut healthy = counts(tasks).healthy;
    for (index, task) in tasks.iter().enumerate() {
        if task.lost && task.phase != Phase::Stopping {
            actions.stop.push((index, StopWhy::AgentLost));
        } else if task.live() && task.unhealthy {
            actions.stop.push((index, StopWhy::Unhealthy));
        }
    }
    let keepers: Vec<usize> = (0..tasks.len())
        .filter(|i| {
            let t = &tasks[*i];
            t.live() && !t.unhealthy && t.primary && t.instance_usable
        })
        .collect();
    let mut kept = keepers.len() as u32;
    if kept > bounds.desired {
        let excess = (kept - bounds.desired) as usize;
        for index in scale_in_order(tasks, &keepers, excess) {
            if tasks[index].counts_healthy() {
                healthy -= 1;
            }
            kept -= 1;
            actions.stop.push((index, StopWhy::ScaleIn));
        }
    }
    let mut retirables: Vec<usize> = (0..tasks.len())
        .filter(|i| {
            let t = &tasks[*i];
            t.live() && !t.unhealthy && !(t.primary && t.instance_usable)
        })
        .collect();
    // Not-healthy ones first (stopping them costs no health), then ones not
    // yet stable, then older deployments first, then tasks of unusable
    // instances.
    retirables.sort_by(|a, b| {
        let key = |t: &TaskView| {
            (
                t.healthy,
                t.stable,
                std::cmp::Reverse(t.deployment_rank),
                t.instance_usable,
            )
        };
        let (a, b) = (&tasks[*a], &tasks[*b]);
        key(a).cmp(&key(b)).then_with(|| a.task_id.cmp(&b.task_id))
    });
    for index in retirables {
        let task = &tasks[index];
        if task.protected {
            continue;
        }
        let why = if task.instance_usable {
            StopWhy::Replaced
        } else {
            StopWhy::Draining
        };
        if !task.healthy {
            actions.stop.push((index, why));
        } else if healthy > bounds.min_healthy {
            if task.counts_healthy() {
                healthy -= 1;
            }
            actions.stop.push((index, why));
        }
    }
    let occupying = counts(tasks).occupying;
    if may_launch {
        let wanted = bounds.desired.saturating_sub(kept);
        let room = bounds.max_total.saturating_sub(occupying);
        actions.start = wanted.min(room);
    }
    actions
}

/// Which `n` of `candidates` (indexes into `tasks`) scale-in stops, as ECS
/// chooses: from the zone holding most of the service's tasks, the instance
/// there holding most; tasks not yet RUNNING before running ones. Protected
/// tasks are skipped, so fewer than `n` may come back.
pub fn scale_in_order(tasks: &[TaskView], candidates: &[usize], n: usize) -> Vec<usize> {
    let mut by_zone: BTreeMap<&str, u32> = BTreeMap::new();
    let mut by_instance: BTreeMap<&str, u32> = BTreeMap::new();
    for index in candidates {
        let task = &tasks[*index];
        *by_zone.entry(task.zone.as_str()).or_default() += 1;
        *by_instance.entry(task.instance_id.as_str()).or_default() += 1;
    }
    let mut open: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|i| !tasks[*i].protected)
        .collect();
    let mut chosen = Vec::with_capacity(n.min(open.len()));
    while chosen.len() < n && !open.is_empty() {
        let best = open
            .iter()
            .enumerate()
            .max_by_key(|(_, index)| {
                let task = &tasks[**index];
                (
                    by_zone.get(task.zone.as_str()).copied().unwrap_or(0),
                    by_instance
                        .get(task.instance_id.as_str())
                        .copied()
                        .unwrap_or(0),
                    task.phase != Phase::Running,
                    task.task_id.as_str(),
                )
            })
            .map(|(position, _)| position);
        let Some(position) = best else { break };
        let index = open.swap_remove(position);
        let task = &tasks[index];
        if let Some(count) = by_zone.get_mut(task.zone.as_str()) {
            *count -= 1;
        }
        if let Some(count) = by_instance.get_mut(task.instance_id.as_str()) {
            *count -= 1;
        }
        chosen.push(index);
    }
    chosen
}

/// One instance as a DAEMON service sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonInstance {
    pub instance_id: String,
    /// ACTIVE, agent not lost, and it satisfies the service's constraints.
    pub eligible: bool,
}

/// One step of a DAEMON service: one PRIMARY task on every eligible
/// instance. Tasks on ineligible instances go at once; an older
/// deployment's task is replaced only once it is stopped (one task per
/// instance at most), and stopped while the healthy count stays at or
/// above the floor. The floor's desired count is the eligible instances.
pub fn plan_daemon(
    tasks: &[TaskView],
    instances: &[DaemonInstance],
    minimum_healthy_percent: u32,
    may_launch: bool,
) -> Actions {
    let mut actions = Actions::default();
    let eligible: std::collections::BTreeSet<&str> = instances
        .iter()
        .filter(|i| i.eligible)
        .map(|i| i.instance_id.as_str())
        .collect();
    let floor = Bounds::new(eligible.len() as u32, minimum_healthy_percent, 100).min_healthy;
    let mut healthy = counts(tasks).healthy;
    let mut on_instance: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, task) in tasks.iter().enumerate() {
        if task.lost {
            if task.phase != Phase::Stopping {
                actions.stop.push((index, StopWhy::AgentLost));
            }
            continue;
        }
        if !task.live() {
            on_instance
                .entry(task.instance_id.as_str())
                .or_default()
                .push(index);
            continue;
        }
        if !eligible.contains(task.instance_id.as_str()) || !task.instance_usable {
            if task.counts_healthy() {
                healthy -= 1;
            }
            actions.stop.push((index, StopWhy::Draining));
        } else if task.unhealthy {
            actions.stop.push((index, StopWhy::Unhealthy));
            on_instance
                .entry(task.instance_id.as_str())
                .or_default()
                .push(index);
        } else {
            on_instance
                .entry(task.instance_id.as_str())
                .or_default()
                .push(index);
        }
    }
    let mut old_healthy: Vec<usize> = Vec::new();
    for instance in &eligible {
        let here = on_instance.get(instance).cloned().unwrap_or_default();
        let primary: Vec<usize> = here
            .iter()
            .copied()
            .filter(|i| tasks[*i].live() && tasks[*i].primary && !tasks[*i].unhealthy)
            .collect();
        for extra in primary.iter().skip(1) {
            actions.stop.push((*extra, StopWhy::ScaleIn));
        }
        let old: Vec<usize> = here
            .iter()
            .copied()
            .filter(|i| tasks[*i].live() && !tasks[*i].primary && !tasks[*i].unhealthy)
            .collect();
        for index in &old {
            if tasks[*index].protected {
                continue;
            }
            if tasks[*index].healthy {
                old_healthy.push(*index);
            } else {
                actions.stop.push((*index, StopWhy::Replaced));
            }
        }
        if here.is_empty() && may_launch {
            actions.start_on.push((*instance).to_owned());
        }
    }
    for index in old_healthy {
        if healthy > floor {
            if tasks[index].counts_healthy() {
                healthy -= 1;
            }
            actions.stop.push((index, StopWhy::Replaced));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, primary: bool, phase: Phase, healthy: bool) -> TaskView {
        TaskView {
            task_id: id.to_owned(),
            primary,
            deployment_rank: usize::from(!primary),
            instance_id: format!("i-{id}"),
            zone: "a".to_owned(),
            phase,
            healthy,
            stable: healthy,
            unhealthy: false,
            instance_usable: true,
            lost: false,
            protected: false,
        }
    }

    /// Applies actions the way the cluster would once they took effect:
    /// stopped tasks vanish, started tasks appear pending.
    fn settle(tasks: &mut Vec<TaskView>, actions: &Actions, next_id: &mut u32) {
        let stopped: Vec<usize> = actions.stop.iter().map(|(i, _)| *i).collect();
        let mut index = 0;
        tasks.retain(|_| {
            let keep = !stopped.contains(&index);
            index += 1;
            keep
        });
        for _ in 0..actions.start {
            *next_id += 1;
            tasks.push(task(&format!("new{next_id}"), true, Phase::Pending, false));
        }
    }

    fn healthy_all(tasks: &mut [TaskView]) {
        for t in tasks {
            t.phase = Phase::Running;
            t.healthy = true;
            t.stable = true;
        }
    }

    #[test]
    fn bounds_round_the_floor_up_and_the_ceiling_down() {
        assert_eq!(
            Bounds::new(4, 50, 100),
            Bounds {
                desired: 4,
                min_healthy: 2,
                max_total: 4
            }
        );
        assert_eq!(
            Bounds::new(3, 50, 150),
            Bounds {
                desired: 3,
                min_healthy: 2,
                max_total: 4
            }
        );
        assert_eq!(Bounds::new(10_000, 50, 200).max_total, 20_000);
    }

    /// The worked example: 4 tasks, minimum 50%, maximum 100%.
    /// v1 v1 v1 v1 → v1 v1 → v1 v1 v2 v2 → v2 v2 → v2 v2 v2 v2.
    #[test]
    fn rolling_example_four_tasks_fifty_to_one_hundred() {
        let bounds = Bounds::new(4, 50, 100);
        let mut tasks: Vec<TaskView> = (0..4)
            .map(|i| task(&format!("old{i}"), false, Phase::Running, true))
            .collect();
        let mut next = 0;
        let step = plan_replica(&tasks, bounds, true);
        assert_eq!((step.start, step.stop.len()), (0, 2), "stop two old");
        settle(&mut tasks, &step, &mut next);
        assert_eq!(tasks.len(), 2);
        let step = plan_replica(&tasks, bounds, true);
        assert_eq!(
            (step.start, step.stop.len()),
            (2, 0),
            "at the minimum: add two"
        );
        settle(&mut tasks, &step, &mut next);
        assert_eq!(
            plan_replica(&tasks, bounds, true),
            Actions::default(),
            "wait for health"
        );
        healthy_all(&mut tasks);
        let step = plan_replica(&tasks, bounds, true);
        assert_eq!(
            (step.start, step.stop.len()),
            (0, 2),
            "at the maximum: stop two old"
        );
        assert!(step
            .stop
            .iter()
            .all(|(i, why)| !tasks[*i].primary && *why == StopWhy::Replaced));
        settle(&mut tasks, &step, &mut next);
        let step = plan_replica(&tasks, bounds, true);
        assert_eq!((step.start, step.stop.len()), (2, 0), "add the last two");
        settle(&mut tasks, &step, &mut next);
        healthy_all(&mut tasks);
        assert_eq!(
            plan_replica(&tasks, bounds, true),
            Actions::default(),
            "done"
        );
        assert!(tasks.iter().all(|t| t.primary));
    }

    #[test]
    fn tasks_not_yet_stable_keep_the_old_ones_at_the_floor() {
        // Four old tasks, four new ones RUNNING but not yet stable (they may
        // be about to crash): the floor of two is kept by old tasks alone.
        let unstable = |id: &str, primary: bool| TaskView {
            stable: false,
            ..task(id, primary, Phase::Running, true)
        };
        let mut tasks: Vec<TaskView> = (0..4)
            .map(|i| task(&format!("old{i}"), false, Phase::Running, true))
            .collect();
        tasks.extend((0..4).map(|i| unstable(&format!("new{i}"), true)));
        let step = plan_replica(&tasks, Bounds::new(4, 50, 200), true);
        assert_eq!(step.stop.len(), 2, "{step:?}");
        assert!(step.stop.iter().all(|(i, _)| !tasks[*i].primary));
        // Old tasks not yet stable themselves are not stopped for free: they
        // may be about to count.
        let early: Vec<TaskView> = (0..4)
            .map(|i| unstable(&format!("old{i}"), false))
            .collect();
        assert_eq!(
            plan_replica(&early, Bounds::new(4, 50, 100), true),
            Actions::default()
        );
    }

    #[test]
    fn stopping_tasks_count_against_the_ceiling_until_stopped() {
        let bounds = Bounds::new(2, 100, 100);
        let mut tasks = vec![
            task("a", true, Phase::Running, true),
            task("b", true, Phase::Stopping, true),
        ];
        tasks[1].healthy = false;
        assert_eq!(plan_replica(&tasks, bounds, true).start, 0);
        tasks.pop();
        assert_eq!(plan_replica(&tasks, bounds, true).start, 1);
    }

    #[test]
    fn scale_in_balances_zones_then_instances_and_skips_protected() {
        let mut tasks = Vec::new();
        for (id, zone, instance) in [
            ("1", "a", "x"),
            ("2", "a", "x"),
            ("3", "a", "y"),
            ("4", "b", "z"),
        ] {
            let mut t = task(id, true, Phase::Running, true);
            t.zone = zone.to_owned();
            t.instance_id = instance.to_owned();
            tasks.push(t);
        }
        tasks[1].protected = true;
        let actions = plan_replica(&tasks, Bounds::new(2, 100, 200), true);
        let stopped: Vec<&str> = actions
            .stop
            .iter()
            .map(|(i, _)| tasks[*i].task_id.as_str())
            .collect();
        // Zone a holds three; instance x holds two there, but "2" is protected.
        assert_eq!(stopped, ["1", "3"]);
    }

    #[test]
    fn unhealthy_and_lost_tasks_are_replaced() {
        let mut tasks = vec![
            task("a", true, Phase::Running, true),
            task("b", true, Phase::Running, false),
        ];
        tasks[1].unhealthy = true;
        let mut lost = task("c", true, Phase::Running, true);
        lost.lost = true;
        tasks.push(lost);
        let actions = plan_replica(&tasks, Bounds::new(3, 100, 200), true);
        assert_eq!(
            actions.stop,
            vec![(1, StopWhy::Unhealthy), (2, StopWhy::AgentLost)]
        );
        // a keeps; b still occupies until stopped; c does not count.
        assert_eq!(actions.start, 2);
    }

    #[test]
    fn draining_tasks_move_within_the_bounds() {
        let mut tasks: Vec<TaskView> = (0..2)
            .map(|i| task(&format!("t{i}"), true, Phase::Running, true))
            .collect();
        tasks[0].instance_usable = false;
        let actions = plan_replica(&tasks, Bounds::new(2, 50, 100), true);
        assert_eq!(actions.stop, vec![(0, StopWhy::Draining)]);
        assert_eq!(actions.start, 0, "room comes once it has stopped");
        let actions = plan_replica(&tasks, Bounds::new(2, 100, 200), true);
        assert_eq!((actions.start, actions.stop.len()), (1, 0));
    }

    #[test]
    fn a_failed_deployment_without_rollback_starts_nothing() {
        assert_eq!(plan_replica(&[], Bounds::new(3, 100, 200), false).start, 0);
    }

    #[test]
    fn daemon_one_task_per_eligible_instance() {
        let instances = vec![
            DaemonInstance {
                instance_id: "i-a".into(),
                eligible: true,
            },
            DaemonInstance {
                instance_id: "i-b".into(),
                eligible: true,
            },
            DaemonInstance {
                instance_id: "i-c".into(),
                eligible: false,
            },
        ];
        let mut on_c = task("c", true, Phase::Running, true);
        on_c.instance_id = "i-c".into();
        let tasks = vec![task("a", true, Phase::Running, true), on_c];
        let actions = plan_daemon(&tasks, &instances, 0, true);
        assert_eq!(actions.start_on, vec!["i-b".to_owned()]);
        assert_eq!(actions.stop, vec![(1, StopWhy::Draining)]);
    }

    #[test]
    fn daemon_rolls_instance_by_instance_above_the_floor() {
        let instances: Vec<DaemonInstance> = ["i-a", "i-b"]
            .iter()
            .map(|id| DaemonInstance {
                instance_id: (*id).into(),
                eligible: true,
            })
            .collect();
        let tasks = vec![
            task("a", false, Phase::Running, true),
            task("b", false, Phase::Running, true),
        ];
        let actions = plan_daemon(&tasks, &instances, 50, true);
        assert_eq!(actions.stop.len(), 1);
        assert!(
            actions.start_on.is_empty(),
            "the old task still occupies its instance"
        );
    }
}
