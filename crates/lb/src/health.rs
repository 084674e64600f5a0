//! A target's health as ELBv2 reports it: states, reason codes and their
//! descriptions, and the pure state machine that health check outcomes
//! drive. Time is passed in; nothing here does I/O.

use serde::Serialize;

/// ELBv2's `TargetHealth.State`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetHealthState {
    Initial,
    Healthy,
    Unhealthy,
    Unused,
    Draining,
    Unavailable,
}

impl TargetHealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetHealthState::Initial => "initial",
            TargetHealthState::Healthy => "healthy",
            TargetHealthState::Unhealthy => "unhealthy",
            TargetHealthState::Unused => "unused",
            TargetHealthState::Draining => "draining",
            TargetHealthState::Unavailable => "unavailable",
        }
    }
}

/// ELBv2's `TargetHealth.Reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ReasonCode {
    #[serde(rename = "Elb.RegistrationInProgress")]
    RegistrationInProgress,
    #[serde(rename = "Elb.InitialHealthChecking")]
    InitialHealthChecking,
    #[serde(rename = "Target.ResponseCodeMismatch")]
    ResponseCodeMismatch,
    #[serde(rename = "Target.Timeout")]
    Timeout,
    #[serde(rename = "Target.FailedHealthChecks")]
    FailedHealthChecks,
    #[serde(rename = "Target.NotRegistered")]
    NotRegistered,
    #[serde(rename = "Target.NotInUse")]
    NotInUse,
    #[serde(rename = "Target.DeregistrationInProgress")]
    DeregistrationInProgress,
    #[serde(rename = "Target.HealthCheckDisabled")]
    HealthCheckDisabled,
    #[serde(rename = "Elb.InternalError")]
    InternalError,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::RegistrationInProgress => "Elb.RegistrationInProgress",
            ReasonCode::InitialHealthChecking => "Elb.InitialHealthChecking",
            ReasonCode::ResponseCodeMismatch => "Target.ResponseCodeMismatch",
            ReasonCode::Timeout => "Target.Timeout",
            ReasonCode::FailedHealthChecks => "Target.FailedHealthChecks",
            ReasonCode::NotRegistered => "Target.NotRegistered",
            ReasonCode::NotInUse => "Target.NotInUse",
            ReasonCode::DeregistrationInProgress => "Target.DeregistrationInProgress",
            ReasonCode::HealthCheckDisabled => "Target.HealthCheckDisabled",
            ReasonCode::InternalError => "Elb.InternalError",
        }
    }
}

/// ELBv2's `TargetHealth`: a state, and for every state but healthy a
/// reason code and its description in ELBv2's words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetHealth {
    pub state: TargetHealthState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReasonCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl TargetHealth {
    fn new(state: TargetHealthState, reason: ReasonCode, description: impl Into<String>) -> Self {
        TargetHealth {
            state,
            reason: Some(reason),
            description: Some(description.into()),
        }
    }

    pub fn healthy() -> Self {
        TargetHealth {
            state: TargetHealthState::Healthy,
            reason: None,
            description: None,
        }
    }

    pub fn registering() -> Self {
        Self::new(
            TargetHealthState::Initial,
            ReasonCode::RegistrationInProgress,
            "Target registration is in progress",
        )
    }

    pub fn initial_checking() -> Self {
        Self::new(
            TargetHealthState::Initial,
            ReasonCode::InitialHealthChecking,
            "Initial health checks in progress",
        )
    }

    pub fn draining() -> Self {
        Self::new(
            TargetHealthState::Draining,
            ReasonCode::DeregistrationInProgress,
            "Target deregistration is in progress",
        )
    }

    pub fn not_registered() -> Self {
        Self::new(
            TargetHealthState::Unused,
            ReasonCode::NotRegistered,
            "Target is not registered to the target group",
        )
    }

    pub fn not_in_use() -> Self {
        Self::new(
            TargetHealthState::Unused,
            ReasonCode::NotInUse,
            "Target group is not configured to receive traffic from the load balancer",
        )
    }

    pub fn checks_disabled() -> Self {
        Self::new(
            TargetHealthState::Unavailable,
            ReasonCode::HealthCheckDisabled,
            "Health checks disabled",
        )
    }

    fn unhealthy(failure: &CheckFailure) -> Self {
        let (reason, description) = failure.reason();
        Self::new(TargetHealthState::Unhealthy, reason, description)
    }

    /// Whether the target takes new requests in the ordinary course
    /// (fail-open aside).
    pub fn is_routable(&self) -> bool {
        matches!(
            self.state,
            TargetHealthState::Healthy | TargetHealthState::Unavailable
        )
    }
}

/// Why one health check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckFailure {
    /// The target answered with a code the matcher does not accept.
    ResponseCodeMismatch(u16),
    /// No answer within the health check timeout.
    Timeout,
    /// The connection was refused or reset, or the answer was not HTTP.
    ConnectionFailed,
    /// The check itself could not run.
    Internal,
}

impl CheckFailure {
    fn reason(&self) -> (ReasonCode, String) {
        match self {
            CheckFailure::ResponseCodeMismatch(code) => (
                ReasonCode::ResponseCodeMismatch,
                format!("Health checks failed with these codes: [{code}]"),
            ),
            CheckFailure::Timeout => (ReasonCode::Timeout, "Request timed out".to_owned()),
            CheckFailure::ConnectionFailed => (
                ReasonCode::FailedHealthChecks,
                "Health checks failed".to_owned(),
            ),
            CheckFailure::Internal => (
                ReasonCode::InternalError,
                "Health checks failed with an internal error".to_owned(),
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

/// One registered target's health: ELBv2's state machine.
///
/// ```text
///  register ─▶ initial(RegistrationInProgress) ─first check─▶ initial(InitialHealthChecking)
///  initial  ── 1 pass ──────────────────▶ healthy      (a new target needs one pass)
///  initial  ── `unhealthy` fails in a row ▶ unhealthy
///  healthy  ── `unhealthy` fails in a row ▶ unhealthy
///  unhealthy ─ `healthy` passes in a row ─▶ healthy
///  any ── deregister ─▶ draining ── delay over ─▶ (gone: unused/NotRegistered)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthTracker {
    health: TargetHealth,
    passes_in_a_row: u32,
    failures_in_a_row: u32,
    /// When the target last became healthy, for slow start.
    healthy_since_ms: Option<u64>,
}

impl HealthTracker {
    /// A newly registered target: checked if checks are on, else routable
    /// at once as `unavailable` (ELBv2's state when checks are disabled).
    pub fn new(checks_enabled: bool, now_ms: u64) -> Self {
        let (health, healthy_since_ms) = if checks_enabled {
            (TargetHealth::registering(), None)
        } else {
            (TargetHealth::checks_disabled(), Some(now_ms))
        };
        HealthTracker {
            health,
            passes_in_a_row: 0,
            failures_in_a_row: 0,
            healthy_since_ms,
        }
    }

    pub fn health(&self) -> &TargetHealth {
        &self.health
    }

    pub fn healthy_since_ms(&self) -> Option<u64> {
        self.healthy_since_ms
    }

    /// Records one check's outcome; returns the new health when it changed.
    pub fn observe(
        &mut self,
        outcome: Result<(), CheckFailure>,
        thresholds: Thresholds,
        now_ms: u64,
    ) -> Option<TargetHealth> {
        use TargetHealthState::*;
        if matches!(self.health.state, Draining | Unused | Unavailable) {
            return None;
        }
        let next = match outcome {
            Ok(()) => {
                self.passes_in_a_row = self.passes_in_a_row.saturating_add(1);
                self.failures_in_a_row = 0;
                match self.health.state {
                    Initial => Some(TargetHealth::healthy()),
                    Unhealthy if self.passes_in_a_row >= thresholds.healthy => {
                        Some(TargetHealth::healthy())
                    }
                    _ => None,
                }
            }
            Err(failure) => {
                self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
                self.passes_in_a_row = 0;
                let reached = self.failures_in_a_row >= thresholds.unhealthy;
                match self.health.state {
                    Initial | Healthy if reached => Some(TargetHealth::unhealthy(&failure)),
                    // Still unhealthy: keep the latest reason (a 500 that became a timeout).
                    Unhealthy => Some(TargetHealth::unhealthy(&failure)),
                    Initial => Some(TargetHealth::initial_checking()),
                    _ => None,
                }
            }
        };
        let next = next.filter(|next| *next != self.health)?;
        if next.state == Healthy {
            self.healthy_since_ms = Some(now_ms);
        } else if next.state == Unhealthy {
            self.healthy_since_ms = None;
        }
        self.health = next.clone();
        Some(next)
    }

    /// Deregistration: no new requests from now on.
    pub fn start_draining(&mut self) -> Option<TargetHealth> {
        if self.health.state == TargetHealthState::Draining {
            return None;
        }
        self.health = TargetHealth::draining();
        Some(self.health.clone())
    }

    /// The group stopped (or started again) being used by any listener.
    pub fn set_in_use(
        &mut self,
        in_use: bool,
        checks_enabled: bool,
        now_ms: u64,
    ) -> Option<TargetHealth> {
        let state = self.health.state;
        if state == TargetHealthState::Draining {
            return None;
        }
        let next = match (in_use, state) {
            (false, TargetHealthState::Unused) => return None,
            (false, _) => TargetHealth::not_in_use(),
            (true, TargetHealthState::Unused) => {
                *self = HealthTracker::new(checks_enabled, now_ms);
                return Some(self.health.clone());
            }
            (true, _) => return None,
        };
        self.passes_in_a_row = 0;
        self.failures_in_a_row = 0;
        self.healthy_since_ms = None;
        self.health = next.clone();
        Some(next)
    }
}

/// A matcher's HTTP codes: `200`, `200,202`, `200-299`, as ELBv2 accepts
/// them (codes from 200 to 499 for application target groups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCodeMatcher {
    ranges: Vec<(u16, u16)>,
}

/// Ranges and codes one matcher may list.
const MATCHER_PARTS_MAX: usize = 10;

impl HttpCodeMatcher {
    pub fn parse(text: &str) -> Result<Self, String> {
        let code = |part: &str| -> Result<u16, String> {
            match part.trim().parse::<u16>() {
                Ok(code) if (200..=499).contains(&code) => Ok(code),
                _ => Err(format!("{part:?} is not an HTTP code from 200 to 499")),
            }
        };
        let parts: Vec<&str> = text.split(',').collect();
        if parts.len() > MATCHER_PARTS_MAX {
            return Err(format!("at most {MATCHER_PARTS_MAX} codes or ranges"));
        }
        let ranges = parts
            .into_iter()
            .map(|part| match part.split_once('-') {
                Some((low, high)) => {
                    let (low, high) = (code(low)?, code(high)?);
                    if low > high {
                        return Err(format!("range {part:?} runs backwards"));
                    }
                    Ok((low, high))
                }
                None => code(part).map(|code| (code, code)),
            })
            .collect::<Result<_, _>>()?;
        Ok(HttpCodeMatcher { ranges })
    }

    pub fn accepts(&self, code: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(low, high)| (low..=high).contains(&code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TargetHealthState::*;

    const THRESHOLDS: Thresholds = Thresholds {
        healthy: 5,
        unhealthy: 2,
    };

    /// Feeds outcomes in, one per second, and returns the state and reason after each.
    fn run(
        tracker: &mut HealthTracker,
        outcomes: &[Result<(), CheckFailure>],
    ) -> Vec<(TargetHealthState, Option<&'static str>)> {
        outcomes
            .iter()
            .enumerate()
            .map(|(second, outcome)| {
                tracker.observe(outcome.clone(), THRESHOLDS, second as u64 * 1_000);
                (
                    tracker.health().state,
                    tracker.health().reason.map(ReasonCode::as_str),
                )
            })
            .collect()
    }

    #[test]
    fn a_new_target_needs_one_pass() {
        let mut tracker = HealthTracker::new(true, 0);
        assert_eq!(tracker.health(), &TargetHealth::registering());
        assert_eq!(run(&mut tracker, &[Ok(())]), [(Healthy, None)]);
        assert_eq!(tracker.healthy_since_ms(), Some(0));
    }

    #[test]
    fn failures_take_a_target_out_and_passes_put_it_back() {
        let mut tracker = HealthTracker::new(true, 0);
        let mismatch = Err(CheckFailure::ResponseCodeMismatch(500));
        let states = run(
            &mut tracker,
            &[
                Ok(()),
                mismatch.clone(),
                mismatch.clone(),
                Err(CheckFailure::Timeout),
                Ok(()),
                Ok(()),
                Ok(()),
                Ok(()),
                Ok(()),
            ],
        );
        assert_eq!(
            states,
            [
                (Healthy, None),
                (Healthy, None),
                (Unhealthy, Some("Target.ResponseCodeMismatch")),
                (Unhealthy, Some("Target.Timeout")),
                (Unhealthy, Some("Target.Timeout")),
                (Unhealthy, Some("Target.Timeout")),
                (Unhealthy, Some("Target.Timeout")),
                (Unhealthy, Some("Target.Timeout")),
                (Healthy, None),
            ]
        );
        assert_eq!(
            tracker.health().description,
            None,
            "a healthy target has no description"
        );
        assert_eq!(
            tracker.healthy_since_ms(),
            Some(8_000),
            "slow start counts from the return"
        );
    }

    #[test]
    fn a_new_target_that_never_passes_becomes_unhealthy() {
        let mut tracker = HealthTracker::new(true, 0);
        let states = run(
            &mut tracker,
            &[
                Err(CheckFailure::ConnectionFailed),
                Err(CheckFailure::ConnectionFailed),
            ],
        );
        assert_eq!(
            states,
            [
                (Initial, Some("Elb.InitialHealthChecking")),
                (Unhealthy, Some("Target.FailedHealthChecks")),
            ]
        );
        assert_eq!(
            tracker.health().description.as_deref(),
            Some("Health checks failed")
        );
    }

    #[test]
    fn a_pass_breaks_a_run_of_failures() {
        let mut tracker = HealthTracker::new(true, 0);
        let fail = Err(CheckFailure::Timeout);
        let states = run(
            &mut tracker,
            &[Ok(()), fail.clone(), Ok(()), fail.clone(), Ok(())],
        );
        assert!(
            states.iter().all(|(state, _)| *state == Healthy),
            "{states:?}"
        );
    }

    #[test]
    fn mismatch_description_names_the_code() {
        let mut tracker = HealthTracker::new(true, 0);
        run(
            &mut tracker,
            &[
                Err(CheckFailure::ResponseCodeMismatch(404)),
                Err(CheckFailure::ResponseCodeMismatch(404)),
            ],
        );
        assert_eq!(
            tracker.health().description.as_deref(),
            Some("Health checks failed with these codes: [404]")
        );
    }

    #[test]
    fn draining_and_disabled_checks_ignore_outcomes() {
        let mut tracker = HealthTracker::new(true, 0);
        run(&mut tracker, &[Ok(())]);
        assert_eq!(tracker.start_draining(), Some(TargetHealth::draining()));
        assert_eq!(tracker.start_draining(), None);
        assert_eq!(
            run(&mut tracker, &[Err(CheckFailure::Timeout)]),
            [(Draining, Some("Target.DeregistrationInProgress"))]
        );
        let mut disabled = HealthTracker::new(false, 5);
        assert_eq!(disabled.health().state, Unavailable);
        assert!(disabled.health().is_routable());
        assert_eq!(disabled.healthy_since_ms(), Some(5));
        assert_eq!(
            run(&mut disabled, &[Err(CheckFailure::Timeout)])[0].0,
            Unavailable
        );
    }

    #[test]
    fn unused_groups_report_not_in_use_and_restart_when_used() {
        let mut tracker = HealthTracker::new(true, 0);
        run(&mut tracker, &[Ok(())]);
        assert_eq!(
            tracker.set_in_use(false, true, 1),
            Some(TargetHealth::not_in_use())
        );
        assert_eq!(tracker.set_in_use(false, true, 2), None);
        assert_eq!(
            tracker.set_in_use(true, true, 3),
            Some(TargetHealth::registering())
        );
    }

    #[test]
    fn matchers_parse_as_elbv2_does() {
        let matcher = HttpCodeMatcher::parse("200,202-204").expect("valid");
        assert!(matcher.accepts(200) && matcher.accepts(203) && !matcher.accepts(201));
        for bad in ["", "600", "199", "300-200", "abc", "200,"] {
            assert!(HttpCodeMatcher::parse(bad).is_err(), "{bad:?}");
        }
    }
}
