//! Both services in process over an in-memory store: the operations'
//! answers and refusals, and that the store never holds a value in the clear.

use std::sync::Arc;

use flotilla_aws::secretsmanager::{SecretsmanagerRequest, SecretsmanagerResponse};
use flotilla_aws::ssm::{SsmRequest, SsmResponse};
use flotilla_secrets::{Scope, Sealer, Services};
use flotilla_store::{MemoryStore, Store};

const NOW_MS: u64 = 1_700_000_000_000;
const ID: &str = "0f1e2d3c-4b5a-4697-8877-665544332211";

fn services() -> (Arc<MemoryStore>, Services) {
    let store = Arc::new(MemoryStore::new());
    let services = Services::new(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::new(Sealer::new(&[9u8; 32])),
        Scope::new("us-east-1", "000000000000"),
    );
    (store, services)
}

async fn secrets(services: &Services, operation: &str, body: &str) -> Result<String, String> {
    let request = SecretsmanagerRequest::decode(operation, body.as_bytes())
        .expect("operation")
        .expect("decodes");
    services
        .manager
        .handle(request, NOW_MS, ID)
        .await
        .map(|answer: SecretsmanagerResponse| serde_json::to_string(&answer).expect("json"))
        .map_err(|error| format!("{}: {}", error.code, error.message))
}

async fn parameters(services: &Services, operation: &str, body: &str) -> Result<String, String> {
    let request = SsmRequest::decode(operation, body.as_bytes())
        .expect("operation")
        .expect("decodes");
    services
        .parameters
        .handle(request, NOW_MS, "arn:aws:iam::000000000000:root")
        .await
        .map(|answer: SsmResponse| serde_json::to_string(&answer).expect("json"))
        .map_err(|error| format!("{}: {}", error.code, error.message))
}

fn store_holds(store: &MemoryStore, needle: &str) -> bool {
    let page = store.list("", None, 10_000).expect("list");
    page.entries
        .iter()
        .any(|entry| String::from_utf8_lossy(&entry.value).contains(needle))
}

#[tokio::test]
async fn secrets_manager_answers_and_refuses_as_aws_does() {
    let (store, services) = services();
    let created = secrets(&services, "CreateSecret", r#"{"Name":"db","SecretString":"first-value","ClientRequestToken":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#).await.expect("create");
    assert!(
        created
            .contains(r#""ARN":"arn:aws:secretsmanager:us-east-1:000000000000:secret:db-0f1e2d""#),
        "{created}"
    );
    secrets(&services, "PutSecretValue", r#"{"SecretId":"db","SecretString":"second-value","ClientRequestToken":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}"#).await.expect("put");
    let previous = secrets(
        &services,
        "GetSecretValue",
        r#"{"SecretId":"db","VersionStage":"AWSPREVIOUS"}"#,
    )
    .await
    .expect("get");
    assert!(previous.contains("first-value"), "{previous}");
    let current = secrets(
        &services,
        "GetSecretValue",
        r#"{"SecretId":"arn:aws:secretsmanager:us-east-1:000000000000:secret:db-0f1e2d"}"#,
    )
    .await
    .expect("get");
    assert!(current.contains("second-value"), "{current}");
    assert!(!store_holds(&store, "first-value") && !store_holds(&store, "second-value"));

    let cases = [
        ("CreateSecret", r#"{"Name":"db","SecretString":"x"}"#, "ResourceExistsException: The operation failed because the secret db already exists."),
        ("GetSecretValue", r#"{"SecretId":"nope"}"#, "ResourceNotFoundException: Secrets Manager can't find the specified secret."),
        ("GetSecretValue", r#"{"SecretId":"db","VersionStage":"blue"}"#, "ResourceNotFoundException: Secrets Manager can't find the specified secret value for staging label: blue"),
        ("GetSecretValue", r#"{}"#, "ValidationException: 1 validation error detected: Value null at 'secretId' failed to satisfy constraint: Member must not be null"),
        ("DeleteSecret", r#"{"SecretId":"db","RecoveryWindowInDays":31}"#, "InvalidParameterException: The RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."),
        ("PutSecretValue", r#"{"SecretId":"db"}"#, "InvalidRequestException: You must provide either SecretString or SecretBinary."),
        ("UpdateSecretVersionStage", r#"{"SecretId":"db","VersionStage":"AWSCURRENT","RemoveFromVersionId":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}"#, "InvalidParameterException: You can only move staging label AWSCURRENT to a different secret version. It can't be completely removed."),
    ];
    for (operation, body, expected) in cases {
        assert_eq!(
            secrets(&services, operation, body).await.err().as_deref(),
            Some(expected),
            "{operation} {body}"
        );
    }
    let big = format!(
        r#"{{"Name":"big","SecretString":"{}"}}"#,
        "v".repeat(65_537)
    );
    let refused = secrets(&services, "CreateSecret", &big)
        .await
        .expect_err("too big");
    assert_eq!(refused, "ValidationException: 1 validation error detected: Value at 'secretString' failed to satisfy constraint: Member must have length less than or equal to 65536");

    secrets(&services, "DeleteSecret", r#"{"SecretId":"db"}"#)
        .await
        .expect("delete");
    assert_eq!(
        secrets(&services, "GetSecretValue", r#"{"SecretId":"db"}"#).await.err().as_deref(),
        Some("InvalidRequestException: You can't perform this operation on the secret because it was marked for deletion.")
    );
    secrets(&services, "RestoreSecret", r#"{"SecretId":"db"}"#)
        .await
        .expect("restore");
    assert!(secrets(&services, "GetSecretValue", r#"{"SecretId":"db"}"#)
        .await
        .expect("get")
        .contains("second-value"));

    // Past its recovery window a deleted secret is gone, and maintenance
    // removes its records.
    secrets(
        &services,
        "DeleteSecret",
        r#"{"SecretId":"db","RecoveryWindowInDays":7}"#,
    )
    .await
    .expect("delete");
    assert_eq!(
        services.manager.purge_expired(NOW_MS).await.expect("purge"),
        0
    );
    let later_ms = NOW_MS + 7 * 86_400_000;
    assert_eq!(
        services
            .manager
            .purge_expired(later_ms)
            .await
            .expect("purge"),
        1
    );
    assert!(store
        .list("secretsmanager/", None, 100)
        .expect("list")
        .entries
        .is_empty());
}

#[tokio::test]
async fn parameter_store_answers_and_refuses_as_aws_does() {
    let (store, services) = services();
    let put = parameters(
        &services,
        "PutParameter",
        r#"{"Name":"/app/pw","Type":"SecureString","Value":"sealed-value"}"#,
    )
    .await
    .expect("put");
    assert_eq!(put, r#"{"Tier":"Standard","Version":1}"#);
    assert!(!store_holds(&store, "sealed-value"));
    let hidden = parameters(&services, "GetParameter", r#"{"Name":"/app/pw"}"#)
        .await
        .expect("get");
    assert!(!hidden.contains("sealed-value"), "{hidden}");
    let shown = parameters(
        &services,
        "GetParameter",
        r#"{"Name":"arn:aws:ssm:us-east-1:000000000000:parameter/app/pw","WithDecryption":true}"#,
    )
    .await
    .expect("get");
    assert!(shown.contains(r#""Value":"sealed-value""#), "{shown}");
    parameters(
        &services,
        "PutParameter",
        r#"{"Name":"/app/pw","Value":"second","Overwrite":true}"#,
    )
    .await
    .expect("overwrite");
    let first = parameters(
        &services,
        "GetParameter",
        r#"{"Name":"/app/pw:1","WithDecryption":true}"#,
    )
    .await
    .expect("get");
    assert!(
        first.contains("sealed-value") && first.contains(r#""Selector":":1""#),
        "{first}"
    );

    let eleven: Vec<String> = (0..11).map(|i| format!("\"/p{i}\"")).collect();
    let cases = [
        ("PutParameter".to_owned(), r#"{"Name":"/app/pw","Type":"String","Value":"x"}"#.to_owned(), "ParameterAlreadyExists: The parameter already exists. To overwrite this value, set the overwrite option in the request to true.".to_owned()),
        ("GetParameter".to_owned(), r#"{"Name":"/nope"}"#.to_owned(), "ParameterNotFound: Parameter /nope not found.".to_owned()),
        ("GetParameters".to_owned(), format!(r#"{{"Names":[{}]}}"#, eleven.join(",")), format!("ValidationException: 1 validation error detected: Value '[{}]' at 'names' failed to satisfy constraint: Member must have length less than or equal to 10", (0..11).map(|i| format!("/p{i}")).collect::<Vec<_>>().join(", "))),
        ("PutParameter".to_owned(), r#"{"Name":"/a/b c","Type":"String","Value":"x"}"#.to_owned(), "ValidationException: Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). If formed as a path, it can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_".to_owned()),
        ("PutParameter".to_owned(), format!(r#"{{"Name":"/big","Type":"SecureString","Value":"{}"}}"#, "v".repeat(4_097)), "ValidationException: Standard tier parameters support a maximum parameter value of 4096 characters. To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier.".to_owned()),
    ];
    for (operation, body, expected) in cases {
        assert_eq!(
            parameters(&services, &operation, &body).await.err(),
            Some(expected),
            "{operation}"
        );
    }
}
