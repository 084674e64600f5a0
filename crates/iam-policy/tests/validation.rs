//! Validation against `fixtures/validation.json`, the guides' policy
//! documents and the AWS managed policies, and the size quotas.

mod support;

use flotilla_iam_policy::document::{
    self, check_inline_policies_size, check_managed_policy_size, check_session_policy_size,
    check_trust_policy_size, policy_size_chars, InlinePolicyOwner, TRUST_POLICY_CHARS_DEFAULT,
};
use flotilla_iam_policy::{managed, PolicyError, PolicyKind};
use serde_json::Value;
use support::{fixture, seed_text};

fn kind(name: &str) -> PolicyKind {
    match name {
        "managed" => PolicyKind::Managed,
        "inline" => PolicyKind::Inline,
        "session" => PolicyKind::Session,
        "trust" => PolicyKind::Trust,
        "resource" => PolicyKind::Resource,
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn validation_fixtures() {
    let cases = fixture("validation.json");
    let mut failures = Vec::new();
    let list = cases["cases"].as_array().expect("cases");
    for case in list {
        let name = case["name"].as_str().unwrap_or_default();
        let text = match &case["document"] {
            Value::String(raw) => raw.clone(),
            document => document.to_string(),
        };
        let got = document::parse(&text, kind(case["kind"].as_str().unwrap_or_default()));
        let expected = case["error"].as_str();
        match (&got, expected) {
            (Ok(_), None) => {}
            (Err(error), Some(message)) if error.to_string() == message => {
                if error.code() != "MalformedPolicyDocument" {
                    failures.push(format!("{name}: code {}", error.code()));
                }
            }
            (Ok(_), Some(message)) => {
                failures.push(format!("{name}: accepted, expected {message}"))
            }
            (Err(error), _) => failures.push(format!("{name}: {error}, expected {expected:?}")),
        }
    }
    assert!(list.len() >= 80, "only {} cases", list.len());
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_guides_documents_are_accepted_as_written() {
    for file in [
        "ecsInstanceRole.json",
        "ecsTaskExecutionRole.json",
        "ecsInstanceRole-managed.json",
        "ecr-push.json",
    ] {
        let text = seed_text(file);
        for kind in [PolicyKind::Managed, PolicyKind::Inline, PolicyKind::Session] {
            if let Err(error) = document::parse(&text, kind) {
                panic!("{file} as {kind:?}: {error}");
            }
        }
        check_managed_policy_size(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn aws_managed_policies_compile_and_keep_their_arns() {
    let arns: Vec<String> = managed::AWS_MANAGED_POLICIES
        .iter()
        .map(|p| p.arn())
        .collect();
    for expected in [
        "arn:aws:iam::aws:policy/AdministratorAccess",
        "arn:aws:iam::aws:policy/ReadOnlyAccess",
        "arn:aws:iam::aws:policy/AmazonECS_FullAccess",
        "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role",
        "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPowerUser",
    ] {
        assert!(arns.iter().any(|arn| arn == expected), "{expected} missing");
        assert!(
            managed::compiled(expected).is_some(),
            "{expected} does not compile"
        );
        assert_eq!(
            managed::by_arn(expected).map(|p| p.arn()),
            Some(expected.to_string())
        );
    }
    for policy in managed::AWS_MANAGED_POLICIES {
        document::parse(policy.document, PolicyKind::AwsManaged)
            .unwrap_or_else(|e| panic!("{}: {e}", policy.name));
        // AWS's own documents are valid customer documents too, sizes aside.
        document::parse(policy.document, PolicyKind::Managed)
            .unwrap_or_else(|e| panic!("{}: {e}", policy.name));
    }
    assert_eq!(
        managed::by_arn("arn:aws:iam::aws:policy/NoSuchPolicy"),
        None
    );
}

fn document_of_chars(chars: usize) -> String {
    // {"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::"}}
    let frame = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::"}}"#;
    let padding = chars - frame.len();
    let text = frame.replace(
        "arn:aws:s3:::",
        &format!("arn:aws:s3:::{}", "b".repeat(padding)),
    );
    assert_eq!(policy_size_chars(&text), chars);
    text
}

#[test]
fn quotas_count_characters_without_whitespace() {
    assert_eq!(policy_size_chars("{ \"a\" :\n\t\"b c\" }"), 10);
    let at_limit = document_of_chars(6_144);
    assert!(check_managed_policy_size(&at_limit).is_ok());
    let spaced = at_limit.replace(',', ",\n      ");
    assert!(
        check_managed_policy_size(&spaced).is_ok(),
        "whitespace is not counted"
    );
    let over = document_of_chars(6_145);
    let error = check_managed_policy_size(&over).expect_err("over the quota");
    assert_eq!(
        error.to_string(),
        "Cannot exceed quota for PolicySize: 6144"
    );
    assert_eq!(error.code(), "LimitExceeded");
    assert!(
        document::parse(&over, PolicyKind::Managed).is_ok(),
        "size is a separate check"
    );

    let trust = document_of_chars(2_049);
    let error = check_trust_policy_size(&trust, TRUST_POLICY_CHARS_DEFAULT).expect_err("over");
    assert_eq!(
        error.to_string(),
        "Cannot exceed quota for ACLSizePerRole: 2048"
    );
    assert!(
        check_trust_policy_size(&trust, 4_096).is_ok(),
        "a raised quota"
    );

    for (owner, limit, word) in [
        (InlinePolicyOwner::User, 2_048, "user"),
        (InlinePolicyOwner::Role, 10_240, "role"),
        (InlinePolicyOwner::Group, 5_120, "group"),
    ] {
        assert!(check_inline_policies_size(owner, "dev", limit).is_ok());
        let error = check_inline_policies_size(owner, "dev", limit + 1).expect_err("over");
        assert_eq!(
            error.to_string(),
            format!("Maximum policy size of {limit} bytes exceeded for {word} dev")
        );
        assert_eq!(error.code(), "LimitExceeded");
    }

    let session = "x".repeat(2_049);
    let error = check_session_policy_size(&session).expect_err("over");
    assert_eq!(error.code(), "ValidationError");
    assert!(error
        .to_string()
        .ends_with("Member must have length less than or equal to 2048"));
    assert!(check_session_policy_size(&"x".repeat(2_048)).is_ok());
}

#[test]
fn the_users_and_roles_a_trust_policy_names() {
    let text = r#"{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::123456789012:user/team/alice", "123456789012", "*",
            "arn:aws:iam::123456789012:root", "arn:aws:sts::123456789012:assumed-role/ci/run"], "Service": "ecs-tasks.amazonaws.com"},
         "Action": "sts:AssumeRole"},
        {"Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::123456789012:role/ci"}, "Action": "sts:AssumeRole"}]}"#;
    let document = document::parse(text, PolicyKind::Trust).expect("valid");
    let named: Vec<&str> = document.named_users_and_roles().collect();
    assert_eq!(
        named,
        [
            "arn:aws:iam::123456789012:user/team/alice",
            "arn:aws:iam::123456789012:role/ci"
        ]
    );
}

#[test]
fn unknown_principals_are_worded_as_iam_words_them() {
    let error = PolicyError::unknown_aws_principal("arn:aws:iam::123456789012:role/gone");
    assert_eq!(
        error.to_string(),
        "Invalid principal in policy: \"AWS\":\"arn:aws:iam::123456789012:role/gone\""
    );
    assert_eq!(error.code(), "MalformedPolicyDocument");
}
