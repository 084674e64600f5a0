//! ARN patterns, as `Resource` elements and the `Arn*` conditions match them.
//!
//! An ARN has six colon-separated parts (`arn:partition:service:region:
//! account:resource`; the resource part may itself hold colons). A pattern
//! with six parts matches part by part, so a wildcard never reaches across a
//! colon before the resource part, and matches anywhere within it, slashes
//! and colons included (`task/*/abc`, `log-group:/ecs/*`). A shorter pattern
//! (IAM accepts `arn:aws:fdsasf`) matches only a text as short.
//! Matching is case-sensitive, as AWS's is for ARNs.

use crate::pattern::{wildcard_match, Pattern, Token};

const ARN_PARTS: usize = 6;

/// Whether `pattern` (as tokens) matches the ARN `text`.
pub(crate) fn arn_matches(pattern: &Pattern, text: &str) -> bool {
    if pattern.matches_everything() {
        return true;
    }
    let tokens = pattern.tokens();
    let pattern_colons = tokens.iter().filter(|t| **t == Token::Byte(b':')).count();
    if pattern_colons < ARN_PARTS - 1 {
        // Wildcards cannot stand in for the colons between parts.
        return text.matches(':').count() < ARN_PARTS - 1 && pattern.matches(text);
    }
    let mut text_parts = text.splitn(ARN_PARTS, ':');
    let mut rest = tokens;
    for index in 0..ARN_PARTS {
        let Some(text_part) = text_parts.next() else {
            return false;
        };
        let pattern_part = if index == ARN_PARTS - 1 {
            rest
        } else {
            let end = rest
                .iter()
                .position(|t| *t == Token::Byte(b':'))
                .unwrap_or(rest.len());
            let part = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or(&[]);
            part
        };
        if !wildcard_match(pattern_part, text_part.as_bytes(), false) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::arn_matches;
    use crate::pattern::Pattern;

    fn matches(pattern: &str, arn: &str) -> bool {
        arn_matches(&Pattern::new(pattern, false), arn)
    }

    #[test]
    fn part_by_part() {
        assert!(matches(
            "arn:aws:ecs:*:*:task/*/abc",
            "arn:aws:ecs:us-east-1:123456789012:task/c1/abc"
        ));
        assert!(matches(
            "arn:aws:logs:*:*:log-group:/ecs/*",
            "arn:aws:logs:eu-west-1:1:log-group:/ecs/web:log-stream:x"
        ));
        assert!(!matches(
            "arn:aws:ecs:*:task/*",
            "arn:aws:ecs:us-east-1:123:task/x"
        ));
        assert!(!matches(
            "arn:aws:ecs:us-*:*:*",
            "arn:aws:ecs:eu-west-1:1:cluster/a"
        ));
        assert!(!matches(
            "arn:aws:ECS:*:*:*",
            "arn:aws:ecs:eu-west-1:1:cluster/a"
        ));
        assert!(matches(
            "arn:aws:ecs:*:*:task-definition/web:*",
            "arn:aws:ecs:r:1:task-definition/web:12"
        ));
        assert!(!matches(
            "arn:aws:ecs:*:*:task-definition/web:*",
            "arn:aws:ecs:r:1:task-definition/webapp:12"
        ));
        assert!(matches("*", "anything"));
        assert!(!matches("arn:aws:s3:::bucket/*", "not-an-arn"));
    }
}
