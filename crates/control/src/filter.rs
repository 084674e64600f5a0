//! A subset of ECS's Cluster Query Language, over container instance
//! attributes: enough for ListContainerInstances' `filter` and for
//! `memberOf` placement constraints until the full language arrives.
//!
//! ```text
//! expression := clause ( "and" clause )*
//! clause     := "attribute:" NAME ( "==" VALUE | "!=" VALUE | "exists" | "!exists"
//!                                 | "in" "[" VALUE ( "," VALUE )* "]" | "not_in" "[" ... "]" )
//! ```
//!
//! Anything else is refused with InvalidParameterException rather than
//! guessed at, so that a filter never silently means something else.

use flotilla_types::ApiError;

/// Longest expression accepted, as ECS bounds CQL expressions.
pub const EXPRESSION_LENGTH_MAX: usize = 2_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expression {
    clauses: Vec<Clause>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Clause {
    Equals { name: String, value: String },
    NotEquals { name: String, value: String },
    In { name: String, values: Vec<String> },
    NotIn { name: String, values: Vec<String> },
    Exists { name: String },
    Absent { name: String },
}

impl Expression {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        if text.len() > EXPRESSION_LENGTH_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "filter expression is longer than {EXPRESSION_LENGTH_MAX} characters"
            )));
        }
        let clauses = split_and(text)
            .into_iter()
            .map(|clause| parse_clause(clause.trim(), text))
            .collect::<Result<Vec<_>, _>>()?;
        if clauses.is_empty() {
            return Err(unsupported(text));
        }
        Ok(Self { clauses })
    }

    /// Whether attributes (name, value) satisfy every clause.
    pub fn matches(&self, attributes: &[(String, Option<String>)]) -> bool {
        let value_of = |name: &str| {
            attributes
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_deref())
        };
        self.clauses.iter().all(|clause| match clause {
            Clause::Equals { name, value } => value_of(name) == Some(Some(value.as_str())),
            Clause::NotEquals { name, value } => value_of(name) != Some(Some(value.as_str())),
            Clause::In { name, values } => {
                matches!(value_of(name), Some(Some(found)) if values.iter().any(|v| v == found))
            }
            Clause::NotIn { name, values } => {
                !matches!(value_of(name), Some(Some(found)) if values.iter().any(|v| v == found))
            }
            Clause::Exists { name } => value_of(name).is_some(),
            Clause::Absent { name } => value_of(name).is_none(),
        })
    }
}

fn unsupported(text: &str) -> ApiError {
    ApiError::invalid_parameter(format!(
        "Unsupported filter expression {text:?}: this server understands attribute:NAME followed by \
         == VALUE, != VALUE, in [V1, V2], not_in [...], exists or !exists, joined by 'and'"
    ))
}

/// Splits on the word `and` outside brackets.
fn split_and(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        let at_word = depth == 0
            && text[index..].len() >= 5
            && text[index..index + 5].eq_ignore_ascii_case(" and ");
        if at_word {
            parts.push(&text[start..index]);
            index += 5;
            start = index;
            continue;
        }
        index += 1;
    }
    parts.push(&text[start..]);
    parts
}

fn parse_clause(clause: &str, whole: &str) -> Result<Clause, ApiError> {
    let rest = clause
        .strip_prefix("attribute:")
        .ok_or_else(|| unsupported(whole))?;
    let (name, rest) = match rest.find(|c: char| c.is_whitespace()) {
        Some(at) => (&rest[..at], rest[at..].trim()),
        None => return Err(unsupported(whole)),
    };
    if name.is_empty() {
        return Err(unsupported(whole));
    }
    let name = name.to_owned();
    let word_value = |operand: &str| -> Result<String, ApiError> {
        let value = operand.trim();
        if value.is_empty() || value.contains(char::is_whitespace) {
            return Err(unsupported(whole));
        }
        Ok(value.to_owned())
    };
    let list = |operand: &str| -> Result<Vec<String>, ApiError> {
        let inner = operand
            .trim()
            .strip_prefix('[')
            .and_then(|o| o.strip_suffix(']'))
            .ok_or_else(|| unsupported(whole))?;
        inner.split(',').map(&word_value).collect()
    };
    if rest == "exists" {
        Ok(Clause::Exists { name })
    } else if rest == "!exists" {
        Ok(Clause::Absent { name })
    } else if let Some(operand) = rest.strip_prefix("==") {
        Ok(Clause::Equals {
            name,
            value: word_value(operand)?,
        })
    } else if let Some(operand) = rest.strip_prefix("!=") {
        Ok(Clause::NotEquals {
            name,
            value: word_value(operand)?,
        })
    } else if let Some(operand) = rest.strip_prefix("not_in") {
        Ok(Clause::NotIn {
            name,
            values: list(operand)?,
        })
    } else if let Some(operand) = rest.strip_prefix("in") {
        Ok(Clause::In {
            name,
            values: list(operand)?,
        })
    } else {
        Err(unsupported(whole))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_match_attributes() {
        let attributes = vec![
            ("ecs.instance-type".to_owned(), Some("t2.small".to_owned())),
            (
                "ecs.availability-zone".to_owned(),
                Some("us-east-1a".to_owned()),
            ),
            ("ecs.capability.external".to_owned(), None),
        ];
        let cases = [
            ("attribute:ecs.instance-type == t2.small", true),
            ("attribute:ecs.instance-type==t2.small", false),
            ("attribute:ecs.instance-type == t2.large", false),
            ("attribute:ecs.instance-type != t2.large", true),
            ("attribute:ecs.capability.external exists", true),
            ("attribute:ecs.capability.external !exists", false),
            ("attribute:missing !exists", true),
            ("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]", true),
            ("attribute:ecs.availability-zone not_in [us-east-1a]", false),
            ("attribute:ecs.instance-type == t2.small and attribute:ecs.availability-zone == us-east-1b", false),
            ("attribute:ecs.instance-type == t2.small AND attribute:ecs.availability-zone == us-east-1a", true),
        ];
        for (text, expected) in cases {
            match Expression::parse(text) {
                Ok(expression) => assert_eq!(expression.matches(&attributes), expected, "{text}"),
                // A clause without spaces around its operator is not in the subset.
                Err(error) => {
                    assert!(!expected, "{text}: {error}");
                    assert_eq!(error.code, "InvalidParameterException");
                }
            }
        }
    }

    #[test]
    fn unknown_syntax_is_refused() {
        for text in [
            "",
            "runningTasksCount > 1",
            "attribute:x =~ t2.*",
            "attribute:x == a or attribute:y == b",
            "attribute:x in a",
        ] {
            let error = Expression::parse(text).expect_err(text);
            assert_eq!(error.code, "InvalidParameterException", "{text}");
        }
    }
}
