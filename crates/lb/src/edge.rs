//! The data plane's only wall clock and randomness. Everything else takes
//! time as a parameter (the health state machine, balancing, metrics), so
//! tests drive it exactly.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::balance::Xorshift;

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The data plane's one reading of the wall clock.
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }
}

/// A clock read once per tick, for the hot path: idle timeouts and trace
/// ids need seconds, not a system call per read or write.
pub struct CoarseClock {
    now_ms: AtomicU64,
}

/// How often the coarse clock advances.
pub const COARSE_TICK: Duration = Duration::from_millis(250);

impl CoarseClock {
    /// Starts a task that keeps the coarse clock within a tick of `clock`.
    pub fn start(clock: Arc<dyn Clock>) -> Arc<CoarseClock> {
        let coarse = Arc::new(CoarseClock {
            now_ms: AtomicU64::new(clock.now_ms()),
        });
        let weak = Arc::downgrade(&coarse);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(COARSE_TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(coarse) = weak.upgrade() else { return };
                coarse.now_ms.store(clock.now_ms(), Relaxed);
            }
        });
        coarse
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Relaxed)
    }
}

thread_local! {
    static RANDOM: RefCell<Xorshift> = RefCell::new(Xorshift::new(seed()));
}

/// A seed from the standard library's per-process hash keys, which the
/// operating system's entropy initialises.
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish()
}

/// A uniformly random number from this thread's generator.
pub fn random_u64() -> u64 {
    RANDOM.with(|random| random.borrow_mut().next_u64())
}
