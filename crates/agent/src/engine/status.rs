//! Desired and known status of tasks and containers, and the table of moves
//! between them.
//!
//! Every task has a *desired* status (what the control plane wants: RUNNING
//! or STOPPED) and a *known* status (what the agent has observed). The
//! managed task that owns a task is the only writer of both; it closes the
//! gap one allowed transition at a time, as amazon-ecs-agent's `managedTask`
//! does.

use serde::{Deserialize, Serialize};

/// What the control plane wants of a task (and so of each of its containers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DesiredStatus {
    Running,
    Stopped,
}

impl DesiredStatus {
    /// From a payload's `desiredStatus`; anything but RUNNING means stop,
    /// because running something the control plane did not ask for is worse.
    pub fn from_wire(text: &str) -> Self {
        if text.eq_ignore_ascii_case("RUNNING") {
            Self::Running
        } else {
            Self::Stopped
        }
    }

    pub fn as_wire(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Stopped => "STOPPED",
        }
    }
}

/// What the agent knows of one container. Ordered: a container only moves
/// forward, and STOPPED is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ContainerStatus {
    /// Nothing done yet.
    None,
    /// Its image is local.
    Pulled,
    /// The engine holds a created container.
    Created,
    Running,
    Stopped,
}

impl ContainerStatus {
    /// The status as ECS's API spells it.
    pub fn as_wire(self) -> &'static str {
        match self {
            Self::None | Self::Pulled | Self::Created => "PENDING",
            Self::Running => "RUNNING",
            Self::Stopped => "STOPPED",
        }
    }
}

/// What the agent knows of a task as a whole, derived from its containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Still being set up: pulling, creating, waiting on dependencies.
    Pending,
    Running,
    Stopped,
}

impl TaskStatus {
    pub fn as_wire(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Stopped => "STOPPED",
        }
    }
}

/// The transition table: may a container's known status move from `from` to
/// `to`? Forward one step at a time while starting; to STOPPED from anywhere
/// but STOPPED. Recovery after a restart may skip steps the engine took
/// while the agent was away (CREATED to RUNNING happened, or a container
/// exited), which is why skipping forward is allowed too.
pub fn container_transition_allowed(from: ContainerStatus, to: ContainerStatus) -> bool {
    use ContainerStatus::*;
    match (from, to) {
        (Stopped, _) => false,
        (_, Stopped) => true,
        (None, Pulled | Created | Running) | (Pulled, Created | Running) | (Created, Running) => {
            true
        }
        _ => false,
    }
}

/// The transition table for tasks: forward only, STOPPED final.
pub fn task_transition_allowed(from: TaskStatus, to: TaskStatus) -> bool {
    from < to
}

/// The one thing to do next to bring a container from `known` toward
/// `desired`, ignoring dependencies (the planner applies those).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerAction {
    Pull,
    Create,
    Start,
    /// Stop a running container (SIGTERM, then SIGKILL after its stop timeout).
    Stop,
    /// A container that never ran is marked STOPPED without touching the engine.
    Abandon,
}

pub fn next_container_action(
    known: ContainerStatus,
    desired: DesiredStatus,
) -> Option<ContainerAction> {
    use ContainerStatus::*;
    match (desired, known) {
        (DesiredStatus::Running, None) => Some(ContainerAction::Pull),
        (DesiredStatus::Running, Pulled) => Some(ContainerAction::Create),
        (DesiredStatus::Running, Created) => Some(ContainerAction::Start),
        (DesiredStatus::Running, Running | Stopped) => Option::None,
        (DesiredStatus::Stopped, None | Pulled | Created) => Some(ContainerAction::Abandon),
        (DesiredStatus::Stopped, Running) => Some(ContainerAction::Stop),
        (DesiredStatus::Stopped, Stopped) => Option::None,
    }
}

/// The task's known status from its containers': STOPPED once every
/// container is; RUNNING once every container has started (some may have
/// finished already, as init containers do) and none is left to start;
/// PENDING before.
/// A task being stopped stays RUNNING until its last container stops.
pub fn task_status_of(containers: &[ContainerStatus]) -> TaskStatus {
    if containers
        .iter()
        .all(|status| *status == ContainerStatus::Stopped)
    {
        TaskStatus::Stopped
    } else if containers
        .iter()
        .all(|status| *status >= ContainerStatus::Running)
    {
        TaskStatus::Running
    } else {
        TaskStatus::Pending
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::ContainerStatus::*;
    use super::*;

    const ALL: [ContainerStatus; 5] = [None, Pulled, Created, Running, Stopped];

    #[test]
    fn transition_table() {
        let allowed: Vec<(ContainerStatus, ContainerStatus)> = ALL
            .iter()
            .flat_map(|from| ALL.iter().map(move |to| (*from, *to)))
            .filter(|(from, to)| container_transition_allowed(*from, *to))
            .collect();
        assert_eq!(
            allowed,
            [
                (None, Pulled),
                (None, Created),
                (None, Running),
                (None, Stopped),
                (Pulled, Created),
                (Pulled, Running),
                (Pulled, Stopped),
                (Created, Running),
                (Created, Stopped),
                (Running, Stopped),
            ]
        );
    }

    #[test]
    fn next_action_closes_the_gap_one_step_at_a_time() {
        let toward_running: Vec<_> = ALL
            .iter()
            .map(|s| next_container_action(*s, DesiredStatus::Running))
            .collect();
        assert_eq!(
            toward_running,
            [
                Some(ContainerAction::Pull),
                Some(ContainerAction::Create),
                Some(ContainerAction::Start),
                Option::None,
                Option::None
            ]
        );
        let toward_stopped: Vec<_> = ALL
            .iter()
            .map(|s| next_container_action(*s, DesiredStatus::Stopped))
            .collect();
        assert_eq!(
            toward_stopped,
            [
                Some(ContainerAction::Abandon),
                Some(ContainerAction::Abandon),
                Some(ContainerAction::Abandon),
                Some(ContainerAction::Stop),
                Option::None
            ]
        );
        // Every action leads somewhere the table allows.
        for status in ALL {
            for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
                let target = match next_container_action(status, desired) {
                    Some(ContainerAction::Pull) => Pulled,
                    Some(ContainerAction::Create) => Created,
                    Some(ContainerAction::Start) => Running,
                    Some(ContainerAction::Stop | ContainerAction::Abandon) => Stopped,
                    Option::None => continue,
                };
                assert!(
                    container_transition_allowed(status, target),
                    "{status:?} -> {target:?}"
                );
            }
        }
    }

    #[test]
    fn task_status_follows_its_containers() {
        assert_eq!(task_status_of(&[Running, Created]), TaskStatus::Pending);
        assert_eq!(task_status_of(&[Running, Stopped]), TaskStatus::Running);
        assert_eq!(task_status_of(&[Stopped, Stopped]), TaskStatus::Stopped);
        assert_eq!(task_status_of(&[Stopped, None]), TaskStatus::Pending);
        assert!(task_transition_allowed(
            TaskStatus::Pending,
            TaskStatus::Stopped
        ));
        assert!(!task_transition_allowed(
            TaskStatus::Stopped,
            TaskStatus::Running
        ));
    }
}

/// A container's health as its health check reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Health {
    /// No health check, or not decided yet.
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_wire(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::Healthy => "HEALTHY",
            Self::Unhealthy => "UNHEALTHY",
        }
    }

    pub fn from_runtime(health: flotilla_runtime::Health) -> Self {
        match health {
            flotilla_runtime::Health::Unknown => Self::Unknown,
            flotilla_runtime::Health::Healthy => Self::Healthy,
            flotilla_runtime::Health::Unhealthy => Self::Unhealthy,
        }
    }
}
