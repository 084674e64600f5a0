//! Access keys the verifier accepts, each with a small cache of derived signing keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Most access keys one verifier holds. Keys come from configuration; the
/// bound turns a runaway config file into an error instead of a slow start.
pub const MAX_CREDENTIALS: usize = 10_000;

/// Derived signing keys remembered per access key. A key changes with the UTC
/// date, the region and the service, so a client that talks to a few services
/// across midnight needs a handful; eight leaves room without letting a client
/// that invents scopes grow memory.
pub const SIGNING_KEYS_PER_CREDENTIAL: usize = 8;

/// Longest region or service name accepted in a credential scope. Real ones
/// are under 30 bytes; the bound keeps cached scopes small.
pub const MAX_SCOPE_ELEMENT_LEN: usize = 64;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("access key id is empty")]
    EmptyAccessKeyId,
    #[error(
        "access key id {access_key_id:?} has characters other than visible ascii or has a '/'"
    )]
    InvalidAccessKeyId { access_key_id: String },
    #[error("secret access key for {access_key_id} is empty")]
    EmptySecret { access_key_id: String },
    #[error("access key id {access_key_id} is listed more than once")]
    DuplicateAccessKeyId { access_key_id: String },
    #[error("{count} credentials given, at most {max} are accepted")]
    TooMany { count: usize, max: usize },
}

/// Where [`crate::verify`] finds the secret of the access key a request
/// names: [`Credentials`] from configuration, or a source the caller keeps
/// (IAM's users' keys and temporary credentials, read from a store).
pub trait AccessKeys {
    /// The key's secret with its cache of derived signing keys; `None` for
    /// a key that is unknown, inactive or expired.
    fn secret(&self, access_key_id: &str) -> Option<Arc<SigningSecret>>;
}

impl<T: AccessKeys + ?Sized> AccessKeys for Arc<T> {
    fn secret(&self, access_key_id: &str) -> Option<Arc<SigningSecret>> {
        (**self).secret(access_key_id)
    }
}

/// The access keys a verifier accepts, with their secrets.
///
/// Built once from configuration and shared (behind an `Arc`) by every request
/// handler; lookups take `&self`. To change keys, build a new value.
pub struct Credentials {
    by_access_key_id: HashMap<String, Arc<SigningSecret>>,
}

/// One secret access key and the signing keys derived from it, which a
/// holder keeps for as long as the key is unchanged. Never printed.
pub struct SigningSecret {
    secret_access_key: String,
    signing_keys: Mutex<SigningKeyCache>,
}

impl SigningSecret {
    pub fn new(secret_access_key: impl Into<String>) -> Self {
        SigningSecret {
            secret_access_key: secret_access_key.into(),
            signing_keys: Mutex::new(SigningKeyCache::default()),
        }
    }

    /// The keyed HMAC for `date/region/service`.
    pub(crate) fn signing_key(&self, scope: &ScopeRef<'_>) -> HmacSha256 {
        // A panic while the lock was held cannot leave the cache inconsistent
        // (every slot is written whole), so a poisoned lock is still usable.
        let mut cache = self
            .signing_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.get_or_derive(&self.secret_access_key, scope)
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SigningSecret(..)")
    }
}

impl AccessKeys for Credentials {
    fn secret(&self, access_key_id: &str) -> Option<Arc<SigningSecret>> {
        self.by_access_key_id.get(access_key_id).cloned()
    }
}

impl Credentials {
    /// Loads `(access_key_id, secret_access_key)` pairs.
    pub fn from_pairs<I, A, S>(pairs: I) -> Result<Self, CredentialsError>
    where
        I: IntoIterator<Item = (A, S)>,
        A: Into<String>,
        S: Into<String>,
    {
        let mut by_access_key_id = HashMap::new();
        for (access_key_id, secret_access_key) in pairs {
            let access_key_id = access_key_id.into();
            let secret_access_key = secret_access_key.into();
            if access_key_id.is_empty() {
                return Err(CredentialsError::EmptyAccessKeyId);
            }
            // The access key id is the first element of a `/`-separated scope
            // and travels in a header, so it must be visible ASCII without `/`.
            if !access_key_id
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b'/')
            {
                return Err(CredentialsError::InvalidAccessKeyId { access_key_id });
            }
            if secret_access_key.is_empty() {
                return Err(CredentialsError::EmptySecret { access_key_id });
            }
            if by_access_key_id.contains_key(&access_key_id) {
                return Err(CredentialsError::DuplicateAccessKeyId { access_key_id });
            }
            by_access_key_id.insert(
                access_key_id,
                Arc::new(SigningSecret::new(secret_access_key)),
            );
            if by_access_key_id.len() > MAX_CREDENTIALS {
                return Err(CredentialsError::TooMany {
                    count: by_access_key_id.len(),
                    max: MAX_CREDENTIALS,
                });
            }
        }
        Ok(Self { by_access_key_id })
    }

    pub fn len(&self) -> usize {
        self.by_access_key_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_access_key_id.is_empty()
    }

    pub fn contains_access_key_id(&self, access_key_id: &str) -> bool {
        self.by_access_key_id.contains_key(access_key_id)
    }

    /// The keyed HMAC for `date/region/service`, or `None` for an unknown key.
    #[cfg(test)]
    pub(crate) fn signing_key(
        &self,
        access_key_id: &str,
        scope: &ScopeRef<'_>,
    ) -> Option<HmacSha256> {
        let entry = self.by_access_key_id.get(access_key_id)?;
        Some(entry.signing_key(scope))
    }
}

impl std::fmt::Debug for Credentials {
    /// Lists access key ids only: secrets must never reach a log line.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&str> = self.by_access_key_id.keys().map(String::as_str).collect();
        ids.sort_unstable();
        formatter
            .debug_struct("Credentials")
            .field("access_key_ids", &ids)
            .finish()
    }
}

/// The scope a signing key is derived for, borrowed from the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScopeRef<'a> {
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// A few derived keys per secret, replaced round-robin when full.
///
/// The cache lives beside the secret rather than in one map keyed by
/// secret+date+region+service so that a hit compares borrowed strings and
/// allocates nothing; the secret is implied by the entry.
#[derive(Default)]
struct SigningKeyCache {
    slots: Vec<CachedSigningKey>,
    next_replaced: usize,
}

struct CachedSigningKey {
    date: [u8; 8],
    region: Box<str>,
    service: Box<str>,
    key: HmacSha256,
}

impl SigningKeyCache {
    fn get_or_derive(&mut self, secret_access_key: &str, scope: &ScopeRef<'_>) -> HmacSha256 {
        let hit = self.slots.iter().find(|slot| {
            slot.date.as_slice() == scope.date.as_bytes()
                && &*slot.region == scope.region
                && &*slot.service == scope.service
        });
        if let Some(slot) = hit {
            return slot.key.clone();
        }
        let key = derive_signing_key(secret_access_key, scope);
        let Ok(date) = <[u8; 8]>::try_from(scope.date.as_bytes()) else {
            // Callers validate the date first; an odd one is simply not cached.
            return key;
        };
        let slot = CachedSigningKey {
            date,
            region: scope.region.into(),
            service: scope.service.into(),
            key: key.clone(),
        };
        if self.slots.len() < SIGNING_KEYS_PER_CREDENTIAL {
            self.slots.push(slot);
        } else {
            self.slots[self.next_replaced] = slot;
            self.next_replaced = (self.next_replaced + 1) % SIGNING_KEYS_PER_CREDENTIAL;
        }
        key
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = keyed_hmac(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub(crate) fn keyed_hmac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("hmac accepts keys of any length")
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`,
/// returned already keyed so the caller only feeds it the string to sign.
pub(crate) fn derive_signing_key(secret_access_key: &str, scope: &ScopeRef<'_>) -> HmacSha256 {
    // The first key must be contiguous; this allocation happens on cache misses only.
    let mut prefixed_secret = Vec::with_capacity(4 + secret_access_key.len());
    prefixed_secret.extend_from_slice(b"AWS4");
    prefixed_secret.extend_from_slice(secret_access_key.as_bytes());
    let date_key = hmac_sha256(&prefixed_secret, scope.date.as_bytes());
    let region_key = hmac_sha256(&date_key, scope.region.as_bytes());
    let service_key = hmac_sha256(&region_key, scope.service.as_bytes());
    let signing_key = hmac_sha256(&service_key, b"aws4_request");
    keyed_hmac(&signing_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: ScopeRef<'static> = ScopeRef {
        date: "20150830",
        region: "us-east-1",
        service: "iam",
    };

    #[test]
    fn derived_key_matches_the_aws_documentation_example() {
        // The worked example of the SigV4 documentation: secret
        // wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20150830/us-east-1/iam.
        // A keyed HMAC cannot show its key, so compare the documented
        // signature of the documented string to sign instead.
        let mut probe = derive_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &SCOPE);
        probe.update(
            b"AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n\
              f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59",
        );
        assert_eq!(
            hex::encode(probe.finalize().into_bytes()),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn credentials_reject_bad_configuration() {
        assert_eq!(
            Credentials::from_pairs([("", "s")]).err(),
            Some(CredentialsError::EmptyAccessKeyId)
        );
        assert!(matches!(
            Credentials::from_pairs([("a/b", "s")]),
            Err(CredentialsError::InvalidAccessKeyId { .. })
        ));
        assert!(matches!(
            Credentials::from_pairs([("a b", "s")]),
            Err(CredentialsError::InvalidAccessKeyId { .. })
        ));
        assert!(matches!(
            Credentials::from_pairs([("AKID", "")]),
            Err(CredentialsError::EmptySecret { .. })
        ));
        assert!(matches!(
            Credentials::from_pairs([("AKID", "one"), ("AKID", "two")]),
            Err(CredentialsError::DuplicateAccessKeyId { .. })
        ));
        let too_many = (0..=MAX_CREDENTIALS).map(|index| (format!("AKID{index}"), "secret"));
        assert!(matches!(
            Credentials::from_pairs(too_many),
            Err(CredentialsError::TooMany { .. })
        ));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let credentials =
            Credentials::from_pairs([("AKIDB", "very-secret"), ("AKIDA", "also-secret")])
                .expect("valid credentials");
        let shown = format!("{credentials:?}");
        assert_eq!(
            shown,
            r#"Credentials { access_key_ids: ["AKIDA", "AKIDB"] }"#
        );
    }

    #[test]
    fn cache_stays_bounded_and_keeps_answering() {
        let credentials = Credentials::from_pairs([("AKID", "secret")]).expect("valid");
        let regions: Vec<String> = (0..SIGNING_KEYS_PER_CREDENTIAL * 3)
            .map(|index| format!("region-{index}"))
            .collect();
        for round in 0..2 {
            for region in &regions {
                let scope = ScopeRef {
                    date: "20150830",
                    region,
                    service: "ecs",
                };
                let cached = credentials.signing_key("AKID", &scope).expect("known key");
                let fresh = derive_signing_key("secret", &scope);
                assert_eq!(
                    cached.finalize().into_bytes(),
                    fresh.finalize().into_bytes(),
                    "round {round} {region}"
                );
            }
        }
        let entry = &credentials.by_access_key_id["AKID"];
        let cache = entry.signing_keys.lock().expect("not poisoned");
        assert_eq!(cache.slots.len(), SIGNING_KEYS_PER_CREDENTIAL);
        assert!(credentials.signing_key("UNKNOWN", &SCOPE).is_none());
    }
}
