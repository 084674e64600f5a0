//! Typed records over the byte-valued store, and the optimistic retry loop.

use bytes::Bytes;
use flotilla_store::{Entry, Revision, Store, StoreError, Txn};
use flotilla_types::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How many times a mutation re-reads and retries after losing a
/// compare-and-swap race before it gives up with a ServerException.
pub const CONFLICT_RETRIES_MAX: usize = 64;

/// A decoded value and the revision it was read at.
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
}

pub fn encode<T: Serialize>(value: &T) -> Bytes {
    // Serializing our own plain-data records cannot fail: they hold no maps
    // with non-string keys and no custom serializers.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

pub fn decode<T: DeserializeOwned>(entry: &Entry) -> Result<T, ApiError> {
    serde_json::from_slice(&entry.value).map_err(|error| {
        tracing::error!(key = %entry.key, %error, "stored record does not decode");
        ApiError::server(format!("stored record {} is unreadable", entry.key))
    })
}

pub fn store_error(error: StoreError) -> ApiError {
    tracing::error!(%error, "store failed");
    ApiError::server("the state store failed; try again")
}

pub fn get<T: DeserializeOwned>(store: &dyn Store, key: &str) -> Result<Option<Versioned<T>>, ApiError> {
    match store.get(key).map_err(store_error)? {
        Some(entry) => Ok(Some(Versioned { value: decode(&entry)?, revision: entry.mod_revision })),
        None => Ok(None),
    }
}

/// What one attempt of a mutation decided: a transaction to commit and the
/// answer to give once it has committed.
pub enum Attempt<T> {
    Commit(Txn, T),
    /// Nothing to write; answer at once.
    Done(T),
}

/// Runs `attempt` (read, decide, build a conditional transaction) and commits
/// what it returns, re-running it from fresh reads whenever another writer won
/// the race. Every mutation of the control plane goes through here.
pub async fn mutate<T>(
    store: &dyn Store,
    attempt: impl FnMut() -> Result<Attempt<T>, ApiError>,
) -> Result<T, ApiError> {
    mutate_at(store, attempt).await.map(|(answer, _)| answer)
}

/// [`mutate`], also telling the revision its transaction committed at
/// (`None` when the attempt had nothing to write).
pub async fn mutate_at<T>(
    store: &dyn Store,
    mut attempt: impl FnMut() -> Result<Attempt<T>, ApiError>,
) -> Result<(T, Option<Revision>), ApiError> {
    for _ in 0..CONFLICT_RETRIES_MAX {
        match attempt()? {
            Attempt::Done(answer) => return Ok((answer, None)),
            Attempt::Commit(txn, answer) => match store.commit(txn).await {
                Ok(revision) => return Ok((answer, Some(revision))),
                // Let the writer that won run before reading again.
                Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                Err(error) => return Err(store_error(error)),
            },
        }
    }
    Err(ApiError::server("too many concurrent updates to the same resource; try again"))
}

/// Where each kind of record lives in the store. Every key the control plane
/// writes is built here, so the layout can be read in one place.
pub mod keys {
    /// Every key the control plane writes.
    pub const ROOT: &str = "ecs/";
    pub const CLUSTERS: &str = "ecs/clusters/";
    pub const TASK_DEFINITIONS: &str = "ecs/taskdefs/";
    pub const FAMILIES: &str = "ecs/families/";
    pub const ACCOUNT_SETTINGS: &str = "ecs/account-settings/";
    /// Every container instance of every cluster, under `{cluster}/{id}`.
    pub const INSTANCES: &str = "ecs/instances/";
    /// Every task of every cluster, under `{cluster}/{id}`.
    pub const TASKS: &str = "ecs/tasks/";
    /// The pool of /24 task subnets handed to container instances.
    pub const TASK_SUBNETS: &str = "ecs/task-subnets";
    /// Every capacity provider of the account, ACTIVE or INACTIVE, under `{name}`.
    pub const CAPACITY_PROVIDERS: &str = "ecs/capacity-providers/";

    pub fn cluster(name: &str) -> String {
        format!("{CLUSTERS}{name}")
    }

    /// One capacity provider.
    pub fn capacity_provider(name: &str) -> String {
        format!("{CAPACITY_PROVIDERS}{name}")
    }

    /// Container instances registered in a cluster.
    pub fn instances_of(cluster: &str) -> String {
        format!("{INSTANCES}{cluster}/")
    }

    /// One container instance; its id is 32 hex digits, so no id is a
    /// prefix of another and the key doubles as a watch prefix.
    pub fn instance(cluster: &str, instance_id: &str) -> String {
        format!("{INSTANCES}{cluster}/{instance_id}")
    }

    /// Tasks of a cluster, running or recently stopped.
    pub fn tasks_of(cluster: &str) -> String {
        format!("{TASKS}{cluster}/")
    }

    pub fn task(cluster: &str, task_id: &str) -> String {
        format!("{TASKS}{cluster}/{task_id}")
    }

    /// Every ACTIVE or DRAINING service of every cluster, under `{cluster}/{name}`.
    pub const SERVICES: &str = "ecs/services/";
    /// Services deleted and drained (INACTIVE), still describable, under
    /// `{cluster}/{name}`; apart so that a cluster's services count only live ones.
    pub const INACTIVE_SERVICES: &str = "ecs/services-inactive/";
    /// Scale-in protection of tasks, under `{cluster}/{task id}`.
    pub const TASK_PROTECTION: &str = "ecs/task-protection/";

    /// Services of a cluster.
    pub fn services_of(cluster: &str) -> String {
        format!("{SERVICES}{cluster}/")
    }

    /// One ACTIVE or DRAINING service: its deployments and events live in it.
    pub fn service(cluster: &str, name: &str) -> String {
        format!("{SERVICES}{cluster}/{name}")
    }

    pub fn inactive_service(cluster: &str, name: &str) -> String {
        format!("{INACTIVE_SERVICES}{cluster}/{name}")
    }

    pub fn task_protection(cluster: &str, task_id: &str) -> String {
        format!("{TASK_PROTECTION}{cluster}/{task_id}")
    }

    pub fn task_protections_of(cluster: &str) -> String {
        format!("{TASK_PROTECTION}{cluster}/")
    }

    /// `!` sorts below every character a family name may hold, so that all
    /// revisions of `web` come before any revision of `web-a`, as ECS orders them.
    pub fn task_definition(family: &str, revision: i32) -> String {
        format!("{TASK_DEFINITIONS}{family}!{revision:010}")
    }

    pub fn task_definitions_of(family: &str) -> String {
        format!("{TASK_DEFINITIONS}{family}!")
    }

    pub fn family(family: &str) -> String {
        format!("{FAMILIES}{family}")
    }

    /// An account setting of one principal. ARNs may hold `/`, never `!`,
    /// so `!` keeps one principal's prefix from matching another's.
    pub fn account_setting(principal: &str, name: &str) -> String {
        format!("{ACCOUNT_SETTINGS}{principal}!{name}")
    }

    pub fn account_settings_of(principal: &str) -> String {
        format!("{ACCOUNT_SETTINGS}{principal}!")
    }
}
