//! Inline policies of users, groups and roles; customer managed policies
//! and their versions; AWS managed policies; attachments and permissions
//! boundaries.

use flotilla_aws::iam as wire;
use flotilla_iam_policy::document::{self, InlinePolicyOwner};
use flotilla_iam_policy::{managed, PolicyKind};
use flotilla_records::{encode, mutate, Attempt, Versioned};
use flotilla_store::Txn;
use flotilla_types::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::errors::{self, check_name, check_path, POLICY_NAME_CHARS_MAX};
use crate::records::{
    key, with_generation, GroupRecord, ManagedPolicyRecord, Policies, PolicyVersionRecord,
    RoleRecord, UserRecord, GROUPS, POLICIES, ROLES, USERS,
};
use crate::{
    encode_document, page, seconds, text, Context, Iam, Page, ATTACHED_POLICIES_MAX,
    CUSTOMER_POLICIES_MAX, POLICY_VERSIONS_MAX,
};

/// Whose policies an operation changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    User,
    Group,
    Role,
}

impl Owner {
    fn prefix(self) -> &'static str {
        match self {
            Owner::User => USERS,
            Owner::Group => GROUPS,
            Owner::Role => ROLES,
        }
    }

    fn missing(self, name: &str) -> ApiError {
        match self {
            Owner::User => errors::no_such_user(name),
            Owner::Group => errors::no_such_group(name),
            Owner::Role => errors::no_such_role(name),
        }
    }

    fn inline_owner(self) -> InlinePolicyOwner {
        match self {
            Owner::User => InlinePolicyOwner::User,
            Owner::Group => InlinePolicyOwner::Group,
            Owner::Role => InlinePolicyOwner::Role,
        }
    }
}

/// A user, group or role: what holds policies.
pub(crate) trait Holder: Clone + Serialize + DeserializeOwned {
    fn policies(&self) -> &Policies;
    fn policies_mut(&mut self) -> &mut Policies;
    fn boundary_mut(&mut self) -> Option<&mut Option<String>> {
        None
    }
}

impl Holder for UserRecord {
    fn policies(&self) -> &Policies {
        &self.policies
    }
    fn policies_mut(&mut self) -> &mut Policies {
        &mut self.policies
    }
    fn boundary_mut(&mut self) -> Option<&mut Option<String>> {
        Some(&mut self.permissions_boundary)
    }
}

impl Holder for GroupRecord {
    fn policies(&self) -> &Policies {
        &self.policies
    }
    fn policies_mut(&mut self) -> &mut Policies {
        &mut self.policies
    }
}

impl Holder for RoleRecord {
    fn policies(&self) -> &Policies {
        &self.policies
    }
    fn policies_mut(&mut self) -> &mut Policies {
        &mut self.policies
    }
    fn boundary_mut(&mut self) -> Option<&mut Option<String>> {
        Some(&mut self.permissions_boundary)
    }
}

/// What one change to a holder decided: nothing to write, or the holder as
/// changed and further writes (a managed policy's counts).
enum Change<T> {
    Unchanged,
    Changed(T, Txn),
}

impl Iam {
    fn holder<T: Holder>(&self, owner: Owner, name: &str) -> Result<Versioned<T>, ApiError> {
        self.read::<T>(owner.prefix(), name)?
            .ok_or_else(|| owner.missing(name))
    }

    /// Runs `change` on the holder's record under the store's retry loop.
    async fn change_holder<T: Holder>(
        &self,
        owner: Owner,
        name: &str,
        change: impl Fn(&Iam, T) -> Result<Change<T>, ApiError>,
    ) -> Result<(), ApiError> {
        mutate(&*self.store, || {
            let held = self.holder::<T>(owner, name)?;
            match change(self, held.value)? {
                Change::Unchanged => Ok(Attempt::Done(())),
                Change::Changed(updated, txn) => {
                    let txn = txn
                        .expect(key(owner.prefix(), name), held.revision)
                        .put(key(owner.prefix(), name), encode(&updated));
                    Ok(Attempt::Commit(with_generation(txn), ()))
                }
            }
        })
        .await
    }

    pub(crate) async fn put_inline(
        &self,
        owner: Owner,
        name: &str,
        policy_name: &str,
        document_text: &str,
    ) -> Result<(), ApiError> {
        check_name("policyName", policy_name, POLICY_NAME_CHARS_MAX)?;
        document::parse(document_text, PolicyKind::Inline)
            .map_err(|error| errors::policy_refused(&error))?;
        match owner {
            Owner::User => {
                self.put_inline_on::<UserRecord>(owner, name, policy_name, document_text)
                    .await
            }
            Owner::Group => {
                self.put_inline_on::<GroupRecord>(owner, name, policy_name, document_text)
                    .await
            }
            Owner::Role => {
                self.put_inline_on::<RoleRecord>(owner, name, policy_name, document_text)
                    .await
            }
        }
    }

    async fn put_inline_on<T: Holder>(
        &self,
        owner: Owner,
        name: &str,
        policy_name: &str,
        document_text: &str,
    ) -> Result<(), ApiError> {
        self.change_holder::<T>(owner, name, |_, mut held| {
            // Replacing a policy of the same name, in any case, replaces it.
            let policies = held.policies_mut();
            let existing = policies
                .inline
                .keys()
                .find(|held| held.eq_ignore_ascii_case(policy_name))
                .cloned();
            if let Some(existing) = existing {
                policies.inline.remove(&existing);
            }
            let total: usize = policies
                .inline
                .values()
                .map(|text| document::policy_size_chars(text))
                .sum::<usize>()
                + document::policy_size_chars(document_text);
            document::check_inline_policies_size(owner.inline_owner(), name, total)
                .map_err(|error| errors::policy_refused(&error))?;
            policies
                .inline
                .insert(policy_name.to_owned(), document_text.to_owned());
            Ok(Change::Changed(held, Txn::new()))
        })
        .await
    }

    fn inline_policies(&self, owner: Owner, name: &str) -> Result<(String, Policies), ApiError> {
        Ok(match owner {
            Owner::User => {
                let held = self.holder::<UserRecord>(owner, name)?.value;
                (held.name, held.policies)
            }
            Owner::Group => {
                let held = self.holder::<GroupRecord>(owner, name)?.value;
                (held.name, held.policies)
            }
            Owner::Role => {
                let held = self.holder::<RoleRecord>(owner, name)?.value;
                (held.name, held.policies)
            }
        })
    }

    /// The owner's name as stored and the policy's document, URL-encoded.
    pub(crate) fn get_inline(
        &self,
        owner: Owner,
        name: &str,
        policy_name: &str,
    ) -> Result<(String, String), ApiError> {
        let (held_name, policies) = self.inline_policies(owner, name)?;
        policies
            .inline
            .iter()
            .find(|(held, _)| held.eq_ignore_ascii_case(policy_name))
            .map(|(_, document)| (held_name.clone(), encode_document(document)))
            .ok_or_else(|| {
                errors::no_such_entity(format!(
                    "The {} policy with name {policy_name} cannot be found.",
                    match owner {
                        Owner::User => "user",
                        Owner::Group => "group",
                        Owner::Role => "role",
                    }
                ))
            })
    }

    pub(crate) fn list_inline<R>(
        &self,
        owner: Owner,
        name: &str,
        marker: Option<&str>,
        max_items: Option<i32>,
        answer: impl FnOnce(Page<String>) -> R,
    ) -> Result<R, ApiError> {
        let (_, policies) = self.inline_policies(owner, name)?;
        let names = policies
            .inline
            .into_keys()
            .map(|name| (name.clone(), name))
            .collect();
        Ok(answer(page(names, marker, max_items)?))
    }

    pub(crate) async fn delete_inline(
        &self,
        owner: Owner,
        name: &str,
        policy_name: &str,
    ) -> Result<(), ApiError> {
        let change = |held: &mut Policies| {
            let existing = held
                .inline
                .keys()
                .find(|held| held.eq_ignore_ascii_case(policy_name))
                .cloned();
            match existing {
                Some(existing) => {
                    held.inline.remove(&existing);
                    Ok(())
                }
                None => Err(errors::no_such_entity(format!(
                    "The {} policy with name {policy_name} cannot be found.",
                    match owner {
                        Owner::User => "user",
                        Owner::Group => "group",
                        Owner::Role => "role",
                    }
                ))),
            }
        };
        match owner {
            Owner::User => {
                self.change_holder::<UserRecord>(owner, name, |_, mut held| {
                    change(held.policies_mut())?;
                    Ok(Change::Changed(held, Txn::new()))
                })
                .await
            }
            Owner::Group => {
                self.change_holder::<GroupRecord>(owner, name, |_, mut held| {
                    change(held.policies_mut())?;
                    Ok(Change::Changed(held, Txn::new()))
                })
                .await
            }
            Owner::Role => {
                self.change_holder::<RoleRecord>(owner, name, |_, mut held| {
                    change(held.policies_mut())?;
                    Ok(Change::Changed(held, Txn::new()))
                })
                .await
            }
        }
    }

    /// The customer managed policy `arn` names (`arn:aws:iam::ACCOUNT:policy/PATH/NAME`).
    pub(crate) fn customer_policy(
        &self,
        arn: &str,
    ) -> Result<Option<Versioned<ManagedPolicyRecord>>, ApiError> {
        let Some(resource) = arn.strip_prefix(&format!("arn:aws:iam::{}:policy/", self.account_id))
        else {
            return Ok(None);
        };
        let name = resource.rsplit('/').next().unwrap_or_default();
        let found = self.read::<ManagedPolicyRecord>(POLICIES, name)?;
        // The path is part of the ARN: a policy named with another path is not it.
        Ok(found
            .filter(|policy| self.iam_arn("policy", &policy.value.path, &policy.value.name) == arn))
    }

    fn customer_policy_or_missing(
        &self,
        arn: &str,
    ) -> Result<Versioned<ManagedPolicyRecord>, ApiError> {
        self.customer_policy(arn)?
            .ok_or_else(|| errors::no_such_policy(arn))
    }

    fn check_policy_arn(arn: &str) -> Result<(), ApiError> {
        if !arn.starts_with("arn:") || arn.split(':').count() < 6 {
            return Err(errors::invalid_input(format!("ARN {arn} is not valid.")));
        }
        Ok(())
    }

    fn policy_wire(&self, policy: &ManagedPolicyRecord) -> wire::Policy {
        wire::Policy {
            arn: Some(self.iam_arn("policy", &policy.path, &policy.name)),
            attachment_count: Some(policy.attachment_count as i32),
            create_date: Some(seconds(policy.created_ms)),
            default_version_id: Some(policy.default_version_id.clone()),
            description: policy.description.clone(),
            is_attachable: Some(true),
            path: Some(policy.path.clone()),
            permissions_boundary_usage_count: Some(policy.boundary_count as i32),
            policy_id: Some(policy.policy_id.clone()),
            policy_name: Some(policy.name.clone()),
            tags: (!policy.tags.is_empty()).then(|| errors::wire_tags(&policy.tags)),
            update_date: Some(seconds(policy.updated_ms)),
        }
    }

    fn aws_policy_wire(&self, policy: &managed::ManagedPolicy) -> Result<wire::Policy, ApiError> {
        let arn = policy.arn();
        let attachments = self.aws_policy_attachments(&arn)?;
        Ok(wire::Policy {
            arn: Some(arn.clone()),
            attachment_count: Some(attachments as i32),
            // AWS's own policies predate any account; their dates are AWS's.
            create_date: Some(0.0),
            default_version_id: Some(policy.version_id.to_owned()),
            description: Some(policy.description.to_owned()),
            is_attachable: Some(true),
            path: Some(policy.path.to_owned()),
            permissions_boundary_usage_count: Some(0),
            policy_id: Some(crate::unique_id("ANPA", &arn)),
            policy_name: Some(policy.name.to_owned()),
            tags: None,
            update_date: Some(0.0),
        })
    }

    /// How many users, groups and roles an AWS managed policy is attached
    /// to: counted, as no record of the account holds it.
    fn aws_policy_attachments(&self, arn: &str) -> Result<usize, ApiError> {
        let holds = |policies: &Policies| policies.attached.iter().any(|held| held == arn);
        Ok(self
            .read_all::<UserRecord>(USERS)?
            .iter()
            .filter(|(_, held)| holds(&held.policies))
            .count()
            + self
                .read_all::<GroupRecord>(GROUPS)?
                .iter()
                .filter(|(_, held)| holds(&held.policies))
                .count()
            + self
                .read_all::<RoleRecord>(ROLES)?
                .iter()
                .filter(|(_, held)| holds(&held.policies))
                .count())
    }

    pub(crate) async fn create_policy(
        &self,
        context: &Context<'_>,
        request: wire::CreatePolicyRequest,
    ) -> Result<wire::CreatePolicyResponse, ApiError> {
        let name = text(&request.policy_name);
        check_name("policyName", name, POLICY_NAME_CHARS_MAX)?;
        let path = request.path.clone().unwrap_or_else(|| "/".to_owned());
        check_path("path", &path)?;
        if let Some(description) = &request.description {
            errors::check_description(description)?;
        }
        let document_text = text(&request.policy_document);
        check_managed_document(document_text)?;
        let mut tags = Vec::new();
        errors::merge_tags(&mut tags, request.tags.as_deref().unwrap_or_default())?;
        let policy = ManagedPolicyRecord {
            name: name.to_owned(),
            path,
            policy_id: crate::unique_id("ANPA", &(context.fresh_id)()),
            created_ms: context.now_ms,
            updated_ms: context.now_ms,
            description: request.description.clone(),
            default_version_id: "v1".to_owned(),
            versions: vec![PolicyVersionRecord {
                version_id: "v1".to_owned(),
                document: document_text.to_owned(),
                created_ms: context.now_ms,
            }],
            next_version: 2,
            attachment_count: 0,
            boundary_count: 0,
            tags,
        };
        mutate(&*self.store, || {
            if let Some(existing) = self.read::<ManagedPolicyRecord>(POLICIES, name)? {
                return Err(errors::already_exists(format!(
                    "A policy called {} already exists. Duplicate names are not allowed.",
                    existing.value.name
                )));
            }
            if self.count(POLICIES)? >= CUSTOMER_POLICIES_MAX {
                return Err(errors::limit_exceeded(format!(
                    "Cannot exceed quota for PoliciesPerAccount: {CUSTOMER_POLICIES_MAX}"
                )));
            }
            let txn = Txn::new()
                .expect(key(POLICIES, name), 0)
                .put(key(POLICIES, name), encode(&policy));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await?;
        Ok(wire::CreatePolicyResponse {
            policy: Some(self.policy_wire(&policy)),
        })
    }

    pub(crate) fn get_policy(
        &self,
        request: wire::GetPolicyRequest,
    ) -> Result<wire::GetPolicyResponse, ApiError> {
        let arn = text(&request.policy_arn);
        Self::check_policy_arn(arn)?;
        if let Some(policy) = managed::by_arn(arn) {
            return Ok(wire::GetPolicyResponse {
                policy: Some(self.aws_policy_wire(policy)?),
            });
        }
        let policy = self.customer_policy_or_missing(arn)?;
        Ok(wire::GetPolicyResponse {
            policy: Some(self.policy_wire(&policy.value)),
        })
    }

    pub(crate) fn list_policies(
        &self,
        request: wire::ListPoliciesRequest,
    ) -> Result<wire::ListPoliciesResponse, ApiError> {
        let prefix = request.path_prefix.as_deref().unwrap_or("/");
        let scope = request.scope.map(|scope| scope.as_str()).unwrap_or("All");
        let only_attached = request.only_attached.unwrap_or(false);
        let mut policies = Vec::new();
        if scope != "Local" {
            for policy in managed::AWS_MANAGED_POLICIES {
                let wire = self.aws_policy_wire(policy)?;
                policies.push((format!("aws/{}", policy.name.to_ascii_lowercase()), wire));
            }
        }
        if scope != "AWS" {
            for (key, policy) in self.read_all::<ManagedPolicyRecord>(POLICIES)? {
                policies.push((format!("local/{key}"), self.policy_wire(&policy)));
            }
        }
        let policies = policies
            .into_iter()
            .filter(|(_, policy)| policy.path.as_deref().unwrap_or("/").starts_with(prefix))
            .filter(|(_, policy)| !only_attached || policy.attachment_count.unwrap_or(0) > 0)
            .collect();
        let page = page(policies, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListPoliciesResponse {
            is_truncated: Some(page.truncated),
            marker: page.marker,
            policies: Some(page.items),
        })
    }

    pub(crate) async fn delete_policy(
        &self,
        request: wire::DeletePolicyRequest,
    ) -> Result<(), ApiError> {
        let arn = text(&request.policy_arn);
        Self::check_policy_arn(arn)?;
        if managed::by_arn(arn).is_some() {
            return Err(ApiError::new(
                "UnmodifiableEntityException",
                400,
                format!("Policy {arn} is an AWS managed policy and cannot be deleted."),
            ));
        }
        mutate(&*self.store, || {
            let policy = self.customer_policy_or_missing(arn)?;
            if policy.value.attachment_count > 0 || policy.value.boundary_count > 0 {
                return Err(errors::delete_conflict(
                    "Cannot delete a policy attached to entities.",
                ));
            }
            if policy.value.versions.len() > 1 {
                return Err(errors::delete_conflict(
                    "This policy has more than one version. Before you delete a policy, you must delete the policy's versions. The default version is deleted with the policy.",
                ));
            }
            let key = key(POLICIES, &policy.value.name);
            let txn = Txn::new().expect(&key, policy.revision).delete(key);
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    async fn change_policy<R>(
        &self,
        arn: &str,
        change: impl Fn(&mut ManagedPolicyRecord) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        Self::check_policy_arn(arn)?;
        if managed::by_arn(arn).is_some() {
            return Err(ApiError::new(
                "UnmodifiableEntityException",
                400,
                format!("Policy {arn} is an AWS managed policy and cannot be changed."),
            ));
        }
        mutate(&*self.store, || {
            let policy = self.customer_policy_or_missing(arn)?;
            let mut updated = policy.value.clone();
            let answer = change(&mut updated)?;
            let key = key(POLICIES, &policy.value.name);
            let txn = Txn::new()
                .expect(&key, policy.revision)
                .put(key, encode(&updated));
            Ok(Attempt::Commit(with_generation(txn), answer))
        })
        .await
    }

    pub(crate) async fn create_policy_version(
        &self,
        context: &Context<'_>,
        request: wire::CreatePolicyVersionRequest,
    ) -> Result<wire::CreatePolicyVersionResponse, ApiError> {
        let arn = text(&request.policy_arn);
        let document_text = text(&request.policy_document);
        check_managed_document(document_text)?;
        let set_as_default = request.set_as_default.unwrap_or(false);
        let version = self
            .change_policy(arn, |policy| {
                if policy.versions.len() >= POLICY_VERSIONS_MAX {
                    return Err(errors::limit_exceeded(format!(
                        "A managed policy can have up to {POLICY_VERSIONS_MAX} versions. Before you create a new version, you must delete an existing version."
                    )));
                }
                let version = PolicyVersionRecord {
                    version_id: format!("v{}", policy.next_version),
                    document: document_text.to_owned(),
                    created_ms: context.now_ms,
                };
                policy.next_version += 1;
                policy.updated_ms = context.now_ms;
                if set_as_default {
                    policy.default_version_id = version.version_id.clone();
                }
                policy.versions.push(version.clone());
                Ok(version)
            })
            .await?;
        Ok(wire::CreatePolicyVersionResponse {
            policy_version: Some(wire::PolicyVersion {
                create_date: Some(seconds(version.created_ms)),
                document: None,
                is_default_version: Some(set_as_default),
                version_id: Some(version.version_id),
            }),
        })
    }

    pub(crate) fn get_policy_version(
        &self,
        request: wire::GetPolicyVersionRequest,
    ) -> Result<wire::GetPolicyVersionResponse, ApiError> {
        let arn = text(&request.policy_arn);
        let version_id = text(&request.version_id);
        Self::check_policy_arn(arn)?;
        let missing = || {
            errors::no_such_entity(format!(
                "Policy {arn} version {version_id} does not exist or is not attachable."
            ))
        };
        if let Some(policy) = managed::by_arn(arn) {
            if policy.version_id != version_id {
                return Err(missing());
            }
            return Ok(wire::GetPolicyVersionResponse {
                policy_version: Some(wire::PolicyVersion {
                    create_date: Some(0.0),
                    document: Some(encode_document(policy.document)),
                    is_default_version: Some(true),
                    version_id: Some(version_id.to_owned()),
                }),
            });
        }
        let policy = self.customer_policy_or_missing(arn)?.value;
        let version = policy
            .versions
            .iter()
            .find(|version| version.version_id == version_id)
            .ok_or_else(missing)?;
        Ok(wire::GetPolicyVersionResponse {
            policy_version: Some(wire::PolicyVersion {
                create_date: Some(seconds(version.created_ms)),
                document: Some(encode_document(&version.document)),
                is_default_version: Some(version.version_id == policy.default_version_id),
                version_id: Some(version.version_id.clone()),
            }),
        })
    }

    pub(crate) fn list_policy_versions(
        &self,
        request: wire::ListPolicyVersionsRequest,
    ) -> Result<wire::ListPolicyVersionsResponse, ApiError> {
        let arn = text(&request.policy_arn);
        Self::check_policy_arn(arn)?;
        let versions = if let Some(policy) = managed::by_arn(arn) {
            vec![(
                policy.version_id.to_owned(),
                wire::PolicyVersion {
                    create_date: Some(0.0),
                    document: None,
                    is_default_version: Some(true),
                    version_id: Some(policy.version_id.to_owned()),
                },
            )]
        } else {
            let policy = self.customer_policy_or_missing(arn)?.value;
            // Newest first, as IAM lists them.
            policy
                .versions
                .iter()
                .rev()
                .enumerate()
                .map(|(index, version)| {
                    (
                        format!("{index:02}"),
                        wire::PolicyVersion {
                            create_date: Some(seconds(version.created_ms)),
                            document: None,
                            is_default_version: Some(
                                version.version_id == policy.default_version_id,
                            ),
                            version_id: Some(version.version_id.clone()),
                        },
                    )
                })
                .collect()
        };
        let page = page(versions, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListPolicyVersionsResponse {
            is_truncated: Some(page.truncated),
            marker: page.marker,
            versions: Some(page.items),
        })
    }

    pub(crate) async fn delete_policy_version(
        &self,
        request: wire::DeletePolicyVersionRequest,
    ) -> Result<(), ApiError> {
        let arn = text(&request.policy_arn);
        let version_id = text(&request.version_id);
        self.change_policy(arn, |policy| {
            if policy.default_version_id == version_id {
                return Err(errors::delete_conflict(
                    "Cannot delete the default version of a policy.",
                ));
            }
            let before = policy.versions.len();
            policy
                .versions
                .retain(|version| version.version_id != version_id);
            if policy.versions.len() == before {
                return Err(errors::no_such_entity(format!(
                    "Policy {arn} version {version_id} does not exist or is not attachable."
                )));
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn set_default_policy_version(
        &self,
        request: wire::SetDefaultPolicyVersionRequest,
    ) -> Result<(), ApiError> {
        let arn = text(&request.policy_arn);
        let version_id = text(&request.version_id);
        self.change_policy(arn, |policy| {
            if !policy
                .versions
                .iter()
                .any(|version| version.version_id == version_id)
            {
                return Err(errors::no_such_entity(format!(
                    "Policy {arn} version {version_id} does not exist or is not attachable."
                )));
            }
            policy.default_version_id = version_id.to_owned();
            Ok(())
        })
        .await
    }

    /// Attaches (`attach`) or detaches a managed policy, counting the
    /// attachment on a customer managed policy in the same transaction.
    pub(crate) async fn attach(
        &self,
        owner: Owner,
        name: &str,
        arn: &str,
        attach: bool,
    ) -> Result<(), ApiError> {
        Self::check_policy_arn(arn)?;
        match owner {
            Owner::User => self.attach_on::<UserRecord>(owner, name, arn, attach).await,
            Owner::Group => {
                self.attach_on::<GroupRecord>(owner, name, arn, attach)
                    .await
            }
            Owner::Role => self.attach_on::<RoleRecord>(owner, name, arn, attach).await,
        }
    }

    async fn attach_on<T: Holder>(
        &self,
        owner: Owner,
        name: &str,
        arn: &str,
        attach: bool,
    ) -> Result<(), ApiError> {
        self.change_holder::<T>(owner, name, |iam, mut held| {
            let customer = if managed::by_arn(arn).is_some() {
                None
            } else {
                Some(iam.customer_policy_or_missing(arn)?)
            };
            let attached = held.policies().attached.iter().any(|held| held == arn);
            if attach == attached {
                if attach {
                    return Ok(Change::Unchanged);
                }
                return Err(errors::no_such_entity(format!(
                    "Policy {arn} was not found."
                )));
            }
            let policies = held.policies_mut();
            if attach {
                if policies.attached.len() >= ATTACHED_POLICIES_MAX {
                    return Err(errors::limit_exceeded(format!(
                        "Cannot exceed quota for PoliciesPer{}: {ATTACHED_POLICIES_MAX}",
                        match owner {
                            Owner::User => "User",
                            Owner::Group => "Group",
                            Owner::Role => "Role",
                        }
                    )));
                }
                policies.attached.push(arn.to_owned());
            } else {
                policies.attached.retain(|held| held != arn);
            }
            let mut txn = Txn::new();
            if let Some(policy) = customer {
                let mut counted = policy.value.clone();
                if attach {
                    counted.attachment_count += 1;
                } else {
                    counted.attachment_count = counted.attachment_count.saturating_sub(1);
                }
                let key = key(POLICIES, &counted.name);
                txn = txn.expect(&key, policy.revision).put(key, encode(&counted));
            }
            Ok(Change::Changed(held, txn))
        })
        .await
    }

    pub(crate) fn list_attached(
        &self,
        owner: Owner,
        name: &str,
        path_prefix: Option<&str>,
        marker: Option<&str>,
        max_items: Option<i32>,
    ) -> Result<Page<wire::AttachedPolicy>, ApiError> {
        let (_, policies) = self.inline_policies(owner, name)?;
        let prefix = path_prefix.unwrap_or("/");
        let attached = policies
            .attached
            .iter()
            .enumerate()
            .filter(|(_, arn)| policy_path(arn).starts_with(prefix))
            .map(|(index, arn)| {
                (
                    format!("{index:04}"),
                    wire::AttachedPolicy {
                        policy_arn: Some(arn.clone()),
                        policy_name: Some(arn.rsplit('/').next().unwrap_or_default().to_owned()),
                    },
                )
            })
            .collect();
        page(attached, marker, max_items)
    }

    /// The document of the managed policy a permissions boundary names:
    /// it must exist.
    pub(crate) fn boundary_policy(&self, arn: &str) -> Result<(), ApiError> {
        Self::check_policy_arn(arn)?;
        if managed::by_arn(arn).is_some() || self.customer_policy(arn)?.is_some() {
            return Ok(());
        }
        Err(errors::invalid_input(format!("ARN {arn} is not valid.")))
    }

    /// Counts one more (`delta` 1) or one fewer use of a customer managed
    /// policy as a permissions boundary, in `txn`.
    pub(crate) fn count_boundary_use(
        &self,
        txn: Txn,
        arn: &str,
        delta: i32,
    ) -> Result<Txn, ApiError> {
        let Some(policy) = self.customer_policy(arn)? else {
            return Ok(txn);
        };
        let mut counted = policy.value.clone();
        counted.boundary_count = if delta > 0 {
            counted.boundary_count + 1
        } else {
            counted.boundary_count.saturating_sub(1)
        };
        let key = key(POLICIES, &counted.name);
        Ok(txn.expect(&key, policy.revision).put(key, encode(&counted)))
    }

    pub(crate) async fn set_boundary(
        &self,
        owner: Owner,
        name: &str,
        arn: Option<&str>,
    ) -> Result<(), ApiError> {
        if let Some(arn) = arn {
            self.boundary_policy(arn)?;
        }
        let change = |iam: &Iam, previous: Option<String>| -> Result<Txn, ApiError> {
            if previous.as_deref() == arn {
                return Ok(Txn::new());
            }
            let mut txn = Txn::new();
            if let Some(previous) = &previous {
                txn = iam.count_boundary_use(txn, previous, -1)?;
            }
            if let Some(arn) = arn {
                txn = iam.count_boundary_use(txn, arn, 1)?;
            }
            Ok(txn)
        };
        match owner {
            Owner::User => {
                self.change_holder::<UserRecord>(owner, name, |iam, mut held| {
                    let txn = change(iam, held.permissions_boundary.clone())?;
                    if let Some(boundary) = held.boundary_mut() {
                        *boundary = arn.map(str::to_owned);
                    }
                    Ok(Change::Changed(held, txn))
                })
                .await
            }
            Owner::Role => {
                self.change_holder::<RoleRecord>(owner, name, |iam, mut held| {
                    let txn = change(iam, held.permissions_boundary.clone())?;
                    if let Some(boundary) = held.boundary_mut() {
                        *boundary = arn.map(str::to_owned);
                    }
                    Ok(Change::Changed(held, txn))
                })
                .await
            }
            Owner::Group => Err(errors::invalid_input(
                "Groups have no permissions boundary.".to_owned(),
            )),
        }
    }
}

/// A customer managed policy document: grammar and quota.
fn check_managed_document(text: &str) -> Result<(), ApiError> {
    document::check_managed_policy_size(text).map_err(|error| errors::policy_refused(&error))?;
    document::parse(text, PolicyKind::Managed).map_err(|error| errors::policy_refused(&error))?;
    Ok(())
}

/// The path of a managed policy's ARN (`/`, `/service-role/`).
fn policy_path(arn: &str) -> String {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
    let within = resource.strip_prefix("policy").unwrap_or(resource);
    match within.rfind('/') {
        Some(end) => within[..=end].to_owned(),
        None => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::policy_path;

    #[test]
    fn paths_of_policy_arns() {
        assert_eq!(policy_path("arn:aws:iam::aws:policy/ReadOnlyAccess"), "/");
        assert_eq!(
            policy_path("arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"),
            "/service-role/"
        );
    }
}
