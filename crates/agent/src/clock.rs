//! Time and fresh ids, passed in rather than read inside the engine, so that
//! tests can drive the same code with a clock of their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Source of the current wall-clock time, for the timestamps the agent
/// reports and signs with. Waiting is done with `tokio::time`, which tests
/// pause and advance.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The wall clock: the only place the agent reads it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            })
    }
}

/// A clock that follows `tokio::time` from a fixed start, so a test with a
/// paused tokio clock sees reported times advance exactly as its sleeps do.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start_ms: u64) -> Self {
        Self {
            start_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.start_ms.saturating_add(elapsed)
    }
}

/// Source of fresh unique ids: metadata tokens, instance ids, outbox names.
pub trait IdSource: Send + Sync + 'static {
    /// 32 lowercase hex digits.
    fn hex_id(&self) -> String;
}

/// Ids from the operating system's randomness.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn hex_id(&self) -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

/// Ids 0, 1, 2... as hex, for tests that compare output.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl IdSource for SequentialIds {
    fn hex_id(&self) -> String {
        format!("{:032x}", self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// A small deterministic generator for backoff jitter; jitter need not be
/// unpredictable, only different between instances.
#[derive(Debug)]
pub struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    pub fn seeded(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A fraction in `[0, 1)` (splitmix64).
    pub fn next_fraction(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed that differs between instances and runs.
pub fn seed_from(text: &str, clock: &Arc<dyn Clock>) -> u64 {
    // FNV-1a over the text, mixed with the time.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash ^ clock.now_ms()
}

/// Unix milliseconds as the seconds-with-fraction ECS's JSON timestamps carry.
pub fn to_epoch_seconds(unix_ms: u64) -> f64 {
    unix_ms as f64 / 1000.0
}

/// Unix milliseconds as RFC 3339 (`2024-05-01T12:00:00.123Z`), the form the
/// task metadata endpoint uses.
pub fn to_rfc3339(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX);
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        (second_of_day / 60) % 60,
        second_of_day % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * month_index + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    })
    .unwrap_or(1);
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(to_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(to_rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(to_rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn jitter_stays_in_range_and_differs_by_seed() {
        let first = Jitter::seeded(1);
        let second = Jitter::seeded(2);
        let a: Vec<f64> = (0..100).map(|_| first.next_fraction()).collect();
        let b: Vec<f64> = (0..100).map(|_| second.next_fraction()).collect();
        assert!(a.iter().chain(&b).all(|x| (0.0..1.0).contains(x)));
        assert_ne!(a, b);
    }
}
