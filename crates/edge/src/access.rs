//! Who may call: the access keys signatures are verified against, and the
//! one place every request of every service is authorized.
//!
//! ```text
//! Authorization ─▶ AccessKeys: configured credentials file, else IAM (users'
//!                  keys, STS sessions; read from the store on each request)
//!              ─▶ SigV4 verify ─▶ session token compared ─▶ Identity
//! handler call ─▶ authorize: checks (action, resource ARNs, condition keys)
//!                  from flotilla_iam_policy::operations for ECS and ECR,
//!                  `service:Operation` on `*` or the named IAM entity elsewhere
//!              ─▶ evaluate(context, principal's compiled policies) ─▶ handler
//! ```
//!
//! Keys from the configured credentials file (and `flotilla up`'s
//! `test`/`test`) act for the account's root and are never restricted, as
//! the operator's own keys; IAM's users and role sessions are evaluated on
//! every request. STS's operations decide for themselves (AssumeRole by
//! the role's trust policy; GetCallerIdentity and GetSessionToken need no
//! permission, as in AWS).

use std::cell::RefCell;
use std::sync::Arc;

use flotilla_iam::records::SessionSubject;
use flotilla_iam::{Identity, KeyLookup, RequestFacts};
use flotilla_iam_policy::operations::{self, Check, RequestFacts as OperationFacts, Service};
use flotilla_iam_policy::{denial_message, evaluate, Decision, Principal, PrincipalKind};
use flotilla_protocol::Protocol;
use flotilla_sigv4::{AccessKeys, SigningSecret};
use flotilla_types::ApiError;
use serde_json::Value;

use crate::services::{Call, Input, ServiceEntry};
use crate::Edge;

/// What the access key of a request turned out to be.
pub(crate) enum KeySource {
    Unknown,
    Configured,
    Iam(Arc<flotilla_iam::ResolvedKey>),
    Expired,
}

/// The keys SigV4 verification looks in: the configured ones first, then
/// IAM's. Remembers where it found the one asked for.
pub(crate) struct EdgeKeys<'a> {
    edge: &'a Edge,
    now_ms: u64,
    pub found: RefCell<KeySource>,
}

impl<'a> EdgeKeys<'a> {
    pub fn new(edge: &'a Edge, now_ms: u64) -> Self {
        EdgeKeys {
            edge,
            now_ms,
            found: RefCell::new(KeySource::Unknown),
        }
    }
}

impl AccessKeys for EdgeKeys<'_> {
    fn secret(&self, access_key_id: &str) -> Option<Arc<SigningSecret>> {
        if let Some(secret) = self.edge.credentials.secret(access_key_id) {
            *self.found.borrow_mut() = KeySource::Configured;
            return Some(secret);
        }
        match self.edge.iam.access_key(access_key_id, self.now_ms) {
            Ok(KeyLookup::Found(key)) => {
                let secret = Arc::clone(&key.secret);
                *self.found.borrow_mut() = KeySource::Iam(key);
                Some(secret)
            }
            Ok(KeyLookup::Expired) => {
                *self.found.borrow_mut() = KeySource::Expired;
                None
            }
            Ok(KeyLookup::Unknown) => None,
            Err(error) => {
                tracing::warn!(%error, "access key lookup failed");
                None
            }
        }
    }
}

/// Who a verified request acts as.
pub(crate) struct Authenticated {
    pub principal_arn: String,
    pub identity: Arc<Identity>,
    /// Signed with temporary credentials from STS.
    pub temporary: bool,
}

/// A request's `X-Amz-Security-Token`, from its header or, in a
/// presigned URL, its query.
pub(crate) fn security_token(parts: &axum::http::request::Parts) -> Option<String> {
    parts
        .headers
        .get("x-amz-security-token")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let encoded = parts
                .uri
                .query()?
                .split('&')
                .find_map(|pair| pair.strip_prefix("X-Amz-Security-Token="))?;
            percent_encoding::percent_decode_str(encoded)
                .decode_utf8()
                .ok()
                .map(|decoded| decoded.into_owned())
        })
}

/// The identity behind a verified key. `security_token` is the request's
/// `X-Amz-Security-Token`, which temporary credentials must carry.
pub(crate) fn identify(
    edge: &Edge,
    access_key_id: &str,
    source: KeySource,
    security_token: Option<&str>,
    protocol: Protocol,
) -> Result<Authenticated, ApiError> {
    let account = &edge.ecs.scope().account_id;
    match source {
        KeySource::Configured => {
            let principal_arn = edge
                .principals
                .get(access_key_id)
                .cloned()
                .unwrap_or_else(|| format!("arn:aws:iam::{account}:root"));
            // The operator's own keys: never restricted.
            let identity = Identity {
                principal: Principal {
                    arn: principal_arn.clone(),
                    account: account.clone(),
                    kind: PrincipalKind::Root,
                },
                policies: None,
                principal_tags: Vec::new(),
            };
            Ok(Authenticated {
                principal_arn,
                identity: Arc::new(identity),
                temporary: false,
            })
        }
        KeySource::Iam(key) => {
            let temporary = key.session_token.is_some();
            if let Some(token) = &key.session_token {
                let matches = security_token.is_some_and(|given| {
                    constant_time_eq(given.as_bytes(), token.expose().as_bytes())
                });
                if !matches {
                    return Err(invalid_token(protocol));
                }
            }
            let identity = edge
                .iam
                .identity(&key.subject, access_key_id)
                .map_err(|error| {
                    // The user or role behind the key is gone: its keys with it.
                    if error.code == "NoSuchEntityException" {
                        invalid_token(protocol)
                    } else {
                        error
                    }
                })?;
            let principal_arn = match &key.subject {
                SessionSubject::Root => format!("arn:aws:iam::{account}:root"),
                _ => identity.principal.arn.clone(),
            };
            Ok(Authenticated {
                principal_arn,
                identity,
                temporary,
            })
        }
        KeySource::Expired => Err(match protocol {
            Protocol::Query => ApiError::new(
                "ExpiredToken",
                400,
                "The security token included in the request is expired",
            ),
            _ => ApiError::new(
                "ExpiredTokenException",
                400,
                "The security token included in the request is expired",
            ),
        }),
        KeySource::Unknown => Err(invalid_token(protocol)),
    }
}

fn invalid_token(protocol: Protocol) -> ApiError {
    match protocol {
        Protocol::Query => ApiError::new(
            "InvalidClientTokenId",
            403,
            "The security token included in the request is invalid.",
        ),
        _ => ApiError::new(
            "UnrecognizedClientException",
            400,
            "The security token included in the request is invalid.",
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decides `call` for its caller: every check the operation needs must be
/// allowed. The root (and configured keys) pass at once.
pub(crate) fn authorize(edge: &Edge, entry: &ServiceEntry, call: &Call) -> Result<(), ApiError> {
    let identity = &call.identity;
    let Some(policies) = &identity.policies else {
        return Ok(());
    };
    if entry.signing_name == "sts" {
        return Ok(());
    }
    let scope = edge.ecs.scope();
    let facts = RequestFacts {
        now_ms: call.now_ms,
        region: &scope.region,
        source_ip: call.source_ip.as_deref(),
        temporary: call.temporary,
    };
    for check in checks(edge, entry, call)? {
        let mut context = identity.context(&check.action, &check.resource, &facts);
        for (key, values) in check.condition_keys {
            context.set(&key, values);
        }
        if let Decision::Deny(denied) = evaluate(&context, policies, None) {
            let message = denial_message(&context, &denied);
            tracing::debug!(principal = %identity.principal.arn, action = %check.action, resource = %check.resource, "request denied");
            return Err(match entry.protocol {
                Protocol::Query => ApiError::new("AccessDenied", 403, message),
                _ => ApiError::new("AccessDeniedException", 400, message),
            });
        }
    }
    Ok(())
}

/// The authorization checks of one call.
fn checks(edge: &Edge, entry: &ServiceEntry, call: &Call) -> Result<Vec<Check>, ApiError> {
    let any = |action: String| Check {
        action,
        resource: "*".to_owned(),
        condition_keys: Vec::new(),
    };
    let service = match entry.label {
        "ecs" => Service::Ecs,
        "ecr" => Service::Ecr,
        "flotilla" => return Ok(vec![any(format!("ecs:{}", call.operation))]),
        _ => {
            let resource = match &call.input {
                Input::Query(value) if entry.signing_name == "iam" => {
                    match iam_resource(&scope_account(edge), value) {
                        // A user acting on itself (its own keys, GetUser
                        // without a name) acts on its own ARN.
                        any if any == "*" && is_own_user_operation(&call.operation) => {
                            match &call.identity.principal.kind {
                                PrincipalKind::User { .. } => call.identity.principal.arn.clone(),
                                _ => any,
                            }
                        }
                        named => named,
                    }
                }
                _ => "*".to_owned(),
            };
            return Ok(vec![Check {
                action: format!("{}:{}", iam_prefix(entry.signing_name), call.operation),
                resource,
                condition_keys: Vec::new(),
            }]);
        }
    };
    let body: Value = match &call.input {
        Input::Json(bytes) => serde_json::from_slice(bytes).unwrap_or(Value::Null),
        Input::Query(value) => value.clone(),
    };
    let facts = match service {
        Service::Ecs => ecs_facts(edge, &call.operation, &body)?,
        Service::Ecr => ecr_facts(edge, &body),
    };
    // An operation with no rule (one Flotilla answers but the table does
    // not list) is authorized as its action on every resource.
    Ok(operations::checks(service, &call.operation, &facts)
        .unwrap_or_else(|_| vec![any(format!("{}:{}", entry.signing_name, call.operation))]))
}

/// The service prefix IAM's actions use, where it is not the signing name.
fn iam_prefix(signing_name: &str) -> &str {
    match signing_name {
        "monitoring" => "cloudwatch",
        other => other,
    }
}

/// IAM operations that act on the calling user when no `UserName` is given.
fn is_own_user_operation(operation: &str) -> bool {
    matches!(
        operation,
        "GetUser" | "CreateAccessKey" | "ListAccessKeys" | "UpdateAccessKey" | "DeleteAccessKey"
    )
}

fn scope_account(edge: &Edge) -> String {
    edge.ecs.scope().account_id.clone()
}

/// The IAM entity an IAM request names, as its ARN (path-less), or `*`.
fn iam_resource(account: &str, value: &Value) -> String {
    let named = |member: &str| value.get(member).and_then(Value::as_str);
    if let Some(arn) = named("PolicyArn") {
        return arn.to_owned();
    }
    if let Some(name) = named("UserName") {
        return format!("arn:aws:iam::{account}:user/{name}");
    }
    if let Some(name) = named("RoleName") {
        return format!("arn:aws:iam::{account}:role/{name}");
    }
    if let Some(name) = named("GroupName") {
        return format!("arn:aws:iam::{account}:group/{name}");
    }
    if let Some(name) = named("InstanceProfileName") {
        return format!("arn:aws:iam::{account}:instance-profile/{name}");
    }
    if let Some(name) = named("PolicyName") {
        return format!("arn:aws:iam::{account}:policy/{name}");
    }
    "*".to_owned()
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The last segment of an ARN or the name itself.
fn short_name(given: &str) -> &str {
    if given.starts_with("arn:") {
        given.rsplit('/').next().unwrap_or(given)
    } else {
        given
    }
}

/// ECS's resources as ARNs, from the request's body. A cluster that is not
/// named is `default`; a task definition family resolves to its latest
/// ACTIVE revision, whose roles count as passed.
fn ecs_facts(edge: &Edge, operation: &str, body: &Value) -> Result<OperationFacts, ApiError> {
    let scope = edge.ecs.scope();
    let arn = |resource: String| scope.arn("ecs", &resource);
    let full = |given: &str, kind: &str, within_cluster: Option<&str>| {
        if given.starts_with("arn:") {
            given.to_owned()
        } else {
            match within_cluster {
                Some(cluster) => arn(format!("{kind}/{cluster}/{given}")),
                None => arn(format!("{kind}/{given}")),
            }
        }
    };
    let cluster_given = match operation {
        "CreateCluster" => body.get("clusterName").and_then(Value::as_str),
        _ => body.get("cluster").and_then(Value::as_str),
    }
    .unwrap_or("default")
    .to_owned();
    let cluster_name = short_name(&cluster_given).to_owned();
    let mut facts = OperationFacts {
        region: scope.region.clone(),
        account: scope.account_id.clone(),
        ..Default::default()
    };
    facts.clusters = if operation == "DescribeClusters" {
        let named = strings(body.get("clusters"));
        if named.is_empty() {
            vec![arn("cluster/default".to_owned())]
        } else {
            named.iter().map(|c| full(c, "cluster", None)).collect()
        }
    } else {
        vec![full(&cluster_given, "cluster", None)]
    };
    let services = match operation {
        "CreateService" => strings(body.get("serviceName")),
        "DescribeServices" => strings(body.get("services")),
        _ => strings(body.get("service")),
    };
    facts.services = services
        .iter()
        .map(|s| full(s, "service", Some(&cluster_name)))
        .collect();
    let mut tasks = strings(body.get("task"));
    tasks.extend(strings(body.get("tasks")));
    facts.tasks = tasks
        .iter()
        .map(|t| full(t, "task", Some(&cluster_name)))
        .collect();
    let mut instances = strings(body.get("containerInstance"));
    instances.extend(strings(body.get("containerInstances")));
    facts.container_instances = instances
        .iter()
        .map(|i| full(i, "container-instance", Some(&cluster_name)))
        .collect();
    let mut providers: Vec<String> = body
        .get("capacityProviderStrategy")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("capacityProvider").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    providers.extend(strings(body.get("capacityProviders")));
    if operation == "CreateCapacityProvider" {
        providers.extend(strings(body.get("name")));
    }
    if matches!(
        operation,
        "UpdateCapacityProvider" | "DeleteCapacityProvider"
    ) {
        providers.extend(strings(body.get("name")));
        providers.extend(strings(body.get("capacityProvider")));
    }
    facts.capacity_providers = providers
        .iter()
        .map(|p| full(p, "capacity-provider", None))
        .collect();
    facts.tagged_resource = body
        .get("resourceArn")
        .and_then(Value::as_str)
        .map(str::to_owned);
    facts.request_tags = body
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tag| {
            Some((
                tag.get("key")?.as_str()?.to_owned(),
                tag.get("value")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ))
        })
        .collect();
    facts.removed_tag_keys = strings(body.get("tagKeys"));
    let mut roles: Vec<String> = Vec::new();
    roles.extend(strings(body.get("taskRoleArn")));
    roles.extend(strings(body.get("executionRoleArn")));
    if let Some(overrides) = body.get("overrides") {
        roles.extend(strings(overrides.get("taskRoleArn")));
        roles.extend(strings(overrides.get("executionRoleArn")));
    }
    let mut definitions = strings(body.get("taskDefinition"));
    definitions.extend(strings(body.get("taskDefinitions")));
    // Only these are authorized on the task definition or pass its roles;
    // the others (DescribeTaskDefinition, ...) on `*`, with no store read.
    let resolves = matches!(
        operation,
        "RunTask"
            | "StartTask"
            | "CreateService"
            | "UpdateService"
            | "DeregisterTaskDefinition"
            | "DeleteTaskDefinitions"
    );
    if !resolves {
        definitions.clear();
    }
    for given in definitions {
        match edge.ecs.task_definition_roles(&given)? {
            Some((resolved, definition_roles)) => {
                facts.task_definitions.push(resolved);
                if matches!(
                    operation,
                    "RunTask" | "StartTask" | "CreateService" | "UpdateService"
                ) {
                    roles.extend(definition_roles);
                }
            }
            // One that does not exist is authorized by the name given;
            // the operation itself then answers that it does not exist.
            None => facts
                .task_definitions
                .push(full(&given, "task-definition", None)),
        }
    }
    roles.retain(|role| !role.is_empty());
    roles.sort();
    roles.dedup();
    facts.task_roles = roles;
    facts.service_roles = strings(body.get("role"));
    Ok(facts)
}

fn ecr_facts(edge: &Edge, body: &Value) -> OperationFacts {
    let scope = edge.ecs.scope();
    let mut repositories = strings(body.get("repositoryName"));
    repositories.extend(strings(body.get("repositoryNames")));
    OperationFacts {
        region: scope.region.clone(),
        account: scope.account_id.clone(),
        repositories: repositories
            .iter()
            .map(|name| scope.arn("ecr", &format!("repository/{name}")))
            .collect(),
        tagged_resource: body
            .get("resourceArn")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_requests_name_their_entity() {
        let value = serde_json::json!({"UserName": "alice"});
        assert_eq!(
            iam_resource("123456789012", &value),
            "arn:aws:iam::123456789012:user/alice"
        );
        assert_eq!(iam_resource("123456789012", &serde_json::json!({})), "*");
        assert_eq!(iam_prefix("monitoring"), "cloudwatch");
        assert_eq!(iam_prefix("logs"), "logs");
    }

    fn edge() -> Edge {
        use flotilla_control::Ecs;
        use flotilla_store::MemoryStore;
        let store: Arc<dyn flotilla_store::Store> = Arc::new(MemoryStore::new());
        let ecs = Arc::new(Ecs::new(
            Arc::clone(&store),
            flotilla_types::arn::Scope::new("us-east-1", "000000000000"),
            Arc::new(crate::SystemClock),
            Arc::new(crate::RandomIds),
        ));
        Edge {
            ecs,
            credentials: Arc::new(
                flotilla_sigv4::Credentials::from_pairs([("test", "test")]).expect("credentials"),
            ),
            clock: Arc::new(crate::SystemClock),
            ids: Arc::new(crate::RandomIds),
            metrics: crate::Metrics::default(),
            principals: Default::default(),
            iam: Arc::new(flotilla_iam::Iam::new(Arc::clone(&store), "000000000000")),
            store,
            agent_heartbeat_timeout_ms: 60_000,
            registry: None,
            logs: None,
            secrets: None,
            elbv2: None,
            s3: None,
            task_credentials_duration_seconds:
                crate::task_roles::TASK_CREDENTIALS_DURATION_SECONDS_DEFAULT,
        }
    }

    /// (action, resource, condition keys) of a check, for comparison.
    type Seen = (String, String, Vec<(String, Vec<String>)>);

    fn checks_of(edge: &Edge, operation: &str, body: Value) -> Vec<Seen> {
        let facts = ecs_facts(edge, operation, &body).expect("facts");
        operations::checks(Service::Ecs, operation, &facts)
            .expect("a rule")
            .into_iter()
            .map(|check| (check.action, check.resource, check.condition_keys))
            .collect()
    }

    #[tokio::test]
    async fn ecs_requests_are_authorized_on_resolved_arns_and_pass_their_roles() {
        let edge = edge();
        let caller = flotilla_control::Caller {
            access_key_id: "test".to_owned(),
            principal_arn: "arn:aws:iam::000000000000:root".to_owned(),
        };
        let register = flotilla_types::ecs::EcsRequest::decode(
            "RegisterTaskDefinition",
            br#"{"family":"web","taskRoleArn":"arn:aws:iam::000000000000:role/app","containerDefinitions":[{"name":"c","image":"busybox","memory":64}]}"#,
        )
        .expect("known")
        .expect("decodes");
        edge.ecs
            .handle(&caller, register)
            .await
            .expect("registered");

        let run = checks_of(
            &edge,
            "RunTask",
            serde_json::json!({"cluster": "prod", "taskDefinition": "web"}),
        );
        let cluster = "arn:aws:ecs:us-east-1:000000000000:cluster/prod".to_owned();
        assert_eq!(run[0].0, "ecs:RunTask");
        assert_eq!(
            run[0].1,
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1"
        );
        assert!(
            run[0]
                .2
                .contains(&("ecs:cluster".to_owned(), vec![cluster])),
            "{:?}",
            run[0].2
        );
        let pass = run
            .iter()
            .find(|check| check.0 == "iam:PassRole")
            .expect("PassRole checked");
        assert_eq!(pass.1, "arn:aws:iam::000000000000:role/app");
        assert_eq!(
            pass.2,
            vec![(
                "iam:PassedToService".to_owned(),
                vec!["ecs-tasks.amazonaws.com".to_owned()]
            )]
        );

        let describe = checks_of(
            &edge,
            "DescribeTaskDefinition",
            serde_json::json!({"taskDefinition": "web"}),
        );
        assert_eq!(
            describe,
            vec![(
                "ecs:DescribeTaskDefinition".to_owned(),
                "*".to_owned(),
                Vec::new()
            )]
        );

        let stop = checks_of(&edge, "StopTask", serde_json::json!({"task": "abc"}));
        assert_eq!(
            stop[0].1,
            "arn:aws:ecs:us-east-1:000000000000:task/default/abc"
        );

        let service = checks_of(
            &edge,
            "CreateService",
            serde_json::json!({"cluster": "prod", "serviceName": "api", "taskDefinition": "web"}),
        );
        assert_eq!(
            service[0].1,
            "arn:aws:ecs:us-east-1:000000000000:service/prod/api"
        );
        assert!(service.iter().any(|check| check.0 == "iam:PassRole"));
    }

    #[test]
    fn short_names_of_arns() {
        assert_eq!(short_name("arn:aws:ecs:us-east-1:1:cluster/prod"), "prod");
        assert_eq!(short_name("prod"), "prod");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
