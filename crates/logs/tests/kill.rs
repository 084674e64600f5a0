//! kill -9 in the middle of writing loses no acknowledged event.
//!
//! The test runs this same binary again as a child that writes from several
//! threads and prints each acknowledgement; the parent kills it with SIGKILL
//! while it writes, reopens the store and checks that every acknowledged
//! event is there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use flotilla_logs::pattern::Pattern;
use flotilla_logs::{EventQuery, LogStore};

const DIR_VARIABLE: &str = "FLOTILLA_LOGS_KILL_TEST_DIR";
const NOW_MS: i64 = 1_800_000_000_000;
const WRITERS: usize = 4;
const BATCH_EVENTS: usize = 200;

#[test]
#[ignore = "the child half of kill_nine_loses_no_acknowledged_event"]
fn child_writer() {
    let Ok(dir) = std::env::var(DIR_VARIABLE) else {
        return;
    };
    let store = std::sync::Arc::new(LogStore::open(std::path::Path::new(&dir)).expect("open"));
    store
        .create_group("g", Default::default(), NOW_MS)
        .expect("group");
    for writer in 0..WRITERS {
        store
            .create_stream("g", &format!("w{writer}"), NOW_MS)
            .expect("stream");
    }
    println!("READY");
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                let stream = format!("w{writer}");
                for batch in 0.. {
                    let messages: Vec<String> = (0..BATCH_EVENTS)
                        .map(|i| {
                            format!("{stream} {} {}", batch * BATCH_EVENTS + i, "p".repeat(80))
                        })
                        .collect();
                    let events: Vec<(i64, &str)> = messages
                        .iter()
                        .map(|m| (NOW_MS + batch as i64, m.as_str()))
                        .collect();
                    let next = store.put("g", &stream, &events, NOW_MS).expect("put");
                    println!("ACK {stream} {next}");
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

#[test]
fn kill_nine_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VARIABLE, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acknowledged = std::collections::BTreeMap::<String, u64>::new();
    let mut acks = 0;
    let mut killed = false;
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (stream, next) = rest.split_once(' ').expect("ACK stream next");
            let next: u64 = next.parse().expect("number");
            let entry = acknowledged.entry(stream.to_owned()).or_default();
            *entry = (*entry).max(next);
            acks += 1;
            if acks == 300 && !killed {
                // SIGKILL: no destructor, no flush, in the middle of writes.
                child.kill().expect("kill -9");
                killed = true;
            }
        }
    }
    let _ = child.wait();
    assert!(killed, "the child stopped before it was killed");
    let store = LogStore::open(dir.path()).expect("reopens");
    let everything = Pattern::All;
    for (stream, next) in &acknowledged {
        let mut found = std::collections::BTreeSet::new();
        let mut after = None;
        loop {
            let page = store
                .query(&EventQuery {
                    group: "g",
                    streams: Some(vec![stream.clone()]),
                    stream_prefix: None,
                    start_ms: None,
                    end_ms: None,
                    after,
                    forward: true,
                    limit: 10_000,
                    pattern: &everything,
                    scan_budget_bytes: u64::MAX,
                    response_budget_bytes: usize::MAX,
                    now_ms: NOW_MS,
                })
                .expect("query");
            for event in &page.events {
                let expected_prefix = format!("{stream} {} ", event.key.seq);
                assert!(
                    event.message.starts_with(&expected_prefix),
                    "{}",
                    event.message
                );
                found.insert(event.key.seq);
            }
            match page.resume {
                Some(key) => after = Some(key),
                None => break,
            }
        }
        let missing: Vec<u64> = (0..*next).filter(|seq| !found.contains(seq)).collect();
        assert!(
            missing.is_empty(),
            "{stream}: {next} events acknowledged, {} of them missing after kill -9",
            missing.len()
        );
    }
    assert_eq!(acknowledged.len(), WRITERS);
}
