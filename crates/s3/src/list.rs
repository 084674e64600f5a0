//! ListObjectsV2 over the store's key order: prefix, delimiter (keys that
//! share the part up to the delimiter are rolled into one common prefix),
//! `start-after`, continuation tokens and `max-keys`.

use base64::Engine as _;
use flotilla_store::Store;

use crate::records::{self, ObjectRecord};
use crate::S3Error;

/// Most keys and common prefixes one page holds: S3's 1,000.
pub const LIST_KEYS_MAX: usize = 1_000;

/// Sorts after every character a key can continue with, so listing from
/// `prefix + SKIP_PAST` steps over every key under a common prefix.
const SKIP_PAST: char = char::MAX;

#[derive(Clone, Debug, Default)]
pub struct ListObjectsV2 {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Clamped to [`LIST_KEYS_MAX`].
    pub max_keys: usize,
    pub continuation_token: Option<String>,
    pub start_after: Option<String>,
}

#[derive(Clone, Debug)]
pub enum ListedItem {
    Object(ObjectRecord),
    CommonPrefix(String),
}

#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub items: Vec<ListedItem>,
    pub is_truncated: bool,
    pub next_continuation_token: Option<String>,
}

fn engine() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// A token is where the next page resumes: the object key (or common prefix
/// plus [`SKIP_PAST`]) listing continues after, base64url-encoded.
fn decode_token(token: &str) -> Result<String, S3Error> {
    let invalid = || S3Error::invalid_argument("The continuation token provided is incorrect");
    let bytes = engine().decode(token).map_err(|_| invalid())?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

pub(crate) fn list(store: &dyn Store, request: &ListObjectsV2) -> Result<ListPage, S3Error> {
    let base = records::objects_prefix(&request.bucket);
    let prefix = format!("{base}{}", request.prefix);
    let resume_after = match (&request.continuation_token, &request.start_after) {
        (Some(token), _) => Some(decode_token(token)?),
        (None, Some(start_after)) => Some(start_after.clone()),
        (None, None) => None,
    };
    let mut cursor: Option<String> = resume_after.map(|key| format!("{base}{key}"));
    let max_keys = request.max_keys.min(LIST_KEYS_MAX);
    let mut page = ListPage::default();
    if max_keys == 0 {
        return Ok(page);
    }
    let delimiter = request.delimiter.as_deref().filter(|d| !d.is_empty());
    'pages: loop {
        let entries = store
            .list(&prefix, cursor.as_deref(), LIST_KEYS_MAX)
            .map_err(flotilla_records::store_error)?;
        if entries.entries.is_empty() {
            break;
        }
        for entry in &entries.entries {
            let key = &entry.key[base.len()..];
            if page.items.len() == max_keys {
                page.is_truncated = true;
                break 'pages;
            }
            let rolled_up = delimiter.and_then(|delimiter| {
                key[request.prefix.len()..]
                    .find(delimiter)
                    .map(|at| key[..request.prefix.len() + at + delimiter.len()].to_owned())
            });
            match rolled_up {
                Some(common_prefix) => {
                    // Everything under it is skipped with one new listing.
                    cursor = Some(format!("{base}{common_prefix}{SKIP_PAST}"));
                    page.items.push(ListedItem::CommonPrefix(common_prefix));
                    continue 'pages;
                }
                None => {
                    page.items
                        .push(ListedItem::Object(flotilla_records::decode(entry)?));
                    cursor = Some(entry.key.clone());
                }
            }
        }
        if !entries.more {
            break;
        }
    }
    if page.is_truncated {
        let resume = match page.items.last() {
            Some(ListedItem::Object(record)) => record.key.clone(),
            Some(ListedItem::CommonPrefix(common_prefix)) => format!("{common_prefix}{SKIP_PAST}"),
            None => String::new(),
        };
        page.next_continuation_token = Some(engine().encode(resume));
    }
    Ok(page)
}
