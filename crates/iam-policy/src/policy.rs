//! Compiled policies: what a validated document becomes so that evaluating
//! it re-reads nothing.
//!
//! Actions are indexed by service (a statement listing hundreds of actions,
//! as `ReadOnlyAccess` does, is searched by its service first), patterns are
//! compiled, condition values parsed, and policy variables split out.

use std::sync::Arc;

use crate::arn::arn_matches;
use crate::condition::CompiledCondition;
use crate::context::{PrincipalKind, RequestContext};
use crate::document::{
    self, ActionElement, Effect, PolicyDocument, PolicyKind, PolicyVersion, PrincipalElement,
    Principals, ResourceElement, Statement,
};
use crate::error::PolicyError;
use crate::pattern::Pattern;
use crate::variables::Template;

/// A policy ready to evaluate. Cheap to share: hold it in an `Arc` and
/// compile it once per version of its document.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    name: Arc<str>,
    statements: Box<[CompiledStatement]>,
}

impl CompiledPolicy {
    /// Validate `text` as a policy of `kind` and compile it. `name` is how
    /// decisions refer to it (an ARN or an inline policy's name).
    pub fn parse(name: &str, text: &str, kind: PolicyKind) -> Result<Self, PolicyError> {
        Ok(Self::compile(name, &document::parse(text, kind)?))
    }

    pub fn compile(name: &str, document: &PolicyDocument) -> Self {
        let statements = document
            .statements
            .iter()
            .enumerate()
            .map(|(index, statement)| {
                CompiledStatement::compile(index, statement, document.version)
            })
            .collect();
        CompiledPolicy {
            name: Arc::from(name),
            statements,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first statement of `effect` that applies to the request, with how
    /// its principal matched (`None` for a statement naming no principal).
    pub(crate) fn first_applying(
        &self,
        effect: Effect,
        context: &RequestContext,
    ) -> Option<(&CompiledStatement, Option<PrincipalMatch>)> {
        self.statements
            .iter()
            .filter(|s| s.effect == effect)
            .find_map(|statement| {
                statement
                    .applies(context)
                    .map(|principal_match| (statement, principal_match))
            })
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }
}

/// How a statement's `Principal` named the request's principal, from the
/// least to the most specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PrincipalMatch {
    /// By its account (`123456789012` or `arn:aws:iam::123456789012:root`):
    /// the account's own policies decide.
    Account,
    /// `*`.
    Everyone,
    /// A role session, by its role's ARN.
    Role,
    /// By its own ARN (user, role session, root) or service name.
    Exact,
    /// A `NotPrincipal` that does not list it.
    NotListed,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledStatement {
    pub(crate) index: usize,
    pub(crate) sid: Option<Arc<str>>,
    effect: Effect,
    principal: Option<CompiledPrincipal>,
    actions: ActionMatcher,
    /// `None`: the resource the policy is attached to.
    resources: Option<ResourceMatcher>,
    conditions: Box<[CompiledCondition]>,
}

impl CompiledStatement {
    fn compile(index: usize, statement: &Statement, version: PolicyVersion) -> Self {
        let variables = version == PolicyVersion::V2012_10_17;
        CompiledStatement {
            index,
            sid: statement
                .sid
                .as_deref()
                .filter(|sid| !sid.is_empty())
                .map(Arc::from),
            effect: statement.effect,
            principal: statement.principal.as_ref().map(CompiledPrincipal::compile),
            actions: ActionMatcher::compile(&statement.action),
            resources: statement
                .resource
                .as_ref()
                .map(|element| ResourceMatcher::compile(element, variables)),
            conditions: statement
                .condition
                .iter()
                .filter_map(|entry| CompiledCondition::compile(entry, version))
                .collect(),
        }
    }

    /// `Some` when the statement applies: its action, resource, principal
    /// and every condition match. Cheap tests first.
    fn applies(&self, context: &RequestContext) -> Option<Option<PrincipalMatch>> {
        if !self.actions.matches(context.action_parts_lower()) {
            return None;
        }
        if let Some(resources) = &self.resources {
            if !resources.matches(context) {
                return None;
            }
        }
        let principal_match = match &self.principal {
            None => None,
            Some(principal) => Some(principal.matches(context)?),
        };
        self.conditions
            .iter()
            .all(|condition| condition.holds(context))
            .then_some(principal_match)
    }
}

#[derive(Debug, Clone)]
struct ActionMatcher {
    negated: bool,
    everything: bool,
    /// Sorted by service prefix (lowercased); the patterns match the part
    /// after the colon, lowercased.
    by_service: Vec<(Box<str>, Vec<Pattern>)>,
}

impl ActionMatcher {
    fn compile(element: &ActionElement) -> Self {
        let (negated, actions) = match element {
            ActionElement::Action(list) => (false, list),
            ActionElement::NotAction(list) => (true, list),
        };
        let mut everything = false;
        let mut by_service: Vec<(Box<str>, Vec<Pattern>)> = Vec::new();
        for action in actions {
            let lower = action.to_ascii_lowercase();
            let Some((service, name)) = lower.split_once(':') else {
                everything |= lower == "*";
                continue;
            };
            let pattern = Pattern::new(name, false);
            match by_service.iter_mut().find(|(known, _)| **known == *service) {
                Some((_, patterns)) => patterns.push(pattern),
                None => by_service.push((Box::from(service), vec![pattern])),
            }
        }
        by_service.sort_by(|a, b| a.0.cmp(&b.0));
        ActionMatcher {
            negated,
            everything,
            by_service,
        }
    }

    /// `action` is the request's service prefix and action name, lowercased.
    fn matches(&self, action: Option<(&str, &str)>) -> bool {
        let listed =
            self.everything || action.is_some_and(|(service, name)| self.lists(service, name));
        listed != self.negated
    }

    fn lists(&self, service: &str, name: &str) -> bool {
        match self
            .by_service
            .binary_search_by(|(known, _)| known.as_ref().cmp(service))
        {
            Ok(at) => self.by_service[at]
                .1
                .iter()
                .any(|pattern| pattern.matches(name)),
            Err(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
struct ResourceMatcher {
    negated: bool,
    everything: bool,
    patterns: Vec<Template>,
}

impl ResourceMatcher {
    fn compile(element: &ResourceElement, variables: bool) -> Self {
        let (negated, resources) = match element {
            ResourceElement::Resource(list) => (false, list),
            ResourceElement::NotResource(list) => (true, list),
        };
        ResourceMatcher {
            negated,
            everything: resources.iter().any(|resource| resource == "*"),
            patterns: resources
                .iter()
                .map(|resource| Template::compile(resource, true, false, variables))
                .collect(),
        }
    }

    fn matches(&self, context: &RequestContext) -> bool {
        let resource = context.resource();
        let listed = self.everything
            || self.patterns.iter().any(|template| {
                template
                    .resolve(context)
                    .is_some_and(|resolved| arn_matches(resolved.pattern(), resource))
            });
        listed != self.negated
    }
}

#[derive(Debug, Clone)]
struct CompiledPrincipal {
    negated: bool,
    everyone: bool,
    accounts: Vec<String>,
    /// User, role, role session and federated user ARNs.
    arns: Vec<String>,
    /// Lowercased. (Federated principals name web identity sessions, which
    /// Flotilla does not issue, so they match no request.)
    services: Vec<String>,
}

impl CompiledPrincipal {
    fn compile(element: &PrincipalElement) -> Self {
        let (negated, principals): (bool, &Principals) = match element {
            PrincipalElement::Principal(p) => (false, p),
            PrincipalElement::NotPrincipal(p) => (true, p),
        };
        let mut accounts = Vec::new();
        let mut arns = Vec::new();
        for name in &principals.aws {
            match account_of_root(name) {
                Some(account) => accounts.push(account.to_string()),
                None if name != "*" => arns.push(name.clone()),
                None => {}
            }
        }
        CompiledPrincipal {
            negated,
            everyone: principals.everyone,
            accounts,
            arns,
            services: principals
                .service
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
        }
    }

    fn matches(&self, context: &RequestContext) -> Option<PrincipalMatch> {
        let found = self.find(context);
        match (self.negated, found) {
            (false, found) => found,
            (true, None) => Some(PrincipalMatch::NotListed),
            (true, Some(_)) => None,
        }
    }

    fn find(&self, context: &RequestContext) -> Option<PrincipalMatch> {
        let principal = context.principal();
        let everyone = self.everyone.then_some(PrincipalMatch::Everyone);
        let found = match &principal.kind {
            PrincipalKind::Anonymous => None,
            PrincipalKind::Service { name } => self
                .services
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
                .then_some(PrincipalMatch::Exact),
            kind => {
                if self.arns.contains(&principal.arn) {
                    Some(PrincipalMatch::Exact)
                } else if matches!(kind, PrincipalKind::AssumedRole { role_arn, .. } if self.arns.contains(role_arn))
                {
                    Some(PrincipalMatch::Role)
                } else if self.accounts.contains(&principal.account) {
                    Some(PrincipalMatch::Account)
                } else {
                    None
                }
            }
        };
        found.or(everyone)
    }
}

/// `123456789012` or `arn:aws:iam::123456789012:root` name an account.
fn account_of_root(name: &str) -> Option<&str> {
    if document::is_account_id(name) {
        return Some(name);
    }
    name.strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.strip_suffix(":root"))
        .filter(|account| document::is_account_id(account))
}
