//! Registry tokens: what `aws ecr get-login-password` prints and `docker
//! login` sends back as the password of user `AWS` on every request.
//!
//! A token is `v1.PAYLOAD.MAC`: PAYLOAD is base64url JSON naming the
//! principal, the account and the expiry; MAC is HMAC-SHA256 over
//! `v1.PAYLOAD` with a key kept in the data directory. Nothing about issued
//! tokens is stored: the signature is the proof, the expiry is inside it.

use std::io::{Read, Write};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a token is valid, as ECR's are.
pub const TOKEN_LIFETIME_MS: u64 = 12 * 60 * 60 * 1000;
/// Longest token text verified; anything longer is refused unread.
pub const TOKEN_MAX_CHARS: usize = 4096;
const VERSION: &str = "v1";
const KEY_BYTES: usize = 32;

/// Who a token was issued to, and until when it is good.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    #[serde(rename = "p")]
    pub principal_arn: String,
    #[serde(rename = "a")]
    pub account_id: String,
    #[serde(rename = "e")]
    pub expires_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the authorization token is malformed")]
    Malformed,
    #[error("the authorization token's signature is not valid")]
    BadSignature,
    #[error("the authorization token has expired")]
    Expired,
}

/// The signing key.
pub struct TokenKey {
    key: [u8; KEY_BYTES],
}

impl TokenKey {
    pub fn from_bytes(key: [u8; KEY_BYTES]) -> Self {
        Self { key }
    }

    /// Reads the key at `path`, or creates it (owner-only) from `fresh`.
    pub fn load_or_create(
        path: &Path,
        fresh: impl FnOnce() -> std::io::Result<[u8; KEY_BYTES]>,
    ) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "token key is not 32 bytes",
                    )
                })?;
                Ok(Self { key })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                use std::os::unix::fs::OpenOptionsExt;
                let key = fresh()?;
                let partial = path.with_extension("partial");
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&partial)?;
                file.write_all(&key)?;
                file.sync_all()?;
                std::fs::rename(&partial, path)?;
                Ok(Self { key })
            }
            Err(error) => Err(error),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    /// A token for `principal_arn` of `account_id`, good for [`TOKEN_LIFETIME_MS`].
    pub fn issue(&self, principal_arn: &str, account_id: &str, now_ms: u64) -> (String, Claims) {
        let claims = Claims {
            principal_arn: principal_arn.to_owned(),
            account_id: account_id.to_owned(),
            expires_at_ms: now_ms.saturating_add(TOKEN_LIFETIME_MS),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signed = format!("{VERSION}.{payload}");
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        (format!("{signed}.{signature}"), claims)
    }

    /// The claims of a token this key signed and that has not expired.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, TokenError> {
        if token.len() > TOKEN_MAX_CHARS {
            return Err(TokenError::Malformed);
        }
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (version, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if version != VERSION {
            return Err(TokenError::Malformed);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if now_ms >= claims.expires_at_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// 32 bytes from the kernel's random source, for a new key.
pub fn random_key() -> std::io::Result<[u8; KEY_BYTES]> {
    let mut key = [0; KEY_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire() {
        let key = TokenKey::from_bytes([7; 32]);
        let (token, claims) = key.issue("arn:aws:iam::000000000000:root", "000000000000", 1_000);
        assert_eq!(claims.expires_at_ms, 1_000 + TOKEN_LIFETIME_MS);
        assert_eq!(key.verify(&token, 1_000).unwrap(), claims);
        assert_eq!(
            key.verify(&token, 1_000 + TOKEN_LIFETIME_MS - 1).unwrap(),
            claims
        );
        assert_eq!(
            key.verify(&token, 1_000 + TOKEN_LIFETIME_MS),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forged_and_garbled_tokens_are_refused() {
        let key = TokenKey::from_bytes([7; 32]);
        let other = TokenKey::from_bytes([8; 32]);
        let (token, _) = key.issue("me", "000000000000", 0);
        assert_eq!(other.verify(&token, 0), Err(TokenError::BadSignature));
        // A payload with a later expiry, keeping the old signature.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let forged_claims = Claims {
            principal_arn: "me".into(),
            account_id: "000000000000".into(),
            expires_at_ms: u64::MAX,
        };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        assert_ne!(signed, format!("v1.{forged_payload}"));
        assert_eq!(
            key.verify(&format!("v1.{forged_payload}.{signature}"), 0),
            Err(TokenError::BadSignature)
        );
        for garbage in [
            "",
            "v1",
            "v1..",
            "v2.a.b",
            "v1.a.!!!",
            &"x".repeat(TOKEN_MAX_CHARS + 1),
        ] {
            assert!(key.verify(garbage, 0).is_err(), "{garbage}");
        }
    }

    #[test]
    fn the_key_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        let first = TokenKey::load_or_create(&path, random_key).unwrap();
        let (token, _) = first.issue("me", "1", 0);
        let again =
            TokenKey::load_or_create(&path, || panic!("must not create a second key")).unwrap();
        assert!(again.verify(&token, 0).is_ok());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
