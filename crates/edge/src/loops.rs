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

/// `/health`: whether this replica is ready (no loop keeps failing, and
/// it reaches its store), which elected loops it leads, and the failing
/// loops with their restarts and the cause of their last panic. 503 while
/// it is not ready, so that a load balancer sends requests elsewhere.
pub(crate) fn health(
    reports: &[LoopReport],
    election: &dyn flotilla_store::Election,
) -> (StatusCode, String) {
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
    let elected: Vec<&'static str> = reports
        .iter()
        .filter(|report| report.elected)
        .map(|report| report.name)
        .collect();
    let leads = flotilla_store::election::roles_led(&elected, election);
    let reachable = election.reachable();
    let status = match (failing.is_empty(), reachable) {
        (true, true) => "ok",
        (false, _) => "failing",
        (true, false) => "storeUnreachable",
    };
    let mut body = json!({
        "status": status,
        "replica": election.replica_id(),
        "storeReachable": reachable,
        "leads": leads,
    });
    if !failing.is_empty() {
        body["failingLoops"] = json!(failing);
    }
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body.to_string())
}

/// Adds the live replicas and each role's leader, as the store shows them,
/// to a `/health` body.
pub(crate) fn with_replicas(body: String, store: &dyn flotilla_store::Store) -> String {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&body) else {
        return body;
    };
    let as_object = |pairs: Vec<(String, String)>| {
        pairs
            .into_iter()
            .map(|(name, value)| (name, serde_json::Value::String(value)))
            .collect::<serde_json::Map<_, _>>()
    };
    if let Ok(replicas) = flotilla_store::election::replicas(store) {
        value["replicas"] = serde_json::Value::Object(as_object(replicas));
    }
    if let Ok(leaders) = flotilla_store::election::leaders(store) {
        value["leaders"] = serde_json::Value::Object(as_object(leaders));
    }
    value.to_string()
}
