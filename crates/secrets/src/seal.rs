//! Values at rest: AES-256-GCM under one key per installation.
//!
//! The key is 32 bytes written as 64 hex digits in a file: by default
//! `DATA_DIR/secrets.key`, created with mode 0600 on the server's first
//! start, or a file the operator names (`--secrets-key-file`). A record in
//! the store holds only [`Sealed`] values: a random 96-bit nonce, the
//! ciphertext and its tag, bound by the associated data to the resource and
//! version they belong to, so a sealed value copied into another record
//! does not open.
//!
//! This is the one file of the crate that draws random values (the key and
//! the nonces): they are secrecy, not state, and no test depends on them.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::value::SecretBytes;

pub const KEY_BYTES: usize = 32;
/// The key file's name in the data directory.
pub const KEY_FILE_NAME: &str = "secrets.key";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("reading the key file {path}: {source}")]
    ReadKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the key file {path}: {source}")]
    WriteKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the key file {path} does not hold 64 hex digits (a 256-bit key)")]
    MalformedKey { path: String },
    #[error("the system's random number generator failed")]
    Random,
    #[error("a sealed value was sealed with key {found}, not this server's key {expected}")]
    WrongKey { expected: String, found: String },
    #[error("a sealed value does not open: it is damaged or belongs to another record")]
    Damaged,
}

/// A value sealed for the store: which key sealed it (a fingerprint, not
/// the key) and base64 of nonce, ciphertext and tag.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub key_id: String,
    pub data: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "Sealed(key {}, {} bytes)",
            self.key_id,
            self.data.len()
        )
    }
}

/// Seals and opens values with the installation's key.
pub struct Sealer {
    key: LessSafeKey,
    key_id: String,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Sealer(key {})", self.key_id)
    }
}

impl Sealer {
    /// A sealer over `key`.
    pub fn new(key: &[u8; KEY_BYTES]) -> Self {
        // AES-256-GCM takes any 32-byte key, so this cannot fail.
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is an AES-256 key"));
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        let key_id = hex_encode(&digest.as_ref()[..8]);
        Self {
            key: LessSafeKey::new(unbound),
            key_id,
            random: SystemRandom::new(),
        }
    }

    /// The key in the file at `path`, which must exist.
    pub fn from_key_file(path: &Path) -> Result<Self, SealError> {
        let text = std::fs::read_to_string(path).map_err(|source| SealError::ReadKey {
            path: path.display().to_string(),
            source,
        })?;
        let key = parse_key(text.trim()).ok_or_else(|| SealError::MalformedKey {
            path: path.display().to_string(),
        })?;
        Ok(Self::new(&key))
    }

    /// The key in `DATA_DIR/secrets.key`, made on first use: 32 random
    /// bytes, written to a file only its owner may read (mode 0600) and
    /// flushed to disk with its directory before anything is sealed with it.
    pub fn open_or_create(data_dir: &Path) -> Result<Self, SealError> {
        let path = data_dir.join(KEY_FILE_NAME);
        if path.exists() {
            return Self::from_key_file(&path);
        }
        let random = SystemRandom::new();
        let mut key = [0u8; KEY_BYTES];
        random.fill(&mut key).map_err(|_| SealError::Random)?;
        let write_error = |source| SealError::WriteKey {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(write_error)?;
        let temporary = data_dir.join(format!("{KEY_FILE_NAME}.new"));
        let _ = std::fs::remove_file(&temporary);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temporary).map_err(write_error)?;
        file.write_all(format!("{}\n", hex_encode(&key)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(write_error)?;
        std::fs::rename(&temporary, &path).map_err(write_error)?;
        std::fs::File::open(data_dir)
            .and_then(|directory| directory.sync_all())
            .map_err(write_error)?;
        Ok(Self::new(&key))
    }

    /// The fingerprint of the key, stored beside each sealed value.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `value`, bound to `context` (the resource and version it is
    /// the value of).
    pub fn seal(&self, context: &str, value: &SecretBytes) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut buffer = Vec::with_capacity(NONCE_LEN + value.len() + AES_256_GCM.tag_len());
        buffer.extend_from_slice(&nonce);
        buffer.extend_from_slice(value.expose());
        let mut in_out = buffer.split_off(NONCE_LEN);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| SealError::Damaged)?;
        buffer.extend_from_slice(&in_out);
        Ok(Sealed {
            key_id: self.key_id.clone(),
            data: base64::engine::general_purpose::STANDARD.encode(&buffer),
        })
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<SecretBytes, SealError> {
        if sealed.key_id != self.key_id {
            return Err(SealError::WrongKey {
                expected: self.key_id.clone(),
                found: sealed.key_id.clone(),
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed.data)
            .map_err(|_| SealError::Damaged)?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Damaged);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Damaged)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| SealError::Damaged)?;
        let length = plain.len();
        in_out.truncate(length);
        Ok(SecretBytes::new(in_out))
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn parse_key(text: &str) -> Option<[u8; KEY_BYTES]> {
    if text.len() != KEY_BYTES * 2 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_BYTES];
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_in_its_own_context() {
        let sealer = Sealer::new(&[7u8; KEY_BYTES]);
        let value = SecretBytes::from_string("s3cr3t value".to_owned());
        let sealed = sealer.seal("secret/a!v1", &value).expect("seal");
        assert!(!sealed.data.contains("s3cr3t"));
        assert_eq!(sealer.open("secret/a!v1", &sealed).expect("open"), value);
        assert!(matches!(
            sealer.open("secret/b!v1", &sealed),
            Err(SealError::Damaged)
        ));
        let other = Sealer::new(&[8u8; KEY_BYTES]);
        assert!(matches!(
            other.open("secret/a!v1", &sealed),
            Err(SealError::WrongKey { .. })
        ));
    }

    #[test]
    fn the_key_file_is_made_once_and_private() {
        let directory = tempfile::tempdir().expect("tempdir");
        let first = Sealer::open_or_create(directory.path()).expect("create");
        let sealed = first
            .seal("x", &SecretBytes::from_string("v".to_owned()))
            .expect("seal");
        let second = Sealer::open_or_create(directory.path()).expect("reopen");
        assert_eq!(second.key_id(), first.key_id());
        assert!(second.open("x", &sealed).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(directory.path().join(KEY_FILE_NAME))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_malformed_key_file_is_refused() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("key");
        std::fs::write(&path, "not hex").expect("write");
        assert!(matches!(
            Sealer::from_key_file(&path),
            Err(SealError::MalformedKey { .. })
        ));
    }
}
