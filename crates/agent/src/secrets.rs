//! A container's `secrets` and `logConfiguration.secretOptions`, resolved
//! just before the container is created, as the ECS agent resolves them:
//! from Secrets Manager (`valueFrom` a secret's ARN, with ECS's
//! `:json-key:version-stage:version-id` suffix) or Parameter Store (a
//! parameter's name or ARN), through the control plane's own API signed
//! with the agent's credentials.
//!
//! *Architecture invariant:* a resolved value lives only in memory, as a
//! [`SecretText`] until it is written into the container's environment; it
//! is never in the agent's task records, its state files, its reports to
//! the control plane, or a log line. A failure names the secret's
//! `valueFrom` and the service's error, never a value.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use flotilla_types::ecs::{ContainerDefinition, Secret};
use serde::{Deserialize, Serialize};

use crate::api::{ApiCallError, ApiClient};

/// ECS's stop reason for a task whose secrets could not be read.
pub const STOP_REASON_PREFIX: &str =
    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed";
/// GetParameters takes at most this many names.
const PARAMETERS_PER_CALL_MAX: usize = 10;
/// Tries of a call that failed in a way that may pass (the control plane
/// away or overloaded), and the pause between them.
const ATTEMPTS_MAX: usize = 3;
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// A resolved secret value: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for the container's environment or log options.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SecretText([REDACTED])")
    }
}

/// One container's resolved secrets.
#[derive(Clone, Debug, Default)]
pub struct ResolvedSecrets {
    /// `secrets`, as environment variables `name` = value.
    pub environment: Vec<(String, SecretText)>,
    /// `logConfiguration.secretOptions`, as log driver options.
    pub log_options: Vec<(String, SecretText)>,
}

/// Where secret values come from.
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// The values of `references`, in their order, or why not (the
    /// reason after ECS's prefix).
    fn resolve<'a>(
        &'a self,
        references: &'a [SecretReference],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<SecretText>, String>> + Send + 'a>>;

    /// The same source reading as a task's execution role, when it can.
    fn with_role(
        &self,
        credentials: &flotilla_types::acs::RoleCredentials,
    ) -> Option<std::sync::Arc<dyn SecretSource>> {
        let _ = credentials;
        None
    }
}

/// A `valueFrom` parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretReference {
    SecretsManager {
        /// The secret's ARN, without ECS's suffix.
        secret_id: String,
        json_key: Option<String>,
        version_stage: Option<String>,
        version_id: Option<String>,
        /// As the task definition wrote it, for messages.
        value_from: String,
    },
    Parameter {
        /// A name or an ARN, as written.
        name: String,
    },
}

impl SecretReference {
    /// ECS's reading of `valueFrom`: a Secrets Manager ARN (six parts, then
    /// optionally json-key, version-stage and version-id, each possibly
    /// empty) or anything else as a Parameter Store name or ARN.
    pub fn parse(value_from: &str) -> Self {
        let parts: Vec<&str> = value_from.split(':').collect();
        if parts.len() >= 7 && parts[0] == "arn" && parts[2] == "secretsmanager" {
            let optional = |index: usize| {
                parts
                    .get(index)
                    .filter(|part| !part.is_empty())
                    .map(|part| (*part).to_owned())
            };
            return SecretReference::SecretsManager {
                secret_id: parts[..7].join(":"),
                json_key: optional(7),
                version_stage: optional(8),
                version_id: optional(9),
                value_from: value_from.to_owned(),
            };
        }
        SecretReference::Parameter {
            name: value_from.to_owned(),
        }
    }
}

/// Resolves `definition`'s secrets and secret log options with `source`.
/// A container without any needs no source; one with some and no source
/// stops the task.
pub async fn resolve_container(
    source: Option<&dyn SecretSource>,
    definition: &ContainerDefinition,
) -> Result<ResolvedSecrets, String> {
    let environment = definition.secrets.clone().unwrap_or_default();
    let log_options = definition
        .log_configuration
        .as_ref()
        .and_then(|log| log.secret_options.clone())
        .unwrap_or_default();
    if environment.is_empty() && log_options.is_empty() {
        return Ok(ResolvedSecrets::default());
    }
    let Some(source) = source else {
        return Err(format!(
            "{STOP_REASON_PREFIX}: this agent has no way to read secrets"
        ));
    };
    let all: Vec<&Secret> = environment.iter().chain(log_options.iter()).collect();
    let references: Vec<SecretReference> = all
        .iter()
        .map(|secret| SecretReference::parse(secret.value_from.as_deref().unwrap_or_default()))
        .collect();
    let values = source
        .resolve(&references)
        .await
        .map_err(|reason| format!("{STOP_REASON_PREFIX}: {reason}"))?;
    let mut named = all
        .iter()
        .map(|secret| secret.name.clone().unwrap_or_default())
        .zip(values);
    Ok(ResolvedSecrets {
        environment: named.by_ref().take(environment.len()).collect(),
        log_options: named.collect(),
    })
}

/// Secrets from the control plane: GetSecretValue and GetParameters
/// (WithDecryption), signed with the agent's credentials.
#[derive(Debug)]
pub struct ControlPlaneSecrets {
    api: ApiClient,
}

impl ControlPlaneSecrets {
    pub fn new(api: ApiClient) -> Self {
        Self { api }
    }

    async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, ApiCallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiCallError>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(error) if error.is_retryable() && attempt < ATTEMPTS_MAX => {
                    attempt += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    async fn secret_value(
        &self,
        secret_id: &str,
        json_key: Option<&str>,
        version_stage: Option<&str>,
        version_id: Option<&str>,
    ) -> Result<SecretText, String> {
        let request = GetSecretValueRequest {
            secret_id,
            version_stage,
            version_id,
        };
        let answer: GetSecretValueResponse = Self::with_retries(|| {
            self.api
                .call_signed("secretsmanager", "secretsmanager", "GetSecretValue", &request)
        })
        .await
        .map_err(|error| {
            format!(
                "unable to retrieve secret from asm: failed to fetch secret {secret_id} from secrets manager: {}",
                service_reason(&error)
            )
        })?;
        let Some(text) = answer.secret_string else {
            return Err(format!(
                "unable to retrieve secret from asm: secret {secret_id} has no SecretString (only string secrets can be injected)"
            ));
        };
        let Some(key) = json_key else {
            return Ok(SecretText::new(text));
        };
        let object: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text)
            .map_err(|_| {
                format!(
                    "unable to retrieve secret from asm: secret {secret_id} is not a JSON object, so json key {key} cannot be read from it"
                )
            })?;
        match object.get(key) {
            Some(serde_json::Value::String(value)) => Ok(SecretText::new(value.clone())),
            Some(other) => Ok(SecretText::new(other.to_string())),
            None => Err(format!(
                "unable to retrieve secret from asm: retrieved secret from Secrets Manager did not contain json key {key}"
            )),
        }
    }

    async fn parameters(&self, names: &[&str]) -> Result<Vec<SecretText>, String> {
        let mut values = Vec::with_capacity(names.len());
        for batch in names.chunks(PARAMETERS_PER_CALL_MAX) {
            let request = GetParametersRequest {
                names: batch,
                with_decryption: true,
            };
            let answer: GetParametersResponse = Self::with_retries(|| {
                self.api
                    .call_signed("AmazonSSM", "ssm", "GetParameters", &request)
            })
            .await
            .map_err(|error| {
                format!(
                    "unable to retrieve secrets from ssm: {}",
                    service_reason(&error)
                )
            })?;
            if !answer.invalid_parameters.is_empty() {
                return Err(format!(
                    "unable to retrieve secrets from ssm: invalid parameters: {}",
                    answer.invalid_parameters.join(", ")
                ));
            }
            for name in batch {
                let found = answer
                    .parameters
                    .iter()
                    .find(|p| p.name.as_deref() == Some(*name) || p.arn.as_deref() == Some(*name))
                    .and_then(|p| p.value.clone());
                match found {
                    Some(value) => values.push(SecretText::new(value)),
                    None => {
                        return Err(format!(
                            "unable to retrieve secrets from ssm: invalid parameters: {name}"
                        ))
                    }
                }
            }
        }
        Ok(values)
    }
}

impl SecretSource for ControlPlaneSecrets {
    fn with_role(
        &self,
        credentials: &flotilla_types::acs::RoleCredentials,
    ) -> Option<std::sync::Arc<dyn SecretSource>> {
        Some(std::sync::Arc::new(Self::new(
            self.api.with_role_credentials(credentials),
        )))
    }

    fn resolve<'a>(
        &'a self,
        references: &'a [SecretReference],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<SecretText>, String>> + Send + 'a>> {
        Box::pin(async move {
            let parameter_names: Vec<&str> = references
                .iter()
                .filter_map(|reference| match reference {
                    SecretReference::Parameter { name } => Some(name.as_str()),
                    SecretReference::SecretsManager { .. } => None,
                })
                .collect();
            let mut parameters = self.parameters(&parameter_names).await?.into_iter();
            let mut values = Vec::with_capacity(references.len());
            for reference in references {
                match reference {
                    SecretReference::Parameter { name } => match parameters.next() {
                        Some(value) => values.push(value),
                        None => {
                            return Err(format!(
                                "unable to retrieve secrets from ssm: invalid parameters: {name}"
                            ))
                        }
                    },
                    SecretReference::SecretsManager {
                        secret_id,
                        json_key,
                        version_stage,
                        version_id,
                        value_from: _,
                    } => values.push(
                        self.secret_value(
                            secret_id,
                            json_key.as_deref(),
                            version_stage.as_deref(),
                            version_id.as_deref(),
                        )
                        .await?,
                    ),
                }
            }
            Ok(values)
        })
    }
}

/// An API failure as the stop reason words it: the service's code and
/// message, which never carry a value.
fn service_reason(error: &ApiCallError) -> String {
    match error {
        ApiCallError::Service { code, message, .. } => format!("{code}: {message}"),
        other => other.to_string(),
    }
}

#[derive(Serialize)]
struct GetSecretValueRequest<'a> {
    #[serde(rename = "SecretId")]
    secret_id: &'a str,
    #[serde(rename = "VersionStage", skip_serializing_if = "Option::is_none")]
    version_stage: Option<&'a str>,
    #[serde(rename = "VersionId", skip_serializing_if = "Option::is_none")]
    version_id: Option<&'a str>,
}

#[derive(Deserialize)]
struct GetSecretValueResponse {
    #[serde(rename = "SecretString", default)]
    secret_string: Option<String>,
}

#[derive(Serialize)]
struct GetParametersRequest<'a> {
    #[serde(rename = "Names")]
    names: &'a [&'a str],
    #[serde(rename = "WithDecryption")]
    with_decryption: bool,
}

#[derive(Deserialize)]
struct GetParametersResponse {
    #[serde(rename = "Parameters", default)]
    parameters: Vec<ParameterValue>,
    #[serde(rename = "InvalidParameters", default)]
    invalid_parameters: Vec<String>,
}

#[derive(Deserialize)]
struct ParameterValue {
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "ARN", default)]
    arn: Option<String>,
    #[serde(rename = "Value", default)]
    value: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_from_is_read_as_ecs_reads_it() {
        let arn = "arn:aws:secretsmanager:us-east-1:000000000000:secret:db-AbCdEf";
        assert_eq!(
            SecretReference::parse(arn),
            SecretReference::SecretsManager {
                secret_id: arn.to_owned(),
                json_key: None,
                version_stage: None,
                version_id: None,
                value_from: arn.to_owned(),
            }
        );
        let suffixed = format!("{arn}:password:AWSPREVIOUS:");
        assert_eq!(
            SecretReference::parse(&suffixed),
            SecretReference::SecretsManager {
                secret_id: arn.to_owned(),
                json_key: Some("password".to_owned()),
                version_stage: Some("AWSPREVIOUS".to_owned()),
                version_id: None,
                value_from: suffixed.clone(),
            }
        );
        assert_eq!(
            SecretReference::parse("/app/db/password"),
            SecretReference::Parameter {
                name: "/app/db/password".to_owned()
            }
        );
        let parameter_arn = "arn:aws:ssm:us-east-1:000000000000:parameter/app/x";
        assert_eq!(
            SecretReference::parse(parameter_arn),
            SecretReference::Parameter {
                name: parameter_arn.to_owned()
            }
        );
    }

    /// Answers each reference with its own `valueFrom`, or fails on one
    /// naming `missing`.
    #[derive(Debug)]
    struct Echo;

    impl SecretSource for Echo {
        fn resolve<'a>(
            &'a self,
            references: &'a [SecretReference],
        ) -> Pin<Box<dyn Future<Output = Result<Vec<SecretText>, String>> + Send + 'a>> {
            Box::pin(async move {
                references
                    .iter()
                    .map(|reference| match reference {
                        SecretReference::Parameter { name } if name.contains("missing") => {
                            Err(format!("invalid parameters: {name}"))
                        }
                        SecretReference::Parameter { name } => Ok(SecretText::new(name.clone())),
                        SecretReference::SecretsManager { value_from, .. } => {
                            Ok(SecretText::new(value_from.clone()))
                        }
                    })
                    .collect()
            })
        }
    }

    fn definition(json: serde_json::Value) -> ContainerDefinition {
        serde_json::from_value(json).expect("definition")
    }

    #[tokio::test]
    async fn secrets_and_log_options_are_resolved_in_order() {
        let container = definition(serde_json::json!({
            "name": "app",
            "secrets": [{"name": "A", "valueFrom": "/a"},
                        {"name": "B", "valueFrom": "arn:aws:secretsmanager:r:1:secret:b-AbCdEf:k::"}],
            "logConfiguration": {"logDriver": "json-file",
                                 "secretOptions": [{"name": "token", "valueFrom": "/t"}]},
        }));
        let resolved = resolve_container(Some(&Echo), &container)
            .await
            .expect("resolved");
        let shown = |pairs: &[(String, SecretText)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(name, value)| (name.clone(), value.expose().to_owned()))
                .collect()
        };
        assert_eq!(
            shown(&resolved.environment),
            [
                ("A".to_owned(), "/a".to_owned()),
                (
                    "B".to_owned(),
                    "arn:aws:secretsmanager:r:1:secret:b-AbCdEf:k::".to_owned()
                )
            ]
        );
        assert_eq!(
            shown(&resolved.log_options),
            [("token".to_owned(), "/t".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_failure_or_no_source_stops_with_ecs_reason() {
        let container = definition(serde_json::json!({
            "name": "app", "secrets": [{"name": "A", "valueFrom": "/missing"}]}));
        let reason = resolve_container(Some(&Echo), &container)
            .await
            .expect_err("missing");
        assert_eq!(
            reason,
            "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: invalid parameters: /missing"
        );
        assert!(resolve_container(None, &container)
            .await
            .expect_err("no source")
            .starts_with(STOP_REASON_PREFIX));
        let plain = definition(serde_json::json!({"name": "app"}));
        assert!(resolve_container(None, &plain).await.is_ok());
    }

    #[test]
    fn a_secret_text_is_never_printed() {
        let text = SecretText::new("hunter2".to_owned());
        assert!(!format!("{text:?}").contains("hunter2"));
        let resolved = ResolvedSecrets {
            environment: vec![("A".to_owned(), text)],
            log_options: vec![],
        };
        assert!(!format!("{resolved:?}").contains("hunter2"));
    }
}
