//! `S3Error`: every refusal of the object API, with S3's own code, status
//! and wording; the edge writes it as S3's `<Error>` document.

use flotilla_types::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("The specified bucket does not exist")]
    NoSuchBucket { bucket: String },
    #[error("The specified key does not exist.")]
    NoSuchKey { key: String },
    #[error("Your previous request to create the named bucket succeeded and you already own it.")]
    BucketAlreadyOwnedByYou { bucket: String },
    #[error("The bucket you tried to delete is not empty")]
    BucketNotEmpty { bucket: String },
    #[error("The specified bucket is not valid. {reason}")]
    InvalidBucketName { bucket: String, reason: String },
    #[error("You have attempted to create more buckets than allowed")]
    TooManyBuckets,
    #[error("Your key is too long")]
    KeyTooLong { key_length_bytes: usize },
    #[error("Your proposed upload exceeds the maximum allowed size")]
    EntityTooLarge { size_bytes: u64, limit_bytes: u64 },
    #[error("You did not provide the number of bytes specified by the Content-Length HTTP header")]
    IncompleteBody,
    #[error("The Content-MD5 you specified did not match what we received.")]
    BadDigest,
    #[error("The Content-MD5 you specified is not valid.")]
    InvalidDigest,
    #[error("The {algorithm} you specified did not match the calculated checksum.")]
    ChecksumMismatch { algorithm: &'static str },
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
    #[error("The request signature we calculated does not match the signature you provided. Check your key and signing method.")]
    ChunkSignatureMismatch,
    #[error("The requested range is not satisfiable")]
    InvalidRange { size_bytes: u64 },
    #[error("{message}")]
    InvalidArgument { message: String },
    #[error("{message}")]
    InvalidRequest { message: String },
    #[error(
        "The XML you provided was not well-formed or did not validate against our published schema"
    )]
    MalformedXml,
    #[error("The specified location-constraint is not valid")]
    InvalidLocationConstraint { constraint: String },
    #[error("The {constraint} location constraint is incompatible for the region specific endpoint this request was sent to.")]
    IllegalLocationConstraint { constraint: String },
    #[error("You must provide the Content-Length HTTP header.")]
    MissingContentLength,
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed { condition: &'static str },
    #[error("Not Modified")]
    NotModified,
    #[error("The specified method is not allowed against this resource.")]
    MethodNotAllowed,
    #[error("{what} is not implemented by this server")]
    NotImplemented { what: String },
    #[error("The requested partnumber is not satisfiable")]
    InvalidPart,
    #[error("The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")]
    NoSuchUpload { upload_id: String },
    #[error("The list of parts was not in ascending order. Parts must be ordered by part number.")]
    InvalidPartOrder,
    #[error("One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.")]
    InvalidPartReference { part_number: u32 },
    #[error("Your proposed upload is smaller than the minimum allowed object size.")]
    EntityTooSmall { part_number: u32, size_bytes: u64 },
    /// A signature refused, with the code, status and message S3 gives it
    /// (`flotilla_sigv4::VerifyError::s3_error`).
    #[error("{message}")]
    Signature {
        code: &'static str,
        status: u16,
        message: String,
    },
    #[error("Access Denied")]
    AccessDenied,
    #[error("We encountered an internal error. Please try again.")]
    Internal { detail: String },
}

impl S3Error {
    /// S3's error code, the `<Code>` of its error document.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoSuchBucket { .. } => "NoSuchBucket",
            Self::NoSuchKey { .. } => "NoSuchKey",
            Self::BucketAlreadyOwnedByYou { .. } => "BucketAlreadyOwnedByYou",
            Self::BucketNotEmpty { .. } => "BucketNotEmpty",
            Self::InvalidBucketName { .. } => "InvalidBucketName",
            Self::TooManyBuckets => "TooManyBuckets",
            Self::KeyTooLong { .. } => "KeyTooLongError",
            Self::EntityTooLarge { .. } => "EntityTooLarge",
            Self::IncompleteBody => "IncompleteBody",
            Self::BadDigest | Self::ChecksumMismatch { .. } => "BadDigest",
            Self::InvalidDigest => "InvalidDigest",
            Self::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
            Self::ChunkSignatureMismatch => "SignatureDoesNotMatch",
            Self::InvalidRange { .. } => "InvalidRange",
            Self::InvalidArgument { .. } => "InvalidArgument",
            Self::InvalidRequest { .. } => "InvalidRequest",
            Self::MalformedXml => "MalformedXML",
            Self::InvalidLocationConstraint { .. } => "InvalidLocationConstraint",
            Self::IllegalLocationConstraint { .. } => "IllegalLocationConstraintException",
            Self::MissingContentLength => "MissingContentLength",
            Self::PreconditionFailed { .. } => "PreconditionFailed",
            Self::NotModified => "NotModified",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::NotImplemented { .. } => "NotImplemented",
            Self::InvalidPart => "InvalidPartNumber",
            Self::NoSuchUpload { .. } => "NoSuchUpload",
            Self::InvalidPartOrder => "InvalidPartOrder",
            Self::InvalidPartReference { .. } => "InvalidPart",
            Self::EntityTooSmall { .. } => "EntityTooSmall",
            Self::Signature { code, .. } => code,
            Self::AccessDenied => "AccessDenied",
            Self::Internal { .. } => "InternalError",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::NoSuchBucket { .. } | Self::NoSuchKey { .. } | Self::NoSuchUpload { .. } => 404,
            Self::BucketAlreadyOwnedByYou { .. } | Self::BucketNotEmpty { .. } => 409,
            Self::ChunkSignatureMismatch | Self::AccessDenied => 403,
            Self::Signature { status, .. } => *status,
            Self::InvalidPart => 416,
            Self::InvalidRange { .. } => 416,
            Self::MissingContentLength => 411,
            Self::PreconditionFailed { .. } => 412,
            Self::NotModified => 304,
            Self::MethodNotAllowed => 405,
            Self::NotImplemented { .. } => 501,
            Self::Internal { .. } => 500,
            _ => 400,
        }
    }

    /// The elements S3 adds to its error document to say what the error is
    /// about (`<BucketName>`, `<Key>`, ...).
    pub fn details(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::NoSuchBucket { bucket }
            | Self::BucketAlreadyOwnedByYou { bucket }
            | Self::BucketNotEmpty { bucket }
            | Self::InvalidBucketName { bucket, .. } => vec![("BucketName", bucket.clone())],
            Self::NoSuchKey { key } => vec![("Key", key.clone())],
            Self::NoSuchUpload { upload_id } => vec![("UploadId", upload_id.clone())],
            Self::InvalidPartReference { part_number } => {
                vec![("PartNumber", part_number.to_string())]
            }
            Self::EntityTooSmall {
                part_number,
                size_bytes,
            } => vec![
                ("PartNumber", part_number.to_string()),
                ("ProposedSize", size_bytes.to_string()),
                ("MinSizeAllowed", crate::PART_SIZE_MIN_BYTES.to_string()),
            ],
            Self::EntityTooLarge {
                size_bytes,
                limit_bytes,
            } => vec![
                ("ProposedSize", size_bytes.to_string()),
                ("MaxSizeAllowed", limit_bytes.to_string()),
            ],
            Self::InvalidRange { size_bytes } => {
                vec![("ActualObjectSize", size_bytes.to_string())]
            }
            Self::InvalidLocationConstraint { constraint }
            | Self::IllegalLocationConstraint { constraint } => {
                vec![("LocationConstraint", constraint.clone())]
            }
            Self::PreconditionFailed { condition } => vec![("Condition", (*condition).to_owned())],
            _ => Vec::new(),
        }
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        tracing::error!(%detail, "s3 request failed");
        Self::Internal { detail }
    }

    /// The placeholder an answer starts from before anything decided it.
    pub fn internal_unanswered() -> Self {
        Self::Internal {
            detail: "unanswered".to_owned(),
        }
    }

    pub fn not_implemented(what: impl Into<String>) -> Self {
        Self::NotImplemented { what: what.into() }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            message: message.into(),
        }
    }
}

/// A failure of the store, as `flotilla_records` words it.
impl From<ApiError> for S3Error {
    fn from(error: ApiError) -> Self {
        Self::internal(error.message)
    }
}
