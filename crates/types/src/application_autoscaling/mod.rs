//! Application Auto Scaling's wire shapes, generated from botocore's
//! `application-autoscaling` model (AWS JSON 1.1).

mod generated;

pub use generated::*;
