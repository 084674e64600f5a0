//! Secrets Manager (`secretsmanager`, JSON 1.1): secrets with versions and
//! staging labels, scheduled deletion, tags.
//!
//! Store layout (under `secretsmanager/`; `|` cannot occur in a secret's
//! name):
//!
//! | key | value |
//! |---|---|
//! | `secrets/{name}` | [`SecretRecord`]: metadata, versions and their staging labels, tags, deletion |
//! | `values/{name}|{version id}` | [`VersionValue`]: the version's value, sealed |
//!
//! A version's value is a record of its own so that changing a secret's
//! labels or tags rewrites a small record, never its (up to 100) values.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use flotilla_aws::secretsmanager::{
    self as wire, SecretsmanagerRequest as Q, SecretsmanagerResponse as R,
};
use flotilla_records::{encode, get, mutate, Attempt};
use flotilla_store::{Store, Txn};
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::records::{list_all, seal_error};
use crate::seal::{Sealed, Sealer};
use crate::value::SecretBytes;
use crate::{seconds, Scope};

/// Largest SecretString or SecretBinary, in bytes.
pub const VALUE_MAX_BYTES: usize = 65_536;
pub const NAME_MAX_CHARS: usize = 512;
pub const DESCRIPTION_MAX_CHARS: usize = 2_048;
pub const TOKEN_MIN_CHARS: usize = 32;
pub const TOKEN_MAX_CHARS: usize = 64;
pub const STAGE_MAX_CHARS: usize = 256;
/// Staging labels on one version, and on a secret's versions together.
pub const STAGES_PER_VERSION_MAX: usize = 20;
pub const TAGS_MAX: usize = 50;
pub const TAG_KEY_MAX_CHARS: usize = 128;
pub const TAG_VALUE_MAX_CHARS: usize = 256;
/// Versions kept per secret: beyond it the oldest versions without a
/// staging label go, as Secrets Manager removes deprecated versions.
pub const VERSIONS_MAX: usize = 100;
pub const RECOVERY_WINDOW_MIN_DAYS: i64 = 7;
pub const RECOVERY_WINDOW_MAX_DAYS: i64 = 30;
pub const RECOVERY_WINDOW_DEFAULT_DAYS: i64 = 30;
pub const LIST_MAX_RESULTS: i32 = 100;
/// Secrets one BatchGetSecretValue reads.
pub const BATCH_IDS_MAX: usize = 20;
/// Secrets one account holds (Secrets Manager's quota is 500,000); a bound
/// on what a listing reads.
pub const SECRETS_MAX: usize = 500_000;
const DAY_MS: u64 = 86_400_000;
/// Expired secrets removed per maintenance pass.
pub const PURGE_BATCH_MAX: usize = 1_000;

pub const CURRENT: &str = "AWSCURRENT";
pub const PREVIOUS: &str = "AWSPREVIOUS";
pub const PENDING: &str = "AWSPENDING";

const PREFIX_SECRETS: &str = "secretsmanager/secrets/";
const PREFIX_VALUES: &str = "secretsmanager/values/";

fn secret_key(name: &str) -> String {
    format!("{PREFIX_SECRETS}{name}")
}

fn value_key(name: &str, version_id: &str) -> String {
    format!("{PREFIX_VALUES}{name}|{version_id}")
}

/// What a sealed value is bound to: it opens only as this version of this
/// secret.
fn seal_context(arn: &str, version_id: &str) -> String {
    format!("secretsmanager|{arn}|{version_id}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    pub arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Kept and described as given; values are sealed with the
    /// installation's key whatever it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    pub created_ms: u64,
    pub last_changed_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_accessed_ms: Option<u64>,
    /// When DeleteSecret was called, and when the secret goes for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_ms: Option<u64>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub versions: BTreeMap<String, VersionMeta>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionMeta {
    pub created_ms: u64,
    #[serde(default)]
    pub stages: Vec<String>,
}

/// One version's value. `binary` says whether it was given as SecretBinary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionValue {
    pub binary: bool,
    pub sealed: Sealed,
}

impl SecretRecord {
    /// Past its recovery window: gone, though its record may linger until
    /// the name is reused.
    fn expired(&self, now_ms: u64) -> bool {
        self.deletion_ms.is_some_and(|at| at <= now_ms)
    }

    fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, meta)| meta.stages.iter().any(|s| s == stage))
            .map(|(id, _)| id.as_str())
    }

    fn tag_list(&self) -> Option<Vec<wire::Tag>> {
        if self.tags.is_empty() {
            return None;
        }
        Some(
            self.tags
                .iter()
                .map(|(key, value)| wire::Tag {
                    key: Some(key.clone()),
                    value: Some(value.clone()),
                })
                .collect(),
        )
    }

    fn versions_to_stages(&self) -> BTreeMap<String, Vec<String>> {
        self.versions
            .iter()
            .filter(|(_, meta)| !meta.stages.is_empty())
            .map(|(id, meta)| (id.clone(), meta.stages.clone()))
            .collect()
    }

    /// Gives `stages` to `version_id` alone; AWSCURRENT's former holder
    /// gets AWSPREVIOUS, as Secrets Manager moves them.
    fn attach(&mut self, version_id: &str, stages: &[String]) {
        let former_current = self.version_with(CURRENT).map(str::to_owned);
        let moves_current =
            stages.iter().any(|s| s == CURRENT) && former_current.as_deref() != Some(version_id);
        for (id, meta) in self.versions.iter_mut() {
            if id != version_id {
                meta.stages.retain(|stage| !stages.contains(stage));
            }
        }
        if let Some(meta) = self.versions.get_mut(version_id) {
            for stage in stages {
                if !meta.stages.contains(stage) {
                    meta.stages.push(stage.clone());
                }
            }
        }
        if moves_current {
            if let Some(former) = former_current {
                for (id, meta) in self.versions.iter_mut() {
                    if *id != former {
                        meta.stages.retain(|stage| stage != PREVIOUS);
                    }
                }
                if let Some(meta) = self.versions.get_mut(&former) {
                    if !meta.stages.iter().any(|s| s == PREVIOUS) {
                        meta.stages.push(PREVIOUS.to_owned());
                    }
                }
            }
        }
    }

    /// The versions to forget once more than [`VERSIONS_MAX`] are kept:
    /// the oldest with no staging label.
    fn prune(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        while self.versions.len() > VERSIONS_MAX {
            let oldest = self
                .versions
                .iter()
                .filter(|(_, meta)| meta.stages.is_empty())
                .min_by_key(|(id, meta)| (meta.created_ms, (*id).clone()))
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    self.versions.remove(&id);
                    gone.push(id);
                }
                None => break,
            }
        }
        gone
    }
}

// --- errors, in Secrets Manager's words -------------------------------------

fn not_found() -> ApiError {
    ApiError::resource_not_found("Secrets Manager can't find the specified secret.")
}

fn invalid_parameter(message: impl Into<String>) -> ApiError {
    ApiError::new("InvalidParameterException", 400, message)
}

fn invalid_request(message: impl Into<String>) -> ApiError {
    ApiError::new("InvalidRequestException", 400, message)
}

fn marked_for_deletion() -> ApiError {
    invalid_request(
        "You can't perform this operation on the secret because it was marked for deletion.",
    )
}

/// A member outside the model's constraints, as AWS's request validation
/// words it. Values of sensitive members are never quoted.
fn constraint(value: Option<&str>, member: &str, constraint: &str) -> ApiError {
    let value = value.map_or(String::new(), |v| format!(" '{v}'"));
    ApiError::new(
        "ValidationException",
        400,
        format!(
            "1 validation error detected: Value{value} at '{member}' failed to satisfy constraint: {constraint}"
        ),
    )
}

fn check_length(
    value: &str,
    member: &str,
    min: usize,
    max: usize,
    sensitive: bool,
) -> Result<(), ApiError> {
    let length = value.chars().count();
    let shown = (!sensitive).then_some(value);
    if length < min {
        return Err(constraint(
            shown,
            member,
            &format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if length > max {
        return Err(constraint(
            shown,
            member,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), ApiError> {
    check_length(name, "name", 1, NAME_MAX_CHARS, false)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
    {
        return Err(invalid_parameter(
            "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@",
        ));
    }
    Ok(())
}

fn check_secret_id(id: &str) -> Result<(), ApiError> {
    check_length(id, "secretId", 1, 2_048, false)
}

fn check_token(token: &str) -> Result<(), ApiError> {
    check_length(
        token,
        "clientRequestToken",
        TOKEN_MIN_CHARS,
        TOKEN_MAX_CHARS,
        false,
    )
}

fn check_stage(stage: &str, member: &str) -> Result<(), ApiError> {
    check_length(stage, member, 1, STAGE_MAX_CHARS, false)
}

fn check_tags(tags: &[wire::Tag]) -> Result<Vec<(String, String)>, ApiError> {
    let mut checked = Vec::with_capacity(tags.len());
    for tag in tags {
        let key = tag.key.clone().unwrap_or_default();
        let value = tag.value.clone().unwrap_or_default();
        check_length(&key, "tags.member.key", 1, TAG_KEY_MAX_CHARS, false)?;
        check_length(&value, "tags.member.value", 0, TAG_VALUE_MAX_CHARS, false)?;
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid_parameter(
                "Invalid tag key. Tag keys cannot begin with the reserved prefix aws:",
            ));
        }
        checked.push((key, value));
    }
    Ok(checked)
}

/// Tags merged into `existing`, a key given again replacing its value.
fn merge_tags(existing: &mut Vec<(String, String)>, new: Vec<(String, String)>) {
    for (key, value) in new {
        match existing.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => existing.push((key, value)),
        }
    }
}

/// A value given as SecretString or SecretBinary (base64 on the wire).
struct GivenValue {
    bytes: SecretBytes,
    binary: bool,
}

fn given_value(
    string: Option<String>,
    binary: Option<String>,
) -> Result<Option<GivenValue>, ApiError> {
    match (string, binary) {
        (Some(_), Some(_)) => Err(invalid_parameter(
            "You can't specify both a binary secret value and a string secret value in the same secret.",
        )),
        (Some(string), None) => {
            let bytes = SecretBytes::from_string(string);
            if bytes.len() > VALUE_MAX_BYTES {
                return Err(constraint(
                    None,
                    "secretString",
                    &format!("Member must have length less than or equal to {VALUE_MAX_BYTES}"),
                ));
            }
            Ok(Some(GivenValue {
                bytes,
                binary: false,
            }))
        }
        (None, Some(encoded)) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|_| {
                    ApiError::serialization("SecretBinary is not valid base64-encoded data")
                })?;
            let bytes = SecretBytes::new(decoded);
            drop(encoded);
            if bytes.len() > VALUE_MAX_BYTES {
                return Err(constraint(
                    None,
                    "secretBinary",
                    &format!("Member must have length less than or equal to {VALUE_MAX_BYTES}"),
                ));
            }
            Ok(Some(GivenValue {
                bytes,
                binary: true,
            }))
        }
        (None, None) => Ok(None),
    }
}

/// A version to add, and what UpdateSecret changes with it.
struct NewVersion {
    token: Option<String>,
    value: GivenValue,
    stages: Vec<String>,
    description: Option<String>,
    kms_key_id: Option<String>,
}

/// Refuses a member Flotilla does not act on, naming it.
fn unsupported(set: bool, member: &str, why: &str) -> Result<(), ApiError> {
    if set {
        return Err(invalid_request(format!("{member} is not supported: {why}")));
    }
    Ok(())
}

/// Secrets Manager over the store, for one region and account.
pub struct SecretsManager {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    scope: Scope,
}

/// A secret as a request named it, read with its revision.
struct Found {
    record: SecretRecord,
    revision: flotilla_store::Revision,
}

impl SecretsManager {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>, scope: Scope) -> Self {
        Self {
            store,
            sealer,
            scope,
        }
    }

    /// Carries out one request at `now_ms`; `fresh_id` is a new UUID from
    /// the edge, for a new secret's ARN suffix and for a version id when the
    /// caller gave no ClientRequestToken.
    pub async fn handle(&self, request: Q, now_ms: u64, fresh_id: &str) -> Result<R, ApiError> {
        if let Some(member) = request.missing_required() {
            return Err(ApiError::new(
                "ValidationException",
                400,
                format!(
                    "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                    lower_first(member)
                ),
            ));
        }
        match request {
            Q::CreateSecret(r) => self.create(r, now_ms, fresh_id).await.map(R::CreateSecret),
            Q::GetSecretValue(r) => self.get_value(r, now_ms).map(R::GetSecretValue),
            Q::BatchGetSecretValue(r) => self.batch_get(r, now_ms).map(R::BatchGetSecretValue),
            Q::PutSecretValue(r) => self
                .put_value(r, now_ms, fresh_id)
                .await
                .map(R::PutSecretValue),
            Q::UpdateSecret(r) => self.update(r, now_ms, fresh_id).await.map(R::UpdateSecret),
            Q::DescribeSecret(r) => self.describe(r, now_ms).map(R::DescribeSecret),
            Q::ListSecrets(r) => self.list(r, now_ms).map(R::ListSecrets),
            Q::ListSecretVersionIds(r) => {
                self.list_versions(r, now_ms).map(R::ListSecretVersionIds)
            }
            Q::UpdateSecretVersionStage(r) => self
                .update_stage(r, now_ms)
                .await
                .map(R::UpdateSecretVersionStage),
            Q::DeleteSecret(r) => self.delete(r, now_ms).await.map(R::DeleteSecret),
            Q::RestoreSecret(r) => self.restore(r, now_ms).await.map(R::RestoreSecret),
            Q::TagResource(r) => self.tag(r, now_ms).await.map(R::TagResource),
            Q::UntagResource(r) => self.untag(r, now_ms).await.map(R::UntagResource),
            other => Err(ApiError::new(
                "InvalidRequestException",
                400,
                format!(
                    "{} is not supported by this Flotilla server yet",
                    other.operation()
                ),
            )),
        }
    }

    /// Removes the records of secrets whose recovery window has passed at
    /// `now_ms` (they are answered as absent already), at most
    /// [`PURGE_BATCH_MAX`] secrets per call; answers how many went.
    pub async fn purge_expired(&self, now_ms: u64) -> Result<usize, ApiError> {
        let mut purged = 0;
        for entry in list_all(self.store.as_ref(), PREFIX_SECRETS, SECRETS_MAX)? {
            if purged >= PURGE_BATCH_MAX {
                break;
            }
            let record: SecretRecord = flotilla_records::decode(&entry)?;
            if !record.expired(now_ms) {
                continue;
            }
            let mut txn = Txn::new()
                .expect(entry.key.clone(), entry.mod_revision)
                .delete(entry.key.clone());
            for version in record.versions.keys() {
                txn = txn.delete(value_key(&record.name, version));
            }
            match self.store.commit(txn).await {
                Ok(_) => purged += 1,
                // Written meanwhile (the name was reused): the next pass decides again.
                Err(flotilla_store::StoreError::Conflict { .. }) => {}
                Err(error) => return Err(flotilla_records::store_error(error)),
            }
        }
        Ok(purged)
    }

    fn arn(&self, name: &str, suffix: &str) -> String {
        format!(
            "arn:{}:secretsmanager:{}:{}:secret:{name}-{suffix}",
            self.scope.partition, self.scope.region, self.scope.account_id
        )
    }

    /// The secret `id` names (its name, its ARN, or its ARN without the
    /// random suffix), unless it is past its recovery window.
    fn find(&self, id: &str, now_ms: u64) -> Result<Option<Found>, ApiError> {
        check_secret_id(id)?;
        let read = |name: &str| -> Result<Option<Found>, ApiError> {
            Ok(get::<SecretRecord>(self.store.as_ref(), &secret_key(name))?
                .filter(|found| !found.value.expired(now_ms))
                .map(|found| Found {
                    record: found.value,
                    revision: found.revision,
                }))
        };
        let Some(resource) = id.strip_prefix("arn:") else {
            return read(id);
        };
        let prefix = format!(
            "{}:secretsmanager:{}:{}:secret:",
            self.scope.partition, self.scope.region, self.scope.account_id
        );
        let Some(rest) = resource.strip_prefix(&prefix) else {
            return Ok(None);
        };
        if let Some(found) = read(rest)? {
            // A partial ARN: the name without the suffix.
            return Ok(Some(found));
        }
        let Some(name) = rest
            .char_indices()
            .rev()
            .nth(6)
            .filter(|(_, c)| *c == '-')
            .map(|(at, _)| &rest[..at])
        else {
            return Ok(None);
        };
        Ok(read(name)?.filter(|found| found.record.arn == id))
    }

    fn find_required(&self, id: &str, now_ms: u64) -> Result<Found, ApiError> {
        self.find(id, now_ms)?.ok_or_else(not_found)
    }

    fn read_value(
        &self,
        record: &SecretRecord,
        version_id: &str,
    ) -> Result<(SecretBytes, bool), ApiError> {
        let stored = get::<VersionValue>(self.store.as_ref(), &value_key(&record.name, version_id))?
            .ok_or_else(|| {
                tracing::error!(secret = %record.name, version = %version_id, "a secret version has no value record");
                ApiError::new(
                    "InternalServiceError",
                    500,
                    "a version's value is missing from the store",
                )
            })?;
        let bytes = self
            .sealer
            .open(&seal_context(&record.arn, version_id), &stored.value.sealed)
            .map_err(|error| seal_error(error, "InternalServiceError"))?;
        Ok((bytes, stored.value.binary))
    }

    fn seal_value(
        &self,
        arn: &str,
        version_id: &str,
        value: &GivenValue,
    ) -> Result<VersionValue, ApiError> {
        let sealed = self
            .sealer
            .seal(&seal_context(arn, version_id), &value.bytes)
            .map_err(|error| seal_error(error, "InternalServiceError"))?;
        Ok(VersionValue {
            binary: value.binary,
            sealed,
        })
    }

    /// Whether version `version_id` of `record` holds exactly `value`: a
    /// retried request with the same token changes nothing.
    fn same_value(
        &self,
        record: &SecretRecord,
        version_id: &str,
        value: Option<&GivenValue>,
    ) -> Result<bool, ApiError> {
        let Some(value) = value else {
            return Ok(false);
        };
        let (stored, binary) = self.read_value(record, version_id)?;
        Ok(binary == value.binary && stored == value.bytes)
    }

    async fn create(
        &self,
        r: wire::CreateSecretRequest,
        now_ms: u64,
        fresh_id: &str,
    ) -> Result<wire::CreateSecretResponse, ApiError> {
        let name = r.name.unwrap_or_default();
        check_name(&name)?;
        if let Some(description) = &r.description {
            check_length(description, "description", 0, DESCRIPTION_MAX_CHARS, false)?;
        }
        if let Some(token) = &r.client_request_token {
            check_token(token)?;
        }
        unsupported(
            r.add_replica_regions
                .as_ref()
                .is_some_and(|regions| !regions.is_empty()),
            "AddReplicaRegions",
            "this server keeps secrets in its own region only",
        )?;
        unsupported(
            r.force_overwrite_replica_secret == Some(true),
            "ForceOverwriteReplicaSecret",
            "this server keeps secrets in its own region only",
        )?;
        unsupported(
            r.cross_account_primary_arn.is_some(),
            "CrossAccountPrimaryARN",
            "this server keeps one account's secrets",
        )?;
        unsupported(
            r.r#type.is_some(),
            "Type",
            "managed external secrets are not kept",
        )?;
        let tags = check_tags(r.tags.as_deref().unwrap_or_default())?;
        if tags.len() > TAGS_MAX {
            return Err(constraint(
                None,
                "tags",
                &format!("Member must have length less than or equal to {TAGS_MAX}"),
            ));
        }
        let value = given_value(r.secret_string, r.secret_binary)?;
        let version_id = r
            .client_request_token
            .clone()
            .unwrap_or_else(|| fresh_id.to_owned());
        let suffix = arn_suffix(fresh_id);
        let arn = self.arn(&name, &suffix);
        let key = secret_key(&name);
        let description = r.description;
        let kms_key_id = r.kms_key_id;
        mutate(self.store.as_ref(), || {
            let existing = get::<SecretRecord>(self.store.as_ref(), &key)?;
            let mut txn = Txn::new();
            match &existing {
                Some(found) if !found.value.expired(now_ms) => {
                    let record = &found.value;
                    if record.deleted_ms.is_some() {
                        return Err(invalid_request(
                            "You can't create this secret because a secret with this name is already scheduled for deletion.",
                        ));
                    }
                    // A retry of the request that created it answers as it did.
                    let retried = r.client_request_token.as_deref().is_some_and(|token| {
                        record.versions.len() == 1 && record.versions.contains_key(token)
                    });
                    if retried && self.same_value(record, &version_id, value.as_ref())? {
                        return Ok(Attempt::Done(wire::CreateSecretResponse {
                            arn: Some(record.arn.clone()),
                            name: Some(record.name.clone()),
                            version_id: Some(version_id.clone()),
                            ..Default::default()
                        }));
                    }
                    return Err(ApiError::new(
                        "ResourceExistsException",
                        400,
                        format!("The operation failed because the secret {name} already exists."),
                    ));
                }
                Some(found) => {
                    // Past its recovery window: its name is free again.
                    for version in found.value.versions.keys() {
                        txn = txn.delete(value_key(&name, version));
                    }
                    txn = txn.expect(key.clone(), found.revision);
                }
                None => txn = txn.expect(key.clone(), 0),
            }
            let mut record = SecretRecord {
                name: name.clone(),
                arn: arn.clone(),
                description: description.clone(),
                kms_key_id: kms_key_id.clone(),
                created_ms: now_ms,
                last_changed_ms: now_ms,
                last_accessed_ms: None,
                deleted_ms: None,
                deletion_ms: None,
                tags: tags.clone(),
                versions: BTreeMap::new(),
            };
            let mut answer_version = None;
            if let Some(value) = &value {
                let stored = self.seal_value(&arn, &version_id, value)?;
                record.versions.insert(
                    version_id.clone(),
                    VersionMeta {
                        created_ms: now_ms,
                        stages: vec![CURRENT.to_owned()],
                    },
                );
                // A deleted version of the expired secret may share the id.
                txn.ops.retain(|op| {
                    !matches!(op, flotilla_store::Op::Delete { key } if *key == value_key(&name, &version_id))
                });
                txn = txn.put(value_key(&name, &version_id), encode(&stored));
                answer_version = Some(version_id.clone());
            }
            txn = txn.put(key.clone(), encode(&record));
            Ok(Attempt::Commit(
                txn,
                wire::CreateSecretResponse {
                    arn: Some(arn.clone()),
                    name: Some(name.clone()),
                    version_id: answer_version,
                    ..Default::default()
                },
            ))
        })
        .await
    }

    fn get_value(
        &self,
        r: wire::GetSecretValueRequest,
        now_ms: u64,
    ) -> Result<wire::GetSecretValueResponse, ApiError> {
        let id = r.secret_id.unwrap_or_default();
        let found = self.find_required(&id, now_ms)?;
        let record = found.record;
        if record.deleted_ms.is_some() {
            return Err(marked_for_deletion());
        }
        if let Some(version_id) = &r.version_id {
            check_length(
                version_id,
                "versionId",
                TOKEN_MIN_CHARS,
                TOKEN_MAX_CHARS,
                false,
            )?;
        }
        if let Some(stage) = &r.version_stage {
            check_stage(stage, "versionStage")?;
        }
        let version_id = match (&r.version_id, &r.version_stage) {
            (Some(version_id), stage) => {
                let meta = record.versions.get(version_id).ok_or_else(|| {
                    ApiError::resource_not_found(format!(
                        "Secrets Manager can't find the specified secret value for VersionId: {version_id}"
                    ))
                })?;
                if let Some(stage) = stage {
                    if !meta.stages.contains(stage) {
                        return Err(invalid_request(
                            "You provided a VersionStage that is not associated to the provided VersionId.",
                        ));
                    }
                }
                version_id.clone()
            }
            (None, stage) => {
                let stage = stage.as_deref().unwrap_or(CURRENT);
                record.version_with(stage).map(str::to_owned).ok_or_else(|| {
                    ApiError::resource_not_found(format!(
                        "Secrets Manager can't find the specified secret value for staging label: {stage}"
                    ))
                })?
            }
        };
        let (value, binary) = self.read_value(&record, &version_id)?;
        let meta = record.versions.get(&version_id);
        let (secret_string, secret_binary) = if binary {
            (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(value.expose())),
            )
        } else {
            (value.into_exposed_string(), None)
        };
        Ok(wire::GetSecretValueResponse {
            arn: Some(record.arn.clone()),
            name: Some(record.name.clone()),
            version_id: Some(version_id.clone()),
            version_stages: meta.map(|meta| meta.stages.clone()),
            created_date: meta.map(|meta| seconds(meta.created_ms)),
            secret_string,
            secret_binary,
        })
    }

    /// The AWSCURRENT values of up to 20 secrets named in SecretIdList, or
    /// of the secrets Filters select (pages of MaxResults); a secret that
    /// cannot be read is an entry of Errors, not a failure of the call.
    fn batch_get(
        &self,
        r: wire::BatchGetSecretValueRequest,
        now_ms: u64,
    ) -> Result<wire::BatchGetSecretValueResponse, ApiError> {
        let (ids, next_token) = match (r.secret_id_list, r.filters) {
            (Some(_), Some(_)) => {
                return Err(invalid_parameter(
                    "Either 'SecretIdList' or 'Filters' must be provided, but not both.",
                ))
            }
            (None, None) => {
                return Err(invalid_parameter(
                    "Either 'SecretIdList' or 'Filters' must be provided.",
                ))
            }
            (Some(ids), None) => {
                if ids.is_empty() || ids.len() > BATCH_IDS_MAX {
                    return Err(constraint(
                        None,
                        "secretIdList",
                        &format!("Member must have length less than or equal to {BATCH_IDS_MAX}"),
                    ));
                }
                if r.max_results.is_some() || r.next_token.is_some() {
                    return Err(invalid_parameter(
                        "'MaxResults' and 'NextToken' can only be used with 'Filters'.",
                    ));
                }
                (ids, None)
            }
            (None, Some(filters)) => {
                let listed = self.list(
                    wire::ListSecretsRequest {
                        filters: Some(filters),
                        max_results: Some(r.max_results.unwrap_or(BATCH_IDS_MAX as i32)),
                        next_token: r.next_token,
                        ..Default::default()
                    },
                    now_ms,
                )?;
                let ids = listed
                    .secret_list
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|entry| entry.arn)
                    .collect();
                (ids, listed.next_token)
            }
        };
        let mut values = Vec::new();
        let mut errors = Vec::new();
        for id in ids {
            let request = wire::GetSecretValueRequest {
                secret_id: Some(id.clone()),
                ..Default::default()
            };
            match self.get_value(request, now_ms) {
                Ok(value) => values.push(wire::SecretValueEntry {
                    arn: value.arn,
                    name: value.name,
                    created_date: value.created_date,
                    secret_string: value.secret_string,
                    secret_binary: value.secret_binary,
                    version_id: value.version_id,
                    version_stages: value.version_stages,
                }),
                Err(error) if error.status < 500 => errors.push(wire::APIErrorType {
                    secret_id: Some(id),
                    error_code: Some(error.code.to_owned()),
                    message: Some(error.message),
                }),
                Err(error) => return Err(error),
            }
        }
        Ok(wire::BatchGetSecretValueResponse {
            secret_values: Some(values),
            errors: Some(errors),
            next_token,
        })
    }

    /// A new version (PutSecretValue, UpdateSecret with a value): `stages`
    /// move to it. Answers the secret's ARN and name, the version id and
    /// its stages.
    async fn new_version(
        &self,
        id: &str,
        change: NewVersion,
        now_ms: u64,
        fresh_id: &str,
    ) -> Result<(String, String, String, Vec<String>), ApiError> {
        let NewVersion {
            token,
            value,
            stages,
            description,
            kms_key_id,
        } = change;
        let version_id = token.unwrap_or_else(|| fresh_id.to_owned());
        mutate(self.store.as_ref(), || {
            let Found {
                mut record,
                revision,
            } = self.find_required(id, now_ms)?;
            if record.deleted_ms.is_some() {
                return Err(marked_for_deletion());
            }
            if record.versions.contains_key(&version_id) {
                if self.same_value(&record, &version_id, Some(&value))? {
                    let stages = record
                        .versions
                        .get(&version_id)
                        .map(|meta| meta.stages.clone())
                        .unwrap_or_default();
                    return Ok(Attempt::Done((
                        record.arn.clone(),
                        record.name.clone(),
                        version_id.clone(),
                        stages,
                    )));
                }
                return Err(ApiError::new(
                    "ResourceExistsException",
                    400,
                    format!(
                        "A version with the ClientRequestToken {version_id} already exists with a different value. You can't modify an existing version; create a new one."
                    ),
                ));
            }
            let stored = self.seal_value(&record.arn, &version_id, &value)?;
            record.versions.insert(
                version_id.clone(),
                VersionMeta {
                    created_ms: now_ms,
                    stages: Vec::new(),
                },
            );
            record.attach(&version_id, &stages);
            let pruned = record.prune();
            record.last_changed_ms = now_ms;
            if let Some(description) = &description {
                record.description = Some(description.clone());
            }
            if let Some(kms_key_id) = &kms_key_id {
                record.kms_key_id = Some(kms_key_id.clone());
            }
            let mut txn = Txn::new()
                .expect(secret_key(&record.name), revision)
                .put(value_key(&record.name, &version_id), encode(&stored));
            for gone in pruned {
                txn = txn.delete(value_key(&record.name, &gone));
            }
            txn = txn.put(secret_key(&record.name), encode(&record));
            let stages = record
                .versions
                .get(&version_id)
                .map(|meta| meta.stages.clone())
                .unwrap_or_default();
            Ok(Attempt::Commit(
                txn,
                (
                    record.arn.clone(),
                    record.name.clone(),
                    version_id.clone(),
                    stages,
                ),
            ))
        })
        .await
    }

    async fn put_value(
        &self,
        r: wire::PutSecretValueRequest,
        now_ms: u64,
        fresh_id: &str,
    ) -> Result<wire::PutSecretValueResponse, ApiError> {
        let id = r.secret_id.unwrap_or_default();
        check_secret_id(&id)?;
        if let Some(token) = &r.client_request_token {
            check_token(token)?;
        }
        unsupported(
            r.rotation_token.is_some(),
            "RotationToken",
            "rotation is not supported",
        )?;
        let stages = match r.version_stages {
            Some(stages) => {
                if stages.is_empty() || stages.len() > STAGES_PER_VERSION_MAX {
                    return Err(constraint(
                        None,
                        "versionStages",
                        &format!(
                            "Member must have length less than or equal to {STAGES_PER_VERSION_MAX}"
                        ),
                    ));
                }
                for stage in &stages {
                    check_stage(stage, "versionStages.member")?;
                }
                stages
            }
            None => vec![CURRENT.to_owned()],
        };
        let value = given_value(r.secret_string, r.secret_binary)?.ok_or_else(|| {
            invalid_request("You must provide either SecretString or SecretBinary.")
        })?;
        let (arn, name, version_id, stages) = self
            .new_version(
                &id,
                NewVersion {
                    token: r.client_request_token,
                    value,
                    stages,
                    description: None,
                    kms_key_id: None,
                },
                now_ms,
                fresh_id,
            )
            .await?;
        Ok(wire::PutSecretValueResponse {
            arn: Some(arn),
            name: Some(name),
            version_id: Some(version_id),
            version_stages: Some(stages),
        })
    }

    async fn update(
        &self,
        r: wire::UpdateSecretRequest,
        now_ms: u64,
        fresh_id: &str,
    ) -> Result<wire::UpdateSecretResponse, ApiError> {
        let id = r.secret_id.unwrap_or_default();
        check_secret_id(&id)?;
        if let Some(token) = &r.client_request_token {
            check_token(token)?;
        }
        if let Some(description) = &r.description {
            check_length(description, "description", 0, DESCRIPTION_MAX_CHARS, false)?;
        }
        unsupported(
            r.r#type.is_some(),
            "Type",
            "managed external secrets are not kept",
        )?;
        let value = given_value(r.secret_string, r.secret_binary)?;
        if let Some(value) = value {
            let (arn, name, version_id, _) = self
                .new_version(
                    &id,
                    NewVersion {
                        token: r.client_request_token,
                        value,
                        stages: vec![CURRENT.to_owned()],
                        description: r.description,
                        kms_key_id: r.kms_key_id,
                    },
                    now_ms,
                    fresh_id,
                )
                .await?;
            return Ok(wire::UpdateSecretResponse {
                arn: Some(arn),
                name: Some(name),
                version_id: Some(version_id),
            });
        }
        let description = r.description;
        let kms_key_id = r.kms_key_id;
        mutate(self.store.as_ref(), || {
            let Found {
                mut record,
                revision,
            } = self.find_required(&id, now_ms)?;
            if record.deleted_ms.is_some() {
                return Err(marked_for_deletion());
            }
            if let Some(description) = &description {
                record.description = Some(description.clone());
            }
            if let Some(kms_key_id) = &kms_key_id {
                record.kms_key_id = Some(kms_key_id.clone());
            }
            record.last_changed_ms = now_ms;
            let answer = wire::UpdateSecretResponse {
                arn: Some(record.arn.clone()),
                name: Some(record.name.clone()),
                version_id: None,
            };
            Ok(Attempt::Commit(
                Txn::new()
                    .expect(secret_key(&record.name), revision)
                    .put(secret_key(&record.name), encode(&record)),
                answer,
            ))
        })
        .await
    }

    fn describe(
        &self,
        r: wire::DescribeSecretRequest,
        now_ms: u64,
    ) -> Result<wire::DescribeSecretResponse, ApiError> {
        let record = self
            .find_required(&r.secret_id.unwrap_or_default(), now_ms)?
            .record;
        Ok(wire::DescribeSecretResponse {
            arn: Some(record.arn.clone()),
            name: Some(record.name.clone()),
            description: record.description.clone(),
            kms_key_id: record.kms_key_id.clone(),
            created_date: Some(seconds(record.created_ms)),
            last_changed_date: Some(seconds(record.last_changed_ms)),
            last_accessed_date: record.last_accessed_ms.map(seconds),
            deleted_date: record.deletion_ms.map(seconds),
            tags: record.tag_list(),
            version_ids_to_stages: Some(record.versions_to_stages()),
            ..Default::default()
        })
    }

    fn list(
        &self,
        r: wire::ListSecretsRequest,
        now_ms: u64,
    ) -> Result<wire::ListSecretsResponse, ApiError> {
        let max_results = check_max_results(r.max_results)?;
        let filters = r.filters.unwrap_or_default();
        if filters.len() > 10 {
            return Err(constraint(
                None,
                "filters",
                "Member must have length less than or equal to 10",
            ));
        }
        for filter in &filters {
            let values = filter.values.as_deref().unwrap_or_default();
            if values.is_empty() || values.len() > 10 {
                return Err(invalid_parameter(
                    "Invalid filter values: a filter takes from 1 to 10 values.",
                ));
            }
            for value in values {
                check_length(value, "filters.member.values.member", 1, 512, false)?;
            }
        }
        let include_deleted = r.include_planned_deletion == Some(true);
        let entries = list_all(self.store.as_ref(), PREFIX_SECRETS, SECRETS_MAX)?;
        let mut secrets = Vec::new();
        for entry in &entries {
            let record: SecretRecord = flotilla_records::decode(entry)?;
            if record.expired(now_ms) || (record.deleted_ms.is_some() && !include_deleted) {
                continue;
            }
            if filters.iter().all(|filter| filter_matches(filter, &record)) {
                secrets.push(record);
            }
        }
        let by = r.sort_by.unwrap_or(wire::SortByType::CreatedDate);
        secrets.sort_by(|a, b| match by {
            wire::SortByType::Name => a.name.cmp(&b.name),
            wire::SortByType::LastChangedDate => a
                .last_changed_ms
                .cmp(&b.last_changed_ms)
                .then(a.name.cmp(&b.name)),
            wire::SortByType::LastAccessedDate => a
                .last_accessed_ms
                .cmp(&b.last_accessed_ms)
                .then(a.name.cmp(&b.name)),
            wire::SortByType::CreatedDate => {
                a.created_ms.cmp(&b.created_ms).then(a.name.cmp(&b.name))
            }
        });
        if r.sort_order == Some(wire::SortOrderType::Desc) {
            secrets.reverse();
        }
        let start = parse_token(r.next_token.as_deref())?;
        let page: Vec<SecretRecord> = secrets
            .iter()
            .skip(start)
            .take(max_results)
            .cloned()
            .collect();
        let next = start + page.len();
        Ok(wire::ListSecretsResponse {
            secret_list: Some(
                page.iter()
                    .map(|record| wire::SecretListEntry {
                        arn: Some(record.arn.clone()),
                        name: Some(record.name.clone()),
                        description: record.description.clone(),
                        kms_key_id: record.kms_key_id.clone(),
                        created_date: Some(seconds(record.created_ms)),
                        last_changed_date: Some(seconds(record.last_changed_ms)),
                        last_accessed_date: record.last_accessed_ms.map(seconds),
                        deleted_date: record.deletion_ms.map(seconds),
                        tags: record.tag_list(),
                        secret_versions_to_stages: Some(record.versions_to_stages()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            next_token: (next < secrets.len()).then(|| next.to_string()),
        })
    }

    fn list_versions(
        &self,
        r: wire::ListSecretVersionIdsRequest,
        now_ms: u64,
    ) -> Result<wire::ListSecretVersionIdsResponse, ApiError> {
        let max_results = check_max_results(r.max_results)?;
        let record = self
            .find_required(&r.secret_id.unwrap_or_default(), now_ms)?
            .record;
        let include_deprecated = r.include_deprecated == Some(true);
        let mut versions: Vec<(&String, &VersionMeta)> = record
            .versions
            .iter()
            .filter(|(_, meta)| include_deprecated || !meta.stages.is_empty())
            .collect();
        versions.sort_by(|a, b| b.1.created_ms.cmp(&a.1.created_ms).then(a.0.cmp(b.0)));
        let start = parse_token(r.next_token.as_deref())?;
        let page: Vec<wire::SecretVersionsListEntry> = versions
            .iter()
            .skip(start)
            .take(max_results)
            .map(|(id, meta)| wire::SecretVersionsListEntry {
                version_id: Some((*id).clone()),
                version_stages: Some(meta.stages.clone()),
                created_date: Some(seconds(meta.created_ms)),
                kms_key_ids: Some(vec![record
                    .kms_key_id
                    .clone()
                    .unwrap_or_else(|| "DefaultEncryptionKey".to_owned())]),
                last_accessed_date: None,
            })
            .collect();
        let next = start + page.len();
        Ok(wire::ListSecretVersionIdsResponse {
            arn: Some(record.arn.clone()),
            name: Some(record.name.clone()),
            next_token: (next < versions.len()).then(|| next.to_string()),
            versions: Some(page),
        })
    }

    async fn update_stage(
        &self,
        r: wire::UpdateSecretVersionStageRequest,
        now_ms: u64,
    ) -> Result<wire::UpdateSecretVersionStageResponse, ApiError> {
        let id = r.secret_id.unwrap_or_default();
        check_secret_id(&id)?;
        let stage = r.version_stage.unwrap_or_default();
        check_stage(&stage, "versionStage")?;
        for (member, version) in [
            ("moveToVersionId", &r.move_to_version_id),
            ("removeFromVersionId", &r.remove_from_version_id),
        ] {
            if let Some(version) = version {
                check_length(version, member, TOKEN_MIN_CHARS, TOKEN_MAX_CHARS, false)?;
            }
        }
        let move_to = r.move_to_version_id;
        let remove_from = r.remove_from_version_id;
        mutate(self.store.as_ref(), || {
            let Found {
                mut record,
                revision,
            } = self.find_required(&id, now_ms)?;
            if record.deleted_ms.is_some() {
                return Err(marked_for_deletion());
            }
            let holder = record.version_with(&stage).map(str::to_owned);
            for version in [&move_to, &remove_from].into_iter().flatten() {
                if !record.versions.contains_key(version) {
                    return Err(ApiError::resource_not_found(format!(
                        "Secrets Manager can't find the specified secret version: {version}"
                    )));
                }
            }
            if let Some(from) = &remove_from {
                if holder.as_deref() != Some(from.as_str()) {
                    return Err(invalid_parameter(format!(
                        "The staging label {stage} is not attached to version {from}."
                    )));
                }
            }
            match (&move_to, &holder) {
                (Some(to), Some(holder)) if holder != to && remove_from.as_deref() != Some(holder) => {
                    return Err(invalid_parameter(format!(
                        "The parameter RemoveFromVersionId can't be empty. Staging label {stage} is currently attached to version {holder}, so you must explicitly reference that version in RemoveFromVersionId."
                    )));
                }
                (None, _) if stage == CURRENT => {
                    return Err(invalid_parameter(
                        "You can only move staging label AWSCURRENT to a different secret version. It can't be completely removed.",
                    ));
                }
                _ => {}
            }
            match &move_to {
                Some(to) => {
                    let total: usize = record.versions.values().map(|m| m.stages.len()).sum();
                    if holder.is_none()
                        && record.versions.get(to).is_some_and(|m| m.stages.len() >= STAGES_PER_VERSION_MAX)
                        || total > STAGES_PER_VERSION_MAX * VERSIONS_MAX
                    {
                        return Err(ApiError::new(
                            "LimitExceededException",
                            400,
                            format!("A version can have at most {STAGES_PER_VERSION_MAX} staging labels."),
                        ));
                    }
                    record.attach(to, std::slice::from_ref(&stage));
                }
                None => {
                    if let Some(from) = &remove_from {
                        if let Some(meta) = record.versions.get_mut(from) {
                            meta.stages.retain(|s| *s != stage);
                        }
                    }
                }
            }
            let pruned = record.prune();
            record.last_changed_ms = now_ms;
            let mut txn = Txn::new()
                .expect(secret_key(&record.name), revision)
                .put(secret_key(&record.name), encode(&record));
            for gone in pruned {
                txn = txn.delete(value_key(&record.name, &gone));
            }
            Ok(Attempt::Commit(
                txn,
                wire::UpdateSecretVersionStageResponse {
                    arn: Some(record.arn.clone()),
                    name: Some(record.name.clone()),
                },
            ))
        })
        .await
    }

    async fn delete(
        &self,
        r: wire::DeleteSecretRequest,
        now_ms: u64,
    ) -> Result<wire::DeleteSecretResponse, ApiError> {
        let id = r.secret_id.unwrap_or_default();
        check_secret_id(&id)?;
        let force = r.force_delete_without_recovery == Some(true);
        if force && r.recovery_window_in_days.is_some() {
            return Err(invalid_parameter(
                "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.",
            ));
        }
        let window_days = r
            .recovery_window_in_days
            .unwrap_or(RECOVERY_WINDOW_DEFAULT_DAYS);
        if !(RECOVERY_WINDOW_MIN_DAYS..=RECOVERY_WINDOW_MAX_DAYS).contains(&window_days) {
            return Err(invalid_parameter(
                "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).",
            ));
        }
        mutate(self.store.as_ref(), || {
            let Found {
                mut record,
                revision,
            } = self.find_required(&id, now_ms)?;
            let key = secret_key(&record.name);
            if force {
                let mut txn = Txn::new().expect(key.clone(), revision).delete(key.clone());
                for version in record.versions.keys() {
                    txn = txn.delete(value_key(&record.name, version));
                }
                return Ok(Attempt::Commit(
                    txn,
                    wire::DeleteSecretResponse {
                        arn: Some(record.arn.clone()),
                        name: Some(record.name.clone()),
                        deletion_date: Some(seconds(now_ms)),
                    },
                ));
            }
            if record.deleted_ms.is_some() {
                return Err(marked_for_deletion());
            }
            let deletion_ms = now_ms + window_days as u64 * DAY_MS;
            record.deleted_ms = Some(now_ms);
            record.deletion_ms = Some(deletion_ms);
            Ok(Attempt::Commit(
                Txn::new()
                    .expect(key.clone(), revision)
                    .put(key, encode(&record)),
                wire::DeleteSecretResponse {
                    arn: Some(record.arn.clone()),
                    name: Some(record.name.clone()),
                    deletion_date: Some(seconds(deletion_ms)),
                },
            ))
        })
        .await
    }

    async fn restore(
        &self,
        r: wire::RestoreSecretRequest,
        now_ms: u64,
    ) -> Result<wire::RestoreSecretResponse, ApiError> {
        let id = r.secret_id.unwrap_or_default();
        mutate(self.store.as_ref(), || {
            let Found {
                mut record,
                revision,
            } = self.find_required(&id, now_ms)?;
            let answer = wire::RestoreSecretResponse {
                arn: Some(record.arn.clone()),
                name: Some(record.name.clone()),
            };
            if record.deleted_ms.is_none() {
                return Ok(Attempt::Done(answer));
            }
            record.deleted_ms = None;
            record.deletion_ms = None;
            let key = secret_key(&record.name);
            Ok(Attempt::Commit(
                Txn::new()
                    .expect(key.clone(), revision)
                    .put(key, encode(&record)),
                answer,
            ))
        })
        .await
    }

    async fn tag(
        &self,
        r: wire::TagResourceRequest,
        now_ms: u64,
    ) -> Result<wire::NoOutput, ApiError> {
        let id = r.secret_id.unwrap_or_default();
        let tags = check_tags(r.tags.as_deref().unwrap_or_default())?;
        mutate(self.store.as_ref(), || {
            let Found {
                mut record,
                revision,
            } = self.find_required(&id, now_ms)?;
            if record.deleted_ms.is_some() {
                return Err(marked_for_deletion());
            }
            merge_tags(&mut record.tags, tags.clone());
            if record.tags.len() > TAGS_MAX {
                return Err(invalid_parameter(format!(
                    "The secret would have more than {TAGS_MAX} tags."
                )));
            }
            let key = secret_key(&record.name);
            Ok(Attempt::Commit(
                Txn::new()
                    .expect(key.clone(), revision)
                    .put(key, encode(&record)),
                wire::NoOutput {},
            ))
        })
        .await
    }

    async fn untag(
        &self,
        r: wire::UntagResourceRequest,
        now_ms: u64,
    ) -> Result<wire::NoOutput, ApiError> {
        let id = r.secret_id.unwrap_or_default();
        let keys = r.tag_keys.unwrap_or_default();
        for key in &keys {
            check_length(key, "tagKeys.member", 1, TAG_KEY_MAX_CHARS, false)?;
        }
        mutate(self.store.as_ref(), || {
            let Found {
                mut record,
                revision,
            } = self.find_required(&id, now_ms)?;
            if record.deleted_ms.is_some() {
                return Err(marked_for_deletion());
            }
            record.tags.retain(|(key, _)| !keys.contains(key));
            let key = secret_key(&record.name);
            Ok(Attempt::Commit(
                Txn::new()
                    .expect(key.clone(), revision)
                    .put(key, encode(&record)),
                wire::NoOutput {},
            ))
        })
        .await
    }
}

/// Six characters of `fresh_id` (a random UUID) for an ARN's suffix, as
/// Secrets Manager appends six random characters to a secret's name.
fn arn_suffix(fresh_id: &str) -> String {
    let mut suffix: String = fresh_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(6)
        .collect();
    while suffix.len() < 6 {
        suffix.push('0');
    }
    suffix
}

fn lower_first(member: &str) -> String {
    let mut chars = member.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn check_max_results(max_results: Option<i32>) -> Result<usize, ApiError> {
    match max_results {
        None => Ok(LIST_MAX_RESULTS as usize),
        Some(value) if !(1..=LIST_MAX_RESULTS).contains(&value) => Err(constraint(
            Some(&value.to_string()),
            "maxResults",
            &format!(
                "Member must have value {} {}",
                if value < 1 {
                    "greater than or equal to"
                } else {
                    "less than or equal to"
                },
                if value < 1 { 1 } else { LIST_MAX_RESULTS }
            ),
        )),
        Some(value) => Ok(value as usize),
    }
}

fn parse_token(token: Option<&str>) -> Result<usize, ApiError> {
    match token {
        None => Ok(0),
        Some(token) => token.parse::<usize>().map_err(|_| {
            ApiError::new(
                "InvalidNextTokenException",
                400,
                "The NextToken value is invalid.",
            )
        }),
    }
}

/// A ListSecrets filter: any of its values matches the start of the key's
/// field; a value starting with `!` matches what does not start with it.
fn filter_matches(filter: &wire::Filter, record: &SecretRecord) -> bool {
    let values = filter.values.as_deref().unwrap_or_default();
    let fields: Vec<&str> = match filter.key {
        Some(wire::FilterNameStringType::Name) => vec![record.name.as_str()],
        Some(wire::FilterNameStringType::Description) => {
            record.description.as_deref().into_iter().collect()
        }
        Some(wire::FilterNameStringType::TagKey) => {
            record.tags.iter().map(|(key, _)| key.as_str()).collect()
        }
        Some(wire::FilterNameStringType::TagValue) => record
            .tags
            .iter()
            .map(|(_, value)| value.as_str())
            .collect(),
        Some(wire::FilterNameStringType::All) | None => {
            let mut fields = vec![record.name.as_str()];
            fields.extend(record.description.as_deref());
            for (key, value) in &record.tags {
                fields.push(key);
                fields.push(value);
            }
            fields
        }
        // Secrets here live in one region and belong to no AWS service.
        Some(wire::FilterNameStringType::PrimaryRegion) => vec![],
        Some(wire::FilterNameStringType::OwningService) => vec![],
    };
    values.iter().any(|value| match value.strip_prefix('!') {
        Some(negated) => !fields.iter().any(|field| field.starts_with(negated)),
        None => fields.iter().any(|field| field.starts_with(value.as_str())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SecretRecord {
        SecretRecord {
            name: "n".into(),
            arn: "a".into(),
            description: None,
            kms_key_id: None,
            created_ms: 0,
            last_changed_ms: 0,
            last_accessed_ms: None,
            deleted_ms: None,
            deletion_ms: None,
            tags: vec![],
            versions: BTreeMap::new(),
        }
    }

    fn add(record: &mut SecretRecord, id: &str, at: u64) {
        record.versions.insert(
            id.into(),
            VersionMeta {
                created_ms: at,
                stages: vec![],
            },
        );
        record.attach(id, &[CURRENT.to_owned()]);
    }

    #[test]
    fn a_new_current_version_makes_the_old_one_previous() {
        let mut r = record();
        add(&mut r, "v1", 1);
        add(&mut r, "v2", 2);
        add(&mut r, "v3", 3);
        assert_eq!(r.version_with(CURRENT), Some("v3"));
        assert_eq!(r.version_with(PREVIOUS), Some("v2"));
        assert!(r.versions["v1"].stages.is_empty());
    }

    #[test]
    fn pruning_keeps_labelled_versions() {
        let mut r = record();
        for at in 0..(VERSIONS_MAX as u64 + 5) {
            add(&mut r, &format!("v{at:04}"), at);
        }
        let gone = r.prune();
        assert_eq!(gone.len(), 5);
        assert_eq!(r.versions.len(), VERSIONS_MAX);
        assert!(r.version_with(CURRENT).is_some() && r.version_with(PREVIOUS).is_some());
    }

    #[test]
    fn suffixes_are_six_characters() {
        assert_eq!(arn_suffix("0f1e2d3c-aaaa"), "0f1e2d");
        assert_eq!(arn_suffix("ab"), "ab0000");
    }
}
