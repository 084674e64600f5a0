//! The data plane's load balancer figures as CloudWatch publishes them:
//! `AWS/ApplicationELB` (and `AWS/NetworkELB`) by `LoadBalancer`
//! (`app/NAME/ID`) and by `TargetGroup` (`targetgroup/NAME/ID`), one datum
//! per metric each CloudWatch minute. What a target tracking policy on
//! `ALBRequestCountPerTarget` watches.
//!
//! The data plane keeps running totals; each minute's figures are what
//! they moved since the previous minute, so the minutes follow the metrics
//! clock even when tests run it faster than the wall clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flotilla_aws::elbv2::LoadBalancerTypeEnum;
use flotilla_lb::metrics::{Dimension, Metrics, Running};
use flotilla_metrics::aggregate::Aggregate;
use flotilla_metrics::put::{Datum, MinuteSource};
use flotilla_metrics::{MetricKey, Unit};

use crate::records::State;
use crate::Elbv2;

/// How a data plane series is named in CloudWatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudWatchName {
    pub namespace: &'static str,
    /// `LoadBalancer` or `TargetGroup`.
    pub dimension: &'static str,
    pub value: String,
}

const APPLICATION: &str = "AWS/ApplicationELB";
const NETWORK: &str = "AWS/NetworkELB";

/// Each data plane series (load balancers by name, target groups by ARN)
/// and its CloudWatch name. Pure.
pub fn cloudwatch_names(state: &State) -> HashMap<(Dimension, String), CloudWatchName> {
    let mut names = HashMap::new();
    for record in state.load_balancers.values() {
        let description = &record.description;
        let (Some(name), Some(arn)) = (
            description.load_balancer_name.as_ref(),
            description.load_balancer_arn.as_deref(),
        ) else {
            continue;
        };
        let Some((_, value)) = arn.split_once(":loadbalancer/") else {
            continue;
        };
        let namespace = match record.kind {
            LoadBalancerTypeEnum::Network => NETWORK,
            _ => APPLICATION,
        };
        names.insert(
            (Dimension::LoadBalancer, name.clone()),
            CloudWatchName {
                namespace,
                dimension: "LoadBalancer",
                value: value.to_owned(),
            },
        );
    }
    for record in state.target_groups.values() {
        let Some(arn) = record.description.target_group_arn.as_ref() else {
            continue;
        };
        let Some(start) = arn.find(":targetgroup/") else {
            continue;
        };
        let network = record
            .description
            .protocol
            .is_some_and(|protocol| matches!(protocol.as_str(), "TCP" | "UDP" | "TCP_UDP" | "TLS"));
        names.insert(
            (Dimension::TargetGroup, arn.clone()),
            CloudWatchName {
                namespace: if network { NETWORK } else { APPLICATION },
                dimension: "TargetGroup",
                value: arn[start + 1..].to_owned(),
            },
        );
    }
    names
}

/// One minute's datums of one series: what `now` moved past `before`,
/// and the gauges as they are. Pure.
pub fn minute_datums(
    name: &CloudWatchName,
    dimension: Dimension,
    before: &Running,
    now: &Running,
    timestamp_ms: i64,
) -> Vec<Datum> {
    let moved = |after: u64, earlier: u64| after.saturating_sub(earlier) as f64;
    let requests = moved(now.request_count, before.request_count);
    let responses = moved(now.target_responses, before.target_responses);
    let mut figures: Vec<(&str, Unit, f64)> = vec![
        ("RequestCount", Unit::Count, requests),
        (
            "HTTPCode_Target_2XX_Count",
            Unit::Count,
            moved(now.target_2xx, before.target_2xx),
        ),
        (
            "HTTPCode_Target_3XX_Count",
            Unit::Count,
            moved(now.target_3xx, before.target_3xx),
        ),
        (
            "HTTPCode_Target_4XX_Count",
            Unit::Count,
            moved(now.target_4xx, before.target_4xx),
        ),
        (
            "HTTPCode_Target_5XX_Count",
            Unit::Count,
            moved(now.target_5xx, before.target_5xx),
        ),
    ];
    if responses > 0.0 {
        let seconds = moved(
            now.target_response_time_us_sum,
            before.target_response_time_us_sum,
        ) / responses
            / 1e6;
        figures.push(("TargetResponseTime", Unit::Seconds, seconds));
    }
    match dimension {
        Dimension::LoadBalancer => figures.extend([
            (
                "HTTPCode_ELB_4XX_Count",
                Unit::Count,
                moved(now.elb_4xx, before.elb_4xx),
            ),
            (
                "HTTPCode_ELB_5XX_Count",
                Unit::Count,
                moved(now.elb_5xx, before.elb_5xx),
            ),
            (
                "NewConnectionCount",
                Unit::Count,
                moved(now.new_connections, before.new_connections),
            ),
            (
                "ActiveConnectionCount",
                Unit::Count,
                now.active_connections as f64,
            ),
            (
                "ProcessedBytes",
                Unit::Bytes,
                moved(now.processed_bytes, before.processed_bytes),
            ),
        ]),
        Dimension::TargetGroup => {
            // Over the healthy targets, or all of them when none is, as ELB counts.
            let targets = match now.healthy_hosts {
                0 => now.unhealthy_hosts,
                healthy => healthy,
            };
            if targets > 0 {
                figures.push((
                    "RequestCountPerTarget",
                    Unit::None,
                    requests / targets as f64,
                ));
            }
            figures.extend([
                ("HealthyHostCount", Unit::Count, now.healthy_hosts as f64),
                (
                    "UnHealthyHostCount",
                    Unit::Count,
                    now.unhealthy_hosts as f64,
                ),
            ]);
        }
    }
    figures
        .into_iter()
        .map(|(metric, unit, value)| Datum {
            key: MetricKey::new(
                name.namespace,
                metric,
                &[(name.dimension, name.value.as_str())],
            ),
            unit,
            timestamp_ms,
            high_resolution: false,
            aggregate: Aggregate::of_value(value, 1.0),
        })
        .collect()
}

/// The embedded data plane's figures, published each CloudWatch minute.
pub struct LoadBalancerMetrics {
    elbv2: Arc<Elbv2>,
    metrics: Arc<Metrics>,
    /// Each series' totals at the previous minute; bounded by the series
    /// the data plane keeps, which follow the configuration.
    previous: Mutex<HashMap<(Dimension, String), Running>>,
}

impl LoadBalancerMetrics {
    pub fn new(elbv2: Arc<Elbv2>, metrics: Arc<Metrics>) -> Self {
        LoadBalancerMetrics {
            elbv2,
            metrics,
            previous: Mutex::default(),
        }
    }
}

impl MinuteSource for LoadBalancerMetrics {
    fn minute_datums(&self, timestamp_ms: i64) -> Vec<Datum> {
        let names = match State::read(self.elbv2.store().as_ref()) {
            Ok(state) => cloudwatch_names(&state),
            Err(error) => {
                tracing::warn!(
                    ?error,
                    "load balancer metrics not published: records unreadable"
                );
                return Vec::new();
            }
        };
        let running = self.metrics.running();
        let mut previous = self
            .previous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut datums = Vec::new();
        let mut next = HashMap::with_capacity(running.len());
        for (dimension, series, now) in running {
            let key = (dimension, series);
            // The data plane's totals start at zero when it makes a series:
            // one seen for the first time counts everything it has.
            let before = previous.get(&key).copied().unwrap_or_default();
            if let Some(name) = names.get(&key) {
                datums.extend(minute_datums(name, dimension, &before, &now, timestamp_ms));
            }
            next.insert(key, now);
        }
        *previous = next;
        datums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> CloudWatchName {
        CloudWatchName {
            namespace: APPLICATION,
            dimension: "TargetGroup",
            value: "targetgroup/web/0123456789abcdef".into(),
        }
    }

    fn figure(datums: &[Datum], metric: &str) -> Option<f64> {
        datums
            .iter()
            .find(|datum| datum.key.name == metric)
            .map(|datum| datum.aggregate.sum)
    }

    #[test]
    fn a_minute_is_what_the_totals_moved() {
        let before = Running {
            request_count: 100,
            target_2xx: 90,
            target_5xx: 10,
            target_responses: 100,
            target_response_time_us_sum: 1_000_000,
            ..Running::default()
        };
        let now = Running {
            request_count: 160,
            target_2xx: 150,
            target_5xx: 10,
            target_responses: 160,
            target_response_time_us_sum: 1_600_000,
            healthy_hosts: 3,
            unhealthy_hosts: 1,
            ..Running::default()
        };
        let datums = minute_datums(&group(), Dimension::TargetGroup, &before, &now, 60_000);
        assert_eq!(figure(&datums, "RequestCount"), Some(60.0));
        assert_eq!(figure(&datums, "RequestCountPerTarget"), Some(20.0));
        assert_eq!(figure(&datums, "HTTPCode_Target_5XX_Count"), Some(0.0));
        assert_eq!(figure(&datums, "HealthyHostCount"), Some(3.0));
        assert_eq!(figure(&datums, "TargetResponseTime"), Some(0.01));
        assert!(datums.iter().all(|datum| datum.key
            == MetricKey::new(
                APPLICATION,
                &datum.key.name,
                &[("TargetGroup", "targetgroup/web/0123456789abcdef")]
            )));
    }

    #[test]
    fn no_targets_no_per_target_figure_and_no_time_without_responses() {
        let now = Running {
            request_count: 5,
            ..Running::default()
        };
        let datums = minute_datums(
            &group(),
            Dimension::TargetGroup,
            &Running::default(),
            &now,
            0,
        );
        assert_eq!(figure(&datums, "RequestCount"), Some(5.0));
        assert_eq!(figure(&datums, "RequestCountPerTarget"), None);
        assert_eq!(figure(&datums, "TargetResponseTime"), None);
    }
}
