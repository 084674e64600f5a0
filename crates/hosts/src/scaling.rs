//! Managed scaling: how many hosts a capacity provider's group should have.
//!
//! ECS scales an Auto Scaling group on one metric, CapacityProviderReservation:
//!
//! ```text
//! reservation = M / N × 100
//!   M = instances needed: those running at least one non-daemon task, plus
//!       the ones the tasks waiting in PROVISIONING would need
//!   N = instances the group runs now
//!   (M = 0, N = 0 → 100; M > 0, N = 0 → 200)
//! ```
//!
//! and a target tracking policy holds it at `targetCapacity`: the group's
//! desired size is ⌈M × 100 / targetCapacity⌉ within its min and max. A
//! scale-out launches at least `minimumScalingStepSize` and at most
//! `maximumScalingStepSize` hosts at a time; scale-in is not bound by the
//! step sizes, as ECS documents.
//!
//! Two rules keep one step from undoing another:
//! - hosts launched and not yet registered count in N, so tasks still waiting
//!   for them do not launch more;
//! - a host within `instanceWarmupPeriod` of its launch is never scaled in:
//!   it is idle because tasks have not reached it yet.
//!
//! With managed termination protection ENABLED only idle hosts (no
//! non-daemon task) are scaled in; DISABLED, idle hosts go first and busy
//! ones after, as an Auto Scaling group would take any instance.

/// A capacity provider's managed scaling settings, as stored (checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalingSettings {
    /// 1–100: how full, in percent, the group is kept.
    pub target_capacity_percent: u32,
    pub minimum_step: u32,
    pub maximum_step: u32,
    pub warmup_ms: u64,
    /// Managed termination protection: only idle hosts are scaled in.
    pub termination_protection: bool,
}

/// One host of the group, as the scaling loop sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostView {
    pub id: String,
    pub launched_at_ms: u64,
    /// Runs at least one non-daemon task (or has one placed on it).
    pub busy: bool,
}

/// What the group holds and its tasks need, read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Hosts launched or running, not on their way out (draining or
    /// terminating ones are left out).
    pub hosts: Vec<HostView>,
    /// Hosts the tasks that could not be placed would need.
    pub hosts_for_unplaced: u32,
}

/// The group's size bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

/// What one step decides.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// CapacityProviderReservation, in percent.
    pub reservation_percent: f64,
    /// M: instances needed.
    pub needed: u32,
    /// The group's desired size after this step.
    pub desired: u32,
    /// Hosts to launch now.
    pub launch: u32,
    /// Hosts to drain and terminate now, by id.
    pub scale_in: Vec<String>,
}

/// CapacityProviderReservation for `needed` (M) and `running` (N).
pub fn reservation_percent(needed: u32, running: u32) -> f64 {
    match (needed, running) {
        (0, 0) => 100.0,
        (_, 0) => 200.0,
        (m, n) => f64::from(m) / f64::from(n) * 100.0,
    }
}

/// The size that holds the reservation at the target: ⌈M × 100 / target⌉.
pub fn desired_for(needed: u32, target_capacity_percent: u32) -> u32 {
    let target = u64::from(target_capacity_percent.clamp(1, 100));
    let desired = (u64::from(needed) * 100).div_ceil(target);
    u32::try_from(desired).unwrap_or(u32::MAX)
}

/// How many hosts `tasks` tasks of one size need on empty hosts of one
/// size: first fit, as the group's hosts are all alike. A task larger than a
/// host needs a host anyway, so that the shortfall stays visible (ECS
/// launches for it too, and placement then says why it cannot go there).
pub fn hosts_for(tasks: u64, task: Size, host: Size) -> u32 {
    if tasks == 0 {
        return 0;
    }
    let per_host = |need: u64, have: u64| have.checked_div(need).unwrap_or(u64::MAX);
    let fit = per_host(task.cpu_units, host.cpu_units)
        .min(per_host(task.memory_mib, host.memory_mib))
        .max(1);
    u32::try_from(tasks.div_ceil(fit)).unwrap_or(u32::MAX)
}

/// A task's or a host's CPU units and memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub cpu_units: u64,
    pub memory_mib: u64,
}

/// One step of managed scaling at `now_ms`.
pub fn decide(
    settings: &ScalingSettings,
    bounds: Bounds,
    observation: &Observation,
    now_ms: u64,
) -> Decision {
    let running = u32::try_from(observation.hosts.len()).unwrap_or(u32::MAX);
    let busy = u32::try_from(observation.hosts.iter().filter(|h| h.busy).count()).unwrap_or(0);
    let needed = busy.saturating_add(observation.hosts_for_unplaced);
    let desired = desired_for(needed, settings.target_capacity_percent)
        .clamp(bounds.min, bounds.max.max(bounds.min));
    let mut decision = Decision {
        reservation_percent: reservation_percent(needed, running),
        needed,
        desired,
        launch: 0,
        scale_in: Vec::new(),
    };
    if desired > running {
        let room = bounds.max.saturating_sub(running);
        let below_min = bounds.min.saturating_sub(running);
        let step = (desired - running).clamp(
            settings.minimum_step,
            settings.maximum_step.max(settings.minimum_step),
        );
        // The group's minimum is restored whatever the step sizes say.
        decision.launch = step.max(below_min).min(room);
    } else if desired < running {
        decision.scale_in = scale_in_candidates(settings, observation, running - desired, now_ms);
    }
    decision
}

/// Up to `excess` hosts past their warm-up, idle ones first, busy ones only
/// without termination protection; newest first within each kind, so the
/// longest-lived hosts stay (and ties go by id, for determinism).
fn scale_in_candidates(
    settings: &ScalingSettings,
    observation: &Observation,
    excess: u32,
    now_ms: u64,
) -> Vec<String> {
    let warm = |h: &&HostView| h.launched_at_ms.saturating_add(settings.warmup_ms) <= now_ms;
    let mut candidates: Vec<&HostView> = observation
        .hosts
        .iter()
        .filter(warm)
        .filter(|h| !h.busy || !settings.termination_protection)
        .collect();
    candidates.sort_by(|a, b| {
        (a.busy, std::cmp::Reverse(a.launched_at_ms), &a.id).cmp(&(
            b.busy,
            std::cmp::Reverse(b.launched_at_ms),
            &b.id,
        ))
    });
    candidates
        .into_iter()
        .take(excess as usize)
        .map(|h| h.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(target: u32, min_step: u32, max_step: u32) -> ScalingSettings {
        ScalingSettings {
            target_capacity_percent: target,
            minimum_step: min_step,
            maximum_step: max_step,
            warmup_ms: 300_000,
            termination_protection: true,
        }
    }

    fn hosts(busy: u32, idle: u32, launched_at_ms: u64) -> Vec<HostView> {
        (0..busy + idle)
            .map(|i| HostView {
                id: format!("h{i:02}"),
                launched_at_ms,
                busy: i < busy,
            })
            .collect()
    }

    #[test]
    fn reservation_follows_the_documented_arithmetic() {
        // (M, N, reservation)
        let table = [
            (0, 0, 100.0),
            (3, 0, 200.0),
            (0, 4, 0.0),
            (2, 4, 50.0),
            (4, 4, 100.0),
            (6, 4, 150.0),
            (1, 3, 100.0 / 3.0),
        ];
        for (m, n, expected) in table {
            let got = reservation_percent(m, n);
            assert!(
                (got - expected).abs() < 1e-9,
                "M={m} N={n}: {got} != {expected}"
            );
        }
    }

    #[test]
    fn desired_size_holds_the_target() {
        // (M, target, desired)
        let table = [
            (0, 100, 0),
            (4, 100, 4),
            (4, 50, 8),
            (3, 75, 4),
            (1, 1, 100),
            (10, 90, 12),
        ];
        for (m, target, expected) in table {
            assert_eq!(desired_for(m, target), expected, "M={m} target={target}");
        }
    }

    #[test]
    fn hosts_for_unplaced_tasks_pack_by_the_scarcer_resource() {
        let host = Size {
            cpu_units: 2048,
            memory_mib: 4096,
        };
        // (tasks, cpu, memory, hosts)
        let table = [
            (0, 256, 512, 0),
            (1, 256, 512, 1),
            (8, 256, 512, 1),
            (9, 256, 512, 2),
            (5, 256, 2048, 3),
            (3, 4096, 512, 3),
            (10_000, 1024, 1024, 5_000),
            (4, 0, 0, 1),
        ];
        for (tasks, cpu, memory, expected) in table {
            let task = Size {
                cpu_units: cpu,
                memory_mib: memory,
            };
            assert_eq!(
                hosts_for(tasks, task, host),
                expected,
                "{tasks} × {cpu}/{memory}"
            );
        }
    }

    #[test]
    fn scale_out_steps_are_bounded_by_the_step_sizes_and_the_group() {
        let bounds = Bounds { min: 0, max: 10 };
        // (busy, idle, unplaced-hosts, target, min step, max step, launch)
        let table = [
            (0, 0, 0, 100, 1, 10_000, 0),
            (0, 0, 1, 100, 1, 10_000, 1),
            (0, 0, 1, 100, 3, 10_000, 3),
            (0, 0, 7, 100, 1, 2, 2),
            (2, 0, 3, 100, 1, 10_000, 3),
            (2, 0, 3, 50, 1, 10_000, 8),
            (4, 0, 20, 100, 1, 10_000, 6),
            (2, 2, 2, 100, 1, 10_000, 0),
            (2, 2, 3, 100, 1, 10_000, 1),
        ];
        for (busy, idle, unplaced, target, min_step, max_step, launch) in table {
            let observation = Observation {
                hosts: hosts(busy, idle, 0),
                hosts_for_unplaced: unplaced,
            };
            let decision = decide(
                &settings(target, min_step, max_step),
                bounds,
                &observation,
                0,
            );
            assert_eq!(
                decision.launch, launch,
                "busy={busy} idle={idle} unplaced={unplaced} target={target} steps={min_step}..{max_step}: {decision:?}"
            );
            assert!(decision.scale_in.is_empty());
        }
    }

    #[test]
    fn the_group_minimum_is_restored_and_the_maximum_held() {
        let observation = Observation::default();
        let decision = decide(
            &settings(100, 1, 1),
            Bounds { min: 3, max: 5 },
            &observation,
            0,
        );
        assert_eq!((decision.desired, decision.launch), (3, 3));
        let observation = Observation {
            hosts: hosts(5, 0, 0),
            hosts_for_unplaced: 4,
        };
        let decision = decide(
            &settings(100, 1, 100),
            Bounds { min: 0, max: 5 },
            &observation,
            0,
        );
        assert_eq!((decision.desired, decision.launch), (5, 0));
        assert!((decision.reservation_percent - 180.0).abs() < 1e-9);
    }

    #[test]
    fn scale_in_takes_idle_warm_hosts_only_with_termination_protection() {
        let now_ms = 1_000_000;
        let mut observation = Observation {
            hosts: hosts(2, 3, 0),
            hosts_for_unplaced: 0,
        };
        // One idle host is still warming up: launched 10 s ago.
        observation.hosts[4].launched_at_ms = now_ms - 10_000;
        let protected = settings(100, 1, 10_000);
        let decision = decide(&protected, Bounds { min: 0, max: 10 }, &observation, now_ms);
        assert_eq!(decision.desired, 2);
        assert_eq!(decision.scale_in, vec!["h02".to_owned(), "h03".to_owned()]);
        // Below the target the group keeps spare hosts: M = 2 at 50% wants 4.
        let decision = decide(
            &settings(50, 1, 10_000),
            Bounds { min: 0, max: 10 },
            &observation,
            now_ms,
        );
        assert_eq!(decision.scale_in, vec!["h02".to_owned()]);
        // Without protection busy hosts may go too, after the idle ones,
        // when the group's maximum is below what is busy.
        let unprotected = ScalingSettings {
            termination_protection: false,
            ..protected
        };
        let decision = decide(
            &unprotected,
            Bounds { min: 0, max: 1 },
            &observation,
            now_ms,
        );
        assert_eq!(
            decision.scale_in,
            vec![
                "h02".to_owned(),
                "h03".to_owned(),
                "h00".to_owned(),
                "h01".to_owned()
            ]
        );
        let decision = decide(&protected, Bounds { min: 0, max: 1 }, &observation, now_ms);
        assert_eq!(decision.scale_in, vec!["h02".to_owned(), "h03".to_owned()]);
    }

    #[test]
    fn the_group_minimum_is_kept_on_scale_in() {
        let observation = Observation {
            hosts: hosts(0, 4, 0),
            hosts_for_unplaced: 0,
        };
        let decision = decide(
            &settings(100, 1, 10_000),
            Bounds { min: 1, max: 10 },
            &observation,
            1_000_000,
        );
        assert_eq!(decision.desired, 1);
        assert_eq!(decision.scale_in.len(), 3);
        assert!(decision.reservation_percent.abs() < 1e-9);
    }
}
