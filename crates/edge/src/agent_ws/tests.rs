//! The agent channel over a real socket: a server on a loopback port and a
//! minimal websocket client written here (RFC 6455 framing, masked client
//! frames), so that the test depends on nothing but the protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method};
use flotilla_control::{Caller, Clock, Ecs};
use flotilla_sigv4::{Credentials, RequestParts, SigningParams, EMPTY_PAYLOAD_SHA256};
use flotilla_store::MemoryStore;
use flotilla_types::acs::{FromAgent, ToAgent};
use flotilla_types::arn::Scope;
use flotilla_types::ecs::{EcsRequest, EcsResponse};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Edge, Metrics, RandomIds, SystemClock};

/// How long a test waits for something the server should do at once.
const PROMPT: Duration = Duration::from_secs(5);
const OPCODE_TEXT: u8 = 1;
const OPCODE_CLOSE: u8 = 8;

struct Server {
    address: SocketAddr,
    edge: Arc<Edge>,
}

impl Server {
    async fn start(agent_heartbeat_timeout_ms: u64) -> Self {
        Self::start_with_credentials_lasting(
            agent_heartbeat_timeout_ms,
            crate::task_roles::TASK_CREDENTIALS_DURATION_SECONDS_DEFAULT,
        )
        .await
    }

    async fn start_with_credentials_lasting(
        agent_heartbeat_timeout_ms: u64,
        task_credentials_duration_seconds: i32,
    ) -> Self {
        let store: Arc<dyn flotilla_store::Store> = Arc::new(MemoryStore::new());
        let ecs = Arc::new(Ecs::new(
            Arc::clone(&store),
            Scope::new("us-east-1", "000000000000"),
            Arc::new(SystemClock),
            Arc::new(RandomIds),
        ));
        let edge = Arc::new(Edge {
            ecs,
            credentials: Arc::new(
                Credentials::from_pairs([("test", "test")]).expect("credentials"),
            ),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            metrics: Metrics::default(),
            principals: Default::default(),
            store,
            agent_heartbeat_timeout_ms,
            registry: None,
            logs: None,
            secrets: None,
            elbv2: None,
            iam: Arc::new(flotilla_iam::Iam::new(
                Arc::new(MemoryStore::new()),
                "000000000000",
            )),
            s3: None,
            task_credentials_duration_seconds,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let router = crate::router(Arc::clone(&edge));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { address, edge }
    }

    async fn call(&self, operation: &str, body: Value) -> Value {
        let bytes = serde_json::to_vec(&body).expect("json");
        let request = EcsRequest::decode(operation, &bytes)
            .expect("operation")
            .expect("decodes");
        let caller = Caller {
            access_key_id: "test".into(),
            principal_arn: "arn:aws:iam::000000000000:root".into(),
        };
        let response: EcsResponse = match self.edge.ecs.handle(&caller, request).await {
            Ok(response) => response,
            Err(error) => panic!("{operation}: {error}"),
        };
        serde_json::to_value(response).expect("serializes")
    }

    /// A cluster `c` with one registered instance; returns its ARN.
    async fn instance(&self) -> String {
        self.call("CreateCluster", json!({"clusterName": "c"}))
            .await;
        self.call("RegisterTaskDefinition", json!({"family": "a", "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 6}]}))
            .await;
        let registered = self
            .call(
                "RegisterContainerInstance",
                json!({"cluster": "c", "totalResources": [{"name": "CPU", "integerValue": 1024}, {"name": "MEMORY", "integerValue": 1024}],
                    "attributes": [{"name": "com.amazonaws.ecs.capability.task-iam-role"}]}),
            )
            .await;
        registered["containerInstance"]["containerInstanceArn"]
            .as_str()
            .expect("arn")
            .to_owned()
    }

    async fn agent_connected(&self, instance: &str) -> bool {
        let described = self
            .call(
                "DescribeContainerInstances",
                json!({"cluster": "c", "containerInstances": [instance]}),
            )
            .await;
        described["containerInstances"][0]["agentConnected"] == true
    }

    /// Waits until the instance's agentConnected is `expected`.
    async fn wait_connected(&self, instance: &str, expected: bool) {
        let deadline = tokio::time::Instant::now() + PROMPT;
        while self.agent_connected(instance).await != expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "agentConnected never became {expected}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A presigned request target for the agent channel.
    fn presigned(&self, parameters: &[(&str, &str)], service: &str) -> String {
        let query = parameters
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut headers = HeaderMap::new();
        headers.insert(
            "host",
            HeaderValue::from_str(&self.address.to_string()).expect("host"),
        );
        let request = RequestParts {
            method: &Method::GET,
            path: flotilla_types::acs::PATH,
            query: &query,
            headers: &headers,
            body_sha256_hex: EMPTY_PAYLOAD_SHA256,
        };
        let params = SigningParams {
            access_key_id: "test",
            secret_access_key: "test",
            region: "us-east-1",
            service,
        };
        flotilla_sigv4::presign_url(&request, &params, 60, SystemClock.now_ms() / 1000)
            .expect("presign")
    }

    async fn connect(&self, instance: &str, seq_num: &str) -> Client {
        let target = self.presigned(
            &[
                ("clusterArn", "c"),
                ("containerInstanceArn", instance),
                ("seqNum", seq_num),
            ],
            "ecs",
        );
        match Client::open(self.address, &target).await {
            Ok(client) => client,
            Err((status, body)) => panic!("upgrade refused with {status}: {body}"),
        }
    }
}

/// AWS query encoding: everything but unreserved characters as %XX.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Client {
    stream: TcpStream,
}

impl Client {
    /// Opens the websocket, or returns the status and body of the refusal.
    async fn open(address: SocketAddr, target: &str) -> Result<Self, (u16, String)> {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(PROMPT, stream.read(&mut byte))
                .await
                .expect("response in time")
                .expect("read");
            assert!(read == 1, "connection closed during the response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        if status == 101 {
            return Ok(Self { stream });
        }
        let length: usize = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.expect("body");
        Err((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// The next frame's opcode and payload; `None` when the socket closed.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).await.ok()?;
        let opcode = head[0] & 0x0f;
        let length = match head[1] & 0x7f {
            126 => {
                let mut extended = [0u8; 2];
                self.stream.read_exact(&mut extended).await.ok()?;
                u16::from_be_bytes(extended) as usize
            }
            127 => {
                let mut extended = [0u8; 8];
                self.stream.read_exact(&mut extended).await.ok()?;
                u64::from_be_bytes(extended) as usize
            }
            short => short as usize,
        };
        let mut payload = vec![0u8; length];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some((opcode, payload))
    }

    /// The next message the server sends, skipping heartbeats.
    async fn message(&mut self) -> ToAgent {
        loop {
            let (opcode, payload) = tokio::time::timeout(PROMPT, self.frame())
                .await
                .expect("a message in time")
                .expect("open");
            assert_eq!(opcode, OPCODE_TEXT, "expected text, got opcode {opcode}");
            let message: ToAgent = serde_json::from_slice(&payload).expect("a ToAgent message");
            if !matches!(message, ToAgent::Heartbeat { .. }) {
                return message;
            }
        }
    }

    /// Waits for the server to close: a close frame or the end of the stream.
    async fn closed(&mut self) -> String {
        loop {
            match tokio::time::timeout(PROMPT, self.frame())
                .await
                .expect("closed in time")
            {
                None => return String::new(),
                Some((OPCODE_CLOSE, payload)) => {
                    return String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
                        .into_owned()
                }
                Some(_) => continue,
            }
        }
    }

    async fn send(&mut self, message: &FromAgent) {
        let payload = serde_json::to_vec(message).expect("json");
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![0x80 | OPCODE_TEXT];
        if payload.len() < 126 {
            frame.push(0x80 | payload.len() as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.expect("send");
    }
}

#[tokio::test]
async fn the_upgrade_is_refused_with_aws_errors() {
    let server = Server::start(30_000).await;
    let instance = server.instance().await;
    let unsigned = format!(
        "{}?clusterArn=c&containerInstanceArn={}&seqNum=0",
        flotilla_types::acs::PATH,
        encode(&instance)
    );
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "unsigned",
            unsigned,
            400,
            "MissingAuthenticationTokenException",
        ),
        (
            "other service",
            server.presigned(
                &[("clusterArn", "c"), ("containerInstanceArn", &instance)],
                "ec2",
            ),
            400,
            "InvalidSignatureException",
        ),
        (
            "no instance named",
            server.presigned(&[("clusterArn", "c")], "ecs"),
            400,
            "InvalidParameterException",
        ),
        (
            "unknown instance",
            server.presigned(
                &[("clusterArn", "c"), ("containerInstanceArn", "feed")],
                "ecs",
            ),
            404,
            "ResourceNotFoundException",
        ),
        (
            "unknown cluster",
            server.presigned(
                &[("clusterArn", "nope"), ("containerInstanceArn", &instance)],
                "ecs",
            ),
            400,
            "ClusterNotFoundException",
        ),
    ];
    for (name, target, status, code) in cases {
        let Err((got_status, body)) = Client::open(server.address, &target).await else {
            panic!("{name}: upgraded")
        };
        let body: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{name}: not JSON: {body}"));
        assert_eq!(
            (got_status, body["__type"].as_str().unwrap_or_default()),
            (status, code),
            "{name}: {body}"
        );
        assert!(body["message"].is_string(), "{name}");
    }
    assert!(!server.agent_connected(&instance).await);
}

#[tokio::test]
async fn payloads_follow_the_instance_tasks() {
    let server = Server::start(30_000).await;
    let instance = server.instance().await;
    let mut client = server.connect(&instance, "5").await;
    let ToAgent::Payload { seq_num, tasks, .. } = client.message().await else {
        panic!("expected the first payload")
    };
    assert_eq!(
        (seq_num, tasks.len()),
        (6, 0),
        "numbering continues from the agent's seqNum"
    );
    server.wait_connected(&instance, true).await;

    let run = server
        .call("RunTask", json!({"cluster": "c", "taskDefinition": "a"}))
        .await;
    let task_arn = run["tasks"][0]["taskArn"]
        .as_str()
        .expect("placed")
        .to_owned();
    let ToAgent::Payload {
        message_id,
        seq_num,
        tasks,
    } = client.message().await
    else {
        panic!("expected a payload")
    };
    assert_eq!(seq_num, 7);
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        (tasks[0].task_arn.as_str(), tasks[0].desired_status.as_str()),
        (task_arn.as_str(), "RUNNING")
    );
    assert_eq!(tasks[0].task_definition.family.as_deref(), Some("a"));
    client
        .send(&FromAgent::Ack {
            message_id,
            seq_num,
        })
        .await;
    client.send(&FromAgent::Heartbeat { sent_at_ms: 1 }).await;

    server
        .call(
            "StopTask",
            json!({"cluster": "c", "task": task_arn, "reason": "bye"}),
        )
        .await;
    let ToAgent::Payload { seq_num, tasks, .. } = client.message().await else {
        panic!("expected a payload")
    };
    assert_eq!(seq_num, 8);
    assert_eq!(
        (
            tasks[0].desired_status.as_str(),
            tasks[0].stopped_reason.as_deref()
        ),
        ("STOPPED", Some("bye"))
    );

    drop(client);
    server.wait_connected(&instance, false).await;
}

#[tokio::test]
async fn a_reconnect_gets_the_full_state_and_reports_health() {
    let server = Server::start(30_000).await;
    let instance = server.instance().await;
    server.call("RegisterTaskDefinition", json!({"family": "h", "containerDefinitions": [
        {"name": "web", "image": "nginx", "memory": 6, "healthCheck": {"command": ["CMD", "true"]}}
    ]})).await;
    // Health checks need the capability; re-register with it, keeping the identity.
    server
        .call("RegisterContainerInstance", json!({"cluster": "c", "containerInstanceArn": instance,
            "attributes": [{"name": "ecs.capability.container-health-check"}],
            "totalResources": [{"name": "CPU", "integerValue": 1024}, {"name": "MEMORY", "integerValue": 1024}]}))
        .await;
    let mut first = server.connect(&instance, "0").await;
    first.message().await;
    server.wait_connected(&instance, true).await;
    let run = server
        .call("RunTask", json!({"cluster": "c", "taskDefinition": "h"}))
        .await;
    let task_arn = run["tasks"][0]["taskArn"]
        .as_str()
        .expect("placed")
        .to_owned();
    first.message().await;

    // A second connection for the same instance supersedes the first.
    let mut second = server.connect(&instance, "0").await;
    let ToAgent::Payload { tasks, .. } = second.message().await else {
        panic!("expected the full payload")
    };
    assert_eq!(tasks.len(), 1);
    assert!(first.closed().await.contains("superseded"));
    assert!(
        server.agent_connected(&instance).await,
        "the newer connection still speaks for the instance"
    );

    second
        .send(&FromAgent::TaskHealth {
            task_arn: task_arn.clone(),
            containers: vec![flotilla_types::acs::ContainerHealth {
                container_name: "web".into(),
                health_status: "HEALTHY".into(),
            }],
        })
        .await;
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        let described = server
            .call(
                "DescribeTasks",
                json!({"cluster": "c", "tasks": [task_arn]}),
            )
            .await;
        if described["tasks"][0]["healthStatus"] == "HEALTHY" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_silent_agent_is_disconnected() {
    let server = Server::start(300).await;
    let instance = server.instance().await;
    let mut client = server.connect(&instance, "0").await;
    client.message().await;
    server.wait_connected(&instance, true).await;
    assert!(client.closed().await.contains("heartbeat"));
    server.wait_connected(&instance, false).await;
}

#[tokio::test]
async fn deregistration_is_announced() {
    let server = Server::start(30_000).await;
    let instance = server.instance().await;
    let mut client = server.connect(&instance, "0").await;
    client.message().await;
    server.wait_connected(&instance, true).await;
    server
        .call(
            "DeregisterContainerInstance",
            json!({"cluster": "c", "containerInstance": instance}),
        )
        .await;
    assert!(matches!(
        client.message().await,
        ToAgent::Deregistered { .. }
    ));
    client.closed().await;
    let target = server.presigned(
        &[("clusterArn", "c"), ("containerInstanceArn", &instance)],
        "ecs",
    );
    let Err((status, _)) = Client::open(server.address, &target).await else {
        panic!("a deregistered instance connected")
    };
    assert_eq!(status, 400);
}

/// Creates an IAM role trusting `service`.
async fn create_role(server: &Server, name: &str, service: &str) {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]});
    let request = flotilla_aws::iam::IamRequest::from_value(
        "CreateRole",
        json!({"RoleName": name, "AssumeRolePolicyDocument": trust.to_string()}),
    )
    .expect("known")
    .expect("decodes");
    let fresh_id = || uuid::Uuid::new_v4().to_string();
    let context = flotilla_iam::Context {
        now_ms: SystemClock.now_ms(),
        fresh_id: &fresh_id,
    };
    server
        .edge
        .iam
        .handle(&context, request)
        .await
        .expect("role created");
}

#[tokio::test]
async fn tasks_get_their_roles_credentials_and_fresh_ones_before_expiry() {
    let server = Server::start_with_credentials_lasting(30_000, 6).await;
    let instance = server.instance().await;
    create_role(&server, "app", "ecs-tasks.amazonaws.com").await;
    create_role(&server, "vm", "ec2.amazonaws.com").await;
    let role = "arn:aws:iam::000000000000:role/app";
    server
        .call(
            "RegisterTaskDefinition",
            json!({"family": "r", "taskRoleArn": role,
        "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 6}]}),
        )
        .await;
    server
        .call(
            "RegisterTaskDefinition",
            json!({"family": "bad",
        "executionRoleArn": "arn:aws:iam::000000000000:role/vm",
        "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 6}]}),
        )
        .await;
    let mut client = server.connect(&instance, "0").await;
    client.message().await;
    server.wait_connected(&instance, true).await;

    let run = server
        .call("RunTask", json!({"cluster": "c", "taskDefinition": "r"}))
        .await;
    let task_arn = run["tasks"][0]["taskArn"]
        .as_str()
        .expect("placed")
        .to_owned();
    let ToAgent::Payload { tasks, .. } = client.message().await else {
        panic!("expected a payload")
    };
    let first = tasks[0].role_credentials.clone().expect("credentials");
    assert_eq!(first.role_arn, role);
    assert!(first.access_key_id.starts_with("ASIA"));
    assert_eq!(tasks[0].credentials_error, None);
    assert!(tasks[0].execution_role_credentials.is_none());
    // They sign as the role's session named after the task.
    let task_id = task_arn.rsplit('/').next().expect("id");
    let lookup = server
        .edge
        .iam
        .access_key(&first.access_key_id, SystemClock.now_ms())
        .expect("read");
    let flotilla_iam::KeyLookup::Found(key) = lookup else {
        panic!("the session is not known")
    };
    let flotilla_iam::records::SessionSubject::Role {
        role_name,
        session_name,
        ..
    } = &key.subject
    else {
        panic!("not a role session")
    };
    assert_eq!(
        (role_name.as_str(), session_name.as_str()),
        ("app", task_id)
    );

    // Halfway through their 6 s, the agent gets fresh ones.
    let renewed = tokio::time::timeout(Duration::from_secs(6), client.message())
        .await
        .expect("renewed in time");
    let ToAgent::IamRoleCredentials {
        message_id,
        task_arn: renewed_task,
        role_type,
        credentials,
    } = renewed
    else {
        panic!("expected renewed credentials, got {renewed:?}")
    };
    assert_eq!(renewed_task, task_arn);
    assert_eq!(role_type, flotilla_types::acs::RoleType::TaskApplication);
    assert_ne!(credentials.access_key_id, first.access_key_id);
    assert!(credentials.expiration_ms > first.expiration_ms);
    client
        .send(&FromAgent::IamRoleCredentialsAck {
            message_id,
            task_arn: task_arn.clone(),
        })
        .await;

    // A role that does not trust ECS tasks: the agent is told why.
    server
        .call("RunTask", json!({"cluster": "c", "taskDefinition": "bad"}))
        .await;
    let reason = loop {
        if let ToAgent::Payload { tasks, .. } = client.message().await {
            break tasks[0].credentials_error.clone();
        }
    };
    assert_eq!(reason.as_deref(), Some("ResourceInitializationError: ECS was unable to assume the role 'arn:aws:iam::000000000000:role/vm' that was provided for this task. Please verify that the role being passed has the proper trust relationship and permissions and that your IAM user has permissions to pass this role."));
}
