//! Request counters and latency, rendered in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds, in seconds, of the latency histogram's buckets.
const LATENCY_BUCKETS_SECONDS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum_seconds: f64,
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
}

/// Counts per (service, operation, outcome code).
#[derive(Default)]
pub struct Metrics {
    /// Keyed by labels from closed sets (services, their operations, error
    /// codes written in the code), so callers cannot grow it.
    series: Mutex<BTreeMap<(&'static str, &'static str, &'static str), Series>>,
}

impl Metrics {
    pub fn record(
        &self,
        service: &'static str,
        operation: &'static str,
        code: &'static str,
        elapsed: Duration,
    ) {
        let seconds = elapsed.as_secs_f64();
        let mut series = self
            .series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = series.entry((service, operation, code)).or_default();
        entry.count += 1;
        entry.sum_seconds += seconds;
        for (bucket, bound) in entry.buckets.iter_mut().zip(LATENCY_BUCKETS_SECONDS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// The Prometheus exposition of every series, plus `extra` gauges.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let series = self
            .series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = writeln!(
            out,
            "# HELP flotilla_api_requests_total API requests by service, operation and outcome."
        );
        let _ = writeln!(out, "# TYPE flotilla_api_requests_total counter");
        for ((service, operation, code), s) in series.iter() {
            let _ = writeln!(
                out,
                "flotilla_api_requests_total{{service=\"{service}\",operation=\"{operation}\",code=\"{code}\"}} {}",
                s.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP flotilla_api_request_duration_seconds API request latency."
        );
        let _ = writeln!(
            out,
            "# TYPE flotilla_api_request_duration_seconds histogram"
        );
        for ((service, operation, code), s) in series.iter() {
            let labels = format!("service=\"{service}\",operation=\"{operation}\",code=\"{code}\"");
            for (bound, count) in LATENCY_BUCKETS_SECONDS.iter().zip(s.buckets) {
                let _ = writeln!(out, "flotilla_api_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(
                out,
                "flotilla_api_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "flotilla_api_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "flotilla_api_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        for (name, help, value) in extra {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
