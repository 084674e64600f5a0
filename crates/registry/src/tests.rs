//! The registry through its public operations, on the in-memory store.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use flotilla_store::MemoryStore;
use flotilla_types::arn::Scope;
use flotilla_types::ecr::{self, EcrRequest, EcrResponse};

use super::*;
use crate::manifest::{DOCKER_CONFIG, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

struct Fixture {
    registry: Registry,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let registry = Registry::open(
        store,
        Scope::new("us-east-1", "000000000000"),
        dir.path(),
        "localhost:8440".into(),
    )
    .unwrap();
    Fixture {
        registry,
        _dir: dir,
    }
}

async fn ecr(
    registry: &Registry,
    request: EcrRequest,
) -> Result<EcrResponse, flotilla_types::ApiError> {
    let caller = EcrCaller {
        principal_arn: "arn:aws:iam::000000000000:root",
        now_ms: 1_000_000,
        fresh_id: "upload-1",
    };
    registry.handle_ecr(&caller, request).await
}

async fn create(registry: &Registry, name: &str) {
    let request = ecr::CreateRepositoryRequest {
        repository_name: Some(name.into()),
        ..Default::default()
    };
    ecr(registry, EcrRequest::CreateRepository(request))
        .await
        .unwrap();
}

/// Uploads `content` into `repository` through the distribution path.
async fn push_blob(
    registry: &Registry,
    repository: &str,
    id: &str,
    content: &[u8],
    now_ms: u64,
) -> Digest {
    let digest = Digest::of(content);
    registry.start_upload(repository, id, now_ms).unwrap();
    let upload = registry.upload(repository, id).await.unwrap();
    let mut upload = upload.lock().await;
    upload.write(Bytes::copy_from_slice(content)).await.unwrap();
    registry
        .complete_upload(&mut upload, &digest, now_ms)
        .await
        .unwrap();
    digest
}

/// Pushes a one-layer Docker image and returns its manifest.
async fn push_image(
    registry: &Registry,
    repository: &str,
    tag: &str,
    layer: &[u8],
    now_ms: u64,
) -> (Digest, String) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","n":{now_ms}}}"#);
    let config_digest = push_blob(
        registry,
        repository,
        &format!("c{now_ms}"),
        config.as_bytes(),
        now_ms,
    )
    .await;
    let layer_digest = push_blob(registry, repository, &format!("l{now_ms}"), layer, now_ms).await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let outcome = registry
        .put_manifest(
            repository,
            &Reference::Tag(tag.into()),
            DOCKER_MANIFEST,
            manifest.as_bytes(),
            now_ms,
        )
        .await
        .unwrap();
    (outcome.digest, manifest)
}

#[tokio::test]
async fn push_then_pull_by_tag_and_digest() {
    let f = fixture();
    create(&f.registry, "team/web").await;
    let (digest, manifest) = push_image(&f.registry, "team/web", "v1", b"layer bytes", 1).await;
    let by_tag = f
        .registry
        .get_manifest("team/web", &Reference::Tag("v1".into()), true, 2)
        .unwrap();
    assert_eq!(by_tag.digest, digest);
    assert_eq!(by_tag.bytes, manifest.as_bytes());
    assert_eq!(by_tag.media_type, DOCKER_MANIFEST);
    let by_digest = f
        .registry
        .get_manifest("team/web", &Reference::Digest(digest.clone()), false, 2)
        .unwrap();
    assert_eq!(by_digest.bytes, manifest.as_bytes());
    assert_eq!(
        f.registry.list_tags("team/web", 10, None).unwrap(),
        (vec!["v1".to_owned()], false)
    );
    assert_eq!(f.registry.catalog(10, None).unwrap().0, ["team/web"]);
    // Another repository cannot read the blob until it is mounted there.
    create(&f.registry, "other").await;
    let layer = Digest::of(b"layer bytes");
    assert!(matches!(
        f.registry.blob_size("other", &layer),
        Err(RegistryError::BlobUnknown(_))
    ));
    assert_eq!(
        f.registry
            .mount_blob("other", "team/web", &layer, 3)
            .await
            .unwrap(),
        Some(11)
    );
    assert_eq!(f.registry.blob_size("other", &layer).unwrap(), 11);
    assert_eq!(
        f.registry
            .mount_blob("other", "nope", &Digest::of(b"x"), 3)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn manifests_must_reference_what_the_repository_holds() {
    let f = fixture();
    create(&f.registry, "web").await;
    let missing = Digest::of(b"never pushed");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{missing}","size":12}},"layers":[]}}"#
    );
    let result = f
        .registry
        .put_manifest(
            "web",
            &Reference::Tag("v1".into()),
            OCI_MANIFEST,
            manifest.as_bytes(),
            1,
        )
        .await;
    assert!(matches!(result, Err(RegistryError::ManifestBlobUnknown(d)) if d == missing));
    let wrong = Digest::of(b"other");
    let result = f
        .registry
        .put_manifest(
            "web",
            &Reference::Digest(wrong),
            OCI_MANIFEST,
            manifest.as_bytes(),
            1,
        )
        .await;
    assert!(matches!(result, Err(RegistryError::DigestMismatch { .. })));
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{missing}","size":5}}]}}"#
    );
    let result = f
        .registry
        .put_manifest(
            "web",
            &Reference::Tag("i".into()),
            OCI_INDEX,
            index.as_bytes(),
            1,
        )
        .await;
    assert!(matches!(result, Err(RegistryError::ManifestBlobUnknown(_))));
    assert!(f.registry.images("web").unwrap().is_empty());
    assert!(matches!(
        f.registry
            .put_manifest("nope", &Reference::Tag("v".into()), OCI_MANIFEST, b"{}", 1)
            .await,
        Err(RegistryError::RepositoryNotFound { .. })
    ));
    assert!(matches!(
        f.registry
            .put_manifest(
                "../etc",
                &Reference::Tag("v".into()),
                OCI_MANIFEST,
                b"{}",
                1
            )
            .await,
        Err(RegistryError::NameInvalid(_))
    ));
}

#[tokio::test]
async fn immutable_tags_cannot_move() {
    let f = fixture();
    let request = ecr::CreateRepositoryRequest {
        repository_name: Some("fixed".into()),
        image_tag_mutability: Some(ecr::ImageTagMutability::Immutable),
        ..Default::default()
    };
    ecr(&f.registry, EcrRequest::CreateRepository(request))
        .await
        .unwrap();
    let (first, _) = push_image(&f.registry, "fixed", "v1", b"one", 1).await;
    let config = br#"{"architecture":"amd64","os":"linux","n":2}"#;
    let config_digest = push_blob(&f.registry, "fixed", "c2", config, 2).await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    let result = f
        .registry
        .put_manifest(
            "fixed",
            &Reference::Tag("v1".into()),
            DOCKER_MANIFEST,
            manifest.as_bytes(),
            2,
        )
        .await;
    assert!(matches!(result, Err(RegistryError::TagImmutable { .. })));
    assert_eq!(
        f.registry
            .get_manifest("fixed", &Reference::Tag("v1".into()), false, 3)
            .unwrap()
            .digest,
        first
    );
}

#[tokio::test]
async fn deleting_an_image_takes_its_tags_and_gc_frees_its_blobs() {
    let f = fixture();
    create(&f.registry, "web").await;
    let (digest, _) = push_image(&f.registry, "web", "v1", b"big layer", 1).await;
    // Nothing is collected while the image needs it.
    let report = f.registry.collect_garbage(u64::MAX / 2, 0).await.unwrap();
    assert_eq!(report.blobs_removed, 0);
    f.registry
        .delete_manifest("web", &Reference::Digest(digest))
        .await
        .unwrap();
    assert!(f.registry.list_tags("web", 10, None).unwrap().0.is_empty());
    // Within the grace period the blobs stay (a push may be under way).
    assert_eq!(
        f.registry
            .collect_garbage(2, LAYER_LINK_GRACE_MS)
            .await
            .unwrap()
            .blobs_removed,
        0
    );
    let report = f
        .registry
        .collect_garbage(2 + LAYER_LINK_GRACE_MS, LAYER_LINK_GRACE_MS)
        .await
        .unwrap();
    assert_eq!(report.blobs_removed, 2);
    assert_eq!(report.layer_links_removed, 2);
    assert!(f.registry.blobs().list_blobs().unwrap().is_empty());
}

#[tokio::test]
async fn a_blob_shared_by_two_repositories_lives_while_either_needs_it() {
    let f = fixture();
    create(&f.registry, "a1").await;
    create(&f.registry, "b1").await;
    let (in_a, _) = push_image(&f.registry, "a1", "v1", b"shared layer", 1).await;
    push_image(&f.registry, "b1", "v1", b"shared layer", 2).await;
    f.registry.delete_image("a1", &in_a).await.unwrap();
    f.registry
        .collect_garbage(10 * LAYER_LINK_GRACE_MS, LAYER_LINK_GRACE_MS)
        .await
        .unwrap();
    assert_eq!(
        f.registry
            .blob_size("b1", &Digest::of(b"shared layer"))
            .unwrap(),
        12
    );
}

#[tokio::test]
async fn lifecycle_policies_expire_old_images() {
    let f = fixture();
    create(&f.registry, "web").await;
    for n in 1..=3u64 {
        push_image(
            &f.registry,
            "web",
            &format!("v{n}"),
            format!("layer {n}").as_bytes(),
            n * 1000,
        )
        .await;
    }
    let policy = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
    let request = ecr::PutLifecyclePolicyRequest {
        repository_name: Some("web".into()),
        lifecycle_policy_text: Some(policy.into()),
        ..Default::default()
    };
    ecr(&f.registry, EcrRequest::PutLifecyclePolicy(request))
        .await
        .unwrap();
    let preview = ecr::StartLifecyclePolicyPreviewRequest {
        repository_name: Some("web".into()),
        ..Default::default()
    };
    ecr(
        &f.registry,
        EcrRequest::StartLifecyclePolicyPreview(preview),
    )
    .await
    .unwrap();
    let got = ecr::GetLifecyclePolicyPreviewRequest {
        repository_name: Some("web".into()),
        ..Default::default()
    };
    let EcrResponse::GetLifecyclePolicyPreview(got) =
        ecr(&f.registry, EcrRequest::GetLifecyclePolicyPreview(got))
            .await
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(got.summary.unwrap().expiring_image_total_count, Some(2));
    assert_eq!(
        f.registry.images("web").unwrap().len(),
        3,
        "a preview changes nothing"
    );
    assert_eq!(
        f.registry.apply_lifecycle_policies(10_000).await.unwrap(),
        2
    );
    assert_eq!(f.registry.list_tags("web", 10, None).unwrap().0, ["v3"]);
}

#[tokio::test]
async fn ecr_layer_upload_and_put_image() {
    let f = fixture();
    create(&f.registry, "api").await;
    let start = ecr::InitiateLayerUploadRequest {
        repository_name: Some("api".into()),
        ..Default::default()
    };
    let EcrResponse::InitiateLayerUpload(started) =
        ecr(&f.registry, EcrRequest::InitiateLayerUpload(start))
            .await
            .unwrap()
    else {
        panic!()
    };
    let upload_id = started.upload_id.unwrap();
    use base64::Engine as _;
    let part = |first: i64, data: &[u8]| ecr::UploadLayerPartRequest {
        repository_name: Some("api".into()),
        upload_id: Some(upload_id.clone()),
        part_first_byte: Some(first),
        part_last_byte: Some(first + data.len() as i64 - 1),
        layer_part_blob: Some(base64::engine::general_purpose::STANDARD.encode(data)),
        ..Default::default()
    };
    ecr(
        &f.registry,
        EcrRequest::UploadLayerPart(part(0, b"{\"a\":")),
    )
    .await
    .unwrap();
    // A part that does not follow on is refused and changes nothing.
    let error = ecr(&f.registry, EcrRequest::UploadLayerPart(part(2, b"zz")))
        .await
        .unwrap_err();
    assert_eq!(error.code, "InvalidLayerPartException");
    ecr(&f.registry, EcrRequest::UploadLayerPart(part(5, b"1}")))
        .await
        .unwrap();
    let config_digest = Digest::of(b"{\"a\":1}");
    let complete = ecr::CompleteLayerUploadRequest {
        repository_name: Some("api".into()),
        upload_id: Some(upload_id.clone()),
        layer_digests: Some(vec![config_digest.to_string()]),
        ..Default::default()
    };
    ecr(&f.registry, EcrRequest::CompleteLayerUpload(complete))
        .await
        .unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":7}},"layers":[]}}"#
    );
    let put = ecr::PutImageRequest {
        repository_name: Some("api".into()),
        image_manifest: Some(manifest.clone()),
        image_tag: Some("v1".into()),
        ..Default::default()
    };
    ecr(&f.registry, EcrRequest::PutImage(put.clone()))
        .await
        .unwrap();
    assert_eq!(
        ecr(&f.registry, EcrRequest::PutImage(put))
            .await
            .unwrap_err()
            .code,
        "ImageAlreadyExistsException"
    );
    let describe = ecr::DescribeImagesRequest {
        repository_name: Some("api".into()),
        ..Default::default()
    };
    let EcrResponse::DescribeImages(described) =
        ecr(&f.registry, EcrRequest::DescribeImages(describe))
            .await
            .unwrap()
    else {
        panic!()
    };
    let detail = &described.image_details.unwrap()[0];
    assert_eq!(detail.image_tags.as_deref(), Some(&["v1".to_owned()][..]));
    assert_eq!(
        detail.image_manifest_media_type.as_deref(),
        Some(OCI_MANIFEST)
    );
    assert_eq!(detail.image_size_in_bytes, Some(7));
}

#[tokio::test]
async fn ecr_refusals_use_ecr_codes_and_change_nothing() {
    let f = fixture();
    create(&f.registry, "web").await;
    let cases: Vec<(EcrRequest, &str)> = vec![
        (
            EcrRequest::CreateRepository(ecr::CreateRepositoryRequest {
                repository_name: Some("web".into()),
                ..Default::default()
            }),
            "RepositoryAlreadyExistsException",
        ),
        (
            EcrRequest::CreateRepository(ecr::CreateRepositoryRequest {
                repository_name: Some("../x".into()),
                ..Default::default()
            }),
            "InvalidParameterException",
        ),
        (
            EcrRequest::CreateRepository(ecr::CreateRepositoryRequest::default()),
            "InvalidParameterException",
        ),
        (
            EcrRequest::DescribeImages(ecr::DescribeImagesRequest {
                repository_name: Some("nope".into()),
                ..Default::default()
            }),
            "RepositoryNotFoundException",
        ),
        (
            EcrRequest::GetLifecyclePolicy(ecr::GetLifecyclePolicyRequest {
                repository_name: Some("web".into()),
                ..Default::default()
            }),
            "LifecyclePolicyNotFoundException",
        ),
        (
            EcrRequest::GetRepositoryPolicy(ecr::GetRepositoryPolicyRequest {
                repository_name: Some("web".into()),
                ..Default::default()
            }),
            "RepositoryPolicyNotFoundException",
        ),
        (
            EcrRequest::SetRepositoryPolicy(ecr::SetRepositoryPolicyRequest {
                repository_name: Some("web".into()),
                policy_text: Some("nope".into()),
                ..Default::default()
            }),
            "InvalidParameterException",
        ),
        (
            EcrRequest::PutLifecyclePolicy(ecr::PutLifecyclePolicyRequest {
                repository_name: Some("web".into()),
                lifecycle_policy_text: Some("{}".into()),
                ..Default::default()
            }),
            "InvalidParameterException",
        ),
        (
            EcrRequest::PutImage(ecr::PutImageRequest {
                repository_name: Some("web".into()),
                image_manifest: Some("{not json".into()),
                ..Default::default()
            }),
            "InvalidParameterException",
        ),
        (
            EcrRequest::PutImage(ecr::PutImageRequest {
                repository_name: Some("web".into()),
                image_manifest: Some(
                    r#"{"schemaVersion":2,"mediaType":"application/x-unknown","config":{}}"#.into(),
                ),
                ..Default::default()
            }),
            "UnsupportedImageTypeException",
        ),
        (
            EcrRequest::GetDownloadUrlForLayer(ecr::GetDownloadUrlForLayerRequest {
                repository_name: Some("web".into()),
                layer_digest: Some(Digest::of(b"x").to_string()),
                ..Default::default()
            }),
            "LayersNotFoundException",
        ),
        (
            EcrRequest::UploadLayerPart(ecr::UploadLayerPartRequest {
                repository_name: Some("web".into()),
                upload_id: Some("nope".into()),
                part_first_byte: Some(0),
                part_last_byte: Some(0),
                layer_part_blob: Some("AA==".into()),
                ..Default::default()
            }),
            "UploadNotFoundException",
        ),
        (
            EcrRequest::TagResource(ecr::TagResourceRequest {
                resource_arn: Some("arn:aws:ecs:us-east-1:000000000000:cluster/x".into()),
                tags: Some(vec![]),
            }),
            "InvalidParameterException",
        ),
        (
            EcrRequest::DeleteRepository(ecr::DeleteRepositoryRequest {
                repository_name: Some("web".into()),
                registry_id: Some("123".into()),
                ..Default::default()
            }),
            "InvalidParameterException",
        ),
    ];
    for (request, code) in cases {
        let operation = request.operation();
        let error = ecr(&f.registry, request).await.unwrap_err();
        assert_eq!(error.code, code, "{operation}: {error}");
    }
    assert_eq!(f.registry.catalog(10, None).unwrap().0, ["web"]);
    assert!(f.registry.images("web").unwrap().is_empty());
}

#[tokio::test]
async fn deleting_a_repository_needs_force_when_it_has_images() {
    let f = fixture();
    create(&f.registry, "web").await;
    push_image(&f.registry, "web", "v1", b"x", 1).await;
    let delete = |force| {
        EcrRequest::DeleteRepository(ecr::DeleteRepositoryRequest {
            repository_name: Some("web".into()),
            force: Some(force),
            ..Default::default()
        })
    };
    assert_eq!(
        ecr(&f.registry, delete(false)).await.unwrap_err().code,
        "RepositoryNotEmptyException"
    );
    ecr(&f.registry, delete(true)).await.unwrap();
    // A new repository of the same name starts empty.
    create(&f.registry, "web").await;
    assert!(f.registry.images("web").unwrap().is_empty());
    assert!(matches!(
        f.registry.blob_size("web", &Digest::of(b"x")),
        Err(RegistryError::BlobUnknown(_))
    ));
}

#[tokio::test]
async fn authorization_tokens_work_as_docker_login_passwords() {
    let f = fixture();
    let EcrResponse::GetAuthorizationToken(answer) = ecr(
        &f.registry,
        EcrRequest::GetAuthorizationToken(Default::default()),
    )
    .await
    .unwrap() else {
        panic!()
    };
    let data = &answer.authorization_data.unwrap()[0];
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data.authorization_token.as_ref().unwrap())
        .unwrap();
    let decoded = String::from_utf8(decoded).unwrap();
    let password = decoded.strip_prefix("AWS:").unwrap();
    assert!(f.registry.verify_token(password, 1_000_000).is_ok());
    assert!(f
        .registry
        .verify_token(password, 1_000_000 + token::TOKEN_LIFETIME_MS)
        .is_err());
    assert_eq!(
        data.proxy_endpoint.as_deref(),
        Some("http://localhost:8440")
    );
    assert_eq!(
        data.expires_at,
        Some((1_000_000 + token::TOKEN_LIFETIME_MS) as f64 / 1000.0)
    );
}

#[tokio::test]
async fn referrers_list_manifests_by_subject() {
    let f = fixture();
    create(&f.registry, "web").await;
    let (image, _) = push_image(&f.registry, "web", "v1", b"x", 1).await;
    let empty = push_blob(&f.registry, "web", "e", b"{}", 2).await;
    let sbom = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.sbom","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{DOCKER_MANIFEST}","digest":"{image}","size":1}}}}"#
    );
    let digest = Digest::of(sbom.as_bytes());
    let outcome = f
        .registry
        .put_manifest(
            "web",
            &Reference::Digest(digest.clone()),
            OCI_MANIFEST,
            sbom.as_bytes(),
            3,
        )
        .await
        .unwrap();
    assert_eq!(outcome.subject, Some(image.clone()));
    let found = f.registry.referrers("web", &image, None).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["digest"], digest.to_string());
    assert_eq!(found[0]["artifactType"], "application/vnd.example.sbom");
    assert!(f
        .registry
        .referrers("web", &image, Some("application/other"))
        .unwrap()
        .is_empty());
}
