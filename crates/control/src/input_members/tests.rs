//! The table against the wire types generated from botocore's model, and
//! its refusals against real requests.

use std::sync::Mutex;

use flotilla_types::ecs::*;
use serde::de::{self, Deserialize, Visitor};

use super::{members_of, refuse_unsupported, Handling, INPUT_MEMBERS};
use crate::testing;

/// A deserializer that only records the member names a structure asks for:
/// serde's derive hands them to `deserialize_struct` in model order.
struct FieldsProbe<'a>(&'a Mutex<Vec<&'static str>>);

#[derive(Debug)]
struct Probed;

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probed")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Probed
    }
}

impl<'de> de::Deserializer<'de> for FieldsProbe<'_> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(fields);
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

fn fields<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
    let seen = Mutex::new(Vec::new());
    let _ = T::deserialize(FieldsProbe(&seen));
    seen.into_inner().expect("not poisoned")
}

macro_rules! modelled_members {
    ($($operation:ident => $request:ty,)*) => {
        /// The input members of an operation's request, as generated.
        fn modelled(operation: &str) -> Option<Vec<&'static str>> {
            match operation {
                $(stringify!($operation) => Some(fields::<$request>()),)*
                _ => None,
            }
        }
    };
}

modelled_members! {
    CreateCluster => CreateClusterRequest,
    DescribeClusters => DescribeClustersRequest,
    ListClusters => ListClustersRequest,
    DeleteCluster => DeleteClusterRequest,
    UpdateCluster => UpdateClusterRequest,
    UpdateClusterSettings => UpdateClusterSettingsRequest,
    PutClusterCapacityProviders => PutClusterCapacityProvidersRequest,
    CreateCapacityProvider => CreateCapacityProviderRequest,
    DescribeCapacityProviders => DescribeCapacityProvidersRequest,
    UpdateCapacityProvider => UpdateCapacityProviderRequest,
    DeleteCapacityProvider => DeleteCapacityProviderRequest,
    RegisterTaskDefinition => RegisterTaskDefinitionRequest,
    DescribeTaskDefinition => DescribeTaskDefinitionRequest,
    ListTaskDefinitions => ListTaskDefinitionsRequest,
    ListTaskDefinitionFamilies => ListTaskDefinitionFamiliesRequest,
    DeregisterTaskDefinition => DeregisterTaskDefinitionRequest,
    DeleteTaskDefinitions => DeleteTaskDefinitionsRequest,
    RegisterContainerInstance => RegisterContainerInstanceRequest,
    DeregisterContainerInstance => DeregisterContainerInstanceRequest,
    DescribeContainerInstances => DescribeContainerInstancesRequest,
    ListContainerInstances => ListContainerInstancesRequest,
    UpdateContainerInstancesState => UpdateContainerInstancesStateRequest,
    DiscoverPollEndpoint => DiscoverPollEndpointRequest,
    RunTask => RunTaskRequest,
    StartTask => StartTaskRequest,
    StopTask => StopTaskRequest,
    DescribeTasks => DescribeTasksRequest,
    ListTasks => ListTasksRequest,
    SubmitTaskStateChange => SubmitTaskStateChangeRequest,
    SubmitContainerStateChange => SubmitContainerStateChangeRequest,
    TagResource => TagResourceRequest,
    UntagResource => UntagResourceRequest,
    ListTagsForResource => ListTagsForResourceRequest,
    PutAccountSetting => PutAccountSettingRequest,
    PutAccountSettingDefault => PutAccountSettingDefaultRequest,
    ListAccountSettings => ListAccountSettingsRequest,
    DeleteAccountSetting => DeleteAccountSettingRequest,
    PutAttributes => PutAttributesRequest,
    DeleteAttributes => DeleteAttributesRequest,
    ListAttributes => ListAttributesRequest,
    CreateService => CreateServiceRequest,
    UpdateService => UpdateServiceRequest,
    DeleteService => DeleteServiceRequest,
    DescribeServices => DescribeServicesRequest,
    ListServices => ListServicesRequest,
    ListServiceDeployments => ListServiceDeploymentsRequest,
    DescribeServiceDeployments => DescribeServiceDeploymentsRequest,
    UpdateTaskProtection => UpdateTaskProtectionRequest,
    GetTaskProtection => GetTaskProtectionRequest,
    UpdateContainerAgent => UpdateContainerAgentRequest,
    DescribeServiceRevisions => DescribeServiceRevisionsRequest,
    CreateTaskSet => CreateTaskSetRequest,
    UpdateTaskSet => UpdateTaskSetRequest,
    DeleteTaskSet => DeleteTaskSetRequest,
    DescribeTaskSets => DescribeTaskSetsRequest,
    UpdateServicePrimaryTaskSet => UpdateServicePrimaryTaskSetRequest,
    StopServiceDeployment => StopServiceDeploymentRequest,
    ContinueServiceDeployment => ContinueServiceDeploymentRequest,
}

#[test]
fn every_member_of_every_answered_operation_is_in_the_table() {
    for (operation, members) in INPUT_MEMBERS {
        let mut modelled = modelled(operation)
            .unwrap_or_else(|| panic!("{operation}: add its request type to modelled_members"));
        let mut listed: Vec<&str> = members.iter().map(|(name, _)| *name).collect();
        listed.sort_unstable();
        modelled.sort_unstable();
        assert_eq!(
            listed, modelled,
            "{operation}: the table must list each of the model's members once"
        );
    }
}

/// Every operation of the model, read from `EcsRequest::decode`'s match.
fn operations() -> Vec<&'static str> {
    const GENERATED: &str = include_str!("../../../types/src/ecs/generated.rs");
    let start = GENERATED
        .find("pub fn decode(operation: &str")
        .expect("generated.rs has EcsRequest::decode");
    let end = start
        + GENERATED[start..]
            .find("_ => return None")
            .expect("EcsRequest::decode ends with a catch-all arm");
    GENERATED[start..end]
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"')?.split_once("\" =>"))
        .map(|(name, _)| name)
        .collect()
}

#[tokio::test]
async fn the_operations_in_the_table_are_the_ones_answered() {
    let ecs = testing::ecs();
    let operations = operations();
    assert!(operations.len() > 50, "read {operations:?}");
    for operation in operations {
        let Some(Ok(request)) = EcsRequest::decode(operation, b"{}") else {
            panic!("{operation} does not decode from an empty body");
        };
        let answered = match ecs.handle(&testing::caller(), request).await {
            Ok(_) => true,
            Err(error) => {
                error.code != "UnsupportedFeatureException"
                    || !error
                        .message
                        .ends_with("is not supported by this Flotilla server yet")
            }
        };
        assert_eq!(
            answered,
            members_of(operation).is_some(),
            "{operation}: answered operations, and only they, are in the table"
        );
    }
}

/// A value that sets each refused member.
fn example(member: &str) -> &'static str {
    match member {
        "serviceConnectConfiguration" => r#"{"enabled": true, "namespace": "web"}"#,
        "volumeConfigurations"
        | "vpcLatticeConfigurations"
        | "gatewayConnectors"
        | "platformDevices"
        | "managedAgents"
        | "attachments" => r#"[{"name": "x"}]"#,
        "monitoring" => r#"{"metricConfigurations": [{}]}"#,
        _ => r#""x""#,
    }
}

#[tokio::test]
async fn refused_members_are_refused_by_name_and_empty_ones_are_absent() {
    let ecs = testing::ecs();
    for (operation, members) in INPUT_MEMBERS {
        for (member, handling) in members.iter() {
            let Handling::Refused(why) = handling else {
                continue;
            };
            let body = format!(r#"{{"{member}": {}}}"#, example(member));
            let request = EcsRequest::decode(operation, body.as_bytes())
                .expect("answered")
                .unwrap_or_else(|error| panic!("{operation} {body}: {error}"));
            let error = refuse_unsupported(&request).expect_err(&body);
            assert_eq!(error.code, "InvalidParameterException");
            assert_eq!(
                error.message,
                format!("{member} is not supported by this Flotilla server: {why}.")
            );
            // The handler refuses it too, before doing anything.
            let handled = ecs.handle(&testing::caller(), request).await;
            assert_eq!(handled.expect_err(&body).message, error.message);

            for empty in [r#""""#, "[]", "{}", "null", r#"{"enabled": false}"#] {
                let body = format!(r#"{{"{member}": {empty}}}"#);
                if let Some(Ok(request)) = EcsRequest::decode(operation, body.as_bytes()) {
                    assert!(refuse_unsupported(&request).is_ok(), "{operation} {body}");
                }
            }
        }
    }
}

#[test]
fn the_readme_lists_every_member_kept_but_not_acted_on() {
    const README: &str = include_str!("../../../../README.md");
    let section = README
        .split("### Kept, not acted on")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a kept-not-acted-on section");
    for (operation, members) in INPUT_MEMBERS {
        for (member, handling) in members.iter() {
            let listed = section.contains(&format!("`{member}`"));
            match handling {
                Handling::Kept(_) => assert!(
                    listed,
                    "{operation}.{member} is kept: list it in the README"
                ),
                Handling::Refused(_) => assert!(
                    listed,
                    "{operation}.{member} is refused: name it in the README"
                ),
                Handling::Acted => {}
            }
        }
    }
}
