//! Amazon CloudWatch's wire shapes (service `monitoring`), generated from
//! botocore's `cloudwatch` model. Spoken as AWS JSON 1.0; the model is
//! `awsQueryCompatible`, so errors carry the Query code in
//! `x-amzn-query-error` as well.

mod generated;

pub use generated::*;
