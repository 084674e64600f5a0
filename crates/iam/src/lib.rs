//! AWS Identity and Access Management over the control plane's store:
//! users and their access keys, groups, roles and their trust policies,
//! inline and managed policies (customer ones with versions, and AWS's own
//! from `flotilla_iam_policy::managed`), permissions boundaries, instance
//! profiles, server certificates and tags; and STS's sessions (AssumeRole, GetSessionToken).
//!
//! [`Iam::handle`] takes the generated wire types and answers the output
//! value the edge writes as XML. [`Iam::access_key`] and
//! [`Iam::principal_policies`] are what the edge authenticates and
//! authorizes with: they read the store on every call (a local read), so a
//! key deleted or made inactive on any replica is refused at once, and they
//! cache what is costly (derived signing keys, compiled policies) keyed by
//! the revision it was built at.
//!
//! *Architecture invariant:* no clock and no randomness; `now_ms` and fresh
//! ids come in through [`Context`]. Secrets are [`records::Secret`]s and are
//! never logged.

#![forbid(unsafe_code)]

use std::sync::Arc;

use flotilla_aws::iam::IamRequest;
use flotilla_records::Versioned;
use flotilla_store::Store;
use flotilla_types::ApiError;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

mod authority;
mod certificates;
pub mod errors;
mod groups;
mod policies;
pub mod records;
mod roles;
mod sessions;
mod users;

pub use authority::{Identity, KeyLookup, RequestFacts, ResolvedKey};
pub use certificates::{CertificatePem, CertificateUsers, SERVER_CERTIFICATES_MAX};
pub use sessions::{ServiceSession, SESSION_DURATION_SECONDS_MAX, SESSION_DURATION_SECONDS_MIN};

/// What a request brings that IAM may not read for itself.
pub struct Context<'a> {
    pub now_ms: u64,
    /// Fresh random ids (version-4 UUIDs) from the edge's id source.
    pub fresh_id: &'a (dyn Fn() -> String + Send + Sync),
}

/// IAM for one account.
pub struct Iam {
    store: Arc<dyn Store>,
    account_id: String,
    cache: authority::Cache,
    /// Set once, by whoever composes IAM with a load balancer.
    certificate_users: std::sync::OnceLock<Arc<dyn CertificateUsers>>,
}

/// Longest page a List operation answers, and its default: IAM's.
pub const MAX_ITEMS_MAX: i32 = 1000;
pub const MAX_ITEMS_DEFAULT: i32 = 100;

/// Account quotas: IAM's defaults. They also bound every listing, which
/// reads the records of one kind.
pub const USERS_MAX: usize = 5000;
pub const GROUPS_MAX: usize = 300;
pub const ROLES_MAX: usize = 1000;
pub const CUSTOMER_POLICIES_MAX: usize = 1500;
pub const INSTANCE_PROFILES_MAX: usize = 1000;
pub const ACCESS_KEYS_PER_USER_MAX: usize = 2;
pub const ATTACHED_POLICIES_MAX: usize = 10;
pub const POLICY_VERSIONS_MAX: usize = 5;
pub const GROUPS_PER_USER_MAX: usize = 10;

impl Iam {
    pub fn new(store: Arc<dyn Store>, account_id: impl Into<String>) -> Self {
        Iam {
            store,
            account_id: account_id.into(),
            cache: authority::Cache::default(),
            certificate_users: std::sync::OnceLock::new(),
        }
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// One IAM operation; `Ok(None)` for an operation Flotilla does not
    /// implement, which the caller refuses in the service's words.
    pub async fn handle(
        &self,
        context: &Context<'_>,
        request: IamRequest,
    ) -> Result<Option<serde_json::Value>, ApiError> {
        if let Some(member) = request.missing_required() {
            return Err(errors::missing(member));
        }
        use IamRequest as Q;
        let value = match request {
            Q::CreateUser(r) => to_value(self.create_user(context, r).await?),
            Q::GetUser(r) => to_value(self.get_user(r)?),
            Q::ListUsers(r) => to_value(self.list_users(r)?),
            Q::UpdateUser(r) => unit(self.update_user(r).await?),
            Q::DeleteUser(r) => unit(self.delete_user(r).await?),
            Q::TagUser(r) => unit(self.tag_user(r).await?),
            Q::UntagUser(r) => unit(self.untag_user(r).await?),
            Q::ListUserTags(r) => to_value(self.list_user_tags(r)?),
            Q::CreateAccessKey(r) => to_value(self.create_access_key(context, r).await?),
            Q::ListAccessKeys(r) => to_value(self.list_access_keys(r)?),
            Q::UpdateAccessKey(r) => unit(self.update_access_key(r).await?),
            Q::DeleteAccessKey(r) => unit(self.delete_access_key(r).await?),
            Q::CreateGroup(r) => to_value(self.create_group(context, r).await?),
            Q::GetGroup(r) => to_value(self.get_group(r)?),
            Q::ListGroups(r) => to_value(self.list_groups(r)?),
            Q::DeleteGroup(r) => unit(self.delete_group(r).await?),
            Q::AddUserToGroup(r) => unit(self.add_user_to_group(r).await?),
            Q::RemoveUserFromGroup(r) => unit(self.remove_user_from_group(r).await?),
            Q::ListGroupsForUser(r) => to_value(self.list_groups_for_user(r)?),
            Q::CreateRole(r) => to_value(self.create_role(context, r).await?),
            Q::GetRole(r) => to_value(self.get_role(r)?),
            Q::ListRoles(r) => to_value(self.list_roles(r)?),
            Q::UpdateRole(r) => unit(self.update_role(r).await?),
            Q::UpdateRoleDescription(r) => to_value(self.update_role_description(r).await?),
            Q::DeleteRole(r) => unit(self.delete_role(r).await?),
            Q::UpdateAssumeRolePolicy(r) => unit(self.update_assume_role_policy(r).await?),
            Q::TagRole(r) => unit(self.tag_role(r).await?),
            Q::UntagRole(r) => unit(self.untag_role(r).await?),
            Q::ListRoleTags(r) => to_value(self.list_role_tags(r)?),
            Q::CreateInstanceProfile(r) => {
                to_value(self.create_instance_profile(context, r).await?)
            }
            Q::GetInstanceProfile(r) => to_value(self.get_instance_profile(r)?),
            Q::ListInstanceProfiles(r) => to_value(self.list_instance_profiles(r)?),
            Q::ListInstanceProfilesForRole(r) => to_value(self.list_instance_profiles_for_role(r)?),
            Q::DeleteInstanceProfile(r) => unit(self.delete_instance_profile(r).await?),
            Q::AddRoleToInstanceProfile(r) => unit(self.add_role_to_instance_profile(r).await?),
            Q::RemoveRoleFromInstanceProfile(r) => {
                unit(self.remove_role_from_instance_profile(r).await?)
            }
            Q::PutUserPolicy(r) => unit(
                self.put_inline(
                    policies::Owner::User,
                    text(&r.user_name),
                    text(&r.policy_name),
                    text(&r.policy_document),
                )
                .await?,
            ),
            Q::PutRolePolicy(r) => unit(
                self.put_inline(
                    policies::Owner::Role,
                    text(&r.role_name),
                    text(&r.policy_name),
                    text(&r.policy_document),
                )
                .await?,
            ),
            Q::PutGroupPolicy(r) => unit(
                self.put_inline(
                    policies::Owner::Group,
                    text(&r.group_name),
                    text(&r.policy_name),
                    text(&r.policy_document),
                )
                .await?,
            ),
            Q::GetUserPolicy(r) => {
                let (name, document) = self.get_inline(
                    policies::Owner::User,
                    text(&r.user_name),
                    text(&r.policy_name),
                )?;
                to_value(flotilla_aws::iam::GetUserPolicyResponse {
                    user_name: Some(name),
                    policy_name: r.policy_name,
                    policy_document: Some(document),
                })
            }
            Q::GetRolePolicy(r) => {
                let (name, document) = self.get_inline(
                    policies::Owner::Role,
                    text(&r.role_name),
                    text(&r.policy_name),
                )?;
                to_value(flotilla_aws::iam::GetRolePolicyResponse {
                    role_name: Some(name),
                    policy_name: r.policy_name,
                    policy_document: Some(document),
                })
            }
            Q::GetGroupPolicy(r) => {
                let (name, document) = self.get_inline(
                    policies::Owner::Group,
                    text(&r.group_name),
                    text(&r.policy_name),
                )?;
                to_value(flotilla_aws::iam::GetGroupPolicyResponse {
                    group_name: Some(name),
                    policy_name: r.policy_name,
                    policy_document: Some(document),
                })
            }
            Q::ListUserPolicies(r) => to_value(self.list_inline(
                policies::Owner::User,
                text(&r.user_name),
                r.marker.as_deref(),
                r.max_items,
                |page| flotilla_aws::iam::ListUserPoliciesResponse {
                    is_truncated: Some(page.truncated),
                    marker: page.marker,
                    policy_names: Some(page.items),
                },
            )?),
            Q::ListRolePolicies(r) => to_value(self.list_inline(
                policies::Owner::Role,
                text(&r.role_name),
                r.marker.as_deref(),
                r.max_items,
                |page| flotilla_aws::iam::ListRolePoliciesResponse {
                    is_truncated: Some(page.truncated),
                    marker: page.marker,
                    policy_names: Some(page.items),
                },
            )?),
            Q::ListGroupPolicies(r) => to_value(self.list_inline(
                policies::Owner::Group,
                text(&r.group_name),
                r.marker.as_deref(),
                r.max_items,
                |page| flotilla_aws::iam::ListGroupPoliciesResponse {
                    is_truncated: Some(page.truncated),
                    marker: page.marker,
                    policy_names: Some(page.items),
                },
            )?),
            Q::DeleteUserPolicy(r) => unit(
                self.delete_inline(
                    policies::Owner::User,
                    text(&r.user_name),
                    text(&r.policy_name),
                )
                .await?,
            ),
            Q::DeleteRolePolicy(r) => unit(
                self.delete_inline(
                    policies::Owner::Role,
                    text(&r.role_name),
                    text(&r.policy_name),
                )
                .await?,
            ),
            Q::DeleteGroupPolicy(r) => unit(
                self.delete_inline(
                    policies::Owner::Group,
                    text(&r.group_name),
                    text(&r.policy_name),
                )
                .await?,
            ),
            Q::UploadServerCertificate(r) => {
                to_value(self.upload_server_certificate(context, r).await?)
            }
            Q::GetServerCertificate(r) => to_value(self.get_server_certificate(r)?),
            Q::ListServerCertificates(r) => to_value(self.list_server_certificates(r)?),
            Q::UpdateServerCertificate(r) => unit(self.update_server_certificate(r).await?),
            Q::DeleteServerCertificate(r) => unit(self.delete_server_certificate(r).await?),
            Q::CreatePolicy(r) => to_value(self.create_policy(context, r).await?),
            Q::GetPolicy(r) => to_value(self.get_policy(r)?),
            Q::ListPolicies(r) => to_value(self.list_policies(r)?),
            Q::DeletePolicy(r) => unit(self.delete_policy(r).await?),
            Q::CreatePolicyVersion(r) => to_value(self.create_policy_version(context, r).await?),
            Q::GetPolicyVersion(r) => to_value(self.get_policy_version(r)?),
            Q::ListPolicyVersions(r) => to_value(self.list_policy_versions(r)?),
            Q::DeletePolicyVersion(r) => unit(self.delete_policy_version(r).await?),
            Q::SetDefaultPolicyVersion(r) => unit(self.set_default_policy_version(r).await?),
            Q::AttachUserPolicy(r) => unit(
                self.attach(
                    policies::Owner::User,
                    text(&r.user_name),
                    text(&r.policy_arn),
                    true,
                )
                .await?,
            ),
            Q::AttachRolePolicy(r) => unit(
                self.attach(
                    policies::Owner::Role,
                    text(&r.role_name),
                    text(&r.policy_arn),
                    true,
                )
                .await?,
            ),
            Q::AttachGroupPolicy(r) => unit(
                self.attach(
                    policies::Owner::Group,
                    text(&r.group_name),
                    text(&r.policy_arn),
                    true,
                )
                .await?,
            ),
            Q::DetachUserPolicy(r) => unit(
                self.attach(
                    policies::Owner::User,
                    text(&r.user_name),
                    text(&r.policy_arn),
                    false,
                )
                .await?,
            ),
            Q::DetachRolePolicy(r) => unit(
                self.attach(
                    policies::Owner::Role,
                    text(&r.role_name),
                    text(&r.policy_arn),
                    false,
                )
                .await?,
            ),
            Q::DetachGroupPolicy(r) => unit(
                self.attach(
                    policies::Owner::Group,
                    text(&r.group_name),
                    text(&r.policy_arn),
                    false,
                )
                .await?,
            ),
            Q::ListAttachedUserPolicies(r) => {
                let page = self.list_attached(
                    policies::Owner::User,
                    text(&r.user_name),
                    r.path_prefix.as_deref(),
                    r.marker.as_deref(),
                    r.max_items,
                )?;
                to_value(flotilla_aws::iam::ListAttachedUserPoliciesResponse {
                    attached_policies: Some(page.items),
                    is_truncated: Some(page.truncated),
                    marker: page.marker,
                })
            }
            Q::ListAttachedRolePolicies(r) => {
                let page = self.list_attached(
                    policies::Owner::Role,
                    text(&r.role_name),
                    r.path_prefix.as_deref(),
                    r.marker.as_deref(),
                    r.max_items,
                )?;
                to_value(flotilla_aws::iam::ListAttachedRolePoliciesResponse {
                    attached_policies: Some(page.items),
                    is_truncated: Some(page.truncated),
                    marker: page.marker,
                })
            }
            Q::ListAttachedGroupPolicies(r) => {
                let page = self.list_attached(
                    policies::Owner::Group,
                    text(&r.group_name),
                    r.path_prefix.as_deref(),
                    r.marker.as_deref(),
                    r.max_items,
                )?;
                to_value(flotilla_aws::iam::ListAttachedGroupPoliciesResponse {
                    attached_policies: Some(page.items),
                    is_truncated: Some(page.truncated),
                    marker: page.marker,
                })
            }
            Q::PutUserPermissionsBoundary(r) => unit(
                self.set_boundary(
                    policies::Owner::User,
                    text(&r.user_name),
                    r.permissions_boundary.as_deref(),
                )
                .await?,
            ),
            Q::PutRolePermissionsBoundary(r) => unit(
                self.set_boundary(
                    policies::Owner::Role,
                    text(&r.role_name),
                    r.permissions_boundary.as_deref(),
                )
                .await?,
            ),
            Q::DeleteUserPermissionsBoundary(r) => unit(
                self.set_boundary(policies::Owner::User, text(&r.user_name), None)
                    .await?,
            ),
            Q::DeleteRolePermissionsBoundary(r) => unit(
                self.set_boundary(policies::Owner::Role, text(&r.role_name), None)
                    .await?,
            ),
            _ => return Ok(None),
        };
        value.map(Some)
    }

    fn read<T: DeserializeOwned>(
        &self,
        prefix: &str,
        name: &str,
    ) -> Result<Option<Versioned<T>>, ApiError> {
        flotilla_records::get(&*self.store, &records::key(prefix, name))
    }

    /// Every record under `prefix`, in key order. Bounded by the account's
    /// quota of the kind, which creation enforces.
    fn read_all<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, ApiError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(prefix, after.as_deref(), flotilla_store::LIST_LIMIT_MAX)
                .map_err(flotilla_records::store_error)?;
            for entry in &page.entries {
                let name = entry.key[prefix.len()..].to_owned();
                all.push((name, flotilla_records::decode(entry)?));
            }
            after = page.entries.last().map(|entry| entry.key.clone());
            if !page.more || after.is_none() {
                return Ok(all);
            }
        }
    }

    fn count(&self, prefix: &str) -> Result<usize, ApiError> {
        let mut count = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(prefix, after.as_deref(), flotilla_store::LIST_LIMIT_MAX)
                .map_err(flotilla_records::store_error)?;
            count += page.entries.len();
            after = page.entries.last().map(|entry| entry.key.clone());
            if !page.more || after.is_none() {
                return Ok(count);
            }
        }
    }

    fn iam_arn(&self, kind: &str, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:{kind}{path}{name}", self.account_id)
    }
}

fn to_value<T: serde::Serialize>(response: T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(response)
        .map_err(|error| ApiError::server(format!("response did not serialize: {error}")))
}

/// A member `missing_required` has already found present.
fn text(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or_default()
}

fn unit(_: ()) -> Result<serde_json::Value, ApiError> {
    Ok(serde_json::Value::Object(serde_json::Map::new()))
}

/// An IAM unique id: the kind's prefix (`AIDA` user, `AROA` role, `AGPA`
/// group, `ANPA` policy, `AIPA` instance profile) and 17 characters of
/// base-32 from a fresh id.
pub fn unique_id(prefix: &str, seed: &str) -> String {
    prefix.to_owned() + &base32(&Sha256::digest(seed.as_bytes()), 17)
}

/// `count` characters of base-32 (A–Z, 2–7) taken from `bytes`.
fn base32(bytes: &[u8], count: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    bytes
        .iter()
        .cycle()
        .take(count)
        .map(|byte| char::from(ALPHABET[usize::from(byte % 32)]))
        .collect()
}

/// Seconds since the epoch, as the wire types carry timestamps.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A policy document as IAM answers it: URL-encoded (botocore decodes it).
fn encode_document(document: &str) -> String {
    let mut encoded = String::with_capacity(document.len() * 2);
    for byte in document.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// One page of a List operation.
struct Page<T> {
    items: Vec<T>,
    marker: Option<String>,
    truncated: bool,
}

/// `items` (sorted by their marker key) from after `marker`, at most
/// `max_items` of them; `Marker` is the key of the last one returned.
fn page<T>(
    items: Vec<(String, T)>,
    marker: Option<&str>,
    max_items: Option<i32>,
) -> Result<Page<T>, ApiError> {
    let max_items = max_items.unwrap_or(MAX_ITEMS_DEFAULT);
    if !(1..=MAX_ITEMS_MAX).contains(&max_items) {
        return Err(errors::validation(format!(
            "1 validation error detected: Value '{max_items}' at 'maxItems' failed to satisfy constraint: Member must have value {}",
            if max_items < 1 { "greater than or equal to 1" } else { "less than or equal to 1000" }
        )));
    }
    let mut remaining = items
        .into_iter()
        .filter(|(key, _)| marker.is_none_or(|marker| key.as_str() > marker))
        .peekable();
    let mut page = Vec::new();
    let mut last = None;
    while page.len() < max_items as usize {
        let Some((key, item)) = remaining.next() else {
            break;
        };
        last = Some(key);
        page.push(item);
    }
    let truncated = remaining.peek().is_some();
    Ok(Page {
        items: page,
        marker: if truncated { last } else { None },
        truncated,
    })
}

#[cfg(test)]
mod tests;
