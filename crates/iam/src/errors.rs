//! IAM's errors in its own words, and the checks of names, paths and tags
//! its model states.

use flotilla_iam_policy::PolicyError;
use flotilla_types::ApiError;

pub fn no_such_entity(message: String) -> ApiError {
    ApiError::new("NoSuchEntityException", 404, message)
}

pub fn no_such_user(name: &str) -> ApiError {
    no_such_entity(format!("The user with name {name} cannot be found."))
}

pub fn no_such_role(name: &str) -> ApiError {
    no_such_entity(format!("The role with name {name} cannot be found."))
}

pub fn no_such_group(name: &str) -> ApiError {
    no_such_entity(format!("The group with name {name} cannot be found."))
}

pub fn no_such_policy(arn: &str) -> ApiError {
    no_such_entity(format!("Policy {arn} does not exist or is not attachable."))
}

pub fn already_exists(message: String) -> ApiError {
    ApiError::new("EntityAlreadyExistsException", 409, message)
}

pub fn delete_conflict(message: &str) -> ApiError {
    ApiError::new("DeleteConflictException", 409, message)
}

pub fn limit_exceeded(message: String) -> ApiError {
    ApiError::new("LimitExceededException", 409, message)
}

pub fn invalid_input(message: String) -> ApiError {
    ApiError::new("InvalidInputException", 400, message)
}

pub fn validation(message: String) -> ApiError {
    ApiError::new("ValidationError", 400, message)
}

/// A policy document IAM refuses: `MalformedPolicyDocument` naming the
/// problem, or `LimitExceeded` for a size quota.
pub fn policy_refused(error: &PolicyError) -> ApiError {
    match error.code() {
        "LimitExceeded" => limit_exceeded(error.to_string()),
        "ValidationError" => validation(error.to_string()),
        _ => ApiError::new("MalformedPolicyDocumentException", 400, error.to_string()),
    }
}

/// A member the model marks required, as IAM names it (`userName`).
pub fn missing(member: &str) -> ApiError {
    validation(format!(
        "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
        lower_first(member)
    ))
}

fn lower_first(member: &str) -> String {
    let mut chars = member.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn constraint(member: &str, value: &str, constraint: &str) -> ApiError {
    validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
    ))
}

/// The characters IAM allows in user, role, group, instance profile and
/// policy names: `[\w+=,.@-]+`.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// A name within `max_chars` of IAM's characters.
pub fn check_name(member: &str, value: &str, max_chars: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > max_chars {
        return Err(constraint(
            member,
            value,
            &format!("Member must have length less than or equal to {max_chars}"),
        ));
    }
    if !value.chars().all(is_name_char) {
        return Err(constraint(
            member,
            value,
            "Member must satisfy regular expression pattern: [\\w+=,.@-]+",
        ));
    }
    Ok(())
}

pub const USER_NAME_CHARS_MAX: usize = 64;
pub const ROLE_NAME_CHARS_MAX: usize = 64;
pub const GROUP_NAME_CHARS_MAX: usize = 128;
pub const POLICY_NAME_CHARS_MAX: usize = 128;
pub const INSTANCE_PROFILE_NAME_CHARS_MAX: usize = 128;
pub const PATH_CHARS_MAX: usize = 512;
pub const DESCRIPTION_CHARS_MAX: usize = 1000;
/// Tags on one user, role, policy or instance profile.
pub const TAGS_MAX: usize = 50;
pub const TAG_KEY_CHARS_MAX: usize = 128;
pub const TAG_VALUE_CHARS_MAX: usize = 256;

/// `/` or `/a/b/`: printable ASCII between slashes.
pub fn check_path(member: &str, value: &str) -> Result<(), ApiError> {
    let shaped = value == "/"
        || (value.len() >= 2
            && value.starts_with('/')
            && value.ends_with('/')
            && value.chars().all(|c| ('!'..='~').contains(&c)));
    if !shaped || value.len() > PATH_CHARS_MAX {
        return Err(constraint(
            member,
            value,
            "Member must satisfy regular expression pattern: (\\u002F)|(\\u002F[\\u0021-\\u007E]+\\u002F)",
        ));
    }
    Ok(())
}

pub fn check_description(value: &str) -> Result<(), ApiError> {
    if value.chars().count() > DESCRIPTION_CHARS_MAX {
        return Err(constraint(
            "description",
            value,
            &format!("Member must have length less than or equal to {DESCRIPTION_CHARS_MAX}"),
        ));
    }
    Ok(())
}

/// Tags as given, checked, merged into `existing` (a key given again
/// replaces its value), and the total held to IAM's quota.
pub fn merge_tags(
    existing: &mut Vec<(String, String)>,
    given: &[flotilla_aws::iam::Tag],
) -> Result<(), ApiError> {
    for (index, tag) in given.iter().enumerate() {
        let Some(key) = tag.key.as_deref() else {
            return Err(missing(&format!("tags.{}.member.key", index + 1)));
        };
        let Some(value) = tag.value.as_deref() else {
            return Err(missing(&format!("tags.{}.member.value", index + 1)));
        };
        if key.is_empty() || key.chars().count() > TAG_KEY_CHARS_MAX {
            return Err(constraint(
                &format!("tags.{}.member.key", index + 1),
                key,
                &format!("Member must have length less than or equal to {TAG_KEY_CHARS_MAX}"),
            ));
        }
        if value.chars().count() > TAG_VALUE_CHARS_MAX {
            return Err(constraint(
                &format!("tags.{}.member.value", index + 1),
                value,
                &format!("Member must have length less than or equal to {TAG_VALUE_CHARS_MAX}"),
            ));
        }
        match existing.iter_mut().find(|(held, _)| held == key) {
            Some(held) => held.1 = value.to_owned(),
            None => existing.push((key.to_owned(), value.to_owned())),
        }
    }
    if existing.len() > TAGS_MAX {
        return Err(limit_exceeded(format!(
            "The number of tags has reached the maximum limit of {TAGS_MAX}."
        )));
    }
    Ok(())
}

pub fn wire_tags(tags: &[(String, String)]) -> Vec<flotilla_aws::iam::Tag> {
    tags.iter()
        .map(|(key, value)| flotilla_aws::iam::Tag {
            key: Some(key.clone()),
            value: Some(value.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_follow_the_model() {
        assert!(check_name("userName", "alice.smith@example-1", 64).is_ok());
        let refused = check_name("userName", "alice smith", 64).expect_err("space");
        assert_eq!(refused.code, "ValidationError");
        assert!(
            refused.message.contains("'alice smith' at 'userName'"),
            "{}",
            refused.message
        );
        assert!(check_name("userName", &"a".repeat(65), 64).is_err());
        assert!(check_name("userName", "", 64).is_err());
        assert!(check_path("path", "/").is_ok());
        assert!(check_path("path", "/team/a/").is_ok());
        assert!(check_path("path", "team/").is_err());
        assert!(check_path("path", "/team").is_err());
        assert!(check_path("path", "/te am/").is_err());
    }

    #[test]
    fn tags_merge_and_are_bounded() {
        let mut tags = vec![("team".to_owned(), "a".to_owned())];
        let tag = |key: &str, value: &str| flotilla_aws::iam::Tag {
            key: Some(key.to_owned()),
            value: Some(value.to_owned()),
        };
        merge_tags(&mut tags, &[tag("team", "b"), tag("env", "prod")]).expect("valid");
        assert_eq!(
            tags,
            vec![
                ("team".to_owned(), "b".to_owned()),
                ("env".to_owned(), "prod".to_owned())
            ]
        );
        let many: Vec<_> = (0..TAGS_MAX)
            .map(|index| tag(&format!("k{index}"), "v"))
            .collect();
        let refused = merge_tags(&mut tags, &many).expect_err("too many");
        assert_eq!(refused.code, "LimitExceededException");
    }
}
