//! CloudWatch Logs wire shapes, generated from botocore's `logs` model.

mod generated;

pub use generated::*;
