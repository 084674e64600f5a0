//! Empty strings that mean "not given".
//!
//! Deployment tools commonly take DescribeTaskDefinition's output, change
//! the image and register it again, or fill request templates, sending
//! `"taskRoleArn": ""` where there is no role. ECS treats an empty optional
//! role, ARN, name or token as absent; so does Flotilla, before a handler
//! sees the request, so that no handler can mistake "" for a value.

use flotilla_types::ecs::{EcsRequest, TaskOverride};

/// Clears the optional string members ECS treats as absent when empty.
pub fn clear(request: &mut EcsRequest) {
    use EcsRequest as Q;
    match request {
        Q::RegisterTaskDefinition(r) => {
            clear_all([
                &mut r.task_role_arn,
                &mut r.execution_role_arn,
                &mut r.cpu,
                &mut r.memory,
            ]);
        }
        Q::CreateService(r) => {
            clear_all([
                &mut r.cluster,
                &mut r.task_definition,
                &mut r.client_token,
                &mut r.platform_version,
                &mut r.role,
            ]);
        }
        Q::UpdateService(r) => {
            clear_all([
                &mut r.cluster,
                &mut r.task_definition,
                &mut r.platform_version,
            ]);
        }
        Q::RunTask(r) => {
            clear_all([
                &mut r.cluster,
                &mut r.group,
                &mut r.platform_version,
                &mut r.reference_id,
                &mut r.started_by,
                &mut r.client_token,
            ]);
            clear_overrides(r.overrides.as_mut());
        }
        Q::StartTask(r) => {
            clear_all([
                &mut r.cluster,
                &mut r.group,
                &mut r.reference_id,
                &mut r.started_by,
            ]);
            clear_overrides(r.overrides.as_mut());
        }
        _ => {}
    }
}

fn clear_overrides(overrides: Option<&mut TaskOverride>) {
    if let Some(overrides) = overrides {
        clear_all([
            &mut overrides.task_role_arn,
            &mut overrides.execution_role_arn,
            &mut overrides.cpu,
            &mut overrides.memory,
        ]);
    }
}

fn clear_all<const N: usize>(members: [&mut Option<String>; N]) {
    for member in members {
        if member.as_deref().is_some_and(str::is_empty) {
            *member = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use flotilla_types::ecs::EcsRequest;

    #[test]
    fn empty_roles_and_names_are_absent_and_others_stay() {
        let body = br#"{"family": "web", "taskRoleArn": "", "executionRoleArn": "",
            "cpu": "", "memory": "512", "containerDefinitions": []}"#;
        let Some(Ok(mut request)) = EcsRequest::decode("RegisterTaskDefinition", body) else {
            panic!("decodes");
        };
        super::clear(&mut request);
        let EcsRequest::RegisterTaskDefinition(r) = request else {
            panic!("same operation");
        };
        assert_eq!(r.task_role_arn, None);
        assert_eq!(r.execution_role_arn, None);
        assert_eq!(r.cpu, None);
        assert_eq!(r.memory.as_deref(), Some("512"));
        assert_eq!(r.family.as_deref(), Some("web"));
    }

    #[test]
    fn run_task_overrides_lose_their_empty_roles() {
        let body = br#"{"taskDefinition": "web", "cluster": "", "startedBy": "",
            "overrides": {"taskRoleArn": "", "executionRoleArn": "arn:aws:iam::000000000000:role/x"}}"#;
        let Some(Ok(mut request)) = EcsRequest::decode("RunTask", body) else {
            panic!("decodes");
        };
        super::clear(&mut request);
        let EcsRequest::RunTask(r) = request else {
            panic!("same operation");
        };
        assert_eq!((r.cluster, r.started_by), (None, None));
        let overrides = r.overrides.expect("kept");
        assert_eq!(overrides.task_role_arn, None);
        assert!(overrides.execution_role_arn.is_some());
    }
}
