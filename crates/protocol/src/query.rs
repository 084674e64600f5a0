//! Query-protocol requests: a form whose `Action` names the operation and
//! whose other parameters spell the input structure flat, as botocore's
//! query serializer writes it:
//!
//! ```text
//! Names.member.1=a            list item (Names[0])
//! Tags.member.1.Key=k         structure in a list
//! Attributes.entry.1.key=k    map entry
//! Attributes.entry.1.value=v
//! Config.Name=n               nested structure
//! Names=                      an empty list
//! ```
//!
//! The result is the JSON value a JSON-protocol client would have sent for
//! the same input, keyed by the model's member names, so that serde turns it
//! into the same generated type.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Map, Number, Value};

use crate::form::{Form, FormError, Limits};
use crate::model::{Kind, Operation, ServiceModel, ShapeId};
use crate::timestamp::parse_iso8601;

/// Why a Query request was refused, each with the code AWS's Query services
/// answer for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Form(#[from] FormError),
    #[error("The request must contain the parameter Action.")]
    MissingAction,
    #[error("The request must contain the parameter Version.")]
    MissingVersion,
    #[error("The action {action} is not valid for this web service.")]
    UnknownAction { action: String },
    #[error("Could not find operation {action} for version {version}. This service speaks version {expected}.")]
    UnknownVersion {
        action: String,
        version: String,
        expected: &'static str,
    },
    #[error("Value '{value}' at '{path}' failed to satisfy constraint: Member must be {expected}")]
    WrongType {
        path: String,
        value: String,
        expected: &'static str,
    },
    #[error("'{segment}' in '{path}' is not a list index: items are numbered from 1")]
    BadIndex { path: String, segment: String },
    #[error("list '{path}' has an item numbered {index}; a list holds at most {max} members")]
    TooManyMembers {
        path: String,
        index: u128,
        max: usize,
    },
    #[error("map entry '{path}' has a value but no key")]
    MapEntryWithoutKey { path: String },
    #[error("parameter '{path}' nests deeper than {max} levels")]
    TooDeep { path: String, max: usize },
    #[error("Parameter '{name}' is not a member of {action}'s input")]
    UnknownParameter { name: String, action: String },
}

impl QueryError {
    /// The error code, as AWS's Query services spell it.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Form(_) => "MalformedQueryString",
            QueryError::MissingAction => "MissingAction",
            QueryError::MissingVersion => "MissingParameter",
            QueryError::UnknownAction { .. } | QueryError::UnknownVersion { .. } => "InvalidAction",
            QueryError::UnknownParameter { .. } => "InvalidParameterValue",
            QueryError::WrongType { .. }
            | QueryError::BadIndex { .. }
            | QueryError::TooManyMembers { .. }
            | QueryError::MapEntryWithoutKey { .. }
            | QueryError::TooDeep { .. } => "ValidationError",
        }
    }
}

/// The operation a form asks for and its input as a JSON value.
pub fn decode(
    model: &ServiceModel,
    form: &Form,
    limits: &Limits,
) -> Result<(&'static Operation, Value), QueryError> {
    let action = form.get("Action").ok_or(QueryError::MissingAction)?;
    let operation = model
        .operation(action)
        .ok_or_else(|| QueryError::UnknownAction {
            action: action.to_owned(),
        })?;
    let version = form.get("Version").ok_or(QueryError::MissingVersion)?;
    if version != model.api_version {
        return Err(QueryError::UnknownVersion {
            action: action.to_owned(),
            version: version.to_owned(),
            expected: model.api_version,
        });
    }
    let mut decoder = Decoder {
        model,
        parameters: &form.parameters,
        limits,
        consumed: HashSet::new(),
    };
    let value = match operation.input {
        None => Value::Object(Map::new()),
        Some(input) => decoder
            .structure(input, "", 0)?
            .unwrap_or_else(|| Value::Object(Map::new())),
    };
    if let Some(name) = form.parameters.keys().find(|name| {
        !matches!(name.as_str(), "Action" | "Version") && !decoder.consumed.contains(name.as_str())
    }) {
        return Err(QueryError::UnknownParameter {
            name: name.clone(),
            action: action.to_owned(),
        });
    }
    Ok((operation, value))
}

struct Decoder<'a> {
    model: &'a ServiceModel,
    parameters: &'a BTreeMap<String, String>,
    limits: &'a Limits,
    consumed: HashSet<&'a str>,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

impl<'a> Decoder<'a> {
    /// Whether any parameter lies under `prefix.`.
    fn any_under(&self, prefix: &str) -> bool {
        let start = format!("{prefix}.");
        self.parameters
            .range(start.clone()..)
            .next()
            .is_some_and(|(name, _)| name.starts_with(&start))
    }

    fn take(&mut self, path: &str) -> Option<&'a str> {
        let (name, value) = self.parameters.get_key_value(path)?;
        self.consumed.insert(name.as_str());
        Some(value.as_str())
    }

    fn value(
        &mut self,
        shape: ShapeId,
        path: &str,
        depth: usize,
    ) -> Result<Option<Value>, QueryError> {
        if depth > self.limits.depth_max {
            return Err(QueryError::TooDeep {
                path: path.to_owned(),
                max: self.limits.depth_max,
            });
        }
        let model = self.model;
        match &model.shape(shape).kind {
            Kind::Structure { .. } => self.structure(shape, path, depth),
            Kind::List {
                member,
                member_name,
                flattened,
            } => {
                let base = if *flattened {
                    path.to_owned()
                } else {
                    join(path, member_name.unwrap_or("member"))
                };
                // botocore sends `Name=` for an empty list.
                let empty_marker = self.take(path).is_some_and(str::is_empty);
                let indices = self.indices(&base)?;
                if indices.is_empty() {
                    return Ok(empty_marker.then(|| Value::Array(Vec::new())));
                }
                let mut items = Vec::with_capacity(indices.len());
                for index in indices {
                    let item_path = join(&base, &index.to_string());
                    if let Some(item) = self.value(*member, &item_path, depth + 1)? {
                        items.push(item);
                    }
                }
                Ok(Some(Value::Array(items)))
            }
            Kind::Map {
                value,
                key_name,
                value_name,
                flattened,
                ..
            } => {
                let base = if *flattened {
                    path.to_owned()
                } else {
                    join(path, "entry")
                };
                let empty_marker = self.take(path).is_some_and(str::is_empty);
                let indices = self.indices(&base)?;
                if indices.is_empty() {
                    return Ok(empty_marker.then(|| Value::Object(Map::new())));
                }
                let mut entries = Map::new();
                for index in indices {
                    let entry_path = join(&base, &index.to_string());
                    let key_path = join(&entry_path, key_name.unwrap_or("key"));
                    let value_path = join(&entry_path, value_name.unwrap_or("value"));
                    let Some(key) = self.take(&key_path) else {
                        return Err(QueryError::MapEntryWithoutKey { path: entry_path });
                    };
                    let item = self
                        .value(*value, &value_path, depth + 1)?
                        .unwrap_or(Value::Null);
                    entries.insert(key.to_owned(), item);
                }
                Ok(Some(Value::Object(entries)))
            }
            scalar => {
                let Some(text) = self.take(path) else {
                    return Ok(None);
                };
                let wrong = |expected: &'static str| QueryError::WrongType {
                    path: path.to_owned(),
                    value: text.to_owned(),
                    expected,
                };
                Ok(Some(match scalar {
                    Kind::Integer | Kind::Long => {
                        Value::Number(text.parse::<i64>().map_err(|_| wrong("an integer"))?.into())
                    }
                    Kind::Double => text
                        .parse::<f64>()
                        .ok()
                        .and_then(Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| wrong("a number"))?,
                    Kind::Boolean => match text {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        _ => return Err(wrong("true or false")),
                    },
                    Kind::Timestamp => parse_iso8601(text)
                        .or_else(|| text.parse::<f64>().ok().filter(|s| s.is_finite()))
                        .and_then(Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| wrong("an ISO 8601 timestamp"))?,
                    _ => Value::String(text.to_owned()),
                }))
            }
        }
    }

    fn structure(
        &mut self,
        shape: ShapeId,
        path: &str,
        depth: usize,
    ) -> Result<Option<Value>, QueryError> {
        if !path.is_empty() && !self.any_under(path) {
            return Ok(None);
        }
        let Kind::Structure { members } = &self.model.shape(shape).kind else {
            return Ok(None);
        };
        let mut object = Map::new();
        for member in *members {
            let member_path = join(path, member.wire_name());
            if let Some(value) = self.value(member.shape, &member_path, depth + 1)? {
                object.insert(member.name.to_owned(), value);
            }
        }
        Ok(Some(Value::Object(object)))
    }

    /// The item numbers used under `base.`, in order, each checked against
    /// the limit before anything is built for it.
    fn indices(&self, base: &str) -> Result<BTreeSet<usize>, QueryError> {
        let start = format!("{base}.");
        let mut indices = BTreeSet::new();
        for (name, _) in self.parameters.range(start.clone()..) {
            let Some(rest) = name.strip_prefix(&start) else {
                break;
            };
            let segment = rest.split('.').next().unwrap_or_default();
            let bad_index = || QueryError::BadIndex {
                path: base.to_owned(),
                segment: segment.to_owned(),
            };
            if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad_index());
            }
            // Digits only, so the one way to fail is overflow: a huge index.
            let index = segment.parse::<u128>().unwrap_or(u128::MAX);
            if index == 0 {
                return Err(bad_index());
            }
            if index > self.limits.list_members_max as u128 {
                return Err(QueryError::TooManyMembers {
                    path: base.to_owned(),
                    index,
                    max: self.limits.list_members_max,
                });
            }
            indices.insert(index as usize);
        }
        Ok(indices)
    }
}
