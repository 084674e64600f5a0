//! What identifies a metric: namespace, name and dimensions, checked with
//! CloudWatch's rules. Dimensions are kept sorted by name, so one set of
//! dimensions is one metric whatever order a client sent them in.

use serde::{Deserialize, Serialize};

use crate::error::CloudWatchError;

/// CloudWatch's limit on dimensions per metric.
pub const DIMENSIONS_MAX: usize = 30;
pub const NAMESPACE_LENGTH_MAX: usize = 255;
pub const METRIC_NAME_LENGTH_MAX: usize = 255;
pub const DIMENSION_NAME_LENGTH_MAX: usize = 255;
pub const DIMENSION_VALUE_LENGTH_MAX: usize = 1024;
/// Namespaces under this prefix belong to AWS services: clients may not
/// publish into them, Flotilla's own publishers may.
pub const RESERVED_NAMESPACE_PREFIX: &str = "AWS/";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dimension {
    pub name: String,
    pub value: String,
}

impl Dimension {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Dimension {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// One metric: CloudWatch treats each unique combination of namespace, name
/// and dimensions as a separate metric.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MetricKey {
    pub namespace: String,
    pub name: String,
    /// Sorted by name; names are unique.
    pub dimensions: Vec<Dimension>,
}

impl MetricKey {
    /// Builds a key from client input, checking every part. `parameter` is
    /// the path the client used (`MetricData.member.1`), for messages.
    pub fn checked(
        namespace: &str,
        name: &str,
        dimensions: &[Dimension],
        parameter: &str,
        allow_reserved_namespace: bool,
    ) -> Result<MetricKey, CloudWatchError> {
        check_namespace(namespace, "Namespace", allow_reserved_namespace)?;
        check_metric_name(name, &format!("{parameter}.MetricName"))?;
        let dimensions = checked_dimensions(dimensions, &format!("{parameter}.Dimensions"))?;
        Ok(MetricKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
            dimensions,
        })
    }

    /// Builds a key without checks, for Flotilla's own publishers and tests.
    pub fn new(namespace: &str, name: &str, dimensions: &[(&str, &str)]) -> MetricKey {
        let mut dimensions: Vec<Dimension> = dimensions
            .iter()
            .map(|(name, value)| Dimension::new(*name, *value))
            .collect();
        dimensions.sort();
        dimensions.dedup_by(|a, b| a.name == b.name);
        MetricKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
            dimensions,
        }
    }

    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions
            .iter()
            .find(|dimension| dimension.name == name)
            .map(|dimension| dimension.value.as_str())
    }

    /// Bytes this key holds on the heap, for the store's memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.namespace.len()
            + self.name.len()
            + self
                .dimensions
                .iter()
                .map(|d| d.name.len() + d.value.len() + std::mem::size_of::<Dimension>())
                .sum::<usize>()
    }
}

fn is_printable_ascii(text: &str) -> bool {
    text.bytes().all(|byte| (0x20..0x7f).contains(&byte))
}

fn has_non_whitespace(text: &str) -> bool {
    text.chars().any(|c| !c.is_whitespace())
}

/// Namespaces: ASCII letters, digits and `. - _ / # :` and space, at least one
/// non-whitespace character, not starting with a colon.
pub fn check_namespace(
    namespace: &str,
    parameter: &str,
    allow_reserved: bool,
) -> Result<(), CloudWatchError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
    if namespace.is_empty()
        || namespace.len() > NAMESPACE_LENGTH_MAX
        || namespace.starts_with(':')
        || !namespace.chars().all(allowed)
        || !has_non_whitespace(namespace)
    {
        return Err(CloudWatchError::invalid_value(namespace, parameter));
    }
    if !allow_reserved && namespace.starts_with(RESERVED_NAMESPACE_PREFIX) {
        return Err(CloudWatchError::invalid(format!(
            "The value {namespace} for parameter {parameter} is invalid. Namespaces beginning with {RESERVED_NAMESPACE_PREFIX} are reserved for AWS services."
        )));
    }
    Ok(())
}

pub fn check_metric_name(name: &str, parameter: &str) -> Result<(), CloudWatchError> {
    if name.is_empty() || name.len() > METRIC_NAME_LENGTH_MAX || !has_non_whitespace(name) {
        return Err(CloudWatchError::invalid_value(name, parameter));
    }
    if name.chars().any(char::is_control) {
        return Err(CloudWatchError::invalid_value(name, parameter));
    }
    Ok(())
}

/// Dimensions as CloudWatch checks them: at most 30, names ASCII without
/// control characters and not starting with a colon, values of 1 to 1,024
/// characters, each name once. Returns them sorted by name.
pub fn checked_dimensions(
    dimensions: &[Dimension],
    parameter: &str,
) -> Result<Vec<Dimension>, CloudWatchError> {
    if dimensions.len() > DIMENSIONS_MAX {
        return Err(CloudWatchError::invalid(format!(
            "The collection {parameter} must not have a size greater than {DIMENSIONS_MAX}."
        )));
    }
    for (index, dimension) in dimensions.iter().enumerate() {
        let member = format!("{parameter}.member.{}", index + 1);
        let name = &dimension.name;
        if name.is_empty()
            || name.len() > DIMENSION_NAME_LENGTH_MAX
            || name.starts_with(':')
            || !is_printable_ascii(name)
            || !has_non_whitespace(name)
        {
            return Err(CloudWatchError::invalid_value(
                name,
                &format!("{member}.Name"),
            ));
        }
        let value = &dimension.value;
        if value.is_empty()
            || value.chars().count() > DIMENSION_VALUE_LENGTH_MAX
            || value.chars().any(char::is_control)
            || !has_non_whitespace(value)
        {
            return Err(CloudWatchError::invalid_value(
                value,
                &format!("{member}.Value"),
            ));
        }
    }
    let mut sorted = dimensions.to_vec();
    sorted.sort();
    for pair in sorted.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(CloudWatchError::invalid(format!(
                "No metric may have duplicate dimension names. The dimension name {} appears more than once in {parameter}.",
                pair[0].name
            )));
        }
    }
    Ok(sorted)
}

/// ListMetrics' dimension filter: a name, optionally with a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimensionFilter {
    pub name: String,
    pub value: Option<String>,
}

impl DimensionFilter {
    pub fn matches(&self, key: &MetricKey) -> bool {
        key.dimensions.iter().any(|dimension| {
            dimension.name == self.name
                && self
                    .value
                    .as_ref()
                    .is_none_or(|value| *value == dimension.value)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_are_sorted_and_checked() {
        let dims = vec![Dimension::new("b", "2"), Dimension::new("a", "1")];
        let sorted = checked_dimensions(&dims, "D").unwrap();
        assert_eq!(sorted[0].name, "a");
        let duplicate = vec![Dimension::new("a", "2"), Dimension::new("a", "1")];
        assert!(checked_dimensions(&duplicate, "D")
            .unwrap_err()
            .message
            .contains("duplicate dimension names"));
        let too_many: Vec<Dimension> = (0..31)
            .map(|i| Dimension::new(format!("d{i}"), "v"))
            .collect();
        assert_eq!(
            checked_dimensions(&too_many, "MetricData.member.1.Dimensions")
                .unwrap_err()
                .message,
            "The collection MetricData.member.1.Dimensions must not have a size greater than 30."
        );
        let blank = vec![Dimension::new("a", "  ")];
        assert_eq!(
            checked_dimensions(&blank, "D").unwrap_err().message,
            "The value    for parameter D.member.1.Value is invalid."
        );
    }

    #[test]
    fn namespaces() {
        assert!(check_namespace("MyApp/Web", "Namespace", false).is_ok());
        assert!(check_namespace(":x", "Namespace", false).is_err());
        assert!(check_namespace("a\u{e9}", "Namespace", false).is_err());
        assert!(check_namespace("AWS/ECS", "Namespace", false).is_err());
        assert!(check_namespace("AWS/ECS", "Namespace", true).is_ok());
        assert!(check_namespace("   ", "Namespace", true).is_err());
    }
}
