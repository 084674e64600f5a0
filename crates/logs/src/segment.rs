//! The on-disk form of events: segment files made of chunks.
//!
//! A chunk is one accepted PutLogEvents batch for one stream (or a chunk
//! moved by compaction, byte for byte):
//!
//! ```text
//! magic u32 | payload_len u32 | crc32 u32 | count u32 | stream_id u64 | first_seq u64
//! | min_timestamp i64 | max_timestamp i64 | ingestion_ms i64 | payload
//! payload = count × (timestamp i64 | message_len u32 | message bytes)
//! ```
//!
//! All integers are little-endian. The CRC covers everything after itself,
//! so a torn write at the tail of the active segment is detected on open.

/// Marks the start of a chunk ("FLG1").
pub const CHUNK_MAGIC: u32 = 0x3147_4c46;
pub const CHUNK_HEADER_BYTES: usize = 56;
/// Bytes each event takes in a chunk besides its message.
pub const EVENT_OVERHEAD_BYTES: usize = 12;

/// A chunk header, as written and as kept in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub count: u32,
    pub stream_id: u64,
    pub first_seq: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub ingestion_ms: i64,
}

/// One event inside a decoded chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent<'a> {
    pub timestamp: i64,
    pub seq: u64,
    pub message: &'a str,
}

/// Encodes one chunk; `events` must be non-empty.
pub fn encode_chunk(
    stream_id: u64,
    first_seq: u64,
    ingestion_ms: i64,
    events: &[(i64, &str)],
) -> (ChunkHeader, Vec<u8>) {
    let payload_len: usize = events
        .iter()
        .map(|(_, message)| EVENT_OVERHEAD_BYTES + message.len())
        .sum();
    let mut bytes = Vec::with_capacity(CHUNK_HEADER_BYTES + payload_len);
    let min_timestamp = events.iter().map(|e| e.0).min().unwrap_or(0);
    let max_timestamp = events.iter().map(|e| e.0).max().unwrap_or(0);
    let mut header = ChunkHeader {
        payload_len: payload_len as u32,
        crc: 0,
        count: events.len() as u32,
        stream_id,
        first_seq,
        min_timestamp,
        max_timestamp,
        ingestion_ms,
    };
    bytes.resize(CHUNK_HEADER_BYTES, 0);
    for (timestamp, message) in events {
        bytes.extend_from_slice(&timestamp.to_le_bytes());
        bytes.extend_from_slice(&(message.len() as u32).to_le_bytes());
        bytes.extend_from_slice(message.as_bytes());
    }
    write_header(&mut bytes, &header);
    header.crc = crc32(&bytes[12..]);
    bytes[8..12].copy_from_slice(&header.crc.to_le_bytes());
    (header, bytes)
}

fn write_header(bytes: &mut [u8], header: &ChunkHeader) {
    bytes[0..4].copy_from_slice(&CHUNK_MAGIC.to_le_bytes());
    bytes[4..8].copy_from_slice(&header.payload_len.to_le_bytes());
    bytes[8..12].copy_from_slice(&header.crc.to_le_bytes());
    bytes[12..16].copy_from_slice(&header.count.to_le_bytes());
    bytes[16..24].copy_from_slice(&header.stream_id.to_le_bytes());
    bytes[24..32].copy_from_slice(&header.first_seq.to_le_bytes());
    bytes[32..40].copy_from_slice(&header.min_timestamp.to_le_bytes());
    bytes[40..48].copy_from_slice(&header.max_timestamp.to_le_bytes());
    bytes[48..56].copy_from_slice(&header.ingestion_ms.to_le_bytes());
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Parses a chunk header; `None` when the bytes are not one.
pub fn decode_header(bytes: &[u8]) -> Option<ChunkHeader> {
    if bytes.len() < CHUNK_HEADER_BYTES || u32_at(bytes, 0) != CHUNK_MAGIC {
        return None;
    }
    Some(ChunkHeader {
        payload_len: u32_at(bytes, 4),
        crc: u32_at(bytes, 8),
        count: u32_at(bytes, 12),
        stream_id: u64_at(bytes, 16),
        first_seq: u64_at(bytes, 24),
        min_timestamp: u64_at(bytes, 32) as i64,
        max_timestamp: u64_at(bytes, 40) as i64,
        ingestion_ms: u64_at(bytes, 48) as i64,
    })
}

/// Whether a whole chunk (header and payload) is intact.
pub fn chunk_is_intact(chunk: &[u8]) -> bool {
    match decode_header(chunk) {
        Some(header) => {
            chunk.len() == CHUNK_HEADER_BYTES + header.payload_len as usize
                && crc32(&chunk[12..]) == header.crc
        }
        None => false,
    }
}

/// The events of a chunk's payload; stops at the first malformed event.
pub fn decode_events<'a>(header: &ChunkHeader, payload: &'a [u8]) -> Vec<StoredEvent<'a>> {
    let mut events = Vec::with_capacity(header.count as usize);
    let mut at = 0usize;
    let mut seq = header.first_seq;
    while at + EVENT_OVERHEAD_BYTES <= payload.len() {
        let timestamp = u64_at(payload, at) as i64;
        let length = u32_at(payload, at + 8) as usize;
        let start = at + EVENT_OVERHEAD_BYTES;
        let Some(message) = payload.get(start..start + length) else {
            break;
        };
        let Ok(message) = std::str::from_utf8(message) else {
            break;
        };
        events.push(StoredEvent {
            timestamp,
            seq,
            message,
        });
        seq += 1;
        at = start + length;
    }
    events
}

/// CRC-32 (IEEE), table driven.
pub fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        table
    });
    let mut crc = !0u32;
    for &byte in bytes {
        crc = table[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_detect_corruption() {
        let (header, mut bytes) = encode_chunk(7, 40, 1000, &[(5, "a"), (6, "héllo")]);
        assert!(chunk_is_intact(&bytes));
        assert_eq!(decode_header(&bytes), Some(header));
        let events = decode_events(&header, &bytes[CHUNK_HEADER_BYTES..]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].message, "héllo");
        assert_eq!(events[1].seq, 41);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(!chunk_is_intact(&bytes));
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
