//! Parameter Store (`AmazonSSM`, JSON 1.1): String, StringList and
//! SecureString parameters with versions, labels and hierarchies.
//!
//! Store layout: `ssm/parameters/{name}` holds a [`ParameterRecord`], the
//! parameter and its versions (at most 100). A name in a hierarchy starts
//! with `/`, so a path's parameters are one prefix of keys. SecureString
//! values are [`Sealed`]; String and StringList values, which Parameter
//! Store shows to anyone who may read the parameter, are kept as given.

use std::sync::Arc;

use flotilla_aws::ssm::{self as wire, SsmRequest as Q, SsmResponse as R};
use flotilla_records::{encode, get, mutate, Attempt};
use flotilla_store::{Store, Txn};
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::records::{list_all, seal_error};
use crate::seal::{Sealed, Sealer};
use crate::value::SecretBytes;
use crate::{seconds, Scope};

pub const NAME_MAX_CHARS: usize = 2_048;
pub const HIERARCHY_LEVELS_MAX: usize = 15;
/// Largest value of a standard parameter, and of an advanced one.
pub const STANDARD_VALUE_MAX_CHARS: usize = 4_096;
pub const ADVANCED_VALUE_MAX_CHARS: usize = 8_192;
pub const DESCRIPTION_MAX_CHARS: usize = 1_024;
pub const VERSIONS_MAX: usize = 100;
pub const GET_PARAMETERS_NAMES_MAX: usize = 10;
pub const DELETE_PARAMETERS_NAMES_MAX: usize = 10;
pub const BY_PATH_MAX_RESULTS: i32 = 10;
pub const DESCRIBE_MAX_RESULTS: i32 = 50;
pub const HISTORY_MAX_RESULTS: i32 = 50;
pub const LABELS_PER_VERSION_MAX: usize = 10;
pub const LABEL_MAX_CHARS: usize = 100;
pub const TAGS_MAX: usize = 50;
/// Parameters one account holds (Parameter Store's standard quota is
/// 10,000; advanced 100,000): a bound on what a listing reads.
pub const PARAMETERS_MAX: usize = 100_000;
const DEFAULT_KEY_ID: &str = "alias/aws/ssm";

const PREFIX: &str = "ssm/parameters/";

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn seal_context(name: &str, version: i64) -> String {
    format!("ssm|{name}|{version}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    String,
    StringList,
    SecureString,
}

impl Kind {
    fn wire(self) -> wire::ParameterType {
        match self {
            Kind::String => wire::ParameterType::String,
            Kind::StringList => wire::ParameterType::StringList,
            Kind::SecureString => wire::ParameterType::SecureString,
        }
    }

    fn from_wire(kind: &wire::ParameterType) -> Self {
        match kind {
            wire::ParameterType::String => Kind::String,
            wire::ParameterType::StringList => Kind::StringList,
            wire::ParameterType::SecureString => Kind::SecureString,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "String",
            Kind::StringList => "StringList",
            Kind::SecureString => "SecureString",
        }
    }
}

/// A version's value: in the clear for String and StringList, sealed for
/// SecureString.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StoredValue {
    Plain(String),
    Sealed(Sealed),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParameterVersion {
    pub version: i64,
    pub kind: Kind,
    pub advanced: bool,
    pub modified_ms: u64,
    pub modified_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub data_type: String,
    pub value: StoredValue,
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParameterRecord {
    pub name: String,
    /// Oldest first; the last is the current version.
    pub versions: Vec<ParameterVersion>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The highest version number given, which deleting old versions never
    /// lowers.
    pub last_version: i64,
}

impl ParameterRecord {
    fn current(&self) -> Option<&ParameterVersion> {
        self.versions.last()
    }
}

// --- errors, in Parameter Store's words -------------------------------------

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new("ValidationException", 400, message)
}

fn constraint(value: Option<&str>, member: &str, constraint: &str) -> ApiError {
    let value = value.map_or(String::new(), |v| format!(" '{v}'"));
    validation(format!(
        "1 validation error detected: Value{value} at '{member}' failed to satisfy constraint: {constraint}"
    ))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        "ParameterNotFound",
        400,
        format!("Parameter {name} not found."),
    )
}

fn invalid_resource_id(name: &str) -> ApiError {
    ApiError::new(
        "InvalidResourceId",
        400,
        format!("The resource ID \"{name}\" is not valid. Verify the ID and try again."),
    )
}

fn version_not_found(name: &str, selector: &str) -> ApiError {
    ApiError::new(
        "ParameterVersionNotFound",
        400,
        format!(
            "Systems Manager could not find version {selector} of {name}. Verify the version and try again."
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

/// A parameter's name as Parameter Store checks it: letters, digits and
/// `_.-`, in sub-paths divided by `/`, not prefixed with `aws` or `ssm`,
/// at most 15 levels deep.
fn check_name(name: &str) -> Result<(), ApiError> {
    check_length(name, "name", 1, NAME_MAX_CHARS, false)?;
    let bare = name.strip_prefix('/').unwrap_or(name);
    let lowered = bare.to_ascii_lowercase();
    let well_formed = !bare.is_empty()
        && !lowered.starts_with("aws")
        && !lowered.starts_with("ssm")
        && (name.starts_with('/') || !name.contains('/'))
        && bare.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        });
    if !well_formed {
        return Err(validation(
            "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). If formed as a path, it can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_",
        ));
    }
    if bare.split('/').count() > HIERARCHY_LEVELS_MAX {
        return Err(ApiError::new(
            "HierarchyLevelLimitExceededException",
            400,
            format!("A hierarchy can have a maximum of {HIERARCHY_LEVELS_MAX} levels. Parameter name {name} has {} levels.", bare.split('/').count()),
        ));
    }
    Ok(())
}

/// A label as LabelParameterVersion takes it.
fn label_is_valid(label: &str) -> bool {
    let lowered = label.to_ascii_lowercase();
    !label.is_empty()
        && label.chars().count() <= LABEL_MAX_CHARS
        && !label.starts_with(|c: char| c.is_ascii_digit())
        && !lowered.starts_with("aws")
        && !lowered.starts_with("ssm")
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Refuses a member Flotilla does not act on, naming it.
fn unsupported(set: bool, member: &str, why: &str) -> Result<(), ApiError> {
    if set {
        return Err(validation(format!("{member} is not supported: {why}")));
    }
    Ok(())
}

/// A name as a request gives it: the name, or its ARN, with an optional
/// `:version` or `:label` selector.
struct Selected<'a> {
    name: String,
    selector: Option<&'a str>,
}

/// Parameter Store over the store, for one region and account.
pub struct ParameterStore {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    scope: Scope,
}

impl ParameterStore {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>, scope: Scope) -> Self {
        Self {
            store,
            sealer,
            scope,
        }
    }

    /// Carries out one request at `now_ms` for `caller` (the principal's
    /// ARN, recorded as LastModifiedUser).
    pub async fn handle(&self, request: Q, now_ms: u64, caller: &str) -> Result<R, ApiError> {
        if let Some(member) = request.missing_required() {
            return Err(validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                lower_first(member)
            )));
        }
        match request {
            Q::PutParameter(r) => self.put(r, now_ms, caller).await.map(R::PutParameter),
            Q::GetParameter(r) => self.get_one(r).map(R::GetParameter),
            Q::GetParameters(r) => self.get_many(r).map(R::GetParameters),
            Q::GetParametersByPath(r) => self.by_path(r).map(R::GetParametersByPath),
            Q::DeleteParameter(r) => self.delete_one(r).await.map(R::DeleteParameter),
            Q::DeleteParameters(r) => self.delete_many(r).await.map(R::DeleteParameters),
            Q::DescribeParameters(r) => self.describe(r).map(R::DescribeParameters),
            Q::GetParameterHistory(r) => self.history(r).map(R::GetParameterHistory),
            Q::LabelParameterVersion(r) => self.label(r).await.map(R::LabelParameterVersion),
            Q::AddTagsToResource(r) => {
                let tags = r.tags.unwrap_or_default();
                self.retag(r.resource_type, r.resource_id, |existing| {
                    for tag in &tags {
                        let key = tag.key.clone().unwrap_or_default();
                        let value = tag.value.clone().unwrap_or_default();
                        check_length(&key, "tags.member.key", 1, 128, false)?;
                        check_length(&value, "tags.member.value", 0, 256, false)?;
                        match existing.iter_mut().find(|(k, _)| *k == key) {
                            Some(slot) => slot.1 = value,
                            None => existing.push((key, value)),
                        }
                    }
                    Ok(())
                })
                .await
                .map(|_| R::AddTagsToResource(wire::AddTagsToResourceResult {}))
            }
            Q::RemoveTagsFromResource(r) => {
                let keys = r.tag_keys.unwrap_or_default();
                self.retag(r.resource_type, r.resource_id, |existing| {
                    existing.retain(|(key, _)| !keys.contains(key));
                    Ok(())
                })
                .await
                .map(|_| R::RemoveTagsFromResource(wire::RemoveTagsFromResourceResult {}))
            }
            Q::ListTagsForResource(r) => {
                let name = self.tagged_parameter(r.resource_type, r.resource_id)?;
                let record = self
                    .read(&name)?
                    .ok_or_else(|| invalid_resource_id(&name))?
                    .value;
                Ok(R::ListTagsForResource(wire::ListTagsForResourceResult {
                    tag_list: Some(
                        record
                            .tags
                            .iter()
                            .map(|(key, value)| wire::Tag {
                                key: Some(key.clone()),
                                value: Some(value.clone()),
                            })
                            .collect(),
                    ),
                }))
            }
            other => Err(ApiError::new(
                "UnsupportedOperationException",
                400,
                format!(
                    "{} is not supported by this Flotilla server yet",
                    other.operation()
                ),
            )),
        }
    }

    /// The parameter a tagging request names: only parameters are tagged here.
    fn tagged_parameter(
        &self,
        resource_type: Option<wire::ResourceTypeForTagging>,
        resource_id: Option<String>,
    ) -> Result<String, ApiError> {
        if resource_type != Some(wire::ResourceTypeForTagging::Parameter) {
            return Err(ApiError::new(
                "InvalidResourceType",
                400,
                "The resource type is not valid: only Parameter resources are tagged by this server.",
            ));
        }
        Ok(self.select(&resource_id.unwrap_or_default())?.name)
    }

    /// Changes a parameter's tags with `change`, at most [`TAGS_MAX`].
    async fn retag(
        &self,
        resource_type: Option<wire::ResourceTypeForTagging>,
        resource_id: Option<String>,
        change: impl Fn(&mut Vec<(String, String)>) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let name = self.tagged_parameter(resource_type, resource_id)?;
        mutate(self.store.as_ref(), || {
            let found = self
                .read(&name)?
                .ok_or_else(|| invalid_resource_id(&name))?;
            let mut record = found.value;
            change(&mut record.tags)?;
            if record.tags.len() > TAGS_MAX {
                return Err(ApiError::new(
                    "TooManyTagsError",
                    400,
                    format!("A parameter can have at most {TAGS_MAX} tags."),
                ));
            }
            Ok(Attempt::Commit(
                Txn::new()
                    .expect(key(&name), found.revision)
                    .put(key(&name), encode(&record)),
                (),
            ))
        })
        .await
    }

    fn arn(&self, name: &str) -> String {
        format!(
            "arn:{}:ssm:{}:{}:parameter/{}",
            self.scope.partition,
            self.scope.region,
            self.scope.account_id,
            name.strip_prefix('/').unwrap_or(name)
        )
    }

    /// The name (ARN resolved) and selector of `given`.
    fn select<'a>(&self, given: &'a str) -> Result<Selected<'a>, ApiError> {
        let arn_prefix = format!(
            "arn:{}:ssm:{}:{}:parameter",
            self.scope.partition, self.scope.region, self.scope.account_id
        );
        let (body, selector) = match given.strip_prefix(&arn_prefix) {
            Some(rest) => match rest.rsplit_once(':') {
                Some((name, selector)) => (name, Some(selector)),
                None => (rest, None),
            },
            None => match given.rsplit_once(':') {
                Some((name, selector)) => (name, Some(selector)),
                None => (given, None),
            },
        };
        let name = if given.starts_with(&arn_prefix) {
            // `parameter/a/b` is `/a/b`; `parameter/a` is `a` or `/a`.
            let bare = body.strip_prefix('/').unwrap_or(body);
            if bare.contains('/') || self.read(&format!("/{bare}"))?.is_some() {
                format!("/{bare}")
            } else {
                bare.to_owned()
            }
        } else {
            body.to_owned()
        };
        Ok(Selected { name, selector })
    }

    fn read(
        &self,
        name: &str,
    ) -> Result<Option<flotilla_records::Versioned<ParameterRecord>>, ApiError> {
        get::<ParameterRecord>(self.store.as_ref(), &key(name))
    }

    fn open(&self, name: &str, version: &ParameterVersion) -> Result<SecretBytes, ApiError> {
        match &version.value {
            StoredValue::Plain(text) => Ok(SecretBytes::from_string(text.clone())),
            StoredValue::Sealed(sealed) => self
                .sealer
                .open(&seal_context(name, version.version), sealed)
                .map_err(|error| seal_error(error, "InternalServerError")),
        }
    }

    /// A version as GetParameter answers it: a SecureString's value in the
    /// clear only `with_decryption`, its sealed form otherwise (as Parameter
    /// Store answers the ciphertext).
    fn answer(
        &self,
        record: &ParameterRecord,
        version: &ParameterVersion,
        with_decryption: bool,
        selector: Option<&str>,
    ) -> Result<wire::Parameter, ApiError> {
        let value = match (&version.value, with_decryption) {
            (StoredValue::Plain(text), _) => text.clone(),
            (StoredValue::Sealed(sealed), false) => sealed.data.clone(),
            (StoredValue::Sealed(_), true) => self
                .open(&record.name, version)?
                .into_exposed_string()
                .unwrap_or_default(),
        };
        Ok(wire::Parameter {
            name: Some(record.name.clone()),
            arn: Some(self.arn(&record.name)),
            r#type: Some(version.kind.wire()),
            value: Some(value),
            version: Some(version.version),
            last_modified_date: Some(seconds(version.modified_ms)),
            data_type: Some(version.data_type.clone()),
            selector: selector.map(|s| format!(":{s}")),
            source_result: None,
        })
    }

    /// The version `selector` names (a number or a label), or the current one.
    fn version<'r>(
        record: &'r ParameterRecord,
        selector: Option<&str>,
    ) -> Result<&'r ParameterVersion, ApiError> {
        let Some(selector) = selector else {
            return record.current().ok_or_else(|| not_found(&record.name));
        };
        let found = match selector.parse::<i64>() {
            Ok(number) => record.versions.iter().find(|v| v.version == number),
            Err(_) => record
                .versions
                .iter()
                .find(|v| v.labels.iter().any(|l| l == selector)),
        };
        found.ok_or_else(|| version_not_found(&record.name, selector))
    }

    async fn put(
        &self,
        r: wire::PutParameterRequest,
        now_ms: u64,
        caller: &str,
    ) -> Result<wire::PutParameterResult, ApiError> {
        let name = r.name.unwrap_or_default();
        check_name(&name)?;
        let value = r.value.unwrap_or_default();
        if value.is_empty() {
            return Err(constraint(
                None,
                "value",
                "Member must have length greater than or equal to 1",
            ));
        }
        let value_chars = value.chars().count();
        if value_chars > ADVANCED_VALUE_MAX_CHARS {
            return Err(constraint(
                None,
                "value",
                &format!(
                    "Member must have length less than or equal to {ADVANCED_VALUE_MAX_CHARS}"
                ),
            ));
        }
        if let Some(description) = &r.description {
            check_length(description, "description", 0, DESCRIPTION_MAX_CHARS, false)?;
        }
        unsupported(
            r.allowed_pattern.is_some(),
            "AllowedPattern",
            "parameter values are not checked against patterns",
        )?;
        unsupported(
            r.policies
                .as_deref()
                .is_some_and(|p| !p.trim().is_empty() && p.trim() != "[]"),
            "Policies",
            "parameter policies are not kept",
        )?;
        let data_type = r.data_type.clone().unwrap_or_else(|| "text".to_owned());
        if data_type != "text" {
            return Err(validation(format!(
                "The following data type is not supported: {data_type} (only text parameters are kept)"
            )));
        }
        let overwrite = r.overwrite == Some(true);
        let tags = r.tags.unwrap_or_default();
        if overwrite && !tags.is_empty() {
            return Err(validation(
                "Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource.",
            ));
        }
        if tags.len() > TAGS_MAX {
            return Err(ApiError::new(
                "TooManyTagsError",
                400,
                format!("A parameter can have at most {TAGS_MAX} tags."),
            ));
        }
        let tags: Vec<(String, String)> = tags
            .into_iter()
            .map(|tag| (tag.key.unwrap_or_default(), tag.value.unwrap_or_default()))
            .collect();
        for (tag_key, tag_value) in &tags {
            check_length(tag_key, "tags.member.key", 1, 128, false)?;
            check_length(tag_value, "tags.member.value", 0, 256, false)?;
        }
        let value = SecretBytes::from_string(value);
        mutate(self.store.as_ref(), || {
            let existing = self.read(&name)?;
            if existing.is_some() && !overwrite {
                return Err(ApiError::new(
                    "ParameterAlreadyExists",
                    400,
                    "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.",
                ));
            }
            let current_version = existing
                .as_ref()
                .and_then(|found| found.value.current())
                .cloned();
            let current = current_version.as_ref();
            let kind = match (&r.r#type, current) {
                (Some(kind), _) => Kind::from_wire(kind),
                (None, Some(current)) => current.kind,
                (None, None) => {
                    return Err(validation(
                        "A parameter type is required when you create a parameter.",
                    ))
                }
            };
            let was_advanced = current.is_some_and(|c| c.advanced);
            let advanced = match r.tier {
                Some(wire::ParameterTier::Advanced) => true,
                Some(wire::ParameterTier::Standard) if was_advanced => {
                    return Err(validation(
                        "This parameter uses the advanced-parameter tier. You can't downgrade a parameter from the advanced-parameter tier to the standard-parameter tier. If necessary, you can delete the advanced parameter and recreate it as a standard parameter.",
                    ))
                }
                Some(wire::ParameterTier::Standard) => false,
                Some(wire::ParameterTier::IntelligentTiering) => {
                    was_advanced || value_chars > STANDARD_VALUE_MAX_CHARS
                }
                None => was_advanced,
            };
            if !advanced && value_chars > STANDARD_VALUE_MAX_CHARS {
                return Err(validation(format!(
                    "Standard tier parameters support a maximum parameter value of {STANDARD_VALUE_MAX_CHARS} characters. To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier."
                )));
            }
            let key_id = match (&r.key_id, kind) {
                (Some(_), Kind::String | Kind::StringList) => {
                    return Err(validation(format!(
                        "KeyId is only used with SecureString parameters, not {}.",
                        kind.name()
                    )))
                }
                (Some(key_id), Kind::SecureString) => Some(key_id.clone()),
                (None, Kind::SecureString) => Some(
                    current
                        .and_then(|c| c.key_id.clone())
                        .unwrap_or_else(|| DEFAULT_KEY_ID.to_owned()),
                ),
                (None, _) => None,
            };
            let (mut record, revision) = match existing {
                Some(found) => (found.value, found.revision),
                None => (
                    ParameterRecord {
                        name: name.clone(),
                        versions: Vec::new(),
                        tags: tags.clone(),
                        last_version: 0,
                    },
                    0,
                ),
            };
            if record.versions.len() >= VERSIONS_MAX {
                if record.versions.first().is_some_and(|oldest| !oldest.labels.is_empty()) {
                    let oldest = record.versions.first().map_or(0, |v| v.version);
                    return Err(ApiError::new(
                        "ParameterMaxVersionLimitExceeded",
                        400,
                        format!(
                            "You attempted to create a new version of {name} by calling the PutParameter API with the overwrite flag. Version {oldest}, the oldest version, can't be deleted because it has a label associated with it. Move the label to another version of the parameter, and try again."
                        ),
                    ));
                }
                record.versions.remove(0);
            }
            let version = record.last_version + 1;
            let stored = match kind {
                Kind::SecureString => StoredValue::Sealed(
                    self.sealer
                        .seal(&seal_context(&name, version), &value)
                        .map_err(|error| seal_error(error, "InternalServerError"))?,
                ),
                Kind::String | Kind::StringList => StoredValue::Plain(
                    String::from_utf8_lossy(value.expose()).into_owned(),
                ),
            };
            let description = r
                .description
                .clone()
                .or_else(|| current.and_then(|c| c.description.clone()));
            record.versions.push(ParameterVersion {
                version,
                kind,
                advanced,
                modified_ms: now_ms,
                modified_by: caller.to_owned(),
                description,
                key_id,
                data_type: data_type.clone(),
                value: stored,
                labels: Vec::new(),
            });
            record.last_version = version;
            Ok(Attempt::Commit(
                Txn::new()
                    .expect(key(&name), revision)
                    .put(key(&name), encode(&record)),
                wire::PutParameterResult {
                    version: Some(version),
                    tier: Some(if advanced {
                        wire::ParameterTier::Advanced
                    } else {
                        wire::ParameterTier::Standard
                    }),
                },
            ))
        })
        .await
    }

    fn get_one(&self, r: wire::GetParameterRequest) -> Result<wire::GetParameterResult, ApiError> {
        let given = r.name.unwrap_or_default();
        let selected = self.select(&given)?;
        check_length(&selected.name, "name", 1, NAME_MAX_CHARS, false)?;
        let record = self
            .read(&selected.name)?
            .ok_or_else(|| not_found(&selected.name))?
            .value;
        let version = Self::version(&record, selected.selector)?;
        Ok(wire::GetParameterResult {
            parameter: Some(self.answer(
                &record,
                version,
                r.with_decryption == Some(true),
                selected.selector,
            )?),
        })
    }

    fn get_many(
        &self,
        r: wire::GetParametersRequest,
    ) -> Result<wire::GetParametersResult, ApiError> {
        let names = r.names.unwrap_or_default();
        if names.is_empty() || names.len() > GET_PARAMETERS_NAMES_MAX {
            let bound = if names.is_empty() {
                "greater than or equal to 1".to_owned()
            } else {
                format!("less than or equal to {GET_PARAMETERS_NAMES_MAX}")
            };
            return Err(constraint(
                Some(&format!("[{}]", names.join(", "))),
                "names",
                &format!("Member must have length {bound}"),
            ));
        }
        let mut parameters = Vec::new();
        let mut invalid = Vec::new();
        for given in &names {
            let selected = self.select(given)?;
            let found = self.read(&selected.name)?;
            let answer = found.and_then(|found| {
                Self::version(&found.value, selected.selector)
                    .ok()
                    .map(|version| {
                        self.answer(
                            &found.value,
                            version,
                            r.with_decryption == Some(true),
                            selected.selector,
                        )
                    })
            });
            match answer {
                Some(parameter) => parameters.push(parameter?),
                None => invalid.push(given.clone()),
            }
        }
        Ok(wire::GetParametersResult {
            parameters: Some(parameters),
            invalid_parameters: Some(invalid),
        })
    }

    fn by_path(
        &self,
        r: wire::GetParametersByPathRequest,
    ) -> Result<wire::GetParametersByPathResult, ApiError> {
        let path = r.path.unwrap_or_default();
        check_length(&path, "path", 1, NAME_MAX_CHARS, false)?;
        if !path.starts_with('/')
            || (path != "/" && check_name(path.trim_end_matches('/')).is_err())
        {
            return Err(validation(format!(
                "The parameter doesn't meet the parameter name requirements. The parameter name must begin with a forward slash \"/\". It can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). It must use only letters, numbers, or the following symbols: . (period), - (hyphen), _ (underscore). Special characters are not allowed. All sub-paths, if specified, must use the forward slash symbol \"/\". Valid example: /get/parameters2-/by1./path0_. Invalid path: {path}"
            )));
        }
        let max_results = check_max_results(r.max_results, BY_PATH_MAX_RESULTS)?;
        let filters = r.parameter_filters.unwrap_or_default();
        for filter in &filters {
            let filter_key = filter.key.as_deref().unwrap_or_default();
            if !matches!(filter_key, "Type" | "KeyId" | "Label" | "Tier" | "DataType") {
                return Err(ApiError::new(
                    "InvalidFilterKey",
                    400,
                    format!("The following filter key is not valid: {filter_key}. Valid filter keys include: [Type, KeyId, Label, Tier, DataType]."),
                ));
            }
        }
        let directory = if path.ends_with('/') {
            path.clone()
        } else {
            format!("{path}/")
        };
        let recursive = r.recursive == Some(true);
        let mut matched = Vec::new();
        for entry in list_all(self.store.as_ref(), &key(&directory), PARAMETERS_MAX)? {
            let record: ParameterRecord = flotilla_records::decode(&entry)?;
            let rest = &record.name[directory.len()..];
            if !recursive && rest.contains('/') {
                continue;
            }
            let Some(current) = record.current() else {
                continue;
            };
            if filters
                .iter()
                .all(|f| string_filter_matches(f, &record, current))
            {
                matched.push(record);
            }
        }
        let start = parse_token(r.next_token.as_deref())?;
        let with_decryption = r.with_decryption == Some(true);
        let mut parameters = Vec::new();
        for record in matched.iter().skip(start).take(max_results) {
            if let Some(current) = record.current() {
                parameters.push(self.answer(record, current, with_decryption, None)?);
            }
        }
        let next = start + parameters.len();
        Ok(wire::GetParametersByPathResult {
            parameters: Some(parameters),
            next_token: (next < matched.len()).then(|| next.to_string()),
        })
    }

    async fn delete_one(
        &self,
        r: wire::DeleteParameterRequest,
    ) -> Result<wire::DeleteParameterResult, ApiError> {
        let name = self.select(&r.name.unwrap_or_default())?.name;
        check_length(&name, "name", 1, NAME_MAX_CHARS, false)?;
        mutate(self.store.as_ref(), || {
            let found = self.read(&name)?.ok_or_else(|| not_found(&name))?;
            Ok(Attempt::Commit(
                Txn::new()
                    .expect(key(&name), found.revision)
                    .delete(key(&name)),
                wire::DeleteParameterResult {},
            ))
        })
        .await
    }

    async fn delete_many(
        &self,
        r: wire::DeleteParametersRequest,
    ) -> Result<wire::DeleteParametersResult, ApiError> {
        let names = r.names.unwrap_or_default();
        if names.is_empty() || names.len() > DELETE_PARAMETERS_NAMES_MAX {
            return Err(constraint(
                Some(&format!("[{}]", names.join(", "))),
                "names",
                &format!(
                    "Member must have length {}",
                    if names.is_empty() {
                        "greater than or equal to 1".to_owned()
                    } else {
                        format!("less than or equal to {DELETE_PARAMETERS_NAMES_MAX}")
                    }
                ),
            ));
        }
        let mut resolved = Vec::with_capacity(names.len());
        for given in &names {
            resolved.push((given.clone(), self.select(given)?.name));
        }
        mutate(self.store.as_ref(), || {
            let mut txn = Txn::new();
            let mut deleted = Vec::new();
            let mut invalid = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for (given, name) in &resolved {
                match self.read(name)? {
                    Some(found) if seen.insert(name.clone()) => {
                        txn = txn.expect(key(name), found.revision).delete(key(name));
                        deleted.push(given.clone());
                    }
                    Some(_) => deleted.push(given.clone()),
                    None => invalid.push(given.clone()),
                }
            }
            let answer = wire::DeleteParametersResult {
                deleted_parameters: Some(deleted),
                invalid_parameters: Some(invalid),
            };
            if txn.ops.is_empty() {
                return Ok(Attempt::Done(answer));
            }
            Ok(Attempt::Commit(txn, answer))
        })
        .await
    }

    fn describe(
        &self,
        r: wire::DescribeParametersRequest,
    ) -> Result<wire::DescribeParametersResult, ApiError> {
        let max_results = check_max_results(r.max_results, DESCRIBE_MAX_RESULTS)?;
        unsupported(
            r.shared == Some(true),
            "Shared",
            "parameters are not shared between accounts",
        )?;
        let filters = r.filters.unwrap_or_default();
        let string_filters = r.parameter_filters.unwrap_or_default();
        if !filters.is_empty() && !string_filters.is_empty() {
            return Err(validation(
                "You can use either Filters or ParameterFilters in a single request.",
            ));
        }
        for filter in &string_filters {
            let filter_key = filter.key.as_deref().unwrap_or_default();
            if !matches!(
                filter_key,
                "Name" | "Type" | "KeyId" | "Path" | "Tier" | "DataType" | "Label"
            ) {
                return Err(ApiError::new(
                    "InvalidFilterKey",
                    400,
                    format!("The following filter key is not valid: {filter_key}. Valid filter keys include: [Path, Name, Type, KeyId, Tier, DataType, Label]."),
                ));
            }
        }
        let mut matched = Vec::new();
        for entry in list_all(self.store.as_ref(), PREFIX, PARAMETERS_MAX)? {
            let record: ParameterRecord = flotilla_records::decode(&entry)?;
            let Some(current) = record.current() else {
                continue;
            };
            let old_style = filters.iter().all(|filter| {
                let values = filter.values.as_deref().unwrap_or_default();
                let field = match filter.key {
                    Some(wire::ParametersFilterKey::Name) => record.name.as_str(),
                    Some(wire::ParametersFilterKey::Type) => current.kind.name(),
                    Some(wire::ParametersFilterKey::KeyId) => {
                        current.key_id.as_deref().unwrap_or_default()
                    }
                    None => return true,
                };
                values.iter().any(|value| {
                    if filter.key == Some(wire::ParametersFilterKey::Name) {
                        field.starts_with(value.as_str())
                    } else {
                        field == value
                    }
                })
            });
            if old_style
                && string_filters
                    .iter()
                    .all(|f| string_filter_matches(f, &record, current))
            {
                matched.push(record);
            }
        }
        let start = parse_token(r.next_token.as_deref())?;
        let page: Vec<wire::ParameterMetadata> = matched
            .iter()
            .skip(start)
            .take(max_results)
            .filter_map(|record| {
                record.current().map(|current| wire::ParameterMetadata {
                    name: Some(record.name.clone()),
                    arn: Some(self.arn(&record.name)),
                    r#type: Some(current.kind.wire()),
                    key_id: current.key_id.clone(),
                    last_modified_date: Some(seconds(current.modified_ms)),
                    last_modified_user: Some(current.modified_by.clone()),
                    description: current.description.clone(),
                    version: Some(current.version),
                    tier: Some(tier(current)),
                    policies: Some(Vec::new()),
                    data_type: Some(current.data_type.clone()),
                    allowed_pattern: None,
                })
            })
            .collect();
        let next = start + page.len();
        Ok(wire::DescribeParametersResult {
            parameters: Some(page),
            next_token: (next < matched.len()).then(|| next.to_string()),
        })
    }

    fn history(
        &self,
        r: wire::GetParameterHistoryRequest,
    ) -> Result<wire::GetParameterHistoryResult, ApiError> {
        let name = self.select(&r.name.unwrap_or_default())?.name;
        let max_results = check_max_results(r.max_results, HISTORY_MAX_RESULTS)?;
        let record = self.read(&name)?.ok_or_else(|| not_found(&name))?.value;
        let start = parse_token(r.next_token.as_deref())?;
        let with_decryption = r.with_decryption == Some(true);
        let mut page = Vec::new();
        for version in record.versions.iter().skip(start).take(max_results) {
            let value = self.answer(&record, version, with_decryption, None)?.value;
            page.push(wire::ParameterHistory {
                name: Some(record.name.clone()),
                r#type: Some(version.kind.wire()),
                key_id: version.key_id.clone(),
                last_modified_date: Some(seconds(version.modified_ms)),
                last_modified_user: Some(version.modified_by.clone()),
                description: version.description.clone(),
                value,
                allowed_pattern: None,
                version: Some(version.version),
                labels: Some(version.labels.clone()),
                tier: Some(tier(version)),
                policies: Some(Vec::new()),
                data_type: Some(version.data_type.clone()),
            });
        }
        let next = start + page.len();
        Ok(wire::GetParameterHistoryResult {
            parameters: Some(page),
            next_token: (next < record.versions.len()).then(|| next.to_string()),
        })
    }

    async fn label(
        &self,
        r: wire::LabelParameterVersionRequest,
    ) -> Result<wire::LabelParameterVersionResult, ApiError> {
        let name = self.select(&r.name.unwrap_or_default())?.name;
        let labels = r.labels.unwrap_or_default();
        if labels.is_empty() || labels.len() > LABELS_PER_VERSION_MAX {
            return Err(constraint(
                None,
                "labels",
                &format!("Member must have length less than or equal to {LABELS_PER_VERSION_MAX}"),
            ));
        }
        let wanted = r.parameter_version;
        mutate(self.store.as_ref(), || {
            let found = self.read(&name)?.ok_or_else(|| not_found(&name))?;
            let mut record = found.value;
            let version_number = match wanted {
                Some(number) => number,
                None => record.current().map_or(0, |c| c.version),
            };
            let Some(index) = record.versions.iter().position(|v| v.version == version_number)
            else {
                return Err(version_not_found(&name, &version_number.to_string()));
            };
            let (valid, invalid): (Vec<String>, Vec<String>) =
                labels.iter().cloned().partition(|label| label_is_valid(label));
            for version in record.versions.iter_mut() {
                version.labels.retain(|label| !valid.contains(label));
            }
            let target = &mut record.versions[index];
            for label in &valid {
                if !target.labels.contains(label) {
                    target.labels.push(label.clone());
                }
            }
            if target.labels.len() > LABELS_PER_VERSION_MAX {
                return Err(ApiError::new(
                    "ParameterVersionLabelLimitExceeded",
                    400,
                    format!("A parameter version can have maximum {LABELS_PER_VERSION_MAX} labels. Move one or more labels to another version and try again."),
                ));
            }
            Ok(Attempt::Commit(
                Txn::new()
                    .expect(key(&name), found.revision)
                    .put(key(&name), encode(&record)),
                wire::LabelParameterVersionResult {
                    invalid_labels: Some(invalid),
                    parameter_version: Some(version_number),
                },
            ))
        })
        .await
    }
}

fn tier(version: &ParameterVersion) -> wire::ParameterTier {
    if version.advanced {
        wire::ParameterTier::Advanced
    } else {
        wire::ParameterTier::Standard
    }
}

/// A ParameterStringFilter over a parameter's current version.
fn string_filter_matches(
    filter: &wire::ParameterStringFilter,
    record: &ParameterRecord,
    current: &ParameterVersion,
) -> bool {
    let values = filter.values.as_deref().unwrap_or_default();
    let option = filter.option.as_deref().unwrap_or("Equals");
    let tier_name = if current.advanced {
        "Advanced"
    } else {
        "Standard"
    };
    let field: Vec<&str> = match filter.key.as_deref().unwrap_or_default() {
        "Name" => vec![record.name.as_str()],
        "Type" => vec![current.kind.name()],
        "KeyId" => current.key_id.as_deref().into_iter().collect(),
        "Tier" => vec![tier_name],
        "DataType" => vec![current.data_type.as_str()],
        "Label" => record
            .versions
            .iter()
            .flat_map(|v| v.labels.iter().map(String::as_str))
            .collect(),
        "Path" => {
            let parent = record
                .name
                .rsplit_once('/')
                .map_or("", |(parent, _)| parent);
            return values.iter().any(|value| {
                let value = value.trim_end_matches('/');
                if option == "Recursive" {
                    record.name.starts_with(&format!("{value}/"))
                } else {
                    parent == value
                }
            });
        }
        _ => return false,
    };
    values.iter().any(|value| {
        field.iter().any(|field| match option {
            "BeginsWith" => field.starts_with(value.as_str()),
            "Contains" => field.contains(value.as_str()),
            _ => *field == value,
        })
    })
}

fn lower_first(member: &str) -> String {
    let mut chars = member.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn check_max_results(max_results: Option<i32>, max: i32) -> Result<usize, ApiError> {
    match max_results {
        None => Ok(max as usize),
        Some(value) if value < 1 => Err(constraint(
            Some(&value.to_string()),
            "maxResults",
            "Member must have value greater than or equal to 1",
        )),
        Some(value) if value > max => Err(constraint(
            Some(&value.to_string()),
            "maxResults",
            &format!("Member must have value less than or equal to {max}"),
        )),
        Some(value) => Ok(value as usize),
    }
}

fn parse_token(token: Option<&str>) -> Result<usize, ApiError> {
    match token {
        None => Ok(0),
        Some(token) => token.parse::<usize>().map_err(|_| {
            ApiError::new("InvalidNextToken", 400, "The specified token isn't valid.")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_parameter_stores_rules() {
        for good in ["a", "/a/b", "/app/db.password", "my-param_1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["a/b", "/a//b", "/aws/x", "SSM-x", "a b", "/a/b$", "/"] {
            assert_eq!(
                check_name(bad).err().map(|e| e.code),
                Some("ValidationException"),
                "{bad}"
            );
        }
        let deep: String = (0..16).map(|i| format!("/l{i}")).collect();
        assert_eq!(
            check_name(&deep).err().map(|e| e.code),
            Some("HierarchyLevelLimitExceededException")
        );
        let fifteen: String = (0..15).map(|i| format!("/l{i}")).collect();
        assert!(check_name(&fifteen).is_ok());
    }

    #[test]
    fn labels_follow_parameter_stores_rules() {
        assert!(label_is_valid("prod"));
        assert!(!label_is_valid("1prod"));
        assert!(!label_is_valid("aws-x"));
        assert!(!label_is_valid("a/b"));
    }
}
