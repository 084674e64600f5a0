//! Roles with their trust policies, and instance profiles.

use flotilla_aws::iam as wire;
use flotilla_iam_policy::document::{self, TRUST_POLICY_CHARS_DEFAULT};
use flotilla_iam_policy::{PolicyError, PolicyKind};
use flotilla_records::{encode, mutate, Attempt, Versioned};
use flotilla_store::Txn;
use flotilla_types::ApiError;

use crate::errors::{
    self, check_name, check_path, INSTANCE_PROFILE_NAME_CHARS_MAX, ROLE_NAME_CHARS_MAX,
};
use crate::records::{
    key, with_generation, InstanceProfileRecord, RoleRecord, UserRecord, INSTANCE_PROFILES, ROLES,
    USERS,
};
use crate::users::boundary_wire;
use crate::{encode_document, page, seconds, text, Context, Iam, INSTANCE_PROFILES_MAX, ROLES_MAX};

/// A role's maximum session duration when none is given, and its bounds.
pub const MAX_SESSION_DURATION_DEFAULT_SECONDS: i32 = 3600;
pub const MAX_SESSION_DURATION_MIN_SECONDS: i32 = 3600;
pub const MAX_SESSION_DURATION_MAX_SECONDS: i32 = 43200;

impl Iam {
    pub(crate) fn role_wire(&self, role: &RoleRecord) -> wire::Role {
        wire::Role {
            arn: Some(self.iam_arn("role", &role.path, &role.name)),
            assume_role_policy_document: Some(encode_document(&role.trust_policy)),
            create_date: Some(seconds(role.created_ms)),
            description: role.description.clone(),
            max_session_duration: Some(role.max_session_duration_seconds),
            path: Some(role.path.clone()),
            permissions_boundary: role.permissions_boundary.as_deref().map(boundary_wire),
            role_id: Some(role.role_id.clone()),
            role_name: Some(role.name.clone()),
            tags: (!role.tags.is_empty()).then(|| errors::wire_tags(&role.tags)),
            ..Default::default()
        }
    }

    pub(crate) fn role(&self, name: &str) -> Result<Versioned<RoleRecord>, ApiError> {
        self.read::<RoleRecord>(ROLES, name)?
            .ok_or_else(|| errors::no_such_role(name))
    }

    /// A trust policy IAM accepts: its grammar, its quota, and every user
    /// and role of this account it names existing.
    fn check_trust_policy(&self, text: &str) -> Result<(), ApiError> {
        document::check_trust_policy_size(text, TRUST_POLICY_CHARS_DEFAULT)
            .map_err(|error| errors::policy_refused(&error))?;
        let parsed = document::parse(text, PolicyKind::Trust)
            .map_err(|error| errors::policy_refused(&error))?;
        for arn in parsed.named_users_and_roles() {
            let Some(rest) = arn.strip_prefix("arn:aws:iam::") else {
                continue;
            };
            let Some((account, resource)) = rest.split_once(':') else {
                continue;
            };
            if account != self.account_id {
                continue;
            }
            let name = resource.rsplit('/').next().unwrap_or_default();
            let exists = if resource.starts_with("user/") {
                self.read::<UserRecord>(USERS, name)?.is_some()
            } else {
                self.read::<RoleRecord>(ROLES, name)?.is_some()
            };
            if !exists {
                return Err(errors::policy_refused(&PolicyError::unknown_aws_principal(
                    arn,
                )));
            }
        }
        Ok(())
    }

    pub(crate) async fn create_role(
        &self,
        context: &Context<'_>,
        request: wire::CreateRoleRequest,
    ) -> Result<wire::CreateRoleResponse, ApiError> {
        let name = text(&request.role_name);
        check_name("roleName", name, ROLE_NAME_CHARS_MAX)?;
        let path = request.path.clone().unwrap_or_else(|| "/".to_owned());
        check_path("path", &path)?;
        if let Some(description) = &request.description {
            errors::check_description(description)?;
        }
        let max_session = request
            .max_session_duration
            .unwrap_or(MAX_SESSION_DURATION_DEFAULT_SECONDS);
        check_max_session(max_session)?;
        let trust_policy = text(&request.assume_role_policy_document);
        self.check_trust_policy(trust_policy)?;
        let mut tags = Vec::new();
        errors::merge_tags(&mut tags, request.tags.as_deref().unwrap_or_default())?;
        if let Some(boundary) = &request.permissions_boundary {
            self.boundary_policy(boundary)?;
        }
        let role = RoleRecord {
            name: name.to_owned(),
            path,
            role_id: crate::unique_id("AROA", &(context.fresh_id)()),
            created_ms: context.now_ms,
            trust_policy: trust_policy.to_owned(),
            description: request.description.clone(),
            max_session_duration_seconds: max_session,
            permissions_boundary: request.permissions_boundary.clone(),
            tags,
            policies: Default::default(),
            instance_profiles: Vec::new(),
        };
        mutate(&*self.store, || {
            if self.read::<RoleRecord>(ROLES, name)?.is_some() {
                return Err(errors::already_exists(format!(
                    "Role with name {name} already exists."
                )));
            }
            if self.count(ROLES)? >= ROLES_MAX {
                return Err(errors::limit_exceeded(format!(
                    "Cannot exceed quota for RolesPerAccount: {ROLES_MAX}"
                )));
            }
            let mut txn = Txn::new()
                .expect(key(ROLES, name), 0)
                .put(key(ROLES, name), encode(&role));
            if let Some(boundary) = &role.permissions_boundary {
                txn = self.count_boundary_use(txn, boundary, 1)?;
            }
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await?;
        Ok(wire::CreateRoleResponse {
            role: Some(self.role_wire(&role)),
        })
    }

    pub(crate) fn get_role(
        &self,
        request: wire::GetRoleRequest,
    ) -> Result<wire::GetRoleResponse, ApiError> {
        let role = self.role(text(&request.role_name))?;
        Ok(wire::GetRoleResponse {
            role: Some(self.role_wire(&role.value)),
        })
    }

    pub(crate) fn list_roles(
        &self,
        request: wire::ListRolesRequest,
    ) -> Result<wire::ListRolesResponse, ApiError> {
        let prefix = request.path_prefix.as_deref().unwrap_or("/");
        let roles = self
            .read_all::<RoleRecord>(ROLES)?
            .into_iter()
            .filter(|(_, role)| role.path.starts_with(prefix))
            .map(|(key, role)| {
                // ListRoles leaves out tags and boundaries, as IAM does.
                let mut wire = self.role_wire(&role);
                wire.tags = None;
                wire.permissions_boundary = None;
                (key, wire)
            })
            .collect();
        let page = page(roles, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListRolesResponse {
            is_truncated: Some(page.truncated),
            marker: page.marker,
            roles: Some(page.items),
        })
    }

    async fn change_role(
        &self,
        name: &str,
        change: impl Fn(&mut RoleRecord) -> Result<(), ApiError>,
    ) -> Result<RoleRecord, ApiError> {
        mutate(&*self.store, || {
            let role = self.role(name)?;
            let mut updated = role.value.clone();
            change(&mut updated)?;
            let txn = Txn::new()
                .expect(key(ROLES, name), role.revision)
                .put(key(ROLES, name), encode(&updated));
            Ok(Attempt::Commit(with_generation(txn), updated))
        })
        .await
    }

    pub(crate) async fn update_role(
        &self,
        request: wire::UpdateRoleRequest,
    ) -> Result<(), ApiError> {
        if let Some(description) = &request.description {
            errors::check_description(description)?;
        }
        if let Some(max_session) = request.max_session_duration {
            check_max_session(max_session)?;
        }
        self.change_role(text(&request.role_name), |role| {
            if let Some(description) = &request.description {
                role.description = Some(description.clone());
            }
            if let Some(max_session) = request.max_session_duration {
                role.max_session_duration_seconds = max_session;
            }
            Ok(())
        })
        .await
        .map(drop)
    }

    pub(crate) async fn update_role_description(
        &self,
        request: wire::UpdateRoleDescriptionRequest,
    ) -> Result<wire::UpdateRoleDescriptionResponse, ApiError> {
        let description = text(&request.description).to_owned();
        errors::check_description(&description)?;
        let role = self
            .change_role(text(&request.role_name), |role| {
                role.description = Some(description.clone());
                Ok(())
            })
            .await?;
        Ok(wire::UpdateRoleDescriptionResponse {
            role: Some(self.role_wire(&role)),
        })
    }

    pub(crate) async fn update_assume_role_policy(
        &self,
        request: wire::UpdateAssumeRolePolicyRequest,
    ) -> Result<(), ApiError> {
        let document = text(&request.policy_document).to_owned();
        self.role(text(&request.role_name))?;
        self.check_trust_policy(&document)?;
        self.change_role(text(&request.role_name), |role| {
            role.trust_policy = document.clone();
            Ok(())
        })
        .await
        .map(drop)
    }

    pub(crate) async fn delete_role(
        &self,
        request: wire::DeleteRoleRequest,
    ) -> Result<(), ApiError> {
        let name = text(&request.role_name);
        mutate(&*self.store, || {
            let role = self.role(name)?;
            if !role.value.instance_profiles.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must remove roles from instance profile first.",
                ));
            }
            if !role.value.policies.inline.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            if !role.value.policies.attached.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must detach all policies first.",
                ));
            }
            let mut txn = Txn::new()
                .expect(key(ROLES, name), role.revision)
                .delete(key(ROLES, name));
            if let Some(boundary) = &role.value.permissions_boundary {
                txn = self.count_boundary_use(txn, boundary, -1)?;
            }
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    pub(crate) async fn tag_role(&self, request: wire::TagRoleRequest) -> Result<(), ApiError> {
        let given = request.tags.clone().unwrap_or_default();
        self.change_role(text(&request.role_name), |role| {
            errors::merge_tags(&mut role.tags, &given)
        })
        .await
        .map(drop)
    }

    pub(crate) async fn untag_role(&self, request: wire::UntagRoleRequest) -> Result<(), ApiError> {
        let removed = request.tag_keys.clone().unwrap_or_default();
        self.change_role(text(&request.role_name), |role| {
            role.tags.retain(|(tag, _)| !removed.contains(tag));
            Ok(())
        })
        .await
        .map(drop)
    }

    pub(crate) fn list_role_tags(
        &self,
        request: wire::ListRoleTagsRequest,
    ) -> Result<wire::ListRoleTagsResponse, ApiError> {
        let role = self.role(text(&request.role_name))?;
        let tags = errors::wire_tags(&role.value.tags)
            .into_iter()
            .enumerate()
            .map(|(index, tag)| (format!("{index:04}"), tag))
            .collect();
        let page = page(tags, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListRoleTagsResponse {
            is_truncated: Some(page.truncated),
            marker: page.marker,
            tags: Some(page.items),
        })
    }

    fn instance_profile_wire(
        &self,
        profile: &InstanceProfileRecord,
    ) -> Result<wire::InstanceProfile, ApiError> {
        let mut roles = Vec::new();
        for name in &profile.roles {
            if let Some(role) = self.read::<RoleRecord>(ROLES, name)? {
                roles.push(self.role_wire(&role.value));
            }
        }
        Ok(wire::InstanceProfile {
            arn: Some(self.iam_arn("instance-profile", &profile.path, &profile.name)),
            create_date: Some(seconds(profile.created_ms)),
            instance_profile_id: Some(profile.instance_profile_id.clone()),
            instance_profile_name: Some(profile.name.clone()),
            path: Some(profile.path.clone()),
            roles: Some(roles),
            tags: (!profile.tags.is_empty()).then(|| errors::wire_tags(&profile.tags)),
        })
    }

    fn instance_profile(&self, name: &str) -> Result<Versioned<InstanceProfileRecord>, ApiError> {
        self.read::<InstanceProfileRecord>(INSTANCE_PROFILES, name)?
            .ok_or_else(|| {
                errors::no_such_entity(format!("Instance Profile {name} cannot be found."))
            })
    }

    pub(crate) async fn create_instance_profile(
        &self,
        context: &Context<'_>,
        request: wire::CreateInstanceProfileRequest,
    ) -> Result<wire::CreateInstanceProfileResponse, ApiError> {
        let name = text(&request.instance_profile_name);
        check_name("instanceProfileName", name, INSTANCE_PROFILE_NAME_CHARS_MAX)?;
        let path = request.path.clone().unwrap_or_else(|| "/".to_owned());
        check_path("path", &path)?;
        let mut tags = Vec::new();
        errors::merge_tags(&mut tags, request.tags.as_deref().unwrap_or_default())?;
        let profile = InstanceProfileRecord {
            name: name.to_owned(),
            path,
            instance_profile_id: crate::unique_id("AIPA", &(context.fresh_id)()),
            created_ms: context.now_ms,
            roles: Vec::new(),
            tags,
        };
        mutate(&*self.store, || {
            if self
                .read::<InstanceProfileRecord>(INSTANCE_PROFILES, name)?
                .is_some()
            {
                return Err(errors::already_exists(format!(
                    "Instance Profile {name} already exists."
                )));
            }
            if self.count(INSTANCE_PROFILES)? >= INSTANCE_PROFILES_MAX {
                return Err(errors::limit_exceeded(format!(
                    "Cannot exceed quota for InstanceProfilesPerAccount: {INSTANCE_PROFILES_MAX}"
                )));
            }
            let txn = Txn::new()
                .expect(key(INSTANCE_PROFILES, name), 0)
                .put(key(INSTANCE_PROFILES, name), encode(&profile));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await?;
        Ok(wire::CreateInstanceProfileResponse {
            instance_profile: Some(self.instance_profile_wire(&profile)?),
        })
    }

    pub(crate) fn get_instance_profile(
        &self,
        request: wire::GetInstanceProfileRequest,
    ) -> Result<wire::GetInstanceProfileResponse, ApiError> {
        let profile = self.instance_profile(text(&request.instance_profile_name))?;
        Ok(wire::GetInstanceProfileResponse {
            instance_profile: Some(self.instance_profile_wire(&profile.value)?),
        })
    }

    pub(crate) fn list_instance_profiles(
        &self,
        request: wire::ListInstanceProfilesRequest,
    ) -> Result<wire::ListInstanceProfilesResponse, ApiError> {
        let prefix = request.path_prefix.as_deref().unwrap_or("/");
        let mut profiles = Vec::new();
        for (key, profile) in self.read_all::<InstanceProfileRecord>(INSTANCE_PROFILES)? {
            if profile.path.starts_with(prefix) {
                profiles.push((key, self.instance_profile_wire(&profile)?));
            }
        }
        let page = page(profiles, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListInstanceProfilesResponse {
            instance_profiles: Some(page.items),
            is_truncated: Some(page.truncated),
            marker: page.marker,
        })
    }

    pub(crate) fn list_instance_profiles_for_role(
        &self,
        request: wire::ListInstanceProfilesForRoleRequest,
    ) -> Result<wire::ListInstanceProfilesForRoleResponse, ApiError> {
        let role = self.role(text(&request.role_name))?;
        let mut profiles = Vec::new();
        for name in &role.value.instance_profiles {
            if let Some(profile) = self.read::<InstanceProfileRecord>(INSTANCE_PROFILES, name)? {
                profiles.push((
                    name.to_ascii_lowercase(),
                    self.instance_profile_wire(&profile.value)?,
                ));
            }
        }
        profiles.sort_by(|a, b| a.0.cmp(&b.0));
        let page = page(profiles, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListInstanceProfilesForRoleResponse {
            instance_profiles: Some(page.items),
            is_truncated: Some(page.truncated),
            marker: page.marker,
        })
    }

    pub(crate) async fn delete_instance_profile(
        &self,
        request: wire::DeleteInstanceProfileRequest,
    ) -> Result<(), ApiError> {
        let name = text(&request.instance_profile_name);
        mutate(&*self.store, || {
            let profile = self.instance_profile(name)?;
            if !profile.value.roles.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must remove roles from instance profile first.",
                ));
            }
            let txn = Txn::new()
                .expect(key(INSTANCE_PROFILES, name), profile.revision)
                .delete(key(INSTANCE_PROFILES, name));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    pub(crate) async fn add_role_to_instance_profile(
        &self,
        request: wire::AddRoleToInstanceProfileRequest,
    ) -> Result<(), ApiError> {
        self.profile_role(
            text(&request.instance_profile_name),
            text(&request.role_name),
            true,
        )
        .await
    }

    pub(crate) async fn remove_role_from_instance_profile(
        &self,
        request: wire::RemoveRoleFromInstanceProfileRequest,
    ) -> Result<(), ApiError> {
        self.profile_role(
            text(&request.instance_profile_name),
            text(&request.role_name),
            false,
        )
        .await
    }

    async fn profile_role(
        &self,
        profile_name: &str,
        role_name: &str,
        add: bool,
    ) -> Result<(), ApiError> {
        mutate(&*self.store, || {
            let profile = self.instance_profile(profile_name)?;
            let role = self.role(role_name)?;
            let mut profile_updated = profile.value.clone();
            let mut role_updated = role.value.clone();
            let holds = profile_updated
                .roles
                .iter()
                .any(|held| held.eq_ignore_ascii_case(role_name));
            if add {
                if !profile_updated.roles.is_empty() {
                    return Err(errors::limit_exceeded(
                        "Cannot exceed quota for InstanceSessionsPerInstanceProfile: 1".to_owned(),
                    ));
                }
                profile_updated.roles.push(role.value.name.clone());
                role_updated.instance_profiles.push(profile.value.name.clone());
            } else {
                if !holds {
                    return Err(errors::no_such_entity(format!(
                        "The role with name {role_name} cannot be found in instance profile {profile_name}."
                    )));
                }
                profile_updated
                    .roles
                    .retain(|held| !held.eq_ignore_ascii_case(role_name));
                role_updated
                    .instance_profiles
                    .retain(|held| !held.eq_ignore_ascii_case(profile_name));
            }
            let txn = Txn::new()
                .expect(key(INSTANCE_PROFILES, profile_name), profile.revision)
                .put(key(INSTANCE_PROFILES, profile_name), encode(&profile_updated))
                .expect(key(ROLES, role_name), role.revision)
                .put(key(ROLES, role_name), encode(&role_updated));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }
}

fn check_max_session(seconds: i32) -> Result<(), ApiError> {
    if !(MAX_SESSION_DURATION_MIN_SECONDS..=MAX_SESSION_DURATION_MAX_SECONDS).contains(&seconds) {
        return Err(errors::validation(format!(
            "1 validation error detected: Value '{seconds}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value {}",
            if seconds < MAX_SESSION_DURATION_MIN_SECONDS {
                "greater than or equal to 3600"
            } else {
                "less than or equal to 43200"
            }
        )));
    }
    Ok(())
}
