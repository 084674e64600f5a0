//! IAM's records in the control plane's store, and their key layout.
//!
//! ```text
//! iam/users/NAME             a user, its inline policies, attachments, groups, access key ids
//! iam/groups/NAME            a group, its inline policies, attachments, members
//! iam/roles/NAME             a role, its trust policy, inline policies, attachments
//! iam/instance-profiles/NAME an instance profile and its role
//! iam/policies/NAME          a customer managed policy and its versions
//! iam/access-keys/AKID       a user's access key and its secret
//! iam/sessions/ASIA...       temporary credentials from STS, until they expire
//! iam/server-certificates/NAME a server certificate, its chain and private key
//! iam/generation             rewritten by every IAM change: caches of compiled
//!                            policies hold the revision they were built at
//! ```
//!
//! IAM names are unique without regard to case, so keys hold the name in
//! lowercase and records the name as it was given.

use std::collections::BTreeMap;

use flotilla_store::Txn;
use serde::{Deserialize, Serialize};

pub const USERS: &str = "iam/users/";
pub const GROUPS: &str = "iam/groups/";
pub const ROLES: &str = "iam/roles/";
pub const INSTANCE_PROFILES: &str = "iam/instance-profiles/";
pub const POLICIES: &str = "iam/policies/";
pub const ACCESS_KEYS: &str = "iam/access-keys/";
pub const SESSIONS: &str = "iam/sessions/";
pub const SERVER_CERTIFICATES: &str = "iam/server-certificates/";
pub const GENERATION: &str = "iam/generation";

pub fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}{}", name.to_ascii_lowercase())
}

/// Adds the write every IAM change makes, so that whoever caches what IAM
/// holds (compiled policies, access keys) sees that it changed. It carries
/// no condition: concurrent IAM changes do not conflict on it.
pub fn with_generation(txn: Txn) -> Txn {
    txn.put(GENERATION, &b"{}"[..])
}

/// A secret access key or session token: never printed, never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one answer that hands it out and for
    /// signature verification.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(..)")
    }
}

pub type Tags = Vec<(String, String)>;

/// What users, groups and roles have in common: policies of their own.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Policies {
    /// Inline policies by name, as the documents were given.
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    /// ARNs of attached managed policies, in attachment order.
    #[serde(default)]
    pub attached: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub path: String,
    pub user_id: String,
    pub created_ms: u64,
    #[serde(default)]
    pub permissions_boundary: Option<String>,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default)]
    pub policies: Policies,
    /// Names of the groups the user is in.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub access_keys: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub path: String,
    pub group_id: String,
    pub created_ms: u64,
    #[serde(default)]
    pub policies: Policies,
    /// Names of its users.
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoleRecord {
    pub name: String,
    pub path: String,
    pub role_id: String,
    pub created_ms: u64,
    pub trust_policy: String,
    #[serde(default)]
    pub description: Option<String>,
    pub max_session_duration_seconds: i32,
    #[serde(default)]
    pub permissions_boundary: Option<String>,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default)]
    pub policies: Policies,
    /// Names of the instance profiles that hold it.
    #[serde(default)]
    pub instance_profiles: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceProfileRecord {
    pub name: String,
    pub path: String,
    pub instance_profile_id: String,
    pub created_ms: u64,
    /// The role's name; an instance profile holds at most one.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyVersionRecord {
    pub version_id: String,
    pub document: String,
    pub created_ms: u64,
}

/// A customer managed policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManagedPolicyRecord {
    pub name: String,
    pub path: String,
    pub policy_id: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    #[serde(default)]
    pub description: Option<String>,
    pub default_version_id: String,
    /// Oldest first.
    pub versions: Vec<PolicyVersionRecord>,
    /// The number the next version gets (`v1`, `v2`, ...): never reused.
    pub next_version: u32,
    /// Users, groups and roles it is attached to.
    pub attachment_count: u32,
    /// Users and roles whose permissions boundary it is.
    #[serde(default)]
    pub boundary_count: u32,
    #[serde(default)]
    pub tags: Tags,
}

impl ManagedPolicyRecord {
    pub fn default_document(&self) -> Option<&str> {
        self.versions
            .iter()
            .find(|version| version.version_id == self.default_version_id)
            .map(|version| version.document.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    Active,
    Inactive,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    pub access_key_id: String,
    pub user_name: String,
    pub secret: Secret,
    pub status: KeyStatus,
    pub created_ms: u64,
}

/// Who a set of temporary credentials acts as.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SessionSubject {
    /// AssumeRole: a session of the role.
    Role {
        role_name: String,
        session_name: String,
        /// The session policy passed to AssumeRole, if any.
        #[serde(default)]
        session_policy: Option<String>,
        /// Managed policies passed as session policies (`PolicyArns`).
        #[serde(default)]
        session_policy_arns: Vec<String>,
    },
    /// GetSessionToken: the user itself.
    User { user_name: String },
    /// GetSessionToken by the account's root.
    Root,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    pub access_key_id: String,
    pub secret: Secret,
    pub token: Secret,
    pub expires_ms: u64,
    pub subject: SessionSubject,
}
