//! The supervised background loops on `/metrics` and `/health`: restarts
//! after a panic as a counter, a loop that keeps failing as a gauge, and
//! `/health` answering 503 and naming the loops while any keeps failing.

use std::fmt::Write as _;

use axum::http::StatusCode;
use flotilla_control::LoopReport;
use serde_json::json;

/// The loops' series in Prometheus' text format. Loop names are fixed by the
/// code, so the label set is closed.
pub(crate) fn render_metrics(reports: &[LoopReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP flotilla_supervised_loop_restarts_total Restarts of a supervised background loop after a panic."
    );
    let _ = writeln!(
        out,
        "# TYPE flotilla_supervised_loop_restarts_total counter"
    );
    for report in reports {
        let _ = writeln!(
            out,
            "flotilla_supervised_loop_restarts_total{{loop=\"{}\"}} {}",
            report.name, report.restarts_total
        );
    }
    let _ = writeln!(
        out,
        "# HELP flotilla_supervised_loop_failing Whether a supervised loop keeps failing (1) or not (0)."
    );
    let _ = writeln!(out, "# TYPE flotilla_supervised_loop_failing gauge");
    for report in reports {
        let _ = writeln!(
            out,
            "flotilla_supervised_loop_failing{{loop=\"{}\"}} {}",
            report.name,
            u8::from(report.failing)
        );
    }
    out
}

/// `/health`: `{"status":"ok"}` while no loop keeps failing; otherwise 503
/// with the failing loops, their restarts and the cause of their last panic.
pub(crate) fn health(reports: &[LoopReport]) -> (StatusCode, String) {
    let failing: Vec<_> = reports
        .iter()
        .filter(|report| report.failing)
        .map(|report| {
            json!({
                "name": report.name,
                "restarts": report.restarts_total,
                "consecutiveFailures": report.consecutive_failures,
                "lastPanic": report.last_panic,
            })
        })
        .collect();
    if failing.is_empty() {
        return (StatusCode::OK, "{\"status\":\"ok\"}".to_owned());
    }
    let body = json!({"status": "failing", "failingLoops": failing});
    (StatusCode::SERVICE_UNAVAILABLE, body.to_string())
}

#[cfg(test)]
mod tests;
