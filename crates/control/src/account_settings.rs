//! Account settings: PutAccountSetting, PutAccountSettingDefault,
//! ListAccountSettings, DeleteAccountSetting.
//!
//! A setting is stored per principal; the account default is the setting of
//! the account's root principal. The effective value for a principal is its
//! own setting, else the account default, else ECS's built-in default.

use flotilla_store::Txn;
use flotilla_types::ecs::*;
use flotilla_types::ApiError;

use crate::page;
use crate::records::{self, keys, Attempt};
use crate::{Caller, Ecs};

/// ECS's value for each setting nobody has set.
fn built_in_default(name: SettingName) -> &'static str {
    use SettingName as N;
    match name {
        N::ServiceLongArnFormat | N::TaskLongArnFormat | N::ContainerInstanceLongArnFormat => {
            "enabled"
        }
        N::AwsvpcTrunking | N::ContainerInsights | N::FargateFIPSMode | N::FargateEventWindows => {
            "disabled"
        }
        N::TagResourceAuthorization => "on",
        N::FargateTaskRetirementWaitPeriod => "7",
        N::GuardDutyActivate => "off",
        N::DefaultLogDriverMode => "non-blocking",
    }
}

/// The values a setting accepts.
fn allowed_values(name: SettingName) -> &'static [&'static str] {
    use SettingName as N;
    match name {
        N::ServiceLongArnFormat
        | N::TaskLongArnFormat
        | N::ContainerInstanceLongArnFormat
        | N::AwsvpcTrunking
        | N::FargateFIPSMode
        | N::FargateEventWindows => &["enabled", "disabled"],
        N::ContainerInsights => &["enabled", "disabled", "enhanced"],
        N::TagResourceAuthorization | N::GuardDutyActivate => &["on", "off"],
        N::FargateTaskRetirementWaitPeriod => &["0", "7", "14"],
        N::DefaultLogDriverMode => &["blocking", "non-blocking"],
    }
}

fn check_value(name: SettingName, value: &str) -> Result<(), ApiError> {
    if name == SettingName::GuardDutyActivate {
        return Err(ApiError::invalid_parameter(
            "guardDutyActivate is read only: it follows the account's GuardDuty configuration",
        ));
    }
    let allowed = allowed_values(name);
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "Invalid value {value:?} for account setting {name}: must be one of {}",
            allowed.join(", ")
        )))
    }
}

const LIST_ACCOUNT_SETTINGS_MAX: usize = 10;

impl Ecs {
    fn root_principal(&self) -> String {
        format!("arn:aws:iam::{}:root", self.scope.account_id)
    }

    fn principal_of(&self, caller: &Caller, given: Option<&str>) -> Result<String, ApiError> {
        match given.filter(|p| !p.is_empty()) {
            None => Ok(caller.principal_arn.clone()),
            Some(arn) if arn.starts_with("arn:") && arn.split(':').nth(2) == Some("iam") => Ok(arn.to_owned()),
            Some(arn) => Err(ApiError::invalid_parameter(format!(
                "Invalid principalArn {arn:?}: must be the ARN of an IAM user, role or the root user"
            ))),
        }
    }

    /// The account-wide value of a setting, for choices made on the
    /// account's behalf (a new cluster's containerInsights, say).
    pub(crate) fn account_default(&self, name: &str) -> Result<String, ApiError> {
        let name: SettingName = serde_json::from_value(serde_json::Value::from(name))
            .map_err(|_| ApiError::server(format!("unknown account setting {name}")))?;
        Ok(self
            .effective_setting(&self.root_principal(), name)?
            .value
            .unwrap_or_default())
    }

    fn stored_setting(
        &self,
        principal: &str,
        name: SettingName,
    ) -> Result<Option<records::Versioned<Setting>>, ApiError> {
        records::get(
            self.store.as_ref(),
            &keys::account_setting(principal, name.as_str()),
        )
    }

    fn effective_setting(&self, principal: &str, name: SettingName) -> Result<Setting, ApiError> {
        let root = self.root_principal();
        for owner in [principal, root.as_str()] {
            if let Some(found) = self.stored_setting(owner, name)? {
                return Ok(Setting {
                    principal_arn: Some(principal.to_owned()),
                    ..found.value
                });
            }
        }
        Ok(Setting {
            name: Some(name),
            value: Some(built_in_default(name).to_owned()),
            principal_arn: Some(principal.to_owned()),
            r#type: Some(SettingType::AwsManaged),
        })
    }

    async fn put_setting(
        &self,
        principal: String,
        name: SettingName,
        value: String,
    ) -> Result<Setting, ApiError> {
        check_value(name, &value)?;
        let setting = Setting {
            name: Some(name),
            value: Some(value),
            principal_arn: Some(principal.clone()),
            r#type: Some(SettingType::User),
        };
        let key = keys::account_setting(&principal, name.as_str());
        records::mutate(self.store.as_ref(), || {
            let revision = self
                .store
                .get(&key)
                .map_err(records::store_error)?
                .map_or(0, |e| e.mod_revision);
            let txn = Txn::new()
                .expect(&key, revision)
                .put(&key, records::encode(&setting));
            Ok(Attempt::Commit(txn, setting.clone()))
        })
        .await
    }

    pub(crate) async fn put_account_setting(
        &self,
        caller: &Caller,
        request: PutAccountSettingRequest,
    ) -> Result<PutAccountSettingResponse, ApiError> {
        let principal = self.principal_of(caller, request.principal_arn.as_deref())?;
        let (name, value) = (
            required_name(request.name)?,
            request.value.unwrap_or_default(),
        );
        let setting = self.put_setting(principal, name, value).await?;
        Ok(PutAccountSettingResponse {
            setting: Some(setting),
        })
    }

    pub(crate) async fn put_account_setting_default(
        &self,
        request: PutAccountSettingDefaultRequest,
    ) -> Result<PutAccountSettingDefaultResponse, ApiError> {
        let (name, value) = (
            required_name(request.name)?,
            request.value.unwrap_or_default(),
        );
        let setting = self.put_setting(self.root_principal(), name, value).await?;
        Ok(PutAccountSettingDefaultResponse {
            setting: Some(setting),
        })
    }

    pub(crate) async fn delete_account_setting(
        &self,
        caller: &Caller,
        request: DeleteAccountSettingRequest,
    ) -> Result<DeleteAccountSettingResponse, ApiError> {
        let principal = self.principal_of(caller, request.principal_arn.as_deref())?;
        let name = required_name(request.name)?;
        let key = keys::account_setting(&principal, name.as_str());
        let deleted = records::mutate(self.store.as_ref(), || {
            let found = self.stored_setting(&principal, name)?.ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "The account setting {name} is not set for {principal}"
                ))
            })?;
            let txn = Txn::new().expect(&key, found.revision).delete(&key);
            Ok(Attempt::Commit(txn, found.value))
        })
        .await?;
        Ok(DeleteAccountSettingResponse {
            setting: Some(deleted),
        })
    }

    pub(crate) fn list_account_settings(
        &self,
        caller: &Caller,
        request: ListAccountSettingsRequest,
    ) -> Result<ListAccountSettingsResponse, ApiError> {
        let principal = self.principal_of(caller, request.principal_arn.as_deref())?;
        let limit = page::max_results(
            request.max_results,
            LIST_ACCOUNT_SETTINGS_MAX,
            LIST_ACCOUNT_SETTINGS_MAX,
        )?;
        let matches = |setting: &Setting| {
            request.name.is_none_or(|name| setting.name == Some(name))
                && request
                    .value
                    .as_ref()
                    .is_none_or(|value| setting.value.as_ref() == Some(value))
        };
        if request.effective_settings == Some(true) {
            // Every setting has an effective value, so the listing is the
            // fixed set of names; the token is the index to resume from.
            let start = match request.next_token.as_deref().filter(|t| !t.is_empty()) {
                None => 0,
                Some(token) => token.parse::<usize>().map_err(|_| {
                    ApiError::invalid_parameter(
                        "Invalid nextToken: it was not returned by this listing",
                    )
                })?,
            };
            let mut settings = Vec::new();
            for name in SettingName::ALL {
                let setting = self.effective_setting(&principal, *name)?;
                if matches(&setting) {
                    settings.push(setting);
                }
            }
            let end = (start + limit).min(settings.len());
            let next_token = (end < settings.len()).then(|| end.to_string());
            let page = settings.get(start..end).unwrap_or_default().to_vec();
            return Ok(ListAccountSettingsResponse {
                settings: Some(page),
                next_token,
            });
        }
        let listing = page::list(
            self.store.as_ref(),
            &keys::account_settings_of(&principal),
            request.next_token.as_deref(),
            limit,
            |entry| {
                let setting: Setting = records::decode(entry)?;
                Ok(matches(&setting).then_some(setting))
            },
        )?;
        Ok(ListAccountSettingsResponse {
            settings: Some(listing.items),
            next_token: listing.next_token,
        })
    }
}

fn required_name(name: Option<SettingName>) -> Result<SettingName, ApiError> {
    name.ok_or_else(|| ApiError::invalid_parameter("name is required"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{caller, ecs};

    #[tokio::test]
    async fn effective_value_falls_back_to_default_then_built_in() {
        let ecs = ecs();
        let caller = caller();
        let effective = |ecs: &Ecs| {
            let listed = ecs
                .list_account_settings(
                    &caller,
                    ListAccountSettingsRequest {
                        name: Some(SettingName::ContainerInsights),
                        effective_settings: Some(true),
                        ..Default::default()
                    },
                )
                .expect("list");
            listed.settings.expect("settings")[0]
                .value
                .clone()
                .expect("value")
        };
        assert_eq!(effective(&ecs), "disabled");
        ecs.put_account_setting_default(PutAccountSettingDefaultRequest {
            name: Some(SettingName::ContainerInsights),
            value: Some("enabled".into()),
        })
        .await
        .expect("default");
        assert_eq!(effective(&ecs), "enabled");
        assert_eq!(
            ecs.account_default("containerInsights").expect("default"),
            "enabled"
        );

        let bad = ecs
            .put_account_setting(
                &caller,
                PutAccountSettingRequest {
                    name: Some(SettingName::ContainerInsights),
                    value: Some("maybe".into()),
                    principal_arn: None,
                },
            )
            .await;
        assert_eq!(
            bad.expect_err("bad value").code,
            "InvalidParameterException"
        );
        ecs.delete_account_setting(
            &caller,
            DeleteAccountSettingRequest {
                name: Some(SettingName::ContainerInsights),
                principal_arn: None,
            },
        )
        .await
        .expect("delete");
        assert_eq!(effective(&ecs), "disabled");
    }
}
