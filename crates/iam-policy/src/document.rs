//! Policy documents: reading the JSON and validating it as IAM does.
//!
//! Validation runs in IAM's order, so a document with several faults gets
//! the message IAM gives for it: first the grammar ("Syntax errors in
//! policy."), then the version a managed policy needs, the rules of the kind
//! of policy (principals, trust policy actions), IAM's older parser (effect
//! spelling, dates, ARN shape), statement ids (letters and digits in IAM's
//! own documents, unique), actions, resources, the first malformed resource,
//! and last each action's vendor.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::condition::OperatorName;
use crate::error::{PolicyError, IAM_RESOURCE_PATH_PREFIXES};
use crate::time::parse_date_ms;

/// The one partition Flotilla's ARNs are in.
pub const PARTITION: &str = "aws";
/// A customer managed policy, counted without whitespace.
pub const MANAGED_POLICY_CHARS_MAX: usize = 6_144;
/// All inline policies of one user together.
pub const USER_INLINE_POLICIES_CHARS_MAX: usize = 2_048;
/// All inline policies of one role together.
pub const ROLE_INLINE_POLICIES_CHARS_MAX: usize = 10_240;
/// All inline policies of one group together.
pub const GROUP_INLINE_POLICIES_CHARS_MAX: usize = 5_120;
/// A role's trust policy, by default (an account may raise it to 8,192).
pub const TRUST_POLICY_CHARS_DEFAULT: usize = 2_048;
/// The highest trust policy quota an account can be granted.
pub const TRUST_POLICY_CHARS_QUOTA_MAX: usize = 8_192;
/// The session policy text passed to AssumeRole or GetFederationToken.
pub const SESSION_POLICY_CHARS_MAX: usize = 2_048;

/// Which rules a document is validated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// A customer managed policy (CreatePolicy, CreatePolicyVersion); also
    /// what a permissions boundary is.
    Managed,
    /// An inline policy of a user, role or group (Put*Policy).
    Inline,
    /// A session policy passed to STS.
    Session,
    /// A role's trust policy (CreateRole, UpdateAssumeRolePolicy).
    Trust,
    /// A policy attached to a resource (an ECR repository, a secret).
    Resource,
    /// An AWS managed policy shipped with Flotilla: identity grammar, no
    /// version or size rule (AWS's own documents are larger than customers
    /// may write).
    AwsManaged,
}

impl PolicyKind {
    fn is_identity(self) -> bool {
        matches!(
            self,
            PolicyKind::Managed | PolicyKind::Inline | PolicyKind::Session | PolicyKind::AwsManaged
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyVersion {
    /// `2008-10-17`, or no `Version`: policy variables are plain text.
    V2008_10_17,
    V2012_10_17,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// A validated policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    pub version: PolicyVersion,
    pub id: Option<String>,
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principal: Option<PrincipalElement>,
    pub action: ActionElement,
    /// `None` only in trust policies and resource policies, where the
    /// resource is the one the policy is attached to.
    pub resource: Option<ResourceElement>,
    pub condition: Vec<ConditionEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PrincipalElement {
    Principal(Principals),
    NotPrincipal(Principals),
}

/// The principals a statement names, by type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Principals {
    /// `"Principal": "*"` or `{"AWS": "*"}`: everyone.
    pub everyone: bool,
    pub aws: Vec<String>,
    pub service: Vec<String>,
    pub federated: Vec<String>,
    pub canonical_user: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionElement {
    Action(Vec<String>),
    NotAction(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResourceElement {
    Resource(Vec<String>),
    NotResource(Vec<String>),
}

/// One key of one operator of a `Condition` block.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionEntry {
    /// As written, `ForAnyValue:StringLikeIfExists` for instance.
    pub operator: String,
    pub key: String,
    /// Numbers and booleans as their JSON text.
    pub values: Vec<String>,
}

impl PolicyDocument {
    /// The user and role ARNs the document's `Principal` and `NotPrincipal`
    /// elements name: IAM refuses a trust or resource policy naming one that
    /// does not exist (`PolicyError::unknown_aws_principal`), which only the
    /// IAM service can check. Accounts, `*`, role sessions and services are
    /// not resolved.
    pub fn named_users_and_roles(&self) -> impl Iterator<Item = &str> {
        self.statements
            .iter()
            .filter_map(|statement| match &statement.principal {
                Some(PrincipalElement::Principal(p) | PrincipalElement::NotPrincipal(p)) => Some(p),
                None => None,
            })
            .flat_map(|principals| principals.aws.iter().map(String::as_str))
            .filter(|name| {
                name.strip_prefix("arn:aws:iam::").is_some_and(|rest| {
                    rest.split_once(':').is_some_and(|(_, resource)| {
                        resource.starts_with("user/") || resource.starts_with("role/")
                    })
                })
            })
    }
}

/// Non-whitespace characters: how IAM measures a policy against its quotas.
pub fn policy_size_chars(text: &str) -> usize {
    text.chars().filter(|c| !c.is_whitespace()).count()
}

/// A customer managed policy document within its quota.
pub fn check_managed_policy_size(text: &str) -> Result<(), PolicyError> {
    if policy_size_chars(text) > MANAGED_POLICY_CHARS_MAX {
        return Err(PolicyError::ManagedPolicyTooLarge {
            limit_chars: MANAGED_POLICY_CHARS_MAX,
        });
    }
    Ok(())
}

/// A trust policy within the account's quota (`TRUST_POLICY_CHARS_DEFAULT`
/// unless raised).
pub fn check_trust_policy_size(text: &str, quota_chars: usize) -> Result<(), PolicyError> {
    if policy_size_chars(text) > quota_chars {
        return Err(PolicyError::TrustPolicyTooLarge {
            limit_chars: quota_chars,
        });
    }
    Ok(())
}

/// The kinds of IAM identity whose inline policies share one quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InlinePolicyOwner {
    User,
    Role,
    Group,
}

impl InlinePolicyOwner {
    pub fn quota_chars(self) -> usize {
        match self {
            InlinePolicyOwner::User => USER_INLINE_POLICIES_CHARS_MAX,
            InlinePolicyOwner::Role => ROLE_INLINE_POLICIES_CHARS_MAX,
            InlinePolicyOwner::Group => GROUP_INLINE_POLICIES_CHARS_MAX,
        }
    }

    fn word(self) -> &'static str {
        match self {
            InlinePolicyOwner::User => "user",
            InlinePolicyOwner::Role => "role",
            InlinePolicyOwner::Group => "group",
        }
    }
}

/// The inline policies of one identity, measured together (the caller adds
/// up `policy_size_chars` of each, the new one in place of any it replaces).
pub fn check_inline_policies_size(
    owner: InlinePolicyOwner,
    owner_name: &str,
    total_chars: usize,
) -> Result<(), PolicyError> {
    if total_chars > owner.quota_chars() {
        return Err(PolicyError::InlinePoliciesTooLarge {
            limit_chars: owner.quota_chars(),
            entity_kind: owner.word(),
            entity_name: owner_name.to_string(),
        });
    }
    Ok(())
}

/// A session policy's text within STS's limit (its length as sent).
pub fn check_session_policy_size(text: &str) -> Result<(), PolicyError> {
    if text.chars().count() > SESSION_POLICY_CHARS_MAX {
        return Err(PolicyError::SessionPolicyTooLong {
            text: text.to_string(),
            limit_chars: SESSION_POLICY_CHARS_MAX,
        });
    }
    Ok(())
}

/// Read and validate `text` as a policy of `kind`. Sizes are checked
/// separately (they depend on the identity's other policies).
pub fn parse(text: &str, kind: PolicyKind) -> Result<PolicyDocument, PolicyError> {
    let value: Value = serde_json::from_str(text).map_err(|_| PolicyError::Syntax)?;
    let document = read_document(&value)?;
    let effects_exact = effects_spelt_exactly(&value);
    if kind == PolicyKind::Managed && document.version != PolicyVersion::V2012_10_17 {
        return Err(PolicyError::VersionTooOld);
    }
    for statement in &document.statements {
        check_kind_rules(statement, kind)?;
    }
    check_legacy(&document, effects_exact)?;
    if matches!(
        kind,
        PolicyKind::Managed | PolicyKind::Inline | PolicyKind::Trust
    ) {
        check_sids_alphanumeric(&document)?;
    }
    check_sids_unique(&document)?;
    check_actions_present(&document)?;
    if kind.is_identity() {
        check_resources_present(&document)?;
    }
    check_resource_formats(&document)?;
    check_action_vendors(&document)?;
    Ok(document)
}

// ---------------------------------------------------------------- grammar

const TOP_LEVEL_MEMBERS: &[&str] = &["Version", "Id", "Statement"];
const STATEMENT_MEMBERS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

fn read_document(value: &Value) -> Result<PolicyDocument, PolicyError> {
    let object = value.as_object().ok_or(PolicyError::Syntax)?;
    if object
        .keys()
        .any(|key| !TOP_LEVEL_MEMBERS.contains(&key.as_str()))
    {
        return Err(PolicyError::Syntax);
    }
    let version = match object.get("Version") {
        None => PolicyVersion::V2008_10_17,
        Some(Value::String(v)) if v == "2012-10-17" => PolicyVersion::V2012_10_17,
        Some(Value::String(v)) if v == "2008-10-17" => PolicyVersion::V2008_10_17,
        Some(_) => return Err(PolicyError::Syntax),
    };
    let id = optional_string(object, "Id")?;
    let statements = match object.get("Statement") {
        Some(Value::Object(single)) => vec![read_statement(single)?],
        Some(Value::Array(many)) if !many.is_empty() => many
            .iter()
            .map(|item| {
                item.as_object()
                    .ok_or(PolicyError::Syntax)
                    .and_then(read_statement)
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(PolicyError::Syntax),
    };
    Ok(PolicyDocument {
        version,
        id,
        statements,
    })
}

fn read_statement(object: &Map<String, Value>) -> Result<Statement, PolicyError> {
    if object
        .keys()
        .any(|key| !STATEMENT_MEMBERS.contains(&key.as_str()))
    {
        return Err(PolicyError::Syntax);
    }
    let effect = match object.get("Effect") {
        // The exact spelling is checked with IAM's legacy rules, later.
        Some(Value::String(e)) if e.eq_ignore_ascii_case("allow") => Effect::Allow,
        Some(Value::String(e)) if e.eq_ignore_ascii_case("deny") => Effect::Deny,
        _ => return Err(PolicyError::Syntax),
    };
    Ok(Statement {
        sid: optional_string(object, "Sid")?,
        effect,
        principal: one_of(object, "Principal", "NotPrincipal", read_principals)?.map(
            |(negated, p)| {
                if negated {
                    PrincipalElement::NotPrincipal(p)
                } else {
                    PrincipalElement::Principal(p)
                }
            },
        ),
        action: match one_of(object, "Action", "NotAction", string_list)? {
            Some((false, list)) => ActionElement::Action(list),
            Some((true, list)) => ActionElement::NotAction(list),
            None => ActionElement::Action(Vec::new()),
        },
        resource: one_of(object, "Resource", "NotResource", string_list)?.map(|(negated, list)| {
            if negated {
                ResourceElement::NotResource(list)
            } else {
                ResourceElement::Resource(list)
            }
        }),
        condition: read_condition(object.get("Condition"))?,
    })
}

/// The element and whether it is the negated form; both forms at once are
/// a syntax error.
fn one_of<T>(
    object: &Map<String, Value>,
    positive: &str,
    negative: &str,
    read: impl Fn(&Value) -> Result<T, PolicyError>,
) -> Result<Option<(bool, T)>, PolicyError> {
    match (object.get(positive), object.get(negative)) {
        (Some(_), Some(_)) => Err(PolicyError::Syntax),
        (Some(value), None) => Ok(Some((false, read(value)?))),
        (None, Some(value)) => Ok(Some((true, read(value)?))),
        (None, None) => Ok(None),
    }
}

fn optional_string(
    object: &Map<String, Value>,
    member: &str,
) -> Result<Option<String>, PolicyError> {
    match object.get(member) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(PolicyError::Syntax),
    }
}

/// A string or an array of strings, as IAM allows almost everywhere.
fn string_list(value: &Value) -> Result<Vec<String>, PolicyError> {
    match value {
        Value::String(one) => Ok(vec![one.clone()]),
        Value::Array(many) => many
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or(PolicyError::Syntax))
            .collect(),
        _ => Err(PolicyError::Syntax),
    }
}

fn read_principals(value: &Value) -> Result<Principals, PolicyError> {
    let mut principals = Principals::default();
    match value {
        Value::String(star) if star == "*" => principals.everyone = true,
        Value::Object(by_type) => {
            for (kind, names) in by_type {
                let names = string_list(names)?;
                let list = match kind.as_str() {
                    "AWS" => &mut principals.aws,
                    "Service" => &mut principals.service,
                    "Federated" => &mut principals.federated,
                    "CanonicalUser" => &mut principals.canonical_user,
                    _ => return Err(PolicyError::Syntax),
                };
                list.extend(names);
            }
            if principals.aws.iter().any(|name| name == "*") {
                principals.everyone = true;
            }
        }
        _ => return Err(PolicyError::Syntax),
    }
    Ok(principals)
}

fn read_condition(value: Option<&Value>) -> Result<Vec<ConditionEntry>, PolicyError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let blocks = value.as_object().ok_or(PolicyError::Syntax)?;
    let mut entries = Vec::new();
    for (operator, block) in blocks {
        let keys = block.as_object().ok_or(PolicyError::Syntax)?;
        if OperatorName::parse(operator).is_none() {
            // IAM accepts an operator it does not know only with nothing in it.
            if keys.is_empty() {
                continue;
            }
            return Err(PolicyError::Syntax);
        }
        for (key, values) in keys {
            entries.push(ConditionEntry {
                operator: operator.clone(),
                key: key.clone(),
                values: condition_values(values)?,
            });
        }
    }
    Ok(entries)
}

fn condition_values(value: &Value) -> Result<Vec<String>, PolicyError> {
    let one = |item: &Value| match item {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        _ => Err(PolicyError::Syntax),
    };
    match value {
        Value::Array(many) => many.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

// ------------------------------------------------------- rules per kind

fn check_kind_rules(statement: &Statement, kind: PolicyKind) -> Result<(), PolicyError> {
    match kind {
        PolicyKind::Trust => check_trust_statement(statement),
        PolicyKind::Resource => match &statement.principal {
            None => Err(PolicyError::MissingPrincipal),
            Some(PrincipalElement::Principal(p) | PrincipalElement::NotPrincipal(p)) => {
                check_principals(p)
            }
        },
        _ if statement.principal.is_some() => Err(PolicyError::PrincipalNotAllowed),
        _ => Ok(()),
    }
}

fn check_trust_statement(statement: &Statement) -> Result<(), PolicyError> {
    let principals = match &statement.principal {
        None => return Err(PolicyError::TrustMissingPrincipal),
        Some(PrincipalElement::NotPrincipal(_)) => return Err(PolicyError::TrustWithNotPrincipal),
        Some(PrincipalElement::Principal(principals)) => principals,
    };
    check_principals(principals)?;
    if statement.resource.is_some() {
        return Err(PolicyError::TrustWithResource);
    }
    let (ActionElement::Action(actions) | ActionElement::NotAction(actions)) = &statement.action;
    if actions.iter().any(|action| {
        !action
            .get(..4)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("sts:"))
    }) {
        return Err(PolicyError::TrustWithOtherActions);
    }
    Ok(())
}

/// Every principal named must be of a form IAM recognises. Whether the
/// users and roles named exist is for the IAM service to check.
fn check_principals(principals: &Principals) -> Result<(), PolicyError> {
    let named = principals.aws.len()
        + principals.service.len()
        + principals.federated.len()
        + principals.canonical_user.len();
    if named == 0 && !principals.everyone {
        return Err(PolicyError::NoPrincipals);
    }
    let invalid = |kind: &str, value: &str| PolicyError::InvalidPrincipal {
        kind: kind.to_string(),
        value: value.to_string(),
    };
    if let Some(bad) = principals
        .aws
        .iter()
        .find(|name| !valid_aws_principal(name))
    {
        return Err(invalid("AWS", bad));
    }
    if let Some(bad) = principals
        .service
        .iter()
        .find(|name| !valid_service_principal(name))
    {
        return Err(invalid("SERVICE", bad));
    }
    if let Some(bad) = principals
        .federated
        .iter()
        .find(|name| !valid_federated_principal(name))
    {
        return Err(invalid("FEDERATED", bad));
    }
    if let Some(bad) = principals
        .canonical_user
        .iter()
        .find(|id| id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(invalid("CANONICAL_USER", bad));
    }
    Ok(())
}

pub(crate) fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

fn valid_aws_principal(name: &str) -> bool {
    if name == "*" || is_account_id(name) {
        return true;
    }
    let Some(rest) = name.strip_prefix("arn:aws:") else {
        return false;
    };
    let Some((service, rest)) = rest.split_once("::") else {
        return false;
    };
    let Some((account, resource)) = rest.split_once(':') else {
        return false;
    };
    if !is_account_id(account) || resource.contains(['*', '?']) {
        return false;
    }
    let named = |prefix: &str| {
        resource
            .strip_prefix(prefix)
            .is_some_and(|path| !path.is_empty() && !path.ends_with('/'))
    };
    match service {
        "iam" => resource == "root" || named("user/") || named("role/"),
        "sts" => {
            resource
                .strip_prefix("assumed-role/")
                .is_some_and(|rest| rest.split('/').filter(|p| !p.is_empty()).count() == 2)
                || named("federated-user/")
        }
        _ => false,
    }
}

fn valid_service_principal(name: &str) -> bool {
    let host = name
        .strip_suffix(".amazonaws.com")
        .or_else(|| name.strip_suffix(".amazonaws.com.cn"));
    host.is_some_and(|host| {
        !host.is_empty()
            && !host.starts_with(['.', '-'])
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    })
}

fn valid_federated_principal(name: &str) -> bool {
    if let Some(rest) = name.strip_prefix("arn:aws:iam::") {
        return rest.split_once(':').is_some_and(|(account, provider)| {
            is_account_id(account)
                && (provider.starts_with("saml-provider/")
                    || provider.starts_with("oidc-provider/"))
        });
    }
    // Web identity providers IAM knows by name.
    matches!(
        name,
        "cognito-identity.amazonaws.com"
            | "accounts.google.com"
            | "graph.facebook.com"
            | "www.amazon.com"
    )
}

// ------------------------------------------------------------ legacy rules

fn check_legacy(document: &PolicyDocument, effects_exact: bool) -> Result<(), PolicyError> {
    // The effect's exact spelling and readable dates, for every statement,
    // before any resource.
    if !effects_exact {
        return Err(PolicyError::LegacyParsing);
    }
    for statement in &document.statements {
        for entry in &statement.condition {
            let is_date = OperatorName::parse(&entry.operator).is_some_and(|op| op.is_date());
            if is_date
                && entry
                    .values
                    .iter()
                    .any(|value| parse_date_ms(value).is_none())
            {
                return Err(PolicyError::LegacyParsing);
            }
        }
    }
    if first_resource_error(document).is_none() {
        for resource in document.statements.iter().flat_map(resources_of) {
            if !legacy_resource_shape(resource) {
                return Err(PolicyError::LegacyParsing);
            }
        }
    }
    Ok(())
}

/// Whether every `Effect` is spelt `Allow` or `Deny` exactly: the grammar
/// accepts any case, IAM's older parser does not. `value` has passed
/// `read_document`.
fn effects_spelt_exactly(value: &Value) -> bool {
    let statements: Vec<&Value> = match value.get("Statement") {
        Some(Value::Array(many)) => many.iter().collect(),
        Some(single) => vec![single],
        None => Vec::new(),
    };
    statements.iter().all(|statement| {
        matches!(
            statement.get("Effect").and_then(Value::as_str),
            Some("Allow" | "Deny")
        )
    })
}

fn resources_of(statement: &Statement) -> impl Iterator<Item = &str> {
    let list = match &statement.resource {
        Some(ResourceElement::Resource(list) | ResourceElement::NotResource(list)) => {
            list.as_slice()
        }
        None => &[],
    };
    list.iter().map(String::as_str)
}

/// IAM's older parser needs five colons in an ARN that has an empty part,
/// and a service.
fn legacy_resource_shape(resource: &str) -> bool {
    if resource == "*" {
        return true;
    }
    let colons = resource.matches(':').count();
    (colons >= 5 || !resource.contains("::"))
        && resource
            .split(':')
            .nth(2)
            .is_none_or(|service| !service.is_empty())
}

fn check_sids_alphanumeric(document: &PolicyDocument) -> Result<(), PolicyError> {
    let alphanumeric = |sid: &str| sid.bytes().all(|b| b.is_ascii_alphanumeric());
    if document
        .statements
        .iter()
        .filter_map(|s| s.sid.as_deref())
        .all(alphanumeric)
    {
        Ok(())
    } else {
        Err(PolicyError::SidNotAlphanumeric)
    }
}

fn check_sids_unique(document: &PolicyDocument) -> Result<(), PolicyError> {
    let mut seen = HashSet::new();
    for sid in document
        .statements
        .iter()
        .filter_map(|s| s.sid.as_deref())
        .filter(|sid| !sid.is_empty())
    {
        if !seen.insert(sid) {
            return Err(PolicyError::DuplicateSid);
        }
    }
    Ok(())
}

fn check_actions_present(document: &PolicyDocument) -> Result<(), PolicyError> {
    for statement in &document.statements {
        let (ActionElement::Action(list) | ActionElement::NotAction(list)) = &statement.action;
        if list.is_empty() {
            return Err(PolicyError::MissingActions);
        }
    }
    Ok(())
}

fn check_resources_present(document: &PolicyDocument) -> Result<(), PolicyError> {
    for statement in &document.statements {
        match &statement.resource {
            Some(ResourceElement::Resource(list) | ResourceElement::NotResource(list))
                if !list.is_empty() => {}
            _ => return Err(PolicyError::MissingResources),
        }
    }
    Ok(())
}

fn check_resource_formats(document: &PolicyDocument) -> Result<(), PolicyError> {
    match first_resource_error(document) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The first malformed resource, in the order IAM reports them: statement by
/// statement, and within a list from the greatest string to the least.
fn first_resource_error(document: &PolicyDocument) -> Option<PolicyError> {
    for statement in &document.statements {
        let mut resources: Vec<&str> = resources_of(statement).collect();
        resources.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(error) = resources.into_iter().find_map(resource_format_error) {
            return Some(error);
        }
    }
    None
}

fn resource_format_error(resource: &str) -> Option<PolicyError> {
    if resource == "*" {
        return None;
    }
    let Some((_, after_prefix)) = resource.split_once(':') else {
        return Some(PolicyError::ResourceNotArn {
            resource: resource.to_string(),
        });
    };
    let (partition, after_partition) = match after_prefix.split_once(':') {
        Some((partition, rest)) => (partition, Some(rest)),
        None => (after_prefix, None),
    };
    if partition != PARTITION {
        return Some(partition_error(partition, after_partition.unwrap_or("")));
    }
    let Some(after_partition) = after_partition else {
        return Some(PolicyError::ResourceVendorNotQualified);
    };
    let (service, after_service) = after_partition
        .split_once(':')
        .unwrap_or((after_partition, ""));
    let names_region = !after_partition.contains(':') || !after_service.starts_with(':');
    match service {
        "iam" if names_region => {
            return Some(PolicyError::IamResourceWithRegion {
                resource: resource.to_string(),
            })
        }
        "s3" if names_region => {
            return Some(PolicyError::S3ResourceWithRegion {
                resource: resource.to_string(),
            })
        }
        _ => {}
    }
    if service == "iam" {
        let path = after_service.splitn(3, ':').nth(2).unwrap_or("");
        if path != "*"
            && !IAM_RESOURCE_PATH_PREFIXES
                .iter()
                .any(|prefix| path.starts_with(prefix))
        {
            return Some(PolicyError::IamResourcePath);
        }
    }
    None
}

/// IAM's message for a foreign partition shows the resource as the ARN it
/// read, missing parts as `*`.
fn partition_error(partition: &str, rest: &str) -> PolicyError {
    let parts: Vec<&str> = rest.split(':').collect();
    let part = |index: usize| parts.get(index).copied().unwrap_or("*");
    let service = if parts[0].is_empty() && parts.len() == 1 {
        "*"
    } else {
        parts[0]
    };
    let resource = if parts.len() > 3 {
        parts[3..].join(":")
    } else {
        "*".to_string()
    };
    PolicyError::InvalidPartition {
        partition: partition.to_string(),
        shown: format!(
            "arn:{partition}:{service}:{}:{}:{resource}",
            part(1),
            part(2)
        ),
    }
}

fn check_action_vendors(document: &PolicyDocument) -> Result<(), PolicyError> {
    for statement in &document.statements {
        let (ActionElement::Action(list) | ActionElement::NotAction(list)) = &statement.action;
        for action in list {
            check_action_vendor(action)?;
        }
    }
    Ok(())
}

fn check_action_vendor(action: &str) -> Result<(), PolicyError> {
    if action == "*" {
        return Ok(());
    }
    let mut parts = action.split(':');
    let vendor = parts.next().unwrap_or("");
    match (parts.next(), parts.next()) {
        (None, _) => return Err(PolicyError::ActionWithoutVendor),
        (Some(_), Some(_)) => return Err(PolicyError::ActionWithTwoColons),
        (Some(_), None) => {}
    }
    if vendor.contains(['*', '?']) {
        return Err(PolicyError::ActionVendorWildcard);
    }
    if vendor.is_empty()
        || !vendor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(PolicyError::InvalidVendor {
            vendor: vendor.to_string(),
        });
    }
    Ok(())
}
