//! Why a policy document is refused, in IAM's words.
//!
//! Each variant's message is the text IAM (or STS) answers with, so the IAM
//! service can put it in its error response unchanged; `code` is the AWS error
//! code that goes with it.

use thiserror::Error;

/// The IAM service's prefixes for the paths under `arn:aws:iam::ACCOUNT:`,
/// listed in the message IAM gives for any other.
pub const IAM_RESOURCE_PATH_PREFIXES: &[&str] = &[
    "user/",
    "federated-user/",
    "role/",
    "group/",
    "instance-profile/",
    "mfa/",
    "server-certificate/",
    "policy/",
    "sms-mfa/",
    "saml-provider/",
    "oidc-provider/",
    "report/",
    "access-report/",
];

/// A policy document IAM would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// Not JSON, or JSON whose shape is not a policy's (unknown members, wrong
    /// types, an empty `Statement`, `Action` beside `NotAction`, ...).
    #[error("Syntax errors in policy.")]
    Syntax,
    /// A managed policy whose `Version` is missing or `2008-10-17`.
    #[error("Policy document must be version 2012-10-17 or greater.")]
    VersionTooOld,
    /// What IAM's older parser rejects: an `Effect` not spelt `Allow` or
    /// `Deny`, a date it cannot read, an ARN with too few parts.
    #[error("The policy failed legacy parsing")]
    LegacyParsing,
    #[error("Statement IDs (SID) in a single policy must be unique.")]
    DuplicateSid,
    /// IAM's own documents (identity and trust policies) take only letters
    /// and digits in a `Sid`; resource policies of other services take more.
    #[error("Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*")]
    SidNotAlphanumeric,
    #[error("Policy statement must contain actions.")]
    MissingActions,
    #[error("Policy statement must contain resources.")]
    MissingResources,
    #[error("Resource {resource} must be in ARN format or \"*\".")]
    ResourceNotArn { resource: String },
    #[error("Partition \"{partition}\" is not valid for resource \"{shown}\".")]
    InvalidPartition { partition: String, shown: String },
    #[error("Resource vendor must be fully qualified and cannot contain regexes.")]
    ResourceVendorNotQualified,
    #[error("IAM resource {resource} cannot contain region information.")]
    IamResourceWithRegion { resource: String },
    #[error("Resource {resource} can not contain region information.")]
    S3ResourceWithRegion { resource: String },
    #[error("IAM resource path must either be \"*\" or start with {}.", IAM_RESOURCE_PATH_PREFIXES.join(", "))]
    IamResourcePath,
    #[error("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")]
    ActionWithoutVendor,
    #[error("Actions/Condition can contain only one colon.")]
    ActionWithTwoColons,
    #[error("Vendor {vendor} is not valid")]
    InvalidVendor { vendor: String },
    /// An identity policy, boundary or session policy naming a principal.
    #[error("Policy document should not specify a principal.")]
    PrincipalNotAllowed,
    /// A resource policy statement without `Principal` or `NotPrincipal`.
    #[error("Missing required field Principal")]
    MissingPrincipal,
    /// A trust policy statement without `Principal`.
    #[error("Missing required field Principal")]
    TrustMissingPrincipal,
    /// A `Principal` whose lists are all empty.
    #[error("Invalid principal in policy: com.amazon.balsa.error.InvalidPolicyException: The passed in policy has a statement with no principals!")]
    NoPrincipals,
    /// A principal IAM does not recognise; `kind` is `AWS`, `SERVICE`,
    /// `FEDERATED` or `CANONICAL_USER` as IAM prints it.
    #[error("Invalid principal in policy: \"{kind}\":\"{value}\"")]
    InvalidPrincipal { kind: String, value: String },
    #[error("Has prohibited field Resource")]
    TrustWithResource,
    #[error("AssumeRole policy may only specify STS AssumeRole actions.")]
    TrustWithOtherActions,
    #[error("AssumeRole policy must not contain NotPrincipal field.")]
    TrustWithNotPrincipal,
    /// A managed policy over its quota (whitespace not counted).
    #[error("Cannot exceed quota for PolicySize: {limit_chars}")]
    ManagedPolicyTooLarge { limit_chars: usize },
    /// A role's trust policy over its quota.
    #[error("Cannot exceed quota for ACLSizePerRole: {limit_chars}")]
    TrustPolicyTooLarge { limit_chars: usize },
    /// The inline policies of one user, role or group over their aggregate quota.
    #[error("Maximum policy size of {limit_chars} bytes exceeded for {entity_kind} {entity_name}")]
    InlinePoliciesTooLarge {
        limit_chars: usize,
        entity_kind: &'static str,
        entity_name: String,
    },
    /// A session policy passed to STS over its length.
    #[error("1 validation error detected: Value '{text}' at 'policy' failed to satisfy constraint: Member must have length less than or equal to {limit_chars}")]
    SessionPolicyTooLong { text: String, limit_chars: usize },
    #[error("Action vendors (e.g., aws, ec2, etc.) must not contain wildcards.")]
    ActionVendorWildcard,
}

impl PolicyError {
    /// The AWS error code IAM answers this refusal with.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::ManagedPolicyTooLarge { .. }
            | PolicyError::TrustPolicyTooLarge { .. }
            | PolicyError::InlinePoliciesTooLarge { .. } => "LimitExceeded",
            PolicyError::SessionPolicyTooLong { .. } => "ValidationError",
            _ => "MalformedPolicyDocument",
        }
    }

    /// An AWS principal named by a trust or resource policy that does not
    /// exist: IAM resolves every user and role ARN when the policy is stored
    /// and refuses the document with this error when one is unknown.
    pub fn unknown_aws_principal(arn: &str) -> Self {
        PolicyError::InvalidPrincipal {
            kind: "AWS".to_string(),
            value: arn.to_string(),
        }
    }
}
