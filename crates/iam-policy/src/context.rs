//! The request context: who asks to do what to which resource, and the
//! condition keys that describe the request.
//!
//! The caller builds one per authorization check. Time is one of its inputs
//! (there is no clock here): `aws:CurrentTime` and `aws:EpochTime` are
//! derived from the `now_ms` given to `RequestContext::new`.

use std::collections::HashMap;

use crate::time::format_iso8601;

/// Who makes the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The ARN AWS prints in a denial: the user's, the root's, or for a role
    /// session `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub arn: String,
    pub account: String,
    pub kind: PrincipalKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The account's root user: IAM policies never restrict it.
    Root,
    User {
        name: String,
        /// The user's unique id (`AIDA...`), the value of `aws:userid`.
        user_id: String,
    },
    /// A session of an assumed role.
    AssumedRole {
        /// `arn:aws:iam::ACCOUNT:role/PATH/NAME`, the value of `aws:PrincipalArn`.
        role_arn: String,
        /// The role's unique id (`AROA...`).
        role_id: String,
        session_name: String,
    },
    /// An AWS service acting for itself, such as `ecs-tasks.amazonaws.com`
    /// assuming a task role.
    Service {
        name: String,
    },
    Anonymous,
}

impl Principal {
    pub fn root(account: &str) -> Self {
        Principal {
            arn: format!("arn:aws:iam::{account}:root"),
            account: account.to_string(),
            kind: PrincipalKind::Root,
        }
    }

    /// `path` is IAM's (`/` by default, or `/team/`).
    pub fn user(account: &str, path: &str, name: &str, user_id: &str) -> Self {
        Principal {
            arn: format!("arn:aws:iam::{account}:user{}{name}", normalized_path(path)),
            account: account.to_string(),
            kind: PrincipalKind::User {
                name: name.to_string(),
                user_id: user_id.to_string(),
            },
        }
    }

    pub fn assumed_role(
        account: &str,
        role_path: &str,
        role_name: &str,
        role_id: &str,
        session_name: &str,
    ) -> Self {
        Principal {
            arn: format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}"),
            account: account.to_string(),
            kind: PrincipalKind::AssumedRole {
                role_arn: format!(
                    "arn:aws:iam::{account}:role{}{role_name}",
                    normalized_path(role_path)
                ),
                role_id: role_id.to_string(),
                session_name: session_name.to_string(),
            },
        }
    }

    pub fn service(name: &str) -> Self {
        Principal {
            arn: name.to_string(),
            account: String::new(),
            kind: PrincipalKind::Service {
                name: name.to_string(),
            },
        }
    }

    pub fn anonymous() -> Self {
        Principal {
            arn: "anonymous".to_string(),
            account: String::new(),
            kind: PrincipalKind::Anonymous,
        }
    }

    /// `aws:PrincipalArn`: for a role session, the role's ARN.
    pub fn principal_arn(&self) -> &str {
        match &self.kind {
            PrincipalKind::AssumedRole { role_arn, .. } => role_arn,
            _ => &self.arn,
        }
    }

    /// `aws:PrincipalType`.
    pub fn principal_type(&self) -> &'static str {
        match self.kind {
            PrincipalKind::Root => "Account",
            PrincipalKind::User { .. } => "User",
            PrincipalKind::AssumedRole { .. } => "AssumedRole",
            PrincipalKind::Service { .. } => "Service",
            PrincipalKind::Anonymous => "Anonymous",
        }
    }
}

fn normalized_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        format!("/{trimmed}/")
    }
}

/// One authorization question and everything conditions may ask about it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    principal: Principal,
    /// `service:Action` as the caller named it (`ecs:RunTask`).
    action: String,
    action_lower: String,
    resource: String,
    /// Condition keys, lowercased (key names are case-insensitive), each
    /// with its values: one for single-valued keys, any number for
    /// multivalued ones such as `aws:TagKeys`.
    keys: HashMap<String, Vec<String>>,
}

impl RequestContext {
    /// The global keys that follow from the principal and the time are set
    /// here; the rest through the `with_*` methods.
    pub fn new(principal: Principal, action: &str, resource: &str, now_ms: i64) -> Self {
        let mut context = RequestContext {
            action: action.to_string(),
            action_lower: action.to_ascii_lowercase(),
            resource: resource.to_string(),
            keys: HashMap::new(),
            principal: principal.clone(),
        };
        context.set("aws:CurrentTime", vec![format_iso8601(now_ms)]);
        context.set("aws:EpochTime", vec![now_ms.div_euclid(1_000).to_string()]);
        if principal.kind == PrincipalKind::Anonymous {
            return context;
        }
        context.set(
            "aws:PrincipalType",
            vec![principal.principal_type().to_string()],
        );
        if let PrincipalKind::Service { name } = &principal.kind {
            context.set("aws:PrincipalServiceName", vec![name.clone()]);
            return context;
        }
        context.set(
            "aws:PrincipalArn",
            vec![principal.principal_arn().to_string()],
        );
        context.set("aws:PrincipalAccount", vec![principal.account.clone()]);
        match &principal.kind {
            PrincipalKind::Root => context.set("aws:userid", vec![principal.account.clone()]),
            PrincipalKind::User { name, user_id } => {
                context.set("aws:userid", vec![user_id.clone()]);
                context.set("aws:username", vec![name.clone()]);
            }
            PrincipalKind::AssumedRole {
                role_id,
                session_name,
                ..
            } => {
                context.set("aws:userid", vec![format!("{role_id}:{session_name}")]);
            }
            PrincipalKind::Service { .. } | PrincipalKind::Anonymous => {}
        }
        context
    }

    /// Set a condition key (replacing any value it had). Service keys such as
    /// `ecs:cluster` and `iam:PassedToService` come in this way.
    pub fn set(&mut self, key: &str, values: Vec<String>) {
        self.keys.insert(key.to_ascii_lowercase(), values);
    }

    pub fn with(mut self, key: &str, values: Vec<String>) -> Self {
        self.set(key, values);
        self
    }

    pub fn with_source_ip(self, ip: &str) -> Self {
        self.with("aws:SourceIp", vec![ip.to_string()])
    }

    pub fn with_requested_region(self, region: &str) -> Self {
        self.with("aws:RequestedRegion", vec![region.to_string()])
    }

    pub fn with_secure_transport(self, secure: bool) -> Self {
        self.with("aws:SecureTransport", vec![secure.to_string()])
    }

    /// Present only for temporary credentials, as in AWS: long-term keys
    /// leave the key out, which is what `BoolIfExists` policies rely on.
    pub fn with_multi_factor_auth_present(self, present: bool) -> Self {
        self.with("aws:MultiFactorAuthPresent", vec![present.to_string()])
    }

    pub fn with_principal_tags<'a>(
        self,
        tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        self.with_tags("aws:PrincipalTag/", tags)
    }

    pub fn with_resource_tags<'a>(
        self,
        tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        self.with_tags("aws:ResourceTag/", tags)
    }

    /// The tags a request sets: `aws:RequestTag/KEY` for each, and
    /// `aws:TagKeys` listing their keys.
    pub fn with_request_tags<'a>(self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let tags: Vec<(&str, &str)> = tags.into_iter().collect();
        let keys = tags.iter().map(|(key, _)| key.to_string()).collect();
        self.with_tags("aws:RequestTag/", tags)
            .with("aws:TagKeys", keys)
    }

    fn with_tags<'a>(
        mut self,
        prefix: &str,
        tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        for (key, value) in tags {
            self.set(&format!("{prefix}{key}"), vec![value.to_string()]);
        }
        self
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn action(&self) -> &str {
        &self.action
    }

    /// The action's service prefix and name, lowercased; `None` for an
    /// action without a colon.
    pub(crate) fn action_parts_lower(&self) -> Option<(&str, &str)> {
        self.action_lower.split_once(':')
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The values of a key given lowercased; `None` when the request does
    /// not carry it.
    pub(crate) fn values_lower(&self, key_lower: &str) -> Option<&[String]> {
        self.keys.get(key_lower).map(Vec::as_slice)
    }

    /// The values of a condition key (any case).
    pub fn values(&self, key: &str) -> Option<&[String]> {
        self.values_lower(&key.to_ascii_lowercase())
    }
}
