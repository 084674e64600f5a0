//! The Amazon ECR API (AWS JSON 1.1, `AmazonEC2ContainerRegistry_V20150921`):
//! one handler per operation, over the same repositories, images and blobs
//! that the distribution protocol serves.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use flotilla_store::Txn;
use flotilla_types::arn::Arn;
use flotilla_types::ecr::{self, EcrRequest, EcrResponse};
use flotilla_types::ApiError;

use crate::digest::Digest;
use crate::lifecycle::{self, ImageFacts};
use crate::manifest::DOCKER_CONFIG;
use crate::records::{
    self, keys, Attempt, ImageRecord, PreviewEntry, PreviewRecord, RepositoryRecord,
};
use crate::{names, Reference, Registry, RegistryError, REPOSITORY_ITEMS_MAX};

/// The part size InitiateLayerUpload suggests; UploadLayerPart takes parts
/// up to the edge's ECR body limit.
pub const PART_SIZE_BYTES: i64 = 10 * 1024 * 1024;
/// Default and largest page of the listing operations.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1_000;
/// Most resource tags on one repository, and their sizes.
const RESOURCE_TAGS_MAX: usize = 50;
const TAG_KEY_MAX_CHARS: usize = 128;
const TAG_VALUE_MAX_CHARS: usize = 256;
/// Most image ids or layer digests one batch operation takes.
const BATCH_MAX: usize = 100;
/// Longest repository policy text.
const REPOSITORY_POLICY_MAX_CHARS: usize = 10_240;

/// Who calls and when, as the edge saw it.
pub struct EcrCaller<'a> {
    pub principal_arn: &'a str,
    pub now_ms: u64,
    /// A fresh id, used by the operations that create something.
    pub fresh_id: &'a str,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid_parameter(message)
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn page_size(max_results: Option<i32>) -> Result<usize, ApiError> {
    match max_results {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (1..=PAGE_MAX as i32).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(format!(
            "maxResults {n} must be between 1 and {PAGE_MAX}"
        ))),
    }
}

/// Page tokens are offsets into a listing in a stable order.
fn page_start(next_token: Option<&str>) -> Result<usize, ApiError> {
    match next_token {
        None => Ok(0),
        Some(token) => token.parse().map_err(|_| invalid("nextToken is not valid")),
    }
}

fn page<T: Clone>(items: &[T], start: usize, size: usize) -> (Vec<T>, Option<String>) {
    let end = start.saturating_add(size).min(items.len());
    let taken = items.get(start..end).map(<[T]>::to_vec).unwrap_or_default();
    let next = (end < items.len()).then(|| end.to_string());
    (taken, next)
}

/// A request about one repository: `registryId` and `repositoryName`.
trait NamesRepository {
    fn registry_id(&self) -> Option<&String>;
    fn repository_name(&self) -> Option<&String>;
}

/// The generated request types share these members by name only, so the
/// trait is implemented for each by the same two lines.
macro_rules! names_repository {
    ($($request:ty,)*) => {$(
        impl NamesRepository for $request {
            fn registry_id(&self) -> Option<&String> {
                self.registry_id.as_ref()
            }
            fn repository_name(&self) -> Option<&String> {
                self.repository_name.as_ref()
            }
        }
    )*};
}

names_repository!(
    ecr::DeleteRepositoryRequest,
    ecr::ListImagesRequest,
    ecr::DescribeImagesRequest,
    ecr::BatchGetImageRequest,
    ecr::BatchDeleteImageRequest,
    ecr::PutImageRequest,
    ecr::BatchCheckLayerAvailabilityRequest,
    ecr::InitiateLayerUploadRequest,
    ecr::UploadLayerPartRequest,
    ecr::CompleteLayerUploadRequest,
    ecr::GetDownloadUrlForLayerRequest,
    ecr::PutImageTagMutabilityRequest,
    ecr::PutLifecyclePolicyRequest,
    ecr::GetLifecyclePolicyRequest,
    ecr::DeleteLifecyclePolicyRequest,
    ecr::StartLifecyclePolicyPreviewRequest,
    ecr::GetLifecyclePolicyPreviewRequest,
    ecr::SetRepositoryPolicyRequest,
    ecr::GetRepositoryPolicyRequest,
    ecr::DeleteRepositoryPolicyRequest,
);

/// The two policy texts a repository may hold, which ECR sets, gets and
/// deletes alike.
#[derive(Clone, Copy)]
enum PolicyKind {
    Repository,
    Lifecycle,
}

impl PolicyKind {
    fn text_mut(self, record: &mut RepositoryRecord) -> &mut Option<String> {
        match self {
            PolicyKind::Repository => &mut record.policy_text,
            PolicyKind::Lifecycle => &mut record.lifecycle_policy_text,
        }
    }
}

fn api(error: RegistryError) -> ApiError {
    error.to_api_error()
}

impl Registry {
    /// Carries out one ECR request.
    pub async fn handle_ecr(
        &self,
        caller: &EcrCaller<'_>,
        request: EcrRequest,
    ) -> Result<EcrResponse, ApiError> {
        if let Some(member) = request.missing_required() {
            return Err(invalid(format!(
                "{member} is required for {}",
                request.operation()
            )));
        }
        use EcrRequest as Q;
        use EcrResponse as R;
        Ok(match request {
            Q::CreateRepository(r) => R::CreateRepository(self.create_repository(caller, r).await?),
            Q::DescribeRepositories(r) => R::DescribeRepositories(self.describe_repositories(r)?),
            Q::DeleteRepository(r) => R::DeleteRepository(self.delete_repository(r).await?),
            Q::ListImages(r) => R::ListImages(self.ecr_list_images(r)?),
            Q::DescribeImages(r) => R::DescribeImages(self.describe_images(r)?),
            Q::BatchGetImage(r) => R::BatchGetImage(self.batch_get_image(caller, r)?),
            Q::BatchDeleteImage(r) => R::BatchDeleteImage(self.batch_delete_image(r).await?),
            Q::PutImage(r) => R::PutImage(self.put_image(caller, r).await?),
            Q::BatchCheckLayerAvailability(r) => {
                R::BatchCheckLayerAvailability(self.batch_check_layer_availability(r)?)
            }
            Q::InitiateLayerUpload(r) => {
                R::InitiateLayerUpload(self.initiate_layer_upload(caller, r)?)
            }
            Q::UploadLayerPart(r) => R::UploadLayerPart(self.upload_layer_part(r).await?),
            Q::CompleteLayerUpload(r) => {
                R::CompleteLayerUpload(self.complete_layer_upload(caller, r).await?)
            }
            Q::GetDownloadUrlForLayer(r) => {
                R::GetDownloadUrlForLayer(self.get_download_url_for_layer(caller, r)?)
            }
            Q::GetAuthorizationToken(r) => {
                R::GetAuthorizationToken(self.get_authorization_token(caller, r)?)
            }
            Q::PutImageTagMutability(r) => {
                R::PutImageTagMutability(self.put_image_tag_mutability(r).await?)
            }
            Q::PutLifecyclePolicy(r) => R::PutLifecyclePolicy(self.put_lifecycle_policy(r).await?),
            Q::GetLifecyclePolicy(r) => R::GetLifecyclePolicy(self.get_lifecycle_policy(r)?),
            Q::DeleteLifecyclePolicy(r) => {
                R::DeleteLifecyclePolicy(self.delete_lifecycle_policy(r).await?)
            }
            Q::StartLifecyclePolicyPreview(r) => R::StartLifecyclePolicyPreview(
                self.start_lifecycle_policy_preview(caller, r).await?,
            ),
            Q::GetLifecyclePolicyPreview(r) => {
                R::GetLifecyclePolicyPreview(self.get_lifecycle_policy_preview(r)?)
            }
            Q::SetRepositoryPolicy(r) => {
                R::SetRepositoryPolicy(self.set_repository_policy(r).await?)
            }
            Q::GetRepositoryPolicy(r) => R::GetRepositoryPolicy(self.get_repository_policy(r)?),
            Q::DeleteRepositoryPolicy(r) => {
                R::DeleteRepositoryPolicy(self.delete_repository_policy(r).await?)
            }
            Q::TagResource(r) => R::TagResource(self.tag_resource(r).await?),
            Q::UntagResource(r) => R::UntagResource(self.untag_resource(r).await?),
            Q::ListTagsForResource(r) => R::ListTagsForResource(self.list_tags_for_resource(r)?),
            other => {
                return Err(ApiError::new(
                    "ValidationException",
                    400,
                    format!(
                        "{} is not supported by this Flotilla registry",
                        other.operation()
                    ),
                ))
            }
        })
    }

    fn check_registry_id(&self, registry_id: Option<&String>) -> Result<(), ApiError> {
        match registry_id {
            Some(id) if id != &self.scope.account_id => Err(invalid(format!(
                "registryId {id} is not this registry's; its id is {}",
                self.scope.account_id
            ))),
            _ => Ok(()),
        }
    }

    /// The repository a request names, after checking its registry id.
    fn named(
        &self,
        request: &impl NamesRepository,
    ) -> Result<records::Versioned<RepositoryRecord>, ApiError> {
        self.check_registry_id(request.registry_id())?;
        self.repository(request.repository_name().map_or("", String::as_str))
            .map_err(api)
    }

    fn repository_shape(&self, record: &RepositoryRecord) -> ecr::Repository {
        ecr::Repository {
            repository_arn: Some(self.repository_arn(&record.name)),
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(record.name.clone()),
            repository_uri: Some(self.repository_uri(&record.name)),
            created_at: Some(seconds(record.created_at_ms)),
            image_tag_mutability: ecr::ImageTagMutability::ALL
                .iter()
                .copied()
                .find(|m| m.as_str() == record.tag_mutability),
            image_scanning_configuration: Some(record.scanning.clone()),
            encryption_configuration: Some(record.encryption.clone()),
            ..Default::default()
        }
    }

    fn repository_arn(&self, name: &str) -> String {
        self.scope.arn("ecr", &format!("repository/{name}"))
    }

    async fn update_repository<T>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut RepositoryRecord) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let key = keys::repository(name);
        records::mutate(&*self.store, || {
            let mut repo = self.repository(name).map_err(api)?;
            let answer = change(&mut repo.value)?;
            let txn = Txn::new()
                .expect(key.clone(), repo.revision)
                .put(key.clone(), records::encode(&repo.value));
            Ok::<_, ApiError>(Attempt::Commit(txn, answer))
        })
        .await
    }

    // ---- repositories ----------------------------------------------------

    async fn create_repository(
        &self,
        caller: &EcrCaller<'_>,
        request: ecr::CreateRepositoryRequest,
    ) -> Result<ecr::CreateRepositoryResponse, ApiError> {
        self.check_registry_id(request.registry_id.as_ref())?;
        let name = request.repository_name.unwrap_or_default();
        if !names::valid_repository_name(&name) {
            return Err(invalid(format!(
                "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must satisfy regular expression \
                 '(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*' and be 2 to 256 characters': {:?}",
                name.chars().take(300).collect::<String>()
            )));
        }
        let tags = request.tags.unwrap_or_default();
        check_resource_tags(&tags)?;
        let encryption = request
            .encryption_configuration
            .unwrap_or(ecr::EncryptionConfiguration {
                encryption_type: Some(ecr::EncryptionType::Aes256),
                kms_key: None,
            });
        if encryption.encryption_type == Some(ecr::EncryptionType::Aes256)
            && encryption.kms_key.is_some()
        {
            return Err(invalid("kmsKey can only be given with encryptionType KMS"));
        }
        let mutability = request
            .image_tag_mutability
            .unwrap_or(ecr::ImageTagMutability::Mutable);
        let record = RepositoryRecord {
            name: name.clone(),
            created_at_ms: caller.now_ms,
            tag_mutability: mutability.as_str().to_owned(),
            encryption,
            scanning: request.image_scanning_configuration.unwrap_or(
                ecr::ImageScanningConfiguration {
                    scan_on_push: Some(false),
                },
            ),
            resource_tags: tags,
            policy_text: None,
            lifecycle_policy_text: None,
            lifecycle_evaluated_at_ms: None,
            lifecycle_preview: None,
        };
        // Leftovers of a repository of this name whose deletion was cut short
        // must not reappear in the new one.
        self.remove_contents(&name).await.map_err(api)?;
        let key = keys::repository(&name);
        records::mutate(&*self.store, || {
            if self.store.get(&key).map_err(records::store_error)?.is_some() {
                return Err(ApiError::new(
                    "RepositoryAlreadyExistsException",
                    400,
                    format!(
                        "The repository with name '{name}' already exists in the registry with id '{}'",
                        self.scope.account_id
                    ),
                ));
            }
            let txn = Txn::new().expect(key.clone(), 0).put(key.clone(), records::encode(&record));
            Ok(Attempt::Commit(txn, ()))
        })
        .await?;
        Ok(ecr::CreateRepositoryResponse {
            repository: Some(self.repository_shape(&record)),
        })
    }

    fn describe_repositories(
        &self,
        request: ecr::DescribeRepositoriesRequest,
    ) -> Result<ecr::DescribeRepositoriesResponse, ApiError> {
        self.check_registry_id(request.registry_id.as_ref())?;
        let size = page_size(request.max_results)?;
        let records: Vec<RepositoryRecord> = match &request.repository_names {
            Some(names) => {
                if names.is_empty() || names.len() > BATCH_MAX {
                    return Err(invalid(format!(
                        "repositoryNames must list 1 to {BATCH_MAX} names"
                    )));
                }
                if request.next_token.is_some() || request.max_results.is_some() {
                    return Err(invalid(
                        "maxResults and nextToken cannot be used with repositoryNames",
                    ));
                }
                names
                    .iter()
                    .map(|name| self.repository(name).map(|r| r.value).map_err(api))
                    .collect::<Result<_, _>>()?
            }
            None => records::list_all(&*self.store, keys::REPOSITORIES, REPOSITORY_ITEMS_MAX)?
                .iter()
                .map(records::decode)
                .collect::<Result<_, _>>()?,
        };
        let (taken, next_token) = page(&records, page_start(request.next_token.as_deref())?, size);
        Ok(ecr::DescribeRepositoriesResponse {
            repositories: Some(taken.iter().map(|r| self.repository_shape(r)).collect()),
            next_token,
        })
    }

    async fn delete_repository(
        &self,
        request: ecr::DeleteRepositoryRequest,
    ) -> Result<ecr::DeleteRepositoryResponse, ApiError> {
        let repo = self.named(&request)?;
        let name = repo.value.name.clone();
        let key = keys::repository(&name);
        let force = request.force == Some(true);
        let deleted = records::mutate(&*self.store, || {
            let repo = self.repository(&name).map_err(api)?;
            if !force {
                let images = self.store.list(&keys::images_of(&name), None, 1).map_err(records::store_error)?;
                if !images.entries.is_empty() {
                    return Err(ApiError::new(
                        "RepositoryNotEmptyException",
                        400,
                        format!(
                            "The repository with name '{name}' in registry with id '{}' cannot be deleted because it still contains images",
                            self.scope.account_id
                        ),
                    ));
                }
            }
            let txn = Txn::new().expect(key.clone(), repo.revision).delete(key.clone());
            Ok(Attempt::Commit(txn, repo.value))
        })
        .await?;
        // The repository is gone for every request from here on; its images,
        // tags and layer links go in bounded batches (and, if this is cut
        // short, at the next garbage collection).
        self.remove_contents(&name).await.map_err(api)?;
        Ok(ecr::DeleteRepositoryResponse {
            repository: Some(self.repository_shape(&deleted)),
        })
    }

    // ---- images ----------------------------------------------------------

    /// Every image of a repository with its tags, newest push first.
    fn images_with_tags(
        &self,
        repository: &str,
    ) -> Result<Vec<(ImageRecord, Vec<String>)>, RegistryError> {
        let tags = self.tag_map(repository)?;
        let mut images: Vec<(ImageRecord, Vec<String>)> = self
            .images(repository)?
            .into_iter()
            .map(|image| {
                let own = tags
                    .iter()
                    .filter(|(_, d, _)| d == &image.digest)
                    .map(|(t, _, _)| t.clone())
                    .collect();
                (image, own)
            })
            .collect();
        images.sort_by(|a, b| {
            b.0.pushed_at_ms
                .cmp(&a.0.pushed_at_ms)
                .then_with(|| a.0.digest.cmp(&b.0.digest))
        });
        Ok(images)
    }

    fn ecr_list_images(
        &self,
        request: ecr::ListImagesRequest,
    ) -> Result<ecr::ListImagesResponse, ApiError> {
        let repo = self.named(&request)?;
        let size = page_size(request.max_results)?;
        let status = request
            .filter
            .and_then(|f| f.tag_status)
            .unwrap_or(ecr::TagStatus::Any);
        let mut ids = Vec::new();
        for (image, tags) in self.images_with_tags(&repo.value.name).map_err(api)? {
            if tags.is_empty() {
                if status != ecr::TagStatus::Tagged {
                    ids.push(ecr::ImageIdentifier {
                        image_digest: Some(image.digest.to_string()),
                        image_tag: None,
                    });
                }
            } else if status != ecr::TagStatus::Untagged {
                ids.extend(tags.into_iter().map(|tag| ecr::ImageIdentifier {
                    image_digest: Some(image.digest.to_string()),
                    image_tag: Some(tag),
                }));
            }
        }
        let (image_ids, next_token) = page(&ids, page_start(request.next_token.as_deref())?, size);
        Ok(ecr::ListImagesResponse {
            image_ids: Some(image_ids),
            next_token,
        })
    }

    fn image_detail(
        &self,
        repository: &str,
        image: &ImageRecord,
        tags: &[String],
    ) -> ecr::ImageDetail {
        let artifact = image.artifact_type.clone().or_else(|| {
            (image.media_type == crate::manifest::DOCKER_MANIFEST).then(|| DOCKER_CONFIG.to_owned())
        });
        ecr::ImageDetail {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(repository.to_owned()),
            image_digest: Some(image.digest.to_string()),
            image_tags: (!tags.is_empty()).then(|| tags.to_vec()),
            image_size_in_bytes: Some(i64::try_from(image.size_bytes).unwrap_or(i64::MAX)),
            image_pushed_at: Some(seconds(image.pushed_at_ms)),
            image_manifest_media_type: Some(image.media_type.clone()),
            artifact_media_type: artifact,
            last_recorded_pull_time: image.last_pull_ms.map(seconds),
            subject_manifest_digest: image.subject.as_ref().map(Digest::to_string),
            ..Default::default()
        }
    }

    fn describe_images(
        &self,
        request: ecr::DescribeImagesRequest,
    ) -> Result<ecr::DescribeImagesResponse, ApiError> {
        let repo = self.named(&request)?;
        let name = repo.value.name;
        let images = self.images_with_tags(&name).map_err(api)?;
        let size = page_size(request.max_results)?;
        let selected: Vec<&(ImageRecord, Vec<String>)> = match &request.image_ids {
            Some(ids) => {
                if ids.is_empty() || ids.len() > BATCH_MAX {
                    return Err(invalid(format!(
                        "imageIds must list 1 to {BATCH_MAX} images"
                    )));
                }
                let mut found = Vec::new();
                for id in ids {
                    let image = find_image(&images, id).map_err(|(_, reason)| {
                        ApiError::new(
                            "ImageNotFoundException",
                            400,
                            format!("{reason} in the repository with name '{name}'"),
                        )
                    })?;
                    if !found
                        .iter()
                        .any(|f: &&(ImageRecord, Vec<String>)| f.0.digest == image.0.digest)
                    {
                        found.push(image);
                    }
                }
                found
            }
            None => {
                let status = request
                    .filter
                    .and_then(|f| f.tag_status)
                    .unwrap_or(ecr::TagStatus::Any);
                images
                    .iter()
                    .filter(|(_, tags)| match status {
                        ecr::TagStatus::Tagged => !tags.is_empty(),
                        ecr::TagStatus::Untagged => tags.is_empty(),
                        ecr::TagStatus::Any => true,
                    })
                    .collect()
            }
        };
        let (taken, next_token) = page(&selected, page_start(request.next_token.as_deref())?, size);
        Ok(ecr::DescribeImagesResponse {
            image_details: Some(
                taken
                    .iter()
                    .map(|(image, tags)| self.image_detail(&name, image, tags))
                    .collect(),
            ),
            next_token,
        })
    }

    fn batch_get_image(
        &self,
        caller: &EcrCaller<'_>,
        request: ecr::BatchGetImageRequest,
    ) -> Result<ecr::BatchGetImageResponse, ApiError> {
        let repo = self.named(&request)?;
        let name = repo.value.name;
        let ids = request.image_ids.unwrap_or_default();
        if ids.is_empty() || ids.len() > BATCH_MAX {
            return Err(invalid(format!(
                "imageIds must list 1 to {BATCH_MAX} images"
            )));
        }
        let images = self.images_with_tags(&name).map_err(api)?;
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for id in ids {
            match find_image(&images, &id) {
                Ok((image, _)) => {
                    if let Ok(digest) = Digest::parse(&image.digest.to_string()) {
                        // Fetching a manifest through the API is a pull too.
                        let _ = self.get_manifest(
                            &name,
                            &Reference::Digest(digest),
                            true,
                            caller.now_ms,
                        );
                    }
                    found.push(ecr::Image {
                        registry_id: Some(self.scope.account_id.clone()),
                        repository_name: Some(name.clone()),
                        image_id: Some(ecr::ImageIdentifier {
                            image_digest: Some(image.digest.to_string()),
                            image_tag: id.image_tag.clone(),
                        }),
                        image_manifest: Some(image.manifest.clone()),
                        image_manifest_media_type: Some(image.media_type.clone()),
                    })
                }
                Err((code, reason)) => failures.push(ecr::ImageFailure {
                    image_id: Some(id),
                    failure_code: Some(code),
                    failure_reason: Some(reason),
                }),
            }
        }
        Ok(ecr::BatchGetImageResponse {
            images: Some(found),
            failures: Some(failures),
        })
    }

    async fn batch_delete_image(
        &self,
        request: ecr::BatchDeleteImageRequest,
    ) -> Result<ecr::BatchDeleteImageResponse, ApiError> {
        let repo = self.named(&request)?;
        let name = repo.value.name;
        let ids = request.image_ids.unwrap_or_default();
        if ids.is_empty() || ids.len() > BATCH_MAX {
            return Err(invalid(format!(
                "imageIds must list 1 to {BATCH_MAX} images"
            )));
        }
        let mut deleted = Vec::new();
        let mut failures = Vec::new();
        for id in ids {
            let images = self.images_with_tags(&name).map_err(api)?;
            let (image, tags) = match find_image(&images, &id) {
                Ok(found) => found.clone(),
                Err((code, reason)) => {
                    failures.push(ecr::ImageFailure {
                        image_id: Some(id),
                        failure_code: Some(code),
                        failure_reason: Some(reason),
                    });
                    continue;
                }
            };
            // A tag alone removes that tag; the image goes with its last tag.
            let result = match (&id.image_digest, &id.image_tag) {
                (None, Some(tag)) if tags.len() > 1 => self
                    .delete_manifest(&name, &Reference::Tag(tag.clone()))
                    .await
                    .map(|()| vec![tag.clone()]),
                _ => self
                    .delete_image(&name, &image.digest)
                    .await
                    .map(|()| tags.clone()),
            };
            match result {
                Ok(removed_tags) if removed_tags.is_empty() => deleted.push(ecr::ImageIdentifier {
                    image_digest: Some(image.digest.to_string()),
                    image_tag: None,
                }),
                Ok(removed_tags) => {
                    deleted.extend(removed_tags.into_iter().map(|tag| ecr::ImageIdentifier {
                        image_digest: Some(image.digest.to_string()),
                        image_tag: Some(tag),
                    }))
                }
                Err(RegistryError::ReferencedByIndex(digest)) => failures.push(ecr::ImageFailure {
                    image_id: Some(id),
                    failure_code: Some(ecr::ImageFailureCode::ImageReferencedByManifestList),
                    failure_reason: Some(format!(
                        "image {digest} is referenced by a manifest list"
                    )),
                }),
                Err(RegistryError::ManifestUnknown(_)) => failures.push(ecr::ImageFailure {
                    image_id: Some(id),
                    failure_code: Some(ecr::ImageFailureCode::ImageNotFound),
                    failure_reason: Some("Requested image not found".to_owned()),
                }),
                Err(other) => return Err(api(other)),
            }
        }
        Ok(ecr::BatchDeleteImageResponse {
            image_ids: Some(deleted),
            failures: Some(failures),
        })
    }

    async fn put_image(
        &self,
        caller: &EcrCaller<'_>,
        request: ecr::PutImageRequest,
    ) -> Result<ecr::PutImageResponse, ApiError> {
        let repo = self.named(&request)?;
        let name = repo.value.name;
        let manifest = request.image_manifest.unwrap_or_default();
        let digest = Digest::of(manifest.as_bytes());
        if let Some(named) = &request.image_digest {
            let named =
                Digest::parse(named).map_err(|error| invalid(format!("imageDigest: {error}")))?;
            if named != digest {
                return Err(api(RegistryError::DigestMismatch {
                    expected: named,
                    actual: digest,
                }));
            }
        }
        let reference = match &request.image_tag {
            Some(tag) if !names::valid_tag(tag) => {
                return Err(invalid(format!("imageTag {tag:?} is not a valid tag")))
            }
            Some(tag) => Reference::Tag(tag.clone()),
            None => Reference::Digest(digest.clone()),
        };
        let media_type = request.image_manifest_media_type.unwrap_or_default();
        let outcome = self
            .put_manifest(
                &name,
                &reference,
                &media_type,
                manifest.as_bytes(),
                caller.now_ms,
            )
            .await
            .map_err(api)?;
        if !outcome.changed {
            return Err(ApiError::new(
                "ImageAlreadyExistsException",
                400,
                format!(
                    "Image with digest '{digest}'{} already exists in the repository with name '{name}' in registry with id '{}'",
                    request.image_tag.as_ref().map(|t| format!(" and tag '{t}'")).unwrap_or_default(),
                    self.scope.account_id
                ),
            ));
        }
        let stored = self
            .get_manifest(
                &name,
                &Reference::Digest(digest.clone()),
                false,
                caller.now_ms,
            )
            .map_err(api)?;
        Ok(ecr::PutImageResponse {
            image: Some(ecr::Image {
                registry_id: Some(self.scope.account_id.clone()),
                repository_name: Some(name),
                image_id: Some(ecr::ImageIdentifier {
                    image_digest: Some(digest.to_string()),
                    image_tag: request.image_tag,
                }),
                image_manifest: Some(manifest),
                image_manifest_media_type: Some(stored.media_type),
            }),
        })
    }

    // ---- layers ----------------------------------------------------------

    fn batch_check_layer_availability(
        &self,
        request: ecr::BatchCheckLayerAvailabilityRequest,
    ) -> Result<ecr::BatchCheckLayerAvailabilityResponse, ApiError> {
        let repo = self.named(&request)?;
        let digests = request.layer_digests.unwrap_or_default();
        if digests.is_empty() || digests.len() > BATCH_MAX {
            return Err(invalid(format!(
                "layerDigests must list 1 to {BATCH_MAX} digests"
            )));
        }
        let mut layers = Vec::new();
        let mut failures = Vec::new();
        for text in digests {
            let Ok(digest) = Digest::parse(&text) else {
                let code = if text.is_empty() {
                    ecr::LayerFailureCode::MissingLayerDigest
                } else {
                    ecr::LayerFailureCode::InvalidLayerDigest
                };
                failures.push(ecr::LayerFailure {
                    layer_digest: Some(text),
                    failure_code: Some(code),
                    failure_reason: Some("the layer digest is not a sha256 digest".to_owned()),
                });
                continue;
            };
            let size = match self.blob_size(&repo.value.name, &digest) {
                Ok(size) => Some(size),
                Err(RegistryError::BlobUnknown(_)) => None,
                Err(other) => return Err(api(other)),
            };
            layers.push(ecr::Layer {
                layer_digest: Some(text),
                layer_availability: Some(if size.is_some() {
                    ecr::LayerAvailability::Available
                } else {
                    ecr::LayerAvailability::Unavailable
                }),
                layer_size: size.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
                media_type: None,
            });
        }
        Ok(ecr::BatchCheckLayerAvailabilityResponse {
            layers: Some(layers),
            failures: Some(failures),
        })
    }

    fn initiate_layer_upload(
        &self,
        caller: &EcrCaller<'_>,
        request: ecr::InitiateLayerUploadRequest,
    ) -> Result<ecr::InitiateLayerUploadResponse, ApiError> {
        let repo = self.named(&request)?;
        self.start_upload(&repo.value.name, caller.fresh_id, caller.now_ms)
            .map_err(api)?;
        Ok(ecr::InitiateLayerUploadResponse {
            upload_id: Some(caller.fresh_id.to_owned()),
            part_size: Some(PART_SIZE_BYTES),
        })
    }

    async fn upload_layer_part(
        &self,
        request: ecr::UploadLayerPartRequest,
    ) -> Result<ecr::UploadLayerPartResponse, ApiError> {
        let repo = self.named(&request)?;
        let name = repo.value.name;
        let upload_id = request.upload_id.unwrap_or_default();
        let data = STANDARD
            .decode(request.layer_part_blob.unwrap_or_default())
            .map_err(|_| invalid("layerPartBlob is not valid base64"))?;
        let first = request.part_first_byte.unwrap_or_default();
        let last = request.part_last_byte.unwrap_or_default();
        let upload = self.upload(&name, &upload_id).await.map_err(api)?;
        let mut upload = upload.lock().await;
        let expected_length = last.checked_sub(first).and_then(|d| d.checked_add(1));
        if first < 0 || u64::try_from(first).ok() != Some(upload.size()) {
            return Err(api(RegistryError::RangeInvalid {
                upload: upload_id,
                size: upload.size(),
                first_byte: u64::try_from(first).unwrap_or(0),
            }));
        }
        if expected_length != i64::try_from(data.len()).ok() || data.is_empty() {
            return Err(ApiError::new(
                "InvalidLayerPartException",
                400,
                format!("the part holds {} bytes, but partFirstByte {first} and partLastByte {last} say otherwise", data.len()),
            ));
        }
        upload
            .write(Bytes::from(data))
            .await
            .map_err(|e| api(e.into()))?;
        Ok(ecr::UploadLayerPartResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(name),
            upload_id: Some(upload_id),
            last_byte_received: Some(i64::try_from(upload.size()).unwrap_or(i64::MAX) - 1),
        })
    }

    async fn complete_layer_upload(
        &self,
        caller: &EcrCaller<'_>,
        request: ecr::CompleteLayerUploadRequest,
    ) -> Result<ecr::CompleteLayerUploadResponse, ApiError> {
        let repo = self.named(&request)?;
        let name = repo.value.name;
        let upload_id = request.upload_id.unwrap_or_default();
        let digests = request.layer_digests.unwrap_or_default();
        let [digest] = digests.as_slice() else {
            return Err(invalid("layerDigests must name exactly one digest"));
        };
        let digest =
            Digest::parse(digest).map_err(|error| invalid(format!("layerDigests: {error}")))?;
        let upload = self.upload(&name, &upload_id).await.map_err(api)?;
        let mut upload = upload.lock().await;
        if upload.size() == 0 {
            return Err(ApiError::new(
                "EmptyUploadException",
                400,
                format!("upload {upload_id} holds no data"),
            ));
        }
        if self.blob_size(&name, &digest).is_ok() {
            self.cancel_upload(&mut upload).await;
            return Err(ApiError::new(
                "LayerAlreadyExistsException",
                400,
                format!("the layer {digest} already exists in the repository with name '{name}'"),
            ));
        }
        match self
            .complete_upload(&mut upload, &digest, caller.now_ms)
            .await
        {
            Ok(_) => {}
            Err(RegistryError::DigestMismatch { expected, actual }) => {
                return Err(ApiError::new(
                    "InvalidLayerException",
                    400,
                    format!("the uploaded layer's digest is {actual}, not {expected}"),
                ))
            }
            Err(other) => return Err(api(other)),
        }
        Ok(ecr::CompleteLayerUploadResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(name),
            upload_id: Some(upload_id),
            layer_digest: Some(digest.to_string()),
        })
    }

    fn get_download_url_for_layer(
        &self,
        caller: &EcrCaller<'_>,
        request: ecr::GetDownloadUrlForLayerRequest,
    ) -> Result<ecr::GetDownloadUrlForLayerResponse, ApiError> {
        let repo = self.named(&request)?;
        let name = repo.value.name;
        let text = request.layer_digest.unwrap_or_default();
        let digest =
            Digest::parse(&text).map_err(|error| invalid(format!("layerDigest: {error}")))?;
        match self.blob_size(&name, &digest) {
            Ok(_) => {}
            Err(RegistryError::BlobUnknown(_)) => {
                return Err(ApiError::new(
                    "LayersNotFoundException",
                    400,
                    format!(
                        "the layer {digest} does not exist in the repository with name '{name}'"
                    ),
                ))
            }
            Err(other) => return Err(api(other)),
        }
        let referenced = self
            .images(&name)
            .map_err(api)?
            .iter()
            .any(|image| image.blobs.contains(&digest));
        if !referenced {
            return Err(ApiError::new(
                "LayerInaccessibleException",
                400,
                format!("the layer {digest} is not referenced by any image in the repository with name '{name}'"),
            ));
        }
        let (token, _) = self.issue_token(caller.principal_arn, caller.now_ms);
        Ok(ecr::GetDownloadUrlForLayerResponse {
            download_url: Some(format!(
                "http://{}/v2/{name}/blobs/{digest}?token={token}",
                self.host
            )),
            layer_digest: Some(digest.to_string()),
        })
    }

    fn get_authorization_token(
        &self,
        caller: &EcrCaller<'_>,
        request: ecr::GetAuthorizationTokenRequest,
    ) -> Result<ecr::GetAuthorizationTokenResponse, ApiError> {
        for id in request.registry_ids.iter().flatten() {
            self.check_registry_id(Some(id))?;
        }
        let (token, expires_at_ms) = self.issue_token(caller.principal_arn, caller.now_ms);
        Ok(ecr::GetAuthorizationTokenResponse {
            authorization_data: Some(vec![ecr::AuthorizationData {
                authorization_token: Some(STANDARD.encode(format!("AWS:{token}"))),
                expires_at: Some(seconds(expires_at_ms)),
                proxy_endpoint: Some(format!("http://{}", self.host)),
            }]),
        })
    }

    async fn put_image_tag_mutability(
        &self,
        request: ecr::PutImageTagMutabilityRequest,
    ) -> Result<ecr::PutImageTagMutabilityResponse, ApiError> {
        let repo = self.named(&request)?;
        let mutability = request
            .image_tag_mutability
            .unwrap_or(ecr::ImageTagMutability::Mutable);
        self.update_repository(&repo.value.name, |record| {
            record.tag_mutability = mutability.as_str().to_owned();
            Ok(())
        })
        .await?;
        Ok(ecr::PutImageTagMutabilityResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(repo.value.name),
            image_tag_mutability: Some(mutability),
            image_tag_mutability_exclusion_filters: None,
        })
    }

    // ---- policy texts (repository and lifecycle policies alike) ----------

    fn no_policy(&self, kind: PolicyKind, name: &str) -> ApiError {
        let (code, what) = match kind {
            PolicyKind::Repository => ("RepositoryPolicyNotFoundException", "Repository policy"),
            PolicyKind::Lifecycle => ("LifecyclePolicyNotFoundException", "Lifecycle policy"),
        };
        ApiError::new(
            code,
            400,
            format!(
                "{what} does not exist for the repository with name '{name}' in the registry with id '{}'",
                self.scope.account_id
            ),
        )
    }

    /// A repository's policy text of one kind, or ECR's error for its absence.
    fn policy_text(&self, kind: PolicyKind, repo: &RepositoryRecord) -> Result<String, ApiError> {
        let text = match kind {
            PolicyKind::Repository => &repo.policy_text,
            PolicyKind::Lifecycle => &repo.lifecycle_policy_text,
        };
        text.clone().ok_or_else(|| self.no_policy(kind, &repo.name))
    }

    /// Stores a policy text its operation has checked.
    async fn put_policy_text(
        &self,
        kind: PolicyKind,
        name: &str,
        text: &str,
    ) -> Result<(), ApiError> {
        self.update_repository(name, |record| {
            *kind.text_mut(record) = Some(text.to_owned());
            Ok(())
        })
        .await
    }

    /// Removes a policy text, answering it and, for a lifecycle policy, when
    /// it was last evaluated (which goes with it).
    async fn take_policy_text(
        &self,
        kind: PolicyKind,
        name: &str,
    ) -> Result<(String, Option<u64>), ApiError> {
        self.update_repository(name, |record| {
            let text = kind
                .text_mut(record)
                .take()
                .ok_or_else(|| self.no_policy(kind, name))?;
            let evaluated = match kind {
                PolicyKind::Repository => None,
                PolicyKind::Lifecycle => record.lifecycle_evaluated_at_ms.take(),
            };
            Ok((text, evaluated))
        })
        .await
    }

    // ---- lifecycle policies ----------------------------------------------

    async fn put_lifecycle_policy(
        &self,
        request: ecr::PutLifecyclePolicyRequest,
    ) -> Result<ecr::PutLifecyclePolicyResponse, ApiError> {
        let repo = self.named(&request)?;
        let text = request.lifecycle_policy_text.unwrap_or_default();
        lifecycle::parse(&text).map_err(|message| {
            invalid(format!(
                "Invalid parameter at 'LifecyclePolicyText': {message}"
            ))
        })?;
        self.put_policy_text(PolicyKind::Lifecycle, &repo.value.name, &text)
            .await?;
        Ok(ecr::PutLifecyclePolicyResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(repo.value.name),
            lifecycle_policy_text: Some(text),
        })
    }

    fn get_lifecycle_policy(
        &self,
        request: ecr::GetLifecyclePolicyRequest,
    ) -> Result<ecr::GetLifecyclePolicyResponse, ApiError> {
        let repo = self.named(&request)?.value;
        let text = self.policy_text(PolicyKind::Lifecycle, &repo)?;
        Ok(ecr::GetLifecyclePolicyResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(repo.name),
            lifecycle_policy_text: Some(text),
            last_evaluated_at: repo.lifecycle_evaluated_at_ms.map(seconds),
        })
    }

    async fn delete_lifecycle_policy(
        &self,
        request: ecr::DeleteLifecyclePolicyRequest,
    ) -> Result<ecr::DeleteLifecyclePolicyResponse, ApiError> {
        let repo = self.named(&request)?.value;
        let (text, evaluated) = self
            .take_policy_text(PolicyKind::Lifecycle, &repo.name)
            .await?;
        Ok(ecr::DeleteLifecyclePolicyResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(repo.name),
            lifecycle_policy_text: Some(text),
            last_evaluated_at: evaluated.map(seconds),
        })
    }

    /// What a policy would expire in a repository now.
    pub(crate) fn evaluate_policy(
        &self,
        repository: &str,
        policy: &lifecycle::Policy,
        now_ms: u64,
    ) -> Result<Vec<PreviewEntry>, RegistryError> {
        let images = self.images_with_tags(repository)?;
        let facts: Vec<ImageFacts> = images
            .iter()
            .map(|(image, tags)| ImageFacts {
                digest: image.digest.clone(),
                tags: tags.clone(),
                pushed_at_ms: image.pushed_at_ms,
            })
            .collect();
        Ok(lifecycle::evaluate(policy, &facts, now_ms)
            .into_iter()
            .filter_map(|expiry| {
                let (image, tags) = images
                    .iter()
                    .find(|(image, _)| image.digest == expiry.digest)?;
                Some(PreviewEntry {
                    digest: expiry.digest,
                    tags: tags.clone(),
                    pushed_at_ms: image.pushed_at_ms,
                    rule_priority: expiry.rule_priority,
                })
            })
            .collect())
    }

    async fn start_lifecycle_policy_preview(
        &self,
        caller: &EcrCaller<'_>,
        request: ecr::StartLifecyclePolicyPreviewRequest,
    ) -> Result<ecr::StartLifecyclePolicyPreviewResponse, ApiError> {
        let repo = self.named(&request)?.value;
        let text = match request.lifecycle_policy_text {
            Some(text) => text,
            None => self.policy_text(PolicyKind::Lifecycle, &repo)?,
        };
        let policy = lifecycle::parse(&text).map_err(|message| {
            invalid(format!(
                "Invalid parameter at 'LifecyclePolicyText': {message}"
            ))
        })?;
        let expiring = self
            .evaluate_policy(&repo.name, &policy, caller.now_ms)
            .map_err(api)?;
        let preview = PreviewRecord {
            policy_text: text.clone(),
            expiring,
        };
        self.update_repository(&repo.name, |record| {
            record.lifecycle_preview = Some(preview.clone());
            Ok(())
        })
        .await?;
        Ok(ecr::StartLifecyclePolicyPreviewResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(repo.name),
            lifecycle_policy_text: Some(text),
            status: Some(ecr::LifecyclePolicyPreviewStatus::Complete),
        })
    }

    fn get_lifecycle_policy_preview(
        &self,
        request: ecr::GetLifecyclePolicyPreviewRequest,
    ) -> Result<ecr::GetLifecyclePolicyPreviewResponse, ApiError> {
        let repo = self.named(&request)?.value;
        let preview = repo.lifecycle_preview.clone().ok_or_else(|| {
            ApiError::new(
                "LifecyclePolicyPreviewNotFoundException",
                400,
                format!(
                    "There is no lifecycle policy preview for the repository with name '{}'",
                    repo.name
                ),
            )
        })?;
        let status = request
            .filter
            .and_then(|f| f.tag_status)
            .unwrap_or(ecr::TagStatus::Any);
        let results: Vec<ecr::LifecyclePolicyPreviewResult> = preview
            .expiring
            .iter()
            .filter(|entry| match status {
                ecr::TagStatus::Tagged => !entry.tags.is_empty(),
                ecr::TagStatus::Untagged => entry.tags.is_empty(),
                ecr::TagStatus::Any => true,
            })
            .filter(|entry| {
                request.image_ids.as_ref().is_none_or(|ids| {
                    ids.iter().any(|id| {
                        id.image_digest.as_deref() == Some(&entry.digest.to_string())
                            || id
                                .image_tag
                                .as_ref()
                                .is_some_and(|t| entry.tags.contains(t))
                    })
                })
            })
            .map(|entry| ecr::LifecyclePolicyPreviewResult {
                image_tags: (!entry.tags.is_empty()).then(|| entry.tags.clone()),
                image_digest: Some(entry.digest.to_string()),
                image_pushed_at: Some(seconds(entry.pushed_at_ms)),
                action: Some(ecr::LifecyclePolicyRuleAction {
                    r#type: Some(ecr::ImageActionType::Expire),
                    target_storage_class: None,
                }),
                applied_rule_priority: i32::try_from(entry.rule_priority).ok(),
                storage_class: None,
            })
            .collect();
        let size = page_size(request.max_results)?;
        let (taken, next_token) = page(&results, page_start(request.next_token.as_deref())?, size);
        Ok(ecr::GetLifecyclePolicyPreviewResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(repo.name),
            lifecycle_policy_text: Some(preview.policy_text),
            status: Some(ecr::LifecyclePolicyPreviewStatus::Complete),
            next_token,
            preview_results: Some(taken),
            summary: Some(ecr::LifecyclePolicyPreviewSummary {
                expiring_image_total_count: i32::try_from(results.len()).ok(),
                transitioning_image_total_counts: None,
            }),
        })
    }

    // ---- repository policies ---------------------------------------------

    async fn set_repository_policy(
        &self,
        request: ecr::SetRepositoryPolicyRequest,
    ) -> Result<ecr::SetRepositoryPolicyResponse, ApiError> {
        let repo = self.named(&request)?.value;
        let text = request.policy_text.unwrap_or_default();
        check_repository_policy(&text)?;
        self.put_policy_text(PolicyKind::Repository, &repo.name, &text)
            .await?;
        Ok(ecr::SetRepositoryPolicyResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(repo.name),
            policy_text: Some(text),
        })
    }

    fn get_repository_policy(
        &self,
        request: ecr::GetRepositoryPolicyRequest,
    ) -> Result<ecr::GetRepositoryPolicyResponse, ApiError> {
        let repo = self.named(&request)?.value;
        let text = self.policy_text(PolicyKind::Repository, &repo)?;
        Ok(ecr::GetRepositoryPolicyResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(repo.name),
            policy_text: Some(text),
        })
    }

    async fn delete_repository_policy(
        &self,
        request: ecr::DeleteRepositoryPolicyRequest,
    ) -> Result<ecr::DeleteRepositoryPolicyResponse, ApiError> {
        let repo = self.named(&request)?.value;
        let (text, _) = self
            .take_policy_text(PolicyKind::Repository, &repo.name)
            .await?;
        Ok(ecr::DeleteRepositoryPolicyResponse {
            registry_id: Some(self.scope.account_id.clone()),
            repository_name: Some(repo.name),
            policy_text: Some(text),
        })
    }

    // ---- resource tags ---------------------------------------------------

    /// The repository an ARN names.
    fn repository_of_arn(&self, arn: Option<&String>) -> Result<String, ApiError> {
        let text = arn.map_or("", String::as_str);
        let bad = || {
            invalid(format!("Invalid parameter at 'resourceArn': {text:?} is not a repository ARN of this registry"))
        };
        let parsed = Arn::parse(text).ok_or_else(bad)?;
        let (kind, name) = parsed.resource_parts();
        if parsed.service != "ecr"
            || kind != "repository"
            || parsed.region != self.scope.region
            || parsed.account_id != self.scope.account_id
        {
            return Err(bad());
        }
        self.repository(name).map_err(api)?;
        Ok(name.to_owned())
    }

    async fn tag_resource(
        &self,
        request: ecr::TagResourceRequest,
    ) -> Result<ecr::TagResourceResponse, ApiError> {
        let name = self.repository_of_arn(request.resource_arn.as_ref())?;
        let tags = request.tags.unwrap_or_default();
        check_resource_tags(&tags)?;
        self.update_repository(&name, |record| {
            for tag in &tags {
                record
                    .resource_tags
                    .retain(|existing| existing.key != tag.key);
                record.resource_tags.push(tag.clone());
            }
            if record.resource_tags.len() > RESOURCE_TAGS_MAX {
                return Err(ApiError::new(
                    "TooManyTagsException",
                    400,
                    format!("a repository can have at most {RESOURCE_TAGS_MAX} tags"),
                ));
            }
            Ok(())
        })
        .await?;
        Ok(ecr::TagResourceResponse {})
    }

    async fn untag_resource(
        &self,
        request: ecr::UntagResourceRequest,
    ) -> Result<ecr::UntagResourceResponse, ApiError> {
        let name = self.repository_of_arn(request.resource_arn.as_ref())?;
        let keys_to_remove = request.tag_keys.unwrap_or_default();
        self.update_repository(&name, |record| {
            record
                .resource_tags
                .retain(|tag| !tag.key.as_ref().is_some_and(|k| keys_to_remove.contains(k)));
            Ok(())
        })
        .await?;
        Ok(ecr::UntagResourceResponse {})
    }

    fn list_tags_for_resource(
        &self,
        request: ecr::ListTagsForResourceRequest,
    ) -> Result<ecr::ListTagsForResourceResponse, ApiError> {
        let name = self.repository_of_arn(request.resource_arn.as_ref())?;
        let repo = self.repository(&name).map_err(api)?.value;
        Ok(ecr::ListTagsForResourceResponse {
            tags: Some(repo.resource_tags),
        })
    }

    /// Applies every repository's lifecycle policy at `now_ms`; returns how
    /// many images were expired.
    pub async fn apply_lifecycle_policies(&self, now_ms: u64) -> Result<usize, RegistryError> {
        let repositories: Vec<RepositoryRecord> =
            records::list_all(&*self.store, keys::REPOSITORIES, REPOSITORY_ITEMS_MAX)?
                .iter()
                .map(records::decode)
                .collect::<Result<_, _>>()?;
        let mut expired = 0;
        for repo in repositories {
            let Some(text) = &repo.lifecycle_policy_text else {
                continue;
            };
            let Ok(policy) = lifecycle::parse(text) else {
                continue;
            };
            for entry in self.evaluate_policy(&repo.name, &policy, now_ms)? {
                match self.delete_image(&repo.name, &entry.digest).await {
                    Ok(()) => {
                        expired += 1;
                        tracing::info!(repository = %repo.name, digest = %entry.digest, rule = entry.rule_priority, "lifecycle policy expired an image");
                    }
                    Err(
                        RegistryError::ManifestUnknown(_) | RegistryError::ReferencedByIndex(_),
                    ) => {}
                    Err(other) => return Err(other),
                }
            }
            let name = repo.name.clone();
            let result = self
                .update_repository(&name, |record| {
                    record.lifecycle_evaluated_at_ms = Some(now_ms);
                    Ok(())
                })
                .await;
            if let Err(error) = result {
                tracing::debug!(repository = %name, %error, "recording a lifecycle evaluation failed");
            }
        }
        Ok(expired)
    }
}

/// The image an identifier names among a repository's images, or why none.
fn find_image<'a>(
    images: &'a [(ImageRecord, Vec<String>)],
    id: &ecr::ImageIdentifier,
) -> Result<&'a (ImageRecord, Vec<String>), (ecr::ImageFailureCode, String)> {
    let by_digest = match &id.image_digest {
        Some(text) => {
            let digest = Digest::parse(text).map_err(|error| {
                (
                    ecr::ImageFailureCode::InvalidImageDigest,
                    format!("Invalid image digest: {error}"),
                )
            })?;
            Some(images.iter().find(|(image, _)| image.digest == digest))
        }
        None => None,
    };
    let by_tag = match &id.image_tag {
        Some(tag) if tag.is_empty() || tag.len() > 300 => {
            return Err((
                ecr::ImageFailureCode::InvalidImageTag,
                "Invalid image tag".to_owned(),
            ))
        }
        Some(tag) => Some(images.iter().find(|(_, tags)| tags.contains(tag))),
        None => None,
    };
    let not_found = || {
        (
            ecr::ImageFailureCode::ImageNotFound,
            "Requested image not found".to_owned(),
        )
    };
    match (by_digest, by_tag) {
        (None, None) => Err((
            ecr::ImageFailureCode::MissingDigestAndTag,
            "Neither a digest nor a tag was given".to_owned(),
        )),
        (Some(found), None) | (None, Some(found)) => found.ok_or_else(not_found),
        (Some(Some(a)), Some(Some(b))) if a.0.digest == b.0.digest => Ok(a),
        (Some(Some(_)), Some(Some(_))) => Err((
            ecr::ImageFailureCode::ImageTagDoesNotMatchDigest,
            "The tag does not name the given digest".to_owned(),
        )),
        _ => Err(not_found()),
    }
}

fn check_resource_tags(tags: &[ecr::Tag]) -> Result<(), ApiError> {
    if tags.len() > RESOURCE_TAGS_MAX {
        return Err(ApiError::new(
            "TooManyTagsException",
            400,
            format!("at most {RESOURCE_TAGS_MAX} tags"),
        ));
    }
    for tag in tags {
        let key = tag.key.as_deref().unwrap_or_default();
        let value = tag.value.as_deref().unwrap_or_default();
        if key.is_empty()
            || key.chars().count() > TAG_KEY_MAX_CHARS
            || value.chars().count() > TAG_VALUE_MAX_CHARS
            || key.starts_with("aws:")
        {
            return Err(ApiError::new(
                "InvalidTagParameterException",
                400,
                format!("tag {key:?}: keys are 1 to {TAG_KEY_MAX_CHARS} characters not starting with aws:, values at most {TAG_VALUE_MAX_CHARS}"),
            ));
        }
    }
    Ok(())
}

/// A repository policy must at least be an IAM policy document in shape.
fn check_repository_policy(text: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        invalid(format!("Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided': {why}"))
    };
    if text.len() > REPOSITORY_POLICY_MAX_CHARS {
        return Err(bad("the policy is too long"));
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| bad("not JSON"))?;
    match value.get("Statement") {
        Some(serde_json::Value::Array(statements)) if !statements.is_empty() => Ok(()),
        Some(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(bad("a policy needs a Statement")),
    }
}
