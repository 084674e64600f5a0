//! Choosing a target group and a target, pure: the caller passes the
//! counters, the random roll and the time, so that fairness, weights and
//! the slow-start ramp are tested exactly.

/// A new target in slow start begins with this share of a full target's
/// traffic and ramps linearly to all of it over the slow-start duration.
pub const SLOW_START_INITIAL_FRACTION: f64 = 0.1;

/// The weight of a target `elapsed_ms` after it became healthy, in a group
/// with a slow start of `duration_ms` (0: off).
pub fn slow_start_weight(elapsed_ms: u64, duration_ms: u64) -> f64 {
    if duration_ms == 0 || elapsed_ms >= duration_ms {
        return 1.0;
    }
    let progress = elapsed_ms as f64 / duration_ms as f64;
    SLOW_START_INITIAL_FRACTION + (1.0 - SLOW_START_INITIAL_FRACTION) * progress
}

/// The `counter`-th pick of plain round robin over `count` targets.
pub fn round_robin(count: usize, counter: usize) -> usize {
    counter % count
}

/// Picks an index with probability proportional to its weight, given a
/// uniform random `roll`; `None` when every weight is zero.
pub fn weighted(weights: &[f64], roll: u64) -> Option<usize> {
    weighted_by(weights.len(), roll, |index| weights[index])
}

/// [`weighted`] over `count` items whose weights `weight_of` tells, so the
/// hot path needs no vector.
pub fn weighted_by(count: usize, roll: u64, weight_of: impl Fn(usize) -> f64) -> Option<usize> {
    let total: f64 = (0..count).map(&weight_of).sum();
    if total <= 0.0 {
        return None;
    }
    // 53 random bits make a uniform fraction in [0, 1).
    let fraction = (roll >> 11) as f64 / (1u64 << 53) as f64;
    let mut point = fraction * total;
    for index in 0..count {
        let weight = weight_of(index);
        if point < weight {
            return Some(index);
        }
        point -= weight;
    }
    // Rounding left the point at the very end: the last positive weight.
    (0..count).rev().find(|&index| weight_of(index) > 0.0)
}

/// Least outstanding requests: the target with the fewest requests in
/// flight relative to its weight (slow start counts as a smaller target).
/// Ties go to the first at or after `start`, so equal targets take turns.
pub fn least_outstanding(outstanding_and_weight: &[(u32, f64)], start: usize) -> Option<usize> {
    least_outstanding_by(outstanding_and_weight.len(), start, |index| {
        outstanding_and_weight[index]
    })
}

/// [`least_outstanding`] over `count` items described by `load_of`.
pub fn least_outstanding_by(
    count: usize,
    start: usize,
    load_of: impl Fn(usize) -> (u32, f64),
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for offset in 0..count {
        let index = (start + offset) % count;
        let (outstanding, weight) = load_of(index);
        if weight <= 0.0 {
            continue;
        }
        let load = (f64::from(outstanding) + 1.0) / weight;
        if best.is_none_or(|(_, best_load)| load < best_load) {
            best = Some((index, load));
        }
    }
    best.map(|(index, _)| index)
}

/// A small, fast pseudo-random generator (xorshift64*) for picks; each
/// worker thread has its own, seeded once from the process's entropy.
#[derive(Clone, Debug)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        Xorshift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_is_fair() {
        let mut counts = [0usize; 7];
        for counter in 0..7_000 {
            counts[round_robin(7, counter)] += 1;
        }
        assert!(counts.iter().all(|&count| count == 1_000), "{counts:?}");
    }

    #[test]
    fn weights_ninety_ten_split_within_two_percent() {
        let mut random = Xorshift::new(42);
        let mut counts = [0usize; 2];
        for _ in 0..10_000 {
            let index = weighted(&[90.0, 10.0], random.next_u64()).expect("a pick");
            counts[index] += 1;
        }
        let share = counts[0] as f64 / 10_000.0;
        assert!((share - 0.9).abs() < 0.02, "90/10 gave {counts:?}");
    }

    #[test]
    fn zero_weights_are_never_picked() {
        let mut random = Xorshift::new(7);
        for _ in 0..1_000 {
            assert_eq!(weighted(&[0.0, 5.0, 0.0], random.next_u64()), Some(1));
        }
        assert_eq!(weighted(&[0.0, 0.0], 123), None);
        assert_eq!(weighted(&[], 123), None);
    }

    #[test]
    fn least_outstanding_prefers_the_idle_and_rotates_ties() {
        assert_eq!(
            least_outstanding(&[(5, 1.0), (0, 1.0), (3, 1.0)], 0),
            Some(1)
        );
        assert_eq!(
            least_outstanding(&[(1, 1.0), (1, 1.0), (1, 1.0)], 2),
            Some(2)
        );
        assert_eq!(
            least_outstanding(&[(1, 1.0), (1, 1.0), (1, 1.0)], 4),
            Some(1)
        );
        // A target in slow start (weight 0.1) looks ten times as loaded.
        assert_eq!(least_outstanding(&[(0, 0.1), (3, 1.0)], 0), Some(1));
        assert_eq!(least_outstanding(&[], 0), None);
    }

    #[test]
    fn slow_start_ramps_linearly() {
        let duration_ms = 30_000;
        assert_eq!(
            slow_start_weight(0, duration_ms),
            SLOW_START_INITIAL_FRACTION
        );
        let middle = slow_start_weight(15_000, duration_ms);
        assert!((middle - 0.55).abs() < 1e-9, "{middle}");
        assert_eq!(slow_start_weight(30_000, duration_ms), 1.0);
        assert_eq!(slow_start_weight(99_000, duration_ms), 1.0);
        assert_eq!(slow_start_weight(0, 0), 1.0);
        // The ramp shows in the traffic share: a new target beside a full one.
        let mut random = Xorshift::new(3);
        let shares: Vec<f64> = [0, 15_000, 30_000]
            .iter()
            .map(|&elapsed| {
                let weights = [1.0, slow_start_weight(elapsed, duration_ms)];
                let new_target_picks = (0..10_000)
                    .filter(|_| weighted(&weights, random.next_u64()) == Some(1))
                    .count();
                new_target_picks as f64 / 10_000.0
            })
            .collect();
        assert!((shares[0] - 0.1 / 1.1).abs() < 0.02, "{shares:?}");
        assert!((shares[1] - 0.55 / 1.55).abs() < 0.02, "{shares:?}");
        assert!((shares[2] - 0.5).abs() < 0.02, "{shares:?}");
    }
}
