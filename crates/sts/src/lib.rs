//! AWS Security Token Service: who the caller is.
//!
//! Pure: the edge has already verified the signature and knows the
//! principal its access key acts as; this crate only shapes the answer.
//! Every other STS operation answers the service's not-implemented error at
//! the edge's registry.

use flotilla_aws::sts::{GetCallerIdentityResponse, StsRequest};
use sha2::{Digest, Sha256};

/// The principal behind a verified request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdentity<'a> {
    /// `arn:aws:iam::123456789012:root`, `...:user/alice`, `...:role/r`.
    pub principal_arn: &'a str,
    /// The account the server serves, for ARNs that do not name one.
    pub default_account_id: &'a str,
}

/// What STS answers for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum StsResponse {
    GetCallerIdentity(GetCallerIdentityResponse),
}

/// The operations this crate implements; the rest are refused by the caller.
pub fn handle(identity: &CallerIdentity<'_>, request: &StsRequest) -> Option<StsResponse> {
    match request {
        StsRequest::GetCallerIdentity(_) => Some(StsResponse::GetCallerIdentity(
            get_caller_identity(identity),
        )),
        _ => None,
    }
}

/// The caller's account, ARN and user id, as `sts:GetCallerIdentity`
/// returns them. The user id of the account root is the account id, as in
/// AWS; of an IAM user or role it is a stable id derived from the ARN in
/// AWS's form (`AIDA…` for users, `AROA…` for roles).
pub fn get_caller_identity(identity: &CallerIdentity<'_>) -> GetCallerIdentityResponse {
    let arn = identity.principal_arn;
    // arn:partition:service:region:account:resource
    let mut parts = arn.splitn(6, ':');
    let account = parts
        .nth(4)
        .filter(|account| !account.is_empty())
        .unwrap_or(identity.default_account_id);
    let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
    let user_id = if resource == "root" || resource.is_empty() {
        account.to_owned()
    } else if let Some(role) = resource.strip_prefix("assumed-role/") {
        let (role_name, session) = role.split_once('/').unwrap_or((role, ""));
        let role_arn = format!("arn:aws:iam::{account}:role/{role_name}");
        format!("{}:{session}", unique_id("AROA", &role_arn))
    } else if resource.starts_with("role/") {
        unique_id("AROA", arn)
    } else {
        unique_id("AIDA", arn)
    };
    GetCallerIdentityResponse {
        user_id: Some(user_id),
        account: Some(account.to_owned()),
        arn: Some(arn.to_owned()),
    }
}

/// A 21-character IAM unique id: the kind's prefix and 17 characters of
/// base-32 taken from a hash of the ARN, so the same principal always has
/// the same id.
fn unique_id(prefix: &str, arn: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(arn.as_bytes());
    let mut id = String::with_capacity(21);
    id.push_str(prefix);
    id.extend(
        digest
            .iter()
            .take(17)
            .map(|byte| char::from(ALPHABET[usize::from(byte % 32)])),
    );
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(arn: &str) -> GetCallerIdentityResponse {
        get_caller_identity(&CallerIdentity {
            principal_arn: arn,
            default_account_id: "000000000000",
        })
    }

    #[test]
    fn root_user_and_role() {
        let root = identity("arn:aws:iam::123456789012:root");
        assert_eq!(root.account.as_deref(), Some("123456789012"));
        assert_eq!(root.user_id.as_deref(), Some("123456789012"));
        assert_eq!(root.arn.as_deref(), Some("arn:aws:iam::123456789012:root"));

        let alice = identity("arn:aws:iam::123456789012:user/alice");
        let alice_id = alice.user_id.expect("user id");
        assert!(
            alice_id.starts_with("AIDA") && alice_id.len() == 21,
            "{alice_id}"
        );
        assert_eq!(
            identity("arn:aws:iam::123456789012:user/alice")
                .user_id
                .expect("user id"),
            alice_id
        );
        assert_ne!(
            identity("arn:aws:iam::123456789012:user/bob")
                .user_id
                .expect("user id"),
            alice_id
        );

        let role = identity("arn:aws:iam::123456789012:role/deployer")
            .user_id
            .expect("user id");
        assert!(role.starts_with("AROA"), "{role}");
        let session = identity("arn:aws:sts::123456789012:assumed-role/deployer/build-7");
        assert_eq!(session.user_id.expect("user id"), format!("{role}:build-7"));
    }
}
