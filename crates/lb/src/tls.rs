//! HTTPS listeners' TLS: rustls on ring, ALPN offering h2 then http/1.1.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Certificate;

/// Builds the TLS acceptor of an HTTPS listener from its certificate, or
/// says what is wrong with the certificate or key.
pub fn acceptor(certificates: &[Certificate]) -> Result<tokio_rustls::TlsAcceptor, String> {
    let [certificate] = certificates else {
        return Err(format!(
            "one certificate per listener is supported, not {}",
            certificates.len()
        ));
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certificate.certificate_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|error| format!("the certificate PEM does not parse: {error}"))?;
    if chain.is_empty() {
        return Err("the certificate PEM holds no CERTIFICATE block".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(certificate.private_key_pem.as_bytes())
        .map_err(|error| format!("the private key PEM does not parse: {error}"))?;
    // ring builds with a C compiler alone (aws-lc-rs wants cmake); its
    // provider lacks only the post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS versions: {error}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("the certificate and key do not make a TLS identity: {error}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
