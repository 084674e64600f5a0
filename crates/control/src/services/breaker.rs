//! The deployment circuit breaker's failure count, as a pure function of
//! what a deployment's task records say. No store, no clock; the
//! reconciler keeps the count in the deployment's record and brings it up
//! to date on every pass.
//!
//! ECS watches a deployment in two stages. In the first, its tasks must
//! reach RUNNING: one that stops before it does (a failed pull, a container
//! that cannot start) is a failure. Once a task runs, the second stage
//! checks health: a task stopped for failing its container health checks,
//! or whose essential container exits, is a failure. A task that becomes
//! *healthy* (RUNNING and, when an essential container has a health check,
//! HEALTHY) resets the count to 0 when `resetOnHealthyTask` is true (the
//! default), so only consecutive failures trip the breaker; with false, the
//! failures of the whole deployment add up.
//!
//! Order matters (a failure before a task became healthy was reset, one
//! after was not), and a pass may see several of each at once, so events
//! are ordered by the times the task records carry: when the task first
//! became healthy and when it stopped. A task healthy and failed at the
//! same millisecond was healthy first.
//!
//! *Crash safety:* the count is a function of the stored count and the
//! stored task records; bringing it up to date twice with the same records
//! changes nothing, so a pass that dies before its commit is simply redone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Failed task ids one deployment remembers. Past it, the oldest are folded
/// into a count and a time: a failure at or before that time is taken as
/// counted. The threshold is at most 200 unless a `thresholdConfiguration`
/// asks for more.
pub const COUNTED_FAILURES_MAX: usize = 256;

/// What a deployment's task records say about one of its tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskOutcome<'a> {
    pub task_id: &'a str,
    /// When it first was healthy, if it ever was.
    pub healthy_at_ms: Option<u64>,
    /// When it stopped, if it stopped as a failure.
    pub failed_at_ms: Option<u64>,
}

/// A deployment's circuit breaker count, as stored in its record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCount {
    /// Failed tasks that count, by id, with when they failed.
    #[serde(default)]
    pub counted: BTreeMap<String, u64>,
    /// Failures that count whose ids were let go (see [`COUNTED_FAILURES_MAX`]).
    #[serde(default)]
    pub folded: u32,
    /// The latest failure time folded.
    #[serde(default)]
    pub folded_through_ms: u64,
    /// The latest time a task of the deployment became healthy.
    #[serde(default)]
    pub healthy_through_ms: u64,
}

impl FailureCount {
    /// A count of failures already known, as records written before the
    /// count kept times held them: each as of time 0.
    pub fn of_known(task_ids: impl IntoIterator<Item = String>) -> FailureCount {
        FailureCount {
            counted: task_ids.into_iter().map(|id| (id, 0)).collect(),
            ..Default::default()
        }
    }

    /// The failures that count now: `failedTasks`.
    pub fn failures(&self) -> u32 {
        self.folded
            .saturating_add(u32::try_from(self.counted.len()).unwrap_or(u32::MAX))
    }

    /// The count brought up to date with what the deployment's task
    /// records say now.
    pub fn observe(&self, outcomes: &[TaskOutcome<'_>], reset_on_healthy: bool) -> FailureCount {
        let mut next = self.clone();
        let newest_healthy = outcomes.iter().filter_map(|o| o.healthy_at_ms).max();
        if let Some(healthy_at_ms) = newest_healthy.filter(|at| *at > next.healthy_through_ms) {
            next.healthy_through_ms = healthy_at_ms;
        }
        if reset_on_healthy {
            // Every failure before the latest healthy task was reset.
            let reset_at_ms = next.healthy_through_ms;
            next.counted
                .retain(|_, failed_at_ms| *failed_at_ms >= reset_at_ms);
            if next.folded_through_ms < reset_at_ms {
                next.folded = 0;
            }
        }
        for outcome in outcomes {
            let Some(failed_at_ms) = outcome.failed_at_ms else {
                continue;
            };
            let known = next.counted.contains_key(outcome.task_id)
                || (next.folded > 0 && failed_at_ms <= next.folded_through_ms);
            let reset = reset_on_healthy && failed_at_ms < next.healthy_through_ms;
            if !known && !reset {
                next.counted
                    .insert(outcome.task_id.to_owned(), failed_at_ms);
            }
        }
        while next.counted.len() > COUNTED_FAILURES_MAX {
            let Some(oldest) = next
                .counted
                .iter()
                .min_by_key(|(id, at)| (**at, id.as_str()))
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            if let Some(at) = next.counted.remove(&oldest) {
                next.folded = next.folded.saturating_add(1);
                next.folded_through_ms = next.folded_through_ms.max(at);
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(id: &str, at: u64) -> TaskOutcome<'_> {
        TaskOutcome {
            task_id: id,
            healthy_at_ms: Some(at),
            failed_at_ms: None,
        }
    }

    fn failed(id: &str, at: u64) -> TaskOutcome<'_> {
        TaskOutcome {
            task_id: id,
            healthy_at_ms: None,
            failed_at_ms: Some(at),
        }
    }

    /// Healthy at one time, failed (its essential container exited) later.
    fn crashed(id: &str, healthy_at: u64, failed_at: u64) -> TaskOutcome<'_> {
        TaskOutcome {
            task_id: id,
            healthy_at_ms: Some(healthy_at),
            failed_at_ms: Some(failed_at),
        }
    }

    /// The count after each step, where each step sees the records as they
    /// then stand (the outcomes so far).
    fn counts(steps: &[Vec<TaskOutcome<'_>>], reset: bool) -> Vec<u32> {
        let mut count = FailureCount::default();
        let mut seen: Vec<TaskOutcome<'_>> = Vec::new();
        steps
            .iter()
            .map(|step| {
                for outcome in step {
                    seen.retain(|o| o.task_id != outcome.task_id);
                    seen.push(outcome.clone());
                }
                count = count.observe(&seen, reset);
                count.failures()
            })
            .collect()
    }

    #[test]
    fn tasks_that_never_run_add_up() {
        let steps = vec![
            vec![failed("a", 10)],
            vec![failed("b", 20)],
            vec![failed("c", 30)],
        ];
        assert_eq!(counts(&steps, true), [1, 2, 3]);
        assert_eq!(counts(&steps, false), [1, 2, 3]);
    }

    #[test]
    fn a_healthy_task_resets_the_count_unless_told_not_to() {
        let steps = vec![
            vec![failed("a", 10), failed("b", 20)],
            vec![healthy("c", 30)],
            vec![failed("d", 40)],
        ];
        assert_eq!(counts(&steps, true), [2, 0, 1]);
        assert_eq!(counts(&steps, false), [2, 2, 3]);
    }

    #[test]
    fn a_task_that_exits_after_it_was_healthy_counts_once_after_its_own_reset() {
        // One task at a time, each healthy then crashing: the count never
        // passes 1 when healthy tasks reset it, and adds up when they do not.
        let steps = vec![
            vec![crashed("a", 10, 15)],
            vec![crashed("b", 20, 25)],
            vec![crashed("c", 30, 30)],
        ];
        assert_eq!(counts(&steps, true), [1, 1, 1]);
        assert_eq!(counts(&steps, false), [1, 2, 3]);
    }

    #[test]
    fn events_seen_together_are_ordered_by_their_times() {
        // Failures before the healthy task are reset; the one after counts.
        let step = vec![
            failed("a", 10),
            failed("b", 20),
            healthy("c", 25),
            failed("d", 30),
        ];
        assert_eq!(counts(&[step], true), [1]);
        // A healthy task reported late does not reset a failure after it.
        let steps = vec![
            vec![healthy("a", 10), failed("b", 30)],
            vec![healthy("c", 20)],
        ];
        assert_eq!(counts(&steps, true), [1, 1]);
    }

    #[test]
    fn bringing_the_count_up_to_date_twice_changes_nothing() {
        let outcomes = vec![
            failed("a", 10),
            crashed("b", 12, 20),
            healthy("c", 15),
            failed("d", 30),
        ];
        for reset in [true, false] {
            let once = FailureCount::default().observe(&outcomes, reset);
            assert_eq!(once.observe(&outcomes, reset), once, "reset {reset}");
            // A task record collected after the hour it is kept: its failure
            // still counts.
            assert_eq!(once.observe(&outcomes[1..], reset), once, "reset {reset}");
        }
    }

    #[test]
    fn the_count_survives_its_record_round_trip() {
        let count = FailureCount::default().observe(&[failed("a", 10), healthy("b", 5)], true);
        let text = serde_json::to_string(&count).expect("encodes");
        let back: FailureCount = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, count);
        assert_eq!(
            back.observe(&[failed("a", 10), healthy("b", 5)], true),
            count
        );
    }

    #[test]
    fn past_the_bound_the_oldest_failures_fold_into_a_count() {
        let ids: Vec<String> = (0..COUNTED_FAILURES_MAX + 10)
            .map(|i| format!("t{i:04}"))
            .collect();
        let outcomes: Vec<TaskOutcome<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| failed(id, 100 + i as u64))
            .collect();
        let count = FailureCount::default().observe(&outcomes, false);
        assert_eq!(count.counted.len(), COUNTED_FAILURES_MAX);
        assert_eq!(count.folded, 10);
        assert_eq!(count.failures() as usize, ids.len());
        // Seen again, none counts twice.
        assert_eq!(
            count.observe(&outcomes, false).failures() as usize,
            ids.len()
        );
        // A healthy task after them all resets the folded ones too.
        let mut later = outcomes.clone();
        later.push(healthy("h", 10_000));
        assert_eq!(count.observe(&later, true).failures(), 0);
    }

    #[test]
    fn failures_known_before_times_were_kept_still_count_until_a_reset() {
        let count = FailureCount::of_known(["a".to_owned(), "b".to_owned()]);
        assert_eq!(count.failures(), 2);
        assert_eq!(
            count
                .observe(&[failed("a", 10), failed("b", 20)], true)
                .failures(),
            2
        );
        assert_eq!(count.observe(&[healthy("c", 30)], true).failures(), 0);
    }
}
