//! The authorization decision: AWS's policy evaluation logic for requests
//! within one account.
//!
//! 1. An explicit `Deny` in any applicable policy (identity-based,
//!    permissions boundary, session, resource-based) decides.
//! 2. The root user is allowed (IAM policies never restrict it).
//! 3. A resource-based policy that names the principal itself (a user's ARN,
//!    a role session's ARN, a service, or `*`) allows on its own, even past
//!    an implicit deny in a boundary; one naming the role of a role session
//!    stands in for an identity-based allow but is still limited by the
//!    session's boundary and session policies; one naming only the account
//!    leaves the decision to the account's own policies.
//! 4. Otherwise an identity-based policy must allow, and then the permissions
//!    boundary (if any) and a session policy (if the session has any) must
//!    allow too.
//!
//! `evaluate_assume_role` is the same logic with the role's trust policy as
//! the resource-based policy, except that the trust policy must allow in
//! every case.

use std::sync::Arc;

use crate::context::{PrincipalKind, RequestContext};
use crate::document::Effect;
use crate::policy::{CompiledPolicy, CompiledStatement, PrincipalMatch};

/// The policies that apply to one principal; compile once and cache per
/// principal, invalidating when any of its policies change.
#[derive(Debug, Clone, Default)]
pub struct PrincipalPolicies {
    /// Inline and attached managed policies of the user or role, and of the
    /// user's groups.
    pub identity: Vec<Arc<CompiledPolicy>>,
    pub permissions_boundary: Option<Arc<CompiledPolicy>>,
    /// `Some` for a role session created with session policies (inline or
    /// by ARN); the session may do only what one of them allows.
    pub session: Option<Vec<Arc<CompiledPolicy>>>,
}

/// The kinds of policy a decision can rest on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyType {
    Identity,
    PermissionsBoundary,
    Session,
    /// Resource-based, a role's trust policy included.
    Resource,
}

/// The statement a decision rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRef {
    pub policy_type: PolicyType,
    pub policy_name: Arc<str>,
    /// Its position in the policy's `Statement` list.
    pub statement_index: usize,
    pub sid: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allowed),
    Deny(Denied),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// The account's root user.
    Root,
    Statement(StatementRef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Explicit(StatementRef),
    NoIdentityPolicyAllows,
    NoPermissionsBoundaryAllows,
    NoSessionPolicyAllows,
    /// AssumeRole: the role's trust policy does not allow the caller.
    NoTrustPolicyAllows,
    /// AssumeRole called with the root user's credentials.
    RootCannotAssumeRoles,
}

/// Decide `context` for a principal holding `policies`, with the resource's
/// own policy if it has one.
pub fn evaluate(
    context: &RequestContext,
    policies: &PrincipalPolicies,
    resource_policy: Option<&CompiledPolicy>,
) -> Decision {
    decide(context, policies, resource_policy, false)
}

/// Decide an `sts:AssumeRole` request (`context`'s resource is the role's
/// ARN) against the role's trust policy. `caller` holds the caller's
/// policies; a service principal has none.
pub fn evaluate_assume_role(
    context: &RequestContext,
    caller: Option<&PrincipalPolicies>,
    trust_policy: &CompiledPolicy,
) -> Decision {
    if context.principal().kind == PrincipalKind::Root {
        return Decision::Deny(Denied::RootCannotAssumeRoles);
    }
    let none = PrincipalPolicies::default();
    decide(context, caller.unwrap_or(&none), Some(trust_policy), true)
}

fn decide(
    context: &RequestContext,
    policies: &PrincipalPolicies,
    resource_policy: Option<&CompiledPolicy>,
    resource_policy_required: bool,
) -> Decision {
    if let Some(denied) = explicit_deny(context, policies, resource_policy) {
        return Decision::Deny(Denied::Explicit(denied));
    }
    let kind = &context.principal().kind;
    if *kind == PrincipalKind::Root {
        return Decision::Allow(Allowed::Root);
    }
    let resource_allow = resource_policy.and_then(|policy| {
        policy
            .first_applying(Effect::Allow, context)
            .map(|(statement, principal_match)| {
                (
                    reference(PolicyType::Resource, policy, statement),
                    principal_match,
                )
            })
    });
    if resource_policy_required && resource_allow.is_none() {
        return Decision::Deny(Denied::NoTrustPolicyAllows);
    }
    // Whether the resource policy stands in for an identity-based allow.
    let mut resource_grant = None;
    if let Some((statement, Some(principal_match))) = resource_allow {
        match (kind, principal_match) {
            (_, PrincipalMatch::Account) => {}
            (PrincipalKind::AssumedRole { .. }, PrincipalMatch::Exact) => {
                return Decision::Allow(Allowed::Statement(statement));
            }
            (PrincipalKind::AssumedRole { .. }, _) => resource_grant = Some(statement),
            _ => return Decision::Allow(Allowed::Statement(statement)),
        }
    }
    let identity_allow = first_allow(PolicyType::Identity, &policies.identity, context);
    let Some(granted) = identity_allow.or(resource_grant) else {
        return Decision::Deny(Denied::NoIdentityPolicyAllows);
    };
    if let Some(boundary) = &policies.permissions_boundary {
        if boundary.first_applying(Effect::Allow, context).is_none() {
            return Decision::Deny(Denied::NoPermissionsBoundaryAllows);
        }
    }
    if let Some(session) = &policies.session {
        if first_allow(PolicyType::Session, session, context).is_none() {
            return Decision::Deny(Denied::NoSessionPolicyAllows);
        }
    }
    Decision::Allow(Allowed::Statement(granted))
}

fn explicit_deny(
    context: &RequestContext,
    policies: &PrincipalPolicies,
    resource_policy: Option<&CompiledPolicy>,
) -> Option<StatementRef> {
    let deny_in = |policy_type: PolicyType, policy: &CompiledPolicy| {
        policy
            .first_applying(Effect::Deny, context)
            .map(|(statement, _)| reference(policy_type, policy, statement))
    };
    policies
        .identity
        .iter()
        .find_map(|policy| deny_in(PolicyType::Identity, policy))
        .or_else(|| {
            policies
                .permissions_boundary
                .as_ref()
                .and_then(|b| deny_in(PolicyType::PermissionsBoundary, b))
        })
        .or_else(|| {
            policies
                .session
                .iter()
                .flatten()
                .find_map(|policy| deny_in(PolicyType::Session, policy))
        })
        .or_else(|| resource_policy.and_then(|policy| deny_in(PolicyType::Resource, policy)))
}

fn first_allow(
    policy_type: PolicyType,
    policies: &[Arc<CompiledPolicy>],
    context: &RequestContext,
) -> Option<StatementRef> {
    policies.iter().find_map(|policy| {
        policy
            .first_applying(Effect::Allow, context)
            .map(|(statement, _)| reference(policy_type, policy, statement))
    })
}

fn reference(
    policy_type: PolicyType,
    policy: &CompiledPolicy,
    statement: &CompiledStatement,
) -> StatementRef {
    StatementRef {
        policy_type,
        policy_name: Arc::clone(policy.shared_name()),
        statement_index: statement.index,
        sid: statement.sid.clone(),
    }
}

/// The message of the `AccessDenied` (or `AccessDeniedException`) error for
/// a denial, in AWS's words.
pub fn denial_message(context: &RequestContext, denied: &Denied) -> String {
    if *denied == Denied::RootCannotAssumeRoles {
        return "Roles may not be assumed by root accounts.".to_string();
    }
    let action = context.action();
    let head = format!(
        "User: {} is not authorized to perform: {action} on resource: {}",
        context.principal().arn,
        context.resource()
    );
    let tail = match denied {
        Denied::Explicit(statement) => match statement.policy_type {
            PolicyType::Identity => {
                " with an explicit deny in an identity-based policy".to_string()
            }
            PolicyType::PermissionsBoundary => {
                " with an explicit deny in a permissions boundary".to_string()
            }
            PolicyType::Session => " with an explicit deny in a session policy".to_string(),
            PolicyType::Resource => " with an explicit deny in a resource-based policy".to_string(),
        },
        Denied::NoIdentityPolicyAllows => {
            format!(" because no identity-based policy allows the {action} action")
        }
        Denied::NoPermissionsBoundaryAllows => {
            format!(" because no permissions boundary allows the {action} action")
        }
        Denied::NoSessionPolicyAllows => {
            format!(" because no session policy allows the {action} action")
        }
        Denied::NoTrustPolicyAllows | Denied::RootCannotAssumeRoles => String::new(),
    };
    head + &tail
}
