//! What the edge authenticates and authorizes with: the secret of an access
//! key (a user's, or temporary credentials from STS) and the compiled
//! policies of the principal it acts as.
//!
//! Every lookup reads the store (a local read), so a key deleted or made
//! inactive, or a session expired, is refused at once on every replica.
//! What is costly to rebuild is cached beside the revision it was built
//! at: a key's derived signing keys by the key record's revision, a
//! principal's compiled policies by the revision of IAM's last change
//! (`iam/generation`), so any change to any policy drops them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use flotilla_iam_policy::{
    managed, CompiledPolicy, PolicyKind, Principal, PrincipalPolicies, RequestContext,
};
use flotilla_records::decode;
use flotilla_sigv4::SigningSecret;
use flotilla_store::Revision;
use flotilla_types::ApiError;

use crate::records::{
    AccessKeyRecord, GroupRecord, KeyStatus, ManagedPolicyRecord, Policies, RoleRecord, Secret,
    SessionRecord, SessionSubject, ACCESS_KEYS, GENERATION, GROUPS, SESSIONS,
};
use crate::Iam;

/// Entries each cache holds before it starts over: enough for every key
/// and principal of an account at its quotas, and a bound on memory.
pub const CACHE_ENTRIES_MAX: usize = 20_000;

#[derive(Default)]
pub(crate) struct Cache {
    keys: Mutex<HashMap<String, CachedKey>>,
    identities: Mutex<HashMap<String, (Revision, Arc<Identity>)>>,
}

/// An access key as its record read at `revision`.
#[derive(Clone)]
struct CachedKey {
    revision: Revision,
    /// Active (always, for a session).
    usable: bool,
    /// A session's expiry.
    expires_ms: Option<u64>,
    key: Arc<ResolvedKey>,
}

/// An access key the store holds, ready for signature verification.
#[derive(Debug)]
pub struct ResolvedKey {
    pub secret: Arc<SigningSecret>,
    /// For temporary credentials: the token the request must carry in
    /// `X-Amz-Security-Token`.
    pub session_token: Option<Secret>,
    pub subject: SessionSubject,
}

/// What an access key id turned out to be.
#[derive(Debug)]
pub enum KeyLookup {
    Found(Arc<ResolvedKey>),
    /// Temporary credentials past their expiry.
    Expired,
    /// Unknown, deleted or inactive.
    Unknown,
}

/// Who a request acts as, with what it may do.
#[derive(Debug)]
pub struct Identity {
    pub principal: Principal,
    /// `None` for the account's root, which policies never restrict.
    pub policies: Option<PrincipalPolicies>,
    pub principal_tags: Vec<(String, String)>,
}

impl Identity {
    pub fn root(account: &str) -> Self {
        Identity {
            principal: Principal::root(account),
            policies: None,
            principal_tags: Vec::new(),
        }
    }

    /// One authorization question for this identity, with the global keys
    /// of the request: `aws:SourceIp`, `aws:RequestedRegion`, the time,
    /// `aws:PrincipalTag/*`, `aws:MultiFactorAuthPresent` (temporary
    /// credentials only, as in AWS) and `aws:SecureTransport`.
    pub fn context(
        &self,
        action: &str,
        resource: &str,
        request: &RequestFacts<'_>,
    ) -> RequestContext {
        let mut context = RequestContext::new(
            self.principal.clone(),
            action,
            resource,
            request.now_ms as i64,
        )
        .with_requested_region(request.region)
        .with_secure_transport(false)
        .with_principal_tags(
            self.principal_tags
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        );
        if let Some(ip) = request.source_ip {
            context = context.with_source_ip(ip);
        }
        if request.temporary {
            context = context.with_multi_factor_auth_present(false);
        }
        context
    }
}

/// What a request tells about itself beyond its identity.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    pub now_ms: u64,
    pub region: &'a str,
    pub source_ip: Option<&'a str>,
    /// Signed with temporary credentials.
    pub temporary: bool,
}

impl Iam {
    /// The access key `access_key_id`, if IAM holds it and it may sign now.
    pub fn access_key(&self, access_key_id: &str, now_ms: u64) -> Result<KeyLookup, ApiError> {
        let session = access_key_id.starts_with("ASIA");
        let store_key = if session {
            format!("{SESSIONS}{access_key_id}")
        } else {
            format!("{ACCESS_KEYS}{access_key_id}")
        };
        let Some(entry) = self
            .store
            .get(&store_key)
            .map_err(flotilla_records::store_error)?
        else {
            return Ok(KeyLookup::Unknown);
        };
        // The record is decoded only when it changed since it was cached.
        let cached = {
            let keys = self
                .cache
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            keys.get(access_key_id)
                .filter(|cached| cached.revision == entry.mod_revision)
                .cloned()
        };
        let cached = match cached {
            Some(cached) => cached,
            None => {
                let cached = if session {
                    let record: SessionRecord = decode(&entry)?;
                    CachedKey {
                        revision: entry.mod_revision,
                        usable: true,
                        expires_ms: Some(record.expires_ms),
                        key: Arc::new(ResolvedKey {
                            secret: Arc::new(SigningSecret::new(record.secret.expose())),
                            session_token: Some(record.token),
                            subject: record.subject,
                        }),
                    }
                } else {
                    let record: AccessKeyRecord = decode(&entry)?;
                    CachedKey {
                        revision: entry.mod_revision,
                        usable: record.status == KeyStatus::Active,
                        expires_ms: None,
                        key: Arc::new(ResolvedKey {
                            secret: Arc::new(SigningSecret::new(record.secret.expose())),
                            session_token: None,
                            subject: SessionSubject::User {
                                user_name: record.user_name,
                            },
                        }),
                    }
                };
                let mut keys = self
                    .cache
                    .keys
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if keys.len() >= CACHE_ENTRIES_MAX {
                    keys.clear();
                }
                keys.insert(access_key_id.to_owned(), cached.clone());
                cached
            }
        };
        if !cached.usable {
            return Ok(KeyLookup::Unknown);
        }
        if cached
            .expires_ms
            .is_some_and(|expires_ms| expires_ms <= now_ms)
        {
            return Ok(KeyLookup::Expired);
        }
        Ok(KeyLookup::Found(cached.key))
    }

    /// The revision of IAM's last change.
    fn generation(&self) -> Result<Revision, ApiError> {
        Ok(self
            .store
            .get(GENERATION)
            .map_err(flotilla_records::store_error)?
            .map_or(0, |entry| entry.mod_revision))
    }

    /// Who `subject` is and its compiled policies; `access_key_id` tells
    /// role sessions apart, whose session policies differ.
    pub fn identity(
        &self,
        subject: &SessionSubject,
        access_key_id: &str,
    ) -> Result<Arc<Identity>, ApiError> {
        let cache_key = match subject {
            SessionSubject::Root => return Ok(Arc::new(Identity::root(&self.account_id))),
            SessionSubject::User { user_name } => {
                format!("user/{}", user_name.to_ascii_lowercase())
            }
            SessionSubject::Role { .. } => format!("session/{access_key_id}"),
        };
        let generation = self.generation()?;
        {
            let identities = self
                .cache
                .identities
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((held, identity)) = identities.get(&cache_key) {
                if *held == generation {
                    return Ok(Arc::clone(identity));
                }
            }
        }
        let identity = Arc::new(self.build_identity(subject)?);
        let mut identities = self
            .cache
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if identities.len() >= CACHE_ENTRIES_MAX {
            identities.clear();
        }
        identities.insert(cache_key, (generation, Arc::clone(&identity)));
        Ok(identity)
    }

    fn build_identity(&self, subject: &SessionSubject) -> Result<Identity, ApiError> {
        match subject {
            SessionSubject::Root => Ok(Identity::root(&self.account_id)),
            SessionSubject::User { user_name } => {
                let user = self.user(user_name)?.value;
                let mut identity = Vec::new();
                self.compile_policies(&user.policies, &mut identity)?;
                for group in &user.groups {
                    if let Some(group) = self.read::<GroupRecord>(GROUPS, group)? {
                        self.compile_policies(&group.value.policies, &mut identity)?;
                    }
                }
                Ok(Identity {
                    principal: Principal::user(
                        &self.account_id,
                        &user.path,
                        &user.name,
                        &user.user_id,
                    ),
                    policies: Some(PrincipalPolicies {
                        identity,
                        permissions_boundary: self
                            .compile_boundary(user.permissions_boundary.as_deref())?,
                        session: None,
                    }),
                    principal_tags: user.tags,
                })
            }
            SessionSubject::Role {
                role_name,
                session_name,
                session_policy,
                session_policy_arns,
            } => {
                let role: RoleRecord = self.role(role_name)?.value;
                let mut identity = Vec::new();
                self.compile_policies(&role.policies, &mut identity)?;
                let session = if session_policy.is_none() && session_policy_arns.is_empty() {
                    None
                } else {
                    let mut session = Vec::new();
                    if let Some(text) = session_policy {
                        if let Some(compiled) = compile("session policy", text, PolicyKind::Session)
                        {
                            session.push(compiled);
                        }
                    }
                    for arn in session_policy_arns {
                        if let Some(compiled) = self.compile_managed(arn)? {
                            session.push(compiled);
                        }
                    }
                    Some(session)
                };
                Ok(Identity {
                    principal: Principal::assumed_role(
                        &self.account_id,
                        &role.path,
                        &role.name,
                        &role.role_id,
                        session_name,
                    ),
                    policies: Some(PrincipalPolicies {
                        identity,
                        permissions_boundary: self
                            .compile_boundary(role.permissions_boundary.as_deref())?,
                        session,
                    }),
                    principal_tags: role.tags,
                })
            }
        }
    }

    fn compile_policies(
        &self,
        policies: &Policies,
        into: &mut Vec<Arc<CompiledPolicy>>,
    ) -> Result<(), ApiError> {
        for (name, text) in &policies.inline {
            if let Some(compiled) = compile(name, text, PolicyKind::Inline) {
                into.push(compiled);
            }
        }
        for arn in &policies.attached {
            if let Some(compiled) = self.compile_managed(arn)? {
                into.push(compiled);
            }
        }
        Ok(())
    }

    fn compile_managed(&self, arn: &str) -> Result<Option<Arc<CompiledPolicy>>, ApiError> {
        if managed::by_arn(arn).is_some() {
            return Ok(managed::compiled(arn));
        }
        let Some(policy) = self.customer_policy(arn)? else {
            return Ok(None);
        };
        let policy: ManagedPolicyRecord = policy.value;
        Ok(policy
            .default_document()
            .and_then(|text| compile(arn, text, PolicyKind::Managed)))
    }

    fn compile_boundary(&self, arn: Option<&str>) -> Result<Option<Arc<CompiledPolicy>>, ApiError> {
        match arn {
            Some(arn) => self.compile_managed(arn),
            None => Ok(None),
        }
    }

    /// The role `arn` names, with its trust policy compiled.
    pub(crate) fn role_by_arn(&self, arn: &str) -> Result<Option<RoleWithTrust>, ApiError> {
        let Some(resource) = arn.strip_prefix(&format!("arn:aws:iam::{}:role/", self.account_id))
        else {
            return Ok(None);
        };
        let name = resource.rsplit('/').next().unwrap_or_default();
        let Some(role) = self.read::<RoleRecord>(crate::records::ROLES, name)? else {
            return Ok(None);
        };
        if self.iam_arn("role", &role.value.path, &role.value.name) != arn {
            return Ok(None);
        }
        let trust = compile(arn, &role.value.trust_policy, PolicyKind::Trust);
        Ok(Some((role.value, trust)))
    }
}

/// A role and its trust policy, compiled (`None` if it no longer compiles).
pub(crate) type RoleWithTrust = (RoleRecord, Option<Arc<CompiledPolicy>>);

/// A stored document compiled; one that no longer parses (it was valid
/// when stored) is left out with an error in the log, never a panic.
fn compile(name: &str, text: &str, kind: PolicyKind) -> Option<Arc<CompiledPolicy>> {
    match CompiledPolicy::parse(name, text, kind) {
        Ok(compiled) => Some(Arc::new(compiled)),
        Err(error) => {
            tracing::error!(policy = %name, %error, "a stored policy does not compile; it is ignored");
            None
        }
    }
}
