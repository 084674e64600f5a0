//! Helpers for the control plane's unit tests: a fixed clock, counting ids
//! and an in-memory store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flotilla_store::MemoryStore;
use flotilla_types::arn::Scope;

use crate::{Caller, Clock, Ecs, IdSource};

pub struct FixedClock(pub AtomicU64);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct CountingIds(AtomicU64);

impl IdSource for CountingIds {
    fn uuid(&self) -> String {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }
}

pub fn ecs() -> Ecs {
    ecs_with_clock(Arc::new(FixedClock(AtomicU64::new(1_700_000_000_000))))
}

/// [`ecs`] on a clock the test moves.
pub fn ecs_with_clock(clock: Arc<FixedClock>) -> Ecs {
    Ecs::new(
        Arc::new(MemoryStore::new()),
        Scope::new("us-east-1", "000000000000"),
        clock,
        Arc::new(CountingIds(AtomicU64::new(1))),
    )
}

pub fn caller() -> Caller {
    Caller {
        access_key_id: "test".to_owned(),
        principal_arn: "arn:aws:iam::000000000000:root".to_owned(),
    }
}
