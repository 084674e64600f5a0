//! Credentials for images in Flotilla's own registry: the agent asks the
//! control plane for a registry token (ECR's GetAuthorizationToken, signed
//! with the agent's own credentials) and hands it to the pull, so a task
//! whose image lives there runs without its user doing anything.

use base64::Engine as _;
use flotilla_runtime::RegistryAuth;
use flotilla_types::ecr::{GetAuthorizationTokenRequest, GetAuthorizationTokenResponse};
use std::future::Future;
use std::pin::Pin;

use crate::api::ApiClient;

/// A token is fetched again once less than this remains of its life.
pub const TOKEN_REFRESH_MARGIN_MS: u64 = 60 * 60 * 1000;
/// After a failed fetch (say, a control plane without a registry), the
/// next try waits this long, so that pulls from elsewhere are not slowed.
pub const TOKEN_RETRY_AFTER_MS: u64 = 60 * 1000;

/// Registry credentials for an image, when the agent has some.
pub trait RegistryCredentials: Send + Sync + std::fmt::Debug {
    fn auth_for<'a>(
        &'a self,
        image: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<RegistryAuth>> + Send + 'a>>;
}

/// The registry host an image reference names, if it names one: Docker's
/// rule is that a first component with a `.` or `:`, or `localhost`, is a host.
pub fn registry_host(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

#[derive(Debug, Clone)]
enum Cached {
    Token {
        host: String,
        auth: RegistryAuth,
        expires_at_ms: u64,
    },
    Failed {
        at_ms: u64,
    },
}

/// Tokens from the control plane's registry, cached until near expiry.
#[derive(Debug)]
pub struct ControlPlaneRegistry {
    api: ApiClient,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl ControlPlaneRegistry {
    /// Signs with `api`'s credentials and reads time from its clock.
    pub fn new(api: ApiClient) -> Self {
        Self {
            api,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn fetch(&self, now_ms: u64) -> Cached {
        let answer: Result<GetAuthorizationTokenResponse, _> = self
            .api
            .call_signed(
                crate::api::ECR_TARGET_PREFIX,
                "ecr",
                "GetAuthorizationToken",
                &GetAuthorizationTokenRequest::default(),
            )
            .await;
        let parsed = answer
            .map_err(|error| error.to_string())
            .and_then(|answer| {
                let data = answer
                    .authorization_data
                    .and_then(|d| d.into_iter().next())
                    .ok_or("no authorization data")?;
                let token = data.authorization_token.ok_or("no token")?;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(token)
                    .map_err(|_| "token is not base64")?;
                let decoded = String::from_utf8(decoded).map_err(|_| "token is not text")?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or("token is not user:password")?;
                let endpoint = data.proxy_endpoint.ok_or("no proxy endpoint")?;
                let host = endpoint
                    .split_once("://")
                    .map_or(endpoint.as_str(), |(_, rest)| rest)
                    .trim_end_matches('/')
                    .to_owned();
                let expires_at_ms = data.expires_at.map_or(0, |s| (s * 1000.0) as u64);
                Ok::<_, String>(Cached::Token {
                    auth: RegistryAuth {
                        username: username.to_owned(),
                        password: password.to_owned(),
                        server: host.clone(),
                    },
                    host,
                    expires_at_ms,
                })
            });
        parsed.unwrap_or_else(|error| {
            tracing::debug!(%error, "no registry token from the control plane");
            Cached::Failed { at_ms: now_ms }
        })
    }
}

impl RegistryCredentials for ControlPlaneRegistry {
    fn auth_for<'a>(
        &'a self,
        image: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<RegistryAuth>> + Send + 'a>> {
        Box::pin(async move {
            let host = registry_host(image)?;
            let mut cached = self.cached.lock().await;
            let now_ms = self.api.clock().now_ms();
            let fresh = match &*cached {
                Some(Cached::Token { expires_at_ms, .. }) => {
                    now_ms.saturating_add(TOKEN_REFRESH_MARGIN_MS) < *expires_at_ms
                }
                Some(Cached::Failed { at_ms }) => {
                    now_ms.saturating_sub(*at_ms) < TOKEN_RETRY_AFTER_MS
                }
                None => false,
            };
            if !fresh {
                *cached = Some(self.fetch(now_ms).await);
            }
            match &*cached {
                Some(Cached::Token {
                    host: ours, auth, ..
                }) if ours == host => Some(auth.clone()),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_follow_dockers_rule() {
        assert_eq!(
            registry_host("localhost:8440/web:v1"),
            Some("localhost:8440")
        );
        assert_eq!(registry_host("localhost/web"), Some("localhost"));
        assert_eq!(
            registry_host("000000000000.dkr.ecr.us-east-1.amazonaws.com/web"),
            Some("000000000000.dkr.ecr.us-east-1.amazonaws.com")
        );
        assert_eq!(registry_host("library/nginx"), None);
        assert_eq!(registry_host("nginx:latest"), None);
        assert_eq!(registry_host("flotilla-test/busybox:latest"), None);
    }
}
