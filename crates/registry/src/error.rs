//! What the registry refuses, independent of how it is told: the edge maps
//! these to the distribution specification's error codes, the ECR API to
//! ECR's exceptions.

use flotilla_types::ApiError;

use crate::blobs::BlobError;
use crate::digest::Digest;
use crate::manifest::ManifestError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    #[error(
        "The repository with name '{name}' does not exist in the registry with id '{registry_id}'"
    )]
    RepositoryNotFound { name: String, registry_id: String },
    #[error("blob {0} is not known to this repository")]
    BlobUnknown(Digest),
    #[error("upload {0} is not known")]
    UploadUnknown(String),
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
    #[error("the content's digest is {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest media type {0:?} is not supported")]
    ManifestUnsupported(String),
    #[error("manifest references {0}, which is not in this repository")]
    ManifestBlobUnknown(Digest),
    #[error("manifest {0} is not known to this repository")]
    ManifestUnknown(String),
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    #[error("The image tag '{tag}' already exists in the '{repository}' repository and cannot be overwritten because the repository is immutable.")]
    TagImmutable { tag: String, repository: String },
    #[error("upload {upload} has {size} bytes; a part starting at byte {first_byte} does not follow them")]
    RangeInvalid {
        upload: String,
        size: u64,
        first_byte: u64,
    },
    #[error(
        "the upload is larger than the limit of {} bytes",
        crate::blobs::BLOB_SIZE_MAX_BYTES
    )]
    TooLarge,
    #[error("too many uploads are in progress; try again later")]
    TooManyUploads,
    #[error("image {0} is referenced by a manifest list in this repository")]
    ReferencedByIndex(Digest),
    #[error("{0}")]
    Unsupported(String),
    /// A failure of the store or the disk, already logged.
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    /// The distribution specification's error code and HTTP status.
    pub fn oci_code(&self) -> (&'static str, u16) {
        match self {
            RegistryError::NameInvalid(_) => ("NAME_INVALID", 400),
            RegistryError::RepositoryNotFound { .. } => ("NAME_UNKNOWN", 404),
            RegistryError::BlobUnknown(_) => ("BLOB_UNKNOWN", 404),
            RegistryError::UploadUnknown(_) => ("BLOB_UPLOAD_UNKNOWN", 404),
            RegistryError::DigestInvalid(_) | RegistryError::DigestMismatch { .. } => {
                ("DIGEST_INVALID", 400)
            }
            RegistryError::ManifestInvalid(_) => ("MANIFEST_INVALID", 400),
            RegistryError::ManifestUnsupported(_) => ("MANIFEST_INVALID", 415),
            RegistryError::ManifestBlobUnknown(_) => ("MANIFEST_BLOB_UNKNOWN", 400),
            RegistryError::ManifestUnknown(_) => ("MANIFEST_UNKNOWN", 404),
            RegistryError::TagInvalid(_) | RegistryError::TagImmutable { .. } => {
                ("TAG_INVALID", 400)
            }
            RegistryError::RangeInvalid { .. } => ("BLOB_UPLOAD_INVALID", 416),
            RegistryError::TooLarge => ("SIZE_INVALID", 413),
            RegistryError::TooManyUploads => ("TOOMANYREQUESTS", 429),
            RegistryError::ReferencedByIndex(_) => ("DENIED", 409),
            RegistryError::Unsupported(_) => ("UNSUPPORTED", 405),
            RegistryError::Internal(_) => ("UNKNOWN", 500),
        }
    }

    /// The ECR exception the JSON API answers with.
    pub fn to_api_error(&self) -> ApiError {
        let message = self.to_string();
        let (code, status) = match self {
            RegistryError::NameInvalid(_)
            | RegistryError::DigestInvalid(_)
            | RegistryError::TagInvalid(_) => ("InvalidParameterException", 400),
            RegistryError::RepositoryNotFound { .. } => ("RepositoryNotFoundException", 400),
            RegistryError::BlobUnknown(_) => ("LayersNotFoundException", 400),
            RegistryError::UploadUnknown(_) => ("UploadNotFoundException", 400),
            RegistryError::DigestMismatch { .. } => ("ImageDigestDoesNotMatchException", 400),
            RegistryError::ManifestInvalid(_) => ("InvalidParameterException", 400),
            RegistryError::ManifestUnsupported(_) => ("UnsupportedImageTypeException", 400),
            RegistryError::ManifestBlobUnknown(_) => ("LayersNotFoundException", 400),
            RegistryError::ManifestUnknown(_) => ("ImageNotFoundException", 400),
            RegistryError::TagImmutable { .. } => ("ImageTagAlreadyExistsException", 400),
            RegistryError::RangeInvalid { .. } => ("InvalidLayerPartException", 400),
            RegistryError::TooLarge | RegistryError::TooManyUploads => {
                ("LimitExceededException", 400)
            }
            RegistryError::ReferencedByIndex(_) => ("InvalidParameterException", 400),
            RegistryError::Unsupported(_) => ("ValidationException", 400),
            RegistryError::Internal(_) => ("ServerException", 500),
        };
        ApiError::new(code, status, message)
    }
}

impl From<ApiError> for RegistryError {
    fn from(error: ApiError) -> Self {
        RegistryError::Internal(error.message)
    }
}

impl From<BlobError> for RegistryError {
    fn from(error: BlobError) -> Self {
        match error {
            BlobError::UploadUnknown(id) => RegistryError::UploadUnknown(id),
            BlobError::DigestMismatch { expected, actual } => {
                RegistryError::DigestMismatch { expected, actual }
            }
            BlobError::TooLarge => RegistryError::TooLarge,
            BlobError::TooManyUploads => RegistryError::TooManyUploads,
            BlobError::Io { .. } => {
                tracing::error!(%error, "blob store failed");
                RegistryError::Internal("the registry's disk failed; try again".to_owned())
            }
        }
    }
}

impl From<ManifestError> for RegistryError {
    fn from(error: ManifestError) -> Self {
        match error {
            ManifestError::UnsupportedMediaType(media_type) => {
                RegistryError::ManifestUnsupported(media_type)
            }
            other => RegistryError::ManifestInvalid(other.to_string()),
        }
    }
}
