//! Amazon Resource Names in the real format, e.g.
//! `arn:aws:ecs:us-east-1:000000000000:cluster/default`.

/// Where resources live: the region and account every ARN carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub partition: String,
    pub region: String,
    pub account_id: String,
}

impl Scope {
    pub fn new(region: impl Into<String>, account_id: impl Into<String>) -> Self {
        Self {
            partition: "aws".to_owned(),
            region: region.into(),
            account_id: account_id.into(),
        }
    }

    /// `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
    pub fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account_id
        )
    }
}

/// An ARN split into its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account_id: &'a str,
    /// Everything after the fifth colon, e.g. `cluster/default`.
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let arn = Arn {
            partition: parts.next()?,
            service: parts.next()?,
            region: parts.next()?,
            account_id: parts.next()?,
            resource: parts.next()?,
        };
        (!arn.partition.is_empty() && !arn.service.is_empty() && !arn.resource.is_empty())
            .then_some(arn)
    }

    /// The resource type and its id, e.g. `("cluster", "default")`.
    pub fn resource_parts(&self) -> (&'a str, &'a str) {
        self.resource.split_once('/').unwrap_or(("", self.resource))
    }
}

/// The bucket and key an S3 object ARN names (`arn:aws:s3:::bucket/key`):
/// S3 ARNs have no region or account, and both parts must be non-empty.
pub fn s3_object(text: &str) -> Option<(&str, &str)> {
    let arn = Arn::parse(text)?;
    if arn.service != "s3" || !arn.region.is_empty() || !arn.account_id.is_empty() {
        return None;
    }
    let (bucket, key) = arn.resource.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_object_arns() {
        assert_eq!(
            s3_object("arn:aws:s3:::config/dir/app.env"),
            Some(("config", "dir/app.env"))
        );
        assert_eq!(s3_object("arn:aws:s3:::config"), None);
        assert_eq!(s3_object("arn:aws:s3:us-east-1::config/a.env"), None);
        assert_eq!(s3_object("arn:aws:ecs:::config/a.env"), None);
        assert_eq!(s3_object("s3://config/a.env"), None);
    }

    #[test]
    fn builds_and_parses() {
        let scope = Scope::new("us-east-1", "000000000000");
        let arn = scope.arn("ecs", "task-definition/web:3");
        assert_eq!(
            arn,
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web:3"
        );
        let parsed = Arn::parse(&arn).expect("valid arn");
        assert_eq!(parsed.resource_parts(), ("task-definition", "web:3"));
        assert_eq!(parsed.account_id, "000000000000");
        assert!(Arn::parse("arn:aws:ecs").is_none());
        assert!(Arn::parse("cluster/default").is_none());
    }
}
