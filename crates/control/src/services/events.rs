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

/// "was unable to place a task" with the closest instance and what it
/// lacked, from a placement failure's reason (`RESOURCE:MEMORY`, ...).
pub fn unable_to_place(service: &str, closest: Option<(&str, &str)>) -> String {
    let intro = format!(
        "(service {service}) was unable to place a task because no container instance met all of its requirements."
    );
    match closest {
        None => format!("{intro} Reason: No Container Instances were found in your cluster. For more information, see the Troubleshooting section."),
        // A strategy's capacity provider without instances: its reason says it all.
        Some((_, reason)) if reason.starts_with("No Container Instances") => {
            format!("{intro} Reason: {reason} For more information, see the Troubleshooting section.")
        }
        Some((instance_id, reason)) => {
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
            format!(
                "{intro} The closest matching (container-instance {instance_id}) {lacks}. For more information, see the Troubleshooting section."
            )
        }
    }
}

/// A failure to launch that is not about placement (the task definition
/// was deleted, the cluster is gone).
pub fn unable_to_launch(service: &str, reason: &str) -> String {
    format!("(service {service}) was unable to place a task. Reason: {reason}.")
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
            unable_to_place("web", Some(("abc", "RESOURCE:MEMORY"))),
            "(service web) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance abc) has insufficient memory available. For more information, see the Troubleshooting section."
        );
    }
}
