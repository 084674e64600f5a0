//! What the agent tells the control plane about its instance: resources,
//! attributes and identity, built by pure functions from facts read once.

use std::path::{Path, PathBuf};

use flotilla_runtime::NetworkInfo;
use flotilla_types::acs::conventions;
use flotilla_types::ecs::{
    Attribute, ContainerInstance, RegisterContainerInstanceRequest, Resource, VersionInfo,
};
use serde::{Deserialize, Serialize};

use crate::clock::IdSource;
use crate::persist::{read_json, PersistError, Persistence};

/// CPU units per core, ECS's measure.
pub const CPU_UNITS_PER_CORE: u64 = 1024;
/// Host ports ECS reserves on every instance for itself and Docker (SSH,
/// Docker's API, the agent's introspection and metadata ports).
pub const ECS_RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];
/// The task metadata endpoint's port, as in ECS.
pub const DEFAULT_METADATA_PORT: u16 = 51679;
pub const DEFAULT_INSTANCE_TYPE: &str = "flotilla.local";
pub const DEFAULT_AVAILABILITY_ZONE: &str = "local-1a";

/// The oldest and newest Docker remote API versions advertised; task
/// definitions ECS registers require some of them.
const DOCKER_API_MINOR_VERSIONS: std::ops::RangeInclusive<u32> = 17..=41;

/// Capabilities this agent truly has, and nothing more: awsvpc (task ENIs,
/// emulated with a task network), health checks, container ordering,
/// privileged containers, local-driver Docker volumes, the engine's
/// default json-file logging, awslogs (shipped by the agent itself, with
/// its own credentials whether or not the task names an execution role),
/// environment files from S3 (read through the control plane's S3 API,
/// `env_files.rs`), and secrets from Secrets Manager and Parameter Store as
/// environment variables (`secrets.rs`, read with the agent's own
/// credentials unless the task names an execution role), and task IAM
/// roles in every network mode (`credentials.rs`). Not here: EFS, GPUs,
/// firelens, other log drivers.
pub const CAPABILITIES: &[&str] = &[
    "ecs.capability.task-eni",
    "ecs.capability.container-health-check",
    "ecs.capability.container-ordering",
    "ecs.capability.docker-plugin.local",
    "com.amazonaws.ecs.capability.privileged-container",
    "com.amazonaws.ecs.capability.logging-driver.json-file",
    "ecs.capability.secrets.asm.environment-variables",
    "ecs.capability.secrets.ssm.environment-variables",
    "ecs.capability.secrets.asm.bootstrap.log-driver",
    "ecs.capability.secrets.ssm.bootstrap.log-driver",
    "com.amazonaws.ecs.capability.logging-driver.awslogs",
    "ecs.capability.execution-role-awslogs",
    "ecs.capability.env-files.s3",
    "com.amazonaws.ecs.capability.task-iam-role",
    "com.amazonaws.ecs.capability.task-iam-role-network-host",
];

/// Facts about the machine, read once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    pub cpu_units: u64,
    pub memory_mib: u64,
    /// As ECS names it: `x86_64` or `arm64`.
    pub cpu_architecture: &'static str,
}

impl HostFacts {
    pub fn read() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| parse_meminfo_total_mib(&text))
            .unwrap_or(0);
        Self {
            cpu_units: cores as u64 * CPU_UNITS_PER_CORE,
            memory_mib,
            cpu_architecture: cpu_architecture(std::env::consts::ARCH),
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
pub fn parse_meminfo_total_mib(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

pub fn cpu_architecture(rust_arch: &str) -> &'static str {
    match rust_arch {
        "aarch64" => "arm64",
        "x86_64" => "x86_64",
        _ => "unknown",
    }
}

/// Everything a registration says about one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceProfile {
    pub cluster: String,
    pub instance_id: String,
    pub region: String,
    pub availability_zone: String,
    pub instance_type: String,
    pub cpu_architecture: &'static str,
    pub cpu_units: u64,
    /// Already less the reservation.
    pub memory_mib: u64,
    pub metadata_port: u16,
    pub custom_attributes: Vec<(String, String)>,
    pub external: bool,
    /// A host of the cluster's Fargate pool.
    pub fargate: bool,
    /// The capacity provider the instance belongs to, if any.
    pub capacity_provider: Option<String>,
    pub agent_version: String,
    /// The commit the agent was built from.
    pub agent_hash: String,
    pub docker_version: Option<String>,
    /// Subnets of the task subnet range that other networks of the host's
    /// engine hold, which the control plane must not give the instance.
    pub subnets_in_use: Vec<String>,
}

fn attribute(name: &str, value: Option<&str>) -> Attribute {
    Attribute {
        name: Some(name.to_owned()),
        value: value.map(str::to_owned),
        ..Attribute::default()
    }
}

fn integer_resource(name: &str, value: u64) -> Resource {
    Resource {
        name: Some(name.to_owned()),
        r#type: Some("INTEGER".to_owned()),
        integer_value: Some(i32::try_from(value).unwrap_or(i32::MAX)),
        ..Resource::default()
    }
}

fn string_set_resource(name: &str, values: Vec<String>) -> Resource {
    Resource {
        name: Some(name.to_owned()),
        r#type: Some("STRINGSET".to_owned()),
        string_set_value: Some(values),
        ..Resource::default()
    }
}

/// The ports no task may bind: ECS's reserved set and the metadata port.
pub fn reserved_ports(metadata_port: u16) -> Vec<String> {
    let mut ports: Vec<u16> = ECS_RESERVED_PORTS.to_vec();
    if !ports.contains(&metadata_port) {
        ports.push(metadata_port);
    }
    ports.sort_unstable();
    ports.iter().map(u16::to_string).collect()
}

/// The attributes an instance registers with.
pub fn attributes(profile: &InstanceProfile) -> Vec<Attribute> {
    let mut attributes = vec![
        attribute("ecs.os-type", Some("linux")),
        attribute("ecs.os-family", Some("LINUX")),
        attribute("ecs.cpu-architecture", Some(profile.cpu_architecture)),
        attribute("ecs.instance-type", Some(&profile.instance_type)),
        attribute("ecs.availability-zone", Some(&profile.availability_zone)),
    ];
    attributes.extend(CAPABILITIES.iter().map(|name| attribute(name, None)));
    attributes.extend(DOCKER_API_MINOR_VERSIONS.map(|minor| {
        attribute(
            &format!("com.amazonaws.ecs.capability.docker-remote-api.1.{minor}"),
            None,
        )
    }));
    if profile.external {
        attributes.push(attribute(conventions::EXTERNAL_ATTRIBUTE, None));
    }
    if profile.fargate {
        attributes.push(attribute(conventions::FARGATE_ATTRIBUTE, None));
    }
    for (name, value) in &profile.custom_attributes {
        attributes.retain(|existing| existing.name.as_deref() != Some(name));
        attributes.push(attribute(name, Some(value)));
    }
    attributes
}

/// The instance identity document ECS's agent sends, reduced to what we
/// know, plus Flotilla's own `capacityProviderName`: the group the host was
/// started in, where EC2 would know the instance's Auto Scaling group.
pub fn identity_document(profile: &InstanceProfile) -> String {
    let mut document = serde_json::json!({
        "instanceId": profile.instance_id,
        "availabilityZone": profile.availability_zone,
        "instanceType": profile.instance_type,
        "region": profile.region,
        "architecture": profile.cpu_architecture,
    });
    if let Some(provider) = &profile.capacity_provider {
        document["capacityProviderName"] = serde_json::json!(provider);
    }
    document[conventions::SUBNETS_IN_USE_MEMBER] = serde_json::json!(profile.subnets_in_use);
    document.to_string()
}

/// First and last address of an IPv4 CIDR block.
fn cidr_bounds(text: &str) -> Option<(u32, u32)> {
    let (address, prefix_len) = text.split_once('/')?;
    let address: std::net::Ipv4Addr = address.parse().ok()?;
    let prefix_len: u32 = prefix_len.parse().ok().filter(|len| *len <= 32)?;
    let mask = u32::MAX.checked_shl(32 - prefix_len).unwrap_or(0);
    let first = u32::from(address) & mask;
    Some((first, first | !mask))
}

/// The subnets the registration must report: those of the engine's
/// networks, other than `own_network`, that overlap the task subnet range,
/// plus the subnets this agent was given but could not claim (an engine
/// reserves a new network's subnet before the network can be listed).
/// At most [`conventions::SUBNETS_IN_USE_MAX`].
pub fn subnets_in_use(
    networks: &[NetworkInfo],
    own_network: &str,
    refused: &[String],
) -> Vec<String> {
    let Some((range_first, range_last)) = cidr_bounds(conventions::TASK_SUBNETS_CIDR) else {
        return Vec::new();
    };
    let mut found: Vec<String> = networks
        .iter()
        .filter(|network| network.name != own_network)
        .flat_map(|network| network.ipv4_subnets.iter())
        .chain(refused)
        .filter(|subnet| {
            cidr_bounds(subnet)
                .is_some_and(|(first, last)| first <= range_last && last >= range_first)
        })
        .cloned()
        .collect();
    found.sort();
    found.dedup();
    found.truncate(conventions::SUBNETS_IN_USE_MAX);
    found
}

/// The task subnet the control plane gave the instance, from the
/// registration's answer (`None` from a control plane that gives none).
pub fn task_subnet_of(instance: &ContainerInstance) -> Option<String> {
    instance
        .attachments
        .iter()
        .flatten()
        .filter(|attachment| {
            attachment.r#type.as_deref() == Some(conventions::TASK_SUBNET_ATTACHMENT_TYPE)
        })
        .flat_map(|attachment| attachment.details.iter().flatten())
        .find(|detail| detail.name.as_deref() == Some(conventions::TASK_SUBNET_CIDR_DETAIL))
        .and_then(|detail| detail.value.clone())
}

/// The RegisterContainerInstance request; `existing_arn` brings a known
/// instance back instead of registering a new one.
pub fn registration_request(
    profile: &InstanceProfile,
    existing_arn: Option<&str>,
) -> RegisterContainerInstanceRequest {
    RegisterContainerInstanceRequest {
        cluster: Some(profile.cluster.clone()),
        container_instance_arn: existing_arn.map(str::to_owned),
        instance_identity_document: Some(identity_document(profile)),
        total_resources: Some(vec![
            integer_resource("CPU", profile.cpu_units),
            integer_resource("MEMORY", profile.memory_mib),
            string_set_resource("PORTS", reserved_ports(profile.metadata_port)),
            string_set_resource("PORTS_UDP", Vec::new()),
        ]),
        attributes: Some(attributes(profile)),
        version_info: Some(VersionInfo {
            agent_version: Some(profile.agent_version.clone()),
            docker_version: profile.docker_version.clone(),
            agent_hash: Some(profile.agent_hash.clone()),
        }),
        ..RegisterContainerInstanceRequest::default()
    }
}

/// Who this instance is, kept across restarts in `identity.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// EC2-style id (`i-` and 17 hex digits), stable for the data directory's life.
    pub instance_id: String,
    /// The cluster it registered in.
    pub cluster: String,
    pub container_instance_arn: Option<String>,
}

impl Identity {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("identity.json")
    }

    /// The stored identity, or a fresh one. An identity from another cluster
    /// keeps its instance id but registers anew.
    pub fn load_or_create(
        data_dir: &Path,
        cluster: &str,
        ids: &dyn IdSource,
    ) -> Result<Self, PersistError> {
        let stored: Option<Identity> = read_json(&Self::path(data_dir))?;
        Ok(match stored {
            Some(identity) if identity.cluster == cluster => identity,
            Some(identity) => Identity {
                cluster: cluster.to_owned(),
                container_instance_arn: None,
                ..identity
            },
            None => {
                let hex = ids.hex_id();
                Identity {
                    instance_id: format!("i-{}", &hex[..17.min(hex.len())]),
                    cluster: cluster.to_owned(),
                    container_instance_arn: None,
                }
            }
        })
    }

    pub async fn save(
        &self,
        data_dir: &Path,
        persistence: &Persistence,
    ) -> Result<(), PersistError> {
        persistence.write_json(&Self::path(data_dir), self).await
    }
}

/// The cluster's short name, whether given as a name or an ARN.
pub fn cluster_name(cluster: &str) -> &str {
    cluster
        .rsplit_once(":cluster/")
        .map_or(cluster, |(_, name)| name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn profile() -> InstanceProfile {
        InstanceProfile {
            cluster: "default".to_owned(),
            instance_id: "i-0123456789abcdef0".to_owned(),
            region: "us-east-1".to_owned(),
            availability_zone: "local-1a".to_owned(),
            instance_type: "flotilla.local".to_owned(),
            cpu_architecture: "x86_64",
            cpu_units: 2048,
            memory_mib: 15_000,
            metadata_port: 51679,
            custom_attributes: vec![("stack".to_owned(), "blue".to_owned())],
            external: true,
            fargate: false,
            capacity_provider: None,
            agent_version: "0.1.0".to_owned(),
            agent_hash: "0123abcd".to_owned(),
            docker_version: None,
            subnets_in_use: vec!["100.64.0.0/24".to_owned()],
        }
    }

    #[test]
    fn registration_carries_resources_attributes_and_identity() {
        let request = registration_request(
            &profile(),
            Some("arn:aws:ecs:us-east-1:000000000000:container-instance/default/abc"),
        );
        let resources = request.total_resources.unwrap();
        let summary: Vec<String> = resources
            .iter()
            .map(|r| {
                format!(
                    "{}:{}:{}",
                    r.name.as_deref().unwrap(),
                    r.r#type.as_deref().unwrap(),
                    r.integer_value.map_or_else(
                        || r.string_set_value.clone().unwrap().join(","),
                        |v| v.to_string()
                    )
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "CPU:INTEGER:2048",
                "MEMORY:INTEGER:15000",
                "PORTS:STRINGSET:22,2375,2376,51678,51679",
                "PORTS_UDP:STRINGSET:"
            ]
        );
        let attributes = request.attributes.unwrap();
        let find = |name: &str| {
            attributes
                .iter()
                .find(|a| a.name.as_deref() == Some(name))
                .map(|a| a.value.clone())
        };
        assert_eq!(find("ecs.os-type"), Some(Some("linux".to_owned())));
        assert_eq!(
            find("ecs.availability-zone"),
            Some(Some("local-1a".to_owned()))
        );
        assert_eq!(find("ecs.capability.task-eni"), Some(None));
        assert_eq!(
            find("com.amazonaws.ecs.capability.docker-remote-api.1.41"),
            Some(None)
        );
        assert_eq!(find(conventions::EXTERNAL_ATTRIBUTE), Some(None));
        assert_eq!(find("stack"), Some(Some("blue".to_owned())));
        assert!(find("ecs.capability.execution-role-awslogs").is_some());
        let document: serde_json::Value =
            serde_json::from_str(&request.instance_identity_document.unwrap()).unwrap();
        assert_eq!(document["instanceId"], "i-0123456789abcdef0");
        assert_eq!(
            document["subnetsInUse"],
            serde_json::json!(["100.64.0.0/24"])
        );
        assert!(document.get("capacityProviderName").is_none());
        assert!(request.container_instance_arn.is_some());
    }

    #[test]
    fn the_identity_document_names_the_capacity_provider() {
        let profile = InstanceProfile {
            capacity_provider: Some("spot".to_owned()),
            ..profile()
        };
        let document: serde_json::Value =
            serde_json::from_str(&identity_document(&profile)).unwrap();
        assert_eq!(document["capacityProviderName"], "spot");
    }

    #[test]
    fn only_other_networks_in_the_task_subnet_range_are_reported() {
        let network = |name: &str, subnets: &[&str]| NetworkInfo {
            name: name.to_owned(),
            ipv4_subnets: subnets.iter().map(|s| (*s).to_owned()).collect(),
        };
        let networks = [
            network("bridge", &["172.17.0.0/16"]),
            network("host", &[]),
            network("flotilla-awsvpc-i-0aaa", &["100.64.0.0/24"]),
            network("flotilla-awsvpc-i-0bbb", &["100.64.3.0/24"]),
            network("wide", &["100.0.0.0/8"]),
            network("odd", &["not a subnet"]),
            network("next-door", &["100.128.0.0/24"]),
        ];
        assert_eq!(
            subnets_in_use(
                &networks,
                "flotilla-awsvpc-i-0bbb",
                &["100.64.7.0/24".to_owned()]
            ),
            ["100.0.0.0/8", "100.64.0.0/24", "100.64.7.0/24"]
        );
        let many: Vec<NetworkInfo> = (0..300)
            .map(|i| network(&format!("n{i}"), &[&format!("100.65.{}.0/24", i % 256)]))
            .collect();
        assert_eq!(
            subnets_in_use(&many, "mine", &[]).len(),
            conventions::SUBNETS_IN_USE_MAX
        );
    }

    #[test]
    fn the_task_subnet_is_read_from_the_instance_attachment() {
        let instance: ContainerInstance = serde_json::from_value(serde_json::json!({
            "attachments": [{"id": "a", "type": "ElasticNetworkInterface", "status": "ATTACHED",
                "details": [{"name": "subnetId", "value": "subnet-1"},
                            {"name": "subnetCidrBlock", "value": "100.64.9.0/24"}]}]
        }))
        .unwrap();
        assert_eq!(task_subnet_of(&instance).as_deref(), Some("100.64.9.0/24"));
        assert_eq!(task_subnet_of(&ContainerInstance::default()), None);
    }

    #[test]
    fn reserved_ports_include_the_metadata_port_once() {
        assert_eq!(
            reserved_ports(51679),
            ["22", "2375", "2376", "51678", "51679"]
        );
        assert_eq!(
            reserved_ports(8080),
            ["22", "2375", "2376", "8080", "51678", "51679"]
        );
    }

    #[test]
    fn host_facts_parse() {
        assert_eq!(
            parse_meminfo_total_mib("MemTotal:       24731712 kB\nMemFree: 1 kB\n"),
            Some(24152)
        );
        assert_eq!(cpu_architecture("aarch64"), "arm64");
        assert_eq!(
            cluster_name("arn:aws:ecs:us-east-1:000000000000:cluster/prod"),
            "prod"
        );
        assert_eq!(cluster_name("prod"), "prod");
    }
}
