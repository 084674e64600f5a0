//! Request decoding is a trust boundary: the bytes come from the network, so
//! `EcsRequest::decode` must answer `Some(Ok)` or `Some(Err)` for every
//! operation and every input, and never panic or overflow the stack.
//!
//! This is the stable, fast, deterministic counterpart of the cargo-fuzz
//! target in `fuzz/`: valid request bodies are mutated by a seeded xorshift
//! generator (byte flips, truncations, type swaps, edge-case numbers and
//! strings, nesting 10,000 levels deep) and every mutant is decoded as every
//! operation of the model. A failure prints the seed and the input.
//!
//! `DECODE_FUZZ_SEED=<u64>` and `DECODE_FUZZ_ROUNDS=<n>` run it longer or
//! elsewhere in the input space, e.g. in a soak loop.

use std::panic::{catch_unwind, AssertUnwindSafe};

use flotilla_types::ecs::EcsRequest;
use serde_json::{json, Value};

/// The generated wire types: operations are read from their `decode` match,
/// so a regenerated model is covered without editing this file.
const GENERATED: &str = include_str!("../src/ecs/generated.rs");

const DEFAULT_SEED: u64 = 0x5eed_f107_111a_0001;
/// Mutants derived from each seed body in one run of the test.
const DEFAULT_ROUNDS: usize = 20;
/// Nesting depth of the deep-nesting mutants: far past serde_json's recursion
/// limit (128), so that the limit, not the stack, has to stop them.
const NESTING_DEPTH: usize = 10_000;
/// How much of a failing input to print.
const SHOWN_INPUT_BYTES: usize = 600;

fn operations() -> Vec<&'static str> {
    let start = GENERATED
        .find("pub fn decode(operation: &str")
        .expect("generated.rs has EcsRequest::decode");
    let end = start
        + GENERATED[start..]
            .find("_ => return None")
            .expect("EcsRequest::decode ends with a catch-all arm");
    GENERATED[start..end]
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"')?.split_once("\" =>"))
        .map(|(name, _)| name)
        .collect()
}

/// xorshift64*: tiny, deterministic, and good enough to pick mutations.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Valid bodies of several operations, rich in nested shapes, enums, numbers
/// and maps. Each is decoded as every operation, so they double as
/// mismatched bodies for all the others.
fn seed_bodies() -> Vec<Value> {
    vec![
        json!({}),
        json!({
            "family": "web", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512",
            "executionRoleArn": "arn:aws:iam::000000000000:role/exec",
            "containerDefinitions": [{
                "name": "web", "image": "nginx:1.27", "cpu": 256, "memory": 512,
                "memoryReservation": 128, "essential": true,
                "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp", "name": "http", "appProtocol": "http"}],
                "environment": [{"name": "MODE", "value": "prod"}],
                "secrets": [{"name": "DB", "valueFrom": "arn:aws:ssm:us-east-1:000000000000:parameter/db"}],
                "command": ["nginx", "-g", "daemon off;"],
                "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost/"], "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 10},
                "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/web"}},
                "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}],
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
                "dockerLabels": {"team": "a"},
                "linuxParameters": {"initProcessEnabled": true, "capabilities": {"add": ["NET_ADMIN"]}}
            }],
            "volumes": [{"name": "data", "host": {"sourcePath": "/data"}}],
            "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.os-type == linux"}],
            "tags": [{"key": "team", "value": "a"}],
            "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
            "ephemeralStorage": {"sizeInGiB": 21}
        }),
        json!({
            "clusterName": "prod", "tags": [{"key": "k", "value": "v"}],
            "settings": [{"name": "containerInsights", "value": "enabled"}],
            "capacityProviders": ["FARGATE"],
            "defaultCapacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}]
        }),
        json!({
            "cluster": "prod", "serviceName": "web", "taskDefinition": "web:1", "desiredCount": 2,
            "launchType": "FARGATE",
            "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 100,
                "deploymentCircuitBreaker": {"enable": true, "rollback": true}},
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"], "assignPublicIp": "ENABLED"}},
            "loadBalancers": [{"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/t/1", "containerName": "web", "containerPort": 80}],
            "placementStrategy": [{"type": "spread", "field": "attribute:ecs.availability-zone"}],
            "healthCheckGracePeriodSeconds": 30, "enableECSManagedTags": true, "propagateTags": "SERVICE"
        }),
        json!({
            "cluster": "prod", "taskDefinition": "web", "count": 3, "startedBy": "me",
            "overrides": {"containerOverrides": [{"name": "web", "command": ["sh"], "environment": [{"name": "A", "value": "1"}], "cpu": 128}], "cpu": "512"},
            "placementConstraints": [{"type": "distinctInstance"}]
        }),
        json!({"maxResults": 10, "nextToken": "abc"}),
        json!({"taskDefinition": "arn:aws:ecs:us-east-1:000000000000:task-definition/web:3", "include": ["TAGS"]}),
        json!({"resourceArn": "arn:aws:ecs:us-east-1:000000000000:cluster/prod", "tags": [{"key": "a", "value": "b"}], "tagKeys": ["a"]}),
        json!({"name": "containerInsights", "value": "enhanced", "principalArn": "arn:aws:iam::000000000000:root"}),
        json!({
            "cluster": "prod", "task": "t", "status": "RUNNING", "pullStartedAt": 1_700_000_000.5,
            "executionStoppedAt": 1.7e9,
            "containers": [{"containerName": "web", "exitCode": 0, "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 32768}]}]
        }),
    ]
}

/// Stands for a spot where raw JSON text is spliced in after serializing, for
/// inputs a `Value` cannot hold (huge numbers, lone surrogates, deep nesting).
const MARKER: &str = "\u{1}splice\u{1}";
const MARKER_JSON: &str = "\"\\u0001splice\\u0001\"";

/// Raw JSON texts that sit at the edges of what the decoder accepts.
fn edge_texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "2147483648",
        "-2147483649",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
        "1e999",
        "-1e999",
        "1e-999",
        "-0",
        "0.0",
        "1.5",
        "4e9",
        "123456789012345678901234567890",
        "\"\\ud800\"",
        "\"\\udfff\\ud800\"",
        "\"a\\u0000b\"",
        "\"\\uZZZZ\"",
        "\"\u{10ffff}\"",
        "\"42\"",
        "\"true\"",
        "\"FARGATE \"",
        "\"fargate\"",
        "\"\"",
        "[]",
        "{}",
        "[null]",
        "{\"\":null}",
        "true",
        "null",
    ]
    .iter()
    .map(|text| (*text).to_owned())
    .collect();
    texts.push(format!("\"{}\"", "x".repeat(70_000)));
    texts
}

/// Nesting far past the recursion limit, balanced and not.
fn deep_texts() -> Vec<String> {
    let depth = NESTING_DEPTH;
    vec![
        format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
        format!("{}{}", "[{\"k\":".repeat(depth), "}]".repeat(depth)),
        "[".repeat(depth),
        "{\"a\":".repeat(depth),
    ]
}

/// Every node of `value`, as a path of object keys and array indexes.
fn node_paths(value: &Value, path: &mut Vec<PathStep>, into: &mut Vec<Vec<PathStep>>) {
    into.push(path.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                path.push(PathStep::Key(key.clone()));
                node_paths(child, path, into);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                path.push(PathStep::Index(index));
                node_paths(child, path, into);
                path.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn node_at<'a>(value: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    path.iter().fold(value, |node, step| match step {
        PathStep::Key(key) => &mut node[key.as_str()],
        PathStep::Index(index) => &mut node[*index],
    })
}

/// A value of another JSON type than `old`, or `old` wrapped.
fn swapped(random: &mut XorShift, old: &Value) -> Value {
    match random.below(9) {
        0 => json!("x"),
        1 => json!(7),
        2 => json!(-1),
        3 => json!(1.25),
        4 => json!(true),
        5 => Value::Null,
        6 => json!([old.clone()]),
        7 => json!({"value": old.clone()}),
        _ => match old {
            Value::Number(number) => json!(number.to_string()),
            Value::String(text) => text
                .parse::<f64>()
                .map_or(json!([text]), |number| json!(number)),
            Value::Array(items) => items.first().cloned().unwrap_or(json!({})),
            Value::Object(map) => Value::Array(map.values().cloned().collect()),
            other => json!([other.clone()]),
        },
    }
}

/// One mutant of `seed`.
fn mutate(random: &mut XorShift, seed: &Value, edges: &[String], deep: &[String]) -> Vec<u8> {
    let mut value = seed.clone();
    let mut paths = Vec::new();
    node_paths(&value, &mut Vec::new(), &mut paths);
    let path = random.pick(&paths).clone();
    match random.below(7) {
        // Type swaps at a random node.
        0 | 1 => {
            let node = node_at(&mut value, &path);
            *node = swapped(random, node);
            serde_json::to_vec(&value).unwrap_or_default()
        }
        // An edge-case number or string at a random node.
        2 => splice(&mut value, &path, random.pick::<String>(edges)),
        // Deep nesting at a random node (the root included).
        3 => splice(&mut value, &path, random.pick::<String>(deep)),
        // Random byte flips and interesting bytes.
        4 | 5 => {
            let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
            const INTERESTING: &[u8] = b"\"\\{}[]:,0-e.\x00\xff\xc3\x80 ";
            for _ in 0..=random.below(4) {
                if bytes.is_empty() {
                    break;
                }
                let at = random.below(bytes.len());
                bytes[at] = if random.below(2) == 0 {
                    bytes[at] ^ (1 << random.below(8))
                } else {
                    *random.pick(INTERESTING)
                };
            }
            bytes
        }
        // Truncation anywhere.
        _ => {
            let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
            bytes.truncate(random.below(bytes.len() + 1));
            bytes
        }
    }
}

fn splice(value: &mut Value, path: &[PathStep], raw: &str) -> Vec<u8> {
    *node_at(value, path) = json!(MARKER);
    let text = serde_json::to_string(value).unwrap_or_default();
    text.replacen(MARKER_JSON, raw, 1).into_bytes()
}

/// Decodes `body` as every operation and as a plain JSON value; on a panic,
/// names the operation, the seed and the input before failing.
fn decode_everywhere(operations: &[&str], body: &[u8], seed: u64, round: usize) {
    for operation in operations {
        let outcome = catch_unwind(AssertUnwindSafe(|| EcsRequest::decode(operation, body)));
        match outcome {
            Ok(Some(_)) => {}
            Ok(None) => {
                panic!("{operation} is in the model but EcsRequest::decode does not know it")
            }
            Err(_) => {
                let shown = &body[..body.len().min(SHOWN_INPUT_BYTES)];
                panic!(
                    "EcsRequest::decode({operation:?}, ..) panicked; DECODE_FUZZ_SEED={seed} round {round}, \
                     input ({} bytes): {:?}",
                    body.len(),
                    String::from_utf8_lossy(shown)
                );
            }
        }
    }
    let outcome = catch_unwind(|| flotilla_types::decode_json::<Value>(body));
    assert!(
        outcome.is_ok(),
        "decode_json::<Value> panicked; DECODE_FUZZ_SEED={seed} round {round}"
    );
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn operations_are_read_from_the_generated_decoder() {
    let operations = operations();
    assert!(
        operations.len() > 50,
        "found only {} operations",
        operations.len()
    );
    for operation in &operations {
        assert!(
            EcsRequest::decode(operation, b"{}").is_some(),
            "{operation}"
        );
    }
    assert!(EcsRequest::decode("NoSuchOperation", b"{}").is_none());
}

#[test]
fn mutated_bodies_decode_to_ok_or_err_for_every_operation() {
    let seed = env_number("DECODE_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let rounds = env_number("DECODE_FUZZ_ROUNDS").unwrap_or(DEFAULT_ROUNDS);
    // xorshift must not start at zero, where it stays.
    let mut random = XorShift(seed | 1);
    let operations = operations();
    let seeds = seed_bodies();
    let edges = edge_texts();
    let deep = deep_texts();

    // The seeds themselves, the edge texts and deep nesting as whole bodies,
    // and bodies that are not JSON objects at all.
    let mut fixed: Vec<Vec<u8>> = seeds
        .iter()
        .map(|body| serde_json::to_vec(body).unwrap_or_default())
        .collect();
    fixed.extend(
        edges
            .iter()
            .chain(&deep)
            .map(|text| text.clone().into_bytes()),
    );
    fixed.extend(
        [
            &b""[..],
            b"   ",
            b"\xef\xbb\xbf{}",
            b"{} {}",
            b"{\"family\":\"a\",\"family\":\"b\"}",
            b"\xff\xfe",
            b"{\"a\":1,}",
        ]
        .iter()
        .map(|bytes| bytes.to_vec()),
    );
    for body in &fixed {
        decode_everywhere(&operations, body, seed, 0);
    }

    for round in 1..=rounds {
        for seed_body in &seeds {
            let body = mutate(&mut random, seed_body, &edges, &deep);
            decode_everywhere(&operations, &body, seed, round);
        }
        // Bytes with no structure at all.
        let garbage: Vec<u8> = (0..random.below(64)).map(|_| random.next() as u8).collect();
        decode_everywhere(&operations, &garbage, seed, round);
    }
}
