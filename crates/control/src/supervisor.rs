//! Background work under one supervisor, as an OTP supervisor runs its
//! children: every loop of the process (the service scheduler, collection of
//! stopped tasks, registry maintenance, the agent router, ...) is started by
//! [`Supervisor::spawn`], which runs it as its own task and, when it panics,
//! logs the panic with its cause, counts it and starts the loop again after a
//! backoff that doubles with each consecutive failure.
//!
//! ```text
//!  spawn(name, make) ──▶ run make() as a task ──┬─ returns ─────▶ ended (not restarted)
//!        ▲                                      └─ panics ──────▶ log cause, count,
//!        └──────────── sleep(backoff(consecutive failures)) ◀────  backoff
//! ```
//!
//! A loop that ran for `healthy_after_ms` without panicking has its
//! consecutive failures forgotten; one that failed `failing_after` times in a
//! row is *failing*, which the edge reports on `/health` until it recovers.
//! The edge also renders [`Supervisor::report`] in `/metrics`.
//!
//! A loop that returns has finished on purpose (its store closed, its work
//! ended) and is not restarted. Loop names are `&'static str`, so the set of
//! names, and of metric labels, is fixed by the code.
//!
//! *Architecture invariant:* no wall clock: backoff and the healthy period
//! are Tokio timers, which a test with paused time drives.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How the supervisor restarts a loop and when it calls one failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Wait before the first restart; doubled for each further consecutive failure.
    pub backoff_initial_ms: u64,
    /// Longest wait before a restart.
    pub backoff_max_ms: u64,
    /// A run this long without a panic clears the consecutive failures.
    pub healthy_after_ms: u64,
    /// Consecutive failures from which the loop is reported as failing.
    pub failing_after: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            healthy_after_ms: 60_000,
            failing_after: 3,
        }
    }
}

impl RestartPolicy {
    /// The wait before restarting after `failures` consecutive failures (≥ 1).
    pub fn backoff_ms(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(32);
        self.backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms)
    }
}

/// Longest panic message kept for a report; the log line has all of it.
const PANIC_CAUSE_CHARS_MAX: usize = 512;

/// One supervised loop as `/metrics` and `/health` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopReport {
    pub name: &'static str,
    /// Restarts after a panic since the process started.
    pub restarts_total: u64,
    /// Panics since the loop last ran for the healthy period.
    pub consecutive_failures: u32,
    /// Whether `consecutive_failures` reached the policy's `failing_after`.
    pub failing: bool,
    /// Whether the loop is running or waiting to be restarted (not ended).
    pub running: bool,
    /// The cause of the last panic, cut to `PANIC_CAUSE_CHARS_MAX` characters.
    pub last_panic: Option<String>,
    /// Whether the loop runs only on the replica that leads it
    /// ([`Supervisor::spawn_led`]).
    pub elected: bool,
}

#[derive(Default)]
struct LoopState {
    restarts_total: u64,
    consecutive_failures: u32,
    running: bool,
    last_panic: Option<String>,
    elected: bool,
}

struct Inner {
    policy: RestartPolicy,
    loops: Mutex<BTreeMap<&'static str, LoopState>>,
}

/// Starts and restarts the process's background loops; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new(RestartPolicy::default())
    }
}

impl Supervisor {
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy,
                loops: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    pub fn policy(&self) -> RestartPolicy {
        self.inner.policy
    }

    fn loops(&self) -> MutexGuard<'_, BTreeMap<&'static str, LoopState>> {
        // The map is only ever updated field by field; a panic elsewhere
        // cannot leave it inconsistent.
        self.inner
            .loops
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `make()` as a task named `name`, and again after each panic.
    /// Must be called inside a Tokio runtime.
    pub fn spawn<Make, Run>(&self, name: &'static str, mut make: Make)
    where
        Make: FnMut() -> Run + Send + 'static,
        Run: Future<Output = ()> + Send + 'static,
    {
        self.loops().entry(name).or_default().running = true;
        let supervisor = self.clone();
        tokio::spawn(async move {
            let policy = supervisor.inner.policy;
            loop {
                let mut run = tokio::spawn(make());
                let healthy_after = Duration::from_millis(policy.healthy_after_ms);
                let outcome = tokio::select! {
                    outcome = &mut run => outcome,
                    () = tokio::time::sleep(healthy_after) => {
                        supervisor.update(name, |state| state.consecutive_failures = 0);
                        run.await
                    }
                };
                let error = match outcome {
                    Ok(()) => {
                        tracing::info!(loop_name = name, "supervised loop ended");
                        supervisor.update(name, |state| state.running = false);
                        return;
                    }
                    Err(error) => error,
                };
                if !error.is_panic() {
                    // Cancelled: the runtime is shutting down.
                    supervisor.update(name, |state| state.running = false);
                    return;
                }
                let cause = panic_cause(error.into_panic());
                let mut failures = 0;
                supervisor.update(name, |state| {
                    state.restarts_total += 1;
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    failures = state.consecutive_failures;
                    state.last_panic = Some(cause.chars().take(PANIC_CAUSE_CHARS_MAX).collect());
                });
                let backoff_ms = policy.backoff_ms(failures);
                tracing::error!(
                    loop_name = name,
                    cause = %cause,
                    consecutive_failures = failures,
                    backoff_ms,
                    "supervised loop panicked; restarting it after the backoff"
                );
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            }
        });
    }

    /// Runs `make()` as [`Supervisor::spawn`] does, but only while this
    /// replica leads the role named `name` in `election`: the loop starts
    /// when the replica wins the role, runs with the term's fence on its
    /// writes ([`flotilla_store::as_leader`]), and is stopped as soon as
    /// the replica no longer leads, to start again if it wins once more.
    pub fn spawn_led<Make, Run>(
        &self,
        name: &'static str,
        election: Arc<dyn flotilla_store::Election>,
        make: Make,
    ) where
        Make: FnMut() -> Run + Send + 'static,
        Run: Future<Output = ()> + Send + 'static,
    {
        self.loops().entry(name).or_default().elected = true;
        let make = Arc::new(Mutex::new(make));
        self.spawn(name, move || {
            let mut leadership = election.lead(name);
            let make = Arc::clone(&make);
            async move {
                loop {
                    let term = match leadership.wait_for(Option::is_some).await {
                        Ok(term) => term.clone(),
                        Err(_) => return,
                    };
                    let Some(term) = term else { continue };
                    let run = {
                        let mut make = make.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        (*make)()
                    };
                    tracing::info!(loop_name = name, "this replica leads the loop; running it");
                    tokio::select! {
                        () = flotilla_store::as_leader(term.clone(), run) => return,
                        _ = leadership.wait_for(|now| now.as_ref() != Some(&term)) => {
                            tracing::info!(loop_name = name, "this replica no longer leads the loop; stopped it");
                        }
                    }
                }
            }
        });
    }

    fn update(&self, name: &'static str, change: impl FnOnce(&mut LoopState)) {
        change(self.loops().entry(name).or_default());
    }

    /// Every loop started so far, by name.
    pub fn report(&self) -> Vec<LoopReport> {
        let failing_after = self.inner.policy.failing_after;
        self.loops()
            .iter()
            .map(|(name, state)| LoopReport {
                name,
                restarts_total: state.restarts_total,
                consecutive_failures: state.consecutive_failures,
                failing: state.consecutive_failures >= failing_after,
                running: state.running,
                last_panic: state.last_panic.clone(),
                elected: state.elected,
            })
            .collect()
    }

    /// The loops that keep failing; empty when all is well.
    pub fn failing(&self) -> Vec<LoopReport> {
        self.report()
            .into_iter()
            .filter(|report| report.failing)
            .collect()
    }
}

/// A panic's payload as text: what `panic!` was given.
fn panic_cause(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "a panic without a message".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly on any unexpected error"
    )]

    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick() -> RestartPolicy {
        RestartPolicy {
            backoff_initial_ms: 1,
            backoff_max_ms: 4,
            healthy_after_ms: 60_000,
            failing_after: 3,
        }
    }

    async fn wait_for(supervisor: &Supervisor, done: impl Fn(&LoopReport) -> bool) -> LoopReport {
        for _ in 0..2_000 {
            if let Some(report) = supervisor.report().into_iter().find(&done) {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the supervisor never got there: {:?}", supervisor.report());
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let policy = RestartPolicy::default();
        let waits: Vec<u64> = (1..=12).map(|n| policy.backoff_ms(n)).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000, 30_000]
        );
        assert_eq!(policy.backoff_ms(u32::MAX), 30_000);
    }

    #[tokio::test]
    async fn a_panicking_loop_restarts_and_is_counted() {
        let supervisor = Supervisor::new(quick());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        supervisor.spawn("flaky", move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if run < 2 {
                    panic!("flaky run {run} failed");
                }
                std::future::pending::<()>().await;
            }
        });
        let report = wait_for(&supervisor, |report| report.restarts_total == 2).await;
        assert_eq!(report.name, "flaky");
        assert_eq!(report.last_panic.as_deref(), Some("flaky run 1 failed"));
        assert!(report.running);
        assert!(!report.failing, "two failures are under the threshold");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "the third run keeps running"
        );
        assert!(supervisor.failing().is_empty());
    }

    #[tokio::test]
    async fn a_loop_that_keeps_panicking_is_failing() {
        let supervisor = Supervisor::new(quick());
        supervisor.spawn("broken", || async { panic!("always") });
        let report = wait_for(&supervisor, |report| report.restarts_total >= 5).await;
        assert!(report.failing);
        assert_eq!(supervisor.failing()[0].name, "broken");
        assert_eq!(report.last_panic.as_deref(), Some("always"));
    }

    #[tokio::test]
    async fn a_loop_that_returns_is_not_restarted() {
        let supervisor = Supervisor::new(quick());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        supervisor.spawn("once", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        let report = wait_for(&supervisor, |report| !report.running).await;
        assert_eq!(report.restarts_total, 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_run_past_the_healthy_period_clears_the_failures() {
        let supervisor = Supervisor::new(RestartPolicy {
            healthy_after_ms: 30,
            ..quick()
        });
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        supervisor.spawn("recovers", move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if run < 4 {
                    panic!("run {run}");
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
                panic!("late failure");
            }
        });
        wait_for(&supervisor, |report| report.failing).await;
        let report = wait_for(&supervisor, |report| report.restarts_total == 5).await;
        assert_eq!(report.consecutive_failures, 1, "{report:?}");
        assert!(!report.failing);
    }

    /// An election the test decides.
    struct Given {
        leading: tokio::sync::watch::Sender<Option<flotilla_store::Term>>,
    }

    impl flotilla_store::Election for Given {
        fn replica_id(&self) -> &str {
            "given"
        }
        fn lead(
            &self,
            _role: &'static str,
        ) -> tokio::sync::watch::Receiver<Option<flotilla_store::Term>> {
            self.leading.subscribe()
        }
        fn reachable(&self) -> bool {
            true
        }
        fn replicated(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn an_elected_loop_runs_only_while_this_replica_leads_it_and_its_writes_are_fenced() {
        use flotilla_store::{Condition, FencedStore, MemoryStore, Store, Term, Txn};
        let inner = Arc::new(MemoryStore::new());
        let election = Arc::new(Given {
            leading: tokio::sync::watch::Sender::new(None),
        });
        let store: Arc<dyn Store> = Arc::new(FencedStore::new(inner.clone(), election.clone()));
        let runs = Arc::new(AtomicU32::new(0));
        let supervisor = Supervisor::new(quick());
        let (counted, writer) = (Arc::clone(&runs), Arc::clone(&store));
        supervisor.spawn_led("elected", election.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let store = Arc::clone(&writer);
            async move {
                let mut written = 0u32;
                loop {
                    written += 1;
                    let _ = store
                        .commit(Txn::new().put(format!("w/{written}"), "x"))
                        .await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "not leading: not running");
        assert_eq!(inner.revision(), 0);

        let won = inner
            .commit(Txn::new().put("leaders/elected", "given"))
            .await
            .unwrap();
        election.leading.send_replace(Some(Term {
            role: "elected",
            fence: vec![Condition::Revision {
                key: "leaders/elected".into(),
                revision: won,
            }],
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(inner.list("w/", None, 100).unwrap().entries.len() > 1);

        // Another replica takes the role before this one notices: its
        // writes fail from then on.
        inner
            .commit(Txn::new().put("leaders/elected", "other"))
            .await
            .unwrap();
        let taken_at = inner.revision();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(inner.revision(), taken_at, "a deposed leader wrote");
        // It notices: the loop stops.
        election.leading.send_replace(None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let report = supervisor
            .report()
            .into_iter()
            .find(|r| r.name == "elected")
            .unwrap();
        assert!(
            report.elected && report.running && report.restarts_total == 0,
            "{report:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
