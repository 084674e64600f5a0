//! Server certificates: UploadServerCertificate, GetServerCertificate,
//! ListServerCertificates, UpdateServerCertificate and
//! DeleteServerCertificate. They are what HTTPS listeners of the load
//! balancer serve (`Certificates: [{CertificateArn: <server-certificate
//! ARN>}]`), as ELB takes IAM's certificates where ACM is not available.
//!
//! The private key is a [`Secret`]: never logged, never answered (IAM gives
//! back the body and chain only); [`Iam::server_certificate_pem`] hands it
//! to the load balancer's configuration.

use base64::Engine as _;
use flotilla_aws::iam as wire;
use flotilla_records::{encode, mutate, Attempt, Versioned};
use flotilla_store::Txn;
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::errors::{self, check_name, check_path};
use crate::records::{key, with_generation, Secret, Tags, SERVER_CERTIFICATES};
use crate::{page, seconds, text, Context, Iam};

/// IAM's quota of server certificates per account.
pub const SERVER_CERTIFICATES_MAX: usize = 20;
const NAME_CHARS_MAX: usize = 128;
const BODY_CHARS_MAX: usize = 16_384;
const KEY_CHARS_MAX: usize = 16_384;
const CHAIN_CHARS_MAX: usize = 2_097_152;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerCertificateRecord {
    pub name: String,
    pub path: String,
    pub server_certificate_id: String,
    pub uploaded_ms: u64,
    /// The certificate's notAfter, in seconds since the epoch.
    #[serde(default)]
    pub expiration_seconds: Option<f64>,
    pub body: String,
    #[serde(default)]
    pub chain: Option<String>,
    pub private_key: Secret,
    #[serde(default)]
    pub tags: Tags,
}

/// Who serves a server certificate (the load balancer's listeners), so
/// that one in use is not deleted from under them.
pub trait CertificateUsers: Send + Sync {
    /// What serves the certificate `arn` (ARNs), empty when nothing does.
    fn users(&self, arn: &str) -> Result<Vec<String>, ApiError>;
}

/// A server certificate's chain (body then chain) and private key in PEM,
/// for a listener that serves it.
pub struct CertificatePem {
    pub certificate_pem: String,
    pub private_key_pem: String,
}

impl Iam {
    pub(crate) async fn upload_server_certificate(
        &self,
        context: &Context<'_>,
        request: wire::UploadServerCertificateRequest,
    ) -> Result<wire::UploadServerCertificateResponse, ApiError> {
        let name = text(&request.server_certificate_name);
        check_name("serverCertificateName", name, NAME_CHARS_MAX)?;
        let path = request.path.clone().unwrap_or_else(|| "/".to_owned());
        check_path("path", &path)?;
        let body = text(&request.certificate_body);
        let private_key = text(&request.private_key);
        check_length("certificateBody", body, BODY_CHARS_MAX)?;
        check_length("privateKey", private_key, KEY_CHARS_MAX)?;
        if let Some(chain) = &request.certificate_chain {
            check_length("certificateChain", chain, CHAIN_CHARS_MAX)?;
        }
        let ders = pem_blocks(body, "CERTIFICATE");
        let Some(leaf) = ders.first() else {
            return Err(malformed(
                "Unable to parse certificate. Please ensure the certificate is in PEM format.",
            ));
        };
        if let Some(chain) = &request.certificate_chain {
            if pem_blocks(chain, "CERTIFICATE").is_empty() {
                return Err(malformed(
                    "Unable to parse certificate chain. Please ensure the chain is in PEM format.",
                ));
            }
        }
        if !holds_private_key(private_key) {
            return Err(malformed(
                "Unable to parse private key. Please ensure the private key is in PEM format.",
            ));
        }
        let mut tags = Vec::new();
        errors::merge_tags(&mut tags, request.tags.as_deref().unwrap_or_default())?;
        let record = ServerCertificateRecord {
            name: name.to_owned(),
            path,
            server_certificate_id: crate::unique_id("ASCA", &(context.fresh_id)()),
            uploaded_ms: context.now_ms,
            expiration_seconds: not_after_seconds(leaf),
            body: body.to_owned(),
            chain: request.certificate_chain.clone(),
            private_key: Secret::new(private_key.to_owned()),
            tags,
        };
        mutate(&*self.store, || {
            if self
                .read::<ServerCertificateRecord>(SERVER_CERTIFICATES, name)?
                .is_some()
            {
                return Err(errors::already_exists(format!(
                    "The Server Certificate with name {name} already exists."
                )));
            }
            if self.count(SERVER_CERTIFICATES)? >= SERVER_CERTIFICATES_MAX {
                return Err(errors::limit_exceeded(format!(
                    "Cannot exceed quota for ServerCertificatesPerAccount: {SERVER_CERTIFICATES_MAX}"
                )));
            }
            let txn = Txn::new()
                .expect(key(SERVER_CERTIFICATES, name), 0)
                .put(key(SERVER_CERTIFICATES, name), encode(&record));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await?;
        Ok(wire::UploadServerCertificateResponse {
            server_certificate_metadata: Some(self.certificate_metadata(&record)),
            tags: (!record.tags.is_empty()).then(|| errors::wire_tags(&record.tags)),
        })
    }

    pub(crate) fn get_server_certificate(
        &self,
        request: wire::GetServerCertificateRequest,
    ) -> Result<wire::GetServerCertificateResponse, ApiError> {
        let record = self.server_certificate(text(&request.server_certificate_name))?;
        let record = record.value;
        Ok(wire::GetServerCertificateResponse {
            server_certificate: Some(wire::ServerCertificate {
                certificate_body: Some(record.body.clone()),
                certificate_chain: record.chain.clone(),
                server_certificate_metadata: Some(self.certificate_metadata(&record)),
                tags: (!record.tags.is_empty()).then(|| errors::wire_tags(&record.tags)),
            }),
        })
    }

    pub(crate) fn list_server_certificates(
        &self,
        request: wire::ListServerCertificatesRequest,
    ) -> Result<wire::ListServerCertificatesResponse, ApiError> {
        let prefix = request.path_prefix.as_deref().unwrap_or("/");
        let mut found = Vec::new();
        for (key, record) in self.read_all::<ServerCertificateRecord>(SERVER_CERTIFICATES)? {
            if record.path.starts_with(prefix) {
                found.push((key, self.certificate_metadata(&record)));
            }
        }
        let page = page(found, request.marker.as_deref(), request.max_items)?;
        Ok(wire::ListServerCertificatesResponse {
            server_certificate_metadata_list: Some(page.items),
            is_truncated: Some(page.truncated),
            marker: page.marker,
        })
    }

    pub(crate) async fn update_server_certificate(
        &self,
        request: wire::UpdateServerCertificateRequest,
    ) -> Result<(), ApiError> {
        let name = text(&request.server_certificate_name);
        if let Some(new_name) = &request.new_server_certificate_name {
            check_name("newServerCertificateName", new_name, NAME_CHARS_MAX)?;
        }
        if let Some(new_path) = &request.new_path {
            check_path("newPath", new_path)?;
        }
        mutate(&*self.store, || {
            let found = self.server_certificate(name)?;
            let mut record = found.value;
            let new_name = request
                .new_server_certificate_name
                .clone()
                .unwrap_or_else(|| record.name.clone());
            let renamed = !new_name.eq_ignore_ascii_case(name);
            if renamed
                && self
                    .read::<ServerCertificateRecord>(SERVER_CERTIFICATES, &new_name)?
                    .is_some()
            {
                return Err(errors::already_exists(format!(
                    "The Server Certificate with name {new_name} already exists."
                )));
            }
            record.name = new_name.clone();
            if let Some(new_path) = &request.new_path {
                record.path = new_path.clone();
            }
            let mut txn = Txn::new().expect(key(SERVER_CERTIFICATES, name), found.revision);
            if renamed {
                txn = txn
                    .delete(key(SERVER_CERTIFICATES, name))
                    .expect(key(SERVER_CERTIFICATES, &new_name), 0);
            }
            let txn = txn.put(key(SERVER_CERTIFICATES, &new_name), encode(&record));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    pub(crate) async fn delete_server_certificate(
        &self,
        request: wire::DeleteServerCertificateRequest,
    ) -> Result<(), ApiError> {
        let name = text(&request.server_certificate_name);
        mutate(&*self.store, || {
            let found = self.server_certificate(name)?;
            let arn = self.iam_arn("server-certificate", &found.value.path, &found.value.name);
            if let Some(users) = self.certificate_users.get() {
                if let Some(user) = users.users(&arn)?.first() {
                    return Err(errors::delete_conflict(&format!(
                        "Certificate: {} is currently in use by {user}. Please remove it first before deleting it from IAM.",
                        found.value.server_certificate_id
                    )));
                }
            }
            let txn = Txn::new()
                .expect(key(SERVER_CERTIFICATES, name), found.revision)
                .delete(key(SERVER_CERTIFICATES, name));
            Ok(Attempt::Commit(with_generation(txn), ()))
        })
        .await
    }

    /// Where DeleteServerCertificate learns whether a certificate is served.
    pub fn set_certificate_users(&self, users: std::sync::Arc<dyn CertificateUsers>) {
        let _ = self.certificate_users.set(users);
    }

    /// The certificate an ARN names (`arn:aws:iam::ACCOUNT:server-certificate/PATH/NAME`),
    /// with its private key, for the load balancer; `None` when there is none.
    pub fn server_certificate_pem(&self, arn: &str) -> Result<Option<CertificatePem>, ApiError> {
        let prefix = format!("arn:aws:iam::{}:server-certificate/", self.account_id);
        let Some(rest) = arn.strip_prefix(&prefix) else {
            return Ok(None);
        };
        let name = rest.rsplit('/').next().unwrap_or_default();
        let Some(found) = self.read::<ServerCertificateRecord>(SERVER_CERTIFICATES, name)? else {
            return Ok(None);
        };
        let record = found.value;
        if self.iam_arn("server-certificate", &record.path, &record.name) != arn {
            return Ok(None);
        }
        let mut certificate_pem = record.body.trim_end().to_owned();
        certificate_pem.push('\n');
        if let Some(chain) = &record.chain {
            certificate_pem.push_str(chain.trim_end());
            certificate_pem.push('\n');
        }
        Ok(Some(CertificatePem {
            certificate_pem,
            private_key_pem: record.private_key.expose().to_owned(),
        }))
    }

    fn server_certificate(
        &self,
        name: &str,
    ) -> Result<Versioned<ServerCertificateRecord>, ApiError> {
        self.read::<ServerCertificateRecord>(SERVER_CERTIFICATES, name)?
            .ok_or_else(|| {
                errors::no_such_entity(format!(
                    "The Server Certificate with name {name} cannot be found."
                ))
            })
    }

    fn certificate_metadata(
        &self,
        record: &ServerCertificateRecord,
    ) -> wire::ServerCertificateMetadata {
        wire::ServerCertificateMetadata {
            arn: Some(self.iam_arn("server-certificate", &record.path, &record.name)),
            expiration: record.expiration_seconds,
            path: Some(record.path.clone()),
            server_certificate_id: Some(record.server_certificate_id.clone()),
            server_certificate_name: Some(record.name.clone()),
            upload_date: Some(seconds(record.uploaded_ms)),
        }
    }
}

fn malformed(message: &str) -> ApiError {
    ApiError::new("MalformedCertificateException", 400, message)
}

fn check_length(member: &str, value: &str, max_chars: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > max_chars {
        return Err(errors::validation(format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: Member must have length between 1 and {max_chars}"
        )));
    }
    Ok(())
}

/// The DER contents of each `-----BEGIN LABEL-----` block of a PEM text.
/// A block that does not decode makes the whole text unreadable (empty).
fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let Some(stop) = after.find(&end) else {
            return Vec::new();
        };
        let encoded: String = after[..stop].split_whitespace().collect();
        match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(der) if !der.is_empty() => blocks.push(der),
            _ => return Vec::new(),
        }
        rest = &after[stop + end.len()..];
    }
    blocks
}

fn holds_private_key(text: &str) -> bool {
    ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]
        .iter()
        .any(|label| !pem_blocks(text, label).is_empty())
}

/// One DER element at the start of `der`: its tag, contents and what follows.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

/// A certificate's notAfter in seconds since the epoch, read from its DER:
/// Certificate → tbsCertificate → (version) serial, signature, issuer,
/// validity → notAfter.
fn not_after_seconds(der: &[u8]) -> Option<f64> {
    const SEQUENCE: u8 = 0x30;
    let (tag, certificate, _) = der_element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = der_element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    // The explicit [0] version is optional.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    for _ in 0..3 {
        tbs = der_element(tbs)?.2; // serial, signature, issuer
    }
    let (tag, validity, _) = der_element(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, rest) = der_element(validity)?;
    let (tag, time, _) = der_element(rest)?;
    der_time_seconds(tag, std::str::from_utf8(time).ok()?)
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`, tag 0x18) in seconds since the epoch.
fn der_time_seconds(tag: u8, text: &str) -> Option<f64> {
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if digits.len() == 12 => {
            let short: i64 = digits[..2].parse().ok()?;
            (
                if short >= 50 {
                    1900 + short
                } else {
                    2000 + short
                },
                &digits[2..],
            )
        }
        0x18 if digits.len() == 14 => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second) as f64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            der_time_seconds(0x17, "491231235959Z"),
            Some(2_524_607_999.0)
        );
        assert_eq!(
            der_time_seconds(0x17, "500101000000Z"),
            Some(-631_152_000.0)
        );
        assert_eq!(
            der_time_seconds(0x18, "20380119031408Z"),
            Some(2_147_483_648.0)
        );
        assert_eq!(der_time_seconds(0x18, "2038011903140Z"), None);
    }

    /// A self-signed P-256 certificate whose notAfter is
    /// 2036-12-05 00:14:36 UTC.
    const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBfTCCASOgAwIBAgIUJUCMCbtifrovwOEwFj8di2l3KjEwCgYIKoZIzj0EAwIw\n\
FDESMBAGA1UEAwwJd2ViLmxvY2FsMB4XDTI2MTIwODAwMTQzNloXDTM2MTIwNTAw\n\
MTQzNlowFDESMBAGA1UEAwwJd2ViLmxvY2FsMFkwEwYHKoZIzj0CAQYIKoZIzj0D\n\
AQcDQgAEISOmEf6BqZvJWLlhORGTcMaW6aT7D2l2e15w/dN2RF2Wptp7oHBbnc7a\n\
nreipukKqADBrRkyb4lHIkYDo/B0J6NTMFEwHQYDVR0OBBYEFNpOI+qrqNz58lAP\n\
R6LQVd508iS8MB8GA1UdIwQYMBaAFNpOI+qrqNz58lAPR6LQVd508iS8MA8GA1Ud\n\
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgWOL2kRa810bhUbW6JRRUmuDd\n\
IRN2gv/nqdlwkqlfFXsCIQCiJ+iIFPH2XEOsQl4bAxcaF7lBgiCddWX4ngguclw1\n\
0g==\n\
-----END CERTIFICATE-----";

    #[test]
    fn expiration_is_read_from_the_certificate() {
        let [der] = &pem_blocks(CERTIFICATE, "CERTIFICATE")[..] else {
            panic!("one certificate");
        };
        assert_eq!(not_after_seconds(der), Some(2_112_048_876.0));
        assert_eq!(not_after_seconds(&der[..40]), None);
    }

    #[test]
    fn pem_blocks_decode_or_refuse() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAQID\nBA==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_blocks(text, "CERTIFICATE"), vec![vec![1, 2, 3, 4]]);
        assert!(pem_blocks(
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----",
            "CERTIFICATE"
        )
        .is_empty());
        assert!(pem_blocks("-----BEGIN CERTIFICATE-----\nAQID", "CERTIFICATE").is_empty());
        assert!(holds_private_key(
            "-----BEGIN EC PRIVATE KEY-----\nAQID\n-----END EC PRIVATE KEY-----"
        ));
        assert!(!holds_private_key(text));
    }
}
