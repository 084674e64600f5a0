//! The additional checksums S3 clients send with an object
//! (`x-amz-checksum-crc32`, `-crc32c`, `-sha256`, base64 of the big-endian
//! value), computed as the object is written and kept to be returned.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Sha256,
}

impl ChecksumAlgorithm {
    /// The algorithm a `x-amz-checksum-*` header or `x-amz-sdk-checksum-algorithm` names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "crc32" => Some(Self::Crc32),
            "crc32c" => Some(Self::Crc32c),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    /// The header that carries it: `x-amz-checksum-crc32` and so on.
    pub fn header_name(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The name S3 uses in its messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Sha256 => "SHA256",
        }
    }
}

/// Reflected CRC-32 polynomials: IEEE 802.3 (CRC32) and Castagnoli (CRC32C).
const CRC32_POLYNOMIAL: u32 = 0xEDB8_8320;
const CRC32C_POLYNOMIAL: u32 = 0x82F6_3B78;

const fn crc_table(polynomial: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut value = index as u32;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 1 == 1 {
                (value >> 1) ^ polynomial
            } else {
                value >> 1
            };
            bit += 1;
        }
        table[index] = value;
        index += 1;
    }
    table
}

static CRC32_TABLE: [u32; 256] = crc_table(CRC32_POLYNOMIAL);
static CRC32C_TABLE: [u32; 256] = crc_table(CRC32C_POLYNOMIAL);

/// A checksum being computed.
pub enum Checksummer {
    Crc {
        table: &'static [u32; 256],
        state: u32,
    },
    Sha256(Sha256),
}

impl Checksummer {
    pub fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Crc32 => Self::Crc {
                table: &CRC32_TABLE,
                state: u32::MAX,
            },
            ChecksumAlgorithm::Crc32c => Self::Crc {
                table: &CRC32C_TABLE,
                state: u32::MAX,
            },
            ChecksumAlgorithm::Sha256 => Self::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Crc { table, state } => {
                for &byte in bytes {
                    *state = table[((*state ^ u32::from(byte)) & 0xFF) as usize] ^ (*state >> 8);
                }
            }
            Self::Sha256(hasher) => hasher.update(bytes),
        }
    }

    /// The value as S3 writes it: base64 of the big-endian checksum.
    pub fn finish_base64(self) -> String {
        let engine = base64::engine::general_purpose::STANDARD;
        match self {
            Self::Crc { state, .. } => engine.encode((!state).to_be_bytes()),
            Self::Sha256(hasher) => engine.encode(hasher.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(algorithm: ChecksumAlgorithm, bytes: &[u8]) -> String {
        let mut checksummer = Checksummer::new(algorithm);
        checksummer.update(bytes);
        checksummer.finish_base64()
    }

    #[test]
    fn crcs_match_their_check_values() {
        // The standard check input "123456789": CRC32 0xCBF43926, CRC32C 0xE3069283.
        let engine = base64::engine::general_purpose::STANDARD;
        assert_eq!(
            checksum(ChecksumAlgorithm::Crc32, b"123456789"),
            engine.encode(0xCBF4_3926u32.to_be_bytes())
        );
        assert_eq!(
            checksum(ChecksumAlgorithm::Crc32c, b"123456789"),
            engine.encode(0xE306_9283u32.to_be_bytes())
        );
    }
}
