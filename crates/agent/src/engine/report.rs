//! Which state changes of a task are new since the last report, as a pure
//! function of its record.
//!
//! Task statuses go out as PENDING (once, when the task reaches the host),
//! RUNNING and STOPPED; container changes ride along with the last two,
//! and a container change while the task is RUNNING (a sidecar exiting) goes
//! out with the task's unchanged RUNNING status. While the task is PENDING,
//! container changes wait for its first report.

use flotilla_types::ecs::{ContainerStateChange, SubmitTaskStateChangeRequest};

use super::record::{Reported, TaskRecord};
use super::spec::{network_bindings, network_mode_of};
use super::status::{ContainerStatus, DesiredStatus, TaskStatus};
use crate::clock::to_epoch_seconds;

/// The change to submit for `record`, and what will have been reported once
/// it is; `None` when nothing new happened.
pub fn pending_report(record: &TaskRecord) -> Option<(SubmitTaskStateChangeRequest, Reported)> {
    let task_status = record.known();
    // A task whose containers all stopped while it was meant to run waits
    // for the planner to decide why (and so the reason) before STOPPED goes out.
    if task_status == TaskStatus::Stopped && record.desired == DesiredStatus::Running {
        return None;
    }
    if task_status == TaskStatus::Pending {
        // The first word of a task that reached this host: it moves from the
        // control plane's PROVISIONING to PENDING, as in ECS. Container
        // changes wait for RUNNING.
        if record.reported.task.is_some() {
            return None;
        }
        let mut reported = record.reported.clone();
        reported.task = Some(TaskStatus::Pending);
        let change = SubmitTaskStateChangeRequest {
            cluster: Some(record.payload.cluster_arn.clone()),
            task: Some(record.payload.task_arn.clone()),
            status: Some(TaskStatus::Pending.as_wire().to_owned()),
            containers: Some(Vec::new()),
            ..SubmitTaskStateChangeRequest::default()
        };
        return Some((change, reported));
    }
    let task_changed = record
        .reported
        .task
        .is_none_or(|reported| reported < task_status);
    let mode = network_mode_of(&record.payload.task_definition);
    let mut reported = record.reported.clone();
    let mut containers = Vec::new();
    for container in &record.containers {
        let reportable = match container.known {
            ContainerStatus::Running => ContainerStatus::Running,
            ContainerStatus::Stopped => ContainerStatus::Stopped,
            _ => continue,
        };
        let before = record.reported.containers.get(&container.name).copied();
        if before.is_some_and(|before| before >= reportable) {
            continue;
        }
        reported
            .containers
            .insert(container.name.clone(), reportable);
        let bindings = match (reportable, record.definition(&container.name)) {
            (ContainerStatus::Running, Some(definition)) => {
                let bound: Vec<_> = container
                    .bound_ports
                    .iter()
                    .map(|port| port.to_bound())
                    .collect();
                Some(network_bindings(mode, definition, &bound))
            }
            _ => None,
        };
        containers.push(ContainerStateChange {
            container_name: Some(container.name.clone()),
            status: Some(reportable.as_wire().to_owned()),
            exit_code: if reportable == ContainerStatus::Stopped {
                container
                    .exit_code
                    .and_then(|code| i32::try_from(code).ok())
            } else {
                None
            },
            network_bindings: bindings,
            reason: container.reason.clone(),
            runtime_id: container.runtime_id.clone(),
            image_digest: container.image_digest.clone(),
        });
    }
    if !task_changed && containers.is_empty() {
        return None;
    }
    reported.task = Some(task_status);
    let stopped = task_status == TaskStatus::Stopped;
    let change = SubmitTaskStateChangeRequest {
        cluster: Some(record.payload.cluster_arn.clone()),
        task: Some(record.payload.task_arn.clone()),
        status: Some(task_status.as_wire().to_owned()),
        reason: if stopped {
            record.stop_reason.clone()
        } else {
            None
        },
        containers: Some(containers),
        pull_started_at: record.pull_started_at_ms.map(to_epoch_seconds),
        pull_stopped_at: record.pull_stopped_at_ms.map(to_epoch_seconds),
        execution_stopped_at: if stopped {
            record.execution_stopped_at_ms.map(to_epoch_seconds)
        } else {
            None
        },
        ..SubmitTaskStateChangeRequest::default()
    };
    Some((change, reported))
}

/// A STOPPED report for a task the agent never ran (the control plane asks
/// to stop a task that never reached this instance, or one it forgot).
pub fn stopped_without_running(
    payload: &flotilla_types::acs::TaskPayload,
) -> SubmitTaskStateChangeRequest {
    let containers = payload
        .task_definition
        .container_definitions
        .iter()
        .flatten()
        .filter_map(|definition| {
            Some(ContainerStateChange {
                container_name: Some(definition.name.clone()?),
                status: Some("STOPPED".to_owned()),
                ..ContainerStateChange::default()
            })
        })
        .collect();
    SubmitTaskStateChangeRequest {
        cluster: Some(payload.cluster_arn.clone()),
        task: Some(payload.task_arn.clone()),
        status: Some("STOPPED".to_owned()),
        reason: payload.stopped_reason.clone(),
        containers: Some(containers),
        ..SubmitTaskStateChangeRequest::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use flotilla_types::acs::TaskPayload;

    use super::super::record::PortRecord;
    use super::*;

    fn record() -> TaskRecord {
        let payload: TaskPayload = serde_json::from_value(serde_json::json!({
            "taskArn": "arn:aws:ecs:us-east-1:000000000000:task/default/t1",
            "clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/default",
            "desiredStatus": "RUNNING", "version": 1,
            "taskDefinition": {"family": "web", "revision": 1, "containerDefinitions": [
                {"name": "app", "image": "a", "portMappings": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "s", "essential": false}
            ]}
        }))
        .unwrap();
        TaskRecord::new(payload, || "t".to_owned())
    }

    #[test]
    fn reports_running_once_then_container_changes_then_stopped() {
        let mut record = record();
        record.containers[0].known = ContainerStatus::Running;
        let (change, reported) = pending_report(&record).unwrap();
        assert_eq!(
            change.status.as_deref(),
            Some("PENDING"),
            "a task says PENDING once"
        );
        assert_eq!(
            change.containers,
            Some(Vec::new()),
            "container changes wait for RUNNING"
        );
        record.reported = reported;
        assert_eq!(pending_report(&record), None, "and only once");
        record.containers[1].known = ContainerStatus::Running;
        record.containers[0].runtime_id = Some("c0".to_owned());
        record.containers[0].bound_ports = vec![PortRecord {
            container_port: 80,
            host_port: 32768,
            udp: false,
            host_ip: "0.0.0.0".to_owned(),
        }];
        record.pull_started_at_ms = Some(1_000);
        let (change, reported) = pending_report(&record).unwrap();
        assert_eq!(change.status.as_deref(), Some("RUNNING"));
        assert_eq!(change.pull_started_at, Some(1.0));
        let app = &change.containers.as_ref().unwrap()[0];
        assert_eq!(app.runtime_id.as_deref(), Some("c0"));
        assert_eq!(
            app.network_bindings.as_ref().unwrap()[0].host_port,
            Some(32768)
        );
        record.reported = reported;
        assert_eq!(pending_report(&record), None);

        record.containers[1].known = ContainerStatus::Stopped;
        record.containers[1].exit_code = Some(3);
        let (change, reported) = pending_report(&record).unwrap();
        assert_eq!(change.status.as_deref(), Some("RUNNING"));
        assert_eq!(change.containers.as_ref().unwrap().len(), 1);
        assert_eq!(change.containers.as_ref().unwrap()[0].exit_code, Some(3));
        record.reported = reported;

        record.containers[0].known = ContainerStatus::Stopped;
        record.containers[0].exit_code = Some(0);
        assert_eq!(
            pending_report(&record),
            None,
            "no STOPPED before the planner says why"
        );
        record.request_stop(Some("Essential container in task exited: app".to_owned()));
        record.execution_stopped_at_ms = Some(5_000);
        let (change, _) = pending_report(&record).unwrap();
        assert_eq!(change.status.as_deref(), Some("STOPPED"));
        assert_eq!(change.reason, record.stop_reason);
        assert_eq!(change.execution_stopped_at, Some(5.0));
    }
}
