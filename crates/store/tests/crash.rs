//! Kill -9 a process in the middle of a stream of commits, reopen its file,
//! and check the durability promise: every acknowledged transaction is there,
//! and every transaction is there whole or not at all.
//!
//! The child is this same test binary, re-run with an environment variable
//! that turns [`crash_child`] from a no-op into the writer.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use flotilla_store::{RedbStore, Revision, Store, StoreError, Txn};

/// Names the database file the child writes to; unset in a normal test run.
const CHILD_DATABASE_ENV: &str = "FLOTILLA_STORE_CRASH_CHILD_DATABASE";
/// Distinguishes the keys of successive child runs on the same file.
const CHILD_ROUND_ENV: &str = "FLOTILLA_STORE_CRASH_CHILD_ROUND";
/// Each kill lands on a file that already survived the previous ones.
const ROUNDS: usize = 3;
const CHILD_WRITERS: usize = 16;
/// Ends a child that was somehow never killed.
const CHILD_TXNS_PER_WRITER_MAX: usize = 100_000;
/// Acknowledgements read before the kill: enough that many batches are in
/// flight at once when it lands.
const ACKS_BEFORE_KILL: usize = 300;
/// Keys each child transaction writes together.
const KEYS_PER_TXN: usize = 3;

/// A line the child prints once a commit is acknowledged: the transaction's
/// identity and the revision it was given.
fn ack_line(round: usize, writer: usize, sequence: usize, revision: Revision) -> String {
    format!("ACK {round} {writer} {sequence} {revision}")
}

fn txn_keys(round: usize, writer: usize, sequence: usize) -> Vec<String> {
    (0..KEYS_PER_TXN)
        .map(|part| format!("crash/{round}/{writer}/{sequence:06}/{part}"))
        .collect()
}

fn last_key(round: usize, writer: usize) -> String {
    format!("crash/{round}/{writer}/last")
}

#[test]
fn crash_child() {
    let Ok(database) = std::env::var(CHILD_DATABASE_ENV) else {
        return;
    };
    let round: usize = std::env::var(CHILD_ROUND_ENV).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(RedbStore::open(Path::new(&database)).unwrap());
        let writers: Vec<_> = (0..CHILD_WRITERS)
            .map(|writer| {
                let store = store.clone();
                tokio::spawn(async move {
                    // Each transaction also compare-and-swaps the writer's
                    // "last" key, so conditions are part of what is killed.
                    let mut last_revision = 0;
                    for sequence in 0..CHILD_TXNS_PER_WRITER_MAX {
                        let value = format!("{round}/{writer}/{sequence}");
                        let txn = txn_keys(round, writer, sequence)
                            .into_iter()
                            .fold(Txn::new(), |txn, key| txn.put(key, value.clone()))
                            .expect(last_key(round, writer), last_revision)
                            .put(last_key(round, writer), sequence.to_string());
                        match store.commit(txn).await {
                            Ok(revision) => {
                                last_revision = revision;
                                println!("{}", ack_line(round, writer, sequence, revision));
                            }
                            Err(StoreError::Conflict { .. }) => {
                                panic!("only this task writes its keys")
                            }
                            Err(error) => panic!("commit failed: {error}"),
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

struct Ack {
    round: usize,
    writer: usize,
    sequence: usize,
    revision: Revision,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut fields = line
        .strip_prefix("ACK ")?
        .split(' ')
        .map(|field| field.parse::<u64>().unwrap());
    let mut next = || fields.next().unwrap();
    Some(Ack {
        round: next() as usize,
        writer: next() as usize,
        sequence: next() as usize,
        revision: next(),
    })
}

/// Runs one child on `database` and kills it once enough commits are acknowledged.
fn run_and_kill_child(database: &Path, round: usize) -> Vec<Ack> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DATABASE_ENV, database)
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut acks = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acks.len() < ACKS_BEFORE_KILL {
        let Some(line) = lines.next() else {
            panic!("child ended after {} acknowledgements", acks.len());
        };
        acks.extend(parse_ack(&line.unwrap()));
    }
    child.kill().unwrap();
    // Acknowledgements already in the pipe when the kill landed count too.
    acks.extend(
        lines
            .map_while(Result::ok)
            .filter_map(|line| parse_ack(&line)),
    );
    child.wait().unwrap();
    acks
}

#[tokio::test]
async fn acknowledged_commits_survive_kill_9() {
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("store.redb");
    let mut acknowledged = Vec::new();
    for round in 0..ROUNDS {
        acknowledged.extend(run_and_kill_child(&database, round));
        let store = RedbStore::open(&database).unwrap();
        check_after_crash(&store, &acknowledged);
    }
}

fn check_after_crash(store: &RedbStore, acknowledged: &[Ack]) {
    let highest_acknowledged = acknowledged.iter().map(|ack| ack.revision).max().unwrap();
    assert!(store.revision() >= highest_acknowledged);

    for ack in acknowledged {
        for key in txn_keys(ack.round, ack.writer, ack.sequence) {
            let entry = store
                .get(&key)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!(entry.mod_revision, ack.revision, "{key}");
            assert_eq!(
                entry.value,
                format!("{}/{}/{}", ack.round, ack.writer, ack.sequence)
            );
        }
    }

    // Group the stored parts by transaction: each must be all there or absent,
    // and each writer's transactions form an unbroken run that its "last" key ends.
    let mut transactions: BTreeMap<(usize, usize), BTreeMap<usize, (usize, Revision)>> =
        BTreeMap::new();
    let mut start_after: Option<String> = None;
    loop {
        let page = store.list("crash/", start_after.as_deref(), 1_000).unwrap();
        for entry in &page.entries {
            assert!(
                entry.mod_revision <= store.revision(),
                "{} from the future",
                entry.key
            );
            let fields: Vec<&str> = entry.key.split('/').collect();
            let (round, writer) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
            if fields[3] == "last" {
                continue;
            }
            let sequence: usize = fields[3].parse().unwrap();
            let parts = transactions
                .entry((round, writer))
                .or_default()
                .entry(sequence)
                .or_insert((0, entry.mod_revision));
            parts.0 += 1;
            assert_eq!(
                parts.1, entry.mod_revision,
                "{}: parts of one transaction at different revisions",
                entry.key
            );
        }
        if !page.more {
            break;
        }
        start_after = page.entries.last().map(|entry| entry.key.clone());
    }
    for ((round, writer), sequences) in &transactions {
        for (sequence, (parts, _)) in sequences {
            assert_eq!(
                *parts, KEYS_PER_TXN,
                "transaction {round}/{writer}/{sequence} is partial"
            );
        }
        let count = sequences.len();
        assert_eq!(
            sequences.keys().copied().collect::<Vec<_>>(),
            (0..count).collect::<Vec<_>>()
        );
        let last = store.get(&last_key(*round, *writer)).unwrap().unwrap();
        assert_eq!(last.value, (count - 1).to_string());
    }
}
