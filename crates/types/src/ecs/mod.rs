//! Amazon ECS's wire shapes, generated from botocore's `ecs` model.

mod generated;

pub use generated::*;
