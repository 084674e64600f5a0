//! What Flotilla does with every input member of every ECS operation it
//! answers: acts on it, keeps it and returns it as ECS returns it, or
//! refuses it with a message naming it. Nothing a request carries is
//! accepted and dropped.
//!
//! The table is checked against the wire types generated from botocore's
//! model (`tests` below): a member the model gains, or an operation
//! `Ecs::handle` starts answering, fails the test until it is placed here.
//! The README's "kept, not acted on" list summarises the `Kept` rows.

use flotilla_types::ecs::EcsRequest;
use flotilla_types::ApiError;
use serde_json::Value;

/// What happens to one input member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// Flotilla does what ECS does with it (including refusing values it
    /// cannot act on, with a message of the handler's own).
    Acted,
    /// Stored and returned where ECS returns it, but nothing acts on it
    /// yet; the text says which part would.
    Kept(&'static str),
    /// Refused with InvalidParameterException naming it whenever it is set;
    /// the text says why. Unset means absent, null, "", false, [] or {}, or
    /// an object whose members are all unset.
    Refused(&'static str),
}

use Handling::{Acted, Kept, Refused};

/// One operation's members, in the order of botocore's documentation.
pub type OperationMembers = (&'static str, &'static [(&'static str, Handling)]);

const SERVICE_CONNECT: &str =
    "service connect needs service discovery namespaces and a proxy, which Flotilla does not have yet";
const EBS: &str =
    "volumes configured at launch need Amazon EBS, which this Flotilla server does not provide";
const LATTICE: &str = "VPC Lattice is not available on this Flotilla server";
const GATEWAYS: &str = "gateways are not available on this Flotilla server";
const MONITORING: &str =
    "deployment monitoring needs the metrics part, which Flotilla does not have yet";
const FARGATE_PLATFORM: &str =
    "a service's Fargate tasks run on platform version 1.4.0 (LATEST), the only one this Flotilla server has: leave platformVersion out";
const REFERENCE_ID: &str = "this Flotilla server does not record reference ids";

pub const INPUT_MEMBERS: &[OperationMembers] = &[
    (
        "CreateCluster",
        &[
            ("clusterName", Acted),
            ("tags", Acted),
            ("settings", Acted),
            (
                "configuration",
                Kept("executeCommandConfiguration: ExecuteCommand, with the logs part"),
            ),
            ("capacityProviders", Acted),
            ("defaultCapacityProviderStrategy", Acted),
            ("serviceConnectDefaults", Kept("service connect and discovery")),
        ],
    ),
    ("DescribeClusters", &[("clusters", Acted), ("include", Acted)]),
    ("ListClusters", &[("nextToken", Acted), ("maxResults", Acted)]),
    ("DeleteCluster", &[("cluster", Acted)]),
    (
        "UpdateCluster",
        &[
            ("cluster", Acted),
            ("settings", Acted),
            (
                "configuration",
                Kept("executeCommandConfiguration: ExecuteCommand, with the logs part"),
            ),
            ("serviceConnectDefaults", Kept("service connect and discovery")),
        ],
    ),
    (
        "UpdateClusterSettings",
        &[
            ("cluster", Acted),
            ("settings", Acted),
        ],
    ),
    (
        "PutClusterCapacityProviders",
        &[
            ("cluster", Acted),
            ("capacityProviders", Acted),
            ("defaultCapacityProviderStrategy", Acted),
        ],
    ),
    (
        "CreateCapacityProvider",
        &[
            ("name", Acted),
            ("cluster", Acted),
            (
                "autoScalingGroupProvider",
                Kept("the group's ARN, managed scaling, termination protection and draining: cluster auto scaling"),
            ),
            ("managedInstancesProvider", Acted),
            ("tags", Acted),
        ],
    ),
    (
        "DescribeCapacityProviders",
        &[
            ("capacityProviders", Acted),
            ("cluster", Acted),
            ("include", Acted),
            ("maxResults", Acted),
            ("nextToken", Acted),
        ],
    ),
    (
        "UpdateCapacityProvider",
        &[
            ("name", Acted),
            (
                "cluster",
                Refused("cluster is only for Amazon ECS Managed Instances capacity providers, which this Flotilla server does not run"),
            ),
            (
                "autoScalingGroupProvider",
                Kept("managed scaling, termination protection and draining: cluster auto scaling"),
            ),
            ("managedInstancesProvider", Acted),
        ],
    ),
    (
        "DeleteCapacityProvider",
        &[("capacityProvider", Acted), ("cluster", Acted)],
    ),
    (
        "RegisterTaskDefinition",
        &[
            ("family", Acted),
            ("taskRoleArn", Acted),
            (
                "executionRoleArn",
                Kept("image pulls from the registry and awslogs as the role (secrets are read as it)"),
            ),
            ("networkMode", Acted),
            ("containerDefinitions", Acted),
            ("volumes", Acted),
            ("placementConstraints", Acted),
            ("requiresCompatibilities", Acted),
            ("cpu", Acted),
            ("memory", Acted),
            ("tags", Acted),
            ("pidMode", Kept("the agent does not set the task's PID namespace yet")),
            ("ipcMode", Kept("the agent does not set the task's IPC namespace yet")),
            ("proxyConfiguration", Kept("App Mesh proxies: service connect and discovery")),
            ("inferenceAccelerators", Kept("Elastic Inference, which Flotilla does not provide")),
            ("ephemeralStorage", Kept("Fargate")),
            ("runtimePlatform", Acted),
            ("enableFaultInjection", Kept("fault injection endpoints")),
            ("trustedExecutionConfiguration", Kept("trusted execution environments")),
        ],
    ),
    (
        "DescribeTaskDefinition",
        &[("taskDefinition", Acted), ("include", Acted)],
    ),
    (
        "ListTaskDefinitions",
        &[
            ("familyPrefix", Acted),
            ("status", Acted),
            ("sort", Acted),
            ("nextToken", Acted),
            ("maxResults", Acted),
        ],
    ),
    (
        "ListTaskDefinitionFamilies",
        &[
            ("familyPrefix", Acted),
            ("status", Acted),
            ("nextToken", Acted),
            ("maxResults", Acted),
        ],
    ),
    ("DeregisterTaskDefinition", &[("taskDefinition", Acted)]),
    ("DeleteTaskDefinitions", &[("taskDefinitions", Acted)]),
    (
        "RegisterContainerInstance",
        &[
            ("cluster", Acted),
            ("instanceIdentityDocument", Acted),
            (
                "instanceIdentityDocumentSignature",
                Refused("this Flotilla server does not verify EC2 instance identity signatures; its agents sign their requests"),
            ),
            ("totalResources", Acted),
            ("versionInfo", Acted),
            ("containerInstanceArn", Acted),
            ("attributes", Acted),
            (
                "platformDevices",
                Refused("Flotilla's agents register GPUs as the GPU resource of totalResources"),
            ),
            ("tags", Acted),
        ],
    ),
    (
        "DeregisterContainerInstance",
        &[("cluster", Acted), ("containerInstance", Acted), ("force", Acted)],
    ),
    (
        "DescribeContainerInstances",
        &[("cluster", Acted), ("containerInstances", Acted), ("include", Acted)],
    ),
    (
        "ListContainerInstances",
        &[
            ("cluster", Acted),
            ("filter", Acted),
            ("nextToken", Acted),
            ("maxResults", Acted),
            ("status", Acted),
        ],
    ),
    (
        "UpdateContainerInstancesState",
        &[("cluster", Acted), ("containerInstances", Acted), ("status", Acted)],
    ),
    (
        "UpdateContainerAgent",
        &[("cluster", Acted), ("containerInstance", Acted)],
    ),
    (
        "DiscoverPollEndpoint",
        &[("containerInstance", Acted), ("cluster", Acted)],
    ),
    (
        "RunTask",
        &[
            ("capacityProviderStrategy", Acted),
            ("cluster", Acted),
            ("count", Acted),
            ("enableECSManagedTags", Acted),
            ("enableExecuteCommand", Kept("ExecuteCommand, with the logs part")),
            ("group", Acted),
            ("launchType", Acted),
            ("networkConfiguration", Acted),
            ("overrides", Acted),
            ("placementConstraints", Acted),
            ("placementStrategy", Acted),
            ("platformVersion", Acted),
            ("propagateTags", Acted),
            ("referenceId", Refused(REFERENCE_ID)),
            ("startedBy", Acted),
            ("tags", Acted),
            ("taskDefinition", Acted),
            ("clientToken", Acted),
            ("volumeConfigurations", Refused(EBS)),
        ],
    ),
    (
        "StartTask",
        &[
            ("cluster", Acted),
            ("containerInstances", Acted),
            ("enableECSManagedTags", Acted),
            ("enableExecuteCommand", Kept("ExecuteCommand, with the logs part")),
            ("group", Acted),
            ("networkConfiguration", Acted),
            ("overrides", Acted),
            ("propagateTags", Acted),
            ("referenceId", Refused(REFERENCE_ID)),
            ("startedBy", Acted),
            ("tags", Acted),
            ("taskDefinition", Acted),
            ("volumeConfigurations", Refused(EBS)),
        ],
    ),
    (
        "StopTask",
        &[("cluster", Acted), ("task", Acted), ("reason", Acted)],
    ),
    (
        "DescribeTasks",
        &[("cluster", Acted), ("tasks", Acted), ("include", Acted)],
    ),
    (
        "ListTasks",
        &[
            ("cluster", Acted),
            ("containerInstance", Acted),
            ("family", Acted),
            ("nextToken", Acted),
            ("maxResults", Acted),
            ("startedBy", Acted),
            ("serviceName", Acted),
            ("desiredStatus", Acted),
            ("launchType", Acted),
            ("daemonName", Acted),
        ],
    ),
    (
        "SubmitTaskStateChange",
        &[
            ("cluster", Acted),
            ("task", Acted),
            ("status", Acted),
            ("reason", Acted),
            ("containers", Acted),
            (
                "attachments",
                Refused("Flotilla's agents report no attachments: an awsvpc task's network attachment is made when it is placed"),
            ),
            (
                "managedAgents",
                Refused("Flotilla's agents run no managed agents; ExecuteCommand comes with the logs part"),
            ),
            ("pullStartedAt", Acted),
            ("pullStoppedAt", Acted),
            ("executionStoppedAt", Acted),
        ],
    ),
    (
        "SubmitContainerStateChange",
        &[
            ("cluster", Acted),
            ("task", Acted),
            ("containerName", Acted),
            ("runtimeId", Acted),
            ("status", Acted),
            ("exitCode", Acted),
            ("reason", Acted),
            ("networkBindings", Acted),
        ],
    ),
    ("TagResource", &[("resourceArn", Acted), ("tags", Acted)]),
    ("UntagResource", &[("resourceArn", Acted), ("tagKeys", Acted)]),
    ("ListTagsForResource", &[("resourceArn", Acted)]),
    (
        "PutAccountSetting",
        &[("name", Acted), ("value", Acted), ("principalArn", Acted)],
    ),
    ("PutAccountSettingDefault", &[("name", Acted), ("value", Acted)]),
    (
        "ListAccountSettings",
        &[
            ("name", Acted),
            ("value", Acted),
            ("principalArn", Acted),
            ("effectiveSettings", Acted),
            ("nextToken", Acted),
            ("maxResults", Acted),
        ],
    ),
    (
        "DeleteAccountSetting",
        &[("name", Acted), ("principalArn", Acted)],
    ),
    ("PutAttributes", &[("cluster", Acted), ("attributes", Acted)]),
    ("DeleteAttributes", &[("cluster", Acted), ("attributes", Acted)]),
    (
        "ListAttributes",
        &[
            ("cluster", Acted),
            ("targetType", Acted),
            ("attributeName", Acted),
            ("attributeValue", Acted),
            ("nextToken", Acted),
            ("maxResults", Acted),
        ],
    ),
    (
        "CreateService",
        &[
            ("cluster", Acted),
            ("serviceName", Acted),
            ("taskDefinition", Acted),
            (
                "availabilityZoneRebalancing",
                Kept("the scheduler balances zones when it places and scales in, but does not move running tasks"),
            ),
            ("loadBalancers", Acted),
            ("serviceRegistries", Kept("service discovery")),
            ("desiredCount", Acted),
            ("clientToken", Acted),
            ("launchType", Acted),
            ("capacityProviderStrategy", Acted),
            ("platformVersion", Refused(FARGATE_PLATFORM)),
            ("role", Kept("the load balancer and IAM parts")),
            ("deploymentConfiguration", Acted),
            ("placementConstraints", Acted),
            ("placementStrategy", Acted),
            ("networkConfiguration", Acted),
            ("healthCheckGracePeriodSeconds", Acted),
            ("schedulingStrategy", Acted),
            ("deploymentController", Acted),
            ("tags", Acted),
            ("enableECSManagedTags", Acted),
            ("propagateTags", Acted),
            ("enableExecuteCommand", Kept("ExecuteCommand, with the logs part")),
            ("serviceConnectConfiguration", Refused(SERVICE_CONNECT)),
            ("volumeConfigurations", Refused(EBS)),
            ("vpcLatticeConfigurations", Refused(LATTICE)),
            ("gatewayConnectors", Refused(GATEWAYS)),
            ("monitoring", Refused(MONITORING)),
        ],
    ),
    (
        "UpdateService",
        &[
            ("cluster", Acted),
            ("service", Acted),
            ("desiredCount", Acted),
            ("taskDefinition", Acted),
            ("capacityProviderStrategy", Acted),
            ("deploymentConfiguration", Acted),
            (
                "availabilityZoneRebalancing",
                Kept("the scheduler balances zones when it places and scales in, but does not move running tasks"),
            ),
            ("networkConfiguration", Acted),
            ("placementConstraints", Acted),
            ("placementStrategy", Acted),
            ("platformVersion", Refused(FARGATE_PLATFORM)),
            ("forceNewDeployment", Acted),
            ("healthCheckGracePeriodSeconds", Acted),
            ("deploymentController", Acted),
            ("enableExecuteCommand", Kept("ExecuteCommand, with the logs part")),
            ("enableECSManagedTags", Acted),
            ("loadBalancers", Acted),
            ("propagateTags", Acted),
            ("serviceRegistries", Kept("service discovery")),
            ("serviceConnectConfiguration", Refused(SERVICE_CONNECT)),
            ("volumeConfigurations", Refused(EBS)),
            ("vpcLatticeConfigurations", Refused(LATTICE)),
            ("gatewayConnectors", Refused(GATEWAYS)),
            ("monitoring", Refused(MONITORING)),
        ],
    ),
    (
        "DeleteService",
        &[("cluster", Acted), ("service", Acted), ("force", Acted)],
    ),
    (
        "DescribeServices",
        &[("cluster", Acted), ("services", Acted), ("include", Acted)],
    ),
    (
        "ListServices",
        &[
            ("cluster", Acted),
            ("nextToken", Acted),
            ("maxResults", Acted),
            ("launchType", Acted),
            ("schedulingStrategy", Acted),
            ("resourceManagementType", Acted),
        ],
    ),
    (
        "ListServiceDeployments",
        &[
            ("service", Acted),
            ("cluster", Acted),
            ("status", Acted),
            ("createdAt", Acted),
            ("nextToken", Acted),
            ("maxResults", Acted),
        ],
    ),
    (
        "DescribeServiceDeployments",
        &[("serviceDeploymentArns", Acted)],
    ),
    (
        "DescribeServiceRevisions",
        &[("serviceRevisionArns", Acted)],
    ),
    (
        "StopServiceDeployment",
        &[("serviceDeploymentArn", Acted), ("stopType", Acted)],
    ),
    (
        "ContinueServiceDeployment",
        &[
            ("serviceDeploymentArn", Acted),
            ("hookId", Acted),
            ("action", Acted),
        ],
    ),
    (
        "UpdateTaskProtection",
        &[
            ("cluster", Acted),
            ("tasks", Acted),
            ("protectionEnabled", Acted),
            ("expiresInMinutes", Acted),
        ],
    ),
    ("GetTaskProtection", &[("cluster", Acted), ("tasks", Acted)]),
    (
        "CreateTaskSet",
        &[
            ("service", Acted),
            ("cluster", Acted),
            ("externalId", Acted),
            ("taskDefinition", Acted),
            ("networkConfiguration", Acted),
            ("loadBalancers", Acted),
            ("serviceRegistries", Kept("service discovery")),
            ("launchType", Acted),
            ("capacityProviderStrategy", Acted),
            ("platformVersion", Refused(FARGATE_PLATFORM)),
            ("scale", Acted),
            ("clientToken", Acted),
            ("tags", Acted),
        ],
    ),
    (
        "UpdateTaskSet",
        &[
            ("cluster", Acted),
            ("service", Acted),
            ("taskSet", Acted),
            ("scale", Acted),
        ],
    ),
    (
        "DeleteTaskSet",
        &[
            ("cluster", Acted),
            ("service", Acted),
            ("taskSet", Acted),
            ("force", Acted),
        ],
    ),
    (
        "DescribeTaskSets",
        &[
            ("cluster", Acted),
            ("service", Acted),
            ("taskSets", Acted),
            ("include", Acted),
        ],
    ),
    (
        "UpdateServicePrimaryTaskSet",
        &[
            ("cluster", Acted),
            ("service", Acted),
            ("primaryTaskSet", Acted),
        ],
    ),
];

/// The members of an operation, if Flotilla answers it.
pub fn members_of(operation: &str) -> Option<&'static [(&'static str, Handling)]> {
    INPUT_MEMBERS
        .iter()
        .find(|(name, _)| *name == operation)
        .map(|(_, members)| *members)
}

/// Refuses a request that sets a member Flotilla refuses, naming it.
pub fn refuse_unsupported(request: &EcsRequest) -> Result<(), ApiError> {
    let Some(members) = members_of(request.operation()) else {
        return Ok(());
    };
    for (name, handling) in members.iter() {
        let Refused(why) = handling else {
            continue;
        };
        if refused_member(request, name).is_some_and(|value| is_set(&value)) {
            return Err(ApiError::invalid_parameter(format!(
                "{name} is not supported by this Flotilla server: {why}."
            )));
        }
    }
    Ok(())
}

/// A refused member's value, as JSON. Only that member is serialized: the
/// check sits on hot paths (every RunTask and agent state report). The
/// tests set every refused member of the table and expect its refusal, so
/// a member missing here fails them.
fn refused_member(request: &EcsRequest, member: &str) -> Option<Value> {
    use serde_json::to_value;
    use EcsRequest as Q;
    let value = match (request, member) {
        (Q::UpdateCapacityProvider(r), "cluster") => to_value(&r.cluster),
        (Q::RegisterContainerInstance(r), "instanceIdentityDocumentSignature") => {
            to_value(&r.instance_identity_document_signature)
        }
        (Q::RegisterContainerInstance(r), "platformDevices") => to_value(&r.platform_devices),
        (Q::RunTask(r), "platformVersion") => to_value(&r.platform_version),
        (Q::RunTask(r), "referenceId") => to_value(&r.reference_id),
        (Q::RunTask(r), "volumeConfigurations") => to_value(&r.volume_configurations),
        (Q::StartTask(r), "referenceId") => to_value(&r.reference_id),
        (Q::StartTask(r), "volumeConfigurations") => to_value(&r.volume_configurations),
        (Q::SubmitTaskStateChange(r), "attachments") => to_value(&r.attachments),
        (Q::SubmitTaskStateChange(r), "managedAgents") => to_value(&r.managed_agents),
        (Q::CreateService(r), "platformVersion") => to_value(&r.platform_version),
        (Q::CreateService(r), "serviceConnectConfiguration") => {
            to_value(&r.service_connect_configuration)
        }
        (Q::CreateService(r), "volumeConfigurations") => to_value(&r.volume_configurations),
        (Q::CreateService(r), "vpcLatticeConfigurations") => {
            to_value(&r.vpc_lattice_configurations)
        }
        (Q::CreateService(r), "gatewayConnectors") => to_value(&r.gateway_connectors),
        (Q::CreateService(r), "monitoring") => to_value(&r.monitoring),
        (Q::CreateTaskSet(r), "platformVersion") => to_value(&r.platform_version),
        (Q::UpdateService(r), "platformVersion") => to_value(&r.platform_version),
        (Q::UpdateService(r), "serviceConnectConfiguration") => {
            to_value(&r.service_connect_configuration)
        }
        (Q::UpdateService(r), "volumeConfigurations") => to_value(&r.volume_configurations),
        (Q::UpdateService(r), "vpcLatticeConfigurations") => {
            to_value(&r.vpc_lattice_configurations)
        }
        (Q::UpdateService(r), "gatewayConnectors") => to_value(&r.gateway_connectors),
        (Q::UpdateService(r), "monitoring") => to_value(&r.monitoring),
        _ => return None,
    };
    value.ok()
}

/// Whether a member carries anything: ECS treats an empty string, list or
/// structure, and `false`, as the member left out.
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(set) => *set,
        Value::Number(_) => true,
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(members) => members.values().any(is_set),
    }
}

#[cfg(test)]
mod tests;
