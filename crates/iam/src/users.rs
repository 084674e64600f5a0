//! Users, their access keys and their tags.

use base64::Engine;
use flotilla_aws::iam::{self as wire, statusType};
use flotilla_records::{encode, mutate, Attempt};
use flotilla_store::Txn;
use flotilla_types::ApiError;
use sha2::{Digest, Sha256};

use crate::errors::{self, check_name, check_path, USER_NAME_CHARS_MAX};
use crate::records::{
    self, key, with_generation, AccessKeyRecord, KeyStatus, Secret, UserRecord, ACCESS_KEYS, USERS,
};
use crate::{page, seconds, text, Context, Iam, ACCESS_KEYS_PER_USER_MAX, USERS_MAX};

impl Iam {
    pub(crate) fn user_wire(&self, user: &UserRecord) -> wire::User {
        wire::User {
            arn: Some(self.iam_arn("user", &user.path, &user.name)),
            create_date: Some(seconds(user.created_ms)),
            path: Some(user.path.clone()),
            permissions_boundary: user.permissions_boundary.as_deref().map(boundary_wire),
            tags: (!user.tags.is_empty()).then(|| errors::wire_tags(&user.tags)),
            user_id: Some(user.user_id.clone()),
            user_name: Some(user.name.clone()),
            password_last_used: None,
        }
    }

    pub(crate) fn user(
        &self,
        name: &str,
    ) -> Result<flotilla_records::Versioned<UserRecord>, ApiError> {
        self.read::<UserRecord>(USERS, name)?
            .ok_or_else(|| errors::no_such_user(name))
    }

    pub(crate) async fn create_user(
        &self,
        context: &Context<'_>,
        request: wire::CreateUserRequest,
    ) -> Result<wire::CreateUserResponse, ApiError> {
        let name = text(&request.user_name);
        check_name("userName", name, USER_NAME_CHARS_MAX)?;
        let path = request.path.clone().unwrap_or_else(|| "/".to_owned());
        check_path("path", &path)?;
        let mut tags = Vec::new();
        errors::merge_tags(&mut tags, request.tags.as_deref().unwrap_or_default())?;
        if let Some(boundary) = &request.permissions_boundary {
            self.boundary_policy(boundary)?;
        }
        let user_id = crate::unique_id("AIDA", &(context.fresh_id)());
        let user = UserRecord {
            name: name.to_owned(),
            path,
            user_id,
            created_ms: context.now_ms,
            permissions_boundary: request.permissions_boundary.clone(),
            tags,
            policies: Default::default(),
            groups: Vec::new(),
            access_keys: Vec::new(),
        };
        mutate(&*self.store, || {
            if self.read::<UserRecord>(USERS, name)?.is_some() {
                return Err(errors::already_exists(format!(
                    "User with name {name} already exists."
                )));
            }
            if self.count(USERS)? >= USERS_MAX {
                return Err(errors::limit_exceeded(format!(
                    "Cannot exceed quota for UsersPerAccount: {USERS_MAX}"
                )));
            }
            let mut txn = Txn::new()
                .expect(key(USERS, name), 0)
                .put(key(USERS, name), encode(&user));
            if let Some(boundary) = &user.permissions_boundary {
                txn = self.count_boundary_use(txn, boundary, 1)?;
            }
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await?;
        Ok(wire::CreateUserResponse {
            user: Some(self.user_wire(&user)),
        })
    }

    pub(crate) fn get_user(
        &self,
        request: wire::GetUserRequest,
    ) -> Result<wire::GetUserResponse, ApiError> {
        // With no name, GetUser answers the caller; the edge fills it in.
        let name = request.user_name.as_deref().unwrap_or_default();
        let user = self.user(name)?;
        Ok(wire::GetUserResponse {
            user: Some(self.user_wire(&user.value)),
        })
    }

    pub(crate) fn list_users(
        &self,
        request: wire::ListUsersRequest,
    ) -> Result<wire::ListUsersResponse, ApiError> {
        let prefix = request.path_prefix.as_deref().unwrap_or("/");
        let users: Vec<(String, wire::User)> = self
            .read_all::<UserRecord>(USERS)?
            .into_iter()
            .filter(|(_, user)| user.path.starts_with(prefix))
            .map(|(key, user)| (key, self.user_wire(&user)))
            .collect();
        let page = page(users, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListUsersResponse {
            is_truncated: Some(page.truncated),
            marker: page.marker,
            users: Some(page.items),
        })
    }

    pub(crate) async fn update_user(
        &self,
        request: wire::UpdateUserRequest,
    ) -> Result<(), ApiError> {
        let name = text(&request.user_name);
        if let Some(path) = &request.new_path {
            check_path("newPath", path)?;
        }
        if let Some(new_name) = &request.new_user_name {
            check_name("newUserName", new_name, USER_NAME_CHARS_MAX)?;
            if !new_name.eq_ignore_ascii_case(name) {
                // A renamed user keeps its id and keys; groups and keys name
                // it, so those records move with it. Kept simple: refuse a
                // rename of a user that has any.
                let user = self.user(name)?;
                if !user.value.groups.is_empty() || !user.value.access_keys.is_empty() {
                    return Err(errors::invalid_input(format!(
                        "User {name} cannot be renamed while it has access keys or group memberships."
                    )));
                }
            }
        }
        mutate(&*self.store, || {
            let user = self.user(name)?;
            let mut updated = user.value.clone();
            if let Some(path) = &request.new_path {
                updated.path = path.clone();
            }
            let mut txn = Txn::new().expect(key(USERS, name), user.revision);
            if let Some(new_name) = &request.new_user_name {
                if !new_name.eq_ignore_ascii_case(name) {
                    if self.read::<UserRecord>(USERS, new_name)?.is_some() {
                        return Err(errors::already_exists(format!(
                            "User with name {new_name} already exists."
                        )));
                    }
                    txn = txn.delete(key(USERS, name)).expect(key(USERS, new_name), 0);
                }
                updated.name = new_name.clone();
            }
            txn = txn.put(key(USERS, &updated.name), encode(&updated));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    pub(crate) async fn delete_user(
        &self,
        request: wire::DeleteUserRequest,
    ) -> Result<(), ApiError> {
        let name = text(&request.user_name);
        mutate(&*self.store, || {
            let user = self.user(name)?;
            let held = &user.value;
            if !held.access_keys.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must delete access keys first.",
                ));
            }
            if !held.policies.inline.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            if !held.policies.attached.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must detach all policies first.",
                ));
            }
            if !held.groups.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must remove users from group first.",
                ));
            }
            let mut txn = Txn::new()
                .expect(key(USERS, name), user.revision)
                .delete(key(USERS, name));
            if let Some(boundary) = &held.permissions_boundary {
                txn = self.count_boundary_use(txn, boundary, -1)?;
            }
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    pub(crate) async fn tag_user(&self, request: wire::TagUserRequest) -> Result<(), ApiError> {
        let name = text(&request.user_name);
        let given = request.tags.clone().unwrap_or_default();
        mutate(&*self.store, || {
            let user = self.user(name)?;
            let mut updated = user.value.clone();
            errors::merge_tags(&mut updated.tags, &given)?;
            let txn = Txn::new()
                .expect(key(USERS, name), user.revision)
                .put(key(USERS, name), encode(&updated));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    pub(crate) async fn untag_user(&self, request: wire::UntagUserRequest) -> Result<(), ApiError> {
        let name = text(&request.user_name);
        let removed = request.tag_keys.clone().unwrap_or_default();
        mutate(&*self.store, || {
            let user = self.user(name)?;
            let mut updated = user.value.clone();
            updated.tags.retain(|(tag, _)| !removed.contains(tag));
            let txn = Txn::new()
                .expect(key(USERS, name), user.revision)
                .put(key(USERS, name), encode(&updated));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    pub(crate) fn list_user_tags(
        &self,
        request: wire::ListUserTagsRequest,
    ) -> Result<wire::ListUserTagsResponse, ApiError> {
        let user = self.user(text(&request.user_name))?;
        let tags = user
            .value
            .tags
            .iter()
            .enumerate()
            .map(|(index, (key, value))| {
                (
                    format!("{index:04}"),
                    wire::Tag {
                        key: Some(key.clone()),
                        value: Some(value.clone()),
                    },
                )
            })
            .collect();
        let page = page(tags, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListUserTagsResponse {
            is_truncated: Some(page.truncated),
            marker: page.marker,
            tags: Some(page.items),
        })
    }

    pub(crate) async fn create_access_key(
        &self,
        context: &Context<'_>,
        request: wire::CreateAccessKeyRequest,
    ) -> Result<wire::CreateAccessKeyResponse, ApiError> {
        // With no name, the key is the caller's; the edge fills it in.
        let name = request.user_name.as_deref().unwrap_or_default();
        let (access_key_id, secret) = fresh_key("AKIA", context);
        let created = mutate(&*self.store, || {
            let user = self.user(name)?;
            if user.value.access_keys.len() >= ACCESS_KEYS_PER_USER_MAX {
                return Err(errors::limit_exceeded(format!(
                    "Cannot exceed quota for AccessKeysPerUser: {ACCESS_KEYS_PER_USER_MAX}"
                )));
            }
            let mut updated = user.value.clone();
            updated.access_keys.push(access_key_id.clone());
            let record = AccessKeyRecord {
                access_key_id: access_key_id.clone(),
                user_name: updated.name.clone(),
                secret: secret.clone(),
                status: KeyStatus::Active,
                created_ms: context.now_ms,
            };
            let txn = Txn::new()
                .expect(key(USERS, name), user.revision)
                .put(key(USERS, name), encode(&updated))
                .expect(format!("{ACCESS_KEYS}{access_key_id}"), 0)
                .put(format!("{ACCESS_KEYS}{access_key_id}"), encode(&record));
            Ok(Attempt::Commit(with_generation(txn), record))
        })
        .await?;
        Ok(wire::CreateAccessKeyResponse {
            access_key: Some(wire::AccessKey {
                access_key_id: Some(created.access_key_id),
                create_date: Some(seconds(created.created_ms)),
                secret_access_key: Some(created.secret.expose().to_owned()),
                status: Some(statusType::Active),
                user_name: Some(created.user_name),
            }),
        })
    }

    fn access_key_record(
        &self,
        access_key_id: &str,
    ) -> Result<Option<flotilla_records::Versioned<AccessKeyRecord>>, ApiError> {
        flotilla_records::get(&*self.store, &format!("{ACCESS_KEYS}{access_key_id}"))
    }

    /// The key, refused as AWS refuses it when it is not this user's.
    fn users_key(
        &self,
        user_name: &str,
        access_key_id: &str,
    ) -> Result<flotilla_records::Versioned<AccessKeyRecord>, ApiError> {
        let user = self.user(user_name)?;
        match self.access_key_record(access_key_id)? {
            Some(record)
                if record
                    .value
                    .user_name
                    .eq_ignore_ascii_case(&user.value.name) =>
            {
                Ok(record)
            }
            _ => Err(errors::no_such_entity(format!(
                "The Access Key with id {access_key_id} cannot be found."
            ))),
        }
    }

    pub(crate) fn list_access_keys(
        &self,
        request: wire::ListAccessKeysRequest,
    ) -> Result<wire::ListAccessKeysResponse, ApiError> {
        let name = request.user_name.as_deref().unwrap_or_default();
        let user = self.user(name)?;
        let mut keys = Vec::new();
        for access_key_id in &user.value.access_keys {
            if let Some(record) = self.access_key_record(access_key_id)? {
                keys.push((
                    access_key_id.clone(),
                    wire::AccessKeyMetadata {
                        access_key_id: Some(access_key_id.clone()),
                        create_date: Some(seconds(record.value.created_ms)),
                        status: Some(status_wire(record.value.status)),
                        user_name: Some(user.value.name.clone()),
                    },
                ));
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let page = page(keys, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListAccessKeysResponse {
            access_key_metadata: Some(page.items),
            is_truncated: Some(page.truncated),
            marker: page.marker,
        })
    }

    pub(crate) async fn update_access_key(
        &self,
        request: wire::UpdateAccessKeyRequest,
    ) -> Result<(), ApiError> {
        let name = request.user_name.as_deref().unwrap_or_default();
        let access_key_id = text(&request.access_key_id);
        let status = match request.status {
            Some(statusType::Active) => KeyStatus::Active,
            Some(statusType::Inactive) => KeyStatus::Inactive,
            _ => {
                return Err(errors::validation(format!(
                    "1 validation error detected: Value '{}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive]",
                    request.status.map_or("null", |status| status.as_str())
                )))
            }
        };
        mutate(&*self.store, || {
            let record = self.users_key(name, access_key_id)?;
            let mut updated = record.value.clone();
            updated.status = status;
            let key = format!("{ACCESS_KEYS}{access_key_id}");
            let txn = Txn::new()
                .expect(&key, record.revision)
                .put(key, encode(&updated));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    pub(crate) async fn delete_access_key(
        &self,
        request: wire::DeleteAccessKeyRequest,
    ) -> Result<(), ApiError> {
        let name = request.user_name.as_deref().unwrap_or_default();
        let access_key_id = text(&request.access_key_id);
        mutate(&*self.store, || {
            let record = self.users_key(name, access_key_id)?;
            let user = self.user(name)?;
            let mut updated = user.value.clone();
            updated.access_keys.retain(|held| held != access_key_id);
            let key_key = format!("{ACCESS_KEYS}{access_key_id}");
            let txn = Txn::new()
                .expect(&key_key, record.revision)
                .delete(key_key)
                .expect(records::key(USERS, name), user.revision)
                .put(records::key(USERS, name), encode(&updated));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }
}

pub(crate) fn status_wire(status: KeyStatus) -> statusType {
    match status {
        KeyStatus::Active => statusType::Active,
        KeyStatus::Inactive => statusType::Inactive,
    }
}

pub(crate) fn boundary_wire(arn: &str) -> wire::AttachedPermissionsBoundary {
    wire::AttachedPermissionsBoundary {
        permissions_boundary_arn: Some(arn.to_owned()),
        permissions_boundary_type: Some(
            wire::PermissionsBoundaryAttachmentType::PermissionsBoundaryPolicy,
        ),
    }
}

/// A fresh access key id (`AKIA…` for a user's key, `ASIA…` for temporary
/// credentials: 20 characters) and its 40-character secret, from two fresh
/// random ids.
pub(crate) fn fresh_key(prefix: &str, context: &Context<'_>) -> (String, Secret) {
    let first = (context.fresh_id)();
    let second = (context.fresh_id)();
    let id_digest = Sha256::digest(format!("id:{first}:{second}").as_bytes());
    let access_key_id = prefix.to_owned() + &crate::base32(&id_digest, 16);
    let secret_digest = Sha256::digest(format!("secret:{first}:{second}").as_bytes());
    let secret = base64::engine::general_purpose::STANDARD.encode(secret_digest);
    (
        access_key_id,
        Secret::new(secret.chars().take(40).collect()),
    )
}
