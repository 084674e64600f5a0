//! The service event messages, worded as ECS words them so that what users
//! grep for ("has reached a steady state") is found.

/// How many task ids one started/stopped message lists.
const TASK_IDS_PER_MESSAGE_MAX: usize = 10;

fn task_list(task_ids: &[String]) -> String {
    task_ids
        .iter()
        .take(TASK_IDS_PER_MESSAGE_MAX)
        .map(|id| format!("(task {id})"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn steady_state(service: &str) -> String {
    format!("(service {service}) has reached a steady state.")
}

pub fn started(service: &str, task_ids: &[String]) -> String {
    format!(
        "(service {service}) has started {} tasks: {}.",
        task_ids.len(),
        task_list(task_ids)
    )
}

pub fn stopped(service: &str, task_ids: &[String]) -> String {
    format!(
        "(service {service}) has stopped {} running tasks: {}.",
        task_ids.len(),
        task_list(task_ids)
    )
}

pub fn failed_health_checks(service: &str, task_id: &str) -> String {
    format!("(service {service}) (task {task_id}) failed container health checks.")
}

/// A task of the service that stopped on its own: one that never reached
/// RUNNING "failed to start", as ECS says of it; one whose essential
/// container exited after it ran says so with its exit code.
pub fn task_failed(service: &str, task_id: &str, failure: &TaskFailure) -> String {
    match failure {
        TaskFailure::FailedToStart { reason } => format!(
            "(service {service}) (task {task_id}) failed to start: {}.",
            reason.trim_end_matches('.')
        ),
        TaskFailure::Exited {
            reason,
            exit_code: Some(code),
        } => format!(
            "(service {service}) (task {task_id}) stopped: {} (exit code {code}).",
            reason.trim_end_matches('.')
        ),
        TaskFailure::Exited {
            reason,
            exit_code: None,
        } => format!(
            "(service {service}) (task {task_id}) stopped: {}.",
            reason.trim_end_matches('.')
        ),
    }
}

/// Failed tasks beyond those a pass tells one by one.
pub fn more_tasks_failed(service: &str, count: usize) -> String {
    format!("(service {service}) has {count} more tasks that failed.")
}

/// Why a task stopped on its own, for [`task_failed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskFailure {
    FailedToStart {
        reason: String,
    },
    Exited {
        reason: String,
        exit_code: Option<i32>,
    },
}

/// ECS's words for a service whose tasks keep failing, then how long the
/// launch throttle holds it back: Flotilla's addition, so that the back-off
/// is seen.
pub fn unable_to_start_consistently(service: &str, recent_failures: u32, delay_ms: u64) -> String {
    format!(
        "(service {service}) is unable to consistently start tasks successfully. {recent_failures} tasks failed in the last 5 minutes; next launch in {}.",
        seconds(delay_ms)
    )
}

fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.2} s", ms as f64 / 1000.0)
    }
}

/// A deleted service stops its protected tasks too: scale-in protection
/// keeps a task from scale-in and deployments, not from its service's end.
pub fn stopping_protected(service: &str, task_ids: &[String]) -> String {
    format!(
        "(service {service}) is being deleted and stops its {} protected tasks too, as scale-in protection does not outlast the service: {}.",
        task_ids.len(),
        task_list(task_ids)
    )
}

pub fn deployment_completed(service: &str, deployment: &str) -> String {
    format!("(service {service}) (deployment {deployment}) deployment completed.")
}

pub fn deployment_failed(service: &str, deployment: &str) -> String {
    format!(
        "(service {service}) (deployment {deployment}) deployment failed: tasks failed to start."
    )
}

pub fn rolling_back(service: &str, deployment: &str) -> String {
    format!("(service {service}) rolling back to deployment {deployment}.")
}

pub fn agent_lost(service: &str, instance_id: &str, task_ids: &[String]) -> String {
    format!(
        "(service {service}) is replacing {} tasks of (container-instance {instance_id}): its agent has been disconnected too long: {}.",
        task_ids.len(),
        task_list(task_ids)
    )
}

pub fn inactive(service: &str) -> String {
    format!("(service {service}) has stopped all of its tasks and is INACTIVE.")
}

/// The instance a placement came closest on, and why it was refused: ECS's
/// reason (`RESOURCE:MEMORY`, `ATTRIBUTE`, ...) and, beyond ECS, the cause
/// ("missing required attribute ...").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closest<'a> {
    pub instance_id: &'a str,
    pub reason: &'a str,
    pub detail: Option<&'a str>,
}

/// "was unable to place a task" with the closest instance and what it
/// lacked, from a placement failure's reason and detail.
pub fn unable_to_place(service: &str, closest: Option<Closest<'_>>) -> String {
    let intro = format!(
        "(service {service}) was unable to place a task because no container instance met all of its requirements."
    );
    match closest {
        None => format!("{intro} Reason: No Container Instances were found in your cluster. For more information, see the Troubleshooting section."),
        // A strategy's capacity provider without instances: its reason says it all.
        Some(Closest { reason, .. }) if reason.starts_with("No Container Instances") => {
            format!("{intro} Reason: {reason} For more information, see the Troubleshooting section.")
        }
        Some(Closest {
            instance_id,
            reason,
            detail,
        }) => {
            let lacks = match reason {
                "RESOURCE:MEMORY" => "has insufficient memory available".to_owned(),
                "RESOURCE:CPU" => "has insufficient CPU units available".to_owned(),
                "RESOURCE:GPU" => "has insufficient GPU available".to_owned(),
                "RESOURCE:PORTS" | "RESOURCE:PORTS_UDP" => {
                    "is already using a port required by your task".to_owned()
                }
                "RESOURCE:ENI" => "has no free task address available".to_owned(),
                "ATTRIBUTE" => "is missing an attribute required by your task".to_owned(),
                other => format!("encountered error \"{other}\""),
            };
            let cause = detail.map(|d| format!(" ({d})")).unwrap_or_default();
            format!(
                "{intro} The closest matching (container-instance {instance_id}) {lacks}{cause}. For more information, see the Troubleshooting section."
            )
        }
    }
}

/// A failure to launch that is not about placement (the task definition
/// was deleted, the cluster is gone).
pub fn unable_to_launch(service: &str, reason: &str) -> String {
    format!("(service {service}) was unable to place a task. Reason: {reason}.")
}

/// Tasks of the service registered in a target group.
pub fn registered_targets(service: &str, count: usize, target_group_arn: &str) -> String {
    format!("(service {service}) registered {count} targets in (target-group {target_group_arn})")
}

/// Tasks of the service deregistered from a target group.
pub fn deregistered_targets(service: &str, count: usize, target_group_arn: &str) -> String {
    format!("(service {service}) deregistered {count} targets in (target-group {target_group_arn})")
}

/// A task's target that its load balancer found unhealthy, before the task
/// is stopped for it.
pub fn target_unhealthy(
    service: &str,
    target_id: &str,
    port: u16,
    target_group_arn: &str,
    description: &str,
) -> String {
    let instance = if target_id.starts_with("i-") || target_id.starts_with("mi-") {
        format!("(instance {target_id}) ")
    } else {
        String::new()
    };
    format!("(service {service}) {instance}(port {port}) is unhealthy in (target-group {target_group_arn}) due to (reason {description}).")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_ecs_writes_them() {
        assert_eq!(
            steady_state("web"),
            "(service web) has reached a steady state."
        );
        assert_eq!(
            started("web", &["a".into(), "b".into()]),
            "(service web) has started 2 tasks: (task a) (task b)."
        );
        assert_eq!(
            stopped("web", &["a".into()]),
            "(service web) has stopped 1 running tasks: (task a)."
        );
        assert_eq!(
            unable_to_place(
                "web",
                Some(Closest {
                    instance_id: "abc",
                    reason: "RESOURCE:MEMORY",
                    detail: None
                })
            ),
            "(service web) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance abc) has insufficient memory available. For more information, see the Troubleshooting section."
        );
        assert_eq!(
            unable_to_place(
                "web",
                Some(Closest {
                    instance_id: "abc",
                    reason: "ATTRIBUTE",
                    detail: Some("missing required attribute com.amazonaws.ecs.capability.logging-driver.awslogs")
                })
            ),
            "(service web) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance abc) is missing an attribute required by your task (missing required attribute com.amazonaws.ecs.capability.logging-driver.awslogs). For more information, see the Troubleshooting section."
        );
        assert_eq!(
            task_failed(
                "web",
                "1234",
                &TaskFailure::FailedToStart {
                    reason: "CannotPullContainerError: pull access denied".to_owned()
                }
            ),
            "(service web) (task 1234) failed to start: CannotPullContainerError: pull access denied."
        );
        assert_eq!(
            task_failed(
                "web",
                "1234",
                &TaskFailure::Exited {
                    reason: "Essential container in task exited".to_owned(),
                    exit_code: Some(1)
                }
            ),
            "(service web) (task 1234) stopped: Essential container in task exited (exit code 1)."
        );
        assert_eq!(
            unable_to_start_consistently("web", 3, 1000),
            "(service web) is unable to consistently start tasks successfully. 3 tasks failed in the last 5 minutes; next launch in 1 s."
        );
        assert_eq!(
            unable_to_start_consistently("web", 2, 500),
            "(service web) is unable to consistently start tasks successfully. 2 tasks failed in the last 5 minutes; next launch in 0.50 s."
        );
    }
}
