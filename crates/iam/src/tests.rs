//! IAM's operations on an in-memory store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flotilla_aws::iam::IamRequest;
use flotilla_store::MemoryStore;
use serde_json::{json, Value};

use super::*;

fn iam() -> Iam {
    Iam::new(Arc::new(MemoryStore::new()), "123456789012")
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn fresh() -> String {
    format!("id-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

async fn call(iam: &Iam, operation: &str, input: Value) -> Result<Value, ApiError> {
    let request = IamRequest::from_value(operation, input)
        .expect("known operation")
        .expect("decodes");
    let context = Context {
        now_ms: 1_700_000_000_000,
        fresh_id: &fresh,
    };
    Ok(iam
        .handle(&context, request)
        .await?
        .expect("implemented operation"))
}

const ALLOW_DESCRIBE: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:Describe*","Resource":"*"}]}"#;

#[tokio::test]
async fn users_keys_and_their_lookup() {
    let iam = iam();
    let created = call(&iam, "CreateUser", json!({"UserName": "alice"}))
        .await
        .expect("created");
    assert_eq!(
        created["User"]["Arn"],
        "arn:aws:iam::123456789012:user/alice"
    );
    let again = call(&iam, "CreateUser", json!({"UserName": "ALICE"}))
        .await
        .expect_err("exists");
    assert_eq!(again.code, "EntityAlreadyExistsException");
    let key = call(&iam, "CreateAccessKey", json!({"UserName": "alice"}))
        .await
        .expect("key");
    let access_key_id = key["AccessKey"]["AccessKeyId"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(
        access_key_id.starts_with("AKIA") && access_key_id.len() == 20,
        "{access_key_id}"
    );
    assert_eq!(
        key["AccessKey"]["SecretAccessKey"].as_str().map(str::len),
        Some(40)
    );
    assert!(matches!(
        iam.access_key(&access_key_id, 0),
        Ok(KeyLookup::Found(_))
    ));

    let conflict = call(&iam, "DeleteUser", json!({"UserName": "alice"}))
        .await
        .expect_err("has keys");
    assert_eq!(conflict.code, "DeleteConflictException");

    call(
        &iam,
        "UpdateAccessKey",
        json!({"UserName": "alice", "AccessKeyId": access_key_id, "Status": "Inactive"}),
    )
    .await
    .expect("inactive");
    assert!(matches!(
        iam.access_key(&access_key_id, 0),
        Ok(KeyLookup::Unknown)
    ));
    call(
        &iam,
        "DeleteAccessKey",
        json!({"UserName": "alice", "AccessKeyId": access_key_id}),
    )
    .await
    .expect("deleted");
    assert!(matches!(
        iam.access_key(&access_key_id, 0),
        Ok(KeyLookup::Unknown)
    ));
    call(&iam, "DeleteUser", json!({"UserName": "alice"}))
        .await
        .expect("deleted");
    let gone = call(&iam, "GetUser", json!({"UserName": "alice"}))
        .await
        .expect_err("gone");
    assert_eq!(gone.code, "NoSuchEntityException");
    assert_eq!(gone.message, "The user with name alice cannot be found.");
}

#[tokio::test]
async fn paging_with_marker_and_max_items() {
    let iam = iam();
    for index in 0..5 {
        call(
            &iam,
            "CreateUser",
            json!({"UserName": format!("user{index}")}),
        )
        .await
        .expect("created");
    }
    let first = call(&iam, "ListUsers", json!({"MaxItems": 2}))
        .await
        .expect("listed");
    assert_eq!(first["IsTruncated"], true);
    assert_eq!(first["Users"].as_array().map(Vec::len), Some(2));
    let marker = first["Marker"].as_str().expect("marker").to_owned();
    let rest = call(&iam, "ListUsers", json!({"Marker": marker, "MaxItems": 10}))
        .await
        .expect("listed");
    assert_eq!(rest["IsTruncated"], false);
    let names: Vec<&str> = rest["Users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["UserName"].as_str())
        .collect();
    assert_eq!(names, ["user2", "user3", "user4"]);
    let refused = call(&iam, "ListUsers", json!({"MaxItems": 0}))
        .await
        .expect_err("bad max");
    assert_eq!(refused.code, "ValidationError");
}

#[tokio::test]
async fn policies_are_validated_versioned_and_attached() {
    let iam = iam();
    let malformed = call(&iam, "CreatePolicy", json!({"PolicyName": "p", "PolicyDocument": r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*"}]}"#}))
        .await
        .expect_err("no resource");
    assert_eq!(malformed.code, "MalformedPolicyDocumentException");
    assert_eq!(
        malformed.message,
        "Policy statement must contain resources."
    );
    let created = call(
        &iam,
        "CreatePolicy",
        json!({"PolicyName": "describe", "PolicyDocument": ALLOW_DESCRIBE}),
    )
    .await
    .expect("created");
    let arn = created["Policy"]["Arn"].as_str().expect("arn").to_owned();
    assert_eq!(arn, "arn:aws:iam::123456789012:policy/describe");
    call(&iam, "CreateUser", json!({"UserName": "bob"}))
        .await
        .expect("user");
    call(
        &iam,
        "AttachUserPolicy",
        json!({"UserName": "bob", "PolicyArn": arn}),
    )
    .await
    .expect("attached");
    call(
        &iam,
        "AttachUserPolicy",
        json!({"UserName": "bob", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}),
    )
    .await
    .expect("attached");
    let policy = call(&iam, "GetPolicy", json!({"PolicyArn": arn}))
        .await
        .expect("got");
    assert_eq!(policy["Policy"]["AttachmentCount"], 1);
    let conflict = call(&iam, "DeletePolicy", json!({"PolicyArn": arn}))
        .await
        .expect_err("attached");
    assert_eq!(conflict.code, "DeleteConflictException");
    let version = call(
        &iam,
        "CreatePolicyVersion",
        json!({"PolicyArn": arn, "PolicyDocument": ALLOW_DESCRIBE, "SetAsDefault": true}),
    )
    .await
    .expect("version");
    assert_eq!(version["PolicyVersion"]["VersionId"], "v2");
    let attached = call(&iam, "ListAttachedUserPolicies", json!({"UserName": "bob"}))
        .await
        .expect("listed");
    assert_eq!(
        attached["AttachedPolicies"][1]["PolicyName"],
        "ReadOnlyAccess"
    );
    let aws = call(&iam, "GetPolicy", json!({"PolicyArn": "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"}))
        .await
        .expect("aws managed");
    assert_eq!(aws["Policy"]["Path"], "/service-role/");

    let identity = iam
        .identity(
            &records::SessionSubject::User {
                user_name: "bob".to_owned(),
            },
            "AKIA",
        )
        .expect("identity");
    assert_eq!(
        identity.policies.as_ref().map(|p| p.identity.len()),
        Some(2)
    );
    call(
        &iam,
        "DetachUserPolicy",
        json!({"UserName": "bob", "PolicyArn": arn}),
    )
    .await
    .expect("detached");
    let identity = iam
        .identity(
            &records::SessionSubject::User {
                user_name: "bob".to_owned(),
            },
            "AKIA",
        )
        .expect("identity");
    assert_eq!(
        identity.policies.as_ref().map(|p| p.identity.len()),
        Some(1),
        "cache dropped on change"
    );
}

#[tokio::test]
async fn roles_trust_policies_and_assume_role() {
    let iam = iam();
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/carol"},"Action":"sts:AssumeRole"}]}"#;
    let unknown = call(
        &iam,
        "CreateRole",
        json!({"RoleName": "deployer", "AssumeRolePolicyDocument": trust}),
    )
    .await
    .expect_err("carol unknown");
    assert_eq!(unknown.code, "MalformedPolicyDocumentException");
    assert!(
        unknown.message.contains("Invalid principal in policy"),
        "{}",
        unknown.message
    );
    call(&iam, "CreateUser", json!({"UserName": "carol"}))
        .await
        .expect("user");
    let role = call(&iam, "CreateRole", json!({"RoleName": "deployer", "AssumeRolePolicyDocument": trust, "MaxSessionDuration": 7200}))
        .await
        .expect("role");
    assert_eq!(role["Role"]["MaxSessionDuration"], 7200);
    let carol = iam
        .identity(
            &records::SessionSubject::User {
                user_name: "carol".to_owned(),
            },
            "AKIA",
        )
        .expect("identity");
    let facts = RequestFacts {
        now_ms: 1_700_000_000_000,
        region: "us-east-1",
        source_ip: None,
        temporary: false,
    };
    let context = Context {
        now_ms: 1_700_000_000_000,
        fresh_id: &fresh,
    };
    let request = |duration: i32| flotilla_aws::sts::AssumeRoleRequest {
        role_arn: Some("arn:aws:iam::123456789012:role/deployer".to_owned()),
        role_session_name: Some("build-7".to_owned()),
        duration_seconds: Some(duration),
        ..Default::default()
    };
    let too_long = iam
        .assume_role(&context, &carol, &facts, request(10_800))
        .await
        .expect_err("over max");
    assert_eq!(too_long.code, "ValidationError");
    let assumed = iam
        .assume_role(&context, &carol, &facts, request(900))
        .await
        .expect("assumed");
    assert_eq!(
        assumed
            .assumed_role_user
            .and_then(|user| user.arn)
            .as_deref(),
        Some("arn:aws:sts::123456789012:assumed-role/deployer/build-7")
    );
    let credentials = assumed.credentials.expect("credentials");
    let access_key_id = credentials.access_key_id.expect("id");
    assert!(access_key_id.starts_with("ASIA"));
    assert!(matches!(
        iam.access_key(&access_key_id, 1_700_000_000_000),
        Ok(KeyLookup::Found(_))
    ));
    assert!(matches!(
        iam.access_key(&access_key_id, 1_700_000_900_000),
        Ok(KeyLookup::Expired)
    ));
    assert_eq!(
        iam.collect_expired_sessions(1_700_000_900_000)
            .await
            .expect("collected"),
        1
    );

    let root = Identity::root("123456789012");
    let refused = iam
        .assume_role(&context, &root, &facts, request(900))
        .await
        .expect_err("root");
    assert_eq!(
        refused.message,
        "Roles may not be assumed by root accounts."
    );
    call(&iam, "UpdateAssumeRolePolicy", json!({"RoleName": "deployer", "PolicyDocument": r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#}))
        .await
        .expect("updated");
    let denied = iam
        .assume_role(&context, &carol, &facts, request(900))
        .await
        .expect_err("not trusted");
    assert_eq!(denied.code, "AccessDenied");
    assert!(denied.message.starts_with("User: arn:aws:iam::123456789012:user/carol is not authorized to perform: sts:AssumeRole"), "{}", denied.message);
}

#[tokio::test]
async fn a_service_assumes_a_role_only_when_the_trust_policy_names_it() {
    let iam = iam();
    let trusts_tasks = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let trusts_ec2 = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    call(
        &iam,
        "CreateRole",
        json!({"RoleName": "app", "AssumeRolePolicyDocument": trusts_tasks}),
    )
    .await
    .expect("created");
    call(
        &iam,
        "CreateRole",
        json!({"RoleName": "vm", "AssumeRolePolicyDocument": trusts_ec2}),
    )
    .await
    .expect("created");
    let context = Context {
        now_ms: 1_700_000_000_000,
        fresh_id: &fresh,
    };
    let session = iam
        .assume_role_for_service(
            &context,
            "ecs-tasks.amazonaws.com",
            "arn:aws:iam::123456789012:role/app",
            "0123abcd",
            30,
        )
        .await
        .expect("trusted");
    assert!(session.access_key_id.starts_with("ASIA"));
    assert_eq!(session.expires_ms, 1_700_000_030_000);
    assert!(!format!("{session:?}").contains(&session.secret_access_key));
    // The session signs as the role.
    assert!(matches!(
        iam.access_key(&session.access_key_id, 1_700_000_001_000)
            .expect("read"),
        KeyLookup::Found(_)
    ));
    for role in ["vm", "missing"] {
        let refused = iam
            .assume_role_for_service(
                &context,
                "ecs-tasks.amazonaws.com",
                &format!("arn:aws:iam::123456789012:role/{role}"),
                "0123abcd",
                30,
            )
            .await
            .expect_err("not trusted");
        assert_eq!(refused.code, "AccessDenied");
        assert_eq!(refused.message, format!("ecs-tasks.amazonaws.com is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role/{role}"));
    }
}
