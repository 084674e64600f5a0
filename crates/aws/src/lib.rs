//! The AWS services Flotilla answers besides ECS and ECR, one module each,
//! generated from botocore's models by `cargo xtask codegen`.
//!
//! `<service>::MODEL` is always present: the protocol, operations, errors and
//! (for Query services) shapes that the edge's registry and protocol layer
//! read; a service that older clients still call in Query besides JSON
//! (CloudWatch) has a `QUERY_MODEL` too. The serde types (`<Service>Request` and every shape) come with the
//! cargo feature of the same name as the module.

pub mod sts {
    mod model;
    pub use model::MODEL;
    #[cfg(feature = "sts")]
    mod types;
    #[cfg(feature = "sts")]
    pub use types::*;
}

pub mod elbv2 {
    mod model;
    pub use model::MODEL;
    #[cfg(feature = "elbv2")]
    mod types;
    #[cfg(feature = "elbv2")]
    pub use types::*;
}

pub mod iam {
    mod model;
    pub use model::MODEL;
    #[cfg(feature = "iam")]
    mod types;
    #[cfg(feature = "iam")]
    pub use types::*;
}

pub mod logs {
    mod model;
    pub use model::MODEL;
    #[cfg(feature = "logs")]
    mod types;
    #[cfg(feature = "logs")]
    pub use types::*;
}

pub mod monitoring {
    mod model;
    pub use model::{MODEL, QUERY_MODEL};
    #[cfg(feature = "monitoring")]
    mod types;
    #[cfg(feature = "monitoring")]
    pub use types::*;
}

pub mod application_autoscaling {
    mod model;
    pub use model::MODEL;
    #[cfg(feature = "application_autoscaling")]
    mod types;
    #[cfg(feature = "application_autoscaling")]
    pub use types::*;
}

pub mod secretsmanager {
    mod model;
    pub use model::MODEL;
    #[cfg(feature = "secretsmanager")]
    mod types;
    #[cfg(feature = "secretsmanager")]
    pub use types::*;
}

pub mod ssm {
    mod model;
    pub use model::MODEL;
    #[cfg(feature = "ssm")]
    mod types;
    #[cfg(feature = "ssm")]
    pub use types::*;
}

pub mod events {
    mod model;
    pub use model::MODEL;
    #[cfg(feature = "events")]
    mod types;
    #[cfg(feature = "events")]
    pub use types::*;
}

pub mod servicediscovery {
    mod model;
    pub use model::MODEL;
    #[cfg(feature = "servicediscovery")]
    mod types;
    #[cfg(feature = "servicediscovery")]
    pub use types::*;
}
