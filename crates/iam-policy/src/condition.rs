//! Condition operators and their evaluation.
//!
//! A statement's conditions all have to hold (operators and keys are
//! AND'ed); a key holds when the request's value matches any of the policy's
//! values (values are OR'ed). Key names are case-insensitive.
//!
//! A key the request lacks (or carries with no value): a positive operator
//! does not match, a negated one (`StringNotEquals`, `ArnNotLike`,
//! `NotIpAddress`, ...) does, any `...IfExists` form does, and `Null` is what
//! asks about it. `ForAllValues:` holds for a missing or empty set (every one
//! of no values matches) and `ForAnyValue:` does not. Without a set operator,
//! a key with several values matches a positive operator when any value
//! matches, and a negated operator when none does.

use std::net::IpAddr;

use crate::arn::arn_matches;
use crate::context::RequestContext;
use crate::document::{ConditionEntry, PolicyVersion};
use crate::time::parse_date_ms;
use crate::variables::Template;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetOperator {
    None,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BaseOperator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    BinaryEquals,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Null,
}

const BASE_OPERATORS: &[(&str, BaseOperator)] = &[
    ("StringEquals", BaseOperator::StringEquals),
    ("StringNotEquals", BaseOperator::StringNotEquals),
    (
        "StringEqualsIgnoreCase",
        BaseOperator::StringEqualsIgnoreCase,
    ),
    (
        "StringNotEqualsIgnoreCase",
        BaseOperator::StringNotEqualsIgnoreCase,
    ),
    ("StringLike", BaseOperator::StringLike),
    ("StringNotLike", BaseOperator::StringNotLike),
    ("NumericEquals", BaseOperator::NumericEquals),
    ("NumericNotEquals", BaseOperator::NumericNotEquals),
    ("NumericLessThan", BaseOperator::NumericLessThan),
    ("NumericLessThanEquals", BaseOperator::NumericLessThanEquals),
    ("NumericGreaterThan", BaseOperator::NumericGreaterThan),
    (
        "NumericGreaterThanEquals",
        BaseOperator::NumericGreaterThanEquals,
    ),
    ("DateEquals", BaseOperator::DateEquals),
    ("DateNotEquals", BaseOperator::DateNotEquals),
    ("DateLessThan", BaseOperator::DateLessThan),
    ("DateLessThanEquals", BaseOperator::DateLessThanEquals),
    ("DateGreaterThan", BaseOperator::DateGreaterThan),
    ("DateGreaterThanEquals", BaseOperator::DateGreaterThanEquals),
    ("Bool", BaseOperator::Bool),
    ("BinaryEquals", BaseOperator::BinaryEquals),
    ("IpAddress", BaseOperator::IpAddress),
    ("NotIpAddress", BaseOperator::NotIpAddress),
    ("ArnEquals", BaseOperator::ArnEquals),
    ("ArnLike", BaseOperator::ArnLike),
    ("ArnNotEquals", BaseOperator::ArnNotEquals),
    ("ArnNotLike", BaseOperator::ArnNotLike),
    ("Null", BaseOperator::Null),
];

impl BaseOperator {
    fn negated(self) -> bool {
        use BaseOperator::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | NumericNotEquals
                | DateNotEquals
                | NotIpAddress
                | ArnNotEquals
                | ArnNotLike
        )
    }
}

/// An operator as written: `[ForAnyValue:|ForAllValues:]Base[IfExists]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OperatorName {
    set: SetOperator,
    base: BaseOperator,
    if_exists: bool,
}

impl OperatorName {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (set, rest) = if let Some(rest) = text.strip_prefix("ForAnyValue:") {
            (SetOperator::ForAnyValue, rest)
        } else if let Some(rest) = text.strip_prefix("ForAllValues:") {
            (SetOperator::ForAllValues, rest)
        } else {
            (SetOperator::None, text)
        };
        let (if_exists, rest) = match rest.strip_suffix("IfExists") {
            Some(base) => (true, base),
            None => (false, rest),
        };
        let base = BASE_OPERATORS
            .iter()
            .find(|(name, _)| *name == rest)
            .map(|(_, base)| *base)?;
        // Null asks whether the key exists; qualifying it makes no sense.
        if base == BaseOperator::Null && (if_exists || set != SetOperator::None) {
            return None;
        }
        Some(OperatorName {
            set,
            base,
            if_exists,
        })
    }

    pub(crate) fn is_date(self) -> bool {
        use BaseOperator::*;
        matches!(
            self.base,
            DateEquals
                | DateNotEquals
                | DateLessThan
                | DateLessThanEquals
                | DateGreaterThan
                | DateGreaterThanEquals
        )
    }
}

/// One policy value, read once for its operator.
#[derive(Debug, Clone, PartialEq)]
enum PolicyValue {
    /// String and ARN operators (policy variables allowed).
    Text(Template),
    /// Unreadable numbers, dates, booleans and addresses match nothing.
    Number(Option<f64>),
    Date(Option<i64>),
    Bool(Option<bool>),
    Binary(String),
    Cidr(Option<Cidr>),
    /// `Null`'s `true` (the key must be absent) or `false`.
    Absent(Option<bool>),
}

/// One key of one operator, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompiledCondition {
    operator: OperatorName,
    key_lower: String,
    values: Vec<PolicyValue>,
}

impl CompiledCondition {
    /// `None` for an operator the grammar does not know (only possible for
    /// documents that skipped validation).
    pub(crate) fn compile(entry: &ConditionEntry, version: PolicyVersion) -> Option<Self> {
        let operator = OperatorName::parse(&entry.operator)?;
        let variables = version == PolicyVersion::V2012_10_17;
        let values = entry
            .values
            .iter()
            .map(|value| compile_value(operator.base, value, variables))
            .collect();
        Some(CompiledCondition {
            operator,
            key_lower: entry.key.to_ascii_lowercase(),
            values,
        })
    }

    pub(crate) fn holds(&self, context: &RequestContext) -> bool {
        let present = context
            .values_lower(&self.key_lower)
            .filter(|values| !values.is_empty());
        let negated = self.operator.base.negated();
        if self.operator.base == BaseOperator::Null {
            let absent = present.is_none();
            return self.values.iter().any(
                |value| matches!(value, PolicyValue::Absent(Some(wanted)) if *wanted == absent),
            );
        }
        let Some(request_values) = present else {
            return match self.operator.set {
                SetOperator::ForAllValues => true,
                SetOperator::ForAnyValue => self.operator.if_exists,
                SetOperator::None => self.operator.if_exists || negated,
            };
        };
        // Whether one request value satisfies the operator.
        let satisfies = |request_value: &str| {
            let any = self
                .values
                .iter()
                .any(|value| self.matches(value, request_value, context));
            any != negated
        };
        match self.operator.set {
            SetOperator::ForAllValues => request_values.iter().all(|v| satisfies(v)),
            SetOperator::ForAnyValue => request_values.iter().any(|v| satisfies(v)),
            SetOperator::None if negated => request_values.iter().all(|v| satisfies(v)),
            SetOperator::None => request_values.iter().any(|v| satisfies(v)),
        }
    }

    /// The positive comparison of one policy value with one request value.
    fn matches(&self, policy: &PolicyValue, request: &str, context: &RequestContext) -> bool {
        use BaseOperator::*;
        match policy {
            PolicyValue::Text(template) => {
                let Some(resolved) = template.resolve(context) else {
                    return false;
                };
                match self.operator.base {
                    ArnEquals | ArnLike | ArnNotEquals | ArnNotLike => {
                        arn_matches(resolved.pattern(), request)
                    }
                    _ => resolved.pattern().matches(request),
                }
            }
            PolicyValue::Number(Some(wanted)) => {
                let Ok(actual) = request.trim().parse::<f64>() else {
                    return false;
                };
                compare(self.operator.base, actual.partial_cmp(wanted))
            }
            PolicyValue::Date(Some(wanted)) => {
                let Some(actual) = parse_date_ms(request) else {
                    return false;
                };
                compare(self.operator.base, Some(actual.cmp(wanted)))
            }
            PolicyValue::Bool(Some(wanted)) => parse_bool(request) == Some(*wanted),
            PolicyValue::Binary(wanted) => wanted == request,
            PolicyValue::Cidr(Some(cidr)) => request
                .trim()
                .parse::<IpAddr>()
                .is_ok_and(|ip| cidr.contains(ip)),
            PolicyValue::Number(None)
            | PolicyValue::Date(None)
            | PolicyValue::Bool(None)
            | PolicyValue::Cidr(None)
            | PolicyValue::Absent(_) => false,
        }
    }
}

/// Whether `ordering` (request value against policy value) satisfies the
/// comparison; negated operators compare as their positive form.
fn compare(base: BaseOperator, ordering: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::*;
    use BaseOperator::*;
    let Some(ordering) = ordering else {
        return false;
    };
    match base {
        NumericEquals | NumericNotEquals | DateEquals | DateNotEquals => ordering == Equal,
        NumericLessThan | DateLessThan => ordering == Less,
        NumericLessThanEquals | DateLessThanEquals => ordering != Greater,
        NumericGreaterThan | DateGreaterThan => ordering == Greater,
        NumericGreaterThanEquals | DateGreaterThanEquals => ordering != Less,
        _ => false,
    }
}

fn compile_value(base: BaseOperator, text: &str, variables: bool) -> PolicyValue {
    use BaseOperator::*;
    match base {
        StringEquals | StringNotEquals => {
            PolicyValue::Text(Template::compile(text, false, false, variables))
        }
        StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => {
            PolicyValue::Text(Template::compile(text, false, true, variables))
        }
        StringLike | StringNotLike | ArnEquals | ArnLike | ArnNotEquals | ArnNotLike => {
            PolicyValue::Text(Template::compile(text, true, false, variables))
        }
        NumericEquals
        | NumericNotEquals
        | NumericLessThan
        | NumericLessThanEquals
        | NumericGreaterThan
        | NumericGreaterThanEquals => PolicyValue::Number(text.trim().parse().ok()),
        DateEquals
        | DateNotEquals
        | DateLessThan
        | DateLessThanEquals
        | DateGreaterThan
        | DateGreaterThanEquals => PolicyValue::Date(parse_date_ms(text)),
        Bool => PolicyValue::Bool(parse_bool(text)),
        BinaryEquals => PolicyValue::Binary(text.to_string()),
        IpAddress | NotIpAddress => PolicyValue::Cidr(Cidr::parse(text)),
        Null => PolicyValue::Absent(parse_bool(text)),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// An address block, IPv4 or IPv6; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: u128,
    prefix_bits: u32,
    v4: bool,
}

impl Cidr {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u32>().ok()?)),
            None => (text, None),
        };
        let (bits, v4, width) = match address.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), true, 32),
            IpAddr::V6(v6) => (u128::from(v6), false, 128),
        };
        let prefix_bits = prefix.unwrap_or(width);
        if prefix_bits > width {
            return None;
        }
        Some(Cidr {
            network: bits & mask(prefix_bits, width),
            prefix_bits,
            v4,
        })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let (bits, v4, width) = match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), true, 32),
            // An IPv4 client seen through an IPv6 socket.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (u128::from(u32::from(v4)), true, 32),
                None => (u128::from(v6), false, 128),
            },
        };
        v4 == self.v4 && bits & mask(self.prefix_bits, width) == self.network
    }
}

fn mask(prefix_bits: u32, width: u32) -> u128 {
    if prefix_bits == 0 {
        return 0;
    }
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let host_bits = width - prefix_bits;
    if host_bits == 0 {
        all
    } else {
        all & !((1u128 << host_bits) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::{Cidr, OperatorName};

    #[test]
    fn operator_names() {
        assert!(OperatorName::parse("ForAnyValue:StringLikeIfExists").is_some());
        assert!(OperatorName::parse("ForAnyValue::StringEqualsIfExists").is_none());
        assert!(OperatorName::parse("NullIfExists").is_none());
        assert!(OperatorName::parse("stringequals").is_none());
    }

    #[test]
    fn cidrs() {
        let block = Cidr::parse("203.0.113.0/24").expect("cidr");
        assert!(block.contains("203.0.113.7".parse().expect("ip")));
        assert!(!block.contains("203.0.114.7".parse().expect("ip")));
        assert!(block.contains("::ffff:203.0.113.9".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!v6.contains("2001:db9::1".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("cidr")
            .contains("8.8.8.8".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.1")
            .expect("cidr")
            .contains("10.0.0.1".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }
}
