//! Policy documents come from users and requests from the network: parsing
//! must answer `Ok` or `Err` for any text, and evaluation must decide any
//! compiled document against any request context, never panicking.
//!
//! This is the stable, deterministic counterpart of the `policy_document`
//! cargo-fuzz target: a seeded xorshift generator builds documents from
//! pieces that reach every part of the grammar (odd effects, actions and
//! ARNs with wildcards, colons and unicode, every operator with and without
//! qualifiers, variables that resolve and do not, dates, numbers, addresses),
//! mutates valid ones byte by byte, and evaluates what parses under every
//! policy kind against random principals, actions, resources, keys and times.
//! Documents are also compiled straight from random structures, past
//! validation, so the evaluator is exercised on what validation would refuse.
//!
//! `POLICY_FUZZ_SEED=<u64>` and `POLICY_FUZZ_ROUNDS=<n>` run it longer or
//! elsewhere in the input space.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use flotilla_iam_policy::document::{
    self, ActionElement, ConditionEntry, Effect, PolicyDocument, PolicyVersion, PrincipalElement,
    Principals, ResourceElement, Statement,
};
use flotilla_iam_policy::{
    denial_message, evaluate, evaluate_assume_role, CompiledPolicy, Decision, PolicyKind,
    Principal, PrincipalPolicies, RequestContext,
};
use serde_json::{json, Value};

const DEFAULT_SEED: u64 = 0x1a3_0b0c_5eed_0001;
const DEFAULT_ROUNDS: usize = 2_000;
/// Requests evaluated against each generated set of policies.
const REQUESTS_PER_ROUND: usize = 4;
const SHOWN_INPUT_BYTES: usize = 800;

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

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const EFFECTS: &[&str] = &["Allow", "Deny", "allow", "DENY", "Maybe", ""];
const ACTIONS: &[&str] = &[
    "*",
    "ecs:*",
    "ecs:RunTask",
    "ecs:Describe*",
    "ecs:?un*",
    "ECS:runtask",
    "iam:PassRole",
    "s3:Get*Object",
    "sts:AssumeRole",
    "ecs",
    ":",
    "a:b:c",
    "*:Get*",
    "é:ü",
    "ecs:",
    ":RunTask",
    "ecs:**?*",
    "",
];
const RESOURCES: &[&str] = &[
    "*",
    "arn:aws:ecs:us-east-1:123456789012:cluster/dev",
    "arn:aws:ecs:*:*:task/*/*",
    "arn:aws:ecs:us-*:cluster/x",
    "arn:aws:iam::123456789012:user/${aws:username}",
    "arn:aws:s3:::b/${aws:PrincipalTag/team, 'none'}/*",
    "arn:aws:s3:::${*}${?}${$}${",
    "arn:aws:s3:::${}",
    "arn:aws:iam:::x",
    "arn:aws",
    "a:b",
    "arn:aws::x",
    "arn:aws:logs:*:*:log-group:/ecs/*:*",
    "arn:aws:é:ü:ö:ä/??",
    "",
];
const OPERATORS: &[&str] = &[
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "DateEquals",
    "DateNotEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "Bool",
    "BinaryEquals",
    "IpAddress",
    "NotIpAddress",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
    "Null",
    "Unknown",
    "",
];
const KEYS: &[&str] = &[
    "aws:username",
    "aws:TagKeys",
    "aws:SourceIp",
    "aws:CurrentTime",
    "aws:EpochTime",
    "aws:PrincipalArn",
    "ecs:cluster",
    "aws:RequestTag/env",
    "aws:PrincipalTag/team",
    "AWS:USERID",
    "x",
    "",
];
const VALUES: &[&str] = &[
    "",
    "*",
    "?",
    "true",
    "false",
    "TRUE",
    "10",
    "-1.5e300",
    "NaN",
    "inf",
    "2024-05-01T12:00:00Z",
    "01T",
    "1714564800",
    "-292275054",
    "2016-12-13t2:00:00.5+23",
    "9999999999999999999",
    "10.0.0.0/8",
    "::ffff:1.2.3.4/128",
    "2001:db8::/129",
    "1.2.3.4/33",
    "arn:aws:ecs:*:*:cluster/*",
    "${aws:username}",
    "${aws:TagKeys}",
    "${x, 'd'}",
    "home/${*}/x",
    "é?ü*",
    "QmluYXJ5VmFsdWU=",
];
const PRINCIPALS: &[&str] = &[
    "*",
    "123456789012",
    "arn:aws:iam::123456789012:root",
    "arn:aws:iam::123456789012:user/alice",
    "arn:aws:iam::123456789012:role/r",
    "arn:aws:sts::123456789012:assumed-role/r/s",
    "arn:aws:iam::1:root",
    "x",
];

fn one_or_many(rng: &mut XorShift, items: &[&str]) -> Value {
    if rng.chance(2) {
        json!(rng.pick(items))
    } else {
        let count = rng.below(4);
        Value::Array((0..count).map(|_| json!(rng.pick(items))).collect())
    }
}

fn condition(rng: &mut XorShift) -> Value {
    let mut block = serde_json::Map::new();
    for _ in 0..rng.below(3) {
        let prefix = rng.pick(&["", "", "ForAnyValue:", "ForAllValues:", "ForAnyValue::"]);
        let suffix = rng.pick(&["", "", "IfExists"]);
        let operator = format!("{prefix}{}{suffix}", rng.pick(OPERATORS));
        let mut keys = serde_json::Map::new();
        for _ in 0..rng.below(3) {
            let value = match rng.below(6) {
                0 => json!(rng.below(100)),
                1 => json!(rng.chance(2)),
                _ => one_or_many(rng, VALUES),
            };
            keys.insert(rng.pick(KEYS).to_string(), value);
        }
        block.insert(operator, Value::Object(keys));
    }
    Value::Object(block)
}

fn statement(rng: &mut XorShift) -> Value {
    let mut statement = serde_json::Map::new();
    let effect = if rng.chance(5) {
        rng.pick(EFFECTS)
    } else {
        rng.pick(&["Allow", "Deny"])
    };
    statement.insert("Effect".into(), json!(effect));
    if rng.chance(4) {
        statement.insert("Sid".into(), json!(rng.pick(&["a", "b", "", "S1"])));
    }
    let action_member = if rng.chance(4) { "NotAction" } else { "Action" };
    let actions = if rng.chance(4) {
        ACTIONS
    } else {
        &ACTIONS[..9]
    };
    statement.insert(action_member.into(), one_or_many(rng, actions));
    if !rng.chance(5) {
        let member = if rng.chance(4) {
            "NotResource"
        } else {
            "Resource"
        };
        let resources = if rng.chance(4) {
            RESOURCES
        } else {
            &RESOURCES[..6]
        };
        statement.insert(member.into(), one_or_many(rng, resources));
    }
    if rng.chance(3) {
        let member = if rng.chance(4) {
            "NotPrincipal"
        } else {
            "Principal"
        };
        let principal = match rng.below(4) {
            0 => json!("*"),
            1 => {
                json!({"Service": one_or_many(rng, &["ecs-tasks.amazonaws.com", "amazonaws.com", "x"])})
            }
            _ => json!({"AWS": one_or_many(rng, PRINCIPALS)}),
        };
        statement.insert(member.into(), principal);
    }
    if rng.chance(2) {
        statement.insert("Condition".into(), condition(rng));
    }
    Value::Object(statement)
}

fn document_text(rng: &mut XorShift) -> String {
    let statements: Vec<Value> = (0..1 + rng.below(4)).map(|_| statement(rng)).collect();
    let mut document = serde_json::Map::new();
    match rng.below(4) {
        0 => {}
        1 => {
            document.insert("Version".into(), json!("2008-10-17"));
        }
        _ => {
            document.insert("Version".into(), json!("2012-10-17"));
        }
    }
    let body = if statements.len() == 1 && rng.chance(2) {
        statements[0].clone()
    } else {
        Value::Array(statements)
    };
    document.insert("Statement".into(), body);
    let text = Value::Object(document).to_string();
    if rng.chance(4) {
        mutate(rng, text)
    } else {
        text
    }
}

fn mutate(rng: &mut XorShift, text: String) -> String {
    let mut bytes = text.into_bytes();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => bytes[at] = rng.next() as u8,
            1 => bytes.truncate(at),
            2 => bytes.insert(at, *b"{}[]\":,*?$\\".get(rng.below(11)).unwrap_or(&b'x')),
            _ => {
                bytes.remove(at);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A document built directly, skipping validation.
fn raw_document(rng: &mut XorShift) -> PolicyDocument {
    let strings = |rng: &mut XorShift, items: &[&str]| -> Vec<String> {
        (0..rng.below(4))
            .map(|_| rng.pick(items).to_string())
            .collect()
    };
    let statements = (0..rng.below(4))
        .map(|_| Statement {
            sid: None,
            effect: if rng.chance(2) {
                Effect::Allow
            } else {
                Effect::Deny
            },
            principal: rng.chance(2).then(|| {
                let principals = Principals {
                    everyone: rng.chance(3),
                    aws: strings(rng, PRINCIPALS),
                    ..Principals::default()
                };
                if rng.chance(2) {
                    PrincipalElement::Principal(principals)
                } else {
                    PrincipalElement::NotPrincipal(principals)
                }
            }),
            action: if rng.chance(2) {
                ActionElement::Action(strings(rng, ACTIONS))
            } else {
                ActionElement::NotAction(strings(rng, ACTIONS))
            },
            resource: rng
                .chance(3)
                .then(|| ResourceElement::NotResource(strings(rng, RESOURCES))),
            condition: (0..rng.below(3))
                .map(|_| ConditionEntry {
                    operator: format!(
                        "{}{}",
                        rng.pick(&["", "ForAllValues:"]),
                        rng.pick(OPERATORS)
                    ),
                    key: rng.pick(KEYS).to_string(),
                    values: strings(rng, VALUES),
                })
                .collect(),
        })
        .collect();
    let version = if rng.chance(2) {
        PolicyVersion::V2012_10_17
    } else {
        PolicyVersion::V2008_10_17
    };
    PolicyDocument {
        version,
        id: None,
        statements,
    }
}

fn context(rng: &mut XorShift) -> RequestContext {
    let principal = match rng.below(6) {
        0 => Principal::root("123456789012"),
        1 => Principal::service(rng.pick(&["ecs-tasks.amazonaws.com", "é"])),
        2 => Principal::anonymous(),
        3 => Principal::assumed_role(
            "123456789012",
            rng.pick(&["/", "/a/b/", ""]),
            "r",
            "AROAR",
            "s",
        ),
        _ => Principal::user("123456789012", "/", rng.pick(&["alice", "ü", "*"]), "AIDA"),
    };
    let now_ms = match rng.below(4) {
        0 => i64::MIN,
        1 => i64::MAX,
        _ => rng.next() as i64 % 4_000_000_000_000,
    };
    let mut context = RequestContext::new(
        principal,
        rng.pick(&[
            "ecs:RunTask",
            "ECS:RUNTASK",
            "s3:GetObject",
            "sts:AssumeRole",
            "",
            "x",
            "é:ü",
            "ecs:",
        ]),
        rng.pick(
            &[
                RESOURCES,
                &["arn:aws:ecs:us-east-1:123456789012:task/prod/ü"],
            ]
            .concat(),
        ),
        now_ms,
    );
    for _ in 0..rng.below(5) {
        let values = (0..rng.below(3))
            .map(|_| rng.pick(VALUES).to_string())
            .collect();
        context.set(rng.pick(KEYS), values);
    }
    context
}

fn shown(text: &str) -> &str {
    let mut end = text.len().min(SHOWN_INPUT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[test]
fn parsing_and_evaluation_never_panic() {
    let seed = std::env::var("POLICY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let rounds = std::env::var("POLICY_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let mut rng = XorShift(seed | 1);
    let kinds = [
        PolicyKind::Managed,
        PolicyKind::Inline,
        PolicyKind::Session,
        PolicyKind::Trust,
        PolicyKind::Resource,
        PolicyKind::AwsManaged,
    ];
    let (mut accepted, mut decided) = (0usize, 0usize);
    for round in 0..rounds {
        let texts: Vec<String> = (0..3).map(|_| document_text(&mut rng)).collect();
        let requests: Vec<RequestContext> =
            (0..REQUESTS_PER_ROUND).map(|_| context(&mut rng)).collect();
        let raw = raw_document(&mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut compiled = vec![Arc::new(CompiledPolicy::compile("raw", &raw))];
            for text in &texts {
                for kind in kinds {
                    if let Ok(document) = document::parse(text, kind) {
                        accepted += 1;
                        compiled.push(Arc::new(CompiledPolicy::compile("generated", &document)));
                    }
                }
            }
            let policies = PrincipalPolicies {
                identity: compiled.clone(),
                permissions_boundary: compiled.last().cloned(),
                session: (round % 2 == 0).then(|| compiled.clone()),
            };
            for request in &requests {
                for resource_policy in &compiled {
                    let decision = evaluate(request, &policies, Some(resource_policy));
                    let trust = evaluate_assume_role(request, Some(&policies), resource_policy);
                    for decision in [decision, trust] {
                        decided += 1;
                        if let Decision::Deny(denied) = decision {
                            let _ = denial_message(request, &denied);
                        }
                    }
                }
            }
        }));
        if outcome.is_err() {
            panic!(
                "panicked with seed {seed} in round {round}\ndocuments:\n{}\nraw: {raw:?}\nrequests: {requests:?}",
                texts.iter().map(|t| shown(t)).collect::<Vec<_>>().join("\n")
            );
        }
    }
    // Generation that never produced an accepted document would prove little.
    assert!(
        accepted > rounds / 5,
        "only {accepted} documents accepted in {rounds} rounds"
    );
    assert!(decided > rounds, "only {decided} decisions");
}
