//! Credentials of tasks' roles for the agent channel: the edge holds IAM,
//! so it assumes each task's `taskRoleArn` and `executionRoleArn` as
//! `ecs-tasks.amazonaws.com` as the payload that starts the task is sent,
//! and again before they expire.
//!
//! ```text
//! Payload(task RUNNING) ── assume both roles ──▶ payload carries the credentials
//!                           trust policy refuses ─▶ payload carries credentials_error
//! halfway to expiry ────── assume again ──────▶ IamRoleCredentials ─▶ Ack
//! Payload(task STOPPED) ── forget the task
//! ```
//!
//! What is held here is when each task's credentials need renewing, never
//! the credentials themselves: they go to the agent and are dropped.

use std::collections::HashMap;

use flotilla_types::acs::{RoleCredentials, RoleType, TaskPayload};

use crate::Edge;

/// The service that assumes tasks' roles, as in a role's trust policy.
pub const TASKS_SERVICE: &str = "ecs-tasks.amazonaws.com";
/// Default lifetime of a task's role credentials.
pub const TASK_CREDENTIALS_DURATION_SECONDS_DEFAULT: i32 = 3_600;
/// Wait before trying again to renew credentials whose role could not be assumed.
const RENEW_RETRY_MS: u64 = 10_000;

/// The roles a task runs with: its overrides' first, else its definition's.
pub fn task_roles(task: &TaskPayload) -> Vec<(RoleType, String)> {
    let overrides = task.overrides.as_ref();
    let definition = &task.task_definition;
    let task_role = overrides
        .and_then(|o| o.task_role_arn.clone())
        .or_else(|| definition.task_role_arn.clone());
    let execution_role = overrides
        .and_then(|o| o.execution_role_arn.clone())
        .or_else(|| definition.execution_role_arn.clone());
    [
        (RoleType::TaskApplication, task_role),
        (RoleType::TaskExecution, execution_role),
    ]
    .into_iter()
    .filter_map(|(kind, arn)| Some((kind, arn.filter(|arn| !arn.is_empty())?)))
    .collect()
}

/// ECS's reason for a task whose role cannot be assumed.
pub fn unassumable_reason(role_arn: &str) -> String {
    format!(
        "ResourceInitializationError: ECS was unable to assume the role '{role_arn}' that was provided for this task. Please verify that the role being passed has the proper trust relationship and permissions and that your IAM user has permissions to pass this role."
    )
}

/// One role of one task whose credentials the agent holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    role_arn: String,
    renew_at_ms: u64,
}

/// The credentials one agent connection has handed out and must renew.
#[derive(Debug, Default)]
pub struct TaskRoleCredentials {
    held: HashMap<(String, RoleType), Held>,
}

impl TaskRoleCredentials {
    /// Fills in the credentials of each task of a payload that is to run,
    /// or why they could not be had; forgets tasks that are to stop.
    pub async fn fill(&mut self, edge: &Edge, tasks: &mut [TaskPayload]) {
        for task in tasks.iter_mut() {
            if task.desired_status != "RUNNING" {
                self.held.retain(|(arn, _), _| arn != &task.task_arn);
                continue;
            }
            for (kind, role_arn) in task_roles(task) {
                match self.assume(edge, &task.task_arn, kind, &role_arn).await {
                    Some(credentials) => match kind {
                        RoleType::TaskApplication => task.role_credentials = Some(credentials),
                        RoleType::TaskExecution => {
                            task.execution_role_credentials = Some(credentials)
                        }
                    },
                    None if task.credentials_error.is_none() => {
                        task.credentials_error = Some(unassumable_reason(&role_arn));
                    }
                    None => {}
                }
            }
        }
    }

    /// Milliseconds until the next renewal is due (`None`: none held).
    pub fn next_renewal_in_ms(&self, now_ms: u64) -> Option<u64> {
        self.held
            .values()
            .map(|held| held.renew_at_ms.saturating_sub(now_ms))
            .min()
    }

    /// Fresh credentials for every role due for renewal.
    pub async fn renew_due(&mut self, edge: &Edge) -> Vec<(String, RoleType, RoleCredentials)> {
        let now_ms = edge.clock.now_ms();
        let due: Vec<((String, RoleType), String)> = self
            .held
            .iter()
            .filter(|(_, held)| held.renew_at_ms <= now_ms)
            .map(|(key, held)| (key.clone(), held.role_arn.clone()))
            .collect();
        let mut renewed = Vec::new();
        for ((task_arn, kind), role_arn) in due {
            match self.assume(edge, &task_arn, kind, &role_arn).await {
                Some(credentials) => renewed.push((task_arn, kind, credentials)),
                None => {
                    if let Some(held) = self.held.get_mut(&(task_arn, kind)) {
                        held.renew_at_ms = now_ms + RENEW_RETRY_MS;
                    }
                }
            }
        }
        renewed
    }

    async fn assume(
        &mut self,
        edge: &Edge,
        task_arn: &str,
        kind: RoleType,
        role_arn: &str,
    ) -> Option<RoleCredentials> {
        let now_ms = edge.clock.now_ms();
        let fresh_id = || edge.ids.uuid();
        let context = flotilla_iam::Context {
            now_ms,
            fresh_id: &fresh_id,
        };
        // ECS names the session after the task.
        let session_name = task_arn.rsplit('/').next().unwrap_or("task");
        let assumed = edge
            .iam
            .assume_role_for_service(
                &context,
                TASKS_SERVICE,
                role_arn,
                session_name,
                edge.task_credentials_duration_seconds,
            )
            .await;
        match assumed {
            Ok(session) => {
                // Renewed halfway through their life, so that a late
                // renewal still leaves the task working credentials.
                let renew_at_ms = now_ms + session.expires_ms.saturating_sub(now_ms) / 2;
                self.held.insert(
                    (task_arn.to_owned(), kind),
                    Held {
                        role_arn: role_arn.to_owned(),
                        renew_at_ms,
                    },
                );
                Some(RoleCredentials {
                    role_arn: role_arn.to_owned(),
                    access_key_id: session.access_key_id,
                    secret_access_key: session.secret_access_key,
                    session_token: session.session_token,
                    expiration_ms: session.expires_ms,
                })
            }
            Err(error) => {
                tracing::warn!(%task_arn, %role_arn, ?kind, %error, "cannot assume a task's role");
                None
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn overrides_name_the_roles_first() {
        let task: TaskPayload = serde_json::from_value(serde_json::json!({
            "taskArn": "arn:aws:ecs:us-east-1:0:task/c/t1", "clusterArn": "c",
            "desiredStatus": "RUNNING", "version": 1,
            "taskDefinition": {"taskRoleArn": "arn:aws:iam::0:role/a", "executionRoleArn": "arn:aws:iam::0:role/x"},
            "overrides": {"taskRoleArn": "arn:aws:iam::0:role/b"}
        }))
        .unwrap();
        assert_eq!(
            task_roles(&task),
            vec![
                (
                    RoleType::TaskApplication,
                    "arn:aws:iam::0:role/b".to_owned()
                ),
                (RoleType::TaskExecution, "arn:aws:iam::0:role/x".to_owned()),
            ]
        );
    }
}
