//! Pagination as ECS does it: `maxResults` bounds a page, `nextToken` is an
//! opaque string that resumes after the last item returned.

use flotilla_types::ApiError;

/// Resolves `maxResults` against the operation's bounds.
pub fn max_results(requested: Option<i32>, default: usize, max: usize) -> Result<usize, ApiError> {
    match requested {
        None => Ok(default),
        Some(n) if n >= 1 && (n as usize) <= max => Ok(n as usize),
        Some(n) => Err(ApiError::invalid_parameter(format!(
            "maxResults must be between 1 and {max}, got {n}"
        ))),
    }
}

/// Token that resumes a listing after `key`.
pub fn token_for(key: &str) -> String {
    hex::encode(key)
}

/// The key a listing resumes after, checking that it belongs to `prefix`.
pub fn resume_after(token: Option<&str>, prefix: &str) -> Result<Option<String>, ApiError> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let invalid =
        || ApiError::invalid_parameter("Invalid nextToken: it was not returned by this listing");
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let key = String::from_utf8(bytes).map_err(|_| invalid())?;
    if !key.starts_with(prefix) {
        return Err(invalid());
    }
    Ok(Some(key))
}

/// How many entries a listing reads from the store at a time while filtering.
const SCAN_CHUNK: usize = 256;

/// One page of a filtered listing and the token for the next, if any.
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// Walks the keys under `prefix` in order, starting after the key `token`
/// names, keeping what `keep` maps to `Some`, until `limit` items are kept.
pub fn list<T>(
    store: &dyn flotilla_store::Store,
    prefix: &str,
    token: Option<&str>,
    limit: usize,
    mut keep: impl FnMut(&flotilla_store::Entry) -> Result<Option<T>, ApiError>,
) -> Result<Listing<T>, ApiError> {
    let mut after = resume_after(token, prefix)?;
    let mut items = Vec::new();
    loop {
        let page = store
            .list(prefix, after.as_deref(), SCAN_CHUNK)
            .map_err(crate::records::store_error)?;
        for (index, entry) in page.entries.iter().enumerate() {
            if let Some(item) = keep(entry)? {
                items.push(item);
                if items.len() == limit {
                    let more = page.more || index + 1 < page.entries.len();
                    let next_token = more.then(|| token_for(&entry.key));
                    return Ok(Listing { items, next_token });
                }
            }
        }
        match page.entries.last() {
            Some(last) if page.more => after = Some(last.key.clone()),
            _ => {
                return Ok(Listing {
                    items,
                    next_token: None,
                })
            }
        }
    }
}
