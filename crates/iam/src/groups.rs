//! Groups and their members.

use flotilla_aws::iam as wire;
use flotilla_records::{encode, mutate, Attempt, Versioned};
use flotilla_store::Txn;
use flotilla_types::ApiError;

use crate::errors::{self, check_name, check_path, GROUP_NAME_CHARS_MAX};
use crate::records::{key, with_generation, GroupRecord, UserRecord, GROUPS, USERS};
use crate::{page, seconds, text, Context, Iam, GROUPS_MAX, GROUPS_PER_USER_MAX};

impl Iam {
    fn group_wire(&self, group: &GroupRecord) -> wire::Group {
        wire::Group {
            arn: Some(self.iam_arn("group", &group.path, &group.name)),
            create_date: Some(seconds(group.created_ms)),
            group_id: Some(group.group_id.clone()),
            group_name: Some(group.name.clone()),
            path: Some(group.path.clone()),
        }
    }

    pub(crate) fn group(&self, name: &str) -> Result<Versioned<GroupRecord>, ApiError> {
        self.read::<GroupRecord>(GROUPS, name)?
            .ok_or_else(|| errors::no_such_group(name))
    }

    pub(crate) async fn create_group(
        &self,
        context: &Context<'_>,
        request: wire::CreateGroupRequest,
    ) -> Result<wire::CreateGroupResponse, ApiError> {
        let name = text(&request.group_name);
        check_name("groupName", name, GROUP_NAME_CHARS_MAX)?;
        let path = request.path.clone().unwrap_or_else(|| "/".to_owned());
        check_path("path", &path)?;
        let group = GroupRecord {
            name: name.to_owned(),
            path,
            group_id: crate::unique_id("AGPA", &(context.fresh_id)()),
            created_ms: context.now_ms,
            policies: Default::default(),
            members: Vec::new(),
        };
        mutate(&*self.store, || {
            if self.read::<GroupRecord>(GROUPS, name)?.is_some() {
                return Err(errors::already_exists(format!(
                    "Group with name {name} already exists."
                )));
            }
            if self.count(GROUPS)? >= GROUPS_MAX {
                return Err(errors::limit_exceeded(format!(
                    "Cannot exceed quota for GroupsPerAccount: {GROUPS_MAX}"
                )));
            }
            let txn = Txn::new()
                .expect(key(GROUPS, name), 0)
                .put(key(GROUPS, name), encode(&group));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await?;
        Ok(wire::CreateGroupResponse {
            group: Some(self.group_wire(&group)),
        })
    }

    pub(crate) fn get_group(
        &self,
        request: wire::GetGroupRequest,
    ) -> Result<wire::GetGroupResponse, ApiError> {
        let group = self.group(text(&request.group_name))?;
        let mut users = Vec::new();
        for member in &group.value.members {
            if let Some(user) = self.read::<UserRecord>(USERS, member)? {
                users.push((member.to_ascii_lowercase(), self.user_wire(&user.value)));
            }
        }
        users.sort_by(|a, b| a.0.cmp(&b.0));
        let page = page(users, request.marker.as_deref(), request.max_items)?;
        Ok(wire::GetGroupResponse {
            group: Some(self.group_wire(&group.value)),
            is_truncated: Some(page.truncated),
            marker: page.marker,
            users: Some(page.items),
        })
    }

    pub(crate) fn list_groups(
        &self,
        request: wire::ListGroupsRequest,
    ) -> Result<wire::ListGroupsResponse, ApiError> {
        let prefix = request.path_prefix.as_deref().unwrap_or("/");
        let groups = self
            .read_all::<GroupRecord>(GROUPS)?
            .into_iter()
            .filter(|(_, group)| group.path.starts_with(prefix))
            .map(|(key, group)| (key, self.group_wire(&group)))
            .collect();
        let page = page(groups, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListGroupsResponse {
            groups: Some(page.items),
            is_truncated: Some(page.truncated),
            marker: page.marker,
        })
    }

    pub(crate) fn list_groups_for_user(
        &self,
        request: wire::ListGroupsForUserRequest,
    ) -> Result<wire::ListGroupsForUserResponse, ApiError> {
        let user = self.user(text(&request.user_name))?;
        let mut groups = Vec::new();
        for name in &user.value.groups {
            if let Some(group) = self.read::<GroupRecord>(GROUPS, name)? {
                groups.push((name.to_ascii_lowercase(), self.group_wire(&group.value)));
            }
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let page = page(groups, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListGroupsForUserResponse {
            groups: Some(page.items),
            is_truncated: Some(page.truncated),
            marker: page.marker,
        })
    }

    pub(crate) async fn delete_group(
        &self,
        request: wire::DeleteGroupRequest,
    ) -> Result<(), ApiError> {
        let name = text(&request.group_name);
        mutate(&*self.store, || {
            let group = self.group(name)?;
            if !group.value.members.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must remove users from group first.",
                ));
            }
            if !group.value.policies.inline.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            if !group.value.policies.attached.is_empty() {
                return Err(errors::delete_conflict(
                    "Cannot delete entity, must detach all policies first.",
                ));
            }
            let txn = Txn::new()
                .expect(key(GROUPS, name), group.revision)
                .delete(key(GROUPS, name));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    pub(crate) async fn add_user_to_group(
        &self,
        request: wire::AddUserToGroupRequest,
    ) -> Result<(), ApiError> {
        self.membership(text(&request.group_name), text(&request.user_name), true)
            .await
    }

    pub(crate) async fn remove_user_from_group(
        &self,
        request: wire::RemoveUserFromGroupRequest,
    ) -> Result<(), ApiError> {
        self.membership(text(&request.group_name), text(&request.user_name), false)
            .await
    }

    async fn membership(
        &self,
        group_name: &str,
        user_name: &str,
        add: bool,
    ) -> Result<(), ApiError> {
        mutate(&*self.store, || {
            let group = self.group(group_name)?;
            let user = self.user(user_name)?;
            let mut group_updated = group.value.clone();
            let mut user_updated = user.value.clone();
            let member = group_updated
                .members
                .iter()
                .any(|held| held.eq_ignore_ascii_case(&user.value.name));
            if add {
                if member {
                    return Ok(Attempt::Done(()));
                }
                if user_updated.groups.len() >= GROUPS_PER_USER_MAX {
                    return Err(errors::limit_exceeded(format!(
                        "Cannot exceed quota for GroupsPerUser: {GROUPS_PER_USER_MAX}"
                    )));
                }
                group_updated.members.push(user.value.name.clone());
                user_updated.groups.push(group.value.name.clone());
            } else {
                if !member {
                    return Err(errors::no_such_entity(format!(
                        "The user with name {user_name} cannot be found in group {group_name}."
                    )));
                }
                group_updated
                    .members
                    .retain(|held| !held.eq_ignore_ascii_case(&user.value.name));
                user_updated
                    .groups
                    .retain(|held| !held.eq_ignore_ascii_case(&group.value.name));
            }
            let txn = Txn::new()
                .expect(key(GROUPS, group_name), group.revision)
                .put(key(GROUPS, group_name), encode(&group_updated))
                .expect(key(USERS, user_name), user.revision)
                .put(key(USERS, user_name), encode(&user_updated));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }
}
