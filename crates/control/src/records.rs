//! Where the control plane's records live in the store, and the typed
//! records and retry loop of `flotilla_records` under the names its modules use.

// The typed get and the retry loop are shared with the registry.
pub use flotilla_records::{
    decode, encode, get, mutate, mutate_at, store_error, Attempt, Versioned,
};

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
    /// RunTask client tokens and what their RunTask answered, under `{cluster}/{token}`.
    pub const RUN_TOKENS: &str = "ecs/run-tokens/";
    /// Every capacity provider of the account, ACTIVE or INACTIVE, under `{name}`.
    pub const CAPACITY_PROVIDERS: &str = "ecs/capacity-providers/";

    /// Hosts of every host group, under `{group}/{host id}`.
    pub const HOSTS: &str = "ecs/hosts/";

    /// Hosts of one host group.
    pub fn hosts_of(group: &str) -> String {
        format!("{HOSTS}{group}/")
    }

    /// One host of a host group.
    pub fn host(group: &str, host_id: &str) -> String {
        format!("{HOSTS}{group}/{host_id}")
    }

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

    /// One RunTask client token of a cluster.
    pub fn run_token(cluster: &str, token: &str) -> String {
        format!("{RUN_TOKENS}{cluster}/{token}")
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

    /// CloudWatch metric alarms, under `{name}`.
    pub const ALARMS: &str = "cloudwatch/alarms/";
    /// Application Auto Scaling's scalable targets (with their policies,
    /// scheduled actions, cooldowns and activities), under their resource id.
    pub const SCALABLE_TARGETS: &str = "autoscaling/targets/";

    pub fn alarm(name: &str) -> String {
        format!("{ALARMS}{name}")
    }

    pub fn scalable_target(resource_id: &str) -> String {
        format!("{SCALABLE_TARGETS}{resource_id}")
    }
}
