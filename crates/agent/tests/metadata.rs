//! The task metadata endpoint over real HTTP.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use flotilla_agent::clock::{Clock, SystemClock};
use flotilla_agent::engine::record::TaskRecord;
use flotilla_agent::engine::status::ContainerStatus;
use flotilla_agent::metadata::{serve, InstanceMetadata, MetadataRegistry};
use flotilla_runtime::{ContainerRuntime, FakeRuntime};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: metadata\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status: u16 = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn serves_container_task_and_stats_metadata() {
    let clock = SystemClock;
    let fake = Arc::new(FakeRuntime::new(move || clock.now_ms()));
    fake.pull_image("nginx", flotilla_runtime::PullPolicy::Always, None)
        .await
        .unwrap();
    let id = fake
        .create_container(&flotilla_runtime::ContainerSpec {
            name: "c".into(),
            image: "nginx".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    fake.start_container(&id).await.unwrap();

    let payload = serde_json::from_value(json!({
        "taskArn": "arn:aws:ecs:us-east-1:000000000000:task/default/t1",
        "clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/default",
        "desiredStatus": "RUNNING", "version": 1,
        "taskDefinition": {"family": "web", "revision": 2, "containerDefinitions": [{"name": "app", "image": "nginx", "memory": 128}]}
    }))
    .unwrap();
    let mut record = TaskRecord::new(payload, || "secret-token".to_owned());
    record.containers[0].known = ContainerStatus::Running;
    record.containers[0].runtime_id = Some(id.clone());
    let registry = Arc::new(MetadataRegistry::default());
    registry.set_instance(InstanceMetadata {
        availability_zone: "local-1a".into(),
        launch_type: "EC2".into(),
        ..Default::default()
    });
    registry.publish(&record);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        Arc::clone(&registry),
        fake as Arc<dyn ContainerRuntime>,
        Arc::new(SystemClock),
        Arc::new(flotilla_agent::credentials::TaskCredentials::default()),
    ));

    let (status, container) = get(address, "/v4/secret-token").await;
    assert_eq!(status, 200);
    assert_eq!(container["Name"], "app");
    assert_eq!(container["DockerId"], id.as_str());
    assert_eq!(container["Limits"]["Memory"], 128);
    let (_, task) = get(address, "/v4/secret-token/task").await;
    assert_eq!(
        task["TaskARN"],
        "arn:aws:ecs:us-east-1:000000000000:task/default/t1"
    );
    assert_eq!(task["Containers"][0]["KnownStatus"], "RUNNING");
    let (_, stats) = get(address, "/v4/secret-token/stats").await;
    assert!(stats["memory_stats"]["usage"].as_u64().unwrap() > 0);
    let block = &stats["blkio_stats"]["io_service_bytes_recursive"];
    assert_eq!(block[0]["op"], "read");
    assert!(block[0]["value"].is_u64() && block[1]["op"] == "write");
    let (_, task_stats) = get(address, "/v4/secret-token/task/stats").await;
    assert!(task_stats[id.as_str()].is_object());
    let (status, _) = get(address, "/v4/wrong-token").await;
    assert_eq!(status, 404);
    registry.forget("arn:aws:ecs:us-east-1:000000000000:task/default/t1");
    let (status, _) = get(address, "/v4/secret-token").await;
    assert_eq!(status, 404);
}
