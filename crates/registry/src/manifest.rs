//! Image manifests: Docker image manifest v2 schema 2 and manifest lists,
//! OCI image manifests and indexes. Parsing checks the shape and every
//! descriptor; whether the referenced content exists is the caller's check.
//!
//! *Architecture invariant:* parsing never panics and never allocates more
//! than a bounded multiple of its input (`tests/manifest_never_panics.rs`
//! and the `manifest` fuzz target).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::digest::Digest;

/// Largest manifest accepted, the size the OCI specification asks every
/// registry to take at least.
pub const MANIFEST_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Most descriptors (layers, or manifests of an index) one manifest may hold.
pub const DESCRIPTORS_MAX: usize = 1_000;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Schema 1, which Docker itself no longer pushes; refused.
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The manifest media types the registry stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ManifestKind {
    DockerManifest,
    DockerManifestList,
    OciManifest,
    OciIndex,
}

impl ManifestKind {
    pub const ALL: [ManifestKind; 4] = [
        ManifestKind::DockerManifest,
        ManifestKind::DockerManifestList,
        ManifestKind::OciManifest,
        ManifestKind::OciIndex,
    ];

    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::DockerManifest => DOCKER_MANIFEST,
            ManifestKind::DockerManifestList => DOCKER_MANIFEST_LIST,
            ManifestKind::OciManifest => OCI_MANIFEST,
            ManifestKind::OciIndex => OCI_INDEX,
        }
    }

    pub fn from_media_type(media_type: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.media_type() == media_type)
    }

    /// Whether manifests of this kind list other manifests rather than blobs.
    pub fn is_index(self) -> bool {
        matches!(
            self,
            ManifestKind::DockerManifestList | ManifestKind::OciIndex
        )
    }
}

/// A reference to content: its media type, digest and size.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// A parsed, checked manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub kind: ManifestKind,
    /// The image's config blob (image manifests only).
    pub config: Option<Descriptor>,
    /// Layer blobs (image manifests only).
    pub layers: Vec<Descriptor>,
    /// Manifests an index lists.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 referrers).
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for an image manifest without one, its config's
    /// media type, as the referrers API reports it.
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// Every blob the manifest needs: its config, then its layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter())
    }
}

/// Why a manifest was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {size} bytes, more than the limit of {MANIFEST_MAX_BYTES}")]
    TooLarge { size: usize },
    #[error("manifest media type {0:?} is not supported")]
    UnsupportedMediaType(String),
    #[error("manifest is not valid: {0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(message.into())
}

/// Media types a client sends when it does not say which manifest it sends.
fn is_generic_content_type(content_type: &str) -> bool {
    content_type.is_empty()
        || content_type == "application/json"
        || content_type == "application/octet-stream"
}

/// Parses `bytes`, sent with `content_type` (the `Content-Type` header, or
/// ECR PutImage's `imageManifestMediaType`; empty when absent).
pub fn parse(bytes: &[u8], content_type: &str) -> Result<Manifest, ManifestError> {
    if bytes.len() > MANIFEST_MAX_BYTES {
        return Err(ManifestError::TooLarge { size: bytes.len() });
    }
    let content_type = content_type.split(';').next().unwrap_or_default().trim();
    if content_type == DOCKER_SCHEMA1_SIGNED
        || content_type == "application/vnd.docker.distribution.manifest.v1+json"
    {
        return Err(ManifestError::UnsupportedMediaType(content_type.to_owned()));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|error| invalid(format!("not JSON: {error}")))?;
    let Value::Object(object) = value else {
        return Err(invalid("not a JSON object"));
    };
    match object.get("schemaVersion") {
        Some(Value::Number(n)) if n.as_u64() == Some(2) => {}
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {
            return Err(ManifestError::UnsupportedMediaType(
                DOCKER_SCHEMA1_SIGNED.to_owned(),
            ))
        }
        _ => return Err(invalid("schemaVersion must be 2")),
    }
    let declared = optional_string(&object, "mediaType")?;
    let kind = kind_of(&object, declared, content_type)?;
    let annotations = annotations(&object, "annotations")?;
    let subject = match object.get("subject") {
        None | Some(Value::Null) => None,
        Some(value) => Some(descriptor(value, "subject")?),
    };
    let artifact_type = optional_string(&object, "artifactType")?.map(str::to_owned);
    if let Some(artifact_type) = &artifact_type {
        check_media_type(artifact_type, "artifactType")?;
    }
    let mut manifest = Manifest {
        kind,
        config: None,
        layers: Vec::new(),
        manifests: Vec::new(),
        subject,
        artifact_type,
        annotations,
    };
    if kind.is_index() {
        if object.contains_key("config") || object.contains_key("layers") {
            return Err(invalid("an index has manifests, not config or layers"));
        }
        manifest.manifests = descriptors(&object, "manifests")?;
        for child in &manifest.manifests {
            if ManifestKind::from_media_type(&child.media_type).is_none() {
                return Err(invalid(format!(
                    "manifests[] entry {} has media type {:?}, which is not a manifest",
                    child.digest, child.media_type
                )));
            }
        }
    } else {
        if object.contains_key("manifests") {
            return Err(invalid(
                "an image manifest has config and layers, not manifests",
            ));
        }
        let config = object
            .get("config")
            .ok_or_else(|| invalid("config is missing"))?;
        let config = descriptor(config, "config")?;
        if kind == ManifestKind::DockerManifest && config.media_type != DOCKER_CONFIG {
            return Err(invalid(format!(
                "config media type {:?} is not {DOCKER_CONFIG}",
                config.media_type
            )));
        }
        manifest.layers = descriptors(&object, "layers")?;
        if kind == ManifestKind::OciManifest && manifest.artifact_type.is_none() {
            manifest.artifact_type = Some(config.media_type.clone());
        }
        manifest.config = Some(config);
    }
    Ok(manifest)
}

fn kind_of(
    object: &Map<String, Value>,
    declared: Option<&str>,
    content_type: &str,
) -> Result<ManifestKind, ManifestError> {
    let from_header = (!is_generic_content_type(content_type)).then_some(content_type);
    if let Some(header) = from_header {
        if ManifestKind::from_media_type(header).is_none() {
            return Err(ManifestError::UnsupportedMediaType(
                header.chars().take(200).collect(),
            ));
        }
    }
    let named = match (from_header, declared) {
        (Some(header), Some(body)) if header != body => {
            return Err(invalid(format!(
                "mediaType {body:?} does not match the content type {header:?}"
            )))
        }
        (Some(name), _) | (None, Some(name)) => Some(name),
        (None, None) => None,
    };
    match named {
        Some(name) => ManifestKind::from_media_type(name)
            .ok_or_else(|| ManifestError::UnsupportedMediaType(name.chars().take(200).collect())),
        // OCI manifests may omit mediaType; their shape tells which they are.
        None if object.contains_key("manifests") => Ok(ManifestKind::OciIndex),
        None if object.contains_key("config") => Ok(ManifestKind::OciManifest),
        None => Err(invalid(
            "mediaType is missing and the shape names no manifest kind",
        )),
    }
}

fn optional_string<'a>(
    object: &'a Map<String, Value>,
    member: &str,
) -> Result<Option<&'a str>, ManifestError> {
    match object.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(invalid(format!("{member} must be a string"))),
    }
}

fn descriptors(
    object: &Map<String, Value>,
    member: &str,
) -> Result<Vec<Descriptor>, ManifestError> {
    let list = match object.get(member) {
        None => return Err(invalid(format!("{member} is missing"))),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid(format!("{member} must be an array"))),
    };
    if list.len() > DESCRIPTORS_MAX {
        return Err(invalid(format!(
            "{member} has {} entries, more than the limit of {DESCRIPTORS_MAX}",
            list.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(index, value)| descriptor(value, &format!("{member}[{index}]")))
        .collect()
}

fn descriptor(value: &Value, at: &str) -> Result<Descriptor, ManifestError> {
    let Value::Object(object) = value else {
        return Err(invalid(format!("{at} must be an object")));
    };
    let media_type = optional_string(object, "mediaType")
        .map_err(|_| invalid(format!("{at}.mediaType must be a string")))?
        .ok_or_else(|| invalid(format!("{at}.mediaType is missing")))?;
    check_media_type(media_type, &format!("{at}.mediaType"))?;
    let digest = match object.get("digest") {
        Some(Value::String(text)) => {
            Digest::parse(text).map_err(|error| invalid(format!("{at}.digest: {error}")))?
        }
        _ => return Err(invalid(format!("{at}.digest must be a string"))),
    };
    let size = match object.get("size") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| invalid(format!("{at}.size must be a non-negative integer")))?,
        _ => return Err(invalid(format!("{at}.size must be a non-negative integer"))),
    };
    let artifact_type = optional_string(object, "artifactType")
        .map_err(|_| invalid(format!("{at}.artifactType must be a string")))?
        .map(str::to_owned);
    Ok(Descriptor {
        media_type: media_type.to_owned(),
        digest,
        size,
        artifact_type,
        annotations: annotations(object, "annotations")
            .map_err(|_| invalid(format!("{at}.annotations must map strings to strings")))?,
    })
}

fn annotations(
    object: &Map<String, Value>,
    member: &str,
) -> Result<BTreeMap<String, String>, ManifestError> {
    match object.get(member) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                _ => Err(invalid(format!("{member}.{key} must be a string"))),
            })
            .collect(),
        Some(_) => Err(invalid(format!("{member} must map strings to strings"))),
    }
}

/// RFC 6838's shape: `type/subtype`, restricted-name characters only.
fn check_media_type(media_type: &str, at: &str) -> Result<(), ManifestError> {
    const MEDIA_TYPE_MAX_CHARS: usize = 255;
    let restricted = |part: &str| {
        !part.is_empty()
            && part.len() <= 127
            && part.as_bytes()[0].is_ascii_alphanumeric()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let valid = media_type.len() <= MEDIA_TYPE_MAX_CHARS
        && media_type
            .split_once('/')
            .is_some_and(|(kind, sub)| restricted(kind) && restricted(sub));
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "{at} {:?} is not a media type",
            media_type.chars().take(80).collect::<String>()
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn docker_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{A}","size":10}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{B}","size":20}}]}}"#
        )
    }

    #[test]
    fn docker_manifests_name_their_blobs() {
        let manifest = parse(docker_manifest().as_bytes(), DOCKER_MANIFEST).unwrap();
        assert_eq!(manifest.kind, ManifestKind::DockerManifest);
        let blobs: Vec<String> = manifest.blobs().map(|d| d.digest.to_string()).collect();
        assert_eq!(blobs, [A, B]);
        // Without a content type, the body's mediaType decides.
        assert_eq!(
            parse(docker_manifest().as_bytes(), "").unwrap().kind,
            ManifestKind::DockerManifest
        );
    }

    #[test]
    fn oci_manifests_and_indexes() {
        let artifact = format!(
            r#"{{"schemaVersion":2,"artifactType":"application/vnd.example.sbom",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{A}","size":2}},
            "layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{B}","size":5}},
            "annotations":{{"org.example":"x"}}}}"#
        );
        let manifest = parse(artifact.as_bytes(), OCI_MANIFEST).unwrap();
        assert_eq!(manifest.kind, ManifestKind::OciManifest);
        assert_eq!(manifest.subject.unwrap().digest.to_string(), B);
        assert_eq!(
            manifest.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{A}","size":7,
            "platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let index = parse(index.as_bytes(), OCI_INDEX).unwrap();
        assert_eq!(index.kind, ManifestKind::OciIndex);
        assert_eq!(index.manifests.len(), 1);
    }

    #[test]
    fn refusals() {
        let cases: Vec<(String, &str, &str)> = vec![
            ("not json".into(), DOCKER_MANIFEST, "not JSON"),
            ("[]".into(), DOCKER_MANIFEST, "not a JSON object"),
            (
                r#"{"schemaVersion":3}"#.into(),
                OCI_MANIFEST,
                "schemaVersion",
            ),
            (docker_manifest(), OCI_MANIFEST, "does not match"),
            (
                docker_manifest().replace(A, "sha256:12"),
                DOCKER_MANIFEST,
                "config.digest",
            ),
            (
                docker_manifest().replace("\"size\":20", "\"size\":-1"),
                DOCKER_MANIFEST,
                "layers[0].size",
            ),
            (
                docker_manifest().replace(DOCKER_CONFIG, "application/json"),
                DOCKER_MANIFEST,
                "config media type",
            ),
            (
                docker_manifest().replace("\"layers\"", "\"layerz\""),
                DOCKER_MANIFEST,
                "layers is missing",
            ),
            (
                docker_manifest().replace("rootfs.diff", "bad type/x"),
                DOCKER_MANIFEST,
                "not a media type",
            ),
        ];
        for (body, content_type, expected) in cases {
            match parse(body.as_bytes(), content_type) {
                Err(ManifestError::Invalid(message)) => {
                    assert!(message.contains(expected), "{message} lacks {expected}")
                }
                other => panic!("{body}: expected Invalid({expected}), got {other:?}"),
            }
        }
        assert!(matches!(
            parse(docker_manifest().as_bytes(), "application/vnd.example+json"),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, ""),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        let huge = vec![b' '; MANIFEST_MAX_BYTES + 1];
        assert!(matches!(
            parse(&huge, ""),
            Err(ManifestError::TooLarge { .. })
        ));
    }
}
