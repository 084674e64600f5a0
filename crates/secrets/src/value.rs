//! The secret value type: bytes that are never printed.

/// A secret's bytes (a SecretString's UTF-8, a SecretBinary, a
/// SecureString's value) in memory.
///
/// *Architecture invariant:* no `Display`, no `Serialize`, and a `Debug`
/// that names no byte, so a value cannot reach a log line, a metric or an
/// error message by accident; the bytes are wiped when dropped. The only
/// ways out are [`SecretBytes::expose`] and [`SecretBytes::into_exposed_string`],
/// at the places that must hand the value to its reader.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn from_string(text: String) -> Self {
        Self(text.into_bytes())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes, for the one place that must use them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, for an answer that carries it (GetSecretValue's
    /// SecretString, GetParameter's Value). `None` when it is not UTF-8.
    pub fn into_exposed_string(mut self) -> Option<String> {
        let bytes = std::mem::take(&mut self.0);
        String::from_utf8(bytes).ok()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SecretBytes([REDACTED])")
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        // Best effort: overwrite before the allocator gets the memory back.
        for byte in self.0.iter_mut() {
            // A volatile write is unsafe; a plain one the optimizer may drop,
            // which black_box discourages.
            *byte = 0;
        }
        std::hint::black_box(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_no_byte() {
        let value = SecretBytes::from_string("hunter2".to_owned());
        let printed = format!("{value:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(value.expose(), b"hunter2");
    }
}
