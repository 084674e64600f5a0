//! The CloudWatch Logs API over the store: typed requests in, typed
//! responses or AWS errors out. AWS's limits and wording live here.

use std::collections::BTreeMap;

use flotilla_aws::logs::{self as wire, LogsRequest as Q, LogsResponse as R, NoOutput};
use flotilla_types::ApiError;

use crate::engine::{EventKey, EventQuery, GroupInfo, LogStore, StreamInfo};
use crate::error::LogsError;
use crate::pattern::Pattern;

/// PutLogEvents' batch limit, counting 26 bytes per event besides its message.
pub const BATCH_MAX_BYTES: usize = 1_048_576;
pub const EVENT_OVERHEAD_BYTES: usize = 26;
pub const BATCH_MAX_EVENTS: usize = 10_000;
/// Largest single event, its 26 bytes included.
pub const EVENT_MAX_BYTES: usize = 262_144;
pub const BATCH_SPAN_MAX_MS: i64 = 24 * 3_600_000;
/// Events older than this are refused as too old.
pub const TOO_OLD_MS: i64 = 14 * 86_400_000;
/// Events further in the future than this are refused as too new.
pub const TOO_NEW_MS: i64 = 2 * 3_600_000;
pub const RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];
const NAME_MAX_CHARS: usize = 512;
const DESCRIBE_LIMIT_MAX: i32 = 50;
const EVENTS_LIMIT_MAX: i32 = 10_000;
const TAGS_MAX: usize = 50;
const FILTER_STREAMS_MAX: usize = 100;
/// A response carries at most this many message bytes, as AWS's 1 MB.
const RESPONSE_MAX_BYTES: usize = 1_048_576;
/// FilterLogEvents stops after reading this much and answers a nextToken.
const FILTER_SCAN_MAX_BYTES: u64 = 256 * 1024 * 1024;
const GROUP_NAME_PATTERN: &str = r"[\.\-_/#A-Za-z0-9]+";
const STREAM_NAME_PATTERN: &str = "[^:*]*";

/// The Logs service of one region and account.
pub struct LogsService {
    pub store: LogStore,
    pub region: String,
    pub account_id: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid_parameter(message)
}

fn validation(value: &str, member: &str, constraint: &str) -> ApiError {
    invalid(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
    ))
}

fn required<T>(value: Option<T>, member: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| invalid(format!("{member} is required")))
}

fn check_group_name(name: &str, member: &str) -> Result<(), ApiError> {
    check_length(name, member)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#'))
    {
        return Err(validation(
            name,
            member,
            &format!("Member must satisfy regular expression pattern: {GROUP_NAME_PATTERN}"),
        ));
    }
    Ok(())
}

fn check_stream_name(name: &str, member: &str) -> Result<(), ApiError> {
    check_length(name, member)?;
    if name.contains([':', '*']) {
        return Err(validation(
            name,
            member,
            &format!("Member must satisfy regular expression pattern: {STREAM_NAME_PATTERN}"),
        ));
    }
    Ok(())
}

fn check_length(name: &str, member: &str) -> Result<(), ApiError> {
    let length = name.chars().count();
    if length < 1 {
        return Err(validation(
            name,
            member,
            "Member must have length greater than or equal to 1",
        ));
    }
    if length > NAME_MAX_CHARS {
        return Err(validation(
            name,
            member,
            &format!("Member must have length less than or equal to {NAME_MAX_CHARS}"),
        ));
    }
    Ok(())
}

fn check_limit(limit: Option<i32>, max: i32, default: i32) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default as usize),
        Some(value) if value < 1 => Err(validation(
            &value.to_string(),
            "limit",
            "Member must have value greater than or equal to 1",
        )),
        Some(value) if value > max => Err(validation(
            &value.to_string(),
            "limit",
            &format!("Member must have value less than or equal to {max}"),
        )),
        Some(value) => Ok(value as usize),
    }
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (key, value) in tags {
        let key_ok = (1..=128).contains(&key.chars().count())
            && !key.starts_with("aws:")
            && key
                .chars()
                .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c));
        if !key_ok {
            return Err(validation(
                key,
                "tags",
                "Member must satisfy map keys constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+)$]",
            ));
        }
        if value.chars().count() > 256 {
            return Err(validation(
                value,
                "tags",
                "Member must satisfy map value constraint: [Member must have length less than or equal to 256]",
            ));
        }
    }
    Ok(())
}

fn not_found(error: LogsError) -> ApiError {
    match error {
        LogsError::GroupNotFound { .. } => {
            ApiError::resource_not_found("The specified log group does not exist.")
        }
        LogsError::StreamNotFound { .. } => {
            ApiError::resource_not_found("The specified log stream does not exist.")
        }
        LogsError::GroupExists { .. } => ApiError::new(
            "ResourceAlreadyExistsException",
            400,
            "The specified log group already exists",
        ),
        LogsError::StreamExists { .. } => ApiError::new(
            "ResourceAlreadyExistsException",
            400,
            "The specified log stream already exists",
        ),
        other => {
            tracing::error!(error = %other, "log store failed");
            ApiError::new(
                "ServiceUnavailableException",
                500,
                "The service cannot complete the request.",
            )
        }
    }
}

/// A position in a stream or group, as tokens carry it: `f/` forward, `b/`
/// backward, then the key.
fn encode_token(direction: char, key: EventKey) -> String {
    format!(
        "{direction}/{:020}/{}/{}",
        key.timestamp.max(-1) + 1,
        key.stream_id,
        key.seq
    )
}

fn decode_token(token: &str) -> Option<(char, EventKey)> {
    let (direction, rest) = token.split_once('/')?;
    let direction = match direction {
        "f" => 'f',
        "b" => 'b',
        _ => return None,
    };
    let mut parts = rest.split('/');
    let timestamp = parts.next()?.parse::<i64>().ok()? - 1;
    let stream_id = parts.next()?.parse::<u64>().ok()?;
    let seq = parts.next()?.parse::<u64>().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((
        direction,
        EventKey {
            timestamp,
            stream_id,
            seq,
        },
    ))
}

fn bad_token() -> ApiError {
    invalid("The specified nextToken is invalid.")
}

/// Before every event.
const START_KEY: EventKey = EventKey {
    timestamp: -1,
    stream_id: 0,
    seq: 0,
};

impl LogsService {
    fn group_arn(&self, group: &str) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{group}",
            self.region, self.account_id
        )
    }

    /// A group named by name or ARN (with or without the trailing `:*`).
    fn group_from_identifier(
        &self,
        name: Option<String>,
        identifier: Option<String>,
    ) -> Result<String, ApiError> {
        match (name, identifier) {
            (Some(_), Some(_)) => Err(invalid(
                "LogGroup name and LogGroup ARN are mutually exclusive parameters.",
            )),
            (Some(name), None) => {
                check_group_name(&name, "logGroupName")?;
                Ok(name)
            }
            (None, Some(identifier)) => {
                let name = match identifier.strip_prefix("arn:") {
                    Some(_) => self.group_from_arn(&identifier)?,
                    None => identifier,
                };
                check_group_name(&name, "logGroupIdentifier")?;
                Ok(name)
            }
            (None, None) => Err(invalid(
                "Should provide either a log group name or a log group identifier.",
            )),
        }
    }

    fn group_from_arn(&self, arn: &str) -> Result<String, ApiError> {
        let prefix = format!(
            "arn:aws:logs:{}:{}:log-group:",
            self.region, self.account_id
        );
        let Some(rest) = arn.strip_prefix(&prefix) else {
            return Err(ApiError::resource_not_found(format!(
                "The specified resource does not exist: {arn}"
            )));
        };
        let name = rest.strip_suffix(":*").unwrap_or(rest);
        if name.contains(':') {
            return Err(invalid(format!(
                "{arn} is not a log group ARN: only log groups take tags"
            )));
        }
        Ok(name.to_owned())
    }

    fn describe_group(&self, group: GroupInfo) -> wire::LogGroup {
        let arn = self.group_arn(&group.name);
        wire::LogGroup {
            arn: Some(format!("{arn}:*")),
            log_group_arn: Some(arn),
            creation_time: Some(group.creation_ms),
            log_group_name: Some(group.name),
            metric_filter_count: Some(0),
            retention_in_days: group.retention_days,
            stored_bytes: Some(group.stored_bytes as i64),
            log_group_class: Some(wire::LogGroupClass::Standard),
            deletion_protection_enabled: Some(false),
            ..wire::LogGroup::default()
        }
    }

    fn describe_stream(&self, group: &str, stream: StreamInfo) -> wire::LogStream {
        wire::LogStream {
            arn: Some(format!(
                "{}:log-stream:{}",
                self.group_arn(group),
                stream.name
            )),
            creation_time: Some(stream.creation_ms),
            first_event_timestamp: stream.first_event_ms,
            last_event_timestamp: stream.last_event_ms,
            last_ingestion_time: stream.last_ingestion_ms,
            upload_sequence_token: Some(sequence_token(stream.next_seq)),
            stored_bytes: Some(0),
            log_stream_name: Some(stream.name),
        }
    }

    /// Answers one request. Blocks on disk I/O: call it off the async runtime.
    pub fn handle(&self, request: Q, now_ms: i64) -> Result<R, ApiError> {
        if let Some(member) = request.missing_required() {
            return Err(invalid(format!(
                "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
            )));
        }
        Ok(match request {
            Q::CreateLogGroup(r) => {
                let name = required(r.log_group_name, "logGroupName")?;
                check_group_name(&name, "logGroupName")?;
                if r.kms_key_id.is_some() {
                    return Err(invalid(
                        "kmsKeyId is not supported: this store keeps log events unencrypted on the server's disk",
                    ));
                }
                if r.log_group_class
                    .is_some_and(|class| class != wire::LogGroupClass::Standard)
                {
                    return Err(invalid(
                        "logGroupClass: only STANDARD log groups are supported",
                    ));
                }
                if r.deletion_protection_enabled == Some(true) {
                    return Err(invalid("deletionProtectionEnabled is not supported"));
                }
                let tags = r.tags.unwrap_or_default();
                if tags.len() > TAGS_MAX {
                    return Err(validation(
                        "tags",
                        "tags",
                        "Member must have length less than or equal to 50",
                    ));
                }
                check_tags(&tags)?;
                self.store
                    .create_group(&name, tags, now_ms)
                    .map_err(not_found)?;
                R::CreateLogGroup(NoOutput {})
            }
            Q::DeleteLogGroup(r) => {
                let name = required(r.log_group_name, "logGroupName")?;
                check_group_name(&name, "logGroupName")?;
                self.store.delete_group(&name).map_err(not_found)?;
                R::DeleteLogGroup(NoOutput {})
            }
            Q::DescribeLogGroups(r) => R::DescribeLogGroups(self.describe_groups(r)?),
            Q::CreateLogStream(r) => {
                let group = required(r.log_group_name, "logGroupName")?;
                let stream = required(r.log_stream_name, "logStreamName")?;
                check_group_name(&group, "logGroupName")?;
                check_stream_name(&stream, "logStreamName")?;
                self.store
                    .create_stream(&group, &stream, now_ms)
                    .map_err(not_found)?;
                R::CreateLogStream(NoOutput {})
            }
            Q::DeleteLogStream(r) => {
                let group = required(r.log_group_name, "logGroupName")?;
                let stream = required(r.log_stream_name, "logStreamName")?;
                check_group_name(&group, "logGroupName")?;
                check_stream_name(&stream, "logStreamName")?;
                self.store
                    .delete_stream(&group, &stream)
                    .map_err(not_found)?;
                R::DeleteLogStream(NoOutput {})
            }
            Q::DescribeLogStreams(r) => R::DescribeLogStreams(self.describe_streams(r)?),
            Q::PutLogEvents(r) => R::PutLogEvents(self.put_events(r, now_ms)?),
            Q::GetLogEvents(r) => R::GetLogEvents(self.get_events(r, now_ms)?),
            Q::FilterLogEvents(r) => R::FilterLogEvents(self.filter_events(r, now_ms)?),
            Q::PutRetentionPolicy(r) => {
                let group = required(r.log_group_name, "logGroupName")?;
                check_group_name(&group, "logGroupName")?;
                let days = required(r.retention_in_days, "retentionInDays")?;
                if !RETENTION_DAYS.contains(&days) {
                    let values: Vec<String> = RETENTION_DAYS.iter().map(i32::to_string).collect();
                    return Err(validation(
                        &days.to_string(),
                        "retentionInDays",
                        &format!(
                            "Member must satisfy enum value set: [{}]",
                            values.join(", ")
                        ),
                    ));
                }
                self.store
                    .set_retention(&group, Some(days))
                    .map_err(not_found)?;
                R::PutRetentionPolicy(NoOutput {})
            }
            Q::DeleteRetentionPolicy(r) => {
                let group = required(r.log_group_name, "logGroupName")?;
                check_group_name(&group, "logGroupName")?;
                self.store.set_retention(&group, None).map_err(not_found)?;
                R::DeleteRetentionPolicy(NoOutput {})
            }
            Q::TagLogGroup(r) => {
                let group = required(r.log_group_name, "logGroupName")?;
                check_group_name(&group, "logGroupName")?;
                let tags = required(r.tags, "tags")?;
                self.tag(&group, &tags, &[], "InvalidParameterException")?;
                R::TagLogGroup(NoOutput {})
            }
            Q::UntagLogGroup(r) => {
                let group = required(r.log_group_name, "logGroupName")?;
                check_group_name(&group, "logGroupName")?;
                let keys = required(r.tags, "tags")?;
                self.tag(&group, &BTreeMap::new(), &keys, "InvalidParameterException")?;
                R::UntagLogGroup(NoOutput {})
            }
            Q::ListTagsLogGroup(r) => {
                let group = required(r.log_group_name, "logGroupName")?;
                check_group_name(&group, "logGroupName")?;
                let info = self.store.group(&group).map_err(not_found)?;
                R::ListTagsLogGroup(wire::ListTagsLogGroupResponse {
                    tags: Some(info.tags),
                })
            }
            Q::TagResource(r) => {
                let group = self.group_from_arn(&required(r.resource_arn, "resourceArn")?)?;
                let tags = required(r.tags, "tags")?;
                self.tag(&group, &tags, &[], "TooManyTagsException")?;
                R::TagResource(NoOutput {})
            }
            Q::UntagResource(r) => {
                let group = self.group_from_arn(&required(r.resource_arn, "resourceArn")?)?;
                let keys = required(r.tag_keys, "tagKeys")?;
                self.tag(&group, &BTreeMap::new(), &keys, "InvalidParameterException")?;
                R::UntagResource(NoOutput {})
            }
            Q::ListTagsForResource(r) => {
                let group = self.group_from_arn(&required(r.resource_arn, "resourceArn")?)?;
                let info = self.store.group(&group).map_err(not_found)?;
                R::ListTagsForResource(wire::ListTagsForResourceResponse {
                    tags: Some(info.tags),
                })
            }
            other => {
                return Err(ApiError::new(
                    "UnknownOperationException",
                    400,
                    format!(
                        "{} is not supported by this CloudWatch Logs store",
                        other.operation()
                    ),
                ))
            }
        })
    }

    fn tag(
        &self,
        group: &str,
        add: &BTreeMap<String, String>,
        remove: &[String],
        too_many_code: &'static str,
    ) -> Result<(), ApiError> {
        check_tags(add)?;
        let outcome = self
            .store
            .change_tags(group, add, remove, |tags| {
                if tags.len() > TAGS_MAX {
                    Err(format!(
                        "A resource can have no more than {TAGS_MAX} tags; this change would leave {}.",
                        tags.len()
                    ))
                } else {
                    Ok(())
                }
            })
            .map_err(not_found)?;
        outcome.map_err(|message| ApiError::new(too_many_code, 400, message))
    }

    fn describe_groups(
        &self,
        r: wire::DescribeLogGroupsRequest,
    ) -> Result<wire::DescribeLogGroupsResponse, ApiError> {
        let limit = check_limit(r.limit, DESCRIBE_LIMIT_MAX, DESCRIBE_LIMIT_MAX)?;
        if r.include_linked_accounts == Some(true) {
            return Err(invalid(
                "includeLinkedAccounts: this store serves one account and has no linked accounts",
            ));
        }
        if r.account_identifiers
            .as_ref()
            .is_some_and(|ids| ids.iter().any(|id| id != &self.account_id))
        {
            return Err(invalid(
                "accountIdentifiers: this store serves only its own account",
            ));
        }
        if r.log_group_name_prefix.is_some() && r.log_group_name_pattern.is_some() {
            return Err(invalid(
                "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.",
            ));
        }
        if let Some(prefix) = &r.log_group_name_prefix {
            check_group_name(prefix, "logGroupNamePrefix")?;
        }
        let identifiers: Option<Vec<String>> = match r.log_group_identifiers {
            Some(identifiers) => Some(
                identifiers
                    .into_iter()
                    .map(|id| self.group_from_identifier(None, Some(id)))
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };
        let class_matches = r
            .log_group_class
            .is_none_or(|class| class == wire::LogGroupClass::Standard);
        let after = match &r.next_token {
            Some(token) => Some(token.strip_prefix("g/").ok_or_else(bad_token)?.to_owned()),
            None => None,
        };
        let prefix = r.log_group_name_prefix.unwrap_or_default();
        let pattern = r.log_group_name_pattern.unwrap_or_default().to_lowercase();
        let (groups, more) = self
            .store
            .groups(
                |name| {
                    class_matches
                        && name.starts_with(&prefix)
                        && name.to_lowercase().contains(&pattern)
                        && identifiers
                            .as_ref()
                            .is_none_or(|ids| ids.iter().any(|id| id == name))
                },
                after.as_deref(),
                limit,
            )
            .map_err(not_found)?;
        let next_token = if more {
            groups.last().map(|g| format!("g/{}", g.name))
        } else {
            None
        };
        Ok(wire::DescribeLogGroupsResponse {
            log_groups: Some(groups.into_iter().map(|g| self.describe_group(g)).collect()),
            next_token,
        })
    }

    fn describe_streams(
        &self,
        r: wire::DescribeLogStreamsRequest,
    ) -> Result<wire::DescribeLogStreamsResponse, ApiError> {
        let group = self.group_from_identifier(r.log_group_name, r.log_group_identifier)?;
        let limit = check_limit(r.limit, DESCRIBE_LIMIT_MAX, DESCRIBE_LIMIT_MAX)?;
        let by_last_event = r.order_by == Some(wire::OrderBy::LastEventTime);
        if let Some(prefix) = &r.log_stream_name_prefix {
            check_stream_name(prefix, "logStreamNamePrefix")?;
            if by_last_event {
                return Err(invalid(
                    "Cannot order by LastEventTime with a logStreamNamePrefix.",
                ));
            }
        }
        let skip = match &r.next_token {
            Some(token) => token
                .strip_prefix("s/")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(bad_token)?,
            None => 0,
        };
        let mut streams = self.store.streams(&group).map_err(not_found)?;
        if let Some(prefix) = &r.log_stream_name_prefix {
            streams.retain(|s| s.name.starts_with(prefix.as_str()));
        }
        if by_last_event {
            streams.sort_by(|a, b| {
                (a.last_event_ms.unwrap_or(a.creation_ms), &a.name)
                    .cmp(&(b.last_event_ms.unwrap_or(b.creation_ms), &b.name))
            });
        } else {
            streams.sort_by(|a, b| a.name.cmp(&b.name));
        }
        if r.descending == Some(true) {
            streams.reverse();
        }
        let total = streams.len();
        let page: Vec<wire::LogStream> = streams
            .into_iter()
            .skip(skip)
            .take(limit)
            .map(|s| self.describe_stream(&group, s))
            .collect();
        let next_token = (skip + page.len() < total).then(|| format!("s/{}", skip + page.len()));
        Ok(wire::DescribeLogStreamsResponse {
            log_streams: Some(page),
            next_token,
        })
    }

    fn put_events(
        &self,
        r: wire::PutLogEventsRequest,
        now_ms: i64,
    ) -> Result<wire::PutLogEventsResponse, ApiError> {
        let group = required(r.log_group_name, "logGroupName")?;
        let stream = required(r.log_stream_name, "logStreamName")?;
        check_group_name(&group, "logGroupName")?;
        check_stream_name(&stream, "logStreamName")?;
        let input = required(r.log_events, "logEvents")?;
        let events = check_batch(&input)?;
        let info = self.store.group(&group).map_err(not_found)?;
        let current = self.store.stream(&group, &stream).map_err(not_found)?;
        let split = split_by_age(&events, now_ms, info.retention_days);
        let accepted = &events[split.accepted.clone()];
        let next_seq = if accepted.is_empty() {
            current.next_seq
        } else {
            self.store
                .put(&group, &stream, accepted, now_ms)
                .map_err(not_found)?
        };
        let rejected = (split.too_new_start.is_some()
            || split.too_old_end.is_some()
            || split.expired_end.is_some())
        .then(|| wire::RejectedLogEventsInfo {
            too_new_log_event_start_index: split.too_new_start.map(|i| i as i32),
            too_old_log_event_end_index: split.too_old_end.map(|i| i as i32),
            expired_log_event_end_index: split.expired_end.map(|i| i as i32),
        });
        Ok(wire::PutLogEventsResponse {
            next_sequence_token: Some(sequence_token(next_seq)),
            rejected_log_events_info: rejected,
            rejected_entity_info: r.entity.map(|_| wire::RejectedEntityInfo {
                error_type: Some(wire::EntityRejectionErrorType::UnsupportedLogGroupType),
            }),
        })
    }

    fn get_events(
        &self,
        r: wire::GetLogEventsRequest,
        now_ms: i64,
    ) -> Result<wire::GetLogEventsResponse, ApiError> {
        let group = self.group_from_identifier(r.log_group_name, r.log_group_identifier)?;
        let stream = required(r.log_stream_name, "logStreamName")?;
        check_stream_name(&stream, "logStreamName")?;
        let limit = check_limit(r.limit, EVENTS_LIMIT_MAX, EVENTS_LIMIT_MAX)?;
        let token = match &r.next_token {
            Some(token) => Some(decode_token(token).ok_or_else(bad_token)?),
            None => None,
        };
        let (forward, after) = match token {
            Some(('f', key)) => (true, Some(key)),
            Some((_, key)) => (false, Some(key)),
            None => (r.start_from_head == Some(true), None),
        };
        let everything = Pattern::All;
        let found = self
            .store
            .query(&EventQuery {
                group: &group,
                streams: Some(vec![stream]),
                stream_prefix: None,
                start_ms: r.start_time,
                end_ms: r.end_time,
                after,
                forward,
                limit,
                pattern: &everything,
                scan_budget_bytes: u64::MAX,
                response_budget_bytes: RESPONSE_MAX_BYTES,
                now_ms,
            })
            .map_err(not_found)?;
        let mut events = found.events;
        if !forward {
            events.reverse();
        }
        let (next_forward, next_backward) = match (events.first(), events.last()) {
            (Some(first), Some(last)) => {
                (encode_token('f', last.key), encode_token('b', first.key))
            }
            _ => match (token, &r.next_token) {
                (Some(_), Some(passed)) => {
                    let key = token.map_or(START_KEY, |(_, key)| key);
                    if passed.starts_with("f/") {
                        (passed.clone(), encode_token('b', key))
                    } else {
                        (encode_token('f', key), passed.clone())
                    }
                }
                _ => (encode_token('f', START_KEY), encode_token('b', START_KEY)),
            },
        };
        Ok(wire::GetLogEventsResponse {
            events: Some(
                events
                    .into_iter()
                    .map(|event| wire::OutputLogEvent {
                        timestamp: Some(event.key.timestamp),
                        message: Some(event.message),
                        ingestion_time: Some(event.ingestion_ms),
                    })
                    .collect(),
            ),
            next_forward_token: Some(next_forward),
            next_backward_token: Some(next_backward),
        })
    }

    fn filter_events(
        &self,
        r: wire::FilterLogEventsRequest,
        now_ms: i64,
    ) -> Result<wire::FilterLogEventsResponse, ApiError> {
        let group = self.group_from_identifier(r.log_group_name, r.log_group_identifier)?;
        if r.log_stream_names.is_some() && r.log_stream_name_prefix.is_some() {
            return Err(invalid(
                "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.",
            ));
        }
        if let Some(names) = &r.log_stream_names {
            if names.is_empty() || names.len() > FILTER_STREAMS_MAX {
                return Err(validation(
                    "logStreamNames",
                    "logStreamNames",
                    "Member must have length less than or equal to 100 and greater than or equal to 1",
                ));
            }
            for name in names {
                check_stream_name(name, "logStreamNames")?;
            }
        }
        if let Some(prefix) = &r.log_stream_name_prefix {
            check_stream_name(prefix, "logStreamNamePrefix")?;
        }
        for (value, member) in [(r.start_time, "startTime"), (r.end_time, "endTime")] {
            if let Some(value) = value.filter(|v| *v < 0) {
                return Err(validation(
                    &value.to_string(),
                    member,
                    "Member must have value greater than or equal to 0",
                ));
            }
        }
        let limit = check_limit(r.limit, EVENTS_LIMIT_MAX, EVENTS_LIMIT_MAX)?;
        let pattern = Pattern::parse(r.filter_pattern.as_deref().unwrap_or_default())
            .map_err(|error| invalid(format!("Invalid filter pattern: {error}")))?;
        let after = match &r.next_token {
            Some(token) => match decode_token(token) {
                Some(('f', key)) => Some(key),
                _ => return Err(bad_token()),
            },
            None => None,
        };
        let found = self
            .store
            .query(&EventQuery {
                group: &group,
                streams: r.log_stream_names,
                stream_prefix: r.log_stream_name_prefix,
                start_ms: r.start_time,
                end_ms: r.end_time,
                after,
                forward: true,
                limit,
                pattern: &pattern,
                scan_budget_bytes: FILTER_SCAN_MAX_BYTES,
                response_budget_bytes: RESPONSE_MAX_BYTES,
                now_ms,
            })
            .map_err(not_found)?;
        Ok(wire::FilterLogEventsResponse {
            events: Some(
                found
                    .events
                    .into_iter()
                    .map(|event| wire::FilteredLogEvent {
                        event_id: Some(event.key.event_id()),
                        ingestion_time: Some(event.ingestion_ms),
                        log_stream_name: Some(event.stream_name),
                        message: Some(event.message),
                        timestamp: Some(event.key.timestamp),
                    })
                    .collect(),
            ),
            searched_log_streams: Some(
                found
                    .searched_streams
                    .into_iter()
                    .take(FILTER_STREAMS_MAX)
                    .map(|name| wire::SearchedLogStream {
                        log_stream_name: Some(name),
                        searched_completely: Some(found.resume.is_none()),
                    })
                    .collect(),
            ),
            next_token: found.resume.map(|key| encode_token('f', key)),
        })
    }
}

fn sequence_token(next_seq: u64) -> String {
    format!("{:056}", next_seq)
}

/// Checks a PutLogEvents batch against AWS's limits; returns its events.
pub fn check_batch(input: &[wire::InputLogEvent]) -> Result<Vec<(i64, &str)>, ApiError> {
    if input.is_empty() {
        return Err(validation(
            "[]",
            "logEvents",
            "Member must have length greater than or equal to 1",
        ));
    }
    if input.len() > BATCH_MAX_EVENTS {
        return Err(validation(
            &format!("{} events", input.len()),
            "logEvents",
            &format!("Member must have length less than or equal to {BATCH_MAX_EVENTS}"),
        ));
    }
    let mut events = Vec::with_capacity(input.len());
    let mut total_bytes = 0usize;
    for (index, event) in input.iter().enumerate() {
        let member = format!("logEvents.{}.member", index + 1);
        let timestamp = required(event.timestamp, &format!("{member}.timestamp"))?;
        let message = required(event.message.as_deref(), &format!("{member}.message"))?;
        if message.is_empty() {
            return Err(validation(
                "",
                &format!("{member}.message"),
                "Member must have length greater than or equal to 1",
            ));
        }
        if timestamp < 0 {
            return Err(validation(
                &timestamp.to_string(),
                &format!("{member}.timestamp"),
                "Member must have value greater than or equal to 0",
            ));
        }
        let size = message.len() + EVENT_OVERHEAD_BYTES;
        if size > EVENT_MAX_BYTES {
            return Err(invalid(format!(
                "Log event too large: {size} bytes exceeds limit of {EVENT_MAX_BYTES}"
            )));
        }
        total_bytes += size;
        events.push((timestamp, message));
    }
    if total_bytes > BATCH_MAX_BYTES {
        return Err(invalid(format!(
            "Upload too large: {total_bytes} bytes exceeds limit of {BATCH_MAX_BYTES}"
        )));
    }
    if events.windows(2).any(|pair| pair[1].0 < pair[0].0) {
        return Err(invalid(
            "Log events in a single PutLogEvents request must be in chronological order.",
        ));
    }
    let span = events[events.len() - 1].0 - events[0].0;
    if span > BATCH_SPAN_MAX_MS {
        return Err(invalid(
            "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
        ));
    }
    Ok(events)
}

/// Which events of a chronological batch are stored and which rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeSplit {
    pub accepted: std::ops::Range<usize>,
    pub too_new_start: Option<usize>,
    pub too_old_end: Option<usize>,
    pub expired_end: Option<usize>,
}

pub fn split_by_age(events: &[(i64, &str)], now_ms: i64, retention_days: Option<i32>) -> AgeSplit {
    let too_old_end = events.partition_point(|e| e.0 < now_ms - TOO_OLD_MS);
    let retention_cutoff = retention_days.map(|days| now_ms - i64::from(days) * 86_400_000);
    let expired_end = retention_cutoff.map_or(0, |cutoff| events.partition_point(|e| e.0 < cutoff));
    let too_new_start = events.partition_point(|e| e.0 <= now_ms + TOO_NEW_MS);
    let start = too_old_end.max(expired_end).min(too_new_start);
    AgeSplit {
        accepted: start..too_new_start,
        too_new_start: (too_new_start < events.len()).then_some(too_new_start),
        too_old_end: (too_old_end > 0).then_some(too_old_end),
        expired_end: (expired_end > 0).then_some(expired_end),
    }
}
