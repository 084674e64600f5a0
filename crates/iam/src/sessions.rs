//! STS's temporary credentials: AssumeRole (a session of a role, its trust
//! policy checked) and GetSessionToken (a session of the caller itself).
//! Sessions are records in the store, so any replica verifies them, and
//! they stop working at their expiry; [`Iam::collect_expired_sessions`]
//! removes them afterwards.

use base64::Engine;
use flotilla_aws::sts as wire;
use flotilla_iam_policy::document;
use flotilla_iam_policy::{
    denial_message, evaluate_assume_role, managed, Decision, PolicyKind, PrincipalKind,
};
use flotilla_records::{encode, mutate, Attempt};
use flotilla_store::Txn;
use flotilla_types::ApiError;
use sha2::{Digest, Sha256};

use crate::authority::{Identity, RequestFacts};
use crate::records::{Secret, SessionRecord, SessionSubject, SESSIONS};
use crate::users::fresh_key;
use crate::{seconds, Context, Iam};

/// Shortest and longest session AssumeRole grants (the role's
/// `MaxSessionDuration` may cap it lower).
pub const SESSION_DURATION_SECONDS_MIN: i32 = 900;
pub const SESSION_DURATION_SECONDS_MAX: i32 = 43_200;
/// AssumeRole's default duration.
pub const ASSUME_ROLE_DURATION_DEFAULT_SECONDS: i32 = 3_600;
/// GetSessionToken: an IAM user's sessions last up to 36 hours, 12 by
/// default; the root's at most one hour.
pub const USER_SESSION_DURATION_SECONDS_MAX: i32 = 129_600;
pub const USER_SESSION_DURATION_DEFAULT_SECONDS: i32 = 43_200;
pub const ROOT_SESSION_DURATION_SECONDS_MAX: i32 = 3_600;
/// Expired sessions removed per transaction by the collector.
pub const SESSIONS_COLLECTED_PER_TXN: usize = 128;

fn validation(message: String) -> ApiError {
    ApiError::new("ValidationError", 400, message)
}

fn access_denied(message: String) -> ApiError {
    ApiError::new("AccessDenied", 403, message)
}

fn check_duration(seconds: i32, min: i32, max: i32) -> Result<(), ApiError> {
    if seconds < min {
        return Err(validation(format!(
            "1 validation error detected: Value '{seconds}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to {min}"
        )));
    }
    if seconds > max {
        return Err(validation(format!(
            "1 validation error detected: Value '{seconds}' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to {max}"
        )));
    }
    Ok(())
}

/// `[\w+=,.@-]*` within `min..=max` characters, as STS checks a session
/// name or an external id.
fn check_sts_text(
    member: &str,
    value: &str,
    min: usize,
    max: usize,
    pattern: bool,
) -> Result<(), ApiError> {
    let length = value.chars().count();
    if length < min || length > max {
        return Err(validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must have length {}",
            if length < min {
                format!("greater than or equal to {min}")
            } else {
                format!("less than or equal to {max}")
            }
        )));
    }
    if pattern
        && !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    {
        return Err(validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )));
    }
    Ok(())
}

impl Iam {
    /// AssumeRole for `caller`: the role's trust policy (and the caller's
    /// own policies) decide, through `evaluate_assume_role`.
    pub async fn assume_role(
        &self,
        context: &Context<'_>,
        caller: &Identity,
        facts: &RequestFacts<'_>,
        request: wire::AssumeRoleRequest,
    ) -> Result<wire::AssumeRoleResponse, ApiError> {
        if let Some(member) = request.missing_required() {
            return Err(crate::errors::missing(member));
        }
        let role_arn = request.role_arn.clone().unwrap_or_default();
        let session_name = request.role_session_name.clone().unwrap_or_default();
        check_sts_text("roleSessionName", &session_name, 2, 64, true)?;
        if role_arn.chars().count() < 20 || role_arn.chars().count() > 2048 {
            return Err(validation(format!(
                "1 validation error detected: Value '{role_arn}' at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"
            )));
        }
        if let Some(external_id) = &request.external_id {
            check_sts_text("externalId", external_id, 2, 1224, true)?;
        }
        let duration = request
            .duration_seconds
            .unwrap_or(ASSUME_ROLE_DURATION_DEFAULT_SECONDS);
        check_duration(
            duration,
            SESSION_DURATION_SECONDS_MIN,
            SESSION_DURATION_SECONDS_MAX,
        )?;
        if let Some(policy) = &request.policy {
            document::check_session_policy_size(policy)
                .map_err(|error| crate::errors::policy_refused(&error))?;
            document::parse(policy, PolicyKind::Session).map_err(|error| {
                ApiError::new("MalformedPolicyDocumentException", 400, error.to_string())
            })?;
        }
        let policy_arns: Vec<String> = request
            .policy_arns
            .iter()
            .flatten()
            .filter_map(|descriptor| descriptor.arn.clone())
            .collect();
        for arn in &policy_arns {
            if managed::by_arn(arn).is_none() && self.customer_policy(arn)?.is_none() {
                return Err(validation(format!(
                    "Policy {arn} does not exist or is not attachable."
                )));
            }
        }
        let mut decision_context = caller.context("sts:AssumeRole", &role_arn, facts);
        decision_context.set("sts:RoleSessionName", vec![session_name.clone()]);
        if let Some(external_id) = &request.external_id {
            decision_context.set("sts:ExternalId", vec![external_id.clone()]);
        }
        let found = self.role_by_arn(&role_arn)?;
        let (role, trust) = match found {
            Some((role, Some(trust))) => (role, trust),
            // An unknown role is refused as a trust policy that does not
            // allow the caller would be: nothing tells which roles exist.
            _ => {
                if caller.principal.kind == PrincipalKind::Root {
                    return Err(access_denied(
                        "Roles may not be assumed by root accounts.".to_owned(),
                    ));
                }
                return Err(access_denied(format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                    caller.principal.arn
                )));
            }
        };
        match evaluate_assume_role(&decision_context, caller.policies.as_ref(), &trust) {
            Decision::Allow(_) => {}
            Decision::Deny(denied) => {
                return Err(access_denied(denial_message(&decision_context, &denied)))
            }
        }
        if duration > role.max_session_duration_seconds {
            return Err(validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
                    .to_owned(),
            ));
        }
        let subject = SessionSubject::Role {
            role_name: role.name.clone(),
            session_name: session_name.clone(),
            session_policy: request.policy.clone(),
            session_policy_arns: policy_arns,
        };
        let session = self.issue(context, subject, duration).await?;
        let packed_policy_size = request.policy.as_ref().map(|policy| {
            (document::policy_size_chars(policy) * 100 / document::SESSION_POLICY_CHARS_MAX) as i32
        });
        Ok(wire::AssumeRoleResponse {
            assumed_role_user: Some(wire::AssumedRoleUser {
                arn: Some(format!(
                    "arn:aws:sts::{}:assumed-role/{}/{session_name}",
                    self.account_id, role.name
                )),
                assumed_role_id: Some(format!("{}:{session_name}", role.role_id)),
            }),
            credentials: Some(credentials_wire(&session)),
            packed_policy_size,
            source_identity: request.source_identity.clone(),
            ..Default::default()
        })
    }

    /// A session of `role_arn` for an AWS service acting for itself (ECS's
    /// `ecs-tasks.amazonaws.com` for a task's roles): only the role's trust
    /// policy decides, as for any service principal. `duration_seconds` is
    /// not held to AssumeRole's 900-second floor (the server may shorten it
    /// for tests), only to the role's maximum.
    pub async fn assume_role_for_service(
        &self,
        context: &Context<'_>,
        service: &str,
        role_arn: &str,
        session_name: &str,
        duration_seconds: i32,
    ) -> Result<ServiceSession, ApiError> {
        let service_identity = Identity {
            principal: flotilla_iam_policy::Principal::service(service),
            policies: None,
            principal_tags: Vec::new(),
        };
        let facts = RequestFacts {
            now_ms: context.now_ms,
            region: "",
            source_ip: None,
            temporary: false,
        };
        let mut decision_context = service_identity.context("sts:AssumeRole", role_arn, &facts);
        decision_context.set("sts:RoleSessionName", vec![session_name.to_owned()]);
        let not_trusted = || {
            access_denied(format!(
                "{service} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
            ))
        };
        let Some((role, Some(trust))) = self.role_by_arn(role_arn)? else {
            return Err(not_trusted());
        };
        if !matches!(
            evaluate_assume_role(&decision_context, None, &trust),
            Decision::Allow(_)
        ) {
            return Err(not_trusted());
        }
        let duration_seconds = duration_seconds.clamp(1, role.max_session_duration_seconds);
        let subject = SessionSubject::Role {
            role_name: role.name.clone(),
            session_name: session_name.to_owned(),
            session_policy: None,
            session_policy_arns: Vec::new(),
        };
        let session = self.issue(context, subject, duration_seconds).await?;
        Ok(ServiceSession {
            access_key_id: session.access_key_id,
            secret_access_key: session.secret.expose().to_owned(),
            session_token: session.token.expose().to_owned(),
            expires_ms: session.expires_ms,
        })
    }

    /// GetSessionToken: temporary credentials for the caller itself, an IAM
    /// user or the root. Sessions cannot make further sessions.
    pub async fn get_session_token(
        &self,
        context: &Context<'_>,
        caller: &Identity,
        temporary: bool,
        request: wire::GetSessionTokenRequest,
    ) -> Result<wire::GetSessionTokenResponse, ApiError> {
        if temporary {
            return Err(access_denied(
                "Cannot call GetSessionToken with session credentials".to_owned(),
            ));
        }
        let (subject, default, max) = match &caller.principal.kind {
            PrincipalKind::Root => (
                SessionSubject::Root,
                ROOT_SESSION_DURATION_SECONDS_MAX,
                ROOT_SESSION_DURATION_SECONDS_MAX,
            ),
            PrincipalKind::User { name, .. } => (
                SessionSubject::User {
                    user_name: name.clone(),
                },
                USER_SESSION_DURATION_DEFAULT_SECONDS,
                USER_SESSION_DURATION_SECONDS_MAX,
            ),
            _ => {
                return Err(access_denied(
                    "Cannot call GetSessionToken with session credentials".to_owned(),
                ))
            }
        };
        let duration = request.duration_seconds.unwrap_or(default);
        check_duration(duration, SESSION_DURATION_SECONDS_MIN, max)?;
        let session = self.issue(context, subject, duration).await?;
        Ok(wire::GetSessionTokenResponse {
            credentials: Some(credentials_wire(&session)),
            ..Default::default()
        })
    }

    async fn issue(
        &self,
        context: &Context<'_>,
        subject: SessionSubject,
        duration_seconds: i32,
    ) -> Result<SessionRecord, ApiError> {
        let (access_key_id, secret) = fresh_key("ASIA", context);
        let token_seed = format!(
            "{}:{}:{}",
            (context.fresh_id)(),
            (context.fresh_id)(),
            (context.fresh_id)()
        );
        let mut token_bytes = Sha256::digest(format!("token-a:{token_seed}").as_bytes()).to_vec();
        token_bytes.extend_from_slice(&Sha256::digest(format!("token-b:{token_seed}").as_bytes()));
        let token = base64::engine::general_purpose::STANDARD.encode(token_bytes);
        let session = SessionRecord {
            access_key_id: access_key_id.clone(),
            secret,
            token: Secret::new(token),
            expires_ms: context.now_ms + duration_seconds as u64 * 1000,
            subject,
        };
        let key = format!("{SESSIONS}{access_key_id}");
        mutate(&*self.store, || {
            let txn = Txn::new().expect(&key, 0).put(&key, encode(&session));
            Ok(Attempt::Commit(txn, ()))
        })
        .await?;
        Ok(session)
    }

    /// Removes sessions that expired before `now_ms`; answers how many.
    pub async fn collect_expired_sessions(&self, now_ms: u64) -> Result<usize, ApiError> {
        let expired: Vec<String> = self
            .read_all::<SessionRecord>(SESSIONS)?
            .into_iter()
            .filter(|(_, session)| session.expires_ms <= now_ms)
            .map(|(id, _)| id)
            .collect();
        let mut removed = 0;
        for batch in expired.chunks(SESSIONS_COLLECTED_PER_TXN) {
            let txn = batch
                .iter()
                .fold(Txn::new(), |txn, id| txn.delete(format!("{SESSIONS}{id}")));
            self.store
                .commit(txn)
                .await
                .map_err(flotilla_records::store_error)?;
            removed += batch.len();
        }
        Ok(removed)
    }
}

/// Credentials [`Iam::assume_role_for_service`] issued.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceSession {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expires_ms: u64,
}

impl std::fmt::Debug for ServiceSession {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServiceSession")
            .field("access_key_id", &self.access_key_id)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

fn credentials_wire(session: &SessionRecord) -> wire::Credentials {
    wire::Credentials {
        access_key_id: Some(session.access_key_id.clone()),
        expiration: Some(seconds(session.expires_ms)),
        secret_access_key: Some(session.secret.expose().to_owned()),
        session_token: Some(session.token.expose().to_owned()),
    }
}
