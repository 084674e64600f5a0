//! How long one authorization decision takes for a principal holding 10
//! policies of 10 statements each, printed as JSON lines.
//!
//! ```sh
//! cargo run --release -p flotilla-iam-policy --example bench_evaluate
//! ```
//!
//! Rows: `compiled` evaluates policies compiled once (what the edge does,
//! caching per principal); `parse_each_time` is its peer in the same run,
//! parsing and compiling the documents for every request (what a cache
//! avoids). Each is measured for a request the last statement of the last
//! policy allows (every earlier statement is tried first) and for one that
//! nothing allows (every statement is tried). Latencies are per decision,
//! measured one by one; `ratio_to_compiled` compares means.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use flotilla_iam_policy::{
    evaluate, CompiledPolicy, Decision, PolicyKind, Principal, PrincipalPolicies, RequestContext,
};

const POLICIES: usize = 10;
const STATEMENTS_PER_POLICY: usize = 10;
const ITERATIONS_COMPILED: usize = 200_000;
const ITERATIONS_PARSED: usize = 2_000;
const WARMUP_ITERATIONS: usize = 10_000;

/// Statement `s` of policy `p`: realistic mixes of wildcards, ARNs and
/// conditions. The last statement of the last policy allows `ecs:RunTask`.
fn statement(p: usize, s: usize) -> String {
    let last = p == POLICIES - 1 && s == STATEMENTS_PER_POLICY - 1;
    let actions = if last {
        r#"["ecs:RunTask", "ecs:StartTask"]"#.to_string()
    } else {
        format!(r#"["ecs:Describe*", "ecs:List{p}{s}*", "ecr:BatchGet*", "logs:Put{s}*"]"#)
    };
    let resource = match s % 3 {
        0 => "\"*\"".to_string(),
        1 => format!(
            r#"["arn:aws:ecs:*:123456789012:task-definition/team-{p}-*:*", "arn:aws:ecs:us-east-1:*:cluster/c{s}"]"#
        ),
        _ => r#""arn:aws:ecs:us-east-1:123456789012:task-definition/web:*""#.to_string(),
    };
    let condition = match s % 4 {
        0 => {
            r#", "Condition": {"StringEquals": {"ecs:cluster": ["arn:aws:ecs:us-east-1:123456789012:cluster/dev", "arn:aws:ecs:us-east-1:123456789012:cluster/test"]}}"#
        }
        1 => {
            r#", "Condition": {"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "2001:db8::/32"]}, "Bool": {"aws:SecureTransport": "true"}}"#
        }
        2 => r#", "Condition": {"StringEquals": {"aws:PrincipalTag/team": "${aws:username}"}}"#,
        _ => "",
    };
    format!(
        r#"{{"Sid": "S{s}", "Effect": "Allow", "Action": {actions}, "Resource": {resource}{condition}}}"#
    )
}

fn documents() -> Vec<String> {
    (0..POLICIES)
        .map(|p| {
            let statements: Vec<String> = (0..STATEMENTS_PER_POLICY)
                .map(|s| statement(p, s))
                .collect();
            format!(
                r#"{{"Version": "2012-10-17", "Statement": [{}]}}"#,
                statements.join(", ")
            )
        })
        .collect()
}

fn compile(documents: &[String]) -> PrincipalPolicies {
    PrincipalPolicies {
        identity: documents
            .iter()
            .enumerate()
            .map(|(i, text)| {
                Arc::new(
                    CompiledPolicy::parse(&format!("p{i}"), text, PolicyKind::Managed)
                        .expect("valid"),
                )
            })
            .collect(),
        ..PrincipalPolicies::default()
    }
}

fn request(action: &str) -> RequestContext {
    let principal = Principal::user("123456789012", "/", "alice", "AIDAALICE");
    RequestContext::new(
        principal,
        action,
        "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3",
        1_714_564_800_000,
    )
    .with(
        "ecs:cluster",
        vec!["arn:aws:ecs:us-east-1:123456789012:cluster/prod".to_string()],
    )
    .with_source_ip("203.0.113.7")
    .with_secure_transport(true)
    .with_principal_tags([("team", "blue")])
}

struct Summary {
    mean_ns: f64,
    p50_ns: u64,
    p99_ns: u64,
    max_ns: u64,
}

fn measure(iterations: usize, mut decide: impl FnMut() -> Decision) -> Summary {
    for _ in 0..WARMUP_ITERATIONS.min(iterations) {
        black_box(decide());
    }
    let mut samples = Vec::with_capacity(iterations);
    let start = Instant::now();
    for _ in 0..iterations {
        let before = Instant::now();
        black_box(decide());
        samples.push(before.elapsed().as_nanos() as u64);
    }
    let total_ns = start.elapsed().as_nanos() as f64;
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Summary {
        mean_ns: total_ns / iterations as f64,
        p50_ns: at(0.50),
        p99_ns: at(0.99),
        max_ns: at(1.0),
    }
}

fn main() {
    let documents = documents();
    let compiled = compile(&documents);
    let cases = [
        ("allowed_by_last_statement", "ecs:RunTask", true),
        ("allowed_by_none", "ecs:DeleteCluster", false),
    ];
    for (case, action, allowed) in cases {
        let context = request(action);
        assert_eq!(
            evaluate(&context, &compiled, None).is_allowed(),
            allowed,
            "{case}"
        );
        let fast = measure(ITERATIONS_COMPILED, || {
            evaluate(black_box(&context), &compiled, None)
        });
        let slow = measure(ITERATIONS_PARSED, || {
            evaluate(black_box(&context), &compile(&documents), None)
        });
        for (variant, summary, iterations) in [
            ("compiled", &fast, ITERATIONS_COMPILED),
            ("parse_each_time", &slow, ITERATIONS_PARSED),
        ] {
            println!(
                "{{\"bench\":\"iam_evaluate\",\"case\":\"{case}\",\"variant\":\"{variant}\",\"policies\":{POLICIES},\"statements_per_policy\":{STATEMENTS_PER_POLICY},\"iterations\":{iterations},\"mean_ns\":{:.0},\"p50_ns\":{},\"p99_ns\":{},\"max_ns\":{},\"ratio_to_compiled\":{:.1}}}",
                summary.mean_ns,
                summary.p50_ns,
                summary.p99_ns,
                summary.max_ns,
                summary.mean_ns / fast.mean_ns
            );
        }
    }
}
