//! Blue/green, linear and canary deployments: a new deployment (green)
//! starts its full desired count beside the running one (blue) in the
//! alternate target groups, takes test traffic, then production traffic in
//! one shift (BLUE_GREEN), in equal steps (LINEAR) or a canary share then
//! the rest (CANARY); after the bake time blue is stopped and the two
//! target groups swap roles for the next deployment.
//!
//! ```text
//!  RECONCILE_SERVICE ─▶ PRE_SCALE_UP ─▶ SCALE_UP ─▶ POST_SCALE_UP ─▶ TEST_TRAFFIC_SHIFT
//!   (green launches from SCALE_UP on; leaves it with desired stable tasks)
//!  ─▶ POST_TEST_TRAFFIC_SHIFT ─▶ PRE_PRODUCTION_TRAFFIC_SHIFT ─▶ PRODUCTION_TRAFFIC_SHIFT
//!   (green's share: 100 | step, 2×step, … | canary, 100; each after its bake)
//!  ─▶ POST_PRODUCTION_TRAFFIC_SHIFT ─▶ BAKE_TIME ─▶ CLEAN_UP ─▶ finished (roles swapped)
//!  PAUSE hooks hold a stage until ContinueServiceDeployment or their timeout.
//! ```
//!
//! [`step`] is the pure stage machine: the stored [`Progress`] and what the
//! tasks say in, the next [`Progress`] out. [`rule_weights`] says, from the
//! service record alone, how the production and test listener rules must
//! forward; [`apply_rules`] makes them so (only when they differ), after
//! the record that says so is committed.
//!
//! *Architecture invariant:* the stage, green's share of production
//! traffic and each hook's state live in the deployment record, and which
//! target groups are production in the service record; the rules are set
//! from them on every pass. A control plane killed between committing a
//! shift and setting the rules sets them on its next pass; one killed
//! between setting the rules and committing cannot be, because the commit
//! comes first. Green's share grows only while green has a healthy task,
//! so production traffic never moves to a target group with none.

use flotilla_types::ecs::*;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use super::target_groups::TargetGroups;
use super::{DeploymentRecord, ServiceRecord};

/// Bake times, in minutes, as ECS bounds them.
pub const BAKE_TIME_MINUTES_MAX: i32 = 1440;
/// A PAUSE hook's timeout, in minutes, as ECS bounds it and its default.
pub const HOOK_TIMEOUT_MINUTES_MAX: i32 = 20160;
pub const HOOK_TIMEOUT_MINUTES_DEFAULT: i32 = 1440;
/// Stages one pass moves through at most: every stage once.
const STAGES_PER_PASS_MAX: usize = 12;

/// A deployment's lifecycle stage, as ECS names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Stage {
    ReconcileService,
    PreScaleUp,
    ScaleUp,
    PostScaleUp,
    TestTrafficShift,
    PostTestTrafficShift,
    PreProductionTrafficShift,
    ProductionTrafficShift,
    PostProductionTrafficShift,
    BakeTime,
    CleanUp,
}

impl Stage {
    const ALL: [Stage; 11] = [
        Stage::ReconcileService,
        Stage::PreScaleUp,
        Stage::ScaleUp,
        Stage::PostScaleUp,
        Stage::TestTrafficShift,
        Stage::PostTestTrafficShift,
        Stage::PreProductionTrafficShift,
        Stage::ProductionTrafficShift,
        Stage::PostProductionTrafficShift,
        Stage::BakeTime,
        Stage::CleanUp,
    ];

    fn next(self) -> Option<Stage> {
        let at = Stage::ALL.iter().position(|s| *s == self)?;
        Stage::ALL.get(at + 1).copied()
    }

    fn index(self) -> usize {
        Stage::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// The hook stage of the same name, for the stages hooks may name.
    fn hook_stage(self) -> Option<DeploymentLifecycleHookStage> {
        use DeploymentLifecycleHookStage as H;
        Some(match self {
            Stage::ReconcileService => H::ReconcileService,
            Stage::PreScaleUp => H::PreScaleUp,
            Stage::PostScaleUp => H::PostScaleUp,
            Stage::TestTrafficShift => H::TestTrafficShift,
            Stage::PostTestTrafficShift => H::PostTestTrafficShift,
            Stage::PreProductionTrafficShift => H::PreProductionTrafficShift,
            Stage::ProductionTrafficShift => H::ProductionTrafficShift,
            Stage::PostProductionTrafficShift => H::PostProductionTrafficShift,
            Stage::ScaleUp | Stage::BakeTime | Stage::CleanUp => return None,
        })
    }

    /// What DescribeServiceDeployments says. ECS's `lifecycleStage` has no
    /// PRE_PRODUCTION_TRAFFIC_SHIFT (only hooks name it): a deployment
    /// held there has finished its test traffic shift and not yet begun the
    /// production one, so it says POST_TEST_TRAFFIC_SHIFT.
    pub fn reported(self) -> ServiceDeploymentLifecycleStage {
        use ServiceDeploymentLifecycleStage as L;
        match self {
            Stage::ReconcileService => L::ReconcileService,
            Stage::PreScaleUp => L::PreScaleUp,
            Stage::ScaleUp => L::ScaleUp,
            Stage::PostScaleUp => L::PostScaleUp,
            Stage::TestTrafficShift => L::TestTrafficShift,
            Stage::PostTestTrafficShift | Stage::PreProductionTrafficShift => {
                L::PostTestTrafficShift
            }
            Stage::ProductionTrafficShift => L::ProductionTrafficShift,
            Stage::PostProductionTrafficShift => L::PostProductionTrafficShift,
            Stage::BakeTime => L::BakeTime,
            Stage::CleanUp => L::CleanUp,
        }
    }
}

/// One PAUSE hook's run in one deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookRun {
    pub hook_id: String,
    pub stage: Stage,
    pub expires_at_ms: u64,
    pub status: DeploymentLifecycleHookStatus,
    pub timeout_action: DeploymentLifecycleHookAction,
}

/// Where a blue/green, linear or canary deployment is, as stored in its
/// deployment record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub stage: Stage,
    pub stage_started_at_ms: u64,
    /// Green's share of production traffic, in percent.
    pub green_percent: u32,
    /// When green's share last grew (clock ms).
    pub shifted_at_ms: u64,
    /// The hooks that ran or run, in the order they started.
    #[serde(default)]
    pub hooks: Vec<HookRun>,
    /// CLEAN_UP is over: blue is gone and the target groups swapped roles.
    #[serde(default)]
    pub finished: bool,
}

impl Progress {
    pub fn new(now_ms: u64) -> Progress {
        Progress {
            stage: Stage::ReconcileService,
            stage_started_at_ms: now_ms,
            green_percent: 0,
            shifted_at_ms: now_ms,
            hooks: Vec::new(),
            finished: false,
        }
    }

    /// Whether green receives test traffic.
    pub fn test_on_green(&self) -> bool {
        self.stage >= Stage::TestTrafficShift
    }

    /// The hook details DescribeServiceDeployments reports.
    pub fn hook_details(&self) -> Vec<DeploymentLifecycleHookDetail> {
        self.hooks
            .iter()
            .map(|hook| DeploymentLifecycleHookDetail {
                expires_at: Some(hook.expires_at_ms as f64 / 1000.0),
                hook_id: Some(hook.hook_id.clone()),
                status: Some(hook.status),
                target_arn: None,
                target_type: Some(DeploymentLifecycleHookTargetType::Pause),
                timeout_action: Some(hook.timeout_action),
            })
            .collect()
    }
}

/// Whether a deployment strategy shifts traffic between two target groups.
pub fn is_traffic_shifting(strategy: Option<DeploymentStrategy>) -> bool {
    matches!(
        strategy,
        Some(
            DeploymentStrategy::BlueGreen | DeploymentStrategy::Linear | DeploymentStrategy::Canary
        )
    )
}

/// How production traffic moves to green: the share after each shift.
fn shares(configuration: &DeploymentConfiguration, minute_ms: u64) -> (Vec<u32>, u64) {
    let minutes_ms =
        |minutes: Option<i32>| u64::try_from(minutes.unwrap_or(0)).unwrap_or(0) * minute_ms;
    match configuration.strategy {
        Some(DeploymentStrategy::Linear) => {
            let linear = configuration
                .linear_configuration
                .clone()
                .unwrap_or_default();
            let step = linear.step_percent.unwrap_or(10.0).clamp(3.0, 100.0);
            let mut shares = Vec::new();
            let mut share = 0.0;
            while share < 100.0 && shares.len() < 100 {
                share = (share + step).min(100.0);
                shares.push(share.round() as u32);
            }
            (shares, minutes_ms(linear.step_bake_time_in_minutes))
        }
        Some(DeploymentStrategy::Canary) => {
            let canary = configuration
                .canary_configuration
                .clone()
                .unwrap_or_default();
            let percent = canary.canary_percent.unwrap_or(5.0).clamp(0.1, 100.0);
            let first = (percent.round() as u32).clamp(1, 100);
            let shares = if first >= 100 {
                vec![100]
            } else {
                vec![first, 100]
            };
            (shares, minutes_ms(canary.canary_bake_time_in_minutes))
        }
        _ => (vec![100], 0),
    }
}

/// What the tasks say of a deployment, for one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub now_ms: u64,
    pub desired: u32,
    /// Green tasks that are stable (healthy in every target group, held).
    pub green_stable: u32,
    /// Whether a green task is healthy now: a shift lands somewhere.
    pub green_healthy: bool,
    /// Live tasks of other deployments.
    pub blue_live: u32,
    /// How long a minute of bake times and hook timeouts lasts (60 000
    /// unless a test shortens it).
    pub minute_ms: u64,
}

impl Facts {
    /// The facts of a service's task views.
    pub fn of<'a>(
        views: impl Iterator<Item = &'a super::rollout::TaskView>,
        desired: u32,
        now_ms: u64,
        minute_ms: u64,
    ) -> Facts {
        let mut facts = Facts {
            now_ms,
            desired,
            green_stable: 0,
            green_healthy: false,
            blue_live: 0,
            minute_ms,
        };
        for view in views {
            let live = view.phase != super::rollout::Phase::Stopping && !view.lost;
            if !live {
                continue;
            }
            if view.primary {
                let healthy = view.healthy && !view.unhealthy;
                facts.green_healthy |= healthy;
                facts.green_stable += u32::from(healthy && view.stable);
            } else {
                facts.blue_live += 1;
            }
        }
        facts
    }
}

/// What a step decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub progress: Progress,
    /// A hook said ROLLBACK (or timed out so): why.
    pub rollback: Option<String>,
}

/// A hook's id: stable across passes and restarts, unique in the deployment.
fn hook_id(deployment_id: &str, stage: Stage, index: usize) -> String {
    let number = deployment_id.trim_start_matches("ecs-svc/");
    format!("ecs-pause-{number}-{}-{index}", stage.index())
}

/// The PAUSE hooks configured for a stage, with their timeout and action.
fn hooks_at(
    configuration: &DeploymentConfiguration,
    stage: Stage,
) -> Vec<(i32, DeploymentLifecycleHookAction)> {
    let Some(hook_stage) = stage.hook_stage() else {
        return Vec::new();
    };
    configuration
        .lifecycle_hooks
        .iter()
        .flatten()
        .filter(|hook| {
            hook.lifecycle_stages
                .iter()
                .flatten()
                .any(|s| *s == hook_stage)
        })
        .map(|hook| {
            let timeout = hook.timeout_configuration.clone().unwrap_or_default();
            (
                timeout
                    .timeout_in_minutes
                    .unwrap_or(HOOK_TIMEOUT_MINUTES_DEFAULT),
                timeout
                    .action
                    .unwrap_or(DeploymentLifecycleHookAction::Rollback),
            )
        })
        .collect()
}

/// Whether a stage's own work is done (its hooks aside), and the progress
/// with that work recorded.
fn stage_work(
    mut progress: Progress,
    configuration: &DeploymentConfiguration,
    facts: &Facts,
) -> (Progress, bool) {
    let done = match progress.stage {
        Stage::ScaleUp => facts.green_stable >= facts.desired,
        Stage::ProductionTrafficShift => {
            let (shares, bake_ms) = shares(configuration, facts.minute_ms);
            let next = shares.iter().copied().find(|s| *s > progress.green_percent);
            let baked = progress.green_percent == 0
                || facts.now_ms >= progress.shifted_at_ms.saturating_add(bake_ms);
            // Never onto a target group with no healthy target (a service
            // scaled to zero has none to wait for).
            let lands = facts.green_healthy || facts.desired == 0;
            if let Some(next) = next.filter(|_| baked && lands) {
                progress.green_percent = next;
                progress.shifted_at_ms = facts.now_ms;
            }
            progress.green_percent >= 100
        }
        Stage::BakeTime => {
            let bake_ms = u64::try_from(configuration.bake_time_in_minutes.unwrap_or(0))
                .unwrap_or(0)
                * facts.minute_ms;
            facts.now_ms >= progress.stage_started_at_ms.saturating_add(bake_ms)
        }
        Stage::CleanUp => facts.blue_live == 0,
        _ => true,
    };
    (progress, done)
}

/// One step of the stage machine: as far as the facts let it go.
pub fn step(
    deployment_id: &str,
    progress: &Progress,
    configuration: &DeploymentConfiguration,
    facts: &Facts,
) -> Step {
    let mut progress = progress.clone();
    for _ in 0..STAGES_PER_PASS_MAX {
        if progress.finished {
            break;
        }
        let (worked, done) = stage_work(progress, configuration, facts);
        progress = worked;
        if !done {
            break;
        }
        // The stage's hooks, one after the other.
        let mut held = false;
        for (index, (timeout_minutes, timeout_action)) in hooks_at(configuration, progress.stage)
            .into_iter()
            .enumerate()
        {
            let id = hook_id(deployment_id, progress.stage, index);
            let run = match progress.hooks.iter_mut().find(|h| h.hook_id == id) {
                Some(run) => run,
                None => {
                    let timeout_ms = u64::try_from(timeout_minutes).unwrap_or(0) * facts.minute_ms;
                    progress.hooks.push(HookRun {
                        hook_id: id.clone(),
                        stage: progress.stage,
                        expires_at_ms: facts.now_ms.saturating_add(timeout_ms),
                        status: DeploymentLifecycleHookStatus::AwaitingAction,
                        timeout_action,
                    });
                    held = true;
                    break;
                }
            };
            if run.status == DeploymentLifecycleHookStatus::AwaitingAction
                && facts.now_ms >= run.expires_at_ms
            {
                run.status = DeploymentLifecycleHookStatus::TimedOut;
            }
            match run.status {
                DeploymentLifecycleHookStatus::Succeeded => {}
                DeploymentLifecycleHookStatus::TimedOut
                    if run.timeout_action == DeploymentLifecycleHookAction::Continue => {}
                DeploymentLifecycleHookStatus::TimedOut | DeploymentLifecycleHookStatus::Failed => {
                    let why = if run.status == DeploymentLifecycleHookStatus::Failed {
                        format!("lifecycle hook {id} asked for a rollback")
                    } else {
                        format!("lifecycle hook {id} timed out")
                    };
                    return Step {
                        progress,
                        rollback: Some(why),
                    };
                }
                _ => {
                    held = true;
                    break;
                }
            }
        }
        if held {
            break;
        }
        match progress.stage.next() {
            Some(next) => {
                progress.stage = next;
                progress.stage_started_at_ms = facts.now_ms;
            }
            None => progress.finished = true,
        }
    }
    Step {
        progress,
        rollback: None,
    }
}

/// A service load balancer's two target groups and its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficPair {
    pub production: String,
    pub alternate: String,
    pub production_rule: String,
    pub test_rule: Option<String>,
}

/// The service's load balancers that shift traffic, with the target group
/// that is production now first.
pub fn pairs(record: &ServiceRecord) -> Vec<TrafficPair> {
    record
        .service
        .load_balancers
        .iter()
        .flatten()
        .filter_map(|lb| {
            let advanced = lb.advanced_configuration.as_ref()?;
            let main = lb.target_group_arn.clone()?;
            let alternate = advanced.alternate_target_group_arn.clone()?;
            let (production, alternate) = if record.production_alternate {
                (alternate, main)
            } else {
                (main, alternate)
            };
            Some(TrafficPair {
                production,
                alternate,
                production_rule: advanced.production_listener_rule.clone()?,
                test_rule: advanced.test_listener_rule.clone(),
            })
        })
        .collect()
}

/// The load balancers a new green deployment registers with: the service's,
/// each in the target group that is not production now.
pub fn green_load_balancers(record: &ServiceRecord) -> Vec<LoadBalancer> {
    record
        .service
        .load_balancers
        .iter()
        .flatten()
        .map(|lb| {
            let mut lb = lb.clone();
            let alternate = lb
                .advanced_configuration
                .as_ref()
                .and_then(|a| a.alternate_target_group_arn.clone());
            // While the main target group is production green goes to the
            // alternate; while the alternate is, green stays in the main.
            if let Some(alternate) = alternate.filter(|_| !record.production_alternate) {
                lb.target_group_arn = Some(alternate);
            }
            lb
        })
        .collect()
}

/// Readies a new PRIMARY for a traffic-shifting strategy: it starts in the
/// target groups that are not production, with its stage at the start.
/// The first deployment of a service has no blue to shift from and runs
/// in production's target groups as a rolling one does.
///
/// A deployment of another strategy after traffic-shifting ones runs in the
/// service's own load balancers again (ROLLING takes no alternate group).
pub fn prepare(record: &mut ServiceRecord, deployment: &mut DeploymentRecord, now_ms: u64) {
    let has_blue = !record.deployments.is_empty();
    if !is_traffic_shifting(deployment.configuration.strategy) {
        if record.primary().is_some_and(|p| p.progress.is_some()) {
            deployment.spec.load_balancers = None;
            record.production_alternate = false;
        }
        return;
    }
    if !has_blue {
        return;
    }
    deployment.spec.load_balancers = Some(green_load_balancers(record));
    deployment.progress = Some(Progress::new(now_ms));
}

/// The deployment whose traffic the rules follow: a PRIMARY still shifting
/// and not being rolled back.
pub fn shifting(record: &ServiceRecord) -> Option<&Progress> {
    let primary = record.primary()?;
    let progress = primary.progress.as_ref()?;
    let live = !progress.finished
        && !primary.rollback_requested
        && primary.rollout_state() == DeploymentRolloutState::InProgress;
    live.then_some(progress)
}

/// Whether the PRIMARY holds blue's tasks: until CLEAN_UP, blue stays
/// whole, so that traffic can go back to it at once.
pub fn holds_blue(record: &ServiceRecord) -> bool {
    shifting(record).is_some_and(|p| p.stage < Stage::CleanUp)
}

/// Whether the tasks of the deployment at `rank` are held: blue's (the
/// last completed deployment's), while the PRIMARY has not reached
/// CLEAN_UP. A deployment superseded midway is not held.
pub fn holds(record: &ServiceRecord, rank: usize) -> bool {
    if rank == 0 || !holds_blue(record) {
        return false;
    }
    let Some(deployment) = record.deployments.get(rank) else {
        return false;
    };
    record
        .last_completed
        .as_ref()
        .is_none_or(|blue| blue.id == deployment.id())
}

/// Whether the PRIMARY may launch yet: green starts at SCALE_UP.
pub fn may_launch(record: &ServiceRecord) -> bool {
    shifting(record).is_none_or(|p| p.stage >= Stage::ScaleUp)
}

/// How one listener rule must forward: (target group, weight).
pub type Weights = Vec<(String, i32)>;

/// How each rule of the service must forward now: production traffic by
/// green's share, test traffic to green once it is shifted there.
pub fn rule_weights(record: &ServiceRecord) -> Vec<(String, Weights)> {
    let progress = shifting(record);
    let percent = progress.map_or(0, |p| p.green_percent.min(100)) as i32;
    let test_on_green = progress.is_some_and(Progress::test_on_green);
    let mut rules = Vec::new();
    for pair in pairs(record) {
        rules.push((
            pair.production_rule.clone(),
            vec![
                (pair.production.clone(), 100 - percent),
                (pair.alternate.clone(), percent),
            ],
        ));
        if let Some(test_rule) = pair.test_rule.clone() {
            let green = if test_on_green { 100 } else { 0 };
            rules.push((
                test_rule,
                vec![
                    (pair.production.clone(), 100 - green),
                    (pair.alternate.clone(), green),
                ],
            ));
        }
    }
    rules
}

/// Sets the service's listener rules to forward as its record says, each
/// only when it does not already.
pub async fn apply_rules(
    groups: &dyn TargetGroups,
    record: &ServiceRecord,
) -> Result<(), ApiError> {
    for (rule, weights) in rule_weights(record) {
        let current = groups.listener_rule(&rule)?;
        let Some(current) = current else {
            tracing::warn!(%rule, service = %record.name, "listener rule of a blue/green service not found");
            continue;
        };
        if same_weights(&current.forward, &weights) {
            continue;
        }
        groups.set_rule_weights(&rule, weights).await?;
    }
    Ok(())
}

fn same_weights(current: &[(String, i32)], wanted: &[(String, i32)]) -> bool {
    let mut current = current.to_vec();
    let mut wanted = wanted.to_vec();
    current.sort();
    wanted.sort();
    current == wanted
}

/// Brings a PRIMARY's stage up to date; returns the rollback a hook asked
/// for. Swaps the target groups' roles when it finishes.
pub fn observe(record: &mut ServiceRecord, facts: &Facts) -> Option<String> {
    let primary = record.deployments.first()?;
    let progress = primary.progress.as_ref()?;
    if progress.finished
        || primary.rollback_requested
        || primary.rollout_state() != DeploymentRolloutState::InProgress
    {
        return None;
    }
    let stepped = step(primary.id(), progress, &primary.configuration, facts);
    let finished = stepped.progress.finished;
    if let Some(primary) = record.deployments.first_mut() {
        primary.progress = Some(stepped.progress);
        if stepped.rollback.is_some() {
            primary.rollback_requested = true;
        }
    }
    if finished && !pairs(record).is_empty() {
        record.production_alternate = !record.production_alternate;
    }
    stepped.rollback
}

/// Takes a request's traffic-shifting members into the stored
/// configuration and checks the result.
pub fn merge_configuration(
    configuration: &mut DeploymentConfiguration,
    given: &DeploymentConfiguration,
    daemon: bool,
) -> Result<(), ApiError> {
    if given
        .early_success_criteria
        .as_ref()
        .is_some_and(|c| c.enable == Some(true))
    {
        return Err(ApiError::invalid_parameter(
            "earlySuccessCriteria is not supported by this Flotilla server: a deployment completes after its bake time",
        ));
    }
    if given.early_success_criteria.is_some() {
        configuration.early_success_criteria = given.early_success_criteria.clone();
    }
    if given.linear_configuration.is_some() {
        configuration.linear_configuration = given.linear_configuration.clone();
    }
    if given.canary_configuration.is_some() {
        configuration.canary_configuration = given.canary_configuration.clone();
    }
    if given.lifecycle_hooks.is_some() {
        configuration.lifecycle_hooks = given.lifecycle_hooks.clone();
    }
    if daemon && is_traffic_shifting(configuration.strategy) {
        return Err(ApiError::invalid_parameter(
            "The daemon scheduling strategy supports the ROLLING deployment strategy only.",
        ));
    }
    check_configuration(configuration)
}

/// Whether the PRIMARY is done shifting traffic (or never did): only then
/// may it complete.
pub fn shifted(record: &ServiceRecord) -> bool {
    record
        .primary()
        .and_then(|p| p.progress.as_ref())
        .is_none_or(|p| p.finished)
}

/// The `rolloutStateReason` of a deployment rolled back on request.
pub const ROLLBACK_REQUESTED_REASON: &str = "ECS deployment rolled back: a rollback was requested.";

/// The event of a hook's rollback.
pub fn rollback_event(service: &str, why: &str) -> String {
    format!("(service {service}) deployment rolls back: {why}.")
}

/// The event of a stage reached or a traffic shift.
pub fn stage_event(service: &str, deployment: &str, stage: &str, green_percent: u32) -> String {
    format!(
        "(service {service}) (deployment {deployment}) is in lifecycle stage {stage}; it receives {green_percent}% of production traffic."
    )
}

/// Checks a traffic-shifting deployment configuration's own members, as
/// ECS does.
pub fn check_configuration(configuration: &DeploymentConfiguration) -> Result<(), ApiError> {
    if let Some(minutes) = configuration.bake_time_in_minutes {
        check_minutes("bakeTimeInMinutes", minutes)?;
    }
    if let Some(linear) = &configuration.linear_configuration {
        if let Some(percent) = linear.step_percent {
            if !(3.0..=100.0).contains(&percent) {
                return Err(ApiError::invalid_parameter(format!(
                    "linearConfiguration.stepPercent must be between 3.0 and 100.0, got {percent}"
                )));
            }
        }
        if let Some(minutes) = linear.step_bake_time_in_minutes {
            check_minutes("linearConfiguration.stepBakeTimeInMinutes", minutes)?;
        }
    }
    if let Some(canary) = &configuration.canary_configuration {
        if let Some(percent) = canary.canary_percent {
            if !(0.1..=100.0).contains(&percent) {
                return Err(ApiError::invalid_parameter(format!(
                    "canaryConfiguration.canaryPercent must be between 0.1 and 100.0, got {percent}"
                )));
            }
        }
        if let Some(minutes) = canary.canary_bake_time_in_minutes {
            check_minutes("canaryConfiguration.canaryBakeTimeInMinutes", minutes)?;
        }
    }
    for hook in configuration.lifecycle_hooks.iter().flatten() {
        match hook.target_type {
            Some(DeploymentLifecycleHookTargetType::Pause) => {}
            Some(DeploymentLifecycleHookTargetType::AwsLambda) => {
                return Err(ApiError::invalid_parameter(
                    "Lifecycle hooks with targetType AWS_LAMBDA need AWS Lambda, which this Flotilla server does not provide: use targetType PAUSE and ContinueServiceDeployment",
                ))
            }
            None if hook.hook_target_arn.is_some() => {
                return Err(ApiError::invalid_parameter(
                    "Lifecycle hooks with a hookTargetArn invoke AWS Lambda, which this Flotilla server does not provide: use targetType PAUSE and ContinueServiceDeployment",
                ))
            }
            None => {
                return Err(ApiError::invalid_parameter(
                    "A lifecycle hook must specify a targetType (PAUSE)",
                ))
            }
        }
        if hook.lifecycle_stages.as_ref().is_none_or(Vec::is_empty) {
            return Err(ApiError::invalid_parameter(
                "A lifecycle hook must specify at least one lifecycle stage",
            ));
        }
        if let Some(minutes) = hook
            .timeout_configuration
            .as_ref()
            .and_then(|t| t.timeout_in_minutes)
        {
            if !(1..=HOOK_TIMEOUT_MINUTES_MAX).contains(&minutes) {
                return Err(ApiError::invalid_parameter(format!(
                    "timeoutConfiguration.timeoutInMinutes must be between 1 and {HOOK_TIMEOUT_MINUTES_MAX}, got {minutes}"
                )));
            }
        }
    }
    Ok(())
}

fn check_minutes(member: &str, minutes: i32) -> Result<(), ApiError> {
    if (0..=BAKE_TIME_MINUTES_MAX).contains(&minutes) {
        return Ok(());
    }
    Err(ApiError::invalid_parameter(format!(
        "{member} must be between 0 and {BAKE_TIME_MINUTES_MAX}, got {minutes}"
    )))
}

/// Checks a service's load balancers against its strategy: a traffic
/// shifting one needs, for each, an alternate target group and a
/// production listener rule of the same load balancer; a rolling one
/// takes no advanced configuration.
pub fn check_load_balancers(
    load_balancers: &[LoadBalancer],
    strategy: Option<DeploymentStrategy>,
    groups: Option<&dyn TargetGroups>,
) -> Result<(), ApiError> {
    let shifting = is_traffic_shifting(strategy);
    for lb in load_balancers {
        let Some(advanced) = &lb.advanced_configuration else {
            if shifting {
                return Err(ApiError::invalid_parameter(format!(
                    "advancedConfiguration with an alternateTargetGroupArn and a productionListenerRule must be specified for each load balancer of a service with the {} deployment strategy.",
                    strategy.map_or("BLUE_GREEN", DeploymentStrategy::as_str)
                )));
            }
            continue;
        };
        if !shifting {
            return Err(ApiError::invalid_parameter(
                "advancedConfiguration can only be specified for services with the BLUE_GREEN, LINEAR or CANARY deployment strategy.",
            ));
        }
        let main = lb.target_group_arn.clone().unwrap_or_default();
        let Some(alternate) = advanced
            .alternate_target_group_arn
            .as_deref()
            .filter(|a| !a.is_empty())
        else {
            return Err(ApiError::invalid_parameter(
                "alternateTargetGroupArn must be specified in advancedConfiguration.",
            ));
        };
        if alternate == main {
            return Err(ApiError::invalid_parameter(
                "alternateTargetGroupArn must be different from targetGroupArn.",
            ));
        }
        let Some(production_rule) = advanced
            .production_listener_rule
            .as_deref()
            .filter(|r| !r.is_empty())
        else {
            return Err(ApiError::invalid_parameter(
                "productionListenerRule must be specified in advancedConfiguration.",
            ));
        };
        let Some(groups) = groups else {
            return Err(ApiError::invalid_parameter(format!(
                "The target group with targetGroupArn {alternate} could not be found."
            )));
        };
        if groups.target_group(alternate)?.is_none() {
            return Err(ApiError::invalid_parameter(format!(
                "The target group with targetGroupArn {alternate} could not be found."
            )));
        }
        let balancers = groups.target_group_load_balancers(&main)?;
        let mut rules = vec![production_rule];
        rules.extend(
            advanced
                .test_listener_rule
                .as_deref()
                .filter(|r| !r.is_empty()),
        );
        for rule_arn in rules {
            let Some(rule) = groups.listener_rule(rule_arn)? else {
                return Err(ApiError::invalid_parameter(format!(
                    "The listener rule {rule_arn} could not be found."
                )));
            };
            if !balancers.contains(&rule.load_balancer_arn) {
                return Err(ApiError::invalid_parameter(format!(
                    "The listener rule {rule_arn} belongs to load balancer {}, which is not the load balancer of target group {main}.",
                    rule.load_balancer_arn
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
