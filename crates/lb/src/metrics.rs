//! CloudWatch's load balancer metrics, kept per load balancer and per target
//! group: cumulative counters the hot path bumps with relaxed atomics (it
//! holds its own `Arc`s, so it never looks anything up), and per-minute
//! samples in a bounded ring the embedding process reads. Rendered in
//! Prometheus' text format for `/metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Minutes of samples kept per load balancer and target group.
pub const MINUTES_KEPT: usize = 60;

/// One load balancer's or target group's running totals.
#[derive(Debug, Default)]
pub struct Counters {
    pub request_count: AtomicU64,
    pub target_2xx: AtomicU64,
    pub target_3xx: AtomicU64,
    pub target_4xx: AtomicU64,
    pub target_5xx: AtomicU64,
    pub elb_4xx: AtomicU64,
    pub elb_5xx: AtomicU64,
    /// Sum of target response times, microseconds, and how many.
    pub target_response_time_us_sum: AtomicU64,
    pub target_responses: AtomicU64,
    pub new_connections: AtomicU64,
    pub active_connections: AtomicI64,
    pub processed_bytes: AtomicU64,
    /// Target groups only: targets in service and out of it, as last counted.
    pub healthy_hosts: AtomicU64,
    pub unhealthy_hosts: AtomicU64,
}

impl Counters {
    pub fn target_response(&self, status: u16, elapsed_us: u64) {
        let counter = match status {
            200..=299 => &self.target_2xx,
            300..=399 => &self.target_3xx,
            400..=499 => &self.target_4xx,
            _ => &self.target_5xx,
        };
        counter.fetch_add(1, Relaxed);
        self.target_response_time_us_sum
            .fetch_add(elapsed_us, Relaxed);
        self.target_responses.fetch_add(1, Relaxed);
    }

    pub fn elb_response(&self, status: u16) {
        match status {
            400..=499 => self.elb_4xx.fetch_add(1, Relaxed),
            500..=599 => self.elb_5xx.fetch_add(1, Relaxed),
            _ => 0,
        };
    }

    fn totals(&self) -> Totals {
        Totals {
            request_count: self.request_count.load(Relaxed),
            target_2xx: self.target_2xx.load(Relaxed),
            target_3xx: self.target_3xx.load(Relaxed),
            target_4xx: self.target_4xx.load(Relaxed),
            target_5xx: self.target_5xx.load(Relaxed),
            elb_4xx: self.elb_4xx.load(Relaxed),
            elb_5xx: self.elb_5xx.load(Relaxed),
            target_response_time_us_sum: self.target_response_time_us_sum.load(Relaxed),
            target_responses: self.target_responses.load(Relaxed),
            new_connections: self.new_connections.load(Relaxed),
            processed_bytes: self.processed_bytes.load(Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    request_count: u64,
    target_2xx: u64,
    target_3xx: u64,
    target_4xx: u64,
    target_5xx: u64,
    elb_4xx: u64,
    elb_5xx: u64,
    target_response_time_us_sum: u64,
    target_responses: u64,
    new_connections: u64,
    processed_bytes: u64,
}

/// One load balancer's or target group's running totals and gauges now, for
/// a reader that keeps intervals of its own (CloudWatch's minutes, which
/// tests run on a faster clock than the data plane's).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Running {
    pub request_count: u64,
    pub target_2xx: u64,
    pub target_3xx: u64,
    pub target_4xx: u64,
    pub target_5xx: u64,
    pub elb_4xx: u64,
    pub elb_5xx: u64,
    pub target_response_time_us_sum: u64,
    pub target_responses: u64,
    pub new_connections: u64,
    pub processed_bytes: u64,
    pub active_connections: u64,
    pub healthy_hosts: u64,
    pub unhealthy_hosts: u64,
}

/// One minute of one load balancer or target group, in CloudWatch's names.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MinuteSample {
    /// Start of the minute, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub request_count: u64,
    /// Target groups: requests over healthy targets (all targets when none is).
    pub request_count_per_target: f64,
    /// Average seconds from sending a request to a target to its response headers.
    pub target_response_time: f64,
    #[serde(rename = "HTTPCode_Target_2XX_Count")]
    pub target_2xx: u64,
    #[serde(rename = "HTTPCode_Target_3XX_Count")]
    pub target_3xx: u64,
    #[serde(rename = "HTTPCode_Target_4XX_Count")]
    pub target_4xx: u64,
    #[serde(rename = "HTTPCode_Target_5XX_Count")]
    pub target_5xx: u64,
    #[serde(rename = "HTTPCode_ELB_4XX_Count")]
    pub elb_4xx: u64,
    #[serde(rename = "HTTPCode_ELB_5XX_Count")]
    pub elb_5xx: u64,
    pub healthy_host_count: u64,
    pub un_healthy_host_count: u64,
    pub active_connection_count: u64,
    pub new_connection_count: u64,
    pub processed_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Dimension {
    LoadBalancer,
    TargetGroup,
}

struct Series {
    counters: Arc<Counters>,
    last: Totals,
    minutes: VecDeque<MinuteSample>,
}

/// Every load balancer's and target group's counters and minutes.
#[derive(Default)]
pub struct Metrics {
    // Touched only by the configuration writer, the minute roll and readers;
    // the hot path holds `Arc<Counters>` and never takes this lock.
    series: Mutex<BTreeMap<(Dimension, String), Series>>,
}

impl Metrics {
    /// The counters of a load balancer or target group, made on first use.
    pub fn counters(&self, dimension: Dimension, name: &str) -> Arc<Counters> {
        let mut series = self.lock();
        let entry = series
            .entry((dimension, name.to_owned()))
            .or_insert_with(|| Series {
                counters: Arc::default(),
                last: Totals::default(),
                minutes: VecDeque::new(),
            });
        Arc::clone(&entry.counters)
    }

    /// Forgets everything not in `keep` (a snapshot removed it), so the
    /// series stay bounded by what the configuration holds.
    pub fn retain(&self, keep: &std::collections::HashSet<(Dimension, String)>) {
        self.lock().retain(|key, _| keep.contains(key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Dimension, String), Series>> {
        self.series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes the minute that started at `minute_start_ms`.
    pub fn roll_minute(&self, minute_start_ms: u64) {
        for series in self.lock().values_mut() {
            let now = series.counters.totals();
            let before = series.last;
            series.last = now;
            let requests = now.request_count - before.request_count;
            let responses = now.target_responses - before.target_responses;
            let healthy = series.counters.healthy_hosts.load(Relaxed);
            let unhealthy = series.counters.unhealthy_hosts.load(Relaxed);
            let per_target_divisor = if healthy > 0 {
                healthy
            } else {
                healthy + unhealthy
            };
            let sample = MinuteSample {
                timestamp_ms: minute_start_ms,
                request_count: requests,
                request_count_per_target: if per_target_divisor == 0 {
                    0.0
                } else {
                    requests as f64 / per_target_divisor as f64
                },
                target_response_time: if responses == 0 {
                    0.0
                } else {
                    (now.target_response_time_us_sum - before.target_response_time_us_sum) as f64
                        / responses as f64
                        / 1e6
                },
                target_2xx: now.target_2xx - before.target_2xx,
                target_3xx: now.target_3xx - before.target_3xx,
                target_4xx: now.target_4xx - before.target_4xx,
                target_5xx: now.target_5xx - before.target_5xx,
                elb_4xx: now.elb_4xx - before.elb_4xx,
                elb_5xx: now.elb_5xx - before.elb_5xx,
                healthy_host_count: healthy,
                un_healthy_host_count: unhealthy,
                active_connection_count: series.counters.active_connections.load(Relaxed).max(0)
                    as u64,
                new_connection_count: now.new_connections - before.new_connections,
                processed_bytes: now.processed_bytes - before.processed_bytes,
            };
            if series.minutes.len() == MINUTES_KEPT {
                series.minutes.pop_front();
            }
            series.minutes.push_back(sample);
        }
    }

    /// Every load balancer's and target group's running totals now.
    pub fn running(&self) -> Vec<(Dimension, String, Running)> {
        self.lock()
            .iter()
            .map(|((dimension, name), series)| {
                let totals = series.counters.totals();
                let counters = &series.counters;
                let running = Running {
                    request_count: totals.request_count,
                    target_2xx: totals.target_2xx,
                    target_3xx: totals.target_3xx,
                    target_4xx: totals.target_4xx,
                    target_5xx: totals.target_5xx,
                    elb_4xx: totals.elb_4xx,
                    elb_5xx: totals.elb_5xx,
                    target_response_time_us_sum: totals.target_response_time_us_sum,
                    target_responses: totals.target_responses,
                    new_connections: totals.new_connections,
                    processed_bytes: totals.processed_bytes,
                    active_connections: counters.active_connections.load(Relaxed).max(0) as u64,
                    healthy_hosts: counters.healthy_hosts.load(Relaxed),
                    unhealthy_hosts: counters.unhealthy_hosts.load(Relaxed),
                };
                (*dimension, name.clone(), running)
            })
            .collect()
    }

    /// The minutes kept for one load balancer or target group, oldest first.
    pub fn minutes(&self, dimension: Dimension, name: &str) -> Vec<MinuteSample> {
        self.lock()
            .get(&(dimension, name.to_owned()))
            .map(|series| series.minutes.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Prometheus' text exposition format of the running totals.
    pub fn render_prometheus(&self) -> String {
        let series = self.lock();
        let mut out = String::new();
        let families: [Family; 14] = [
            (
                "request_count_total",
                "counter",
                "Requests received (RequestCount)",
                |c| c.request_count.load(Relaxed),
            ),
            (
                "httpcode_target_2xx_total",
                "counter",
                "2XX answers from targets",
                |c| c.target_2xx.load(Relaxed),
            ),
            (
                "httpcode_target_3xx_total",
                "counter",
                "3XX answers from targets",
                |c| c.target_3xx.load(Relaxed),
            ),
            (
                "httpcode_target_4xx_total",
                "counter",
                "4XX answers from targets",
                |c| c.target_4xx.load(Relaxed),
            ),
            (
                "httpcode_target_5xx_total",
                "counter",
                "5XX answers from targets",
                |c| c.target_5xx.load(Relaxed),
            ),
            (
                "httpcode_elb_4xx_total",
                "counter",
                "4XX answers the load balancer made",
                |c| c.elb_4xx.load(Relaxed),
            ),
            (
                "httpcode_elb_5xx_total",
                "counter",
                "5XX answers the load balancer made",
                |c| c.elb_5xx.load(Relaxed),
            ),
            (
                "target_response_time_microseconds_sum",
                "counter",
                "Total time targets took to answer",
                |c| c.target_response_time_us_sum.load(Relaxed),
            ),
            (
                "target_response_time_microseconds_count",
                "counter",
                "Target answers timed",
                |c| c.target_responses.load(Relaxed),
            ),
            (
                "new_connection_count_total",
                "counter",
                "Client connections accepted",
                |c| c.new_connections.load(Relaxed),
            ),
            (
                "active_connection_count",
                "gauge",
                "Client connections open",
                |c| c.active_connections.load(Relaxed).max(0) as u64,
            ),
            (
                "processed_bytes_total",
                "counter",
                "Bytes received from and sent to clients",
                |c| c.processed_bytes.load(Relaxed),
            ),
            ("healthy_host_count", "gauge", "Targets in service", |c| {
                c.healthy_hosts.load(Relaxed)
            }),
            (
                "unhealthy_host_count",
                "gauge",
                "Targets out of service",
                |c| c.unhealthy_hosts.load(Relaxed),
            ),
        ];
        for (name, kind, help, read) in families {
            let _ = writeln!(out, "# HELP flotilla_lb_{name} {help}");
            let _ = writeln!(out, "# TYPE flotilla_lb_{name} {kind}");
            for ((dimension, entity), series) in series.iter() {
                let label = match dimension {
                    Dimension::LoadBalancer => "load_balancer",
                    Dimension::TargetGroup => "target_group",
                };
                let _ = writeln!(
                    out,
                    "flotilla_lb_{name}{{{label}=\"{}\"}} {}",
                    escape_label(entity),
                    read(&series.counters)
                );
            }
        }
        let _ = writeln!(out, "# HELP flotilla_lb_request_count_per_target Requests per target in the last complete minute");
        let _ = writeln!(out, "# TYPE flotilla_lb_request_count_per_target gauge");
        for ((dimension, entity), series) in series.iter() {
            if *dimension != Dimension::TargetGroup {
                continue;
            }
            let value = series
                .minutes
                .back()
                .map_or(0.0, |m| m.request_count_per_target);
            let _ = writeln!(
                out,
                "flotilla_lb_request_count_per_target{{target_group=\"{}\"}} {value}",
                escape_label(entity)
            );
        }
        out
    }
}

/// A metric's name, type, help text and how to read it from the counters.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Counters) -> u64,
);

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_hold_deltas_and_stay_bounded() {
        let metrics = Metrics::default();
        let group = metrics.counters(Dimension::TargetGroup, "tg");
        group.healthy_hosts.store(2, Relaxed);
        for minute in 0..(MINUTES_KEPT as u64 + 5) {
            group.request_count.fetch_add(10, Relaxed);
            group.target_response(200, 2_000);
            group.target_response(503, 4_000);
            metrics.roll_minute(minute * 60_000);
        }
        let minutes = metrics.minutes(Dimension::TargetGroup, "tg");
        assert_eq!(minutes.len(), MINUTES_KEPT);
        let last = minutes.last().expect("a minute");
        assert_eq!(last.request_count, 10);
        assert_eq!(last.request_count_per_target, 5.0);
        assert_eq!(last.target_2xx, 1);
        assert_eq!(last.target_5xx, 1);
        assert!((last.target_response_time - 0.003).abs() < 1e-9);
        assert_eq!(minutes[0].timestamp_ms, 5 * 60_000);
        let text = metrics.render_prometheus();
        assert!(
            text.contains("flotilla_lb_request_count_total{target_group=\"tg\"} 650"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_lb_request_count_per_target{target_group=\"tg\"} 5"),
            "{text}"
        );
    }

    #[test]
    fn removed_series_are_forgotten() {
        let metrics = Metrics::default();
        metrics.counters(Dimension::LoadBalancer, "a");
        metrics.counters(Dimension::LoadBalancer, "b\"x");
        assert!(metrics
            .render_prometheus()
            .contains("load_balancer=\"b\\\"x\""));
        metrics.retain(
            &[(Dimension::LoadBalancer, "a".to_owned())]
                .into_iter()
                .collect(),
        );
        assert!(!metrics.render_prometheus().contains("b\\\"x"));
    }
}
