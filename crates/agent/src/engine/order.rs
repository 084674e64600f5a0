//! Dependency ordering between a task's containers, as pure functions.
//!
//! A container starts once every dependency's condition holds (`dependsOn`,
//! plus the implicit START dependencies that `links` and `volumesFrom` make,
//! as ECS's agent adds them). Stopping runs the other way: a container stops
//! only after every running container that depends on it has stopped.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_types::ecs::{ContainerCondition, ContainerDefinition};

use super::status::{ContainerStatus, Health};

/// One edge of the dependency graph: the owner waits for `container` to reach `condition`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependency {
    pub container: String,
    pub condition: ContainerCondition,
}

/// What the ordering rules need to know of one container now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView<'a> {
    pub name: &'a str,
    pub status: ContainerStatus,
    /// Whether it ever ran (a container abandoned before starting did not).
    pub has_started: bool,
    pub exit_code: Option<i64>,
    pub health: Health,
}

/// Whether a container may start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Some dependency has not reached its condition yet.
    Waiting {
        on: String,
    },
    /// Some dependency can never reach its condition; the task must stop.
    Never {
        reason: String,
    },
}

/// Every dependency of a container: its `dependsOn` entries, then START on
/// each linked container and each container it takes volumes from.
pub fn dependencies_of(definition: &ContainerDefinition) -> Vec<Dependency> {
    let mut dependencies: Vec<Dependency> = definition
        .depends_on
        .iter()
        .flatten()
        .filter_map(|entry| {
            Some(Dependency {
                container: entry.container_name.clone()?,
                condition: entry.condition.unwrap_or(ContainerCondition::Start),
            })
        })
        .collect();
    let implicit = definition
        .links
        .iter()
        .flatten()
        .map(|link| link.split(':').next().unwrap_or(link).to_owned())
        .chain(
            definition
                .volumes_from
                .iter()
                .flatten()
                .filter_map(|from| from.source_container.clone()),
        );
    for container in implicit {
        if !dependencies
            .iter()
            .any(|dependency| dependency.container == container)
        {
            dependencies.push(Dependency {
                container,
                condition: ContainerCondition::Start,
            });
        }
    }
    dependencies
}

/// Whether a container whose dependencies are `dependencies` may start, given
/// the state of the task's containers.
pub fn start_readiness(dependencies: &[Dependency], containers: &[ContainerView<'_>]) -> Readiness {
    for dependency in dependencies {
        let Some(target) = containers
            .iter()
            .find(|view| view.name == dependency.container)
        else {
            return Readiness::Never {
                reason: format!(
                    "dependency {} is not a container of the task",
                    dependency.container
                ),
            };
        };
        match condition_state(dependency.condition, target) {
            ConditionState::Met => {}
            ConditionState::NotYet => {
                return Readiness::Waiting {
                    on: dependency.container.clone(),
                }
            }
            ConditionState::Impossible(why) => {
                return Readiness::Never {
                    reason: format!(
                        "dependency {} cannot reach condition {}: {why}",
                        dependency.container,
                        dependency.condition.as_str()
                    ),
                }
            }
        }
    }
    Readiness::Ready
}

enum ConditionState {
    Met,
    NotYet,
    Impossible(String),
}

fn condition_state(condition: ContainerCondition, target: &ContainerView<'_>) -> ConditionState {
    let stopped = target.status == ContainerStatus::Stopped;
    if stopped && !target.has_started {
        return ConditionState::Impossible("it never started".to_owned());
    }
    match condition {
        ContainerCondition::Start if target.status >= ContainerStatus::Running => {
            ConditionState::Met
        }
        ContainerCondition::Complete if stopped => ConditionState::Met,
        ContainerCondition::Success if stopped => match target.exit_code {
            Some(0) => ConditionState::Met,
            Some(code) => ConditionState::Impossible(format!("it exited with code {code}")),
            None => ConditionState::Impossible("it stopped without an exit code".to_owned()),
        },
        ContainerCondition::Healthy if stopped => {
            ConditionState::Impossible("it stopped".to_owned())
        }
        ContainerCondition::Healthy
            if target.status == ContainerStatus::Running && target.health == Health::Healthy =>
        {
            ConditionState::Met
        }
        _ => ConditionState::NotYet,
    }
}

/// Whether `name` may be stopped now: no container that depends on it is
/// still running. `dependencies` maps each container to its dependencies.
pub fn may_stop(
    name: &str,
    dependencies: &BTreeMap<String, Vec<Dependency>>,
    containers: &[ContainerView<'_>],
) -> bool {
    containers.iter().all(|view| {
        let depends_on_name = dependencies
            .get(view.name)
            .is_some_and(|list| list.iter().any(|dependency| dependency.container == name));
        !depends_on_name || view.status != ContainerStatus::Running
    })
}

/// A cycle in the dependency graph, as the names along it, if there is one.
/// Task definitions with cycles are refused at registration, but the agent
/// must not deadlock on one that slipped through.
pub fn find_cycle(dependencies: &BTreeMap<String, Vec<Dependency>>) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        dependencies: &'a BTreeMap<String, Vec<Dependency>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(position) = path.iter().position(|seen| *seen == node) {
            return Some(
                path[position..]
                    .iter()
                    .map(|name| (*name).to_owned())
                    .collect(),
            );
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for dependency in dependencies.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(&dependency.container, dependencies, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in dependencies.keys() {
        if let Some(cycle) = visit(node, dependencies, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use flotilla_types::ecs::{ContainerDependency, VolumeFrom};

    use super::*;

    fn view(name: &str, status: ContainerStatus) -> ContainerView<'_> {
        ContainerView {
            name,
            status,
            has_started: status >= ContainerStatus::Running,
            exit_code: None,
            health: Health::Unknown,
        }
    }

    fn depends(condition: ContainerCondition) -> Vec<Dependency> {
        vec![Dependency {
            container: "db".to_owned(),
            condition,
        }]
    }

    #[test]
    fn implicit_dependencies_come_from_links_and_volumes_from() {
        let definition = ContainerDefinition {
            depends_on: Some(vec![ContainerDependency {
                container_name: Some("init".to_owned()),
                condition: Some(ContainerCondition::Success),
            }]),
            links: Some(vec!["db:database".to_owned(), "init".to_owned()]),
            volumes_from: Some(vec![VolumeFrom {
                source_container: Some("data".to_owned()),
                read_only: Some(true),
            }]),
            ..Default::default()
        };
        let names: Vec<(String, ContainerCondition)> = dependencies_of(&definition)
            .into_iter()
            .map(|d| (d.container, d.condition))
            .collect();
        assert_eq!(
            names,
            [
                ("init".to_owned(), ContainerCondition::Success),
                ("db".to_owned(), ContainerCondition::Start),
                ("data".to_owned(), ContainerCondition::Start),
            ]
        );
    }

    #[test]
    fn each_condition_waits_for_its_state() {
        use ContainerCondition::*;
        use ContainerStatus::*;
        let cases: Vec<(ContainerCondition, ContainerView<'_>, &str)> = vec![
            (Start, view("db", Created), "waiting"),
            (Start, view("db", Running), "ready"),
            (Complete, view("db", Running), "waiting"),
            (
                Complete,
                ContainerView {
                    exit_code: Some(3),
                    ..view("db", Stopped)
                },
                "ready",
            ),
            (
                Success,
                ContainerView {
                    exit_code: Some(0),
                    ..view("db", Stopped)
                },
                "ready",
            ),
            (
                Success,
                ContainerView {
                    exit_code: Some(1),
                    ..view("db", Stopped)
                },
                "never",
            ),
            (Healthy, view("db", Running), "waiting"),
            (
                Healthy,
                ContainerView {
                    health: Health::Unhealthy,
                    ..view("db", Running)
                },
                "waiting",
            ),
            (
                Healthy,
                ContainerView {
                    health: Health::Healthy,
                    ..view("db", Running)
                },
                "ready",
            ),
            (
                Healthy,
                ContainerView {
                    exit_code: Some(0),
                    ..view("db", Stopped)
                },
                "never",
            ),
            // A dependency abandoned before it ever ran (its pull failed) never satisfies anything.
            (
                Start,
                ContainerView {
                    has_started: false,
                    ..view("db", Stopped)
                },
                "never",
            ),
        ];
        for (condition, target, expected) in cases {
            let containers = [target.clone(), view("app", Pulled)];
            let got = match start_readiness(&depends(condition), &containers) {
                Readiness::Ready => "ready",
                Readiness::Waiting { .. } => "waiting",
                Readiness::Never { .. } => "never",
            };
            assert_eq!(got, expected, "{condition:?} on {target:?}");
        }
        let missing = start_readiness(&depends(Start), &[view("app", Pulled)]);
        assert!(matches!(missing, Readiness::Never { .. }));
    }

    #[test]
    fn dependents_stop_before_their_dependencies() {
        let graph = BTreeMap::from([
            ("app".to_owned(), depends(ContainerCondition::Start)),
            ("db".to_owned(), vec![]),
        ]);
        let running = [
            view("db", ContainerStatus::Running),
            view("app", ContainerStatus::Running),
        ];
        assert!(!may_stop("db", &graph, &running));
        assert!(may_stop("app", &graph, &running));
        let app_stopped = [
            view("db", ContainerStatus::Running),
            view("app", ContainerStatus::Stopped),
        ];
        assert!(may_stop("db", &graph, &app_stopped));
    }

    #[test]
    fn cycles_are_found() {
        let edge = |to: &str| {
            vec![Dependency {
                container: to.to_owned(),
                condition: ContainerCondition::Start,
            }]
        };
        let acyclic = BTreeMap::from([
            ("a".to_owned(), edge("b")),
            ("b".to_owned(), edge("c")),
            ("c".to_owned(), vec![]),
        ]);
        assert_eq!(find_cycle(&acyclic), None);
        let cyclic = BTreeMap::from([
            ("a".to_owned(), edge("b")),
            ("b".to_owned(), edge("c")),
            ("c".to_owned(), edge("a")),
        ]);
        assert_eq!(
            find_cycle(&cyclic),
            Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
        );
    }
}
