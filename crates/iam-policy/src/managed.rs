//! The AWS managed policies Flotilla's users name: their ARNs, versions and
//! documents, as AWS publishes them in the AWS Managed Policy Reference
//! (`https://docs.aws.amazon.com/aws-managed-policy/latest/reference/NAME.html`).
//!
//! `ReadOnlyAccess` is abridged: AWS's document (version v178) lists about
//! 2,700 actions across every AWS service. Flotilla keeps its two statements,
//! with their `Sid`s, and within them every entry for the services Flotilla
//! answers (ECS, ECR, Elastic Load Balancing, CloudWatch Logs, Secrets
//! Manager, SSM, S3, IAM, STS, KMS), unchanged. A request to any other
//! service never reaches an authorization check, so the abridged document
//! decides every request Flotilla receives exactly as the full one would.

use std::sync::{Arc, OnceLock};

use crate::document::PolicyKind;
use crate::policy::CompiledPolicy;

/// One AWS managed policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagedPolicy {
    pub name: &'static str,
    /// `/` or `/service-role/`.
    pub path: &'static str,
    /// The default version's id, as `GetPolicy` reports it.
    pub version_id: &'static str,
    pub description: &'static str,
    pub document: &'static str,
}

impl ManagedPolicy {
    pub fn arn(&self) -> String {
        format!("arn:aws:iam::aws:policy{}{}", self.path, self.name)
    }
}

pub const AWS_MANAGED_POLICIES: &[ManagedPolicy] = &[
    ManagedPolicy {
        name: "AdministratorAccess",
        path: "/",
        version_id: "v1",
        description: "Provides full access to AWS services and resources.",
        document: include_str!("../policies/AdministratorAccess.json"),
    },
    ManagedPolicy {
        name: "ReadOnlyAccess",
        path: "/",
        version_id: "v178",
        description: "Provides read-only access to AWS services and resources.",
        document: include_str!("../policies/ReadOnlyAccess.json"),
    },
    ManagedPolicy {
        name: "AmazonECS_FullAccess",
        path: "/",
        version_id: "v21",
        description: "Provides administrative access to Amazon ECS resources and enables ECS features through access to other AWS service resources, including VPCs, Auto Scaling groups, and CloudFormation stacks.",
        document: include_str!("../policies/AmazonECS_FullAccess.json"),
    },
    ManagedPolicy {
        name: "AmazonEC2ContainerServiceforEC2Role",
        path: "/service-role/",
        version_id: "v10",
        description: "Default policy for the Amazon EC2 Role for Amazon EC2 Container Service.",
        document: include_str!("../policies/AmazonEC2ContainerServiceforEC2Role.json"),
    },
    ManagedPolicy {
        name: "AmazonECSTaskExecutionRolePolicy",
        path: "/service-role/",
        version_id: "v1",
        description: "Provides access to other AWS service resources that are required to run Amazon ECS tasks",
        document: include_str!("../policies/AmazonECSTaskExecutionRolePolicy.json"),
    },
    ManagedPolicy {
        name: "AmazonEC2ContainerRegistryReadOnly",
        path: "/",
        version_id: "v3",
        description: "Provides read-only access to Amazon EC2 Container Registry repositories.",
        document: include_str!("../policies/AmazonEC2ContainerRegistryReadOnly.json"),
    },
    ManagedPolicy {
        name: "AmazonEC2ContainerRegistryPowerUser",
        path: "/",
        version_id: "v3",
        description: "Provides full access to Amazon EC2 Container Registry repositories, but does not allow repository deletion or policy changes.",
        document: include_str!("../policies/AmazonEC2ContainerRegistryPowerUser.json"),
    },
];

/// The managed policy with this ARN.
pub fn by_arn(arn: &str) -> Option<&'static ManagedPolicy> {
    AWS_MANAGED_POLICIES
        .iter()
        .find(|policy| policy.arn() == arn)
}

/// The managed policy with this ARN, compiled once for the process.
pub fn compiled(arn: &str) -> Option<Arc<CompiledPolicy>> {
    static COMPILED: OnceLock<Vec<(String, Arc<CompiledPolicy>)>> = OnceLock::new();
    let all = COMPILED.get_or_init(|| {
        AWS_MANAGED_POLICIES
            .iter()
            .filter_map(|policy| {
                let arn = policy.arn();
                // The documents are checked by this crate's tests; one that
                // failed would simply not be offered.
                let compiled =
                    CompiledPolicy::parse(&arn, policy.document, PolicyKind::AwsManaged).ok()?;
                Some((arn, Arc::new(compiled)))
            })
            .collect()
    });
    all.iter()
        .find(|(known, _)| known == arn)
        .map(|(_, policy)| Arc::clone(policy))
}
