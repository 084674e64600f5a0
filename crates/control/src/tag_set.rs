//! Tags of CloudWatch alarms and Application Auto Scaling's scalable
//! targets: one key-value map per resource under AWS's common tagging rules
//! (at most 50 tags, keys of 1 to 128 characters outside the reserved `aws:`
//! prefix, values up to 256). Each service words a [`TagProblem`] in its
//! own error. Pure.

use std::collections::BTreeMap;

/// Most tags one resource may carry.
pub const TAGS_MAX: usize = 50;
const KEY_LENGTH_MAX: usize = 128;
const VALUE_LENGTH_MAX: usize = 256;
/// Keys of tags AWS itself sets; users may not set or remove them.
const RESERVED_PREFIX: &str = "aws:";

pub type TagMap = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TagProblem {
    #[error("a resource can have at most {TAGS_MAX} tags; this request would leave it {count}")]
    TooMany { count: usize },
    #[error("tag key {key:?} must be 1 to {KEY_LENGTH_MAX} characters")]
    KeyLength { key: String },
    #[error("tag key {key:?} uses the reserved prefix {RESERVED_PREFIX}")]
    Reserved { key: String },
    #[error("tag value for key {key:?} is longer than {VALUE_LENGTH_MAX} characters")]
    ValueLength { key: String },
}

fn check_key(key: &str) -> Result<(), TagProblem> {
    if key.is_empty() || key.chars().count() > KEY_LENGTH_MAX {
        return Err(TagProblem::KeyLength {
            key: key.to_owned(),
        });
    }
    if key.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
        return Err(TagProblem::Reserved {
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// `current` with `incoming` set over it (same keys replaced), or the first
/// problem; `current` is unchanged on a problem.
pub fn with_tags<'a>(
    current: &TagMap,
    incoming: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<TagMap, TagProblem> {
    let mut next = current.clone();
    for (key, value) in incoming {
        check_key(key)?;
        if value.chars().count() > VALUE_LENGTH_MAX {
            return Err(TagProblem::ValueLength {
                key: key.to_owned(),
            });
        }
        next.insert(key.to_owned(), value.to_owned());
    }
    if next.len() > TAGS_MAX {
        return Err(TagProblem::TooMany { count: next.len() });
    }
    Ok(next)
}

/// `current` without `keys`; keys it lacks are ignored, as AWS does.
pub fn without_tags<'a>(
    current: &TagMap,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<TagMap, TagProblem> {
    let mut next = current.clone();
    for key in keys {
        check_key(key)?;
        next.remove(key);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_set_over_and_removed() {
        let tagged =
            with_tags(&TagMap::new(), [("team", "web"), ("env", "prod")]).expect("valid tags");
        let tagged = with_tags(&tagged, [("env", "test")]).expect("valid tags");
        assert_eq!(tagged.get("env").map(String::as_str), Some("test"));
        let untagged = without_tags(&tagged, ["env", "absent"]).expect("valid tags");
        assert_eq!(untagged.keys().collect::<Vec<_>>(), ["team"]);
    }

    #[test]
    fn bad_tags_are_refused_by_name() {
        let empty = TagMap::new();
        let long_key = "k".repeat(129);
        let long_value = "v".repeat(257);
        let cases: [(&str, &str, TagProblem); 4] = [
            ("", "v", TagProblem::KeyLength { key: String::new() }),
            (
                &long_key,
                "v",
                TagProblem::KeyLength {
                    key: long_key.clone(),
                },
            ),
            (
                "AWS:owner",
                "v",
                TagProblem::Reserved {
                    key: "AWS:owner".into(),
                },
            ),
            (
                "k",
                &long_value,
                TagProblem::ValueLength { key: "k".into() },
            ),
        ];
        for (key, value, problem) in cases {
            assert_eq!(with_tags(&empty, [(key, value)]), Err(problem));
        }
        assert!(without_tags(&empty, ["aws:cloudformation:stack-name"]).is_err());
    }

    #[test]
    fn the_fifty_first_tag_is_refused_counting_what_is_there() {
        let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let full =
            with_tags(&TagMap::new(), keys.iter().map(|k| (k.as_str(), ""))).expect("valid tags");
        assert_eq!(with_tags(&full, [("k0", "again")]).map(|t| t.len()), Ok(50));
        assert_eq!(
            with_tags(&full, [("k50", "")]),
            Err(TagProblem::TooMany { count: 51 })
        );
    }
}
