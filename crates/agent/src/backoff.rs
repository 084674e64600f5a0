//! Bounded exponential backoff with jitter, as a pure function of the attempt
//! number and a random fraction, so that tests check exact delays.

/// First retry delay.
pub const BACKOFF_INITIAL_MS: u64 = 500;
/// No delay grows past this: a restarted control plane is found again within
/// about half a minute.
pub const BACKOFF_MAX_MS: u64 = 30_000;

/// The delay before retry number `attempt` (0 for the first retry), "equal
/// jitter" style: half the exponential delay plus a random share of the other
/// half, so that many agents reconnecting at once spread out but never retry
/// immediately. `jitter_fraction` is in `[0, 1)`.
pub fn backoff_delay_ms(attempt: u32, jitter_fraction: f64) -> u64 {
    backoff_delay_between_ms(attempt, jitter_fraction, BACKOFF_INITIAL_MS, BACKOFF_MAX_MS)
}

/// [`backoff_delay_ms`] with explicit bounds.
pub fn backoff_delay_between_ms(
    attempt: u32,
    jitter_fraction: f64,
    initial_ms: u64,
    max_ms: u64,
) -> u64 {
    let exponential = initial_ms
        .saturating_mul(1u64 << attempt.min(32))
        .min(max_ms);
    let half = exponential / 2;
    let fraction = if jitter_fraction.is_finite() {
        jitter_fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    half + (half as f64 * fraction) as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_then_caps() {
        let delays: Vec<u64> = (0..10)
            .map(|attempt| backoff_delay_ms(attempt, 0.0))
            .collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000, 15_000]
        );
        let full: Vec<u64> = (0..10)
            .map(|attempt| backoff_delay_ms(attempt, 0.999_999))
            .collect();
        assert_eq!(full[0], 499);
        assert_eq!(full[9], 29_999);
    }

    #[test]
    fn never_exceeds_the_cap_and_survives_huge_attempts() {
        for attempt in [0, 1, 31, 32, 63, 64, u32::MAX] {
            for jitter in [0.0, 0.5, 1.0, f64::NAN, -3.0, 7.0] {
                assert!(backoff_delay_ms(attempt, jitter) <= BACKOFF_MAX_MS);
                assert!(backoff_delay_ms(attempt, jitter) >= BACKOFF_INITIAL_MS / 2);
            }
        }
    }
}
