//! The Logs API over a store in a temporary directory, driven through the
//! same typed requests the edge decodes.

use flotilla_aws::logs::LogsRequest;
use flotilla_logs::{LogStore, LogsService};
use serde_json::{json, Value};

const NOW_MS: i64 = 1_800_000_000_000;
const DAY_MS: i64 = 86_400_000;

struct Fixture {
    dir: tempfile::TempDir,
    service: Option<LogsService>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let service = open(dir.path());
        Fixture {
            dir,
            service: Some(service),
        }
    }

    fn service(&self) -> &LogsService {
        self.service.as_ref().expect("service open")
    }

    fn call_at(
        &self,
        operation: &str,
        body: Value,
        now_ms: i64,
    ) -> Result<Value, (String, String)> {
        let bytes = body.to_string();
        let request = LogsRequest::decode(operation, bytes.as_bytes())
            .expect("known operation")
            .map_err(|e| ("SerializationException".to_owned(), e.to_string()))?;
        match self.service().handle(request, now_ms) {
            Ok(response) => Ok(serde_json::to_value(response).expect("serializes")),
            Err(error) => Err((error.code.to_owned(), error.message)),
        }
    }

    fn call(&self, operation: &str, body: Value) -> Value {
        self.call_at(operation, body.clone(), NOW_MS)
            .unwrap_or_else(|e| panic!("{operation} {body}: {e:?}"))
    }

    fn reopen(&mut self) {
        self.service = None;
        self.service = Some(open(self.dir.path()));
    }
}

fn open(dir: &std::path::Path) -> LogsService {
    LogsService {
        store: LogStore::open(dir).expect("store opens"),
        region: "us-east-1".to_owned(),
        account_id: "000000000000".to_owned(),
    }
}

fn events(timestamps: impl IntoIterator<Item = i64>, label: &str) -> Value {
    Value::Array(
        timestamps
            .into_iter()
            .map(|t| json!({"timestamp": t, "message": format!("{label} {t}")}))
            .collect(),
    )
}

fn messages(response: &Value) -> Vec<String> {
    response["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["message"].as_str().expect("message").to_owned())
        .collect()
}

fn setup(fixture: &Fixture, group: &str, streams: &[&str]) {
    fixture.call("CreateLogGroup", json!({"logGroupName": group}));
    for stream in streams {
        fixture.call(
            "CreateLogStream",
            json!({"logGroupName": group, "logStreamName": stream}),
        );
    }
}

#[test]
fn get_log_events_pages_forward_and_backward() {
    let fixture = Fixture::new();
    setup(&fixture, "app", &["web"]);
    let put = fixture.call(
        "PutLogEvents",
        json!({"logGroupName": "app", "logStreamName": "web", "logEvents": events((0..10).map(|i| NOW_MS - 1000 + i), "line")}),
    );
    assert_eq!(put["nextSequenceToken"].as_str().map(str::len), Some(56));
    assert!(put.get("rejectedLogEventsInfo").is_none());

    let head = fixture.call(
        "GetLogEvents",
        json!({"logGroupName": "app", "logStreamName": "web", "startFromHead": true, "limit": 4}),
    );
    assert_eq!(messages(&head).len(), 4);
    assert_eq!(messages(&head)[0], format!("line {}", NOW_MS - 1000));
    let next = fixture.call(
        "GetLogEvents",
        json!({"logGroupName": "app", "logStreamName": "web", "nextToken": head["nextForwardToken"], "limit": 4}),
    );
    assert_eq!(messages(&next)[0], format!("line {}", NOW_MS - 996));
    let back = fixture.call(
        "GetLogEvents",
        json!({"logGroupName": "app", "logStreamName": "web", "nextToken": next["nextBackwardToken"], "limit": 2}),
    );
    assert_eq!(
        messages(&back),
        vec![
            format!("line {}", NOW_MS - 998),
            format!("line {}", NOW_MS - 997)
        ]
    );
    // Without startFromHead the newest events come, still oldest first.
    let tail = fixture.call(
        "GetLogEvents",
        json!({"logGroupName": "app", "logStreamName": "web", "limit": 3}),
    );
    assert_eq!(messages(&tail)[2], format!("line {}", NOW_MS - 991));
    // At the end, the forward token stays the same: that is how clients stop.
    let end = fixture.call(
        "GetLogEvents",
        json!({"logGroupName": "app", "logStreamName": "web", "nextToken": tail["nextForwardToken"]}),
    );
    assert!(messages(&end).is_empty());
    assert_eq!(end["nextForwardToken"], tail["nextForwardToken"]);
    // New events appear after the token.
    fixture.call(
        "PutLogEvents",
        json!({"logGroupName": "app", "logStreamName": "web", "logEvents": events([NOW_MS], "new")}),
    );
    let more = fixture.call(
        "GetLogEvents",
        json!({"logGroupName": "app", "logStreamName": "web", "nextToken": end["nextForwardToken"]}),
    );
    assert_eq!(messages(&more), vec![format!("new {NOW_MS}")]);
    // A time range.
    let ranged = fixture.call(
        "GetLogEvents",
        json!({"logGroupName": "app", "logStreamName": "web", "startFromHead": true, "startTime": NOW_MS - 995, "endTime": NOW_MS - 993}),
    );
    assert_eq!(messages(&ranged).len(), 3);
}

#[test]
fn filter_log_events_interleaves_streams_by_time() {
    let fixture = Fixture::new();
    setup(&fixture, "svc", &["a/1", "a/2", "b/1"]);
    for (stream, offset) in [("a/1", 0), ("a/2", 1), ("b/1", 2)] {
        let batch: Vec<Value> = (0..5)
            .map(|i| {
                let t = NOW_MS - 100 + i * 3 + offset;
                let level = if i % 2 == 0 { "error" } else { "info" };
                json!({"timestamp": t, "message": format!("{{\"level\":\"{level}\",\"stream\":\"{stream}\",\"t\":{t}}}")})
            })
            .collect();
        fixture.call(
            "PutLogEvents",
            json!({"logGroupName": "svc", "logStreamName": stream, "logEvents": batch}),
        );
    }
    let all = fixture.call("FilterLogEvents", json!({"logGroupName": "svc"}));
    let times: Vec<i64> = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["timestamp"].as_i64().expect("timestamp"))
        .collect();
    assert_eq!(times.len(), 15);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    let ids: std::collections::BTreeSet<&str> = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["eventId"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 15);

    let cases: &[(Value, usize)] = &[
        (json!({"logStreamNamePrefix": "a/"}), 10),
        (json!({"logStreamNames": ["b/1"]}), 5),
        (json!({"filterPattern": "{ $.level = \"error\" }"}), 9),
        (
            json!({"filterPattern": "{ $.level = \"error\" }", "logStreamNames": ["a/2"]}),
            3,
        ),
        (json!({"filterPattern": "info -a/1"}), 4),
        (json!({"filterPattern": "?\"a/2\" ?\"b/1\""}), 10),
        (
            json!({"startTime": NOW_MS - 100, "endTime": NOW_MS - 95}),
            6,
        ),
    ];
    for (extra, expected) in cases {
        let mut body = json!({"logGroupName": "svc"});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let found = fixture.call("FilterLogEvents", body.clone());
        assert_eq!(messages(&found).len(), *expected, "{body}");
    }
    // Paging with nextToken covers everything once.
    let mut token = Value::Null;
    let mut seen = Vec::new();
    loop {
        let mut body = json!({"logGroupName": "svc", "limit": 4});
        if !token.is_null() {
            body["nextToken"] = token.clone();
        }
        let page = fixture.call("FilterLogEvents", body);
        seen.extend(messages(&page));
        token = page.get("nextToken").cloned().unwrap_or(Value::Null);
        if token.is_null() {
            break;
        }
    }
    assert_eq!(seen, messages(&all));
}

#[test]
fn put_log_events_reports_too_old_and_too_new_events() {
    let fixture = Fixture::new();
    setup(&fixture, "g", &["s"]);
    let old = NOW_MS - 15 * DAY_MS;
    let new = NOW_MS + 3 * 3_600_000;
    // One batch may not span more than a day, so each case is its own batch.
    let response = fixture.call(
        "PutLogEvents",
        json!({"logGroupName": "g", "logStreamName": "s", "logEvents": events([NOW_MS, NOW_MS + 1, new], "x")}),
    );
    assert_eq!(
        response["rejectedLogEventsInfo"],
        json!({"tooNewLogEventStartIndex": 2})
    );
    let response = fixture.call(
        "PutLogEvents",
        json!({"logGroupName": "g", "logStreamName": "s", "logEvents": events([old, old + 1], "x")}),
    );
    assert_eq!(
        response["rejectedLogEventsInfo"],
        json!({"tooOldLogEventEndIndex": 2})
    );
    assert!(response["nextSequenceToken"].is_string());
    fixture.call(
        "PutRetentionPolicy",
        json!({"logGroupName": "g", "retentionInDays": 1}),
    );
    let response = fixture.call(
        "PutLogEvents",
        json!({"logGroupName": "g", "logStreamName": "s", "logEvents": events([NOW_MS - DAY_MS - 1000, NOW_MS - 2000], "x")}),
    );
    assert_eq!(
        response["rejectedLogEventsInfo"],
        json!({"expiredLogEventEndIndex": 1})
    );
    let stored = fixture.call("FilterLogEvents", json!({"logGroupName": "g"}));
    assert_eq!(messages(&stored).len(), 3);
}

#[test]
fn bad_input_is_refused_with_the_services_errors_and_changes_nothing() {
    let fixture = Fixture::new();
    setup(&fixture, "g", &["s"]);
    let big = "x".repeat(1000);
    let oversized: Vec<Value> = (0..1100)
        .map(|i| json!({"timestamp": NOW_MS, "message": format!("{i}{big}")}))
        .collect();
    let too_many: Vec<Value> = (0..10_001)
        .map(|_| json!({"timestamp": NOW_MS, "message": "m"}))
        .collect();
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "CreateLogGroup",
            json!({"logGroupName": "bad name"}),
            "InvalidParameterException",
            "failed to satisfy constraint: Member must satisfy regular expression pattern",
        ),
        (
            "CreateLogGroup",
            json!({"logGroupName": "g"}),
            "ResourceAlreadyExistsException",
            "The specified log group already exists",
        ),
        (
            "CreateLogGroup",
            json!({"logGroupName": "x".repeat(513)}),
            "InvalidParameterException",
            "length less than or equal to 512",
        ),
        (
            "CreateLogGroup",
            json!({}),
            "InvalidParameterException",
            "logGroupName",
        ),
        (
            "CreateLogStream",
            json!({"logGroupName": "g", "logStreamName": "a:b"}),
            "InvalidParameterException",
            "[^:*]*",
        ),
        (
            "CreateLogStream",
            json!({"logGroupName": "nope", "logStreamName": "a"}),
            "ResourceNotFoundException",
            "The specified log group does not exist.",
        ),
        (
            "CreateLogStream",
            json!({"logGroupName": "g", "logStreamName": "s"}),
            "ResourceAlreadyExistsException",
            "The specified log stream already exists",
        ),
        (
            "PutLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "logEvents": oversized}),
            "InvalidParameterException",
            "Upload too large",
        ),
        (
            "PutLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "logEvents": too_many}),
            "InvalidParameterException",
            "less than or equal to 10000",
        ),
        (
            "PutLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "logEvents": events([NOW_MS, NOW_MS - 1], "x")}),
            "InvalidParameterException",
            "chronological order",
        ),
        (
            "PutLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "logEvents": events([NOW_MS - 2 * DAY_MS, NOW_MS], "x")}),
            "InvalidParameterException",
            "cannot span more than 24 hours",
        ),
        (
            "PutLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "logEvents": []}),
            "InvalidParameterException",
            "greater than or equal to 1",
        ),
        (
            "PutLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "logEvents": [{"timestamp": NOW_MS, "message": ""}]}),
            "InvalidParameterException",
            "logEvents.1.member.message",
        ),
        (
            "PutLogEvents",
            json!({"logGroupName": "g", "logStreamName": "none", "logEvents": events([NOW_MS], "x")}),
            "ResourceNotFoundException",
            "The specified log stream does not exist.",
        ),
        (
            "PutLogEvents",
            json!({"logGroupName": "none", "logStreamName": "s", "logEvents": events([NOW_MS], "x")}),
            "ResourceNotFoundException",
            "The specified log group does not exist.",
        ),
        (
            "PutRetentionPolicy",
            json!({"logGroupName": "g", "retentionInDays": 2}),
            "InvalidParameterException",
            "enum value set: [1, 3, 5, 7, 14",
        ),
        (
            "FilterLogEvents",
            json!({"logGroupName": "g", "filterPattern": "{ $.a = "}),
            "InvalidParameterException",
            "Invalid filter pattern",
        ),
        (
            "FilterLogEvents",
            json!({"logGroupName": "g", "logStreamNames": ["s"], "logStreamNamePrefix": "s"}),
            "InvalidParameterException",
            "mutually exclusive",
        ),
        (
            "FilterLogEvents",
            json!({"logGroupName": "g", "nextToken": "garbage"}),
            "InvalidParameterException",
            "nextToken",
        ),
        (
            "GetLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "limit": 10001}),
            "InvalidParameterException",
            "less than or equal to 10000",
        ),
        (
            "DescribeLogStreams",
            json!({"logGroupName": "g", "limit": 51}),
            "InvalidParameterException",
            "less than or equal to 50",
        ),
        (
            "DescribeLogStreams",
            json!({"logGroupName": "g", "orderBy": "LastEventTime", "logStreamNamePrefix": "s"}),
            "InvalidParameterException",
            "Cannot order by LastEventTime with a logStreamNamePrefix.",
        ),
        (
            "DeleteLogGroup",
            json!({"logGroupName": "nope"}),
            "ResourceNotFoundException",
            "The specified log group does not exist.",
        ),
        (
            "TagResource",
            json!({"resourceArn": "arn:aws:logs:us-east-1:000000000000:log-group:g", "tags": (0..51).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            "TooManyTagsException",
            "no more than 50 tags",
        ),
        (
            "CreateLogGroup",
            json!({"logGroupName": "k", "kmsKeyId": "key"}),
            "InvalidParameterException",
            "kmsKeyId",
        ),
    ];
    let before = fixture.call("FilterLogEvents", json!({"logGroupName": "g"}));
    let groups_before = fixture.call("DescribeLogGroups", json!({}));
    for (operation, body, code, message) in cases {
        match fixture.call_at(operation, body.clone(), NOW_MS) {
            Ok(answer) => panic!("{operation} was accepted: {answer}"),
            Err((got_code, got_message)) => {
                assert_eq!(got_code, code, "{operation}: {got_message}");
                assert!(
                    got_message.contains(message),
                    "{operation}: {got_message:?} does not contain {message:?}"
                );
            }
        }
    }
    assert_eq!(
        fixture.call("FilterLogEvents", json!({"logGroupName": "g"})),
        before
    );
    assert_eq!(fixture.call("DescribeLogGroups", json!({})), groups_before);
    assert_eq!(
        fixture.call("ListTagsLogGroup", json!({"logGroupName": "g"}))["tags"],
        json!({})
    );
}

#[test]
fn describe_orders_pages_and_tags() {
    let fixture = Fixture::new();
    for name in ["b", "a", "c/x", "c/y"] {
        fixture.call(
            "CreateLogGroup",
            json!({"logGroupName": name, "tags": {"team": name}}),
        );
    }
    let page = fixture.call("DescribeLogGroups", json!({"limit": 2}));
    let names: Vec<&str> = page["logGroups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["logGroupName"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    let rest = fixture.call("DescribeLogGroups", json!({"nextToken": page["nextToken"]}));
    assert_eq!(rest["logGroups"].as_array().map(Vec::len), Some(2));
    assert!(rest.get("nextToken").is_none());
    let prefixed = fixture.call("DescribeLogGroups", json!({"logGroupNamePrefix": "c/"}));
    assert_eq!(
        prefixed["logGroups"][0]["arn"],
        "arn:aws:logs:us-east-1:000000000000:log-group:c/x:*"
    );

    for (stream, t) in [("s1", 30), ("s2", 10), ("s3", 20)] {
        fixture.call(
            "CreateLogStream",
            json!({"logGroupName": "a", "logStreamName": stream}),
        );
        fixture.call("PutLogEvents", json!({"logGroupName": "a", "logStreamName": stream, "logEvents": events([NOW_MS - 100 + t], "m")}));
    }
    let by_time = fixture.call(
        "DescribeLogStreams",
        json!({"logGroupName": "a", "orderBy": "LastEventTime", "descending": true, "limit": 2}),
    );
    let names: Vec<&str> = by_time["logStreams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["logStreamName"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["s1", "s3"]);
    assert_eq!(
        by_time["logStreams"][0]["lastEventTimestamp"],
        json!(NOW_MS - 70)
    );
    let next = fixture.call("DescribeLogStreams", json!({"logGroupName": "a", "orderBy": "LastEventTime", "descending": true, "nextToken": by_time["nextToken"]}));
    assert_eq!(next["logStreams"][0]["logStreamName"], "s2");

    let arn = "arn:aws:logs:us-east-1:000000000000:log-group:a";
    fixture.call(
        "TagResource",
        json!({"resourceArn": arn, "tags": {"env": "prod"}}),
    );
    fixture.call(
        "UntagLogGroup",
        json!({"logGroupName": "a", "tags": ["team"]}),
    );
    fixture.call(
        "TagLogGroup",
        json!({"logGroupName": "a", "tags": {"owner": "me"}}),
    );
    let tags = fixture.call("ListTagsForResource", json!({"resourceArn": arn}));
    assert_eq!(tags["tags"], json!({"env": "prod", "owner": "me"}));
    fixture.call(
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["env"]}),
    );
    assert_eq!(
        fixture.call("ListTagsLogGroup", json!({"logGroupName": "a"}))["tags"],
        json!({"owner": "me"})
    );
}

#[test]
fn retention_expires_events_and_compaction_keeps_event_ids() {
    let mut fixture = Fixture::new();
    setup(&fixture, "old", &["s"]);
    setup(&fixture, "kept", &["s"]);
    let line = "y".repeat(200);
    for day in 0..3 {
        let t0 = NOW_MS - (10 - day) * DAY_MS;
        for batch in 0..5 {
            let evs: Vec<Value> = (0..1000).map(|i| json!({"timestamp": t0 + batch * 1000 + i, "message": format!("{line} {i}")})).collect();
            fixture
                .call_at(
                    "PutLogEvents",
                    json!({"logGroupName": "old", "logStreamName": "s", "logEvents": evs}),
                    NOW_MS,
                )
                .expect("put");
        }
    }
    fixture.call("PutLogEvents", json!({"logGroupName": "kept", "logStreamName": "s", "logEvents": events([NOW_MS - 5, NOW_MS - 4], "keep")}));
    let kept_before = fixture.call("FilterLogEvents", json!({"logGroupName": "kept"}));
    let disk_before = fixture.service().store.disk_bytes().expect("size");
    fixture.call(
        "PutRetentionPolicy",
        json!({"logGroupName": "old", "retentionInDays": 7}),
    );
    // Nine and ten days ago are past a week; eight days ago too: all expire.
    let visible = fixture.call("FilterLogEvents", json!({"logGroupName": "old"}));
    assert!(
        messages(&visible).is_empty(),
        "expired events are not shown"
    );
    let report = fixture.service().store.maintain(NOW_MS).expect("maintain");
    assert!(report.chunks_expired >= 15, "{report:?}");
    let disk_after = fixture.service().store.disk_bytes().expect("size");
    assert!(
        disk_after * 10 < disk_before,
        "{disk_before} -> {disk_after}"
    );
    assert_eq!(
        fixture.call("FilterLogEvents", json!({"logGroupName": "kept"})),
        kept_before
    );
    fixture.reopen();
    assert_eq!(
        fixture.call("FilterLogEvents", json!({"logGroupName": "kept"})),
        kept_before
    );
}

#[test]
fn deleting_groups_and_streams_reclaims_space() {
    let mut fixture = Fixture::new();
    setup(&fixture, "doomed", &["s", "t", "u"]);
    setup(&fixture, "other", &["s"]);
    let evs: Vec<Value> = (0..2000)
        .map(|i| json!({"timestamp": NOW_MS - 10_000 + i, "message": "z".repeat(300)}))
        .collect();
    for stream in ["s", "t", "u"] {
        fixture.call(
            "PutLogEvents",
            json!({"logGroupName": "doomed", "logStreamName": stream, "logEvents": evs}),
        );
    }
    fixture.call("PutLogEvents", json!({"logGroupName": "other", "logStreamName": "s", "logEvents": events([NOW_MS], "other")}));
    for stream in ["t", "u"] {
        fixture.call(
            "DeleteLogStream",
            json!({"logGroupName": "doomed", "logStreamName": stream}),
        );
    }
    let before = fixture.service().store.disk_bytes().expect("size");
    fixture.service().store.maintain(NOW_MS).expect("maintain");
    let middle = fixture.service().store.disk_bytes().expect("size");
    assert!(middle * 10 < before * 6, "{before} -> {middle}");
    fixture.call("DeleteLogGroup", json!({"logGroupName": "doomed"}));
    fixture.service().store.maintain(NOW_MS).expect("maintain");
    let after = fixture.service().store.disk_bytes().expect("size");
    assert!(after < 1000, "{after}");
    fixture.reopen();
    assert_eq!(
        messages(&fixture.call("FilterLogEvents", json!({"logGroupName": "other"}))),
        vec![format!("other {NOW_MS}")]
    );
    assert_eq!(
        fixture
            .call_at("FilterLogEvents", json!({"logGroupName": "doomed"}), NOW_MS)
            .map_err(|e| e.0),
        Err("ResourceNotFoundException".to_owned())
    );
    // A recreated stream of the same name starts empty.
    setup(&fixture, "doomed", &["s"]);
    assert!(
        messages(&fixture.call("FilterLogEvents", json!({"logGroupName": "doomed"}))).is_empty()
    );
}

#[test]
fn a_torn_tail_is_cut_on_open_and_acknowledged_events_stay() {
    let mut fixture = Fixture::new();
    setup(&fixture, "g", &["s"]);
    fixture.call("PutLogEvents", json!({"logGroupName": "g", "logStreamName": "s", "logEvents": events([NOW_MS - 2, NOW_MS - 1], "kept")}));
    let before = fixture.call("FilterLogEvents", json!({"logGroupName": "g"}));
    fixture.service = None;
    let segment = std::fs::read_dir(fixture.dir.path().join("segments"))
        .expect("segments")
        .map(|e| e.expect("entry").path())
        .max()
        .expect("a segment");
    let intact = std::fs::metadata(&segment).expect("size").len();
    // Half a chunk, as a crash in the middle of a write leaves it.
    let (_, chunk) = flotilla_logs::segment::encode_chunk(1, 2, 0, &[(NOW_MS, "torn")]);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open");
    std::io::Write::write_all(&mut file, &chunk[..chunk.len() - 3]).expect("write");
    drop(file);
    fixture.reopen();
    assert_eq!(std::fs::metadata(&segment).expect("size").len(), intact);
    assert_eq!(
        fixture.call("FilterLogEvents", json!({"logGroupName": "g"})),
        before
    );
    fixture.call(
        "PutLogEvents",
        json!({"logGroupName": "g", "logStreamName": "s", "logEvents": events([NOW_MS], "after")}),
    );
    assert_eq!(
        messages(&fixture.call("FilterLogEvents", json!({"logGroupName": "g"}))).len(),
        3
    );
}
