//! Typed records over the byte-valued store, and the optimistic retry loop
//! every mutation of the control plane and the registry goes through.
//!
//! These speak `ApiError`, which is why they are not part of
//! `flotilla-store`: the store knows nothing of the wire types.

use bytes::Bytes;
use flotilla_store::{Entry, Revision, Store, StoreError, Txn};
use flotilla_types::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How many times a mutation re-reads and retries after losing a
/// compare-and-swap race before it gives up with a ServerException.
pub const CONFLICT_RETRIES_MAX: usize = 64;

/// A decoded value and the revision it was read at.
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
}

pub fn encode<T: Serialize>(value: &T) -> Bytes {
    // Serializing our own plain-data records cannot fail: they hold no maps
    // with non-string keys and no custom serializers.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

pub fn decode<T: DeserializeOwned>(entry: &Entry) -> Result<T, ApiError> {
    serde_json::from_slice(&entry.value).map_err(|error| {
        tracing::error!(key = %entry.key, %error, "stored record does not decode");
        ApiError::server(format!("stored record {} is unreadable", entry.key))
    })
}

pub fn store_error(error: StoreError) -> ApiError {
    if let StoreError::Unavailable { message } = &error {
        // Nothing was applied, or the outcome is unknown: a 503 tells SDKs
        // to retry, here or at another replica.
        tracing::warn!(%message, "store unavailable");
        return ApiError::new(
            "ServiceUnavailableException",
            503,
            format!("the state store is unavailable to this replica ({message}); try again"),
        );
    }
    tracing::error!(%error, "store failed");
    ApiError::server("the state store failed; try again")
}

pub fn get<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<Versioned<T>>, ApiError> {
    match store.get(key).map_err(store_error)? {
        Some(entry) => Ok(Some(Versioned {
            value: decode(&entry)?,
            revision: entry.mod_revision,
        })),
        None => Ok(None),
    }
}

/// What one attempt of a mutation decided: a transaction to commit and the
/// answer to give once it has committed.
pub enum Attempt<T> {
    Commit(Txn, T),
    /// Nothing to write; answer at once.
    Done(T),
}

/// Runs `attempt` (read, decide, build a conditional transaction) and commits
/// what it returns, re-running it from fresh reads whenever another writer won
/// the race. Every mutation of the control plane and the registry goes
/// through here or through [`mutate_at`] or [`mutate_with`].
pub async fn mutate<T>(
    store: &dyn Store,
    attempt: impl FnMut() -> Result<Attempt<T>, ApiError>,
) -> Result<T, ApiError> {
    mutate_with(store, attempt).await
}

/// [`mutate`], also telling the revision its transaction committed at
/// (`None` when the attempt had nothing to write).
pub async fn mutate_at<T>(
    store: &dyn Store,
    attempt: impl FnMut() -> Result<Attempt<T>, ApiError>,
) -> Result<(T, Option<Revision>), ApiError> {
    retry_conflicts(store, attempt).await
}

/// [`mutate`] for an attempt that fails with an error of its own, such as
/// the registry's, which a store failure converts into. (`mutate` itself
/// names `ApiError` so that its callers' closures need no annotation.)
pub async fn mutate_with<T, E: From<ApiError>>(
    store: &dyn Store,
    attempt: impl FnMut() -> Result<Attempt<T>, E>,
) -> Result<T, E> {
    retry_conflicts(store, attempt)
        .await
        .map(|(answer, _)| answer)
}

async fn retry_conflicts<T, E: From<ApiError>>(
    store: &dyn Store,
    mut attempt: impl FnMut() -> Result<Attempt<T>, E>,
) -> Result<(T, Option<Revision>), E> {
    for _ in 0..CONFLICT_RETRIES_MAX {
        match attempt()? {
            Attempt::Done(answer) => return Ok((answer, None)),
            Attempt::Commit(txn, answer) => match store.commit(txn).await {
                Ok(revision) => return Ok((answer, Some(revision))),
                // Let the writer that won run before reading again.
                Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                Err(error) => return Err(store_error(error).into()),
            },
        }
    }
    Err(ApiError::server("too many concurrent updates to the same resource; try again").into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::MemoryStore;

    /// Runs `mutate` on an empty store; the attempt is told its number, from 1.
    async fn mutate_counting<T>(
        mut attempt: impl FnMut(&MemoryStore, usize) -> Result<Attempt<T>, ApiError>,
    ) -> (Result<T, ApiError>, usize) {
        let store = MemoryStore::new();
        let mut attempts = 0;
        let result = mutate(&store, || {
            attempts += 1;
            attempt(&store, attempts)
        })
        .await;
        (result, attempts)
    }

    #[tokio::test]
    async fn a_lost_race_is_retried_from_fresh_reads() {
        let (answer, attempts) = mutate_counting(|store, attempt| {
            let read = get::<u32>(store, "counter")?;
            let revision = read.as_ref().map_or(0, |r| r.revision);
            // The first attempt read a revision that a rival's write is about to overtake.
            let expected = if attempt == 1 { revision + 1 } else { revision };
            let next = read.map_or(0, |r| r.value) + 1;
            let txn = Txn::new()
                .expect("counter", expected)
                .put("counter", encode(&next));
            Ok(Attempt::Commit(txn, next))
        })
        .await;
        assert_eq!(answer.ok(), Some(1));
        assert_eq!(attempts, 2);
    }

    #[tokio::test]
    async fn endless_conflicts_end_in_a_server_exception() {
        let (result, attempts) = mutate_counting(|_, _| {
            Ok(Attempt::Commit(
                Txn::new().expect("absent", 7).put("absent", encode(&1)),
                (),
            ))
        })
        .await;
        assert_eq!(result.err().map(|e| e.code), Some("ServerException"));
        assert_eq!(attempts, CONFLICT_RETRIES_MAX);
    }

    #[tokio::test]
    async fn nothing_to_write_answers_without_a_revision() {
        let store = MemoryStore::new();
        let result = mutate_at(&store, || Ok(Attempt::Done("unchanged"))).await;
        assert_eq!(result.ok(), Some(("unchanged", None)));
    }
}
