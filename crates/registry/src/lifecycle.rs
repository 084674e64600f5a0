//! Lifecycle policies: ECR's rules for expiring images, parsed and checked
//! as ECR checks them, and evaluated as a pure function of the images and
//! the time.
//!
//! Evaluation follows ECR's rules: rules run in ascending `rulePriority`; an
//! image is expired by at most one rule; an image whose tags match a rule's
//! selection can be expired by no rule of lower priority (though such rules
//! still count it).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::digest::Digest;

/// Longest policy text ECR accepts.
pub const POLICY_MAX_CHARS: usize = 30_720;
/// Most rules one policy may hold.
pub const RULES_MAX: usize = 50;
/// Most prefixes or patterns one rule may list.
pub const TAG_SELECTORS_MAX: usize = 100;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Keep the newest N images the rule selects.
    ImagesMoreThan(u64),
    /// Expire selected images pushed more than N days ago.
    DaysSincePushed(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub priority: i64,
    pub tag_status: TagStatus,
    pub tag_prefixes: Vec<String>,
    /// Tag patterns with `*` wildcards.
    pub tag_patterns: Vec<String>,
    pub count: Count,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// In ascending priority value: the first rule is the most important.
    pub rules: Vec<Rule>,
}

/// What evaluation needs to know of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    pub digest: Digest,
    pub tags: Vec<String>,
    pub pushed_at_ms: u64,
}

/// An image a policy expires, and the rule that does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub digest: Digest,
    pub rule_priority: i64,
}

/// Parses and checks a policy's text; the error is a message for an
/// InvalidParameterException.
pub fn parse(text: &str) -> Result<Policy, String> {
    if text.len() > POLICY_MAX_CHARS {
        return Err(format!(
            "the lifecycle policy is longer than {POLICY_MAX_CHARS} characters"
        ));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|error| format!("the lifecycle policy is not JSON: {error}"))?;
    let rules = value
        .get("rules")
        .and_then(Value::as_array)
        .ok_or("the lifecycle policy must have a 'rules' array")?;
    if rules.is_empty() || rules.len() > RULES_MAX {
        return Err(format!(
            "the lifecycle policy must have 1 to {RULES_MAX} rules"
        ));
    }
    let mut parsed = rules
        .iter()
        .map(parse_rule)
        .collect::<Result<Vec<_>, _>>()?;
    parsed.sort_by_key(|rule| rule.priority);
    let mut seen = BTreeSet::new();
    for rule in &parsed {
        if !seen.insert(rule.priority) {
            return Err(format!(
                "rulePriority {} is used by more than one rule",
                rule.priority
            ));
        }
    }
    let last = parsed.len() - 1;
    if parsed
        .iter()
        .take(last)
        .any(|rule| rule.tag_status == TagStatus::Any)
    {
        return Err(
            "a rule with tagStatus 'any' must have the highest rulePriority value".to_owned(),
        );
    }
    Ok(Policy { rules: parsed })
}

fn parse_rule(value: &Value) -> Result<Rule, String> {
    let priority = value
        .get("rulePriority")
        .and_then(Value::as_i64)
        .filter(|p| *p >= 1)
        .ok_or("every rule needs a rulePriority, a positive integer")?;
    let at = |message: &str| format!("rule {priority}: {message}");
    let selection = value
        .get("selection")
        .and_then(Value::as_object)
        .ok_or_else(|| at("selection is missing"))?;
    let action = value
        .get("action")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str);
    if action != Some("expire") {
        return Err(at("action.type must be 'expire'"));
    }
    let tag_status = match selection.get("tagStatus").and_then(Value::as_str) {
        Some("tagged") => TagStatus::Tagged,
        Some("untagged") => TagStatus::Untagged,
        Some("any") => TagStatus::Any,
        _ => return Err(at("selection.tagStatus must be tagged, untagged or any")),
    };
    let strings = |member: &str| -> Result<Vec<String>, String> {
        match selection.get(member) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= TAG_SELECTORS_MAX => {
                items
                    .iter()
                    .map(|item| item.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| at(&format!("selection.{member} must hold non-empty strings")))
            }
            Some(_) => Err(at(&format!(
                "selection.{member} must be a list of 1 to {TAG_SELECTORS_MAX} strings"
            ))),
        }
    };
    let tag_prefixes = strings("tagPrefixList")?;
    let tag_patterns = strings("tagPatternList")?;
    match tag_status {
        TagStatus::Tagged if tag_prefixes.is_empty() == tag_patterns.is_empty() => {
            return Err(at(
                "tagStatus 'tagged' needs exactly one of tagPrefixList and tagPatternList",
            ))
        }
        TagStatus::Untagged | TagStatus::Any
            if !(tag_prefixes.is_empty() && tag_patterns.is_empty()) =>
        {
            return Err(at("tag lists apply only to tagStatus 'tagged'"))
        }
        _ => {}
    }
    let number = selection
        .get("countNumber")
        .and_then(Value::as_u64)
        .filter(|n| *n >= 1)
        .ok_or_else(|| at("selection.countNumber must be a positive integer"))?;
    let unit = selection.get("countUnit").and_then(Value::as_str);
    let count = match selection.get("countType").and_then(Value::as_str) {
        Some("imageCountMoreThan") if unit.is_none() => Count::ImagesMoreThan(number),
        Some("imageCountMoreThan") => {
            return Err(at("countUnit does not apply to imageCountMoreThan"))
        }
        Some("sinceImagePushed") if unit == Some("days") => Count::DaysSincePushed(number),
        Some("sinceImagePushed") => return Err(at("sinceImagePushed needs countUnit 'days'")),
        _ => {
            return Err(at(
                "selection.countType must be imageCountMoreThan or sinceImagePushed",
            ))
        }
    };
    Ok(Rule {
        priority,
        tag_status,
        tag_prefixes,
        tag_patterns,
        count,
    })
}

impl Rule {
    /// Whether the image's tags meet the rule's tagging requirements.
    pub fn selects(&self, tags: &[String]) -> bool {
        match self.tag_status {
            TagStatus::Any => true,
            TagStatus::Untagged => tags.is_empty(),
            // Every listed prefix (or pattern) must be met by some tag.
            TagStatus::Tagged => {
                self.tag_prefixes
                    .iter()
                    .all(|prefix| tags.iter().any(|tag| tag.starts_with(prefix.as_str())))
                    && self
                        .tag_patterns
                        .iter()
                        .all(|pattern| tags.iter().any(|tag| wildcard_match(pattern, tag)))
            }
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pieces: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = pieces.split_first().unwrap_or((&"", &[]));
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for piece in middle {
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// The images `policy` expires at `now_ms`.
pub fn evaluate(policy: &Policy, images: &[ImageFacts], now_ms: u64) -> Vec<Expiry> {
    let mut protected: BTreeSet<&Digest> = BTreeSet::new();
    let mut expired: Vec<Expiry> = Vec::new();
    for rule in &policy.rules {
        let mut selected: Vec<&ImageFacts> = images
            .iter()
            .filter(|image| rule.selects(&image.tags))
            .collect();
        // Newest first; the digest breaks ties so that the outcome never
        // depends on the order the images were listed in.
        selected.sort_by(|a, b| {
            b.pushed_at_ms
                .cmp(&a.pushed_at_ms)
                .then_with(|| a.digest.cmp(&b.digest))
        });
        let candidates: Vec<&ImageFacts> = match rule.count {
            Count::ImagesMoreThan(keep) => selected
                .iter()
                .skip(usize::try_from(keep).unwrap_or(usize::MAX))
                .copied()
                .collect(),
            Count::DaysSincePushed(days) => {
                let cutoff = now_ms.saturating_sub(days.saturating_mul(DAY_MS));
                selected
                    .iter()
                    .filter(|image| image.pushed_at_ms < cutoff)
                    .copied()
                    .collect()
            }
        };
        for image in candidates {
            let already = expired.iter().any(|e| e.digest == image.digest);
            if !already && !protected.contains(&image.digest) {
                expired.push(Expiry {
                    digest: image.digest.clone(),
                    rule_priority: rule.priority,
                });
            }
        }
        protected.extend(selected.iter().map(|image| &image.digest));
    }
    expired
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn image(n: u8, tags: &[&str], pushed_at_ms: u64) -> ImageFacts {
        ImageFacts {
            digest: Digest::of(&[n]),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            pushed_at_ms,
        }
    }

    fn rule(priority: i64, selection: &str) -> String {
        format!(
            r#"{{"rulePriority":{priority},"selection":{selection},"action":{{"type":"expire"}}}}"#
        )
    }

    fn policy(rules: &[String]) -> Policy {
        parse(&format!(r#"{{"rules":[{}]}}"#, rules.join(","))).unwrap()
    }

    fn expired(policy: &Policy, images: &[ImageFacts], now_ms: u64) -> Vec<(u8, i64)> {
        evaluate(policy, images, now_ms)
            .into_iter()
            .map(|e| {
                let n = images.iter().position(|i| i.digest == e.digest).unwrap() as u8;
                (n, e.rule_priority)
            })
            .collect()
    }

    #[test]
    fn count_more_than_keeps_the_newest() {
        let images = [
            image(0, &["v1"], 100),
            image(1, &["v2"], 200),
            image(2, &["v3"], 300),
            image(3, &[], 50),
        ];
        let keep_two = policy(&[rule(
            1,
            r#"{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":2}"#,
        )]);
        assert_eq!(expired(&keep_two, &images, 0), [(0, 1)]);
        let untagged = policy(&[rule(
            1,
            r#"{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1}"#,
        )]);
        assert_eq!(expired(&untagged, &images, 0), []);
        let any = policy(&[rule(
            1,
            r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1}"#,
        )]);
        assert_eq!(expired(&any, &images, 0), [(1, 1), (0, 1), (3, 1)]);
    }

    #[test]
    fn since_pushed_counts_days() {
        let day = DAY_MS;
        let images = [
            image(0, &[], 0),
            image(1, &[], 5 * day),
            image(2, &["prod"], 0),
        ];
        let p = policy(&[rule(
            1,
            r#"{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":3}"#,
        )]);
        assert_eq!(expired(&p, &images, 6 * day), [(0, 1)]);
        assert_eq!(expired(&p, &images, 2 * day), []);
    }

    #[test]
    fn higher_priority_rules_protect_what_they_select() {
        // Rule 1 keeps 5 prod images; rule 2 would expire everything beyond
        // one image, but cannot touch what rule 1 selected.
        let images = [
            image(0, &["prod-1"], 100),
            image(1, &["prod-2"], 200),
            image(2, &["dev"], 300),
            image(3, &["dev2"], 50),
        ];
        let p = policy(&[
            rule(
                1,
                r#"{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":5}"#,
            ),
            rule(
                2,
                r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1}"#,
            ),
        ]);
        assert_eq!(expired(&p, &images, 0), [(3, 2)]);
    }

    #[test]
    fn prefixes_and_patterns_must_all_be_met() {
        let r = &policy(&[rule(1, r#"{"tagStatus":"tagged","tagPrefixList":["prod","v"],"countType":"imageCountMoreThan","countNumber":1}"#)]).rules[0];
        assert!(r.selects(&["prod".into(), "v1".into()]));
        assert!(!r.selects(&["prod".into()]));
        let r = &policy(&[rule(1, r#"{"tagStatus":"tagged","tagPatternList":["prod*-v*"],"countType":"imageCountMoreThan","countNumber":1}"#)]).rules[0];
        assert!(r.selects(&["prod-eu-v2".into()]));
        assert!(!r.selects(&["dev-v2".into()]));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*c", "abc"));
        assert!(!wildcard_match("a*c", "ab"));
        assert!(!wildcard_match("ab*b", "ab"));
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let any = r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1}"#;
        let cases = [
            ("not json".to_owned(), "not JSON"),
            (r#"{"rules":[]}"#.to_owned(), "1 to 50 rules"),
            (format!(r#"{{"rules":[{}]}}"#, rule(0, any)), "rulePriority"),
            (
                format!(
                    r#"{{"rules":[{},{}]}}"#,
                    rule(1, any),
                    rule(
                        2,
                        r#"{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1}"#
                    )
                ),
                "highest rulePriority",
            ),
            (
                format!(r#"{{"rules":[{},{}]}}"#, rule(2, any), rule(2, any)),
                "more than one rule",
            ),
            (
                format!(
                    r#"{{"rules":[{}]}}"#,
                    rule(
                        1,
                        r#"{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1}"#
                    )
                ),
                "exactly one of",
            ),
            (
                format!(
                    r#"{{"rules":[{}]}}"#,
                    rule(
                        1,
                        r#"{"tagStatus":"untagged","countType":"sinceImagePushed","countNumber":1}"#
                    )
                ),
                "countUnit",
            ),
            (
                format!(
                    r#"{{"rules":[{}]}}"#,
                    rule(
                        1,
                        r#"{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":0}"#
                    )
                ),
                "countNumber",
            ),
            (
                format!(
                    r#"{{"rules":[{}]}}"#,
                    rule(
                        1,
                        r#"{"tagStatus":"sometimes","countType":"imageCountMoreThan","countNumber":1}"#
                    )
                ),
                "tagStatus",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error} lacks {expected}");
        }
    }
}
