//! Which authorization checks each ECS and ECR operation needs: the action,
//! the resource ARN(s) it is authorized against and the condition keys the
//! request supplies, after AWS's Service Authorization Reference for Amazon
//! ECS (`list_amazonelasticcontainerservice`) and Amazon ECR
//! (`list_amazonelasticcontainerregistry`).
//!
//! The caller resolves names to ARNs first (a missing `cluster` is the
//! `default` cluster, a task definition family is its latest revision, as ECS
//! authorizes RunTask since March 2024) and fills in [`RequestFacts`];
//! [`checks`] then says what to evaluate, one [`Check`] per resource. Every
//! check must be allowed. Besides the operation's own action:
//!
//! - operations that hand roles to ECS check `iam:PassRole` on each role,
//!   with `iam:PassedToService` set to `ecs-tasks.amazonaws.com` (task and
//!   execution roles) or `ecs.amazonaws.com` (a service's role);
//! - operations that create a resource with tags check `ecs:TagResource` on
//!   it with `ecs:CreateAction` naming the operation, as ECS does.

use thiserror::Error;

/// The services whose operations are listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ecs,
    Ecr,
}

/// What a request names, as ARNs resolved by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub region: String,
    pub account: String,
    pub clusters: Vec<String>,
    pub services: Vec<String>,
    pub service_deployments: Vec<String>,
    pub tasks: Vec<String>,
    /// With their revision.
    pub task_definitions: Vec<String>,
    pub container_instances: Vec<String>,
    pub capacity_providers: Vec<String>,
    pub repositories: Vec<String>,
    /// The resource of TagResource, UntagResource and ListTagsForResource.
    pub tagged_resource: Option<String>,
    /// Tags the request sets (key, value).
    pub request_tags: Vec<(String, String)>,
    /// Tag keys UntagResource removes.
    pub removed_tag_keys: Vec<String>,
    /// Tags of the resource acted on, as `aws:ResourceTag/KEY` keys.
    pub resource_tags: Vec<(String, String)>,
    /// Further service keys the request supplies to its own action, such as
    /// `ecs:task-cpu`, `ecs:privileged` or `ecs:enable-execute-command`.
    pub service_keys: Vec<(String, Vec<String>)>,
    /// Roles the request hands to ECS tasks: task and execution roles, of
    /// the request, its overrides and the task definition it runs.
    pub task_roles: Vec<String>,
    /// Roles the request hands to ECS itself (CreateService's `role`).
    pub service_roles: Vec<String>,
}

/// One authorization question: may the caller do `action` to `resource`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub action: String,
    pub resource: String,
    /// Condition keys for the request context, with their values.
    pub condition_keys: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("no authorization rule for operation {operation}")]
pub struct UnknownOperation {
    pub operation: String,
}

/// The resource type an operation is authorized against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    /// `*`: the action has no resource-level permissions.
    Any,
    Cluster,
    Service,
    ServiceDeployment,
    Task,
    TaskDefinition,
    ContainerInstance,
    /// The container instances named, or `*` when none is.
    ContainerInstanceOrAny,
    CapacityProvider,
    Repository,
    /// The repositories named, or all of the registry's.
    RepositoriesOrAll,
    TaggedResource,
}

/// A condition key an operation supplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// `ecs:cluster`: the cluster's ARN.
    Cluster,
    /// `ecs:capacity-provider`: the capacity providers' ARNs.
    CapacityProvider,
    /// `ecs:task-definition`.
    TaskDefinition,
    /// `ecs:service`.
    Service,
    /// `ecs:container-instances`: every container instance named.
    ContainerInstances,
    /// `aws:RequestTag/KEY` and `aws:TagKeys`.
    RequestTags,
    /// `aws:TagKeys` of the keys removed.
    RemovedTagKeys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    PassTaskRoles,
    PassAllRoles,
}

struct Rule {
    operation: &'static str,
    action: &'static str,
    on: &'static [On],
    keys: &'static [Key],
    extra: Extra,
    /// Tagging the created resource in the same request checks
    /// `ecs:TagResource` too.
    tags_on_create: bool,
}

const fn rule(
    operation: &'static str,
    action: &'static str,
    on: &'static [On],
    keys: &'static [Key],
) -> Rule {
    Rule {
        operation,
        action,
        on,
        keys,
        extra: Extra::None,
        tags_on_create: false,
    }
}

const fn creating(mut rule: Rule) -> Rule {
    rule.tags_on_create = true;
    rule
}

const fn passing(mut rule: Rule, extra: Extra) -> Rule {
    rule.extra = extra;
    rule
}

use Key as K;
use On as O;

const ECS_RULES: &[Rule] = &[
    creating(rule(
        "CreateCluster",
        "ecs:CreateCluster",
        &[O::Cluster],
        &[K::CapacityProvider, K::RequestTags],
    )),
    rule("DeleteCluster", "ecs:DeleteCluster", &[O::Cluster], &[]),
    rule(
        "DescribeClusters",
        "ecs:DescribeClusters",
        &[O::Cluster],
        &[],
    ),
    rule("ListClusters", "ecs:ListClusters", &[O::Any], &[]),
    rule("UpdateCluster", "ecs:UpdateCluster", &[O::Cluster], &[]),
    rule(
        "UpdateClusterSettings",
        "ecs:UpdateClusterSettings",
        &[O::Cluster],
        &[],
    ),
    rule(
        "PutClusterCapacityProviders",
        "ecs:PutClusterCapacityProviders",
        &[O::Cluster],
        &[K::CapacityProvider],
    ),
    creating(rule(
        "CreateCapacityProvider",
        "ecs:CreateCapacityProvider",
        &[O::CapacityProvider],
        &[K::RequestTags],
    )),
    rule(
        "DescribeCapacityProviders",
        "ecs:DescribeCapacityProviders",
        &[O::CapacityProvider],
        &[],
    ),
    rule(
        "UpdateCapacityProvider",
        "ecs:UpdateCapacityProvider",
        &[O::CapacityProvider],
        &[],
    ),
    rule(
        "DeleteCapacityProvider",
        "ecs:DeleteCapacityProvider",
        &[O::CapacityProvider],
        &[],
    ),
    passing(
        creating(rule(
            "RegisterTaskDefinition",
            "ecs:RegisterTaskDefinition",
            &[O::Any],
            &[K::RequestTags],
        )),
        Extra::PassTaskRoles,
    ),
    rule(
        "DescribeTaskDefinition",
        "ecs:DescribeTaskDefinition",
        &[O::Any],
        &[],
    ),
    rule(
        "ListTaskDefinitions",
        "ecs:ListTaskDefinitions",
        &[O::Any],
        &[],
    ),
    rule(
        "ListTaskDefinitionFamilies",
        "ecs:ListTaskDefinitionFamilies",
        &[O::Any],
        &[],
    ),
    rule(
        "DeregisterTaskDefinition",
        "ecs:DeregisterTaskDefinition",
        &[O::TaskDefinition],
        &[],
    ),
    rule(
        "DeleteTaskDefinitions",
        "ecs:DeleteTaskDefinitions",
        &[O::TaskDefinition],
        &[],
    ),
    creating(rule(
        "RegisterContainerInstance",
        "ecs:RegisterContainerInstance",
        &[O::Cluster],
        &[K::RequestTags],
    )),
    rule(
        "DeregisterContainerInstance",
        "ecs:DeregisterContainerInstance",
        &[O::Cluster],
        &[],
    ),
    rule(
        "DescribeContainerInstances",
        "ecs:DescribeContainerInstances",
        &[O::ContainerInstance],
        &[K::Cluster],
    ),
    rule(
        "ListContainerInstances",
        "ecs:ListContainerInstances",
        &[O::Cluster],
        &[],
    ),
    rule(
        "UpdateContainerInstancesState",
        "ecs:UpdateContainerInstancesState",
        &[O::ContainerInstance],
        &[K::Cluster],
    ),
    rule(
        "DiscoverPollEndpoint",
        "ecs:DiscoverPollEndpoint",
        &[O::Any],
        &[],
    ),
    passing(
        creating(rule(
            "RunTask",
            "ecs:RunTask",
            &[O::TaskDefinition],
            &[K::Cluster, K::CapacityProvider, K::RequestTags],
        )),
        Extra::PassTaskRoles,
    ),
    passing(
        creating(rule(
            "StartTask",
            "ecs:StartTask",
            &[O::TaskDefinition],
            &[K::Cluster, K::ContainerInstances, K::RequestTags],
        )),
        Extra::PassTaskRoles,
    ),
    rule("StopTask", "ecs:StopTask", &[O::Task], &[K::Cluster]),
    rule(
        "DescribeTasks",
        "ecs:DescribeTasks",
        &[O::Task],
        &[K::Cluster],
    ),
    rule(
        "ListTasks",
        "ecs:ListTasks",
        &[O::ContainerInstanceOrAny],
        &[K::Cluster],
    ),
    rule(
        "SubmitTaskStateChange",
        "ecs:SubmitTaskStateChange",
        &[O::Cluster],
        &[],
    ),
    rule(
        "SubmitContainerStateChange",
        "ecs:SubmitContainerStateChange",
        &[O::Cluster],
        &[],
    ),
    rule(
        "SubmitAttachmentStateChanges",
        "ecs:SubmitAttachmentStateChanges",
        &[O::Cluster],
        &[],
    ),
    rule(
        "TagResource",
        "ecs:TagResource",
        &[O::TaggedResource],
        &[K::RequestTags],
    ),
    rule(
        "UntagResource",
        "ecs:UntagResource",
        &[O::TaggedResource],
        &[K::RemovedTagKeys],
    ),
    rule(
        "ListTagsForResource",
        "ecs:ListTagsForResource",
        &[O::TaggedResource],
        &[],
    ),
    rule("PutAccountSetting", "ecs:PutAccountSetting", &[O::Any], &[]),
    rule(
        "PutAccountSettingDefault",
        "ecs:PutAccountSettingDefault",
        &[O::Any],
        &[],
    ),
    rule(
        "ListAccountSettings",
        "ecs:ListAccountSettings",
        &[O::Any],
        &[],
    ),
    rule(
        "DeleteAccountSetting",
        "ecs:DeleteAccountSetting",
        &[O::Any],
        &[],
    ),
    rule(
        "PutAttributes",
        "ecs:PutAttributes",
        &[O::ContainerInstanceOrAny],
        &[K::Cluster],
    ),
    rule(
        "DeleteAttributes",
        "ecs:DeleteAttributes",
        &[O::ContainerInstanceOrAny],
        &[K::Cluster],
    ),
    rule("ListAttributes", "ecs:ListAttributes", &[O::Cluster], &[]),
    passing(
        creating(rule(
            "CreateService",
            "ecs:CreateService",
            &[O::Service],
            &[K::CapacityProvider, K::TaskDefinition, K::RequestTags],
        )),
        Extra::PassAllRoles,
    ),
    passing(
        rule(
            "UpdateService",
            "ecs:UpdateService",
            &[O::Service],
            &[K::CapacityProvider, K::TaskDefinition],
        ),
        Extra::PassAllRoles,
    ),
    rule(
        "DeleteService",
        "ecs:DeleteService",
        &[O::Service],
        &[K::Cluster],
    ),
    rule(
        "DescribeServices",
        "ecs:DescribeServices",
        &[O::Service],
        &[K::Cluster],
    ),
    rule("ListServices", "ecs:ListServices", &[O::Any], &[K::Cluster]),
    rule(
        "ListServiceDeployments",
        "ecs:ListServiceDeployments",
        &[O::Service],
        &[K::Cluster],
    ),
    rule(
        "DescribeServiceDeployments",
        "ecs:DescribeServiceDeployments",
        &[O::ServiceDeployment],
        &[K::Cluster, K::Service],
    ),
    rule(
        "StopServiceDeployment",
        "ecs:StopServiceDeployment",
        &[O::ServiceDeployment],
        &[K::Cluster, K::Service],
    ),
    rule(
        "ContinueServiceDeployment",
        "ecs:ContinueServiceDeployment",
        &[O::ServiceDeployment],
        &[K::Cluster, K::Service],
    ),
    rule(
        "UpdateTaskProtection",
        "ecs:UpdateTaskProtection",
        &[O::Task],
        &[K::Cluster],
    ),
    rule(
        "GetTaskProtection",
        "ecs:GetTaskProtection",
        &[O::Task],
        &[K::Cluster],
    ),
    // The other task set operations act on a task set, which requests name
    // by id within their service; they are authorized on `*` for now.
    rule(
        "CreateTaskSet",
        "ecs:CreateTaskSet",
        &[O::Service],
        &[K::Cluster, K::CapacityProvider, K::TaskDefinition],
    ),
    rule(
        "DescribeTaskSets",
        "ecs:DescribeTaskSets",
        &[O::Service],
        &[K::Cluster],
    ),
    // Flotilla's own ExplainPlacement reads what RunTask would see of a
    // cluster and commits nothing: it needs what describing the cluster needs.
    rule(
        "ExplainPlacement",
        "ecs:DescribeClusters",
        &[O::Cluster],
        &[],
    ),
    // Flotilla's own ReclaimSpotCapacity stops a cluster's FARGATE_SPOT
    // tasks, as AWS does when it takes Spot capacity back.
    rule("ReclaimSpotCapacity", "ecs:StopTask", &[O::Cluster], &[]),
];

const ECR_RULES: &[Rule] = &[
    rule(
        "CreateRepository",
        "ecr:CreateRepository",
        &[O::Repository],
        &[K::RequestTags],
    ),
    rule(
        "DescribeRepositories",
        "ecr:DescribeRepositories",
        &[O::RepositoriesOrAll],
        &[],
    ),
    rule(
        "DeleteRepository",
        "ecr:DeleteRepository",
        &[O::Repository],
        &[],
    ),
    rule("ListImages", "ecr:ListImages", &[O::Repository], &[]),
    rule(
        "DescribeImages",
        "ecr:DescribeImages",
        &[O::Repository],
        &[],
    ),
    rule(
        "DescribeImageScanFindings",
        "ecr:DescribeImageScanFindings",
        &[O::Repository],
        &[],
    ),
    rule("BatchGetImage", "ecr:BatchGetImage", &[O::Repository], &[]),
    rule(
        "BatchDeleteImage",
        "ecr:BatchDeleteImage",
        &[O::Repository],
        &[],
    ),
    rule("PutImage", "ecr:PutImage", &[O::Repository], &[]),
    rule(
        "BatchCheckLayerAvailability",
        "ecr:BatchCheckLayerAvailability",
        &[O::Repository],
        &[],
    ),
    rule(
        "InitiateLayerUpload",
        "ecr:InitiateLayerUpload",
        &[O::Repository],
        &[],
    ),
    rule(
        "UploadLayerPart",
        "ecr:UploadLayerPart",
        &[O::Repository],
        &[],
    ),
    rule(
        "CompleteLayerUpload",
        "ecr:CompleteLayerUpload",
        &[O::Repository],
        &[],
    ),
    rule(
        "GetDownloadUrlForLayer",
        "ecr:GetDownloadUrlForLayer",
        &[O::Repository],
        &[],
    ),
    rule(
        "GetAuthorizationToken",
        "ecr:GetAuthorizationToken",
        &[O::Any],
        &[],
    ),
    rule(
        "PutImageTagMutability",
        "ecr:PutImageTagMutability",
        &[O::Repository],
        &[],
    ),
    rule(
        "PutImageScanningConfiguration",
        "ecr:PutImageScanningConfiguration",
        &[O::Repository],
        &[],
    ),
    rule(
        "PutLifecyclePolicy",
        "ecr:PutLifecyclePolicy",
        &[O::Repository],
        &[],
    ),
    rule(
        "GetLifecyclePolicy",
        "ecr:GetLifecyclePolicy",
        &[O::Repository],
        &[],
    ),
    rule(
        "DeleteLifecyclePolicy",
        "ecr:DeleteLifecyclePolicy",
        &[O::Repository],
        &[],
    ),
    rule(
        "StartLifecyclePolicyPreview",
        "ecr:StartLifecyclePolicyPreview",
        &[O::Repository],
        &[],
    ),
    rule(
        "GetLifecyclePolicyPreview",
        "ecr:GetLifecyclePolicyPreview",
        &[O::Repository],
        &[],
    ),
    rule(
        "SetRepositoryPolicy",
        "ecr:SetRepositoryPolicy",
        &[O::Repository],
        &[],
    ),
    rule(
        "GetRepositoryPolicy",
        "ecr:GetRepositoryPolicy",
        &[O::Repository],
        &[],
    ),
    rule(
        "DeleteRepositoryPolicy",
        "ecr:DeleteRepositoryPolicy",
        &[O::Repository],
        &[],
    ),
    rule(
        "TagResource",
        "ecr:TagResource",
        &[O::TaggedResource],
        &[K::RequestTags],
    ),
    rule(
        "UntagResource",
        "ecr:UntagResource",
        &[O::TaggedResource],
        &[K::RemovedTagKeys],
    ),
    rule(
        "ListTagsForResource",
        "ecr:ListTagsForResource",
        &[O::TaggedResource],
        &[],
    ),
];

/// The operations of the registry protocol (`docker pull`/`push` under
/// `/v2/`), authorized with the ECR actions the same work needs through ECR's
/// API, on the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryOperation {
    /// `GET`/`HEAD` a manifest.
    PullManifest,
    /// `GET` a blob.
    PullBlob,
    /// `HEAD` a blob.
    CheckBlob,
    /// `POST` an upload (or mount a blob).
    StartUpload,
    /// `PATCH` an upload.
    UploadChunk,
    /// `PUT` an upload, completing it.
    CompleteUpload,
    /// `PUT` a manifest.
    PushManifest,
    /// `DELETE` a manifest.
    DeleteManifest,
    /// `GET` the tag list.
    ListTags,
}

impl RegistryOperation {
    pub fn action(self) -> &'static str {
        match self {
            RegistryOperation::PullManifest => "ecr:BatchGetImage",
            RegistryOperation::PullBlob => "ecr:GetDownloadUrlForLayer",
            RegistryOperation::CheckBlob => "ecr:BatchCheckLayerAvailability",
            RegistryOperation::StartUpload => "ecr:InitiateLayerUpload",
            RegistryOperation::UploadChunk => "ecr:UploadLayerPart",
            RegistryOperation::CompleteUpload => "ecr:CompleteLayerUpload",
            RegistryOperation::PushManifest => "ecr:PutImage",
            RegistryOperation::DeleteManifest => "ecr:BatchDeleteImage",
            RegistryOperation::ListTags => "ecr:ListImages",
        }
    }
}

/// The check for a registry protocol request on a repository.
pub fn registry_check(operation: RegistryOperation, repository_arn: &str) -> Check {
    Check {
        action: operation.action().to_string(),
        resource: repository_arn.to_string(),
        condition_keys: Vec::new(),
    }
}

/// The operations listed for a service.
pub fn operations(service: Service) -> impl Iterator<Item = &'static str> {
    rules(service).iter().map(|rule| rule.operation)
}

fn rules(service: Service) -> &'static [Rule] {
    match service {
        Service::Ecs => ECS_RULES,
        Service::Ecr => ECR_RULES,
    }
}

/// The checks `operation` of `service` needs for a request with `facts`.
pub fn checks(
    service: Service,
    operation: &str,
    facts: &RequestFacts,
) -> Result<Vec<Check>, UnknownOperation> {
    let rule = rules(service)
        .iter()
        .find(|rule| rule.operation == operation)
        .ok_or_else(|| UnknownOperation {
            operation: operation.to_string(),
        })?;
    let condition_keys = condition_keys(rule.keys, facts);
    let mut checks = Vec::new();
    for on in rule.on {
        for resource in resources(*on, facts) {
            checks.push(Check {
                action: rule.action.to_string(),
                resource,
                condition_keys: condition_keys.clone(),
            });
        }
    }
    if rule.tags_on_create && !facts.request_tags.is_empty() {
        let created = checks
            .first()
            .map(|check| check.resource.clone())
            .unwrap_or_else(|| "*".to_string());
        let mut keys = vec![(
            "ecs:CreateAction".to_string(),
            vec![rule.operation.to_string()],
        )];
        keys.extend(condition_keys_of_tags(&facts.request_tags));
        checks.push(Check {
            action: "ecs:TagResource".to_string(),
            resource: created,
            condition_keys: keys,
        });
    }
    let passed: Vec<(&String, &str)> = match rule.extra {
        Extra::None => Vec::new(),
        Extra::PassTaskRoles => facts
            .task_roles
            .iter()
            .map(|role| (role, TASKS_SERVICE))
            .collect(),
        Extra::PassAllRoles => facts
            .task_roles
            .iter()
            .map(|role| (role, TASKS_SERVICE))
            .chain(facts.service_roles.iter().map(|role| (role, ECS_SERVICE)))
            .collect(),
    };
    for (role, to_service) in passed {
        checks.push(Check {
            action: "iam:PassRole".to_string(),
            resource: role.clone(),
            condition_keys: vec![(
                "iam:PassedToService".to_string(),
                vec![to_service.to_string()],
            )],
        });
    }
    Ok(checks)
}

const TASKS_SERVICE: &str = "ecs-tasks.amazonaws.com";
const ECS_SERVICE: &str = "ecs.amazonaws.com";

fn resources(on: On, facts: &RequestFacts) -> Vec<String> {
    let named = |list: &[String]| {
        if list.is_empty() {
            vec!["*".to_string()]
        } else {
            list.to_vec()
        }
    };
    match on {
        On::Any => vec!["*".to_string()],
        On::Cluster => named(&facts.clusters),
        On::Service => named(&facts.services),
        On::ServiceDeployment => named(&facts.service_deployments),
        On::Task => named(&facts.tasks),
        On::TaskDefinition => named(&facts.task_definitions),
        On::ContainerInstance | On::ContainerInstanceOrAny => named(&facts.container_instances),
        On::CapacityProvider => named(&facts.capacity_providers),
        On::Repository => named(&facts.repositories),
        On::RepositoriesOrAll if facts.repositories.is_empty() => {
            vec![format!(
                "arn:aws:ecr:{}:{}:repository/*",
                facts.region, facts.account
            )]
        }
        On::RepositoriesOrAll => facts.repositories.clone(),
        On::TaggedResource => vec![facts
            .tagged_resource
            .clone()
            .unwrap_or_else(|| "*".to_string())],
    }
}

/// The keys of the operation's own checks: those its rule names, then the
/// resource's tags and the service keys the caller adds.
fn condition_keys(keys: &[Key], facts: &RequestFacts) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for key in keys {
        match key {
            Key::Cluster => push_first(&mut out, "ecs:cluster", &facts.clusters),
            Key::Service => push_first(&mut out, "ecs:service", &facts.services),
            Key::TaskDefinition => {
                push_first(&mut out, "ecs:task-definition", &facts.task_definitions)
            }
            Key::CapacityProvider if !facts.capacity_providers.is_empty() => {
                out.push((
                    "ecs:capacity-provider".to_string(),
                    facts.capacity_providers.clone(),
                ));
            }
            Key::CapacityProvider => {}
            Key::RequestTags => out.extend(condition_keys_of_tags(&facts.request_tags)),
            Key::RemovedTagKeys => {
                out.push(("aws:TagKeys".to_string(), facts.removed_tag_keys.clone()))
            }
            Key::ContainerInstances if !facts.container_instances.is_empty() => {
                out.push((
                    "ecs:container-instances".to_string(),
                    facts.container_instances.clone(),
                ));
            }
            Key::ContainerInstances => {}
        }
    }
    out.extend(
        facts
            .resource_tags
            .iter()
            .map(|(key, value)| (format!("aws:ResourceTag/{key}"), vec![value.clone()])),
    );
    out.extend(facts.service_keys.iter().cloned());
    out
}

fn push_first(out: &mut Vec<(String, Vec<String>)>, key: &str, values: &[String]) {
    if let Some(first) = values.first() {
        out.push((key.to_string(), vec![first.clone()]));
    }
}

fn condition_keys_of_tags(tags: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    if tags.is_empty() {
        return Vec::new();
    }
    let mut keys: Vec<(String, Vec<String>)> = tags
        .iter()
        .map(|(key, value)| (format!("aws:RequestTag/{key}"), vec![value.clone()]))
        .collect();
    keys.push((
        "aws:TagKeys".to_string(),
        tags.iter().map(|(key, _)| key.clone()).collect(),
    ));
    keys
}
