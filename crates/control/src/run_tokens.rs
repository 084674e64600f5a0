//! RunTask's `clientToken`: a retried RunTask with the same token and the
//! same request answers with the tasks the first one started instead of
//! starting more; the same token with a different request is ECS's
//! ConflictException. boto3 and the AWS CLI fill a fresh token into every
//! RunTask, so a token is only ever repeated by a retry.
//!
//! A token is remembered once its RunTask is answered, under
//! `ecs/run-tokens/{cluster}/{token}`, for [`RUN_TOKEN_RETENTION_MS`]; two
//! retries racing each other before the first is answered may both launch.

use flotilla_store::Txn;
use flotilla_types::ecs::{Failure, RunTaskRequest, RunTaskResponse};
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::records::{self, keys, Attempt};
use crate::Ecs;

/// How long a token is remembered: as long as its stopped tasks are kept.
pub const RUN_TOKEN_RETENTION_MS: u64 = crate::tasks::STOPPED_TASK_RETENTION_MS;
/// ECS's limit on a client token.
const CLIENT_TOKEN_LENGTH_MAX: usize = 64;
/// Token records read per store call by the retention sweep.
const RETENTION_SCAN_PAGE: usize = 256;

/// What a RunTask with a token answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunTokenRecord {
    /// Tells a retry from another request with the same token.
    pub request_digest: String,
    pub task_arns: Vec<String>,
    pub failures: Vec<Failure>,
    pub created_at_ms: u64,
}

/// Checks a token as ECS does: 1 to 64 characters from `!` to `~`.
pub fn check_token(token: &str) -> Result<(), ApiError> {
    let valid = !token.is_empty()
        && token.len() <= CLIENT_TOKEN_LENGTH_MAX
        && token.bytes().all(|b| (33..=126).contains(&b));
    if valid {
        return Ok(());
    }
    Err(ApiError::invalid_parameter(format!(
        "clientToken must be 1 to {CLIENT_TOKEN_LENGTH_MAX} characters in the range of 33-126, inclusive"
    )))
}

/// A digest of the request less its token (FNV-1a over its JSON, whose
/// member order is fixed by the wire type).
pub fn digest(request: &RunTaskRequest) -> String {
    let mut without_token = request.clone();
    without_token.client_token = None;
    let text = serde_json::to_vec(&without_token).unwrap_or_default();
    let hash = text.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn conflict() -> ApiError {
    ApiError::new(
        "ConflictException",
        400,
        "The RunTask request could not be processed due to conflicts. The provided clientToken is already in use with a different RunTask request.",
    )
}

impl Ecs {
    /// What the first RunTask with this token answered, if it was this
    /// request; ConflictException if it was another.
    pub(crate) fn repeated_run(
        &self,
        cluster: &str,
        token: &str,
        request_digest: &str,
    ) -> Result<Option<RunTaskResponse>, ApiError> {
        let key = keys::run_token(cluster, token);
        let Some(found) = records::get::<RunTokenRecord>(self.store.as_ref(), &key)? else {
            return Ok(None);
        };
        let remembered = found.value;
        let expired =
            self.clock.now_ms().saturating_sub(remembered.created_at_ms) >= RUN_TOKEN_RETENTION_MS;
        if expired {
            return Ok(None);
        }
        if remembered.request_digest != request_digest {
            return Err(conflict());
        }
        let mut tasks = Vec::with_capacity(remembered.task_arns.len());
        for arn in &remembered.task_arns {
            let found = match self.task_id_in(cluster, arn) {
                Some(id) => self.get_task(cluster, &id)?,
                None => None,
            };
            if let Some(found) = found {
                tasks.push(Self::present_task(&found.value, true));
            }
        }
        Ok(Some(RunTaskResponse {
            tasks: Some(tasks),
            failures: Some(remembered.failures),
        }))
    }

    /// Remembers what a RunTask with a token answered, in place of an
    /// expired record of the same token (or a racing retry's).
    pub(crate) async fn remember_run(
        &self,
        cluster: &str,
        token: &str,
        request_digest: String,
        response: &RunTaskResponse,
    ) -> Result<(), ApiError> {
        let key = keys::run_token(cluster, token);
        let record = RunTokenRecord {
            request_digest,
            task_arns: response
                .tasks
                .iter()
                .flatten()
                .filter_map(|t| t.task_arn.clone())
                .collect(),
            failures: response.failures.clone().unwrap_or_default(),
            created_at_ms: self.clock.now_ms(),
        };
        records::mutate(self.store.as_ref(), || {
            let current = self.store.get(&key).map_err(records::store_error)?;
            let revision = current.map_or(0, |e| e.mod_revision);
            let txn = Txn::new()
                .expect(&key, revision)
                .put(&key, records::encode(&record));
            Ok(Attempt::Commit(txn, ()))
        })
        .await
    }

    /// Forgets tokens older than [`RUN_TOKEN_RETENTION_MS`]; returns how
    /// many. Called periodically by the binary.
    pub async fn collect_run_tokens(&self) -> Result<usize, ApiError> {
        let now_ms = self.clock.now_ms();
        let mut expired = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(keys::RUN_TOKENS, after.as_deref(), RETENTION_SCAN_PAGE)
                .map_err(records::store_error)?;
            for entry in &page.entries {
                let record: RunTokenRecord = records::decode(entry)?;
                if now_ms.saturating_sub(record.created_at_ms) >= RUN_TOKEN_RETENTION_MS {
                    expired.push((entry.key.clone(), entry.mod_revision));
                }
            }
            match page.entries.last() {
                Some(last) if page.more => after = Some(last.key.clone()),
                _ => break,
            }
        }
        let mut deleted = 0;
        for (key, revision) in expired {
            let txn = Txn::new().expect(&key, revision).delete(&key);
            match self.store.commit(txn).await {
                Ok(_) => deleted += 1,
                // Remembered anew since: the next sweep looks again.
                Err(flotilla_store::StoreError::Conflict { .. }) => {}
                Err(error) => return Err(records::store_error(error)),
            }
        }
        Ok(deleted)
    }
}
