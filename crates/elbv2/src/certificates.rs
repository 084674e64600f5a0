//! HTTPS listeners' certificates. A listener names its certificate by ARN;
//! the installation resolves the ARN to the PEM chain and key through a
//! [`CertificateSource`] (IAM's server certificates: `aws iam
//! upload-server-certificate`) when the listener is created or modified,
//! and keeps them in the listener's record, so that building the data
//! plane's snapshot stays a pure function of the records.
//!
//! The data plane serves one certificate per listener and offers ALPN h2
//! then http/1.1 (AlpnPolicy `HTTP2Preferred`); what it cannot do is
//! refused by name.

use flotilla_aws::elbv2::{Certificate, MutualAuthenticationAttributes, ProtocolEnum};
use flotilla_lb::config;
use flotilla_types::ApiError;

use crate::records::ListenerRecord;
use crate::{error, validation, Elbv2};

/// Where a listener's certificate ARN is resolved to PEM.
pub trait CertificateSource: Send + Sync {
    /// The chain and private key the ARN names, `None` when it names none.
    fn certificate(&self, arn: &str) -> Result<Option<config::Certificate>, ApiError>;
}

/// ELB's default security policy for HTTPS listeners.
pub const SSL_POLICY_DEFAULT: &str = "ELBSecurityPolicy-2016-08";
/// The ALPN policies whose behaviour the data plane has: it offers h2,
/// then http/1.1, and takes either.
const ALPN_POLICIES_SERVED: [&str; 3] = ["HTTP2Preferred", "HTTP2Optional", "None"];
const ALPN_POLICIES: [&str; 5] = [
    "HTTP1Only",
    "HTTP2Only",
    "HTTP2Optional",
    "HTTP2Preferred",
    "None",
];

/// What a listener's request says of TLS.
pub(crate) struct TlsRequest<'a> {
    pub certificates: Option<&'a [Certificate]>,
    pub ssl_policy: Option<&'a str>,
    pub alpn_policy: Option<&'a [String]>,
    pub mutual_authentication: Option<&'a MutualAuthenticationAttributes>,
}

/// A listener's TLS settings: what DescribeListeners shows, and the PEMs
/// the data plane serves.
#[derive(Default)]
pub(crate) struct TlsSettings {
    pub certificates: Option<Vec<Certificate>>,
    pub ssl_policy: Option<String>,
    pub alpn_policy: Option<Vec<String>>,
    pub served: Vec<config::Certificate>,
}

impl Elbv2 {
    /// The ARNs of the listeners that serve the certificate `arn`.
    pub fn listeners_serving(&self, arn: &str) -> Result<Vec<String>, ApiError> {
        let state = crate::records::State::read(&**self.store())?;
        let mut serving = Vec::new();
        for balancer in state.load_balancers.values() {
            for listener in &balancer.listeners {
                let names = listener.description.certificates.iter().flatten();
                if names
                    .into_iter()
                    .any(|c| c.certificate_arn.as_deref() == Some(arn))
                {
                    serving.extend(listener.description.listener_arn.clone());
                }
            }
        }
        Ok(serving)
    }

    /// The TLS settings of a listener with `protocol`, from the request
    /// and, for what it leaves out, the listener as it is.
    pub(crate) fn tls_settings(
        &self,
        protocol: ProtocolEnum,
        request: &TlsRequest<'_>,
        current: Option<&ListenerRecord>,
    ) -> Result<TlsSettings, ApiError> {
        if let Some(mutual) = request.mutual_authentication {
            let mode = mutual.mode.as_deref().unwrap_or("off");
            if mode != "off" {
                return Err(validation(format!(
                    "MutualAuthentication mode '{mode}' needs trust stores, which Flotilla does not have; use mode 'off'"
                )));
            }
        }
        if protocol != ProtocolEnum::Https {
            if request.certificates.is_some()
                || request.ssl_policy.is_some()
                || request.alpn_policy.is_some()
            {
                return Err(validation(format!(
                    "Certificates, SslPolicy and AlpnPolicy can be set only on HTTPS listeners, not on a {protocol} listener"
                )));
            }
            return Ok(TlsSettings::default());
        }
        let kept = current.filter(|c| c.description.protocol == Some(ProtocolEnum::Https));
        let certificates = match (request.certificates, kept) {
            (Some(given), _) => given.to_vec(),
            (None, Some(current)) => current.description.certificates.clone().unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        let [certificate] = &certificates[..] else {
            return Err(validation(format!(
                "An HTTPS listener takes exactly one default certificate, not {}",
                certificates.len()
            )));
        };
        let arn = certificate.certificate_arn.clone().unwrap_or_default();
        let served = match self.certificates.as_ref() {
            Some(source) => source.certificate(&arn)?,
            None => None,
        };
        let Some(served) = served else {
            return Err(error(
                "CertificateNotFoundException",
                format!(
                    "Certificate '{arn}' not found: HTTPS listeners here serve IAM server certificates (aws iam upload-server-certificate); ACM is not available"
                ),
            ));
        };
        let ssl_policy = request
            .ssl_policy
            .map(str::to_owned)
            .or_else(|| kept.and_then(|c| c.description.ssl_policy.clone()))
            .unwrap_or_else(|| SSL_POLICY_DEFAULT.to_owned());
        if !ssl_policy.starts_with("ELBSecurityPolicy-") {
            return Err(error(
                "SSLPolicyNotFoundException",
                format!("SSL policy '{ssl_policy}' not found"),
            ));
        }
        let alpn_policy = match request.alpn_policy {
            Some(given) => Some(checked_alpn(given)?),
            None => kept.and_then(|c| c.description.alpn_policy.clone()),
        };
        Ok(TlsSettings {
            certificates: Some(vec![Certificate {
                certificate_arn: Some(arn),
                is_default: None,
            }]),
            ssl_policy: Some(ssl_policy),
            alpn_policy,
            served: vec![served],
        })
    }
}

fn checked_alpn(given: &[String]) -> Result<Vec<String>, ApiError> {
    let [policy] = given else {
        return Err(validation("An ALPN policy takes exactly one value"));
    };
    if !ALPN_POLICIES.contains(&policy.as_str()) {
        return Err(error(
            "ALPNPolicyNotSupportedException",
            format!("ALPN policy '{policy}' is not supported"),
        ));
    }
    if !ALPN_POLICIES_SERVED.contains(&policy.as_str()) {
        return Err(error(
            "ALPNPolicyNotSupportedException",
            format!(
                "ALPN policy '{policy}' is not supported by this data plane, which offers h2 then http/1.1: use HTTP2Preferred, HTTP2Optional or None"
            ),
        ));
    }
    Ok(given.to_vec())
}
