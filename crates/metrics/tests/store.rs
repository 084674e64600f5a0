//! The store through its public interface: ingest, GetMetricStatistics,
//! ListMetrics, durability across a reopen, checkpoints and rollups.
#![allow(clippy::unwrap_used)]

use flotilla_metrics::put::{check_put_metric_data, MetricDatumInput, PutMetricDataInput};
use flotilla_metrics::query::{
    get_metric_statistics, list_metrics, GetMetricStatisticsInput, ListMetricsInput,
};
use flotilla_metrics::store::{Durability, MetricStore, StoreLimits};
use flotilla_metrics::time::{from_civil, DAY_MS, HOUR_MS, MINUTE_MS};
use flotilla_metrics::{Dimension, DimensionFilter};

const T0: i64 = 1_717_200_000_000; // 2024-06-01T00:00:00Z

fn datum(name: &str, service: &str, value: f64, at_ms: i64) -> MetricDatumInput {
    MetricDatumInput {
        metric_name: name.into(),
        dimensions: vec![
            Dimension::new("ServiceName", service),
            Dimension::new("ClusterName", "prod"),
        ],
        timestamp_ms: Some(at_ms),
        value: Some(value),
        unit: Some("Percent".into()),
        ..Default::default()
    }
}

fn put(store: &mut MetricStore, data: Vec<MetricDatumInput>, now_ms: i64) {
    let request = PutMetricDataInput {
        namespace: "App".into(),
        metric_data: data,
    };
    let datums = check_put_metric_data(&request, now_ms, false).unwrap();
    store.put(&datums, now_ms).unwrap();
}

fn stats(
    store: &MetricStore,
    start: i64,
    end: i64,
    period: i64,
    now: i64,
    extended: &[&str],
) -> Vec<flotilla_metrics::query::Datapoint> {
    let input = GetMetricStatisticsInput {
        namespace: "App".into(),
        metric_name: "CPU".into(),
        dimensions: vec![
            Dimension::new("ClusterName", "prod"),
            Dimension::new("ServiceName", "web"),
        ],
        start_time_ms: start,
        end_time_ms: end,
        period_s: period,
        statistics: if extended.is_empty() {
            vec!["Average".into(), "SampleCount".into(), "Maximum".into()]
        } else {
            vec![]
        },
        extended_statistics: extended.iter().map(|s| s.to_string()).collect(),
        unit: None,
    };
    let mut points = get_metric_statistics(store, &input, now)
        .unwrap()
        .datapoints;
    points.sort_by_key(|p| p.timestamp_ms);
    points
}

#[test]
fn statistics_over_periods_and_percentiles() {
    let mut store = MetricStore::in_memory(StoreLimits::default());
    // 10 minutes, 6 samples a minute: value = minute index.
    for minute in 0..10 {
        let data = (0..6)
            .map(|s| {
                datum(
                    "CPU",
                    "web",
                    minute as f64 * 10.0 + s as f64,
                    T0 + minute * MINUTE_MS + s * 10_000,
                )
            })
            .collect();
        put(&mut store, data, T0 + 10 * MINUTE_MS);
    }
    let now = T0 + 11 * MINUTE_MS;
    let points = stats(&store, T0 + 25_000, T0 + 10 * MINUTE_MS, 300, now, &[]);
    // StartTime rounds down to the minute: periods start at T0 and T0+5m.
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].timestamp_ms, T0);
    assert_eq!(points[0].sample_count, Some(30.0));
    assert_eq!(points[0].average, Some(22.5));
    assert_eq!(points[1].maximum, Some(95.0));
    assert_eq!(points[0].sum, None, "only the statistics asked for");
    let percentiles = stats(
        &store,
        T0,
        T0 + 10 * MINUTE_MS,
        600,
        now,
        &["p50", "p99", "p0.0", "p100"],
    );
    let p = &percentiles[0].extended_statistics;
    // 60 values 0..5, 10..15, …, 90..95: the rank-29.5 value is 45.
    assert!((p["p50"] - 45.0).abs() / 45.0 <= 0.011, "{p:?}");
    assert_eq!(p["p0.0"], 0.0);
    assert_eq!(p["p100"], 95.0);
    assert!((p["p99"] - 95.0).abs() / 95.0 <= 0.011);
}

#[test]
fn too_many_datapoints_and_bad_periods_are_refused() {
    let store = MetricStore::in_memory(StoreLimits::default());
    let mut input = GetMetricStatisticsInput {
        namespace: "App".into(),
        metric_name: "CPU".into(),
        start_time_ms: T0,
        end_time_ms: T0 + 2 * DAY_MS,
        period_s: 60,
        statistics: vec!["Average".into()],
        ..Default::default()
    };
    let error = get_metric_statistics(&store, &input, T0 + 2 * DAY_MS).unwrap_err();
    assert_eq!(error.code.as_str(), "InvalidParameterCombination");
    assert_eq!(error.message, "You have requested up to 2,880 datapoints, which exceeds the limit of 1,440. You may reduce the datapoints requested by increasing Period, or decreasing the time range.");
    input.period_s = 90;
    assert_eq!(
        get_metric_statistics(&store, &input, T0)
            .unwrap_err()
            .message,
        "The parameter Period must be 1, 5, 10, 20, 30, or a multiple of 60."
    );
    input.period_s = 120;
    input.statistics = vec!["Mean".into()];
    assert_eq!(
        get_metric_statistics(&store, &input, T0)
            .unwrap_err()
            .message,
        "The value Mean for parameter Statistics.member.1 is invalid."
    );
    input.statistics = vec!["Average".into()];
    input.start_time_ms = input.end_time_ms;
    assert_eq!(
        get_metric_statistics(&store, &input, T0)
            .unwrap_err()
            .message,
        "The parameter StartTime must be less than the parameter EndTime."
    );
}

#[test]
fn high_resolution_points_answer_ten_second_periods() {
    let mut store = MetricStore::in_memory(StoreLimits::default());
    let data = (0..60)
        .map(|s| MetricDatumInput {
            storage_resolution: Some(1),
            ..datum("CPU", "web", s as f64, T0 + s * 1_000)
        })
        .collect();
    put(&mut store, data, T0 + MINUTE_MS);
    let points = stats(&store, T0 + 3_000, T0 + MINUTE_MS, 10, T0 + MINUTE_MS, &[]);
    assert_eq!(points.len(), 6);
    assert_eq!(points[0].timestamp_ms, T0);
    assert_eq!(points[0].average, Some(4.5));
    // A minute-resolution query of the same data.
    let minute = stats(&store, T0, T0 + MINUTE_MS, 60, T0 + MINUTE_MS, &[]);
    assert_eq!(minute[0].sample_count, Some(60.0));
}

#[test]
fn list_metrics_filters_and_pages() {
    let mut store = MetricStore::in_memory(StoreLimits::default());
    for chunk in (0..1_200).collect::<Vec<_>>().chunks(600) {
        let data = chunk
            .iter()
            .map(|i| datum("CPU", &format!("svc-{i:04}"), 1.0, T0))
            .collect();
        put(&mut store, data, T0);
    }
    put(
        &mut store,
        vec![datum("Memory", "svc-0001", 1.0, T0 - 4 * HOUR_MS)],
        T0,
    );
    let mut input = ListMetricsInput {
        namespace: Some("App".into()),
        ..Default::default()
    };
    let mut seen = 0;
    loop {
        let page = list_metrics(&store, &input, T0).unwrap();
        seen += page.metrics.len();
        assert!(page.metrics.len() <= 500);
        match page.next_token {
            Some(token) => input.next_token = Some(token),
            None => break,
        }
    }
    assert_eq!(seen, 1_201);
    let filtered = list_metrics(
        &store,
        &ListMetricsInput {
            dimensions: vec![DimensionFilter {
                name: "ServiceName".into(),
                value: Some("svc-0001".into()),
            }],
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert_eq!(filtered.metrics.len(), 2);
    let recent = list_metrics(
        &store,
        &ListMetricsInput {
            metric_name: Some("Memory".into()),
            recently_active: Some("PT3H".into()),
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert!(recent.metrics.is_empty());
    let bad = list_metrics(
        &store,
        &ListMetricsInput {
            next_token: Some("zz".into()),
            ..Default::default()
        },
        T0,
    )
    .unwrap_err();
    assert_eq!(bad.code.as_str(), "InvalidNextToken");
}

#[test]
fn acknowledged_data_survives_a_reopen_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let start = from_civil(2024, 6, 1, 0, 0, 0);
    {
        let mut store = MetricStore::open(
            dir.path(),
            Durability::EveryPut,
            StoreLimits::default(),
            start,
        )
        .unwrap();
        for minute in 0..180 {
            let now = start + minute * MINUTE_MS;
            put(&mut store, vec![datum("CPU", "web", 50.0, now)], now);
            store.tick(now).unwrap();
        }
        // Dropped without a clean shutdown: as a kill -9 after the last ack.
    }
    let now = start + 180 * MINUTE_MS;
    let store = MetricStore::open(
        dir.path(),
        Durability::EveryPut,
        StoreLimits::default(),
        now,
    )
    .unwrap();
    let points = stats(&store, start, now, 3600, now, &[]);
    let counts: Vec<f64> = points.iter().filter_map(|p| p.sample_count).collect();
    assert_eq!(
        counts,
        vec![60.0, 60.0, 60.0],
        "every minute exactly once across checkpoints"
    );
    assert!(store.disk_bytes() > 0, "sealed hours are on disk");
}

#[test]
fn interval_durability_loses_only_the_unflushed_tail() {
    let dir = tempfile::tempdir().unwrap();
    let start = from_civil(2024, 6, 1, 0, 0, 0);
    {
        let mut store = MetricStore::open(
            dir.path(),
            Durability::IntervalMs(5_000),
            StoreLimits::default(),
            start,
        )
        .unwrap();
        put(&mut store, vec![datum("CPU", "web", 1.0, start)], start);
        store.tick(start + 5_000).unwrap();
        put(
            &mut store,
            vec![datum("CPU", "web", 2.0, start + 6_000)],
            start + 6_000,
        );
        // No tick: the second put is not yet on disk.
    }
    let store = MetricStore::open(
        dir.path(),
        Durability::EveryPut,
        StoreLimits::default(),
        start + 10_000,
    )
    .unwrap();
    let points = stats(&store, start, start + MINUTE_MS, 60, start + MINUTE_MS, &[]);
    assert_eq!(points[0].sample_count, Some(1.0));
}

#[test]
fn old_days_roll_up_to_five_minutes_and_hours() {
    let dir = tempfile::tempdir().unwrap();
    let start = from_civil(2024, 6, 1, 0, 0, 0);
    let mut store = MetricStore::open(
        dir.path(),
        Durability::IntervalMs(1_000),
        StoreLimits::default(),
        start,
    )
    .unwrap();
    for minute in 0..(24 * 60) {
        let now = start + minute * MINUTE_MS;
        put(
            &mut store,
            vec![datum("CPU", "web", (minute % 60) as f64, now)],
            now,
        );
        store.tick(now).unwrap();
    }
    store.checkpoint(start + 2 * DAY_MS).unwrap();
    // 16 days later the day is in the 5-minute tier.
    let later = start + 16 * DAY_MS + HOUR_MS;
    store.checkpoint(later).unwrap();
    let points = stats(&store, start, start + DAY_MS, 3600, later, &[]);
    assert_eq!(points.len(), 24);
    assert!(points
        .iter()
        .all(|p| p.sample_count == Some(60.0) && p.average == Some(29.5)));
    // A 1-minute period can no longer be served for data this old.
    assert!(stats(&store, start, start + HOUR_MS, 60, later, &[]).is_empty());
    // 64 days later: hours; still the same totals, after a reopen too.
    let much_later = start + 64 * DAY_MS;
    store.checkpoint(much_later).unwrap();
    drop(store);
    let store = MetricStore::open(
        dir.path(),
        Durability::EveryPut,
        StoreLimits::default(),
        much_later,
    )
    .unwrap();
    let hours = stats(&store, start, start + DAY_MS, 3600, much_later, &[]);
    assert_eq!(hours.len(), 24);
    assert!(hours
        .iter()
        .all(|p| p.sample_count == Some(60.0) && p.maximum == Some(59.0)));
}
