//! Amazon ECR's wire shapes, generated from botocore's `ecr` model.

mod generated;

pub use generated::*;
