//! Active health checks: one task per target group, checking each target
//! once per interval with the checks spread evenly over it (1,000 targets
//! at 30 s: one check every 30 ms, never a burst), and a newly registered
//! target checked at once so it serves within a check of registration.

use std::sync::Arc;
use std::time::Duration;

use http::{header, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use crate::edge::Clock;
use crate::health::CheckFailure;
use crate::target::{GroupRuntime, HealthCheckSettings, TargetRuntime};

/// Checks one group may have in flight at once (slow targets must not
/// pile up tasks without bound).
pub const CHECKS_IN_FLIGHT_PER_GROUP_MAX: usize = 256;
/// Newly registered targets queued for their first check; beyond it they
/// wait for their turn in the round.
pub const NEW_TARGETS_QUEUED_MAX: usize = 1_024;
/// What a health check request says it is, as ELB's does.
const USER_AGENT: &str = "ELB-HealthChecker/2.0";

/// The handle the writer keeps for a group's checker.
pub struct Checker {
    new_targets: mpsc::Sender<Arc<TargetRuntime>>,
    task: tokio::task::JoinHandle<()>,
}

impl Checker {
    pub fn start(group: Arc<GroupRuntime>, clock: Arc<dyn Clock>) -> Self {
        let (new_targets, receiver) = mpsc::channel(NEW_TARGETS_QUEUED_MAX);
        let task = tokio::spawn(run(group, clock, receiver));
        Checker { new_targets, task }
    }

    /// Asks for a first check of a new target now rather than in its turn.
    pub fn check_soon(&self, target: Arc<TargetRuntime>) {
        let _ = self.new_targets.try_send(target);
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    group: Arc<GroupRuntime>,
    clock: Arc<dyn Clock>,
    mut new_targets: mpsc::Receiver<Arc<TargetRuntime>>,
) {
    let permits = Arc::new(Semaphore::new(CHECKS_IN_FLIGHT_PER_GROUP_MAX));
    loop {
        let settings = group.settings.load_full();
        let mut round: Vec<Arc<TargetRuntime>> = group.members().values().cloned().collect();
        round.sort_by(|a, b| a.key.cmp(&b.key));
        if !settings.health.enabled || round.is_empty() {
            // Nothing to check: wait for a new target or a settings change.
            tokio::select! {
                Some(target) = new_targets.recv() => {
                    if settings.health.enabled {
                        spawn_check(&group, target, &settings.health, &clock, &permits);
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let spacing = Duration::from_millis(settings.health.interval_ms) / round.len() as u32;
        let mut next_tick = tokio::time::Instant::now();
        for target in round {
            spawn_check(&group, target, &settings.health, &clock, &permits);
            next_tick += spacing;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(next_tick) => break,
                    Some(new) = new_targets.recv() => {
                        spawn_check(&group, new, &settings.health, &clock, &permits);
                    }
                }
            }
        }
    }
}

fn spawn_check(
    group: &Arc<GroupRuntime>,
    target: Arc<TargetRuntime>,
    settings: &HealthCheckSettings,
    clock: &Arc<dyn Clock>,
    permits: &Arc<Semaphore>,
) {
    let Ok(permit) = Arc::clone(permits).try_acquire_owned() else {
        return; // every slot busy with slow targets: this one waits a round
    };
    let group = Arc::clone(group);
    let settings = settings.clone();
    let clock = Arc::clone(clock);
    tokio::spawn(async move {
        let outcome = check(&target, &settings).await;
        let now_ms = clock.now_ms();
        let thresholds = settings.thresholds;
        if let Some(health) =
            target.update_health(|tracker| tracker.observe(outcome, thresholds, now_ms))
        {
            tracing::info!(
                target_group = %group.name,
                target = %target.key.id,
                port = target.key.port,
                state = health.state.as_str(),
                reason = health.reason.map(|reason| reason.as_str()),
                "target health changed"
            );
            group.health_changed(&target, health, now_ms);
        }
        drop(permit);
    });
}

/// One health check of one target.
pub async fn check(
    target: &TargetRuntime,
    settings: &HealthCheckSettings,
) -> Result<(), CheckFailure> {
    let mut address = target.address;
    if let Some(port) = settings.port {
        address.set_port(port);
    }
    let timeout = Duration::from_millis(settings.timeout_ms);
    let attempt = async {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|_| CheckFailure::ConnectionFailed)?;
        let Some((path, matcher)) = &settings.http else {
            return Ok(()); // TCP: the connection is the check
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| CheckFailure::ConnectionFailed)?;
        tokio::spawn(connection);
        let request = Request::get(path.as_str())
            .header(header::HOST, address.to_string())
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONNECTION, "close")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|_| CheckFailure::Internal)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| CheckFailure::ConnectionFailed)?;
        let status: StatusCode = response.status();
        if matcher.accepts(status.as_u16()) {
            Ok(())
        } else {
            Err(CheckFailure::ResponseCodeMismatch(status.as_u16()))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err(CheckFailure::Timeout),
    }
}
