//! Task sets of EXTERNAL services in the simulation: each set kept at its
//! computed count through scaling, failures and a restart of the control
//! plane; PRIMARY / ACTIVE / DRAINING; stability; each set's tasks in its
//! own target groups; ECS's refusals.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use flotilla_control::services::target_groups::{
    BoxFuture, Target, TargetGroupInfo, TargetGroups, TargetState, TargetType,
};

use super::*;

const CREATE_SERVICE: &str = "CreateService";

async fn external_service(world: &World, name: &str, desired: u32) -> Value {
    world
        .ok(
            CREATE_SERVICE,
            json!({"cluster": CLUSTER, "serviceName": name, "desiredCount": desired,
                   "deploymentController": {"type": "EXTERNAL"}}),
        )
        .await["service"]
        .clone()
}

async fn create_set(world: &World, service: &str, definition: &str, scale: f64) -> Value {
    world
        .ok(
            "CreateTaskSet",
            json!({"cluster": CLUSTER, "service": service, "taskDefinition": definition,
                   "externalId": format!("{definition}-{scale}"),
                   "scale": {"value": scale, "unit": "PERCENT"}}),
        )
        .await["taskSet"]
        .clone()
}

async fn sets(world: &World, service: &str) -> BTreeMap<String, Value> {
    let described = world
        .ok(
            "DescribeTaskSets",
            json!({"cluster": CLUSTER, "service": service}),
        )
        .await;
    described["taskSets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["id"].as_str().unwrap_or_default().to_owned(), s.clone()))
        .collect()
}

/// The service's tasks by startedBy: (not stopped, ever launched).
async fn tasks_by_set(world: &World, service: &str) -> BTreeMap<String, (u32, u32)> {
    let group = format!("service:{service}");
    let mut counts: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for task in world.tasks().await {
        if task["group"] != json!(group) {
            continue;
        }
        let entry = counts
            .entry(task["startedBy"].as_str().unwrap_or_default().to_owned())
            .or_default();
        entry.1 += 1;
        if task["lastStatus"] != "STOPPED" {
            entry.0 += 1;
        }
    }
    counts
}

fn up(counts: &BTreeMap<String, (u32, u32)>, id: &str) -> u32 {
    counts.get(id).map_or(0, |c| c.0)
}

#[tokio::test]
async fn task_sets_run_at_their_computed_counts_through_scaling_failures_and_a_restart() {
    let mut world = World::new(31).await;
    for zone in ["a", "b", "c", "d"] {
        world.add_host(2048, 4096, zone).await;
    }
    let v1 = world.definition("web", "app:v1", false).await;
    let v2 = world.definition("web", "app:v2", false).await;
    let service = external_service(&world, "web", 4).await;
    assert_eq!(service["deploymentController"]["type"], "EXTERNAL");
    assert_eq!(service["deployments"], json!([]), "{service}");
    assert_eq!(service["taskSets"], json!([]), "{service}");
    assert!(service.get("taskDefinition").is_none(), "{service}");

    let blue = create_set(&world, "web", "web:1", 100.0).await;
    let blue_id = blue["id"].as_str().expect("id").to_owned();
    assert!(
        blue_id.starts_with("ecs-svc/") && blue_id.len() == 27,
        "{blue}"
    );
    assert_eq!(blue["status"], "ACTIVE");
    assert_eq!(blue["computedDesiredCount"], 4);
    assert_eq!(blue["stabilityStatus"], "STABILIZING");
    assert_eq!(blue["taskDefinition"], json!(v1));
    assert_eq!(blue["scale"], json!({"value": 100.0, "unit": "PERCENT"}));
    assert_eq!(
        blue["taskSetArn"],
        json!(format!(
            "arn:aws:ecs:us-east-1:000000000000:task-set/{CLUSTER}/web/{blue_id}"
        ))
    );
    let primary = world
        .ok(
            "UpdateServicePrimaryTaskSet",
            json!({"cluster": CLUSTER, "service": "web", "primaryTaskSet": blue["taskSetArn"]}),
        )
        .await;
    assert_eq!(primary["taskSet"]["status"], "PRIMARY");
    world.settle(4).await;
    let described = sets(&world, "web").await;
    let blue = &described[&blue_id];
    assert_eq!(
        (&blue["runningCount"], &blue["stabilityStatus"]),
        (&json!(4), &json!("STEADY_STATE")),
        "{blue}"
    );
    let service = world.service("web").await;
    assert_eq!(service["runningCount"], 4, "{service}");
    assert_eq!(service["taskDefinition"], json!(v1), "{service}");
    assert!(messages(&service).contains(&"(service web) has reached a steady state.".to_owned()));

    // A second set at half the desired count; the control plane restarts
    // before the scheduler has seen it and starts it exactly once.
    let green = create_set(&world, "web", &v2, 50.0).await;
    let green_id = green["id"].as_str().expect("id").to_owned();
    assert_eq!(green["computedDesiredCount"], 2);
    world.restart();
    world.settle(4).await;
    let counts = tasks_by_set(&world, "web").await;
    assert_eq!(counts.get(&green_id), Some(&(2, 2)), "{counts:?}");
    assert_eq!(counts.get(&blue_id), Some(&(4, 4)), "{counts:?}");
    assert_eq!(world.service("web").await["runningCount"], 6);

    // The service's desired count scales every set: ⌈2 × 100%⌉ and ⌈2 × 50%⌉.
    world
        .ok(
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web", "desiredCount": 2}),
        )
        .await;
    world.settle(3).await;
    let counts = tasks_by_set(&world, "web").await;
    assert_eq!((up(&counts, &blue_id), up(&counts, &green_id)), (2, 1));
    let described = sets(&world, "web").await;
    assert_eq!(described[&blue_id]["computedDesiredCount"], 2);
    assert_eq!(described[&green_id]["computedDesiredCount"], 1);

    // A failed task of a set is replaced in that set.
    let running = world.running_tasks_of("web").await;
    let described_tasks = world.tasks().await;
    let victim = described_tasks
        .iter()
        .find(|t| {
            t["startedBy"] == json!(blue_id)
                && running.contains(&t["taskArn"].as_str().unwrap_or_default().to_owned())
        })
        .expect("a running blue task")["taskArn"]
        .as_str()
        .expect("arn")
        .to_owned();
    world.crash(&victim).await;
    world.pass().await;
    let stabilizing = sets(&world, "web").await;
    assert_eq!(stabilizing[&blue_id]["stabilityStatus"], "STABILIZING");
    world.settle(3).await;
    let counts = tasks_by_set(&world, "web").await;
    assert_eq!(counts.get(&blue_id), Some(&(2, 5)), "{counts:?}");
    assert_eq!(
        sets(&world, "web").await[&blue_id]["stabilityStatus"],
        "STEADY_STATE"
    );

    // Green becomes PRIMARY; the service shows its fields.
    world
        .ok(
            "UpdateServicePrimaryTaskSet",
            json!({"cluster": CLUSTER, "service": "web", "primaryTaskSet": green_id}),
        )
        .await;
    let described = sets(&world, "web").await;
    assert_eq!(described[&green_id]["status"], "PRIMARY");
    assert_eq!(described[&blue_id]["status"], "ACTIVE");
    assert_eq!(world.service("web").await["taskDefinition"], json!(v2));

    // Blue cannot go while it is scaled; at 0 its tasks stop, then it is deleted.
    let refused = world
        .call(
            "DeleteTaskSet",
            json!({"cluster": CLUSTER, "service": "web", "taskSet": blue_id}),
        )
        .await
        .expect_err("scaled above 0");
    assert_eq!(refused.code, "InvalidParameterException");
    world
        .ok(
            "UpdateTaskSet",
            json!({"cluster": CLUSTER, "service": "web", "taskSet": blue_id,
                   "scale": {"value": 0, "unit": "PERCENT"}}),
        )
        .await;
    world.settle(3).await;
    assert_eq!(up(&tasks_by_set(&world, "web").await, &blue_id), 0);
    let deleted = world
        .ok(
            "DeleteTaskSet",
            json!({"cluster": CLUSTER, "service": "web", "taskSet": blue_id}),
        )
        .await;
    assert_eq!(deleted["taskSet"]["status"], "DRAINING");
    world.settle(2).await;
    let described = sets(&world, "web").await;
    assert_eq!(described.keys().collect::<Vec<_>>(), vec![&green_id]);
    let service = world.service("web").await;
    assert_eq!(service["runningCount"], 1, "{service}");

    // Deleting the service stops the rest and makes it INACTIVE.
    world
        .ok(
            "DeleteService",
            json!({"cluster": CLUSTER, "service": "web", "force": true}),
        )
        .await;
    world.settle(4).await;
    assert_eq!(world.service("web").await["status"], "INACTIVE");
    assert_eq!(up(&tasks_by_set(&world, "web").await, &green_id), 0);
}

#[tokio::test]
async fn a_force_deleted_set_drains_its_running_tasks() {
    let mut world = World::new(32).await;
    world.add_host(2048, 4096, "a").await;
    world.definition("web", "app:v1", false).await;
    external_service(&world, "web", 3).await;
    let set = create_set(&world, "web", "web", 100.0).await;
    let id = set["id"].as_str().expect("id").to_owned();
    world.settle(3).await;
    assert_eq!(up(&tasks_by_set(&world, "web").await, &id), 3);
    let deleted = world
        .ok(
            "DeleteTaskSet",
            json!({"cluster": CLUSTER, "service": "web", "taskSet": id, "force": true}),
        )
        .await;
    assert_eq!(deleted["taskSet"]["status"], "DRAINING");
    assert_eq!(deleted["taskSet"]["computedDesiredCount"], 0);
    world.pass().await;
    assert_eq!(sets(&world, "web").await[&id]["status"], "DRAINING");
    world.settle(3).await;
    assert!(sets(&world, "web").await.is_empty());
    assert_eq!(up(&tasks_by_set(&world, "web").await, &id), 0);
}

#[tokio::test]
async fn task_set_requests_get_ecs_errors_and_change_nothing() {
    let world = World::new(33).await;
    world.definition("web", "app:v1", false).await;
    world
        .ok(
            CREATE_SERVICE,
            json!({"cluster": CLUSTER, "serviceName": "rolling", "taskDefinition": "web", "desiredCount": 0}),
        )
        .await;
    external_service(&world, "ext", 2).await;
    let error = |result: Result<Value, ApiError>| {
        let error = result.expect_err("refused");
        (error.code, error.message)
    };

    let on_rolling = error(
        world
            .call(
                "CreateTaskSet",
                json!({"cluster": CLUSTER, "service": "rolling", "taskDefinition": "web"}),
            )
            .await,
    );
    assert_eq!(
        on_rolling,
        (
            "InvalidParameterException",
            "Amazon ECS only supports task set management on services configured to use external deployment controllers.".to_owned()
        )
    );
    for operation in [
        "DescribeTaskSets",
        "UpdateServicePrimaryTaskSet",
        "UpdateTaskSet",
        "DeleteTaskSet",
    ] {
        let body = json!({"cluster": CLUSTER, "service": "rolling", "taskSet": "ecs-svc/1",
                          "primaryTaskSet": "ecs-svc/1", "scale": {"value": 1, "unit": "PERCENT"}});
        let mut body = body;
        match operation {
            "DescribeTaskSets" => {
                body = json!({"cluster": CLUSTER, "service": "rolling"});
            }
            "UpdateServicePrimaryTaskSet" => {
                body = json!({"cluster": CLUSTER, "service": "rolling", "primaryTaskSet": "ecs-svc/1"});
            }
            "DeleteTaskSet" => {
                body = json!({"cluster": CLUSTER, "service": "rolling", "taskSet": "ecs-svc/1"});
            }
            _ => {}
        }
        let (code, message) = error(world.call(operation, body).await);
        assert_eq!(code, "InvalidParameterException", "{operation}");
        assert!(
            message.contains("external deployment controllers"),
            "{operation}: {message}"
        );
    }
    let missing = error(
        world
            .call(
                "CreateTaskSet",
                json!({"cluster": CLUSTER, "service": "nope", "taskDefinition": "web"}),
            )
            .await,
    );
    assert_eq!(missing.0, "ServiceNotFoundException");
    let no_set = error(
        world
            .call(
                "UpdateTaskSet",
                json!({"cluster": CLUSTER, "service": "ext", "taskSet": "ecs-svc/123",
                       "scale": {"value": 10, "unit": "PERCENT"}}),
            )
            .await,
    );
    assert_eq!(no_set.0, "TaskSetNotFoundException");
    for value in [150.0, -1.0] {
        let (code, message) = error(
            world
                .call(
                    "CreateTaskSet",
                    json!({"cluster": CLUSTER, "service": "ext", "taskDefinition": "web",
                           "scale": {"value": value, "unit": "PERCENT"}}),
                )
                .await,
        );
        assert_eq!(code, "InvalidParameterException");
        assert!(message.contains("between 0 and 100"), "{message}");
    }
    let (code, message) = error(
        world
            .call(
                CREATE_SERVICE,
                json!({"cluster": CLUSTER, "serviceName": "cd", "taskDefinition": "web", "desiredCount": 1,
                       "deploymentController": {"type": "CODE_DEPLOY"}}),
            )
            .await,
    );
    assert_eq!(code, "InvalidParameterException");
    assert!(
        message.contains("deploymentConfiguration.strategy BLUE_GREEN"),
        "{message}"
    );
    let (_, message) = error(
        world
            .call(
                CREATE_SERVICE,
                json!({"cluster": CLUSTER, "serviceName": "x", "taskDefinition": "web", "desiredCount": 1,
                       "deploymentController": {"type": "EXTERNAL"}}),
            )
            .await,
    );
    assert_eq!(message, "TaskDefinition must be blank.");
    let (_, message) = error(
        world
            .call(
                "UpdateService",
                json!({"cluster": CLUSTER, "service": "ext", "taskDefinition": "web"}),
            )
            .await,
    );
    assert!(
        message.starts_with(
            "Unable to update task definition on services with a EXTERNAL deployment controller."
        ),
        "{message}"
    );
    let (_, message) = error(
        world
            .call(
                "UpdateService",
                json!({"cluster": CLUSTER, "service": "rolling", "deploymentController": {"type": "EXTERNAL"}}),
            )
            .await,
    );
    assert!(
        message.starts_with("Changing the deployment controller"),
        "{message}"
    );
    let two = json!([
        {"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/a/1", "containerName": "app", "containerPort": 80},
        {"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/b/2", "containerName": "app", "containerPort": 80}
    ]);
    let (_, message) = error(
        world
            .call(
                "CreateTaskSet",
                json!({"cluster": CLUSTER, "service": "ext", "taskDefinition": "web", "loadBalancers": two}),
            )
            .await,
    );
    assert_eq!(
        message,
        "CreateTaskSet cannot have more than 1 load balancer."
    );
    // Nothing above made a set.
    assert!(sets(&world, "ext").await.is_empty());

    // Sets with tags (shown with include TAGS) up to ECS's limit; a retried
    // clientToken makes no new one.
    for n in 0..5 {
        world
            .ok(
                "CreateTaskSet",
                json!({"cluster": CLUSTER, "service": "ext", "taskDefinition": "web",
                       "clientToken": format!("token-{n}"), "tags": [{"key": "n", "value": n.to_string()}]}),
            )
            .await;
    }
    let again = world
        .ok(
            "CreateTaskSet",
            json!({"cluster": CLUSTER, "service": "ext", "taskDefinition": "web", "clientToken": "token-0"}),
        )
        .await;
    assert_eq!(
        again["taskSet"]["tags"],
        json!([{"key": "n", "value": "0"}])
    );
    let (_, message) = error(
        world
            .call(
                "CreateTaskSet",
                json!({"cluster": CLUSTER, "service": "ext", "taskDefinition": "web"}),
            )
            .await,
    );
    assert_eq!(
        message,
        "5 deployments exist on the service. Unable to create new TaskSet since this exceeds the maximum limit."
    );
    let described = sets(&world, "ext").await;
    assert_eq!(described.len(), 5);
    assert!(described.values().all(|s| s.get("tags").is_none()));
    let first = described.keys().next().expect("a set").clone();
    let tagged = world
        .ok(
            "DescribeTaskSets",
            json!({"cluster": CLUSTER, "service": "ext", "taskSets": [first, "ecs-svc/404"], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(tagged["taskSets"].as_array().map(Vec::len), Some(1));
    assert!(tagged["taskSets"][0]["tags"].is_array(), "{tagged}");
    assert_eq!(tagged["failures"][0]["reason"], "MISSING");
    // Unscaled sets (scale 0, as ECS creates them) need no force to go.
    let deleted = world
        .ok(
            "DeleteTaskSet",
            json!({"cluster": CLUSTER, "service": "ext", "taskSet": first}),
        )
        .await;
    assert_eq!(deleted["taskSet"]["status"], "DRAINING");
    let (_, message) = error(
        world
            .call(
                "UpdateServicePrimaryTaskSet",
                json!({"cluster": CLUSTER, "service": "ext", "primaryTaskSet": first}),
            )
            .await,
    );
    assert!(message.contains("DRAINING"), "{message}");
}

/// Target groups in memory: every group exists, forwards from a listener
/// and finds every registered target healthy.
#[derive(Default)]
struct Groups {
    registered: Mutex<BTreeMap<String, BTreeSet<Target>>>,
}

impl Groups {
    fn targets(&self, arn: &str) -> usize {
        let registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        registered.get(arn).map_or(0, BTreeSet::len)
    }
}

impl TargetGroups for Groups {
    fn target_group(&self, _arn: &str) -> Result<Option<TargetGroupInfo>, ApiError> {
        Ok(Some(TargetGroupInfo {
            target_type: TargetType::Instance,
            has_load_balancer: true,
            deregistration_delay_ms: 0,
        }))
    }

    fn register<'a>(
        &'a self,
        arn: &'a str,
        targets: Vec<Target>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        let mut registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        registered
            .entry(arn.to_owned())
            .or_default()
            .extend(targets);
        Box::pin(async { Ok(()) })
    }

    fn deregister<'a>(
        &'a self,
        arn: &'a str,
        targets: Vec<Target>,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        let mut registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = registered.get_mut(arn) {
            for target in &targets {
                group.remove(target);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn health(&self, arn: &str, target: &Target, _now_ms: u64) -> TargetState {
        let registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        match registered.get(arn).is_some_and(|g| g.contains(target)) {
            true => TargetState::Healthy,
            false => TargetState::Other,
        }
    }
}

#[tokio::test]
async fn each_task_set_registers_its_tasks_in_its_own_target_group() {
    let mut world = World::new(34).await;
    for zone in ["a", "b", "c", "d"] {
        world.add_host(2048, 4096, zone).await;
    }
    let groups = Arc::new(Groups::default());
    world.ecs.set_target_groups(groups.clone());
    world
        .ok(
            "RegisterTaskDefinition",
            json!({"family": "web", "networkMode": "host", "containerDefinitions": [
                {"name": "app", "image": "app:v1", "memory": 256, "essential": true,
                 "portMappings": [{"containerPort": 8080, "hostPort": 8080}]}]}),
        )
        .await;
    external_service(&world, "web", 2).await;
    let arn = |name: &str| {
        format!("arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/{name}/0123456789abcdef")
    };
    let mut ids = Vec::new();
    for group in ["blue", "green"] {
        let set = world
            .ok(
                "CreateTaskSet",
                json!({"cluster": CLUSTER, "service": "web", "taskDefinition": "web",
                       "scale": {"value": 100, "unit": "PERCENT"},
                       "loadBalancers": [{"targetGroupArn": arn(group), "containerName": "app", "containerPort": 8080}]}),
            )
            .await;
        ids.push(set["taskSet"]["id"].as_str().expect("id").to_owned());
    }
    world.settle(4).await;
    assert_eq!(
        (groups.targets(&arn("blue")), groups.targets(&arn("green"))),
        (2, 2)
    );
    let described = sets(&world, "web").await;
    assert!(
        described
            .values()
            .all(|s| s["stabilityStatus"] == "STEADY_STATE"),
        "{described:?}"
    );

    // Blue scaled to 0: its targets leave its group, green's stay.
    world
        .ok(
            "UpdateTaskSet",
            json!({"cluster": CLUSTER, "service": "web", "taskSet": ids[0],
                   "scale": {"value": 0, "unit": "PERCENT"}}),
        )
        .await;
    world.settle(4).await;
    assert_eq!(
        (groups.targets(&arn("blue")), groups.targets(&arn("green"))),
        (0, 2)
    );
}

/// Passes that die after a few commits (a kill -9 in the middle), each
/// followed by a restart on the same store: no set ever runs more tasks
/// than its computed count allows, and the sets end at their counts.
#[tokio::test]
async fn crashes_in_the_middle_of_passes_neither_lose_nor_add_tasks() {
    let mut world = World::new(35).await;
    for zone in ["a", "b", "c"] {
        world.add_host(4096, 8192, zone).await;
    }
    world.definition("web", "app:v1", false).await;
    world.definition("web", "app:v2", false).await;
    world
        .ok(
            CREATE_SERVICE,
            json!({"cluster": CLUSTER, "serviceName": "web", "desiredCount": 4,
                   "deploymentController": {"type": "EXTERNAL"},
                   "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 150}}),
        )
        .await;
    let blue = create_set(&world, "web", "web:1", 100.0).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let green = create_set(&world, "web", "web:2", 50.0).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for budget in [0, 1, 2, 1, 3, 0, 2] {
        world.store.commits_left.store(budget, Ordering::Relaxed);
        let _ = world.scheduler.pass(&world.ecs).await;
        world.restart();
        world.agents_act().await;
        world.advance(STEP_MS);
        let counts = tasks_by_set(&world, "web").await;
        // maximumPercent 150 of 4 and of 2: at most 6 and 3 at once.
        assert!(
            up(&counts, &blue) <= 6 && up(&counts, &green) <= 3,
            "{counts:?}"
        );
    }
    world
        .ok(
            "UpdateTaskSet",
            json!({"cluster": CLUSTER, "service": "web", "taskSet": blue,
                   "scale": {"value": 25, "unit": "PERCENT"}}),
        )
        .await;
    for budget in [1, 0, 2] {
        world.store.commits_left.store(budget, Ordering::Relaxed);
        let _ = world.scheduler.pass(&world.ecs).await;
        world.restart();
        world.agents_act().await;
        world.advance(STEP_MS);
    }
    world.settle(4).await;
    let counts = tasks_by_set(&world, "web").await;
    assert_eq!(
        (up(&counts, &blue), up(&counts, &green)),
        (1, 2),
        "{counts:?}"
    );
    // Nothing was launched twice: every task ever started is one of the
    // first 4 of blue and 2 of green.
    assert_eq!((counts[&blue].1, counts[&green].1), (4, 2), "{counts:?}");
    let described = sets(&world, "web").await;
    assert!(
        described
            .values()
            .all(|s| s["stabilityStatus"] == "STEADY_STATE"),
        "{described:?}"
    );
    assert_eq!(world.service("web").await["runningCount"], 3);
}
