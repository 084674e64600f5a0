//! Secrets Manager and SSM Parameter Store, over the control plane's store,
//! with every secret value sealed at rest.
//!
//! - [`value`]: [`SecretBytes`], the type a value has in memory: never
//!   printed.
//! - [`seal`]: [`Sealer`], AES-256-GCM under the installation's key, and
//!   [`Sealed`], what records hold instead of values.
//! - [`manager`]: [`SecretsManager`], Secrets Manager's operations
//!   (`secretsmanager`, JSON 1.1).
//! - [`parameters`]: [`ParameterStore`], Parameter Store's operations
//!   (`AmazonSSM`, JSON 1.1).
//!
//! *API boundary:* typed requests in, typed responses or `ApiError` out; the
//! time (`now_ms`) and fresh ids come from the edge. No HTTP, no clock.
//! *Architecture invariant:* no value, in the clear, is written to the store,
//! to a log line or to an error message.

pub mod manager;
pub mod parameters;

mod records;
pub mod seal;
pub mod value;

use std::sync::Arc;

pub use manager::SecretsManager;
pub use parameters::ParameterStore;

pub use seal::{SealError, Sealed, Sealer};
pub use value::SecretBytes;

/// The partition, region and account whose resources a service holds.
pub use flotilla_types::arn::Scope;

/// Seconds since the epoch, as JSON 1.1 writes timestamps.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The services this crate answers, as the edge holds them.
pub struct Services {
    pub manager: SecretsManager,
    pub parameters: ParameterStore,
}

impl Services {
    /// Both services over `store`, sealing with `sealer`.
    pub fn new(store: Arc<dyn flotilla_store::Store>, sealer: Arc<Sealer>, scope: Scope) -> Self {
        Self {
            manager: SecretsManager::new(Arc::clone(&store), Arc::clone(&sealer), scope.clone()),
            parameters: ParameterStore::new(store, sealer, scope),
        }
    }
}
