//! Durable commit throughput of the redb backend, printed as JSON lines.
//!
//! ```text
//! cargo run --release -p flotilla-store --example commit_throughput -- [COMMITTERS] [COMMITS_EACH]
//! ```
//!
//! Prints one line for a single committer (every commit waits for its own
//! fsync: the peer to compare against) and one for `COMMITTERS` concurrent
//! committers (default 64), whose commits the writer groups into shared
//! fsyncs. Each commit puts one key of its own.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use flotilla_store::{RedbStore, Store, Txn};

const COMMITTERS_DEFAULT: usize = 64;
const COMMITS_EACH_DEFAULT: usize = 200;
/// Keeps a mistyped argument from running for hours.
const COMMITS_TOTAL_MAX: usize = 1_000_000;
/// Value size of each put, about that of a small task record.
const VALUE_BYTES: usize = 256;

fn main() -> anyhow::Result<()> {
    let mut arguments = std::env::args().skip(1);
    let committers: usize = arguments
        .next()
        .map_or(Ok(COMMITTERS_DEFAULT), |text| text.parse())
        .context("COMMITTERS")?;
    let commits_each: usize = arguments
        .next()
        .map_or(Ok(COMMITS_EACH_DEFAULT), |text| text.parse())
        .context("COMMITS_EACH")?;
    anyhow::ensure!(
        committers >= 1 && commits_each >= 1,
        "both counts must be at least 1"
    );
    anyhow::ensure!(
        committers * commits_each <= COMMITS_TOTAL_MAX,
        "at most {COMMITS_TOTAL_MAX} commits"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        run("single_committer", 1, commits_each).await?;
        run("group_commit", committers, commits_each).await
    })
}

async fn run(name: &str, committers: usize, commits_each: usize) -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let store = Arc::new(RedbStore::open(&directory.path().join("bench.redb"))?);
    let value = bytes::Bytes::from(vec![b'x'; VALUE_BYTES]);
    let started = Instant::now();
    let tasks: Vec<_> = (0..committers)
        .map(|committer| {
            let store = store.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for sequence in 0..commits_each {
                    let key = format!("bench/{committer:04}/{sequence:08}");
                    store.commit(Txn::new().put(key, value.clone())).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let commits = committers * commits_each;
    let batches = store.batches_committed();
    println!(
        "{{\"name\":\"{name}\",\"committers\":{committers},\"commits\":{commits},\"seconds\":{seconds:.3},\
         \"commits_per_second\":{:.0},\"fsync_batches\":{batches},\"commits_per_batch\":{:.1}}}",
        commits as f64 / seconds,
        commits as f64 / batches.max(1) as f64,
    );
    Ok(())
}
