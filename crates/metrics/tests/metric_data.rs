//! GetMetricData through the public interface.
#![allow(clippy::unwrap_used)]

use flotilla_metrics::metric_data::{
    get_metric_data, GetMetricDataInput, MetricDataQuery, MetricStat, ScanBy, StatusCode,
};
use flotilla_metrics::put::{check_put_metric_data, MetricDatumInput, PutMetricDataInput};
use flotilla_metrics::store::{MetricStore, StoreLimits};
use flotilla_metrics::time::MINUTE_MS;
use flotilla_metrics::Dimension;

const T0: i64 = 1_717_200_000_000;

fn store() -> MetricStore {
    let mut store = MetricStore::in_memory(StoreLimits::default());
    for (service, base) in [("web", 10.0), ("api", 100.0)] {
        let data = (0..10)
            .map(|minute| MetricDatumInput {
                metric_name: "Requests".into(),
                dimensions: vec![Dimension::new("Service", service)],
                timestamp_ms: Some(T0 + minute * MINUTE_MS),
                value: Some(base + minute as f64),
                ..Default::default()
            })
            .collect();
        let request = PutMetricDataInput {
            namespace: "App".into(),
            metric_data: data,
        };
        store
            .put(
                &check_put_metric_data(&request, T0 + 10 * MINUTE_MS, false).unwrap(),
                T0,
            )
            .unwrap();
    }
    store
}

fn metric(id: &str, service: &str) -> MetricDataQuery {
    MetricDataQuery {
        id: id.into(),
        metric_stat: Some(MetricStat {
            namespace: "App".into(),
            metric_name: "Requests".into(),
            dimensions: vec![Dimension::new("Service", service)],
            period_s: 60,
            stat: "Sum".into(),
            unit: None,
        }),
        return_data: Some(false),
        ..Default::default()
    }
}

fn expression(id: &str, text: &str) -> MetricDataQuery {
    MetricDataQuery {
        id: id.into(),
        expression: Some(text.into()),
        ..Default::default()
    }
}

fn input(queries: Vec<MetricDataQuery>) -> GetMetricDataInput {
    GetMetricDataInput {
        queries,
        start_time_ms: T0,
        end_time_ms: T0 + 10 * MINUTE_MS,
        ..Default::default()
    }
}

#[test]
fn expressions_over_metric_ids() {
    let store = store();
    let output = get_metric_data(
        &store,
        &input(vec![
            metric("m1", "web"),
            metric("m2", "api"),
            expression("e1", "(m1 + m2) / 2"),
        ]),
        T0 + 11 * MINUTE_MS,
    )
    .unwrap();
    assert_eq!(output.results.len(), 1);
    let result = &output.results[0];
    assert_eq!(result.id, "e1");
    assert_eq!(result.status_code, StatusCode::Complete);
    // Newest first by default.
    assert_eq!(result.timestamps_ms[0], T0 + 9 * MINUTE_MS);
    assert_eq!(result.values[0], (19.0 + 109.0) / 2.0);
    assert_eq!(result.values.len(), 10);
}

#[test]
fn pages_by_max_datapoints_in_ascending_order() {
    let store = store();
    let mut request = input(vec![
        metric("m1", "web"),
        metric("m2", "api"),
        expression("total", "SUM(METRICS())"),
    ]);
    request.queries[0].return_data = None;
    request.scan_by = ScanBy::TimestampAscending;
    request.max_datapoints = Some(6);
    let mut seen: Vec<(String, i64, f64)> = Vec::new();
    let mut pages = 0;
    loop {
        let output = get_metric_data(&store, &request, T0 + 11 * MINUTE_MS).unwrap();
        pages += 1;
        let page_points: usize = output.results.iter().map(|r| r.values.len()).sum();
        assert!(page_points <= 6);
        for result in &output.results {
            for (t, v) in result.timestamps_ms.iter().zip(&result.values) {
                seen.push((result.id.clone(), *t, *v));
            }
        }
        match output.next_token {
            Some(token) => request.next_token = Some(token),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), 20);
    assert_eq!(seen[0], ("m1".to_string(), T0, 10.0));
    assert_eq!(seen[10], ("total".to_string(), T0, 110.0));
    request.next_token = Some("0".repeat(32));
    assert_eq!(
        get_metric_data(&store, &request, T0)
            .unwrap_err()
            .code
            .as_str(),
        "InvalidNextToken"
    );
}

#[test]
fn search_finds_metrics_by_schema_and_name() {
    let store = store();
    let output = get_metric_data(
        &store,
        &input(vec![expression(
            "s",
            "SEARCH('{App,Service} MetricName=\"Requests\"', 'Maximum', 300)",
        )]),
        T0 + 11 * MINUTE_MS,
    )
    .unwrap();
    assert_eq!(output.results.len(), 2);
    let labels: Vec<&str> = output.results.iter().map(|r| r.label.as_str()).collect();
    assert!(
        labels.contains(&"Requests web") && labels.contains(&"Requests api"),
        "{labels:?}"
    );
    assert!(output.results.iter().all(|r| r.values.len() == 2));
}

#[test]
fn bad_queries_are_refused_with_their_reason() {
    let store = store();
    let cases = vec![
        (vec![metric("m1", "web"), expression("e1", "m1 + m3")], "Error in expression e1: Unrecognized metric or expression id m3"),
        (vec![expression("e1", "e2 * 2"), expression("e2", "e1 + 1")], "Error in expression e1: Circular dependency between expressions"),
        (vec![metric("m1", "web"), expression("e1", "m1 +")], "Error in expression e1 [m1 +]: Unexpected end of the expression at position 5"),
        (vec![metric("M1", "web")], "The value M1 for parameter MetricDataQueries.member.1.Id is invalid. Ids start with a lowercase letter and contain only letters, numbers and underscores."),
        (vec![metric("m1", "web"), expression("e1", "SUM(m1)")], "Error in expression e1: The expression must return a time series or an array of time series, not a single number"),
    ];
    for (queries, message) in cases {
        let error = get_metric_data(&store, &input(queries), T0 + 11 * MINUTE_MS).unwrap_err();
        assert_eq!(error.code.as_str(), "ValidationError");
        assert_eq!(error.message, message);
    }
    let mut bad_stat = metric("m1", "web");
    bad_stat.metric_stat.as_mut().unwrap().stat = "Avg".into();
    assert_eq!(
        get_metric_data(&store, &input(vec![bad_stat]), T0).unwrap_err().message,
        "The value Avg for parameter MetricDataQueries.member.1.MetricStat.Stat is not a valid statistic."
    );
}
