//! Capacity provider strategies: checking one as ECS does, and splitting a
//! launch's tasks among its providers. Pure: no store, no clock.
//!
//! **The split.** Tasks go one at a time. While the provider with a `base`
//! runs fewer tasks than its base, the next task is its. After that, the
//! next task goes to the provider with a weight above zero whose tasks
//! beyond its base are fewest for its weight (least `(beyond + 1) / weight`;
//! ties to the one listed first), so that weights 1 and 4 give one task in
//! five to the first. A strategy of one provider takes every task whatever
//! its weight. What a provider already runs counts: a service's deployment
//! passes its live tasks per provider, so that scaling out keeps the whole
//! deployment in proportion; RunTask passes none.
//!
//! ```text
//!  [A base 2 weight 1, B weight 3], 10 tasks:  A A | B B A B B B A B   → A 4, B 6
//! ```

use std::sync::Mutex;

use flotilla_types::ecs::CapacityProviderStrategyItem;
use flotilla_types::ApiError;

/// Most providers one strategy may name, as ECS allows.
pub const STRATEGY_ITEMS_MAX: usize = 20;
const BASE_MAX: i32 = 100_000;
const WEIGHT_MAX: i32 = 1_000;

/// Fargate's capacity providers, which every account has.
pub const FARGATE_PROVIDERS: [&str; 2] = ["FARGATE", "FARGATE_SPOT"];

pub fn is_fargate(provider: &str) -> bool {
    FARGATE_PROVIDERS.contains(&provider)
}

/// One provider of a checked strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub provider: String,
    pub base: u32,
    pub weight: u32,
}

/// Where a strategy came from, which ECS's messages name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A request's `capacityProviderStrategy`.
    Request,
    /// The cluster's `defaultCapacityProviderStrategy`.
    ClusterDefault,
}

impl Origin {
    fn words(self) -> &'static str {
        match self {
            Origin::Request => "capacity provider strategy",
            Origin::ClusterDefault => "default capacity provider strategy",
        }
    }
}

/// Checks a strategy's shape as ECS does wherever one is given: at most
/// [`STRATEGY_ITEMS_MAX`] providers, each named once, bases and weights in
/// range, a base on one provider at most, and Fargate's providers not mixed
/// with others. Whether the providers exist and belong to the cluster is
/// the caller's to check.
pub fn checked_shape(
    items: &[CapacityProviderStrategyItem],
    origin: Origin,
) -> Result<Vec<Share>, ApiError> {
    let words = origin.words();
    if items.len() > STRATEGY_ITEMS_MAX {
        return Err(ApiError::invalid_parameter(format!(
            "The {words} can contain at most {STRATEGY_ITEMS_MAX} capacity providers, got {}.",
            items.len()
        )));
    }
    let mut shares: Vec<Share> = Vec::with_capacity(items.len());
    for item in items {
        let provider = item.capacity_provider.as_deref().unwrap_or_default().trim();
        if provider.is_empty() {
            return Err(ApiError::invalid_parameter(format!(
                "capacityProvider is required for each item of the {words}."
            )));
        }
        let base = item.base.unwrap_or(0);
        if !(0..=BASE_MAX).contains(&base) {
            return Err(ApiError::invalid_parameter(format!(
                "The base of capacity provider {provider} must be between 0 and {BASE_MAX}, got {base}."
            )));
        }
        let weight = item.weight.unwrap_or(0);
        if !(0..=WEIGHT_MAX).contains(&weight) {
            return Err(ApiError::invalid_parameter(format!(
                "The weight of capacity provider {provider} must be between 0 and {WEIGHT_MAX}, got {weight}."
            )));
        }
        if shares.iter().any(|s| s.provider == provider) {
            return Err(ApiError::invalid_parameter(format!(
                "The {words} names capacity provider {provider} more than once."
            )));
        }
        shares.push(Share {
            provider: provider.to_owned(),
            base: base as u32,
            weight: weight as u32,
        });
    }
    if shares.iter().filter(|s| s.base > 0).count() > 1 {
        return Err(ApiError::invalid_parameter(format!(
            "Only one capacity provider in a {words} can have a base defined."
        )));
    }
    let fargate = shares.iter().filter(|s| is_fargate(&s.provider)).count();
    if fargate > 0 && fargate < shares.len() {
        return Err(ApiError::invalid_parameter(format!(
            "The {words} cannot contain a mix of capacity providers using Auto Scaling groups and Fargate providers. Specify one or the other and try again."
        )));
    }
    Ok(shares)
}

/// ECS refuses to launch with a strategy of several providers that all
/// weigh zero (it accepts such a default strategy on the cluster, and
/// refuses the launches that would use it).
pub fn check_weights(shares: &[Share], origin: Origin) -> Result<(), ApiError> {
    if shares.len() > 1 && shares.iter().all(|s| s.weight == 0) {
        let fix = match origin {
            Origin::Request => "Specify a valid capacity provider strategy and try again.",
            Origin::ClusterDefault => {
                "Update the cluster's default capacity provider strategy or specify a valid capacity provider strategy and try again."
            }
        };
        return Err(ApiError::invalid_parameter(format!(
            "There are no capacity providers with a weight value greater than zero defined in the {}. At least one capacity provider must have a weight value greater than zero specified. {fix}",
            origin.words()
        )));
    }
    Ok(())
}

/// How many of `count` new tasks each provider of `shares` takes, given
/// how many each already runs (`placed`, in the same order; missing counts
/// are zero). See the module's documentation for the rule.
pub fn split(shares: &[Share], placed: &[u32], count: u32) -> Vec<u32> {
    let mut totals: Vec<u64> = (0..shares.len())
        .map(|index| u64::from(placed.get(index).copied().unwrap_or(0)))
        .collect();
    let mut added = vec![0u32; shares.len()];
    if shares.is_empty() {
        return added;
    }
    // A lone provider of weight zero still takes its tasks.
    let weight = |share: &Share| -> u64 {
        if shares.len() == 1 {
            u64::from(share.weight.max(1))
        } else {
            u64::from(share.weight)
        }
    };
    for _ in 0..count {
        let below_base = shares
            .iter()
            .zip(&totals)
            .position(|(share, total)| *total < u64::from(share.base));
        let next = below_base.or_else(|| {
            let mut best: Option<(usize, u64, u64)> = None;
            for (index, share) in shares.iter().enumerate() {
                let weight = weight(share);
                if weight == 0 {
                    continue;
                }
                let next_beyond = totals[index].saturating_sub(u64::from(share.base)) + 1;
                // (next_beyond / weight) < (best_beyond / best_weight), without division.
                let better = best.is_none_or(|(_, best_beyond, best_weight)| {
                    u128::from(next_beyond) * u128::from(best_weight)
                        < u128::from(best_beyond) * u128::from(weight)
                });
                if better {
                    best = Some((index, next_beyond, weight));
                }
            }
            best.map(|(index, _, _)| index)
        });
        // Only a strategy check_weights refused has no provider to take it.
        let Some(next) = next else { break };
        totals[next] += 1;
        added[next] += 1;
    }
    added
}

/// A launch's checked strategy, and how many tasks each of its providers
/// already runs for it, kept up to date as its batches commit.
#[derive(Debug)]
pub struct StrategyLaunch {
    pub shares: Vec<Share>,
    placed: Mutex<Vec<u32>>,
}

impl StrategyLaunch {
    pub fn new(shares: Vec<Share>, placed: Vec<u32>) -> Self {
        Self {
            shares,
            placed: Mutex::new(placed),
        }
    }

    /// How many of `count` new tasks each provider takes.
    pub fn split(&self, count: u32) -> Vec<u32> {
        let placed = self.placed.lock().map(|p| p.clone()).unwrap_or_default();
        split(&self.shares, &placed, count)
    }

    /// Counts a committed task of the launch on `provider`.
    pub fn record(&self, provider: &str) {
        let Some(index) = self.shares.iter().position(|s| s.provider == provider) else {
            return;
        };
        if let Ok(mut placed) = self.placed.lock() {
            if placed.len() < self.shares.len() {
                placed.resize(self.shares.len(), 0);
            }
            placed[index] = placed[index].saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(provider: &str, base: u32, weight: u32) -> Share {
        Share {
            provider: provider.into(),
            base,
            weight,
        }
    }

    fn item(
        provider: &str,
        base: Option<i32>,
        weight: Option<i32>,
    ) -> CapacityProviderStrategyItem {
        CapacityProviderStrategyItem {
            capacity_provider: Some(provider.into()),
            base,
            weight,
        }
    }

    /// What a case is called, the strategy, what runs already, how many
    /// new tasks, and how many of them each provider should take.
    type SplitCase = (&'static str, Vec<Share>, Vec<u32>, u32, Vec<u32>);

    #[test]
    fn splits_base_first_then_by_weight() {
        let cases: &[SplitCase] = &[
            (
                "equal weights split evenly",
                vec![share("a", 0, 1), share("b", 0, 1)],
                vec![],
                4,
                vec![2, 2],
            ),
            (
                "an odd task goes to the first listed",
                vec![share("a", 0, 1), share("b", 0, 1)],
                vec![],
                3,
                vec![2, 1],
            ),
            (
                "one in five for weights 1 and 4",
                vec![share("a", 0, 1), share("b", 0, 4)],
                vec![],
                10,
                vec![2, 8],
            ),
            (
                "weights 1 and 4, five tasks",
                vec![share("a", 0, 1), share("b", 0, 4)],
                vec![],
                5,
                vec![1, 4],
            ),
            (
                "base first",
                vec![share("a", 2, 1), share("b", 0, 3)],
                vec![],
                10,
                vec![4, 6],
            ),
            (
                "base alone when the count is below it",
                vec![share("a", 5, 1), share("b", 0, 1)],
                vec![],
                3,
                vec![3, 0],
            ),
            (
                "a base provider of weight zero takes its base only",
                vec![share("a", 2, 0), share("b", 0, 1)],
                vec![],
                5,
                vec![2, 3],
            ),
            (
                "base on the second provider",
                vec![share("a", 0, 1), share("b", 1, 1)],
                vec![],
                3,
                vec![1, 2],
            ),
            (
                "weight zero takes nothing beyond base",
                vec![share("a", 0, 0), share("b", 0, 2)],
                vec![],
                4,
                vec![0, 4],
            ),
            (
                "a lone provider of weight zero takes all",
                vec![share("a", 0, 0)],
                vec![],
                3,
                vec![3],
            ),
            (
                "a lone provider with a base takes all",
                vec![share("a", 2, 0)],
                vec![],
                5,
                vec![5],
            ),
            (
                "what runs already counts",
                vec![share("a", 0, 1), share("b", 0, 1)],
                vec![3, 0],
                3,
                vec![0, 3],
            ),
            (
                "an already filled base is not filled again",
                vec![share("a", 2, 1), share("b", 0, 1)],
                vec![2, 0],
                2,
                vec![1, 1],
            ),
            (
                "more than its share already keeps the rest elsewhere",
                vec![share("a", 0, 1), share("b", 0, 1)],
                vec![5, 1],
                2,
                vec![0, 2],
            ),
            (
                "nothing to place",
                vec![share("a", 0, 1)],
                vec![],
                0,
                vec![0],
            ),
            ("no providers", vec![], vec![], 3, vec![]),
        ];
        for (case, shares, placed, count, expected) in cases {
            assert_eq!(&split(shares, placed, *count), expected, "{case}");
        }
    }

    #[test]
    fn a_split_places_every_task_and_keeps_proportions_at_scale() {
        let shares = vec![share("a", 3, 2), share("b", 0, 5), share("c", 0, 3)];
        let added = split(&shares, &[], 1003);
        assert_eq!(added.iter().sum::<u32>(), 1003);
        assert_eq!(added, vec![3 + 200, 500, 300]);
        // Batches that record what they placed split like one launch.
        let launch = StrategyLaunch::new(shares.clone(), vec![0, 0, 0]);
        let mut total = vec![0u32; 3];
        for _ in 0..17 {
            for (index, n) in launch.split(59).into_iter().enumerate() {
                total[index] += n;
                for _ in 0..n {
                    launch.record(&shares[index].provider);
                }
            }
        }
        assert_eq!(total, vec![3 + 200, 500, 300]);
    }

    #[test]
    fn shapes_are_checked_as_ecs_checks_them() {
        let ok = checked_shape(
            &[item("a", Some(1), Some(1)), item("b", None, Some(3))],
            Origin::Request,
        )
        .expect("ok");
        assert_eq!(ok, vec![share("a", 1, 1), share("b", 0, 3)]);
        let too_many: Vec<_> = (0..21)
            .map(|i| item(&format!("p{i}"), None, Some(1)))
            .collect();
        let refused: &[(&str, Vec<CapacityProviderStrategyItem>, &str)] = &[
            ("more than 20", too_many, "at most 20"),
            (
                "two bases",
                vec![item("a", Some(1), Some(1)), item("b", Some(2), Some(1))],
                "Only one capacity provider",
            ),
            ("negative base", vec![item("a", Some(-1), None)], "base"),
            (
                "base too large",
                vec![item("a", Some(100_001), None)],
                "base",
            ),
            (
                "weight too large",
                vec![item("a", None, Some(1001))],
                "weight",
            ),
            (
                "named twice",
                vec![item("a", None, Some(1)), item("a", None, Some(2))],
                "more than once",
            ),
            (
                "unnamed",
                vec![item("", None, Some(1))],
                "capacityProvider is required",
            ),
            (
                "Fargate mixed in",
                vec![item("FARGATE", None, Some(1)), item("a", None, Some(1))],
                "mix",
            ),
        ];
        for (case, items, words) in refused {
            let error = checked_shape(items, Origin::Request).expect_err(case);
            assert_eq!(error.code, "InvalidParameterException", "{case}");
            assert!(error.message.contains(words), "{case}: {}", error.message);
        }
        // Base zero on several providers is no base at all.
        checked_shape(
            &[item("a", Some(0), Some(1)), item("b", Some(0), Some(1))],
            Origin::Request,
        )
        .expect("zero bases");
    }

    #[test]
    fn launches_need_a_weight_above_zero_among_several() {
        check_weights(&[share("a", 0, 0)], Origin::Request).expect("one provider");
        check_weights(&[share("a", 0, 0), share("b", 0, 1)], Origin::Request).expect("one weighs");
        let error = check_weights(
            &[share("a", 1, 0), share("b", 0, 0)],
            Origin::ClusterDefault,
        )
        .expect_err("all zero");
        assert!(
            error.message.contains("default capacity provider strategy"),
            "{}",
            error.message
        );
    }
}
