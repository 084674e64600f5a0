//! The `aws-chunked` content encoding of S3 uploads:
//!
//! ```text
//! {size hex}[;chunk-signature={64 hex}]\r\n {size bytes} \r\n   … repeated
//! 0[;chunk-signature={64 hex}]\r\n {trailer name}:{value}\r\n … \r\n
//! ```
//!
//! Each chunk's signature (in `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` bodies)
//! is checked as the chunk ends, before its bytes count as received.

use bytes::{Buf, Bytes, BytesMut};
use flotilla_s3::S3Error;
use flotilla_sigv4::{sha256_hex, ChunkSignatures};
use sha2::{Digest, Sha256};

/// Longest chunk header line: a size, `;chunk-signature=` and 64 hex digits
/// fit many times over.
pub const CHUNK_HEADER_MAX_BYTES: usize = 4096;
/// Most bytes of trailing headers after the last chunk.
pub const TRAILER_MAX_BYTES: usize = 16 * 1024;

enum State {
    Header,
    Data { remaining: u64 },
    DataEnd,
    Trailer,
    Done,
}

pub struct ChunkedDecoder {
    buffer: BytesMut,
    state: State,
    signatures: Option<ChunkSignatures>,
    /// The signature the current chunk's header claimed.
    claimed_signature: Option<String>,
    chunk_hasher: Sha256,
    trailer_bytes: usize,
    pub trailers: Vec<(String, String)>,
}

fn malformed(detail: &str) -> S3Error {
    S3Error::InvalidRequest {
        message: format!("The aws-chunked body is malformed: {detail}."),
    }
}

impl ChunkedDecoder {
    /// `signatures` for signed chunks; `None` for `STREAMING-UNSIGNED-PAYLOAD-TRAILER`.
    pub fn new(signatures: Option<ChunkSignatures>) -> Self {
        Self {
            buffer: BytesMut::new(),
            state: State::Header,
            signatures,
            claimed_signature: None,
            chunk_hasher: Sha256::new(),
            trailer_bytes: 0,
            trailers: Vec::new(),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next piece of decoded data, or `None` when more input is needed
    /// (or the body is complete).
    pub fn next_data(&mut self) -> Result<Option<Bytes>, S3Error> {
        loop {
            match &mut self.state {
                State::Header => {
                    let Some(line) = self.take_line(CHUNK_HEADER_MAX_BYTES)? else {
                        return Ok(None);
                    };
                    let (size, signature) = match line.split_once(';') {
                        Some((size, extension)) => {
                            let signature = extension
                                .strip_prefix("chunk-signature=")
                                .ok_or_else(|| malformed("unknown chunk extension"))?;
                            (size.to_owned(), Some(signature.to_owned()))
                        }
                        None => (line.clone(), None),
                    };
                    let size = u64::from_str_radix(size.trim(), 16)
                        .map_err(|_| malformed("a chunk size is not hexadecimal"))?;
                    if self.signatures.is_some() && signature.is_none() {
                        return Err(malformed("a chunk has no chunk-signature"));
                    }
                    self.claimed_signature = signature;
                    self.chunk_hasher = Sha256::new();
                    if size == 0 {
                        self.verify_chunk(sha256_hex(b"").as_str())?;
                        self.state = State::Trailer;
                    } else {
                        self.state = State::Data { remaining: size };
                    }
                }
                State::Data { remaining } => {
                    if self.buffer.is_empty() {
                        return Ok(None);
                    }
                    let take = (*remaining).min(self.buffer.len() as u64) as usize;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::DataEnd;
                    }
                    let data = self.buffer.split_to(take).freeze();
                    self.chunk_hasher.update(&data);
                    return Ok(Some(data));
                }
                State::DataEnd => {
                    if self.buffer.len() < 2 {
                        return Ok(None);
                    }
                    if &self.buffer[..2] != b"\r\n" {
                        return Err(malformed("a chunk is longer than its size says"));
                    }
                    self.buffer.advance(2);
                    let hasher = std::mem::take(&mut self.chunk_hasher);
                    let digest = hex::encode(hasher.finalize());
                    self.verify_chunk(&digest)?;
                    self.state = State::Header;
                }
                State::Trailer => {
                    let Some(line) = self.take_line(TRAILER_MAX_BYTES)? else {
                        return Ok(None);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if self.trailer_bytes > TRAILER_MAX_BYTES {
                        return Err(malformed("its trailing headers are too long"));
                    }
                    if line.is_empty() {
                        self.state = State::Done;
                        continue;
                    }
                    let (name, value) = line
                        .split_once(':')
                        .ok_or_else(|| malformed("a trailing header has no ':'"))?;
                    self.trailers
                        .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
                State::Done => {
                    if !self.buffer.is_empty() {
                        return Err(malformed("bytes follow the last chunk"));
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn verify_chunk(&mut self, chunk_sha256_hex: &str) -> Result<(), S3Error> {
        let Some(signatures) = &mut self.signatures else {
            return Ok(());
        };
        let claimed = self.claimed_signature.take().unwrap_or_default();
        if signatures.verify_chunk(chunk_sha256_hex, &claimed) {
            Ok(())
        } else {
            Err(S3Error::ChunkSignatureMismatch)
        }
    }

    /// A `\r\n`-terminated line, without its terminator.
    fn take_line(&mut self, limit_bytes: usize) -> Result<Option<String>, S3Error> {
        let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\r\n") else {
            if self.buffer.len() > limit_bytes {
                return Err(malformed("a chunk header is too long"));
            }
            return Ok(None);
        };
        let line = self.buffer.split_to(end + 2);
        let text = std::str::from_utf8(&line[..end])
            .map_err(|_| malformed("a chunk header is not text"))?;
        Ok(Some(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Trailers = Vec<(String, String)>;

    fn decode(body: &[u8], piece: usize) -> Result<(Vec<u8>, Trailers), S3Error> {
        let mut decoder = ChunkedDecoder::new(None);
        let mut out = Vec::new();
        for part in body.chunks(piece) {
            decoder.push(part);
            while let Some(data) = decoder.next_data()? {
                out.extend_from_slice(&data);
            }
        }
        assert!(decoder.is_done());
        Ok((out, decoder.trailers))
    }

    #[test]
    fn unsigned_chunks_with_a_trailer_decode_in_any_split() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:abc=\r\n\r\n";
        for piece in [1, 2, 3, 7, body.len()] {
            let (data, trailers) = decode(body, piece).expect("decodes");
            assert_eq!(data, b"hello world");
            assert_eq!(
                trailers,
                [("x-amz-checksum-crc32".to_owned(), "abc=".to_owned())]
            );
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"3\r\nhello\r\n0\r\n\r\n",
            b"0\r\nno-colon\r\n\r\n",
        ] {
            let error = decode(body, 4).expect_err("malformed");
            assert_eq!(error.code(), "InvalidRequest");
        }
    }
}

#[cfg(test)]
mod never_panics {
    use super::*;

    #[test]
    fn the_decoder_never_panics_on_mangled_bodies() {
        const FRAGMENTS: &[&[u8]] = &[
            b"5",
            b"0",
            b"ffffffffffffffffff",
            b";chunk-signature=",
            b"\r\n",
            b"\r",
            b"\n",
            b"hello",
            b"x-amz-checksum-crc32:abc",
            b":",
            b";",
            b"\xff",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5_000 {
            let mut decoder = ChunkedDecoder::new(None);
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            for _ in 0..(state >> 59) {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                decoder.push(FRAGMENTS[(state >> 33) as usize % FRAGMENTS.len()]);
                while let Ok(Some(_)) = decoder.next_data() {}
            }
        }
    }
}
