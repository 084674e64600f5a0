//! What both services share over the store: listing a prefix whole.

use flotilla_records::store_error;
use flotilla_store::{Entry, Store};
use flotilla_types::ApiError;

/// Every entry under `prefix`, in key order, at most `limit`.
pub(crate) fn list_all(
    store: &dyn Store,
    prefix: &str,
    limit: usize,
) -> Result<Vec<Entry>, ApiError> {
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        let after = entries.last().map(|entry| entry.key.clone());
        let page = store
            .list(prefix, after.as_deref(), flotilla_store::LIST_LIMIT_MAX)
            .map_err(store_error)?;
        entries.extend(page.entries);
        if !page.more || entries.len() >= limit {
            entries.truncate(limit);
            return Ok(entries);
        }
    }
}

/// A sealing failure as the services answer it: never the value, only that
/// the server could not keep or read it.
pub(crate) fn seal_error(error: crate::SealError, code: &'static str) -> ApiError {
    tracing::error!(%error, "sealing or opening a secret value failed");
    ApiError::new(
        code,
        500,
        "the server could not seal or open the secret value; see its log",
    )
}
