//! Cluster Query Language: parse and evaluate tables, and syntax errors with positions.

use flotilla_scheduler::cql::Facts;
use flotilla_scheduler::{Expression, Instance, Resources};

fn instance() -> Instance {
    let mut instance = Instance::new(
        "arn:aws:ecs:us-east-1:1:container-instance/c/i1",
        Resources::default(),
    )
    .with_attribute("ecs.instance-type", Some("t2.small"))
    .with_attribute("ecs.availability-zone", Some("us-east-1a"))
    .with_attribute("ecs.os-type", Some("linux"))
    .with_attribute("ecs.cpu-architecture", Some("x86_64"))
    .with_attribute("ecs.ami-id", Some("ami-1234"))
    .with_attribute("ecs.capability.external", None)
    .with_attribute("stack", Some("prod"))
    .with_attribute("weight", Some("10"));
    instance.ec2_instance_id = "i-abcd1234".into();
    instance.registered_at_ms = 1_531_000_000_000; // 2018-07-07T21:46:40Z
    instance.agent_version = Some("1.14.2".into());
    instance.task_groups = vec![("service:production".into(), 2), ("family:web".into(), 1)];
    instance
}

/// (expression, whether the instance above matches)
const MATCHES: &[(&str, bool)] = &[
    // AWS's documented examples.
    ("attribute:ecs.instance-type == t2.small", true),
    (
        "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
        true,
    ),
    (
        "attribute:ecs.instance-type =~ g2.* and attribute:ecs.availability-zone != us-east-1d",
        false,
    ),
    ("task:group == service:production", true),
    ("not(task:group == database)", true),
    ("runningTasksCount == 1", false),
    ("runningTasksCount == 3", true),
    ("agentVersion < 1.14.5", true),
    ("registeredAt < 2018-02-13", false),
    ("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']", true),
    // The seeds' example.
    ("attribute:ecs.instance-type =~ t2.*", true),
    ("attribute:ecs.instance-type =~ t2\\..*", true),
    (
        "attribute:ecs.instance-type =~ (t2|m5)\\.(small|large)",
        true,
    ),
    ("attribute:ecs.instance-type =~ t2", false),
    ("attribute:ecs.instance-type !~ m5.*", true),
    ("attribute:ecs.instance-type matches t2.*", true),
    // Operators, both spellings.
    ("attribute:ecs.instance-type equals t2.small", true),
    ("attribute:ecs.instance-type not_equals t2.small", false),
    ("attribute:ecs.instance-type != t2.large", true),
    ("attribute:ecs.capability.external exists", true),
    ("attribute:ecs.capability.external !exists", false),
    ("attribute:ecs.capability.external not_exists", false),
    ("attribute:missing !exists", true),
    ("attribute:missing exists", false),
    ("attribute:missing != x", true),
    ("attribute:missing == x", false),
    ("attribute:ecs.availability-zone not_in [us-east-1a]", false),
    (
        "attribute:ecs.availability-zone !in [us-east-1b, us-east-1c]",
        true,
    ),
    ("attribute:weight > 9", true),
    ("attribute:weight >= 10", true),
    ("attribute:weight < 10", false),
    ("attribute:weight <= 10", true),
    ("attribute:weight greater_than 100", false),
    ("attribute:stack > alpha", true),
    ("ec2InstanceId == i-abcd1234", true),
    ("ec2InstanceId =~ i-.*", true),
    ("ec2InstanceId not_in [i-abcd1234]", false),
    ("agentConnected == true", true),
    ("agentVersion >= 1.14.2", true),
    ("agentVersion > 1.9", true),
    ("registeredAt > 2018-07-07T21:46:39Z", true),
    ("registeredAt < 2018-07-07T21:46:41+00:00", true),
    ("registeredAt <= 2018-07-07T23:46:40+02:00", true),
    ("registeredAt > 2018-07-07T21:46:40", false),
    ("registeredAt >= 2018-07-07", true),
    ("task:group exists", true),
    ("task:group in [service:production, service:other]", true),
    ("task:group =~ family:.*", true),
    ("not task:group == family:web", false),
    // Compound expressions, precedence and case.
    ("attribute:stack == prod and attribute:weight == 10", true),
    ("attribute:stack == dev or attribute:weight == 10", true),
    (
        "attribute:stack == dev or attribute:weight == 10 and attribute:stack == x",
        false,
    ),
    (
        "(attribute:stack == dev or attribute:weight == 10) and attribute:stack == prod",
        true,
    ),
    (
        "attribute:stack == prod && !(attribute:weight == 10)",
        false,
    ),
    ("attribute:stack == dev || attribute:weight == 10", true),
    (
        "attribute:stack == prod AND NOT attribute:stack == dev",
        true,
    ),
    ("ATTRIBUTE:stack == prod", true),
    ("attribute:Stack == prod", false),
    ("attribute:stack == Prod", false),
    ("attribute:stack==prod", true),
    ("  attribute:stack   ==   'prod'  ", true),
    ("not(not(attribute:stack == prod))", true),
];

#[test]
fn expressions_evaluate_as_documented() {
    let instance = instance();
    let facts = Facts {
        instance: &instance,
        groups: &instance.task_groups,
    };
    for (text, expected) in MATCHES {
        let expression = Expression::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(expression.matches(&facts), *expected, "{text}");
        // What it prints parses back to the same expression.
        let printed = expression.to_string();
        if !printed.contains(" ms") {
            let again = Expression::parse(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
            assert_eq!(again, expression, "{text} printed as {printed}");
        }
    }
}

/// (expression, character position, part of what was expected)
const ERRORS: &[(&str, usize, &str)] = &[
    ("", 0, "a subject"),
    ("   ", 3, "a subject"),
    ("attribute: == x", 10, "an attribute name"),
    ("attribute:x", 11, "an operator"),
    ("attribute:x ~= y", 12, "an operator"),
    ("attribute:x ==", 14, "a value"),
    ("attribute:x in a", 15, "\"[\""),
    ("attribute:x in [a b]", 18, "\",\" or \"]\""),
    ("attribute:x in [a,", 18, "a value"),
    ("attribute:x == a and", 20, "a subject"),
    ("attribute:x == a or or", 20, "a subject"),
    ("attribute:x == a b", 17, "\"and\", \"or\""),
    ("(attribute:x == a", 17, "\")\""),
    ("attribute:x == a)", 16, "\"and\", \"or\""),
    ("cpu > 1", 0, "a subject"),
    ("registeredAt < yesterday", 15, "a date"),
    ("registeredAt < 2018-13-01", 15, "a date"),
    (
        "registeredAt in [2018-01-01]",
        13,
        "an operator that registeredAt takes",
    ),
    ("runningTasksCount > many", 20, "a whole number"),
    ("agentVersion < new", 15, "a version"),
    (
        "ec2InstanceId > i-1",
        14,
        "an operator that ec2InstanceId takes",
    ),
    ("attribute:x =~ (t2", 15, "a regular expression"),
    ("attribute:x == 'open", 15, "a closing '"),
    ("task:group < a", 11, "an operator that task:group takes"),
];

#[test]
fn syntax_errors_say_where_and_what() {
    for (text, position, expected) in ERRORS {
        let error = Expression::parse(text).expect_err(text);
        assert_eq!(error.position, *position, "{text}: {error}");
        assert!(error.expected.contains(expected), "{text}: {error}");
    }
}

#[test]
fn bounds_are_enforced() {
    let long = format!("attribute:x == {}", "a".repeat(3000));
    assert!(Expression::parse(&long).is_err());
    let deep = format!("{}attribute:x == a{}", "(".repeat(100), ")".repeat(100));
    let error = Expression::parse(&deep).expect_err("deep");
    assert!(error.expected.contains("nesting"), "{error}");
    let nots = format!("{}attribute:x == a", "not ".repeat(100));
    assert!(Expression::parse(&nots).is_err());
}

#[test]
fn parsing_never_panics() {
    let mut rng = flotilla_scheduler::rng::Rng::new(3);
    let pieces = [
        "attribute:",
        "x",
        " ",
        "==",
        "!",
        "=~",
        "in",
        "[",
        "]",
        ",",
        "(",
        ")",
        "'",
        "\"",
        "and",
        "or",
        "not",
        "task:group",
        "registeredAt",
        "2018-01-01",
        "é",
        "\\",
        "*",
        "exists",
        "<",
    ];
    for _ in 0..20_000 {
        let text: String = (0..rng.below(12))
            .map(|_| pieces[rng.below(pieces.len() as u64) as usize])
            .collect();
        let _ = Expression::parse(&text);
    }
}
