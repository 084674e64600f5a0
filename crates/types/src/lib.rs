//! Wire types: the shapes AWS clients send and receive, as plain data.
//!
//! *Architecture invariant:* this crate does no I/O and knows nothing of HTTP,
//! storage or time. It decodes bytes into typed requests and names errors the
//! way AWS clients expect them; everything else happens in the crates above.

pub mod acs;
pub mod arn;
pub mod awslogs;
pub mod ecr;
pub mod ecs;
mod error;
pub mod flotilla;

pub use error::{ApiError, DecodeError};

/// Decodes a JSON request body, naming the member at fault when it does not fit.
/// An empty body is an empty object, as AWS services treat it.
pub fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        DecodeError::from_serde(path, &inner)
    })?;
    deserializer
        .end()
        .map_err(|error| DecodeError::from_serde(String::new(), &error))?;
    Ok(value)
}

/// Decodes a request already made into a JSON value (by the Query protocol's
/// form decoder), naming the member at fault as [`decode_json`] does.
pub fn decode_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        DecodeError::from_serde(path, &inner)
    })
}
