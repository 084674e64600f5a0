//! Reading a whole object back with its SHA-256 checked.

use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

/// Reads `inner`, an object of `size_bytes`, hashing what passes. The read
/// that brings the last bytes checks the hash first: when it is not the one
/// recorded at store time, those bytes are withheld and the read fails, so
/// a corrupted blob never reaches a client as a complete response (one with
/// all the bytes its `Content-Length` promised).
pub struct HashCheckedReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    expected_sha256_hex: String,
    size_bytes: u64,
    read_bytes: u64,
}

impl<R> HashCheckedReader<R> {
    pub fn new(inner: R, expected_sha256_hex: &str, size_bytes: u64) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            expected_sha256_hex: expected_sha256_hex.to_owned(),
            size_bytes,
            read_bytes: 0,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashCheckedReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        match Pin::new(&mut self.inner).poll_read(context, buffer) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let this = &mut *self;
        let read = &buffer.filled()[before..];
        this.read_bytes += read.len() as u64;
        if let Some(hasher) = &mut this.hasher {
            hasher.update(read);
        }
        if this.read_bytes >= this.size_bytes || read.is_empty() {
            if let Some(hasher) = this.hasher.take() {
                let actual = hex::encode(hasher.finalize());
                if actual != this.expected_sha256_hex {
                    buffer.set_filled(before);
                    tracing::error!(
                        expected = %this.expected_sha256_hex,
                        %actual,
                        "an object's bytes on disk do not match the hash recorded when it was stored"
                    );
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "object data is corrupt: its SHA-256 does not match the stored one",
                    )));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_changed_byte_fails_the_read_at_its_end() {
        let good = hex::encode(Sha256::digest(b"hello"));
        let mut out = Vec::new();
        HashCheckedReader::new(&b"hello"[..], &good, 5)
            .read_to_end(&mut out)
            .await
            .expect("reads");
        assert_eq!(out, b"hello");
        let mut partial = Vec::new();
        let error = HashCheckedReader::new(&b"hellO"[..], &good, 5)
            .read_to_end(&mut partial)
            .await
            .expect_err("corrupt");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        // The read that would have completed the object gave nothing.
        assert!(partial.len() < 5, "{partial:?}");
    }
}
